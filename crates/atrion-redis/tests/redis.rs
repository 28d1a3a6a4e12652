//! The Redis store against a real `redis-server`: the conformance suite, and what only a
//! remote store shows (reconnects, a feed that asks for a resync, garbage under our keys).

mod harness;

use std::sync::Arc;
use std::time::Duration;

use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::{Change, ErrorKind, StateStore};
use harness::RedisServer;

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
    let s = store(&server).await;
    let mut feed = s.subscribe("k").await.unwrap().unwrap();
    s.set("k1", "v".into()).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), feed.recv()).await.unwrap(),
        Some(Change::Set { .. })
    ));

    server.kill();
    let e = s.get("k1").await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Backend), "{e}");
    server.restart();
    // The connection manager reconnects on its own.
    let mut ok = false;
    for _ in 0..50 {
        if s.set("k2", "v".into()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes work again after the restart");
    // Events published while the feed was away are lost: it says so.
    let mut saw_resync = false;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
            Ok(Some(Change::Resync)) => {
                saw_resync = true;
                break;
            }
            Ok(Some(_)) => continue,
            _ => break,
        }
    }
    assert!(saw_resync, "the feed asks for a resync after a reconnect");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_through_a_real_redis() {
    use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry};
    use atrion_state::{Clock, StateManager, SyncConfig, TokioClock};

    let Some(server) = RedisServer::start() else { return };
    let clock = Arc::new(TokioClock::new());
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let mut cfg = SyncConfig::for_node(id);
        cfg.pulse = Duration::from_millis(20);
        let store: Arc<dyn StateStore> = Arc::new(store(&server).await);
        let m = StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap();
        nodes.push((engine, m));
    }
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    for _ in 0..150 {
        a.report("checkout", Telemetry::new(900.0, 1.0, 0.9).unwrap(), clock.now());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(a.snapshot("checkout").unwrap().scar > 1.0);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let r = b.decide("checkout", clock.now(), Priority::Critical).resistance;
    assert!(r > 10.0, "b sees a's scar through Redis: {r}");
    assert!(nodes[1].1.stats().pulled > 0, "{:?}", nodes[1].1.stats());
    for (_, m) in nodes {
        m.shutdown().await;
    }
}
