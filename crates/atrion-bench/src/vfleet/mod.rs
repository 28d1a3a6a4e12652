//! The fleet in virtual time: N real [`StateManager`]s (the real pulse, feed, merge and
//! designated pushers) over a [`StoreModel`] of one shared store, on tokio's paused clock
//! (a current-thread runtime that advances time whenever every task waits), so that the
//! CPU time of the harness does not count: what the figures show is the protocol and the
//! model, not the machine that ran them.
//!
//! The workload is `fleet`'s (the real-time harness, `src/bin/fleet.rs`): every pulse each
//! node reports failures on the same rotating share of the routes, after one warm-up round
//! over all of them; each pulse one node scars a fresh probe route, and its convergence is
//! the time until every other node's merged view has shown it. Optional faults follow the
//! steady run: a partition of some nodes, healed; a store restart that loses the data.
//!
//! Deterministic: the engines' time and the managers' clock are tokio's (a [`VirtualClock`]
//! with a fixed wall-clock origin), the routes' rotation and the probes' writers come from
//! the seed, and a current-thread runtime runs tasks in a fixed order.

pub mod model;

use std::sync::Arc;
use std::time::Duration;

use atrion::state::{Clock, EngineClock, StateManager, StateStore, SyncConfig};
use atrion::{Engine, PhysicsConfig, Telemetry, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::counting::{Counting, Counts, Tally};
pub use model::{ModelConfig, ModelStore, ServerCounts, StoreModel};

/// The pulse of every node.
pub const PULSE: Duration = Duration::from_millis(100);

/// Tokio's clock with a fixed wall-clock origin, so that runs repeat to the byte (a
/// [`atrion::state::TokioClock`] starts its wall time at the system's time).
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock {
    origin: Instant,
}

/// The wall-clock time of a virtual fleet's start: 2027-01-15, in ms since the Unix epoch.
const WALL_ORIGIN_MS: u64 = 1_800_000_000_000;

impl VirtualClock {
    /// A clock whose epoch is now (tokio's now).
    pub fn new() -> Self {
        VirtualClock { origin: Instant::now() }
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for VirtualClock {
    fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
    fn wall_ms(&self) -> u64 {
        WALL_ORIGIN_MS + self.elapsed().as_millis() as u64
    }
}

/// Faults injected after the steady pulses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// The fraction of the nodes cut off the store (at least one).
    pub partition_share: f64,
    /// How long the partition lasts, in pulses.
    pub partition_pulses: u64,
    /// How long the restarted store is down, in pulses.
    pub restart_pulses: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { partition_share: 0.3, partition_pulses: 20, restart_pulses: 10 }
    }
}

/// One run's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Nodes.
    pub nodes: usize,
    /// Routes reported failing, all told.
    pub routes: usize,
    /// The fraction of the routes each node reports failing per pulse.
    pub dirty: f64,
    /// Pulses measured (after the warm-up).
    pub pulses: u64,
    /// The seed of the routes' rotation and the probes' writers.
    pub seed: u64,
    /// The store.
    pub model: ModelConfig,
    /// [`SyncConfig::deadband`].
    pub deadband: f64,
    /// [`SyncConfig::second_look`].
    pub second_look: f64,
    /// [`SyncConfig::node_ttl`] (`fleet` runs with 60 s).
    pub node_ttl: Duration,
    /// [`SyncConfig::full_sync`] (`fleet` runs with 600 s).
    pub full_sync: Duration,
    /// Faults after the steady pulses, if any.
    pub faults: Option<Faults>,
}

impl Params {
    /// `fleet`'s settings for `nodes` nodes and `routes` routes.
    pub fn new(nodes: usize, routes: usize) -> Self {
        Params {
            nodes,
            routes,
            dirty: 0.01,
            pulses: 30,
            seed: 1,
            model: ModelConfig::default(),
            deadband: SyncConfig::default().deadband,
            second_look: SyncConfig::default().second_look,
            node_ttl: Duration::from_secs(60),
            full_sync: Duration::from_secs(600),
            faults: None,
        }
    }
}

