//! The in-memory store against the conformance suite, and what only it can show (a
//! paused clock, a lagging subscriber).

use std::sync::Arc;
use std::time::Duration;

use atrion_state::{Change, InMemoryStore, StateStore};

atrion_state::conformance_tests!(async { (Arc::new(InMemoryStore::new()) as Arc<dyn StateStore>, ()) });

#[tokio::test(start_paused = true)]
async fn ttl_follows_tokio_time() {
    let s = InMemoryStore::new();
    s.set_with_ttl("k", "v".into(), Duration::from_secs(3_600)).await.unwrap();
    tokio::time::advance(Duration::from_secs(3_599)).await;
    assert_eq!(s.get("k").await.unwrap().unwrap().ttl, Some(Duration::from_secs(1)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(s.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_to_resync() {
    let s = InMemoryStore::new();
    let mut feed = s.subscribe("").await.unwrap().unwrap();
    for i in 0..10_000 {
        s.set(&format!("k{i}"), "v".into()).await.unwrap();
    }
    assert_eq!(feed.recv().await, Some(Change::Resync));
    assert!(matches!(feed.recv().await, Some(Change::Set { .. })));
}

#[tokio::test]
async fn clones_share_data() {
    let a = InMemoryStore::new();
    let b = a.clone();
    a.set("k", "v".into()).await.unwrap();
    assert!(b.exists("k").await.unwrap());
}
