//! The file store against the conformance suite, across restarts, and across a `kill -9`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use atrion_file::{FileConfig, FileStore};
use atrion_state::{ErrorKind, StateStore};
use bytes::Bytes;

atrion_state::conformance_tests!(async {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(&FileConfig::new(dir.path().join("state.redb"))).await.unwrap();
    (Arc::new(store) as Arc<dyn StateStore>, dir)
});

#[tokio::test]
async fn state_and_versions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileConfig::new(dir.path().join("nested/folder/state.redb"));
    let store = FileStore::open(&config).await.unwrap();
    let v = store.set("a", "1".into()).await.unwrap();
    store.set_with_ttl("t", "1".into(), Duration::from_secs(3_600)).await.unwrap();
    drop(store);
    let store = FileStore::open(&config).await.unwrap();
    let e = store.get("a").await.unwrap().unwrap();
    assert_eq!((e.value, e.version), (Bytes::from("1"), v));
    assert!(store.get("t").await.unwrap().unwrap().ttl.unwrap() > Duration::from_secs(3_590), "TTL persists");
    assert!(store.set("b", "2".into()).await.unwrap() > v + 1, "versions never repeat after a restart");
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileConfig::new(dir.path().join("state.redb"));
    let _first = FileStore::open(&config).await.unwrap();
    let e = FileStore::open(&config).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().starts_with("file store: open"), "{e}");
}

#[tokio::test]
async fn garbage_files_are_refused_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let e = FileStore::open(&FileConfig::new(&path)).await.unwrap_err();
    assert!(std::error::Error::source(&e).is_some(), "keeps the driver's error: {e}");
}

/// What the writer process writes under key `crash/{i}`: recognisable, of varying size.
fn payload(i: u64) -> Vec<u8> {
    let len = 1 + (i * 7_919 % 32_768) as usize;
    (0..len).map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8).collect()
}

/// The child: writes `crash/0`, `crash/1`, ... forever, printing `ack N` after each write
/// is acknowledged. Run only by `acknowledged_writes_survive_kill_9`.
#[test]
#[ignore = "run as a child process by acknowledged_writes_survive_kill_9"]
fn crash_writer_child() {
    let path = std::env::var("ATRION_CRASH_DB").expect("ATRION_CRASH_DB");
    let start: u64 = std::env::var("ATRION_CRASH_START").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    rt.block_on(async {
        let store = FileStore::open(&FileConfig::new(path)).await.unwrap();
        let mut out = std::io::stdout().lock();
        for i in start.. {
            if i % 5 == 4 {
                // Batches too: one transaction of several keys.
                let items = (0..3).map(|k| (format!("crash/{i}/{k}"), Bytes::from(payload(i + k)), None)).collect();
                store.batch_set(items).await.unwrap();
            }
            store.set(&format!("crash/{i}"), Bytes::from(payload(i))).await.unwrap();
            writeln!(out, "ack {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.redb");
    let mut acked: Vec<u64> = Vec::new();
    for (round, kill_after) in [40usize, 150, 7].into_iter().enumerate() {
        let start = acked.last().map_or(0, |a| a + 1);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "crash_writer_child", "--nocapture", "--test-threads=1"])
            .env("ATRION_CRASH_DB", &db)
            .env("ATRION_CRASH_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("the writer runs").unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked.push(n.parse().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL, in the middle of a write
        // Acks printed before the kill are acknowledged writes too.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ") {
                acked.push(n.parse().unwrap());
            }
        }
        child.wait().unwrap();

        let store = FileStore::open(&FileConfig::new(&db)).await.unwrap();
        for &i in &acked {
            let e = store.get(&format!("crash/{i}")).await.unwrap();
            assert_eq!(e.map(|e| e.value.to_vec()), Some(payload(i)), "round {round}: acknowledged write {i} lost");
        }
        // No corruption: every key present decodes to exactly what was written under it.
        for key in store.list_keys("crash/").await.unwrap() {
            let mut parts = key["crash/".len()..].split('/');
            let i: u64 = parts.next().unwrap().parse().unwrap();
            let n = i + parts.next().map_or(0, |k| k.parse::<u64>().unwrap());
            assert_eq!(store.get(&key).await.unwrap().unwrap().value.to_vec(), payload(n), "{key}");
        }
        store.set("after-crash", "writable".into()).await.unwrap();
    }
    assert!(acked.len() >= 197);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_switches_from_memory_to_file_and_the_data_persists() {
    use atrion_state::{InMemoryStore, StateService};
    let dir = tempfile::tempdir().unwrap();
    let config = FileConfig::new(dir.path().join("state.redb"));
    let file = FileStore::open(&config).await.unwrap();
    let service =
        StateService::builder().backend("memory", InMemoryStore::new()).backend("file", file.clone()).build().unwrap();
    for i in 0..2_000 {
        service.set(&format!("route/{i}"), Bytes::from(format!("{i}"))).await.unwrap();
    }
    let writer = {
        let service = service.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                service.set(&format!("live/{i}"), Bytes::from(format!("{i}"))).await.unwrap();
            }
        })
    };
    let report = service.switch_backend("file").await.unwrap();
    writer.await.unwrap();
    assert_eq!(report.to, "file");
    assert_eq!(service.active_name(), "file");
    drop((service, file));
    let reopened = FileStore::open(&config).await.unwrap();
    assert_eq!(reopened.list_keys("route/").await.unwrap().len(), 2_000);
    assert_eq!(reopened.list_keys("live/").await.unwrap().len(), 300, "writes during the switch reached the file");
}

