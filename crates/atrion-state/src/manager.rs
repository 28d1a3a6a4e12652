//! `StateManager`: the pulse that shares scar tissue across a cluster (SPEC 4).
//!
//! ```text
//! COMPUTE (engine, local, ns) -> BUFFER (dirty routes) -> PUSH (one batch per pulse)
//!                                                      -> PULL (change feed + full sync) -> MERGE (gamma)
//! ```
//!
//! - The engine decides on local state only; the manager never sits on the decision path.
//! - Each node writes only its own contribution for a route, under
//!   `{namespace}/route/{route}/node/{node}`: its *local* scar and momentum and the wall-clock
//!   time they were computed, never the merged value (no echo).
//! - A reader heals each remote contribution to its own `now` and takes the maximum over the
//!   other live nodes as `S_cluster`; the engine blends it by gamma.
//! - Nodes heartbeat under `{namespace}/node/{node}`; a node silent for longer than
//!   `node_ttl` drops out of the aggregate.
//! - A failing store is counted and retried every pulse; unpushed contributions are kept,
//!   newest per route, bounded, and pushed when the store returns.
//! - `start` loads what the cluster knows before it returns (warm start).
//! - Observability: [`SyncStats`] counters (pushes, pulls, merges, resyncs, store and decode
//!   errors, buffered routes, degraded), and `tracing` events when the store becomes
//!   unreachable or reachable again, events are lost, or values do not decode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrion_core::{Engine, PhysicsObserver, Timestamp};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Op, StoreError};
use crate::keys::ClusterKeys;
use crate::store::{Change, StateStore};

/// Engine time and wall-clock time, read together.
///
/// Engine time (a [`Timestamp`]) must be the one the application decides with; wall-clock
/// milliseconds are what nodes compare with each other.
pub trait Clock: Send + Sync + 'static {
    /// Now, in engine time.
    fn now(&self) -> Timestamp;
    /// Now, in milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
}

/// A clock on tokio's time: monotonic, and paused or advanced in tests. Wall time is the
/// system time at creation plus the monotonic time elapsed since.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin_ms: u64,
}

impl TokioClock {
    /// A clock whose engine epoch is now.
    pub fn new() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        TokioClock { origin: tokio::time::Instant::now(), wall_origin_ms: wall }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn wall_ms(&self) -> u64 {
        self.wall_origin_ms + self.origin.elapsed().as_millis() as u64
    }
}

/// How a node takes part in the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SyncConfig {
    /// Key namespace of the cluster: nodes of one cluster share it (no `/`).
    pub namespace: String,
    /// This node's id, unique in the cluster: 1 to 64 of `[A-Za-z0-9._-]`.
    pub node_id: String,
    /// How often dirty routes are pushed and aggregates recomputed.
    #[serde(with = "atrion_core::serde_secs")]
    pub pulse: Duration,
    /// How often everything is re-read from the store, repairing lost change events.
    #[serde(with = "atrion_core::serde_secs")]
    pub full_sync: Duration,
    /// A node whose heartbeat is older than this drops out of the aggregate.
    #[serde(with = "atrion_core::serde_secs")]
    pub node_ttl: Duration,
    /// Most contributions kept while the store is unreachable (newest per route).
    pub max_buffered: usize,
    /// A store call of the sync that takes longer than this counts as failed (the node is
    /// degraded), whatever the adapter's own timeouts.
    #[serde(with = "atrion_core::serde_secs")]
    pub store_timeout: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            namespace: "atrion".into(),
            node_id: "node-1".into(),
            pulse: Duration::from_millis(100),
            full_sync: Duration::from_secs(5),
            node_ttl: Duration::from_secs(3),
            max_buffered: 100_000,
            store_timeout: Duration::from_secs(1),
        }
    }
}