/// What one run measured. Per-node figures are per node per pulse, averaged over the fleet
/// and the measured pulses; times in pulses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Nodes.
    pub nodes: usize,
    /// Routes.
    pub routes: usize,
    /// Routes each node reports failing per pulse.
    pub dirty_per_node: usize,
    /// Pulses measured.
    pub pulses: u64,
    /// The seed.
    pub seed: u64,
    /// Store operations (one per key read or written).
    pub ops: f64,
    /// Calls (round trips).
    pub calls: f64,
    /// Bytes written (keys and values).
    pub bytes_out: f64,
    /// Bytes received, notices included.
    pub bytes_in: f64,
    /// Change notices received.
    pub notices: f64,
    /// Store operations per pulse, the whole fleet.
    pub total_ops: f64,
    /// Notices the store delivered per pulse, all subscribers.
    pub deliveries: f64,
    /// Of those, heartbeats' notices.
    #[serde(default)]
    pub heartbeat_deliveries: f64,
    /// Of those, notices of keys no other node reads (route records).
    #[serde(default)]
    pub other_deliveries: f64,
    /// Of those, notices that moved a route's second leader only (only its leader needs
    /// them).
    #[serde(default)]
    pub second_only_deliveries: f64,
    /// The fraction of the server's time used.
    pub server_busy: f64,
    /// Contributions pushed.
    pub pushed: f64,
    /// Contributions held back: two other live nodes lead the route.
    pub outranked: f64,
    /// Changes held for a second look.
    pub deferred: f64,
    /// Full syncs in the measured pulses, the whole fleet.
    pub full_syncs: u64,
    /// Store calls that failed in the measured pulses, the whole fleet.
    pub store_errors: u64,
    /// Convergence, median.
    pub converge_p50: f64,
    /// Convergence, 99th percentile.
    pub converge_p99: f64,
    /// Convergence, slowest probe.
    pub converge_max: f64,
    /// Probes some node never saw within 100 pulses.
    pub unconverged: usize,
    /// Pulses from the partition's end until every node saw every probe written meanwhile.
    pub partition_heal: Option<f64>,
    /// Pulses from the restarted store's return until it held, and every node saw, the
    /// probes written before and during the restart.
    pub restart_heal: Option<f64>,
    /// Contributions pushed again after the restart (the store had lost them).
    pub republished: u64,
    /// Full syncs during and after the faults, the whole fleet.
    pub fault_full_syncs: u64,
    /// Wall-clock seconds the run took on this machine.
    pub wall_s: f64,
}

impl Row {
    /// The figures a run of the same seed must repeat: everything but the wall time.
    pub fn figures(&self) -> Row {
        Row { wall_s: 0.0, ..self.clone() }
    }
}

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// `0..n` shuffled.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, self.below(i + 1));
        }
        v
    }
}

