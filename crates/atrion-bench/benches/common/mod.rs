//! Set-up shared by the state and cluster benches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atrion::{Engine, PhysicsConfig, Telemetry};
use atrion_state::{Clock, StateStore, TokioClock};
use atrion_sync::{EngineClock, StateManager, SyncConfig};
use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;

/// Routes made dirty before each measured pulse.
pub const PULSE_ROUTES: u64 = 10_000;

/// One worker thread: the other core is left to the measured thread (and the servers).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// Sync settings for a bench: its own namespace, so that none reads what another left in the
/// store, and nodes that never time out while a bench runs.
pub fn sync(namespace: &str, node: &str, pulse: Duration) -> SyncConfig {
    let mut c = SyncConfig::for_node(node);
    c.namespace = namespace.to_owned();
    c.pulse = pulse;
    c.full_sync = pulse.max(c.full_sync);
    c.node_ttl = Duration::from_secs(60).max(2 * pulse);
    c
}

/// Benchmarks, as `name` in `g`, one pulse that pushes [`PULSE_ROUTES`] dirty routes to
/// `store`: every route reports (its scar changes), then one `pulse_now` is timed.
pub fn bench_pulse(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn StateStore>,
) {
    let clock = Arc::new(TokioClock::new());
    let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let names: Vec<String> = (0..PULSE_ROUTES).map(|i| format!("GET /api/items/{i}")).collect();
    // A pulse far in the future: only `pulse_now` pushes.
    let manager = rt.block_on(async {
        let mut cfg = sync(&format!("bench-pulse-{name}"), "pusher", Duration::from_secs(3_600));
        cfg.deadband = 0.0; // every change pushed: the pulse's full cost
        cfg.max_interval = cfg.pulse;
        // The pulse's cost is measured, whatever it is: a pulse slower than the default
        // store timeout (1 s; sealed pulses over a loaded machine's PostgreSQL are) would
        // give up and push nothing.
        cfg.store_timeout = Duration::from_secs(120);
        StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap()
    });
    // Let the pulse task's first, immediate tick pass before measuring.
    std::thread::sleep(Duration::from_millis(200));
    let bad = Telemetry::new(900.0, 1.0, 0.9).unwrap();
    // Every route scarred first (failures over the last 100 ms) and pushed once, not
    // measured: a route with no scar has nothing to share.
    let t0 = clock.now().as_nanos();
    for n in &names {
        for t in 0..5u64 {
            engine.report(n, bad, atrion::Timestamp::from_nanos(t0.saturating_sub((5 - t) * 20_000_000)));
        }
    }
    rt.block_on(manager.pulse_now());
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let now = clock.now();
                for n in &names {
                    engine.report(n, bad, now);
                }
                let before = manager.stats().pushed;
                let start = Instant::now();
                rt.block_on(manager.pulse_now());
                total += start.elapsed();
                assert_eq!(manager.stats().pushed - before, PULSE_ROUTES, "every dirty route pushed");
            }
            total
        })
    });
    rt.block_on(manager.shutdown());
}
