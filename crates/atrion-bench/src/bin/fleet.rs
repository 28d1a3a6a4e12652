//! Today's cluster sync as a fleet: N nodes (an engine and a `StateManager` each, in one
//! process) over one in-memory store. Every pulse, every node reports on 5% of its routes
//! (so that they are dirty and pushed); after a few seconds it prints, per N, what one node
//! pushed and pulled per pulse on average. The baseline that issue 13's sync, whose cost per
//! node must not grow with N, is measured against.
//!
//! Run: `cargo run --release -p atrion-bench --bin fleet [-- ROUTES]`

use std::sync::Arc;
use std::time::Duration;

use atrion::state::{Clock, InMemoryStore, StateManager, StateStore, SyncConfig, TokioClock};
use atrion::{Engine, PhysicsConfig, Telemetry};

const PULSE: Duration = Duration::from_millis(100);
const PULSES: u64 = 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let routes: usize = std::env::args().nth(1).map_or(Ok(1_000), |a| a.parse())?;
    let dirty = (routes / 20).max(1);
    println!("{routes} routes, {dirty} dirty per node per {PULSE:?} pulse, {PULSES} pulses, one in-memory store");
    println!(
        "| nodes | pushed per node per pulse | pulled per node per pulse | pulled / (nodes - 1) | pulses per node | resyncs per node |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let names: Vec<String> = (0..routes).map(|i| format!("GET /api/items/{i}")).collect();
    let bad = Telemetry::new(900.0, 1.0, 0.9)?;
    for n in [3usize, 10, 30] {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let mut nodes = Vec::new();
        for i in 0..n {
            let engine = Arc::new(Engine::new(PhysicsConfig::default())?);
            let mut cfg = SyncConfig::for_node(format!("node-{i}"));
            cfg.namespace = format!("fleet-{n}");
            cfg.pulse = PULSE;
            cfg.node_ttl = Duration::from_secs(60);
            let manager = StateManager::start(engine.clone(), store.clone(), cfg, clock.clone()).await?;
            nodes.push((engine, manager));
        }
        for k in 0..PULSES {
            for (i, (engine, _)) in nodes.iter().enumerate() {
                let now = clock.now();
                for j in 0..dirty {
                    engine.report(&names[(k as usize * dirty + j * 7 + i) % routes], bad, now);
                }
            }
            tokio::time::sleep(PULSE).await;
        }
        let (mut pushed, mut pulled, mut pulses, mut resyncs) = (0u64, 0u64, 0u64, 0u64);
        for (_, manager) in &nodes {
            let s = manager.stats();
            (pushed, pulled, pulses) = (pushed + s.pushed, pulled + s.pulled, pulses + s.pulses.max(1));
            resyncs += s.resyncs + s.full_syncs;
        }
        let (push, pull) = (pushed as f64 / pulses as f64, pulled as f64 / pulses as f64);
        let per_node = |x: u64| x as f64 / n as f64;
        println!(
            "| {n} | {push:.1} | {pull:.1} | {:.1} | {:.1} | {:.1} |",
            pull / (n - 1) as f64,
            per_node(pulses),
            per_node(resyncs)
        );
        for (_, manager) in nodes {
            manager.shutdown().await;
        }
    }
    Ok(())
}
