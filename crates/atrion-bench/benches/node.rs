//! A node's own cost per pulse (issue 30, part 2), on a real Redis started here: one
//! `StateManager` with 10,000 routes, 5% of which report failures before each pulse (so 500
//! are dirty and pushed), and the notices two other nodes cause meanwhile (each writes its
//! share of the same 500 routes with a new rank: 1,000 notice records per pulse, published
//! by Redis itself, plus one sentinel record that says the replay is over).
//!
//! Measured: the **CPU time of the node's thread**, not wall time. The node runs alone on a
//! current-thread runtime on its own thread (its manager's task, its Redis connections and
//! its change feed's task all run there), and one iteration is one `pulse_now` plus the wait
//! until the node has applied every injected notice; the reports that make the routes dirty
//! are the application's work and are not counted. The other nodes' writes are made by the
//! bench's main thread on its own connection.
//!
//! Printed after the run: the CPU per pulse split into the push (`pulse_now`) and the apply
//! (receiving the notices, decoding, merging), with notices applied and merges per pulse.
//!
//! Run: `cargo bench -p atrion-bench --bench node`

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrion::{Engine, PhysicsConfig, Telemetry};
use atrion_redis::testing::RedisServer;
use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::shares::{Share, ShareWrite};
use atrion_state::{Clock, StateStore, TokioClock};
use atrion_sync::{ClusterKeys, Contribution, EngineClock, StateManager, SyncConfig};
use criterion::{Criterion, criterion_group, criterion_main};

const ROUTES: usize = 10_000;
/// 5% of the routes: dirty on this node at every pulse.
const DIRTY: usize = ROUTES / 20;
const NAMESPACE: &str = "bench-node";
/// The other nodes whose shares the replayed feed carries.
const OTHERS: [&str; 2] = ["node-a", "node-b"];
/// Written last by the replay: when the node has it, it has applied everything before it.
const SENTINEL: &str = "sentinel";