impl SyncConfig {
    /// The defaults, for node `node_id`.
    pub fn for_node(node_id: impl Into<String>) -> Self {
        SyncConfig { node_id: node_id.into(), ..SyncConfig::default() }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |why: String| Err(StoreError::new("sync", Op::Open, None, ErrorKind::Config(why)));
        if self.namespace.is_empty() || self.namespace.contains('/') || self.namespace.len() > 64 {
            return bad(format!("`namespace` must be 1 to 64 bytes without `/`, got {:?}", self.namespace));
        }
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.node_id.is_empty() || self.node_id.len() > 64 || !self.node_id.chars().all(id_ok) {
            return bad(format!("`node_id` must be 1 to 64 of [A-Za-z0-9._-], got {:?}", self.node_id));
        }
        if self.pulse.is_zero() {
            return bad("`pulse` must be > 0".into());
        }
        if self.full_sync < self.pulse {
            return bad("`full_sync` must be at least `pulse`".into());
        }
        if self.node_ttl < 2 * self.pulse {
            return bad("`node_ttl` must be at least two pulses".into());
        }
        if self.max_buffered == 0 {
            return bad("`max_buffered` must be > 0".into());
        }
        if self.store_timeout.is_zero() {
            return bad("`store_timeout` must be > 0".into());
        }
        Ok(())
    }

    /// The keys this node reads and writes.
    pub fn keys(&self) -> ClusterKeys {
        ClusterKeys::new(&self.namespace, &self.node_id)
    }
}

/// One node's contribution to a route, as stored: version byte, scar, momentum, wall ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// The node's local scar (ohms).
    pub scar: f64,
    /// The node's local momentum.
    pub momentum: f64,
    /// When they were computed, in ms since the Unix epoch.
    pub at_ms: u64,
}

const CONTRIBUTION_VERSION: u8 = 1;
const CONTRIBUTION_LEN: usize = 25;

impl Contribution {
    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(CONTRIBUTION_LEN);
        out.push(CONTRIBUTION_VERSION);
        out.extend_from_slice(&self.scar.to_le_bytes());
        out.extend_from_slice(&self.momentum.to_le_bytes());
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        Bytes::from(out)
    }

    /// Decodes and validates; `None` for bytes of another version or length, or values that
    /// are not finite or negative (written by someone else, or damaged).
    pub fn decode(bytes: &[u8]) -> Option<Contribution> {
        if bytes.len() != CONTRIBUTION_LEN || bytes[0] != CONTRIBUTION_VERSION {
            return None;
        }
        let word = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        let c = Contribution { scar: f64::from_bits(word(1)?), momentum: f64::from_bits(word(9)?), at_ms: word(17)? };
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        (ok(c.scar) && ok(c.momentum)).then_some(c)
    }
}

/// Counters of the sync, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// Pulses run.
    pub pulses: u64,
    /// Route contributions pushed.
    pub pushed: u64,
    /// Remote changes applied from the change feed.
    pub pulled: u64,
    /// Aggregates handed to the engine.
    pub merges: u64,
    /// Full syncs run.
    pub full_syncs: u64,
    /// Full syncs forced by lost events or a store that came back.
    pub resyncs: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Values under our keys that did not decode and were skipped.
    pub decode_errors: u64,
    /// Contributions waiting to be pushed.
    pub buffered: u64,
    /// Contributions not shared because their route id is too long for a cluster key
    /// ([`ClusterKeys::max_route_len`]): those routes are decided on local state only.
    pub kept_local: u64,
    /// Contributions the store refused for themselves (not for being unreachable): dropped,
    /// so that one bad item never blocks the rest of a batch.
    pub rejected: u64,
    /// Contributions pushed again because a full sync found that the store had lost them
    /// after acknowledging them (a restarted store without persistence).
    pub republished: u64,
    /// The last push failed: deciding on local state only.
    pub degraded: bool,
}

impl SyncStats {
    /// The counters by name (`pulses`, `pushed`, ...), in one place for every exporter; the
    /// gauges `buffered` and `degraded` are not among them.
    pub fn counters(&self) -> [(&'static str, u64); 11] {
        [
            ("pulses", self.pulses),
            ("pushed", self.pushed),
            ("pulled", self.pulled),
            ("merges", self.merges),
            ("full_syncs", self.full_syncs),
            ("resyncs", self.resyncs),
            ("store_errors", self.store_errors),
            ("decode_errors", self.decode_errors),
            ("kept_local", self.kept_local),
            ("rejected", self.rejected),
            ("republished", self.republished),
        ]
    }
}

/// A node's health as another node sees it, from its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heard from within a third of `node_ttl` (this node: its last push succeeded).
    Healthy,
    /// Late, but still counted in the aggregate (this node: degraded, or not pushed yet).
    Suspect,
    /// Silent for longer than `node_ttl`, or left: out of the aggregate.
    Gone,
}