/// A pulse's shares go in one transaction: every key written, a key given twice keeps both
/// members, each write is on the change feed with the key's shares, and versions still grow.
#[tokio::test]
async fn shares_of_many_routes_are_written_in_one_batch() {
    use atrion_state::Change;
    use atrion_state::shares::{Share, ShareWrite, Shares};
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(&FileConfig::new(dir.path().join("state.redb"))).await.unwrap();
    let before = store.set("ns/other", "x".into()).await.unwrap();
    let mut feed = store.subscribe("ns/route/").await.unwrap().unwrap();
    let share = |key: String, member: &str, rank: f64| ShareWrite {
        key,
        share: Share { member: member.into(), rank, value: Bytes::from(member.to_owned()) },
    };
    let mut batch: Vec<ShareWrite> = (0..500).map(|i| share(format!("ns/route/r{i}"), "n1", f64::from(i))).collect();
    batch.push(share("ns/route/r7".into(), "n2", 100.0));
    store.put_shares(batch).await.unwrap();
    let keys = store.list_shares("ns/route/").await.unwrap();
    assert_eq!(keys.len(), 500);
    let r7 = store.all_shares("ns/route/r7").await.unwrap().unwrap();
    assert_eq!(r7.ranked().iter().map(|s| s.member.as_str()).collect::<Vec<_>>(), ["n2", "n1"]);
    let mut seen = 0;
    while seen < 501 {
        match feed.recv().await.unwrap() {
            Change::Set { key, version, value: Some(v) } => {
                assert!(version > before, "{key}");
                assert!(Shares::decode(&v).is_some(), "{key}: the feed carries the shares");
                seen += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(store.set("ns/other", "y".into()).await.unwrap() > before + 501);
}

/// The child: commits `kill_group(start)`, `kill_group(start + 1)`, ... forever, printing
/// `ack N` after each group is acknowledged. Run only by
/// `a_group_killed_mid_commit_is_all_there_or_not_at_all`.
#[test]
#[ignore = "run as a child process by a_group_killed_mid_commit_is_all_there_or_not_at_all"]
fn group_writer_child() {
    let path = std::env::var("ATRION_CRASH_DB").expect("ATRION_CRASH_DB");
    let start: u64 = std::env::var("ATRION_CRASH_START").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    rt.block_on(async {
        let store = FileStore::open(&FileConfig::new(path)).await.unwrap();
        let mut out = std::io::stdout().lock();
        for i in start.. {
            // Large enough values that a commit takes a while, so that kills land inside one.
            let mut group = atrion_state::conformance::kill_group(i);
            group = group.put(format!("{{conf/kill/{i}}}/pad"), Bytes::from(payload(i)), None);
            store.transact(group).await.unwrap();
            writeln!(out, "ack {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// SIGKILL of a process in the middle of its groups: after each kill, every group is whole
/// or absent, every acknowledged group is there, and the file takes new groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_killed_mid_commit_is_all_there_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("groups.redb");
    let mut acked: Vec<u64> = Vec::new();
    let mut next = 0;
    for (round, kill_after) in [25usize, 120, 3, 60].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "group_writer_child", "--nocapture", "--test-threads=1"])
            .env("ATRION_CRASH_DB", &db)
            .env("ATRION_CRASH_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("the writer runs").unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked.push(n.parse().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL, most likely inside a group's commit
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ") {
                acked.push(n.parse().unwrap());
            }
        }
        child.wait().unwrap();
        let last_acked = *acked.last().unwrap();
        // The group in flight at the kill (if any) is the one after the last ack.
        let upto = last_acked + 2;
        let store = FileStore::open(&FileConfig::new(&db)).await.unwrap();
        let whole = atrion_state::conformance::check_kill_groups(&store, upto).await;
        for &i in &acked {
            let a = store.get(&format!("{{conf/kill/{i}}}/a")).await.unwrap();
            assert!(a.is_some(), "round {round}: acknowledged group {i} lost");
            let pad = store.get(&format!("{{conf/kill/{i}}}/pad")).await.unwrap().map(|e| e.value.to_vec());
            assert_eq!(pad, Some(payload(i)), "round {round}: group {i}'s fourth write");
        }
        // Beyond the acknowledged: at most the group in flight at each kill so far.
        let extra = whole - acked.len() as u64;
        assert!(extra <= round as u64 + 1, "round {round}: {whole} groups for {} acknowledged", acked.len());
        next = last_acked + 2;
        drop(store);
    }
    let store = FileStore::open(&FileConfig::new(&db)).await.unwrap();
    store.transact(atrion_state::conformance::kill_group(next)).await.unwrap();
    assert!(acked.len() >= 208);
}