fn route(i: usize) -> String {
    format!("GET /api/items/{i}")
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant of libc.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What one measured pulse cost the node.
#[derive(Debug, Clone, Copy, Default)]
struct Parts {
    push: Duration,
    apply: Duration,
    pulled: u64,
    merges: u64,
}

enum Cmd {
    /// Make routes `[k * DIRTY, (k + 1) * DIRTY)` (mod ROUTES) dirty, pulse, tell the
    /// replayer, then wait for its sentinel `k`.
    Pulse(u64),
    Stop,
}

enum Reply {
    Pushed,
    Done(Parts),
}

/// The other nodes' shares of `routes` at round `k`: new ranks every round, both above this
/// node's (so both lead and both moves are news), with a scar below this node's (so that it
/// is never outranked and pushes every dirty route).
fn others_shares(routes: impl Iterator<Item = usize>, k: u64, wall: u64) -> Vec<ShareWrite> {
    let keys = ClusterKeys::new(NAMESPACE, "replayer");
    let mut out = Vec::new();
    for i in routes {
        for (j, member) in OTHERS.iter().enumerate() {
            let value = Contribution { scar: 0.0, momentum: 0.0, at_ms: wall + j as u64 }.encode();
            out.push(ShareWrite {
                key: keys.route(&route(i)).unwrap(),
                share: Share { member: (*member).to_owned(), rank: 1e15 + (2 * k + j as u64) as f64 * 4.0, value },
            });
        }
    }
    out
}

fn sentinel_share(k: u64) -> ShareWrite {
    let keys = ClusterKeys::new(NAMESPACE, "replayer");
    ShareWrite {
        key: keys.route(SENTINEL).unwrap(),
        share: Share {
            member: OTHERS[0].to_owned(),
            rank: k as f64,
            value: Contribution { scar: 0.0, momentum: 0.0, at_ms: k }.encode(),
        },
    }
}

/// The node: its engine, its manager and its Redis connections on one current-thread runtime
/// on this thread.
fn node(url: String, cmds: mpsc::Receiver<Cmd>, replies: mpsc::Sender<Reply>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let clock = Arc::new(TokioClock::new());
    let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let names: Vec<String> = (0..ROUTES).map(route).collect();
    let bad = Telemetry::new(900.0, 1.0, 0.9).unwrap();
    let manager = rt.block_on(async {
        let store: Arc<dyn StateStore> = Arc::new(RedisStore::connect(&RedisConfig::new(url)).await.unwrap());
        // A pulse far in the future: only `pulse_now` pulses. Other nodes live for the run.
        let mut cfg = SyncConfig::for_node("node-0");
        cfg.namespace = NAMESPACE.to_owned();
        cfg.pulse = Duration::from_secs(3_600);
        cfg.full_sync = cfg.pulse;
        cfg.max_interval = cfg.pulse;
        cfg.node_ttl = 3 * cfg.pulse;
        cfg.deadband = 0.0; // every change pushed: the pulse's full cost
        // Generous: under valgrind (`docs/SCALING.md`, instruction counts) a call takes far
        // longer than on the hardware, and a timeout would make the run a different one.
        cfg.store_timeout = Duration::from_secs(120);
        StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap()
    });
    // Every route scarred and pushed once, not measured.
    let t0 = clock.now().as_nanos();
    for n in &names {
        for t in 0..5u64 {
            engine.report(n, bad, atrion::Timestamp::from_nanos(t0.saturating_sub((5 - t) * 20_000_000)));
        }
    }
    rt.block_on(manager.pulse_now());
    replies.send(Reply::Pushed).unwrap();
    while let Ok(Cmd::Pulse(k)) = cmds.recv() {
        let now = clock.now();
        for i in 0..DIRTY {
            engine.report(&names[(k as usize * DIRTY + i) % ROUTES], bad, now);
        }
        let before = manager.stats();
        let c0 = thread_cpu();
        rt.block_on(manager.pulse_now());
        let c1 = thread_cpu();
        let pushed = manager.stats().pushed - before.pushed;
        assert_eq!(pushed, DIRTY as u64, "every dirty route pushed: {:?}", manager.stats());
        replies.send(Reply::Pushed).unwrap();
        rt.block_on(async {
            while !manager.route_nodes(SENTINEL).iter().any(|(_, c)| c.at_ms == k) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let c2 = thread_cpu();
        let after = manager.stats();
        replies
            .send(Reply::Done(Parts {
                push: c1 - c0,
                apply: c2 - c1,
                pulled: after.pulled - before.pulled,
                merges: after.merges - before.merges,
            }))
            .unwrap();
    }
    rt.block_on(manager.shutdown());
}

fn node_pulse(c: &mut Criterion) {
    let Some(server) = RedisServer::start() else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let replayer = rt.block_on(RedisStore::connect(&RedisConfig::new(server.url()))).unwrap();
    let wall = TokioClock::new().wall_ms();
    // The other nodes are live (their heartbeats), and hold a share of every route.
    rt.block_on(async {
        for member in OTHERS {
            let key = ClusterKeys::new(NAMESPACE, member).heartbeat();
            let mut beat = wall.to_le_bytes().to_vec();
            beat.extend_from_slice(b"bench");
            replayer.put(&key, beat.into(), None).await.unwrap();
        }
        replayer.put_shares(others_shares(0..ROUTES, 0, wall)).await.unwrap();
    });
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (reply_tx, reply_rx) = mpsc::channel();
    let url = server.url();
    let node = std::thread::spawn(move || node(url, cmd_rx, reply_tx));
    assert!(matches!(reply_rx.recv().unwrap(), Reply::Pushed), "warm-up pulse");
    let parts = Mutex::new(Vec::<Parts>::new());
    let mut k = 0u64;
    let mut one = || {
        k += 1;
        cmd_tx.send(Cmd::Pulse(k)).unwrap();
        assert!(matches!(reply_rx.recv().unwrap(), Reply::Pushed));
        let wall = TokioClock::new().wall_ms();
        let dirty = (0..DIRTY).map(|i| (k as usize * DIRTY + i) % ROUTES);
        let mut feed = others_shares(dirty, k, wall);
        feed.push(sentinel_share(k));
        rt.block_on(replayer.put_shares(feed)).unwrap();
        let Reply::Done(p) = reply_rx.recv().unwrap() else { panic!("out of step") };
        parts.lock().unwrap().push(p);
        p.push + p.apply
    };
    let mut g = c.benchmark_group("node_pulse");
    g.sample_size(10);
    g.bench_function("redis_10k_routes_5pct_dirty_cpu", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| one()).sum());
    });
    g.finish();
    cmd_tx.send(Cmd::Stop).unwrap();
    node.join().unwrap();
    let parts = parts.into_inner().unwrap();
    let n = parts.len().max(1) as u32;
    let sum = |f: fn(&Parts) -> Duration| parts.iter().map(f).sum::<Duration>() / n;
    let per = |f: fn(&Parts) -> u64| parts.iter().map(f).sum::<u64>() as f64 / f64::from(n);
    let (push, apply, pulled) = (sum(|p| p.push), sum(|p| p.apply), per(|p| p.pulled));
    println!(
        "node_pulse over {n} pulses ({ROUTES} routes, {DIRTY} dirty): CPU per pulse {:?} = push {push:?} + apply {apply:?}; \
         {pulled:.0} notices applied and {:.0} merges per pulse; apply {:.2} µs per notice",
        push + apply,
        per(|p| p.merges),
        apply.as_secs_f64() * 1e6 / pulled.max(1.0),
    );
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5))
}

criterion_group! { name = benches; config = config(); targets = node_pulse }
criterion_main!(benches);