/// One node of the cluster, as [`StateManager::nodes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Whether it is the node answering.
    pub this_node: bool,
    /// Its status.
    pub status: NodeStatus,
    /// Its last heartbeat (this node: its last acknowledged push), in ms since the Unix
    /// epoch; 0 if never.
    pub last_seen_ms: u64,
    /// Its software version, if it says.
    pub version: Option<String>,
    /// How far behind the present this node's view of it is, in ms (this node: since its
    /// last acknowledged push); `None` before the first.
    pub sync_lag_ms: Option<u64>,
}

#[derive(Default)]
struct Counters {
    pulses: AtomicU64,
    pushed: AtomicU64,
    pulled: AtomicU64,
    merges: AtomicU64,
    full_syncs: AtomicU64,
    resyncs: AtomicU64,
    store_errors: AtomicU64,
    decode_errors: AtomicU64,
    buffered: AtomicU64,
    kept_local: AtomicU64,
    rejected: AtomicU64,
    republished: AtomicU64,
    degraded: AtomicBool,
    /// When the store last acknowledged a pulse (wall ms; 0 before the first).
    last_push_ms: AtomicU64,
}

#[derive(Default)]
struct SyncState {
    /// route -> node -> contribution, other nodes only.
    remote: HashMap<String, HashMap<String, Contribution>>,
    /// node -> last heartbeat, other nodes only.
    heartbeats: HashMap<String, Heartbeat>,
    /// Nodes whose heartbeat is gone from the store (left, or expired), with their last
    /// one; kept for [`StateManager::nodes`] a while ([`departed_retention`]).
    departed: HashMap<String, Heartbeat>,
    /// Our contributions not yet pushed.
    pending: HashMap<String, Contribution>,
    /// Routes whose last pushed contribution was zero (nothing to say until they change).
    quiet: std::collections::HashSet<String>,
    /// Our last contribution the store acknowledged, per route that has something to say:
    /// re-pushed when a full sync finds it missing (a store that lost its data, a key
    /// deleted by hand), so that an acknowledged write is never lost for good.
    stored: HashMap<String, Contribution>,
    /// The last full sync failed or events were lost: run one at the next pulse.
    resync: bool,
    /// The other nodes counted live at the last merge.
    live: std::collections::HashSet<String>,
}

struct Shared<O> {
    engine: Arc<Engine<O>>,
    store: Arc<dyn StateStore>,
    cfg: SyncConfig,
    keys: ClusterKeys,
    /// One pulse at a time: a pulse that overtook another could write an older contribution
    /// over a newer one.
    pulsing: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    state: Mutex<SyncState>,
    counters: Counters,
}

/// Shares this node's scar with the cluster and merges the cluster's into its engine.
/// Runs as a background task owned by this handle; [`StateManager::shutdown`] flushes and
/// stops it.
pub struct StateManager<O> {
    shared: Arc<Shared<O>>,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl<O> std::fmt::Debug for StateManager<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateManager").field("node", &self.shared.cfg.node_id).finish()
    }
}

