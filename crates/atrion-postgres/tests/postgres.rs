//! The PostgreSQL store against a private server: the conformance suite, idempotent schema,
//! reconnects, and two nodes converging through it.

use std::sync::Arc;
use std::time::Duration;

use atrion_postgres::testing::PgServer;
use atrion_postgres::{PostgresConfig, PostgresStore};
use atrion_state::{Change, ErrorKind, StateStore};

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
    let mut feed = s.subscribe("").await.unwrap().unwrap();
    s.set("k1", "v".into()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await.unwrap();
    assert!(matches!(first, Some(Change::Set { .. })), "{first:?}");
    server.restart();
    let mut ok = false;
    for _ in 0..50 {
        if s.set("k2", "v".into()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes work again after the restart");
    assert!(s.exists("k1").await.unwrap(), "the data survived the restart");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_through_postgres() {
    use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry};
    use atrion_state::{Clock, StateManager, SyncConfig, TokioClock};

    let Some(server) = PgServer::start() else { return };
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = b.decide("checkout", clock.now(), Priority::Critical).resistance;
    assert!(r > 10.0, "b sees a's scar through PostgreSQL: {r}");
    for (_, m) in nodes {
        m.shutdown().await;
    }
}
