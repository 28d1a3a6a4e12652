//! Checks of a shared (cluster) store through the sync, beyond the port itself (feature
//! `testing`): cluster adapters call them with their own servers.
#![allow(clippy::unwrap_used, missing_docs)] // a test suite: a failure must stop loudly

use std::sync::Arc;
use std::time::Duration;

use atrion_state::conformance::Store;

use crate::EngineClock;

/// Two nodes, each with its own connection to one shared store: a route scarred on the
/// first reaches the second's engine (through the change feed or the full sync).
pub async fn two_nodes_converge(stores: [Store; 2]) {
    use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry};

    use atrion_state::{Clock, TokioClock};

    use crate::{StateManager, SyncConfig};

    let clock = Arc::new(TokioClock::new());
    let mut nodes = Vec::new();
    for (id, store) in ["a", "b"].into_iter().zip(stores) {
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let mut cfg = SyncConfig::for_node(id);
        cfg.namespace = "conf-cluster".into();
        cfg.pulse = Duration::from_millis(20);
        let m = StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap();
        nodes.push((engine, m));
    }
    let (a, b) = (nodes[0].0.clone(), nodes[1].0.clone());
    for _ in 0..150 {
        a.report("checkout", Telemetry::new(900.0, 1.0, 0.9).unwrap(), clock.now());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(a.snapshot("checkout").unwrap().scar > 1.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while b.decide("checkout", clock.now(), Priority::Critical).resistance <= 10.0 {
        assert!(tokio::time::Instant::now() < deadline, "b never saw a's scar: {:?}", nodes[1].1.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(nodes[1].1.stats().pulled > 0 || nodes[1].1.stats().full_syncs > 1);
    for (_, m) in nodes {
        m.shutdown().await;
    }
}