impl<O: PhysicsObserver + 'static> StateManager<O> {
    /// Loads what the cluster knows into `engine` (this node's own earlier scar, and the other
    /// nodes' contributions), then starts the pulse. A store that cannot be read at start is
    /// an error: the caller decides whether to serve without the cluster.
    pub async fn start(
        engine: Arc<Engine<O>>,
        store: Arc<dyn StateStore>,
        cfg: SyncConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        cfg.validate()?;
        let shared = Arc::new(Shared {
            engine,
            store,
            keys: cfg.keys(),
            cfg,
            pulsing: tokio::sync::Mutex::new(()),
            clock,
            state: Mutex::default(),
            counters: Counters::default(),
        });
        shared.full_sync(true).await?;
        let mut feed = shared.store.subscribe(shared.keys.cluster_prefix()).await.ok().flatten();
        let token = CancellationToken::new();
        let (s, stop) = (shared.clone(), token.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(s.cfg.pulse);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut full = tokio::time::interval(s.cfg.full_sync);
            full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            full.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => s.pulse().await,
                    _ = full.tick() => {
                        let _ = s.full_sync(false).await;
                    }
                    change = crate::ChangeFeed::next_or_pending(&mut feed) => match change {
                        Some(change) => s.apply(change).await,
                        None => feed = None,
                    },
                }
            }
            // Flush what this node learned, and leave the cluster.
            s.pulse().await;
            if s.store.delete(&s.keys.heartbeat()).await.is_err() {
                s.counters.store_errors.fetch_add(1, Relaxed);
            }
        });
        Ok(StateManager { shared, token, task: Some(task) })
    }

    /// Counters of the sync.
    pub fn stats(&self) -> SyncStats {
        let c = &self.shared.counters;
        SyncStats {
            pulses: c.pulses.load(Relaxed),
            pushed: c.pushed.load(Relaxed),
            pulled: c.pulled.load(Relaxed),
            merges: c.merges.load(Relaxed),
            full_syncs: c.full_syncs.load(Relaxed),
            resyncs: c.resyncs.load(Relaxed),
            store_errors: c.store_errors.load(Relaxed),
            decode_errors: c.decode_errors.load(Relaxed),
            buffered: c.buffered.load(Relaxed),
            kept_local: c.kept_local.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            republished: c.republished.load(Relaxed),
            degraded: c.degraded.load(Relaxed),
        }
    }

    /// The cluster as this node sees it: itself first, then every other node it has heard
    /// from, by id (a departed node stays listed as gone for a while).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let s = &self.shared;
        let wall = s.clock.wall_ms();
        let ttl = s.cfg.node_ttl.as_millis() as u64;
        let last_push = s.counters.last_push_ms.load(Relaxed);
        let ours = NodeInfo {
            id: s.cfg.node_id.clone(),
            this_node: true,
            status: if s.counters.degraded.load(Relaxed) || last_push == 0 {
                NodeStatus::Suspect
            } else {
                NodeStatus::Healthy
            },
            last_seen_ms: last_push,
            version: Some(VERSION.to_owned()),
            sync_lag_ms: if last_push == 0 { None } else { Some(wall.saturating_sub(last_push)) },
        };
        let mut st = s.lock();
        let keep = departed_retention(s.cfg.node_ttl);
        st.departed.retain(|_, hb| wall.saturating_sub(hb.ms) <= keep);
        let mut others: Vec<NodeInfo> = st
            .heartbeats
            .iter()
            .map(|(id, hb)| (id, hb, false))
            .chain(st.departed.iter().map(|(id, hb)| (id, hb, true)))
            .map(|(id, hb, departed)| {
                let age = wall.saturating_sub(hb.ms);
                let status = match age {
                    _ if departed || age > ttl => NodeStatus::Gone,
                    _ if age > ttl / 3 => NodeStatus::Suspect,
                    _ => NodeStatus::Healthy,
                };
                NodeInfo {
                    id: id.clone(),
                    this_node: false,
                    status,
                    last_seen_ms: hb.ms,
                    version: hb.version.clone(),
                    sync_lag_ms: Some(age),
                }
            })
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        std::iter::once(ours).chain(others).collect()
    }

    /// The other nodes' contributions to `route`, as they reported them (not healed), by
    /// node id.
    pub fn route_nodes(&self, route: &str) -> Vec<(String, Contribution)> {
        let st = self.shared.lock();
        let mut v: Vec<(String, Contribution)> =
            st.remote.get(route).map(|m| m.iter().map(|(n, c)| (n.clone(), *c)).collect()).unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The engine this manager feeds.
    pub fn engine(&self) -> &Arc<Engine<O>> {
        &self.shared.engine
    }

    /// Pushes what is dirty now and merges, without waiting for the next pulse.
    pub async fn pulse_now(&self) {
        self.shared.pulse().await;
    }

    /// Flushes this node's contributions, removes its heartbeat, and stops the pulse.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl<O> Drop for StateManager<O> {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl<O: PhysicsObserver + 'static> Shared<O> {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// BUFFER, PUSH, MERGE.
    async fn pulse(&self) {
        let _one_at_a_time = self.pulsing.lock().await;
        self.counters.pulses.fetch_add(1, Relaxed);
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let max_route = self.keys.max_route_len();
        let (sent, batch) = {
            let mut st = self.lock();
            let st = &mut *st;
            self.engine.take_dirty(|route, c| {
                if route.len() > max_route {
                    if self.counters.kept_local.fetch_add(1, Relaxed) == 0 {
                        tracing::warn!(
                            node = %self.cfg.node_id,
                            len = route.len(),
                            max = max_route,
                            "a route id is too long for a cluster key: it is decided on local state only"
                        );
                    }
                    return;
                }
                let at_ms = wall.saturating_sub(now.saturating_since(c.at).as_millis() as u64);
                let quiet = c.scar <= 0.0 && c.momentum <= 0.0;
                if quiet && st.quiet.contains(route) {
                    return; // still nothing to say
                }
                st.pending.insert(route.to_owned(), Contribution { scar: c.scar, momentum: c.momentum, at_ms });
            });
            if st.pending.len() > self.cfg.max_buffered {
                // Bounded: keep the newest contributions.
                let mut by_age: Vec<(u64, String)> = st.pending.iter().map(|(r, c)| (c.at_ms, r.clone())).collect();
                by_age.sort_unstable();
                let excess = st.pending.len() - self.cfg.max_buffered;
                for (_, route) in by_age.into_iter().take(excess) {
                    st.pending.remove(&route);
                }
            }
            let (mut sent, mut batch) =
                (Vec::with_capacity(st.pending.len()), Vec::with_capacity(st.pending.len() + 1));
            for (route, c) in &st.pending {
                if let Some(key) = self.keys.contribution(route) {
                    sent.push((route.clone(), *c));
                    batch.push((key, c.encode(), None));
                }
            }
            let ttl = self.store.capabilities().ttl.then_some(self.cfg.node_ttl * 3);
            batch.push((self.keys.heartbeat(), Heartbeat::encode(wall, VERSION), ttl));
            (sent, batch)
        };
        let outcome = match tokio::time::timeout(self.cfg.store_timeout, self.store.batch_set(batch.clone())).await {
            Ok(Ok(_)) => Ok(vec![true; sent.len()]),
            // Refused for something in it, not for being unreachable: write item by item, so
            // that one bad item does not block the rest.
            Ok(Err(e)) if !transient(&e) => self.push_one_by_one(batch).await,
            Ok(Err(_)) | Err(_) => Err(()),
        };
        match outcome {
            Ok(done) => {
                let mut st = self.lock();
                let mut pushed = 0;
                for ((route, c), ok) in sent.into_iter().zip(done) {
                    // Only what was sent leaves the buffer: a newer contribution stays.
                    if st.pending.get(&route) == Some(&c) {
                        st.pending.remove(&route);
                    }
                    if !ok {
                        continue;
                    }
                    pushed += 1;
                    if c.scar <= 0.0 && c.momentum <= 0.0 {
                        st.stored.remove(&route);
                        st.quiet.insert(route);
                    } else {
                        st.quiet.remove(&route);
                        st.stored.insert(route, c);
                    }
                }
                self.counters.pushed.fetch_add(pushed, Relaxed);
                self.counters.last_push_ms.store(wall, Relaxed);
                if self.counters.degraded.swap(false, Relaxed) {
                    // The store is back: whatever changed meanwhile was not seen.
                    tracing::info!(node = %self.cfg.node_id, "store reachable again: resynchronising");
                    st.resync = true;
                }
            }
            Err(()) => {
                // Failed or timed out: the contributions stay pending, newest per route.
                self.counters.store_errors.fetch_add(1, Relaxed);
                if !self.counters.degraded.swap(true, Relaxed) {
                    tracing::warn!(node = %self.cfg.node_id, "store unreachable: deciding on local state only");
                }
            }
        }
        self.counters.buffered.store(self.lock().pending.len() as u64, Relaxed);
        let resync = std::mem::take(&mut self.lock().resync);
        if resync {
            self.counters.resyncs.fetch_add(1, Relaxed);
            if self.full_sync(false).await.is_err() {
                self.lock().resync = true;
            }
        }
        self.merge_if_liveness_changed();
    }

    /// Writes a batch item by item after the store refused it whole. Items refused for
    /// themselves are dropped and counted; `Err` when the store is unreachable (the caller
    /// keeps everything pending). The heartbeat is the batch's last item and has no flag.
    async fn push_one_by_one(&self, batch: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<bool>, ()> {
        let mut done = Vec::with_capacity(batch.len());
        for (key, value, ttl) in batch {
            match tokio::time::timeout(self.cfg.store_timeout, self.store.put(&key, value, ttl)).await {
                Ok(Ok(_)) => done.push(true),
                Ok(Err(e)) if !transient(&e) => {
                    self.counters.rejected.fetch_add(1, Relaxed);
                    tracing::warn!(node = %self.cfg.node_id, key = %key, error = %e, "the store refused a contribution: dropped");
                    done.push(false);
                }
                Ok(Err(_)) | Err(_) => return Err(()),
            }
        }
        done.pop(); // the heartbeat
        Ok(done)
    }

    /// Re-merges the routes of nodes that joined or fell silent since the last pulse. Other
    /// routes need nothing: the engine heals cluster values on its own, and changed
    /// contributions are merged as they arrive.
    fn merge_if_liveness_changed(&self) {
        let wall = self.clock.wall_ms();
        let ttl = self.cfg.node_ttl.as_millis() as u64;
        let routes: Vec<String> = {
            let mut st = self.lock();
            let live: std::collections::HashSet<String> = st
                .heartbeats
                .iter()
                .filter(|(_, hb)| wall.saturating_sub(hb.ms) <= ttl)
                .map(|(n, _)| n.clone())
                .collect();
            if live == st.live {
                return;
            }
            let changed: std::collections::HashSet<&String> = live.symmetric_difference(&st.live).collect();
            let routes = st
                .remote
                .iter()
                .filter(|(_, nodes)| nodes.keys().any(|n| changed.contains(n)))
                .map(|(r, _)| r.clone())
                .collect();
            st.live = live;
            routes
        };
        for route in routes {
            self.merge_route(&route);
        }
    }

    /// Re-reads every contribution and heartbeat. At start, also seeds this node's own
    /// earlier scar (warm start).
    async fn full_sync(&self, warm_start: bool) -> Result<(), StoreError> {
        let fail = |e: StoreError| {
            self.counters.store_errors.fetch_add(1, Relaxed);
            e
        };
        let timeout = |op| StoreError::new(self.store.backend(), op, None, ErrorKind::Timeout);
        let keys = tokio::time::timeout(self.cfg.store_timeout, self.store.list_keys(self.keys.cluster_prefix()))
            .await
            .map_err(|_| fail(timeout(Op::ListKeys)))?
            .map_err(fail)?;
        let mut entries = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(512) {
            let got = tokio::time::timeout(self.cfg.store_timeout, self.store.batch_get(chunk))
                .await
                .map_err(|_| fail(timeout(Op::BatchGet)))?;
            match got {
                Ok(got) => entries.extend(got),
                // Something under our keys that the store cannot even return as an entry
                // (written by someone else): read the chunk key by key and skip the bad ones.
                Err(e) if !transient(&e) => {
                    for key in chunk {
                        match self.store.get(key).await {
                            Ok(entry) => entries.push(entry),
                            Err(e) if !transient(&e) => {
                                self.counters.decode_errors.fetch_add(1, Relaxed);
                                tracing::warn!(key = %key, error = %e, "skipping an unreadable value under the cluster's keys");
                                entries.push(None);
                            }
                            Err(e) => return Err(fail(e)),
                        }
                    }
                }
                Err(e) => return Err(fail(e)),
            }
        }
        self.counters.full_syncs.fetch_add(1, Relaxed);
        let mut remote: HashMap<String, HashMap<String, Contribution>> = HashMap::new();
        let mut heartbeats = HashMap::new();
        let mut own = Vec::new();
        for (key, entry) in keys.iter().zip(entries) {
            let Some(entry) = entry else { continue };
            if let Some(node) = self.keys.parse_heartbeat(key) {
                match Heartbeat::decode(&entry.value) {
                    Some(hb) if !self.keys.is_own(node) => {
                        heartbeats.insert(node.to_owned(), hb);
                    }
                    Some(_) => {}
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                    }
                }
            } else if let Some((route, node)) = self.keys.parse_contribution(key) {
                let Some(c) = Contribution::decode(&entry.value) else {
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                    tracing::warn!(key = %key, "skipping a contribution that does not decode");
                    continue;
                };
                if self.keys.is_own(node) {
                    own.push((route.to_owned(), c));
                } else {
                    remote.entry(route.to_owned()).or_default().insert(node.to_owned(), c);
                }
            }
        }
        let own_routes: std::collections::HashSet<&str> = own.iter().map(|(r, _)| r.as_str()).collect();
        {
            // What the store acknowledged but no longer holds is pushed again.
            let mut st = self.lock();
            let st = &mut *st;
            let lost: Vec<(String, Contribution)> = st
                .stored
                .iter()
                .filter(|(r, _)| !own_routes.contains(r.as_str()) && !st.pending.contains_key(*r))
                .map(|(r, c)| (r.clone(), *c))
                .collect();
            if !lost.is_empty() {
                self.counters.republished.fetch_add(lost.len() as u64, Relaxed);
                tracing::warn!(node = %self.cfg.node_id, routes = lost.len(), "the store lost contributions it had acknowledged: pushing them again");
            }
            st.pending.extend(lost);
        }
        if warm_start {
            let (now, wall) = (self.clock.now(), self.clock.wall_ms());
            for (route, c) in own {
                let age = Duration::from_millis(wall.saturating_sub(c.at_ms));
                let at = Timestamp::from_nanos(now.as_nanos().saturating_sub(age.as_nanos() as u64));
                let _ = self.engine.warm_start(&route, c.scar, at, now);
            }
        }
        {
            let mut st = self.lock();
            // Routes that no longer have remote contributions lose their cluster view.
            for route in st.remote.keys().filter(|r| !remote.contains_key(*r)) {
                let _ = self.engine.set_cluster(route, None, self.clock.now());
            }
            st.remote = remote;
            // Nodes whose heartbeat is no longer in the store have left (or expired).
            let gone: Vec<(String, Heartbeat)> =
                st.heartbeats.drain().filter(|(n, _)| !heartbeats.contains_key(n)).collect();
            st.departed.extend(gone);
            st.departed.retain(|n, _| !heartbeats.contains_key(n));
            st.heartbeats = heartbeats;
        }
        self.merge_all();
        Ok(())
    }

    /// Applies one change from the feed.
    async fn apply(&self, change: Change) {
        let key = match change {
            Change::Resync => {
                tracing::debug!(node = %self.cfg.node_id, "change feed lost events: full sync at the next pulse");
                self.counters.resyncs.fetch_add(1, Relaxed);
                self.lock().resync = true;
                return;
            }
            Change::Set { key, .. } => key,
            Change::Deleted { key } | Change::Expired { key } => {
                let mut st = self.lock();
                if let Some((route, node)) = self.keys.parse_contribution(&key) {
                    if let Some(m) = st.remote.get_mut(route) {
                        m.remove(node);
                    }
                    let route = route.to_owned();
                    drop(st);
                    self.merge_route(&route);
                } else if let Some(node) = self.keys.parse_heartbeat(&key)
                    && let Some(hb) = st.heartbeats.remove(node)
                {
                    st.departed.insert(node.to_owned(), hb);
                }
                return;
            }
        };
        let contribution = self.keys.parse_contribution(&key);
        let heartbeat = self.keys.parse_heartbeat(&key).filter(|node| !self.keys.is_own(node));
        if contribution.is_none_or(|(_, node)| self.keys.is_own(node)) && heartbeat.is_none() {
            return; // ours, or not ours to read
        }
        let entry = match tokio::time::timeout(self.cfg.store_timeout, self.store.get(&key)).await {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => return,
            Ok(Err(_)) | Err(_) => {
                self.counters.store_errors.fetch_add(1, Relaxed);
                return;
            }
        };
        self.counters.pulled.fetch_add(1, Relaxed);
        if let Some(node) = heartbeat {
            match Heartbeat::decode(&entry.value) {
                Some(hb) => {
                    let mut st = self.lock();
                    st.departed.remove(node);
                    st.heartbeats.insert(node.to_owned(), hb);
                }
                None => {
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                }
            }
        } else if let Some((route, node)) = contribution {
            let Some(c) = Contribution::decode(&entry.value) else {
                self.counters.decode_errors.fetch_add(1, Relaxed);
                return;
            };
            self.lock().remote.entry(route.to_owned()).or_default().insert(node.to_owned(), c);
            self.merge_route(route);
        }
    }

    fn merge_all(&self) {
        let routes: Vec<String> = self.lock().remote.keys().cloned().collect();
        for route in routes {
            self.merge_route(&route);
        }
    }

    /// Hands the other live nodes' contributions to `route`, with their ages, to the
    /// engine, which heals and merges them ([`Engine::merge_cluster`]) and blends the result
    /// by gamma. The physics of the merge is the engine's; this only moves values.
    fn merge_route(&self, route: &str) {
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let ttl = self.cfg.node_ttl.as_millis() as u64;
        let live: Vec<(f64, f64)> = {
            let st = self.lock();
            let Some(nodes) = st.remote.get(route) else { return };
            nodes
                .iter()
                .filter(|(node, _)| st.heartbeats.get(*node).is_some_and(|hb| wall.saturating_sub(hb.ms) <= ttl))
                .map(|(_, c)| (c.scar, wall.saturating_sub(c.at_ms) as f64 / 1e3))
                .collect()
        };
        if self.engine.merge_cluster(route, live, now).is_ok() {
            self.counters.merges.fetch_add(1, Relaxed);
        }
    }
}

