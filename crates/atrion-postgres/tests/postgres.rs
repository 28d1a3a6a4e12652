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
    atrion_state::conformance::two_nodes_converge(stores).await;
}