/// `ms` milliseconds before `now`: the failures of a pulse happened during it.
fn ago(now: Timestamp, ms: u64) -> Timestamp {
    Timestamp::from_nanos(now.as_nanos().saturating_sub(ms * 1_000_000))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A probe route, scarred on one node.
struct Probe {
    route: String,
    key: String,
    writer: usize,
    at: Instant,
    /// Which nodes have shown it.
    seen: Vec<bool>,
    /// When the last of them did.
    done: Option<Instant>,
}

struct Fleet {
    clock: Arc<VirtualClock>,
    model: Arc<StoreModel>,
    engines: Vec<Arc<Engine>>,
    managers: Vec<StateManager<atrion::SilentObserver>>,
    tallies: Vec<Arc<Tally>>,
    names: Vec<String>,
    order: Vec<usize>,
    dirty: usize,
    rng: SplitMix,
    bad: Telemetry,
    keys: atrion_sync::ClusterKeys,
}

impl Fleet {
    /// The failures of pulse `k`: every node, the same routes.
    fn load(&self, k: u64) {
        let now = self.clock.now();
        let routes = self.names.len();
        for engine in &self.engines {
            for j in 0..self.dirty {
                let route = &self.names[self.order[(k as usize * self.dirty + j * 7) % routes]];
                for t in 0..5u64 {
                    engine.report(route, self.bad, ago(now, 80 - 20 * t));
                }
            }
        }
    }

    /// A fresh route scarred on one node (chosen by the seed).
    fn probe(&mut self, name: String) -> Probe {
        let writer = self.rng.below(self.engines.len());
        let now = self.clock.now();
        for t in 0..50u64 {
            self.engines[writer].report(&name, self.bad, ago(now, 98 - 2 * t));
        }
        let mut seen = vec![false; self.engines.len()];
        seen[writer] = true;
        let key = self.keys.route(&name).unwrap_or_default();
        Probe { route: name, key, writer, at: Instant::now(), seen, done: None }
    }

    fn shows(&self, node: usize, route: &str) -> bool {
        self.engines[node].cluster_scar(route, self.clock.now()).is_some_and(|s| s > 0.0)
    }

    /// Notes which nodes show each unfinished probe now.
    fn watch(&self, probes: &mut [Probe]) {
        for p in probes.iter_mut().filter(|p| p.done.is_none()) {
            for i in 0..self.engines.len() {
                if !p.seen[i] && self.shows(i, &p.route) {
                    p.seen[i] = true;
                }
            }
            if p.seen.iter().all(|&s| s) {
                p.done = Some(Instant::now());
            }
        }
    }

    /// Whether the store holds every probe of `probes` and every node but its writer shows it.
    fn all_show(&self, probes: &[Probe]) -> bool {
        probes.iter().all(|p| {
            self.model.holds_shares(&p.key) && (0..self.engines.len()).all(|i| i == p.writer || self.shows(i, &p.route))
        })
    }

    /// Pulses of load while watching `probes`, one new probe per pulse (named `tag/k`).
    async fn pulses(&mut self, from: u64, pulses: u64, tag: &str, probes: &mut Vec<Probe>) {
        for k in 0..pulses {
            self.load(from + k);
            let p = self.probe(format!("{tag}/{k}"));
            probes.push(p);
            let next = Instant::now() + PULSE;
            while Instant::now() < next {
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.watch(probes);
            }
        }
    }

    /// Pulses of load until `done` holds, checked every millisecond: the pulses it took from
    /// now, or `None` after `limit` pulses.
    async fn until(&mut self, from: u64, limit: u64, probes: &[Probe]) -> Option<f64> {
        let start = Instant::now();
        for k in 0..limit {
            self.load(from + k);
            let next = Instant::now() + PULSE;
            while Instant::now() < next {
                if self.all_show(probes) {
                    return Some(start.elapsed().as_secs_f64() / PULSE.as_secs_f64());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        None
    }

    fn counts(&self) -> Vec<Counts> {
        self.tallies.iter().map(|t| t.counts()).collect()
    }
}

/// One run, on the current runtime: it must be a current-thread runtime with time paused
/// ([`run_paused`] builds one).
pub async fn run(p: &Params) -> anyhow::Result<Row> {
    let wall = std::time::Instant::now();
    let n = p.nodes;
    let dirty = ((p.routes as f64 * p.dirty) as usize).max(1);
    let clock = Arc::new(VirtualClock::new());
    let model = StoreModel::new(p.model, clock.clone() as Arc<dyn Clock>, n);
    let mut rng = SplitMix::new(p.seed);
    let order = rng.permutation(p.routes);
    let mut fleet = Fleet {
        clock: clock.clone(),
        model: model.clone(),
        engines: Vec::with_capacity(n),
        managers: Vec::with_capacity(n),
        tallies: Vec::with_capacity(n),
        names: (0..p.routes).map(|i| format!("GET /api/items/{i}")).collect(),
        order,
        dirty,
        rng,
        bad: Telemetry::new(900.0, 1.0, 0.9)?,
        keys: SyncConfig::default().keys(),
    };
    let namespace = "vfleet".to_owned();
    for i in 0..n {
        let engine = Arc::new(Engine::new(PhysicsConfig::default())?);
        let mut cfg = SyncConfig::for_node(format!("node-{i}"));
        cfg.namespace = namespace.clone();
        cfg.pulse = PULSE;
        cfg.node_ttl = p.node_ttl;
        cfg.full_sync = p.full_sync;
        cfg.deadband = p.deadband;
        cfg.second_look = p.second_look;
        if i == 0 {
            fleet.keys = cfg.keys();
        }
        let tally = Arc::new(Tally::default());
        let store: Arc<dyn StateStore> = Arc::new(Counting::new(Arc::new(model.node(i)), tally.clone()));
        let manager = StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await?;
        fleet.engines.push(engine);
        fleet.managers.push(manager);
        fleet.tallies.push(tally);
    }
    // Warm-up, not counted: one round over every route, so that each route has every node's
    // share (the steady state is measured, not the joining).
    let rounds = p.routes.div_ceil(dirty) as u64 + 2;
    for k in 0..rounds {
        fleet.load(k);
        tokio::time::sleep(PULSE).await;
    }
    let base = fleet.counts();
    let server0 = model.counts();
    let stats0: Vec<_> = fleet.managers.iter().map(|m| m.stats()).collect();
    let mut probes = Vec::new();
    fleet.pulses(rounds, p.pulses, "probe", &mut probes).await;
    let end = fleet.counts();
    let server1 = model.counts();
    let stats1: Vec<_> = fleet.managers.iter().map(|m| m.stats()).collect();
    // The last probes' convergence, up to 100 pulses after each was written.
    let limit = probes.last().map(|p| p.at).unwrap_or_else(Instant::now) + 100 * PULSE;
    let mut k = rounds + p.pulses;
    while probes.iter().any(|p| p.done.is_none()) && Instant::now() < limit {
        fleet.load(k);
        k += 1;
        let next = Instant::now() + PULSE;
        while Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(1)).await;
            fleet.watch(&mut probes);
        }
    }
    let mut times: Vec<f64> = probes
        .iter()
        .filter_map(|q| q.done.map(|d| (d - q.at).as_secs_f64() / PULSE.as_secs_f64()))
        .filter(|&t| t <= 100.0)
        .collect();
    let unconverged = probes.len() - times.len();
    times.sort_by(f64::total_cmp);

    let per = |f: &dyn Fn(Counts) -> u64| {
        (0..n).map(|i| f(end[i] - base[i])).sum::<u64>() as f64 / n as f64 / p.pulses as f64
    };
    let stat =
        |f: &dyn Fn(&atrion_sync::SyncStats) -> u64| -> u64 { (0..n).map(|i| f(&stats1[i]) - f(&stats0[i])).sum() };
    let pulses = p.pulses as f64;
    let mut row = Row {
        nodes: n,
        routes: p.routes,
        dirty_per_node: dirty,
        pulses: p.pulses,
        seed: p.seed,
        ops: per(&|c| c.ops),
        calls: per(&|c| c.calls),
        bytes_out: per(&|c| c.bytes_out),
        bytes_in: per(&|c| c.bytes_in),
        notices: per(&|c| c.notices),
        total_ops: (0..n).map(|i| (end[i] - base[i]).ops).sum::<u64>() as f64 / pulses,
        deliveries: (server1.deliveries - server0.deliveries) as f64 / pulses,
        heartbeat_deliveries: (server1.heartbeat_deliveries - server0.heartbeat_deliveries) as f64 / pulses,
        other_deliveries: (server1.other_deliveries - server0.other_deliveries) as f64 / pulses,
        second_only_deliveries: (server1.second_only_deliveries - server0.second_only_deliveries) as f64 / pulses,
        server_busy: (server1.busy_ns - server0.busy_ns) as f64 / (PULSE.as_nanos() as f64 * pulses),
        pushed: stat(&|s| s.pushed) as f64 / n as f64 / pulses,
        outranked: stat(&|s| s.outranked) as f64 / n as f64 / pulses,
        deferred: stat(&|s| s.deferred) as f64 / n as f64 / pulses,
        full_syncs: stat(&|s| s.full_syncs),
        store_errors: stat(&|s| s.store_errors),
        converge_p50: percentile(&times, 0.5),
        converge_p99: percentile(&times, 0.99),
        converge_max: times.last().copied().unwrap_or(f64::NAN),
        unconverged,
        partition_heal: None,
        restart_heal: None,
        republished: 0,
        fault_full_syncs: 0,
        wall_s: 0.0,
    };

    if let Some(f) = p.faults {
        let before: Vec<_> = fleet.managers.iter().map(|m| m.stats()).collect();
        // A partition: some nodes cut off the store, then healed.
        let cut_n = ((n as f64 * f.partition_share).round() as usize).clamp(1, n);
        let mut cut = fleet.rng.permutation(n);
        cut.truncate(cut_n);
        cut.sort_unstable();
        model.partition(&cut);
        let mut during = Vec::new();
        fleet.pulses(k, f.partition_pulses, "partition", &mut during).await;
        k += f.partition_pulses;
        model.heal();
        during.push(fleet.probe("partition/healed".into()));
        row.partition_heal = fleet.until(k, 300, &during).await;
        k += 300;
        // A restart: the store loses its data and is down for a while.
        let kept: Vec<Probe> = (0..5).map(|i| fleet.probe(format!("kept/{i}"))).collect();
        tokio::time::sleep(PULSE * 3).await;
        model.restart();
        let mut during = kept;
        fleet.pulses(k, f.restart_pulses, "restart", &mut during).await;
        k += f.restart_pulses;
        model.back();
        during.push(fleet.probe("restart/back".into()));
        row.restart_heal = fleet.until(k, 300, &during).await;
        let after: Vec<_> = fleet.managers.iter().map(|m| m.stats()).collect();
        row.republished = (0..n).map(|i| after[i].republished - before[i].republished).sum();
        row.fault_full_syncs = (0..n).map(|i| after[i].full_syncs - before[i].full_syncs).sum();
    }
    for m in fleet.managers.drain(..) {
        m.shutdown().await;
    }
    row.wall_s = wall.elapsed().as_secs_f64();
    Ok(row)
}

/// [`run`] on a fresh current-thread runtime with tokio's clock paused (auto-advanced).
pub fn run_paused(p: &Params) -> anyhow::Result<Row> {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?.block_on(run(p))
}
