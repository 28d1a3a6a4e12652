//! The Redis store against a private local Redis Cluster (six `redis-server`s, three
//! primaries and three replicas, on free loopback ports): the harness itself, the port's
//! conformance suite, and a primary killed while two nodes decide at full speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry};
use atrion_redis::testing::RedisCluster;
use atrion_redis::{RedisConfig, RedisMode, RedisStore};
use atrion_state::{Clock, StateStore, TokioClock, conformance};
use atrion_sync::{EngineClock, StateManager, SyncConfig};

/// A store on `cluster`, started from its first node and knowing the others.
async fn store(cluster: &RedisCluster) -> RedisStore {
    let urls = cluster.urls();
    let mut cfg = RedisConfig::new(urls[0].clone());
    cfg.nodes = urls[1..].to_vec();
    RedisStore::connect(&cfg).await.unwrap()
}

async fn eventually(what: &str, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !holds().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The harness: six nodes form a cluster, a key is served by its slot's primary, and when
/// that primary is killed its replica takes over and the cluster heals when it returns.
#[test]
fn a_local_redis_cluster_forms_fails_over_and_heals() {
    let Some(mut cluster) = RedisCluster::start() else { return };
    assert_eq!(cluster.cli(0, &["set", "{route}/x", "1"]).trim(), "OK");
    assert_eq!(cluster.cli(3, &["get", "{route}/x"]).trim(), "1", "any node redirects to the slot's primary");
    let primary = cluster.primary_of("{route}/x");
    cluster.nodes[primary].kill();
    let survivor = (primary + 1) % cluster.nodes.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.cli(survivor, &["set", "{route}/x", "2"]).trim() != "OK" {
        assert!(std::time::Instant::now() < deadline, "no replica took over the killed primary's slots");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(cluster.primary_of("{route}/x"), primary, "a replica was promoted");
    cluster.nodes[primary].restart();
    cluster.wait_until_ok(Duration::from_secs(30));
    assert_eq!(cluster.cli(primary, &["get", "{route}/x"]).trim(), "2", "the old primary rejoined and redirects");
}

/// The port's conformance suite, every check on one cluster (each writes under its own
/// prefix, whose keys spread over the three primaries), and a single-server config is
/// refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else { return };
    let s = store(&cluster).await;
    assert!(s.is_cluster(), "the cluster is detected from `url`");
    let detected = RedisStore::connect(&RedisConfig::new(cluster.urls()[4].clone())).await.unwrap();
    assert!(detected.is_cluster(), "from any node, replicas included");
    let s: Arc<dyn StateStore> = Arc::new(s);
    conformance::all(s.clone()).await;
    // A group must keep to one slot group: one that spans two is refused, naming both, and
    // writes nothing; keys that name no group are each a group of their own.
    assert!(s.capabilities().transactions && s.capabilities().one_slot_groups);
    let v = bytes::Bytes::from_static(b"v");
    let spanning = atrion_state::Group::new().put("{g1}/a", v.clone(), None).put("{g2}/b", v.clone(), None);
    let e = s.transact(spanning).await.unwrap_err();
    assert_eq!(e.kind, atrion_state::ErrorKind::GroupSpansSlots { first: "g1".into(), second: "g2".into() }, "{e}");
    assert_eq!(e.key.as_deref(), Some("{g2}/b"));
    let plain = atrion_state::Group::new().check("plain/a", None).put("plain/b", v.clone(), None);
    let e = s.transact(plain).await.unwrap_err();
    assert!(matches!(e.kind, atrion_state::ErrorKind::GroupSpansSlots { .. }), "{e}");
    assert!(
        s.batch_get(&["{g1}/a".into(), "{g2}/b".into(), "plain/b".into()]).await.unwrap().iter().all(Option::is_none)
    );
    atrion_sync::testing::two_nodes_converge([s.clone(), Arc::new(store(&cluster).await)]).await;
    // Keys of every primary are listed.
    let keys = s.list_keys("").await.unwrap();
    let on: std::collections::HashSet<usize> =
        keys.iter().map(|k| cluster.primary_of(&format!("atrion:e:{{{k}}}"))).collect();
    assert_eq!(on.len(), 3, "keys on all three primaries, all listed: {keys:?}");
    // `stats` counts every primary's keys (one pipeline per primary and chunk).
    let before = s.stats().await.unwrap();
    let items = (0..1_200).map(|i| (format!("stats/{i}"), bytes::Bytes::from_static(b"12345"), None)).collect();
    s.batch_set(items).await.unwrap();
    let after = s.stats().await.unwrap();
    assert_eq!(after.keys - before.keys, 1_200, "{before:?} -> {after:?}");
    assert_eq!(after.value_bytes - before.value_bytes, 1_200 * 5, "{before:?} -> {after:?}");
    // Told `single`, the store does not route: a command for another primary's slot fails
    // with a clear error rather than a wrong answer.
    let mut single = RedisConfig::new(cluster.urls()[0].clone());
    single.mode = RedisMode::Single;
    let single = RedisStore::connect(&single).await.unwrap();
    let mut failed = 0;
    for i in 0..20 {
        failed += usize::from(single.set(&format!("single/{i}"), "v".into()).await.is_err());
    }
    assert!(failed > 0, "MOVED replies surface as errors");
}

/// A primary is killed while two nodes decide at full speed: no decision waits on it,
/// writes resume once its replica is promoted, and both nodes resynchronise (their change
/// feeds were on the killed node) and converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_never_blocks_a_decision_and_the_nodes_resync_after_the_failover() {
    let Some(mut cluster) = RedisCluster::start() else { return };
    // A route whose shares live on node 0, the node both feeds subscribe through.
    let route = (0..)
        .map(|i| format!("GET /r{i}"))
        .find(|r| cluster.primary_of(&format!("atrion:sr:{{atrion/route/{r}}}")) == 0)
        .unwrap();
    let clock = Arc::new(TokioClock::new());
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let mut cfg = SyncConfig::for_node(id);
        cfg.pulse = Duration::from_millis(50);
        let store = Arc::new(store(&cluster).await) as Arc<dyn StateStore>;
        let m = StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap();
        nodes.push((engine, m));
    }
    // Full-speed decisions on both engines, on their own threads, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicU64::new(0));
    let spinners: Vec<_> = nodes
        .iter()
        .map(|(engine, _)| {
            let (engine, clock, stop, decided, route) =
                (engine.clone(), clock.clone(), stop.clone(), decided.clone(), route.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    engine.decide(&route, clock.now(), Priority::Critical);
                    decided.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    let (a, b) = (nodes[0].0.clone(), nodes[1].0.clone());
    let hurt = async |secs: u64| {
        for _ in 0..secs * 100 {
            a.report(&route, Telemetry::new(900.0, 1.0, 0.9).unwrap(), clock.now());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    hurt(1).await;
    eventually("b sees a's scar before the failover", async || {
        b.decide(&route, clock.now(), Priority::Critical).resistance > 10.0
    })
    .await;

    cluster.nodes[0].kill();
    let before = decided.load(Relaxed);
    let resyncs = [nodes[0].1.stats().resyncs, nodes[1].1.stats().resyncs];
    // While the slot has no primary, decisions go on at full speed, and a keeps reporting.
    hurt(1).await;
    assert!(decided.load(Relaxed) > before, "decisions went on while the primary was down");
    // The replica is promoted; a's writes reach it again, and both feeds moved to a live
    // node and asked for a full resync.
    let pushed = nodes[0].1.stats().pushed;
    eventually("a writes again after the promotion", async || {
        a.report(&route, Telemetry::new(900.0, 1.0, 0.9).unwrap(), clock.now());
        let s = nodes[0].1.stats();
        s.pushed > pushed && !s.degraded && s.buffered == 0
    })
    .await;
    for (i, (_, m)) in nodes.iter().enumerate() {
        eventually("the node resyncs", async || m.stats().resyncs > resyncs[i]).await;
    }
    let a_scar = a.snapshot(&route).unwrap().scar;
    eventually("b converges on a's scar", async || {
        b.cluster_scar(&route, clock.now()).is_some_and(|s| s > 0.5 * a_scar)
    })
    .await;
    stop.store(true, Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    for (_, m) in nodes {
        m.shutdown().await;
    }
}
