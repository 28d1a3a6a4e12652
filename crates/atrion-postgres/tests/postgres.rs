//! The PostgreSQL store against a private server: the conformance suite, idempotent schema,
//! reconnects, and two nodes converging through it.

use std::sync::Arc;
use std::time::Duration;

use atrion_postgres::testing::PgServer;
use atrion_postgres::{PostgresConfig, PostgresStore};
use atrion_state::{ErrorKind, StateStore};

async fn store(server: &PgServer) -> PostgresStore {
    PostgresStore::connect(&PostgresConfig::new(server.url())).await.unwrap()
}

atrion_state::conformance_tests!(async {
    let Some(server) = PgServer::start() else {
        return (Arc::new(atrion_state::InMemoryStore::new()) as Arc<dyn StateStore>, None);
    };
    let s = store(&server).await;
    (Arc::new(s) as Arc<dyn StateStore>, Some(server))
});

#[tokio::test]
async fn the_schema_is_created_once_and_namespaces_do_not_mix() {
    let Some(server) = PgServer::start() else { return };
    let a = store(&server).await;
    let again = store(&server).await; // idempotent
    let mut cfg = PostgresConfig::new(server.url());
    cfg.namespace = "other".into();
    let other = PostgresStore::connect(&cfg).await.unwrap();
    a.set("k", "a".into()).await.unwrap();
    assert!(again.exists("k").await.unwrap());
    assert!(!other.exists("k").await.unwrap(), "namespaces are separate");
    assert!(other.list_keys("").await.unwrap().is_empty());
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    cfg.connect_timeout = Duration::from_millis(500);
    let e = PostgresStore::connect(&cfg).await.unwrap_err();
    assert!(e.to_string().starts_with("postgres store: open"), "{e}");
    let e = PostgresStore::connect(&PostgresConfig::new("mysql://x")).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Config(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_used_again_and_the_feed_asks_for_a_resync() {
    let Some(mut server) = PgServer::start() else { return };
    let s = store(&server).await;
    s.set("survives", "v".into()).await.unwrap();
    let shared: Arc<dyn StateStore> = Arc::new(s.clone());
    // The restarted server lives until the end of the test (and is stopped then).
    let keep = Arc::new(std::sync::Mutex::new(None));
    let slot = keep.clone();
    atrion_state::conformance::feed_resyncs_after_a_restart(shared, move || {
        server.restart();
        *slot.lock().unwrap() = Some(server);
    })
    .await;
    assert!(s.exists("survives").await.unwrap(), "the data survived the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_through_postgres() {
    let Some(server) = PgServer::start() else { return };
    let stores: [Arc<dyn StateStore>; 2] = [Arc::new(store(&server).await), Arc::new(store(&server).await)];
    atrion_sync::testing::two_nodes_converge(stores).await;
}

/// A batch is one statement and reaches listeners as few notifications, each within
/// PostgreSQL's 8,000-byte limit, carrying every value (no read-back); a share batch carries
/// each changed key's leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_notified_in_few_payloads_within_the_limit_and_carries_its_values() {
    use atrion_state::Change;
    use atrion_state::shares::{Share, ShareWrite, Shares};
    use bytes::Bytes;

    let Some(server) = PgServer::start() else { return };
    let s = store(&server).await;
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let mut raw = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    raw.listen("atrion_changes").await.unwrap();
    let mut feed = s.subscribe("batch/").await.unwrap().unwrap();

    let items: Vec<(String, Bytes, Option<Duration>)> =
        (0..500).map(|i| (format!("batch/{i:03}"), Bytes::from(vec![i as u8; 60]), None)).collect();
    s.batch_set(items.clone()).await.unwrap();
    // 500 records of ~150 bytes: a handful of payloads, not 500.
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 500 {
        let change = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.expect("every change").unwrap();
        let Change::Set { key, value, .. } = change else { panic!("{change:?}") };
        seen.insert(key, value.expect("a small value travels with its notice"));
    }
    let payloads = drain(&mut raw, 500).await;
    assert!((2..=20).contains(&payloads.len()), "{} notifications for one batch of 500", payloads.len());
    assert!(payloads.iter().all(|&len| len <= 8_000), "{payloads:?}");
    for (k, v, _) in &items {
        assert_eq!(&seen[k], v, "{k}");
    }

    // Shares: 300 keys in one batch, three members each in three batches.
    let mut feed = s.subscribe("shares/").await.unwrap().unwrap();
    for (m, rank) in [("n1", 1.0), ("n2", 3.0), ("n3", 2.0)] {
        let batch = (0..300)
            .map(|i| ShareWrite {
                key: format!("shares/{i:03}"),
                share: Share { member: m.into(), rank, value: Bytes::from(vec![0, 255, i as u8]) },
            })
            .collect();
        s.put_shares(batch).await.unwrap();
    }
    let mut last: std::collections::HashMap<String, Shares> = std::collections::HashMap::new();
    while last.len() < 300 || last.values().any(|x| x.members < 3) {
        let change = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.expect("every change").unwrap();
        let Change::Set { key, value, .. } = change else { panic!("{change:?}") };
        last.insert(key, Shares::decode(&value.expect("shares travel with their notice")).expect("it decodes"));
    }
    // Every statement notifies each key it changed: 900 records.
    let sizes = drain(&mut raw, 900).await;
    assert!(sizes.iter().all(|&len| len <= 8_000), "{sizes:?}");
    let count = sizes.len();
    assert!((3..=60).contains(&count), "{count} notifications for three batches of 300 keys");
    for (key, shares) in &last {
        let leaders: Vec<&str> = shares.top.iter().map(|x| x.member.as_str()).collect();
        assert_eq!(leaders, ["n2", "n3"], "{key}: the two leaders, by rank");
        let i: u8 = key.trim_start_matches("shares/").parse::<u16>().unwrap() as u8;
        assert_eq!(shares.top[0].value.as_ref(), [0, 255, i]);
    }
}

/// The sizes of the notifications `raw` receives until they carry `records` set records
/// (waiting for each at most a minute).
async fn drain(raw: &mut sqlx::postgres::PgListener, records: usize) -> Vec<usize> {
    let (mut sizes, mut seen) = (Vec::new(), 0);
    while seen < records {
        let n = tokio::time::timeout(Duration::from_secs(60), raw.recv()).await.expect("a notification").unwrap();
        seen += n.payload().matches("3:set").count();
        sizes.push(n.payload().len());
    }
    sizes
}

/// The server stopped as a crash would (`pg_ctl stop -m immediate`) while groups are being
/// committed: after each restart every group is whole or absent, and every acknowledged
/// group is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_groups_leaves_each_all_or_nothing() {
    use atrion_state::conformance::{check_kill_groups, kill_group};
    let Some(mut server) = PgServer::start() else { return };
    let mut cfg = PostgresConfig::new(server.url());
    cfg.connect_timeout = Duration::from_secs(2);
    let s: Arc<dyn StateStore> = Arc::new(PostgresStore::connect(&cfg).await.unwrap());
    let mut acked = Vec::new();
    let mut next = 0;
    for (round, kill_after) in [50usize, 200, 5].into_iter().enumerate() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = {
            let s = s.clone();
            tokio::spawn(async move {
                for i in next.. {
                    if s.transact(kill_group(i)).await.is_err() {
                        return i;
                    }
                    let _ = tx.send(i);
                }
                unreachable!()
            })
        };
        for _ in 0..kill_after {
            acked.push(rx.recv().await.expect("the writer runs"));
        }
        server.kill();
        let failed = writer.await.unwrap();
        while let Ok(i) = rx.try_recv() {
            acked.push(i);
        }
        server.restart();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while s.get("probe").await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the store did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let whole = check_kill_groups(s.as_ref(), failed + 1).await;
        for &i in &acked {
            let a = s.get(&format!("{{conf/kill/{i}}}/a")).await.unwrap();
            assert!(a.is_some(), "round {round}: acknowledged group {i} lost");
        }
        let extra = whole - acked.len() as u64;
        assert!(extra <= round as u64 + 1, "round {round}: {whole} groups for {} acknowledged", acked.len());
        next = failed + 1;
    }
    s.transact(kill_group(next)).await.unwrap();
}