/// A node's heartbeat as stored: its wall-clock milliseconds (8 bytes, little-endian), then
/// its software version (UTF-8, at most 32 bytes; absent from older nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Heartbeat {
    ms: u64,
    version: Option<String>,
}

/// This node's software version, as its heartbeat carries it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Heartbeat {
    fn encode(ms: u64, version: &str) -> Bytes {
        let mut out = Vec::with_capacity(8 + version.len());
        out.extend_from_slice(&ms.to_le_bytes());
        out.extend_from_slice(version.as_bytes());
        Bytes::from(out)
    }

    fn decode(bytes: &[u8]) -> Option<Heartbeat> {
        let (ms, version) = bytes.split_first_chunk::<8>()?;
        if version.len() > 32 {
            return None;
        }
        let version = std::str::from_utf8(version).ok()?;
        Some(Heartbeat { ms: u64::from_le_bytes(*ms), version: (!version.is_empty()).then(|| version.to_owned()) })
    }
}

/// How long a departed node stays listed by [`StateManager::nodes`] (as gone).
fn departed_retention(node_ttl: Duration) -> u64 {
    (node_ttl.as_millis() as u64).saturating_mul(20).max(60_000)
}

/// Whether an error says the store is away (retry later) rather than that the request was
/// refused for itself.
fn transient(e: &StoreError) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_roundtrip_and_garbage_is_refused() {
        let c = Contribution { scar: 12.5, momentum: 0.25, at_ms: 1_700_000_000_000 };
        assert_eq!(Contribution::decode(&c.encode()), Some(c));
        assert_eq!(Contribution::decode(b"hello"), None);
        let mut bad = c.encode().to_vec();
        bad[0] = 9;
        assert_eq!(Contribution::decode(&bad), None, "another version");
        let nan = Contribution { scar: f64::NAN, ..c };
        assert_eq!(Contribution::decode(&nan.encode()), None);
        let negative = Contribution { scar: -1.0, ..c };
        assert_eq!(Contribution::decode(&negative.encode()), None);
    }

    #[test]
    fn config_is_validated() {
        assert!(SyncConfig::default().validate().is_ok());
        for bad in [
            SyncConfig { namespace: "a/b".into(), ..SyncConfig::default() },
            SyncConfig::for_node("has space"),
            SyncConfig::for_node(""),
            SyncConfig { pulse: Duration::ZERO, ..SyncConfig::default() },
            SyncConfig { node_ttl: Duration::from_millis(150), ..SyncConfig::default() },
            SyncConfig { full_sync: Duration::from_millis(10), ..SyncConfig::default() },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(matches!(e.kind, ErrorKind::Config(_)), "{e}");
        }
    }
}
