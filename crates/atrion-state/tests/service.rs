//! `StateService`: configuration errors, conformance, switching under load, backup and
//! restore, and the owned cleanup task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atrion_state::{Change, InMemoryStore, ServiceError, StateService, StateStore, update};
use bytes::Bytes;

fn two_memories() -> (StateService, InMemoryStore, InMemoryStore) {
    let (a, b) = (InMemoryStore::new(), InMemoryStore::new());
    let service = StateService::builder().backend("a", a.clone()).backend("b", b.clone()).active("a").build().unwrap();
    (service, a, b)
}

atrion_state::conformance_tests!(async {
    let service = StateService::builder().backend("memory", InMemoryStore::new()).build().unwrap();
    (Arc::new(service) as Arc<dyn StateStore>, ())
});

#[test]
fn configuration_errors_are_clear() {
    let e = StateService::builder().build().unwrap_err();
    assert!(matches!(e, ServiceError::Config(_)), "{e}");
    let e = StateService::builder().backend("m", InMemoryStore::new()).active("redis").build().unwrap_err();
    assert_eq!(e.to_string(), "unknown backend `redis` (configured: m)");
    let e = StateService::builder()
        .backend("m", InMemoryStore::new())
        .backend("m", InMemoryStore::new())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("registered twice"), "{e}");
}

