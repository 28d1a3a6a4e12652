//! The Redis store against a real `redis-server`: the conformance suite, and what only a
//! remote store shows (reconnects, a feed that asks for a resync, garbage under our keys).

use std::sync::Arc;
use std::time::Duration;

use atrion_redis::testing::RedisServer;
use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::{ErrorKind, StateStore};
use atrion_sync::EngineClock;

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&RedisConfig::new(server.url())).await.unwrap()
}

atrion_state::conformance_tests!(async {
    let Some(server) = RedisServer::start() else { return (skip(), None) };
    let s = store(&server).await;
    (Arc::new(s) as Arc<dyn StateStore>, Some(server))
});

/// A store for skipped runs: the in-memory reference, so the checks still run on something.
fn skip() -> Arc<dyn StateStore> {
    Arc::new(atrion_state::InMemoryStore::new())
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    cfg.connect_timeout = Duration::from_millis(300);
    let e = RedisStore::connect(&cfg).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout), "{e}");
    assert!(e.to_string().starts_with("redis store: open"), "{e}");
    let e = RedisStore::connect(&RedisConfig::new("http://nope")).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Config(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_comes_back_after_a_restart_and_the_feed_asks_for_a_resync() {
    let Some(mut server) = RedisServer::start() else { return };
    let s: Arc<dyn StateStore> = Arc::new(store(&server).await);
    // The restarted server lives until the end of the test (and is stopped then).
    let keep = Arc::new(std::sync::Mutex::new(None));
    let slot = keep.clone();
    atrion_state::conformance::feed_resyncs_after_a_restart(s, move || {
        server.kill();
        server.restart();
        *slot.lock().unwrap() = Some(server);
    })
    .await;
    drop(keep);
}

#[tokio::test]
async fn garbage_under_our_keys_is_an_error_not_a_panic() {
    let Some(server) = RedisServer::start() else { return };
    let s = store(&server).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // A plain string where a hash belongs, and a hash missing its version.
    let _: () = redis::cmd("SET").arg("atrion:e:{bad}").arg("x").query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("HSET").arg("atrion:e:{half}").arg("v").arg("x").query_async(&mut raw).await.unwrap();
    assert!(s.get("bad").await.is_err());
    assert_eq!(s.get("half").await.unwrap_err().kind, ErrorKind::Corrupt);
    assert!(s.list_keys("").await.unwrap().contains(&"bad".to_owned()));
}

/// A quiet write (a heartbeat refreshed for the watchers alone) is not published: the feed's
/// next change is the loud write after it.
#[tokio::test]
async fn a_quiet_write_is_not_on_the_feed() {
    let Some(server) = RedisServer::start() else { return };
    let s = store(&server).await;
    let mut feed = s.subscribe("quiet/").await.unwrap().expect("a feed");
    let v = s.put_quiet("quiet/a", bytes::Bytes::from_static(b"1"), None).await.unwrap();
    assert_eq!(s.get("quiet/a").await.unwrap().map(|e| e.version), Some(v));
    s.put("quiet/b", bytes::Bytes::from_static(b"2"), None).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.expect("an event").unwrap();
    assert!(
        matches!(&next, atrion_state::Change::Set { key, .. } if key == "quiet/b"),
        "the quiet write was announced: {next:?}"
    );
}

/// A member joining a key of three or more members below its two leaders is not noticed (a
/// fleet joining would otherwise notify every node of every node's every route); the next
/// notice carries the count as it is.
#[tokio::test]
async fn a_fourth_member_below_the_leaders_is_not_news() {
    use atrion_state::shares::{Share, ShareWrite, Shares};
    let Some(server) = RedisServer::start() else { return };
    let s = store(&server).await;
    let mut feed = s.subscribe("joins/").await.unwrap().expect("a feed");
    let put = |m: &str, rank: f64| {
        let share = Share { member: m.into(), rank, value: bytes::Bytes::copy_from_slice(m.as_bytes()) };
        s.put_shares(vec![ShareWrite { key: "joins/r".into(), share }])
    };
    for (m, rank) in [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0), ("e", 5.0)] {
        put(m, rank).await.unwrap();
    }
    let mut counts = Vec::new();
    while counts.last() != Some(&5) {
        let next = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.expect("a notice").unwrap();
        let atrion_state::Change::Set { value: Some(v), .. } = next else { panic!("{next:?}") };
        counts.push(Shares::decode(&v).unwrap().members);
    }
    assert_eq!(counts, [1, 2, 3, 5], "d joined unnoticed; e's notice counts it");
}

