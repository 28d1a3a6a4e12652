//! The wrapper over real backends: a real file (redb), a real `redis-server` and a real
//! PostgreSQL (each started by the test on a free loopback port): after traffic on the route
//! `GET /patients/12345` no stored byte names it; a restart with the key brings the state
//! back; a restart with a wrong or missing key is refused. The conformance suite runs
//! through the wrapper over the file store.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use atrion_file::{FileConfig, FileStore};
use atrion_postgres::testing::PgServer;
use atrion_postgres::{PostgresConfig, PostgresStore};
use atrion_redis::testing::RedisServer;
use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::StateStore;
use common::*;

mod file_conformance {
    use super::*;
    atrion_state::conformance_tests!(async {
        let dir = tempfile::tempdir().unwrap();
        let inner = FileStore::open(&FileConfig::new(dir.path().join("state.redb"))).await.unwrap();
        let s = wrap(Arc::new(inner), &format!("k1:{K1}")).await;
        (Arc::new(s) as Arc<dyn StateStore>, dir)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_holds_no_route_name_and_restarts_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let keys = format!("k1:{K1}");
    let before = {
        let inner: Arc<dyn StateStore> = Arc::new(FileStore::open(&FileConfig::new(&path)).await.unwrap());
        let s = wrap(inner, &keys).await;
        traffic(&s).await;
        snapshot(&s).await
    };
    check_snapshot(&before);
    let mut bytes = Vec::new();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
    }
    assert!(bytes.len() > 4096, "the file was written");
    assert_clean("the redb file", &bytes);
    let inner: Arc<dyn StateStore> = Arc::new(FileStore::open(&FileConfig::new(&path)).await.unwrap());
    assert_eq!(snapshot(&wrap(inner.clone(), &keys).await).await, before, "the state is back");
    refuses_wrong_and_missing_keys(inner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_route_name_and_restarts_only_with_its_key() {
    let Some(server) = RedisServer::start() else { return };
    let keys = format!("k1:{K1}");
    let connect = || async {
        Arc::new(RedisStore::connect(&RedisConfig::new(server.url())).await.unwrap()) as Arc<dyn StateStore>
    };
    let before = {
        let s = wrap(connect().await, &keys).await;
        traffic(&s).await;
        snapshot(&s).await
    };
    check_snapshot(&before);
    let bytes = atrion_redis::testing::stored_bytes(&server.url()).await;
    assert!(bytes.len() > 1000, "something was stored");
    assert_clean("redis", &bytes);
    let inner = connect().await;
    assert_eq!(snapshot(&wrap(inner.clone(), &keys).await).await, before, "the state is back");
    refuses_wrong_and_missing_keys(inner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_no_route_name_and_restarts_only_with_its_key() {
    let Some(server) = PgServer::start() else { return };
    let keys = format!("k1:{K1}");
    let connect = || async {
        Arc::new(PostgresStore::connect(&PostgresConfig::new(server.url())).await.unwrap()) as Arc<dyn StateStore>
    };
    let before = {
        let s = wrap(connect().await, &keys).await;
        traffic(&s).await;
        snapshot(&s).await
    };
    check_snapshot(&before);
    let bytes = atrion_postgres::testing::stored_bytes(&server.url()).await;
    assert!(bytes.len() > 1000, "something was stored");
    assert_clean("postgres", &bytes);
    let inner = connect().await;
    assert_eq!(snapshot(&wrap(inner.clone(), &keys).await).await, before, "the state is back");
    refuses_wrong_and_missing_keys(inner).await;
}

mod redis_conformance {
    use super::*;
    atrion_state::conformance_tests!(async {
        let server = RedisServer::start().expect("redis-server");
        let inner = RedisStore::connect(&RedisConfig::new(server.url())).await.unwrap();
        let s = wrap(Arc::new(inner), &format!("k1:{K1}")).await;
        (Arc::new(s) as Arc<dyn StateStore>, server)
    });
}

mod postgres_conformance {
    use super::*;
    atrion_state::conformance_tests!(async {
        let server = PgServer::start().expect("PostgreSQL");
        let inner = PostgresStore::connect(&PostgresConfig::new(server.url())).await.unwrap();
        let s = wrap(Arc::new(inner), &format!("k1:{K1}")).await;
        (Arc::new(s) as Arc<dyn StateStore>, server)
    });
}