#[tokio::test]
async fn switching_copies_every_key_with_its_ttl() {
    let (service, _a, b) = two_memories();
    for i in 0..1_000 {
        service.set(&format!("k/{i}"), Bytes::from(format!("v{i}"))).await.unwrap();
    }
    service.set_with_ttl("short", "x".into(), Duration::from_secs(60)).await.unwrap();
    b.set("stale-in-target", "old".into()).await.unwrap();
    let report = service.switch_backend("b").await.unwrap();
    assert_eq!((report.from.as_str(), report.to.as_str(), report.copied, report.verified), ("a", "b", 1_001, 1_001));
    assert_eq!(service.active_name(), "b");
    assert_eq!(b.get("k/999").await.unwrap().unwrap().value, Bytes::from("v999"));
    let ttl = b.get("short").await.unwrap().unwrap().ttl.unwrap();
    assert!(ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(50), "{ttl:?}");
    assert!(!b.exists("stale-in-target").await.unwrap(), "the target becomes a copy of the source");
    // Unknown and same-backend switches.
    assert!(matches!(service.switch_backend("c").await, Err(ServiceError::UnknownBackend { .. })));
    assert_eq!(service.switch_backend("b").await.unwrap().copied, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_write_is_lost_while_switching() {
    let (service, _a, b) = two_memories();
    for i in 0..20_000 {
        service.set(&format!("bulk/{i}"), Bytes::from(vec![1u8; 64])).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (service, stop) = (service.clone(), stop.clone());
            tokio::spawn(async move {
                // Each writer's own keys: the last value written, or None once deleted.
                let mut last: HashMap<String, Option<Bytes>> = HashMap::new();
                let mut increments = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 200 {
                    let key = format!("w{w}/{}", n % 50);
                    if n % 7 == 3 {
                        service.delete(&key).await.unwrap();
                        last.insert(key, None);
                    } else {
                        let v = Bytes::from(format!("{w}-{n}"));
                        service.set(&key, v.clone()).await.unwrap();
                        last.insert(key, Some(v));
                    }
                    // Rewrite bulk keys too, so that copy and writes race on the same keys.
                    service
                        .set(&format!("bulk/{}", (n * 97 + w) % 20_000), Bytes::from(format!("{w}-{n}")))
                        .await
                        .unwrap();
                    update(&service, "counter", 1_000, |cur| {
                        let c = cur.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap()));
                        Bytes::copy_from_slice(&(c + 1).to_be_bytes())
                    })
                    .await
                    .unwrap();
                    increments += 1;
                    n += 1;
                }
                (last, increments)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = service.switch_backend("b").await.unwrap();
    assert!(report.copied > 0);
    assert!(report.verified > report.copied, "writes went through during the copy: {report:?}");
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        let (last, increments) = w.await.unwrap();
        total += increments;
        for (key, value) in last {
            assert_eq!(b.get(&key).await.unwrap().map(|e| e.value), value, "{key}");
        }
    }
    let counter = b.get("counter").await.unwrap().unwrap().value;
    assert_eq!(u64::from_be_bytes(counter.as_ref().try_into().unwrap()), total, "no increment lost");
    assert_eq!(b.list_keys("bulk/").await.unwrap().len(), 20_000);
}

#[tokio::test]
async fn backup_and_restore_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.jsonl");
    let (service, _, _) = two_memories();
    service.set("plain", "v".into()).await.unwrap();
    service.set("binary", Bytes::from(vec![0u8, 255, 10, 13, 34])).await.unwrap();
    service.set_with_ttl("ttl", "t".into(), Duration::from_secs(300)).await.unwrap();
    assert_eq!(service.backup(&path).await.unwrap(), 3);

    let fresh = StateService::builder().backend("m", InMemoryStore::new()).build().unwrap();
    assert_eq!(fresh.restore(&path).await.unwrap(), 3);
    assert_eq!(fresh.get("binary").await.unwrap().unwrap().value, Bytes::from(vec![0u8, 255, 10, 13, 34]));
    let ttl = fresh.get("ttl").await.unwrap().unwrap().ttl.unwrap();
    assert!(ttl > Duration::from_secs(290) && ttl <= Duration::from_secs(300));
    assert_eq!(fresh.list_keys("").await.unwrap(), vec!["binary", "plain", "ttl"]);
}

#[tokio::test]
async fn a_malformed_backup_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"key\": \"a\", \"value\": \"dg==\", \"ttl_ms\": null}\n{\"key\": \"b\", \"value\": \"not base64!\", \"ttl_ms\": null}\n",
    )
    .unwrap();
    let service = StateService::builder().backend("m", InMemoryStore::new()).build().unwrap();
    let e = service.restore(&path).await.unwrap_err();
    assert!(matches!(e, ServiceError::Malformed { line: 2, .. }), "{e}");
    assert!(service.list_keys("").await.unwrap().is_empty(), "nothing written");
    let e = service.restore(dir.path().join("missing.jsonl")).await.unwrap_err();
    assert!(matches!(e, ServiceError::Io { .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn cleanup_task_runs_and_stops_on_shutdown() {
    let store = InMemoryStore::new();
    let service = StateService::builder().backend("m", store.clone()).build().unwrap();
    for i in 0..10 {
        service.set_with_ttl(&format!("t{i}"), "v".into(), Duration::from_secs(5)).await.unwrap();
    }
    let task = service.start_cleanup(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(task.runs(), 2);
    assert_eq!(task.expired(), 10);
    let mut feed = store.subscribe("").await.unwrap().unwrap();
    task.shutdown().await;
    // Stopped and joined: nothing runs any more, however long we wait.
    service.set_with_ttl("late", "v".into(), Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(matches!(feed.recv().await, Some(atrion_state::Change::Set { .. })));
    assert!(tokio::time::timeout(Duration::from_secs(1), feed.recv()).await.is_err(), "no cleanup after shutdown");
}

#[tokio::test]
async fn a_change_feed_follows_a_switch() {
    let (service, _a, b) = two_memories();
    let mut feed = service.subscribe("k/").await.unwrap().expect("memory backends have feeds");
    service.set("k/1", Bytes::from_static(b"on a")).await.unwrap();
    assert!(matches!(feed.recv().await, Some(Change::Set { key, .. }) if key == "k/1"));
    service.switch_backend("b").await.unwrap();
    // Whatever the old backend said during the switch, a resync follows it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let change = tokio::time::timeout_at(deadline, feed.recv()).await.expect("a resync after the switch");
        if matches!(change, Some(Change::Resync)) {
            break;
        }
    }
    // Written to the new backend directly, as another node sharing it would.
    b.set("k/2", Bytes::from_static(b"on b")).await.unwrap();
    let change = tokio::time::timeout_at(deadline, feed.recv()).await.expect("the new backend's change");
    assert!(matches!(&change, Some(Change::Set { key, .. }) if key == "k/2"), "{change:?}");
}

/// Groups committed while a switch copies the data reach the new backend whole: each is
/// mirrored there as one group, and the switch's last step (verify, then flip, with writers
/// held off) leaves none half-copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_committed_during_a_switch_reach_the_new_backend_whole() {
    use atrion_state::conformance::{check_kill_groups, kill_group};
    let (service, _a, b) = two_memories();
    let items: Vec<_> = (0..20_000).map(|i| (format!("bulk/{i}"), Bytes::from(vec![1u8; 64]), None)).collect();
    service.batch_set(items).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (service, stop) = (service.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 200 {
                service.transact(kill_group(n)).await.unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = service.switch_backend("b").await.unwrap();
    assert_eq!(report.to, "b");
    stop.store(true, Ordering::Relaxed);
    let n = writer.await.unwrap();
    assert_eq!(check_kill_groups(&b, n).await, n, "every group is on the new backend, whole");
}