#[tokio::test]
async fn damaged_values_are_repaired_by_writes_never_blocking_them() {
    use atrion_state::CasOutcome;
    use bytes::Bytes;
    let Some(server) = RedisServer::start() else { return };
    let s = store(&server).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let v1 = s.set("k1", Bytes::from_static(b"a")).await.unwrap();

    // A string where one of our hashes belongs: the write replaces it.
    let _: () = redis::cmd("SET").arg("atrion:e:{bad}").arg("x").query_async(&mut raw).await.unwrap();
    s.set("bad", Bytes::from_static(b"ok")).await.unwrap();
    assert_eq!(s.get("bad").await.unwrap().unwrap().value, Bytes::from_static(b"ok"));
    assert_eq!(s.repairs(), 1);

    // A version counter that is not an integer: the key's versions go on increasing.
    let v1 = s.set("k2", Bytes::from_static(b"a")).await.unwrap().max(v1);
    let _: () = redis::cmd("SET").arg("atrion:v:{k2}").arg("garbage").query_async(&mut raw).await.unwrap();
    let v2 = s.set("k2", Bytes::from_static(b"b")).await.unwrap();
    assert!(v2 > v1, "{v2} > {v1}");
    assert_eq!(s.get("k2").await.unwrap().unwrap().version, v2, "versions past 14 digits stay exact");
    assert_eq!(s.repairs(), 2);

    // Both at once, in a batch: a counter of the wrong type and a list under a key.
    let _: () = redis::cmd("DEL").arg("atrion:v:{k2}").query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("HSET").arg("atrion:v:{k2}").arg("f").arg("v").query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("RPUSH").arg("atrion:e:{listed}").arg("x").query_async(&mut raw).await.unwrap();
    let items = ["listed", "k2"].map(|k| (k.to_owned(), Bytes::from_static(b"c"), None)).to_vec();
    let versions = s.batch_set(items).await.unwrap();
    assert!(versions[1] > v2, "{versions:?} > {v2}");
    assert_eq!(s.get("listed").await.unwrap().unwrap().value, Bytes::from_static(b"c"));
    assert_eq!(s.repairs(), 4);

    // Compare-and-swap treats a foreign value as absent.
    let _: () = redis::cmd("SET").arg("atrion:e:{cas}").arg("x").query_async(&mut raw).await.unwrap();
    let out = s.compare_and_swap("cas", None, Bytes::from_static(b"d"), None).await.unwrap();
    assert!(matches!(out, CasOutcome::Swapped { .. }), "{out:?}");
    assert_eq!(s.repairs(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_through_a_real_redis() {
    let Some(server) = RedisServer::start() else { return };
    let stores: [Arc<dyn StateStore>; 2] = [Arc::new(store(&server).await), Arc::new(store(&server).await)];
    atrion_sync::testing::two_nodes_converge(stores).await;
}

#[tokio::test]
async fn auth_with_a_password_in_the_url() {
    let Some(server) = RedisServer::start_with_password("s3cret") else { return };
    let e = RedisStore::connect(&RedisConfig::new(server.url())).await.unwrap_err();
    assert!(e.to_string().starts_with("redis store: open"), "refused without the password: {e}");
    let url = format!("redis://:s3cret@127.0.0.1:{}", server.port);
    let s = RedisStore::connect(&RedisConfig::new(url)).await.unwrap();
    s.set("k", "v".into()).await.unwrap();
    assert!(s.exists("k").await.unwrap());
    let url = format!("redis://default:wrong@127.0.0.1:{}", server.port);
    assert!(RedisStore::connect(&RedisConfig::new(url)).await.is_err());
}

/// Waits for `what` to hold, polling; fails after a minute (a generous deadline on a loaded
/// machine: the test asserts the order of events, not their speed).
async fn eventually(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !holds() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Decides (and reports what it admits) `n` times on 64 routes; returns how many decisions
/// were made.
fn hammer(engine: &atrion_core::Engine, clock: &atrion_state::TokioClock, n: u64) -> u64 {
    use atrion_core::{Priority, Telemetry};
    let mut made = 0;
    for i in 0..n {
        let route = format!("r{}", i % 64);
        let now = clock.now();
        let d = engine.decide(&route, now, Priority::Normal);
        made += 1;
        if d.is_admitted() {
            engine.report(&route, Telemetry::new(20.0, (i % 3 == 0) as u8 as f64, 0.3).unwrap(), now);
        }
    }
    made
}

/// The order of events this test asserts: the store dies; the node finds out (degraded)
/// while decisions go on; 20,000 more decisions all return while the store is still dead
/// and the node still degraded (a decision that waited on the store would return only
/// after the restart); the store returns; the node resyncs. Speed is a benchmark's claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_store_never_holds_up_a_decision_and_the_node_resyncs_when_it_returns() {
    use atrion_core::{Engine, PhysicsConfig};
    use atrion_state::{Clock, TokioClock};
    use atrion_sync::{StateManager, SyncConfig};

    let Some(mut server) = RedisServer::start() else { return };
    let clock = Arc::new(TokioClock::new());
    let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let mut cfg = SyncConfig::for_node("a");
    let full_sync = Duration::from_secs(1);
    cfg.pulse = Duration::from_millis(20);
    cfg.full_sync = full_sync;
    cfg.max_buffered = 100;
    let store: Arc<dyn StateStore> = Arc::new(store(&server).await);
    let manager = StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap();

    let run = |n: u64| {
        let (e, c) = (engine.clone(), clock.clone());
        tokio::task::spawn_blocking(move || hammer(&e, &c, n))
    };
    assert_eq!(run(20_000).await.unwrap(), 20_000);
    server.kill();
    // 1. Decisions go on while the node finds out that the store is gone...
    let errors = manager.stats().store_errors;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut during = 0;
    while !(manager.stats().degraded && manager.stats().store_errors >= errors + 3) {
        assert!(tokio::time::Instant::now() < deadline, "never degraded: {:?}", manager.stats());
        during += run(1_000).await.unwrap();
    }
    assert!(during > 0, "decisions were made while the node found out");
    // 2. ...and after it knows, on local state alone, before the store returns: a decision
    // that waited on the store would not return until the restart below, which comes after.
    let outage = tokio::time::timeout(Duration::from_secs(60), run(20_000)).await;
    assert_eq!(outage.expect("decisions returned while the store was dead").unwrap(), 20_000);
    let stats = manager.stats();
    assert!(stats.degraded, "still degraded when the decisions returned: {stats:?}");
    assert!(stats.store_errors >= errors + 3, "{stats:?}");
    assert!(stats.buffered <= 64, "bounded by the routes touched: {stats:?}");

    // 3. The store returns: the node resyncs and empties its buffer.
    server.restart();
    eventually("a resync after the store returns", || {
        let s = manager.stats();
        !s.degraded && s.resyncs > 0 && s.buffered == 0
    })
    .await;
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_degrades_then_rejoins() {
    use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry};
    use atrion_redis::testing::TcpProxy;
    use atrion_state::{Clock, TokioClock};
    use atrion_sync::{StateManager, SyncConfig};

    let Some(server) = RedisServer::start() else { return };
    let proxy = TcpProxy::start(server.port).await;
    let clock = Arc::new(TokioClock::new());
    let mut nodes = Vec::new();
    for (id, port) in [("a", proxy.port), ("b", server.port)] {
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let mut cfg = SyncConfig::for_node(id);
        cfg.pulse = Duration::from_millis(20);
        cfg.full_sync = Duration::from_millis(500);
        cfg.store_timeout = Duration::from_millis(200);
        let mut rc = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
        rc.command_timeout = Duration::from_millis(300);
        rc.connect_timeout = Duration::from_millis(300);
        let store: Arc<dyn StateStore> = Arc::new(RedisStore::connect(&rc).await.unwrap());
        let m = StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap();
        nodes.push((engine, m));
    }
    let (a, b) = (nodes[0].0.clone(), nodes[1].0.clone());

    for (phase, partition) in [("stall", 0), ("cut", 1)] {
        let route = format!("partitioned/{phase}");
        if partition == 0 {
            proxy.stall()
        } else {
            proxy.cut()
        }
        // A keeps deciding on local state and learns the route is hurt; B cannot know.
        for _ in 0..100 {
            let now = clock.now();
            if a.decide(&route, now, Priority::Critical).is_admitted() {
                a.report(&route, Telemetry::new(900.0, 1.0, 0.9).unwrap(), now);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eventually(&format!("{phase}: A is degraded"), || nodes[0].1.stats().degraded).await;
        assert!(a.snapshot(&route).unwrap().scar > 1.0, "{phase}: local state went on");
        assert!(b.cluster_scar(&route, clock.now()).is_none(), "{phase}: nothing crossed the partition");

        proxy.heal();
        eventually(&format!("{phase}: A rejoins and B sees its scar"), || {
            !nodes[0].1.stats().degraded && b.cluster_scar(&route, clock.now()).is_some_and(|s| s > 0.0)
        })
        .await;
    }
    for (_, m) in nodes {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_the_clusters_keys_is_skipped_by_the_sync() {
    use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry};
    use atrion_state::{Clock, TokioClock};
    use atrion_sync::{StateManager, SyncConfig};

    let Some(server) = RedisServer::start() else { return };
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // A string where a route's ranks belong, someone else's bytes as a share and as a
    // heartbeat, right under our keys.
    let _: () = redis::cmd("SET").arg("atrion:sr:{atrion/route/x}").arg("x").query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("atrion:sv:{atrion/route/y}")
        .arg("evil")
        .arg("not a contribution")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () =
        redis::cmd("ZADD").arg("atrion:sr:{atrion/route/y}").arg(1).arg("evil").query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("atrion:e:{atrion/node/evil}")
        .arg("v")
        .arg("??")
        .arg("ver")
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    let clock = Arc::new(TokioClock::new());
    let (a, b) = (
        Arc::new(Engine::new(PhysicsConfig::default()).unwrap()),
        Arc::new(Engine::new(PhysicsConfig::default()).unwrap()),
    );
    let mut cfg = SyncConfig::for_node("a");
    cfg.pulse = Duration::from_millis(20);
    let ma = StateManager::start(a.clone(), Arc::new(store(&server).await), cfg, clock.clone() as Arc<dyn Clock>)
        .await
        .unwrap();
    let mut cfg = SyncConfig::for_node("b");
    cfg.pulse = Duration::from_millis(20);
    let mb = StateManager::start(b.clone(), Arc::new(store(&server).await), cfg, clock.clone() as Arc<dyn Clock>)
        .await
        .unwrap();
    assert!(mb.stats().decode_errors >= 2, "{:?}", mb.stats());
    // The sync still works for everything else.
    for _ in 0..100 {
        a.report("z", Telemetry::new(900.0, 1.0, 0.9).unwrap(), clock.now());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("B sees A's scar", || b.decide("z", clock.now(), Priority::Critical).resistance > 10.0).await;
    ma.shutdown().await;
    mb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_warm_starts_from_redis() {
    use atrion_core::{Engine, PhysicsConfig, Telemetry};
    use atrion_state::{Clock, TokioClock};
    use atrion_sync::{StateManager, SyncConfig};

    let Some(server) = RedisServer::start() else { return };
    let clock = Arc::new(TokioClock::new());
    let start = |engine: Arc<Engine>, store: RedisStore| {
        let mut cfg = SyncConfig::for_node("a");
        cfg.pulse = Duration::from_millis(20);
        StateManager::start(engine, Arc::new(store), cfg, clock.clone() as Arc<dyn Clock>)
    };
    let first = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let m = start(first.clone(), store(&server).await).await.unwrap();
    for _ in 0..100 {
        first.report("orders", Telemetry::new(900.0, 1.0, 0.9).unwrap(), clock.now());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = first.snapshot("orders").unwrap().scar;
    m.shutdown().await; // flushes
    drop(first);

    // The process restarts: a new, empty engine under the same node id.
    let second = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let m = start(second.clone(), store(&server).await).await.unwrap();
    let after = second.snapshot("orders").expect("known before serving").scar;
    assert!(after > 0.5 * before && after <= before, "warm start: {after} of {before}");
    m.shutdown().await;
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let Some(server) = RedisServer::start_tls() else { return };
    let mut cfg = RedisConfig::new(server.url());
    assert!(cfg.url.starts_with("rediss://"));
    cfg.ca_cert = Some(server.ca_cert());
    // A handshake in a debug build on a loaded machine can take more than the default 2 s.
    cfg.connect_timeout = Duration::from_secs(30);
    let s = RedisStore::connect(&cfg).await.unwrap();
    s.set("secure", "v".into()).await.unwrap();
    assert!(s.exists("secure").await.unwrap());
    // Not trusting the CA, or speaking plain text to a TLS port, fails clearly.
    let mut untrusted = RedisConfig::new(server.url());
    untrusted.connect_timeout = Duration::from_millis(500);
    assert!(RedisStore::connect(&untrusted).await.is_err());
    let mut plain = RedisConfig::new(format!("redis://127.0.0.1:{}", server.port));
    plain.connect_timeout = Duration::from_millis(500);
    assert!(RedisStore::connect(&plain).await.is_err());
    let mut bad = RedisConfig::new(server.url());
    bad.ca_cert = Some("/nonexistent/ca.pem".into());
    assert!(matches!(RedisStore::connect(&bad).await.unwrap_err().kind, ErrorKind::Config(_)));
}

/// Five nodes on one real Redis: only the watchers beat aloud (the heartbeats on the feed
/// come from at most three nodes, two watchers and one taking over, not from all five), yet
/// every node sees the four others healthy; a node cut off without a word is seen gone by
/// every other node, and back when its link heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_watchers_beat_aloud_and_a_silent_node_is_seen_gone() {
    use atrion_core::{Engine, PhysicsConfig};
    use atrion_redis::testing::TcpProxy;
    use atrion_state::{Change, Clock, TokioClock};
    use atrion_sync::{NodeStatus, StateManager, SyncConfig};

    let Some(server) = RedisServer::start() else { return };
    let proxy = TcpProxy::start(server.port).await;
    let clock = Arc::new(TokioClock::new());
    let mut managers = Vec::new();
    for i in 0..5 {
        let port = if i == 4 { proxy.port } else { server.port };
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let mut cfg = SyncConfig::for_node(format!("n{i}"));
        cfg.namespace = "quiet".into();
        cfg.pulse = Duration::from_millis(50);
        cfg.node_ttl = Duration::from_millis(1_200);
        cfg.store_timeout = Duration::from_millis(200);
        let mut rc = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
        rc.command_timeout = Duration::from_millis(300);
        rc.connect_timeout = Duration::from_millis(300);
        let store: Arc<dyn StateStore> = Arc::new(RedisStore::connect(&rc).await.unwrap());
        managers.push(StateManager::start(engine, store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap());
    }
    let others = |m: &StateManager<atrion_core::SilentObserver>| -> Vec<(String, NodeStatus)> {
        m.nodes().into_iter().filter(|n| !n.this_node).map(|n| (n.id, n.status)).collect()
    };
    let all_healthy = |m: &StateManager<atrion_core::SilentObserver>| {
        let seen = others(m);
        seen.len() == 4 && seen.iter().all(|(_, s)| *s == NodeStatus::Healthy)
    };
    eventually("every node sees four healthy others", || managers.iter().all(all_healthy)).await;

    // Two seconds of the feed: about twelve beat periods.
    let listener = store(&server).await;
    let mut feed = listener.subscribe("quiet/node/").await.unwrap().expect("a feed");
    let mut aloud = std::collections::BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(change)) = tokio::time::timeout_at(until, feed.recv()).await {
        if let Change::Set { key, .. } = change {
            aloud.insert(key);
        }
    }
    assert!(!aloud.is_empty() && aloud.len() <= 3, "heartbeats on the feed: {aloud:?}");
    assert!(managers.iter().all(all_healthy), "quiet beats still count");

    proxy.cut();
    eventually("n4 is gone for every other node", || {
        managers[..4].iter().all(|m| others(m).iter().any(|(id, s)| id == "n4" && *s == NodeStatus::Gone))
    })
    .await;
    assert!(
        managers[..4]
            .iter()
            .all(|m| others(m).iter().filter(|(id, _)| id != "n4").all(|(_, s)| *s != NodeStatus::Gone)),
        "the others stay"
    );
    proxy.heal();
    eventually("n4 is back for every other node", || managers.iter().all(all_healthy)).await;
    for m in managers {
        m.shutdown().await;
    }
}

/// Commits `kill_group(next)`, `kill_group(next + 1)`, ... on `s`, sending each acknowledged
/// group's number, until a group fails; returns the number of that group.
fn group_writer(
    s: Arc<dyn StateStore>,
    next: u64,
    acked: tokio::sync::mpsc::UnboundedSender<u64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        for i in next.. {
            if s.transact(atrion_state::conformance::kill_group(i)).await.is_err() {
                return i;
            }
            let _ = acked.send(i);
        }
        unreachable!()
    })
}

/// A persistent server (append-only file, fsynced at every write) SIGKILLed while groups
/// are being committed: after each restart every group is whole or absent, and every
/// acknowledged group is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_groups_leaves_each_all_or_nothing() {
    let Some(mut server) = RedisServer::start_persistent() else { return };
    let mut cfg = RedisConfig::new(server.url());
    cfg.command_timeout = Duration::from_secs(2);
    let s: Arc<dyn StateStore> = Arc::new(RedisStore::connect(&cfg).await.unwrap());
    let mut acked = Vec::new();
    let mut next = 0;
    for (round, kill_after) in [50usize, 200, 5].into_iter().enumerate() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = group_writer(s.clone(), next, tx);
        for _ in 0..kill_after {
            acked.push(rx.recv().await.expect("the writer runs"));
        }
        server.kill(); // SIGKILL, in the middle of the writer's stream of groups
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
        let whole = atrion_state::conformance::check_kill_groups(s.as_ref(), failed + 1).await;
        for &i in &acked {
            let a = s.get(&format!("{{conf/kill/{i}}}/a")).await.unwrap();
            assert!(a.is_some(), "round {round}: acknowledged group {i} lost");
        }
        let extra = whole - acked.len() as u64;
        assert!(extra <= round as u64 + 1, "round {round}: {whole} groups for {} acknowledged", acked.len());
        next = failed + 1;
    }
    s.transact(atrion_state::conformance::kill_group(next)).await.unwrap();
}
