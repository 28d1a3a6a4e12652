//! `StateManager`: the pulse that shares scar tissue across a cluster (SPEC 4).
//!
//! ```text
//! COMPUTE (engine, local, ns) -> BUFFER (dirty routes) -> PUSH (one batch per pulse)
//!                                                      -> PULL (change feed + full sync) -> MERGE (gamma)
//! ```
//!
//! - The engine decides on local state only; the manager never sits on the decision path.
//! - Each node writes only its own contribution for a route, as its share of
//!   `{namespace}/route/{route}` ([`crate::shares`]): its *local* scar and momentum and the
//!   wall-clock time they were computed, never the merged value (no echo), ranked by
//!   [`atrion_core::heal_rank`]; it holds back what the others can predict (the deadband)
//!   and what would not beat the route's second leader by more than the deadband. Two
//!   nodes per route (rendezvous hashing over the live nodes) push a change at once; the
//!   others give it a second look later in the pulse ([`SyncConfig::second_look`]), when
//!   the designated ones' shares have usually made it news no more.
//! - A reader takes the best live share but its own from the route's leaders (carried by the
//!   change notice, never read back), healed to its own `now`, as `S_cluster`; the engine
//!   blends it by gamma.
//! - Nodes heartbeat under `{namespace}/node/{node}`; a node silent for longer than
//!   `node_ttl` drops out of the aggregate.
//! - A failing store is counted and retried every pulse; unpushed contributions are kept,
//!   newest per route, bounded, and pushed when the store returns.
//! - `start` loads what the cluster knows before it returns (warm start), and this node's
//!   own route records ([`crate::RouteRecord`]): its operator holds and open intervals come
//!   back as they were. A record is written at the pulse that first sees it changed (a hold
//!   at once: [`Engine::on_hold`] wakes the pulse); what a `kill -9` loses is at most one
//!   pulse.
//! - Observability: [`SyncStats`] counters (pushes, pulls, merges, resyncs, store and decode
//!   errors, buffered routes, degraded), and `tracing` events when the store becomes
//!   unreachable or reachable again, events are lost, or values do not decode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrion_core::{Engine, Hold, LocalContribution, PhysicsObserver, Timestamp, heal, heal_rank};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Op, StoreError};
use crate::keys::ClusterKeys;
use crate::record::RouteRecord;
use crate::shares::{Best, Share, ShareWrite, Shares};
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
    /// How often everything is re-read from the store, repairing change events lost without
    /// a disconnect (a disconnect, or a feed that fell behind, forces a full sync at once).
    /// Each one reads every route's leaders: a node's store reads are its route count per
    /// period, so a large fleet wants it rare.
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
    /// The deadband (ohms): a route's contribution is pushed only when its scar differs by
    /// more than this from what the other nodes predict (the last pushed scar, healed by the
    /// route's law), or when `max_interval` has passed. 0 pushes every change.
    pub deadband: f64,
    /// The longest a scarred route goes without being pushed again (its momentum and time
    /// are refreshed even while its scar heals as predicted).
    #[serde(with = "atrion_core::serde_secs")]
    pub max_interval: Duration,
    /// How long, as a fraction of `pulse`, a node that is not one of a route's two
    /// designated pushers (by rendezvous hashing of the route over the live nodes) waits
    /// before pushing a change of it: a second look, by which time the designated nodes have
    /// usually pushed the same news, so that it is outranked. A fleet that sees the same
    /// failures then writes about two shares per changed route, not one per node; a change
    /// only this node sees reaches the others that much later. In [0, 1); 0 pushes at once.
    pub second_look: f64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            namespace: "atrion".into(),
            node_id: "node-1".into(),
            pulse: Duration::from_millis(100),
            full_sync: Duration::from_secs(60),
            node_ttl: Duration::from_secs(3),
            max_buffered: 100_000,
            store_timeout: Duration::from_secs(1),
            deadband: 0.5,
            max_interval: Duration::from_secs(10),
            second_look: 0.75,
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
        if !(self.deadband.is_finite() && self.deadband >= 0.0) {
            return bad(format!("`deadband` must be a finite number of ohms >= 0, got {}", self.deadband));
        }
        if self.max_interval < self.pulse {
            return bad("`max_interval` must be at least `pulse`".into());
        }
        if !(0.0..1.0).contains(&self.second_look) {
            return bad(format!("`second_look` is a fraction of `pulse` in [0, 1), got {}", self.second_look));
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
    /// Contributions not pushed because the cluster's prediction of them (the last pushed
    /// scar, healed) was within the deadband.
    pub deadbanded: u64,
    /// Contributions not pushed because two other live nodes lead the route and this one
    /// would not beat the second by more than the deadband: no node's merged view would move
    /// by more than that.
    pub outranked: u64,
    /// Routes whose shares were read in full because every leader listed was this node or a
    /// node gone silent.
    pub rebuilds: u64,
    /// Changes held for a second look because this node is not one of the route's two
    /// designated pushers ([`SyncConfig::second_look`]).
    pub deferred: u64,
    /// This node's route records (holds, open intervals: [`crate::RouteRecord`]) written or
    /// removed in the store.
    pub records: u64,
    /// The last push failed: deciding on local state only.
    pub degraded: bool,
}

impl SyncStats {
    /// The counters by name (`pulses`, `pushed`, ...), in one place for every exporter; the
    /// gauges `buffered` and `degraded` are not among them.
    pub fn counters(&self) -> [(&'static str, u64); 16] {
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
            ("deadbanded", self.deadbanded),
            ("outranked", self.outranked),
            ("rebuilds", self.rebuilds),
            ("deferred", self.deferred),
            ("records", self.records),
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
    deadbanded: AtomicU64,
    outranked: AtomicU64,
    rebuilds: AtomicU64,
    deferred: AtomicU64,
    records: AtomicU64,
    degraded: AtomicBool,
    /// When the store last acknowledged a pulse (wall ms; 0 before the first).
    last_push_ms: AtomicU64,
}

#[derive(Default)]
struct SyncState {
    /// route -> the leaders of its shares as last read or notified (other nodes', and
    /// perhaps this node's own).
    remote: HashMap<String, Shares>,
    /// node -> last heartbeat, other nodes only.
    heartbeats: HashMap<String, Heartbeat>,
    /// Nodes whose heartbeat is gone from the store (left, or expired), with their last
    /// one; kept for [`StateManager::nodes`] a while ([`departed_retention`]).
    departed: HashMap<String, Heartbeat>,
    /// Our contributions not yet pushed, with their routes' healing rates.
    pending: HashMap<String, Pushed>,
    /// Our last contribution the store acknowledged, per route: what the other nodes
    /// predict (the deadband compares with it healed), and what is pushed again when a
    /// full sync finds it missing (a store that lost its data), so that an acknowledged
    /// write is never lost for good.
    stored: HashMap<String, Pushed>,
    /// Routes whose every listed leader is us or a silent node: read in full next pulse.
    rebuild: std::collections::HashSet<String>,
    /// Our latest contribution per route that was held back (deadband, outranked): pushed
    /// when the node leaves.
    held: HashMap<String, Pushed>,
    /// Changes worth pushing that wait for a second look ([`SyncConfig::second_look`]).
    deferred: HashMap<String, Pushed>,
    /// The last full sync failed or events were lost: run one at the next pulse.
    resync: bool,
    /// The other nodes counted live at the last merge.
    live: std::collections::HashSet<String>,
    /// When our heartbeat was last acknowledged (wall ms).
    heartbeat_ms: u64,
    /// This node's route records as the store holds them.
    records: HashMap<String, RouteRecord>,
    /// Records to write (`Some`) or remove (`None`), newest per route.
    record_pending: HashMap<String, Option<RouteRecord>>,
}

/// A contribution with its route's healing rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pushed {
    c: Contribution,
    scar_decay: f64,
}

impl Pushed {
    /// The share this contribution is, for the store: ranked by its healed scar.
    fn share(&self, node: &str) -> Share {
        Share {
            member: node.to_owned(),
            rank: heal_rank(self.c.scar, self.scar_decay, self.c.at_ms as f64 / 1e3),
            value: self.c.encode(),
        }
    }

    /// The scar the other nodes expect of this route at `at_ms`.
    fn predicted(&self, at_ms: u64) -> f64 {
        heal(self.c.scar, self.scar_decay, at_ms.saturating_sub(self.c.at_ms) as f64 / 1e3)
    }
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
        // Subscribed first: whatever changes after the full sync's reads is on the feed.
        let mut feed = shared.store.subscribe(shared.keys.cluster_prefix()).await.ok().flatten();
        shared.full_sync(true).await?;
        // An operator's hold is written at once, not at the next pulse.
        let held = Arc::new(tokio::sync::Notify::new());
        let wake = held.clone();
        shared.engine.on_hold(Some(Arc::new(move || wake.notify_one())));
        let token = CancellationToken::new();
        let (s, stop) = (shared.clone(), token.clone());
        let task = tokio::spawn(async move {
            // Each node pulses at its own phase (from its id): nodes started together (a
            // deploy) do not all hit the store in the same instant, and a node sees the
            // leaders others pushed earlier in the pulse before it decides to push.
            let phase = s.cfg.pulse.mul_f64(phase_of(&s.cfg.node_id));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, s.cfg.pulse);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut full = tokio::time::interval(s.cfg.full_sync);
            full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            full.tick().await;
            // When the changes held at the last pulse get their second look.
            let mut second: Option<tokio::time::Instant> = None;
            loop {
                let second_look = async {
                    match second {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    at = tick.tick() => {
                        s.pulse(Look::Pulse).await;
                        second = s.has_deferred().then(|| at + s.cfg.pulse.mul_f64(s.cfg.second_look));
                    }
                    _ = second_look => {
                        second = None;
                        s.pulse(Look::Second).await;
                    }
                    () = held.notified() => {
                        s.pulse(Look::Pulse).await;
                        let at = tokio::time::Instant::now();
                        second = s.has_deferred().then(|| at + s.cfg.pulse.mul_f64(s.cfg.second_look));
                    }
                    _ = full.tick() => {
                        let _ = s.full_sync(false).await;
                    }
                    change = crate::ChangeFeed::next_or_pending(&mut feed) => match change {
                        Some(change) => s.apply(change).await,
                        None => feed = None,
                    },
                }
            }
            // Flush what this node learned, held back or not, and leave the cluster.
            s.engine.on_hold(None);
            s.pulse(Look::Flush).await;
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
            deadbanded: c.deadbanded.load(Relaxed),
            outranked: c.outranked.load(Relaxed),
            rebuilds: c.rebuilds.load(Relaxed),
            deferred: c.deferred.load(Relaxed),
            records: c.records.load(Relaxed),
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

    /// The other nodes' contributions to `route` that this node knows, as they reported them
    /// (not healed), by node id: the route's leaders (every contributor, on a store without
    /// a native aggregate).
    pub fn route_nodes(&self, route: &str) -> Vec<(String, Contribution)> {
        let st = self.shared.lock();
        let keys = &self.shared.keys;
        let mut v: Vec<(String, Contribution)> = st
            .remote
            .get(route)
            .map(|shares| {
                shares
                    .top
                    .iter()
                    .filter(|s| !keys.is_own(&s.member))
                    .filter_map(|s| Some((s.member.clone(), Contribution::decode(&s.value)?)))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The engine this manager feeds.
    pub fn engine(&self) -> &Arc<Engine<O>> {
        &self.shared.engine
    }

    /// Pushes what is dirty now and merges, without waiting for the next pulse; changes held
    /// for a second look ([`SyncConfig::second_look`]) get it at once.
    pub async fn pulse_now(&self) {
        self.shared.pulse(Look::Pulse).await;
        self.shared.pulse(Look::Second).await;
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

    /// How often the heartbeat is written: six times per `node_ttl`, at most every pulse.
    fn heartbeat_every(&self) -> u64 {
        (self.cfg.node_ttl / 6).max(self.cfg.pulse).as_millis() as u64
    }

    /// Whether to push `next`, after `last`: `Some(true)` to push; `Some(false)` when the
    /// other nodes predict it from `last` (the deadband); `None` when two other live nodes
    /// lead the route and `next` would not beat the second by more than the deadband, so
    /// that no node's merged view would move by more (readers take the best share but their
    /// own: the two leaders are all they use). A contribution older than `max_interval` is
    /// refreshed either way.
    fn worth_pushing(
        &self,
        st: &SyncState,
        route: &str,
        last: Option<&Pushed>,
        next: &Pushed,
        wall: u64,
    ) -> Option<bool> {
        let band = self.cfg.deadband;
        let (changed, stale) = match last {
            None => (next.c.scar > band, false),
            Some(last) => {
                let off = (next.c.scar - last.predicted(next.c.at_ms)).abs() > band;
                let old = next.c.at_ms.saturating_sub(last.c.at_ms) >= self.cfg.max_interval.as_millis() as u64;
                (off || (band == 0.0 && next.c != last.c), old && next.c.scar > band)
            }
        };
        if stale {
            return Some(true);
        }
        if !changed {
            return Some(false);
        }
        (!self.outranked(st, route, next, wall)).then_some(true)
    }

    /// Whether `route` has two other live leaders and `next` would not beat the second by
    /// more than the deadband: then every node's merged view (the best share but its own) is
    /// within the deadband of what it would be with `next` pushed.
    fn outranked(&self, st: &SyncState, route: &str, next: &Pushed, wall: u64) -> bool {
        let Some(shares) = st.remote.get(route) else { return false };
        let counts = self.counts(st, wall);
        let mut ahead = 0;
        for s in shares.ranked().into_iter().take(2) {
            let Some(c) = Contribution::decode(&s.value) else { return false };
            let healed = heal(c.scar, next.scar_decay, next.c.at_ms.saturating_sub(c.at_ms) as f64 / 1e3);
            if !counts(&s.member) || next.c.scar > healed + self.cfg.deadband {
                return false;
            }
            ahead += 1;
        }
        ahead == 2
    }

    /// Whether changes wait for their second look.
    fn has_deferred(&self) -> bool {
        !self.lock().deferred.is_empty()
    }

    /// Judges one contribution of `route`: pending (to push), deferred (for its second
    /// look, when `may_wait` and this node is not one of the route's designated pushers), or
    /// held back (deadband, outranked).
    fn judge(
        &self,
        st: &mut SyncState,
        route: &str,
        next: Pushed,
        may_wait: Option<&[u64]>,
        wall: u64,
        tally: &mut Judged,
    ) {
        let last = st.pending.get(route).or_else(|| st.stored.get(route));
        match self.worth_pushing(st, route, last, &next, wall) {
            Some(true) if may_wait.is_some_and(|others| !designated(&self.cfg.node_id, route, others)) => {
                tally.deferred += 1;
                st.deferred.insert(route.to_owned(), next);
            }
            Some(true) => {
                st.held.remove(route);
                st.pending.insert(route.to_owned(), next);
            }
            Some(false) => {
                tally.deadbanded += 1;
                st.held.insert(route.to_owned(), next);
            }
            None => {
                tally.outranked += 1;
                st.held.insert(route.to_owned(), next);
            }
        }
    }

    /// The rendezvous seeds of the other nodes live at `wall`.
    fn live_seeds(&self, st: &SyncState, wall: u64) -> Vec<u64> {
        self.live_nodes(st, wall).map(|n| fnv1a(n.as_bytes())).collect()
    }

    /// BUFFER, PUSH, MERGE. A pulse judges the dirty routes and the changes held for a
    /// second look; a second look judges only the latter, and writes no heartbeat; a flush
    /// (a node leaving) holds nothing for later and also pushes the contributions held back
    /// by the deadband or outranked on routes this node has a share of, so that the store
    /// keeps its exact last word for its warm start.
    async fn pulse(&self, look: Look) {
        let _one_at_a_time = self.pulsing.lock().await;
        if look == Look::Second && self.lock().deferred.is_empty() {
            return;
        }
        if look != Look::Second {
            self.counters.pulses.fetch_add(1, Relaxed);
        }
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let max_route = self.keys.max_route_len();
        let node = self.keys.node_id();
        let (sent, shares, records, beat) = {
            let mut st = self.lock();
            let st = &mut *st;
            let mut tally = Judged::default();
            let mut waited = std::mem::take(&mut st.deferred);
            let seeds = (look == Look::Pulse && self.cfg.second_look > 0.0).then(|| self.live_seeds(st, wall));
            if look != Look::Second {
                self.engine.take_dirty(|route, c| {
                    self.note_record(st, route, &c, now, wall);
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
                    let next = Pushed {
                        c: Contribution { scar: c.scar, momentum: c.momentum, at_ms },
                        scar_decay: c.scar_decay,
                    };
                    // A change that already waited its second look does not wait again.
                    let may_wait = if waited.remove(route).is_some() { None } else { seeds.as_deref() };
                    self.judge(st, route, next, may_wait, wall, &mut tally);
                });
            }
            for (route, next) in waited {
                self.judge(st, &route, next, None, wall, &mut tally);
            }
            let flush = look == Look::Flush;
            if flush {
                // The exact last word, for the routes this node has a share of (a share it
                // never pushed would only add a member that leads nothing).
                let held = std::mem::take(&mut st.held);
                let changed: Vec<(String, Pushed)> =
                    held.into_iter().filter(|(r, p)| st.stored.get(r).is_some_and(|s| s.c != p.c)).collect();
                st.pending.extend(changed);
            }
            self.counters.deadbanded.fetch_add(tally.deadbanded, Relaxed);
            self.counters.outranked.fetch_add(tally.outranked, Relaxed);
            self.counters.deferred.fetch_add(tally.deferred, Relaxed);
            if st.pending.len() > self.cfg.max_buffered {
                // Bounded: keep the newest contributions.
                let mut by_age: Vec<(u64, String)> = st.pending.iter().map(|(r, p)| (p.c.at_ms, r.clone())).collect();
                by_age.sort_unstable();
                let excess = st.pending.len() - self.cfg.max_buffered;
                for (_, route) in by_age.into_iter().take(excess) {
                    st.pending.remove(&route);
                }
            }
            let (mut sent, mut shares) = (Vec::with_capacity(st.pending.len()), Vec::with_capacity(st.pending.len()));
            for (route, p) in &st.pending {
                if let Some(key) = self.keys.route(route) {
                    sent.push((route.clone(), *p));
                    shares.push(ShareWrite { key, share: p.share(node) });
                }
            }
            let degraded = self.counters.degraded.load(Relaxed);
            let beat = degraded || wall.saturating_sub(st.heartbeat_ms) >= self.heartbeat_every();
            let records: Vec<(String, Option<RouteRecord>)> =
                st.record_pending.iter().map(|(r, rec)| (r.clone(), *rec)).collect();
            (sent, shares, records, look != Look::Second && beat)
        };
        let pushed = if shares.is_empty() { Ok(Vec::new()) } else { self.push_shares(shares).await };
        let recorded = match &pushed {
            Ok(_) => self.write_records(records).await,
            Err(()) => Err(()),
        };
        let beat = match (&pushed, recorded, beat) {
            (Ok(_), Ok(()), true) => self.beat(wall).await.map(|()| true),
            (Ok(_), Ok(()), false) => Ok(false),
            _ => Err(()),
        };
        if let Ok(done) = pushed {
            let mut st = self.lock();
            let mut n = 0;
            for ((route, p), ok) in sent.into_iter().zip(done) {
                // Only what was sent leaves the buffer: a newer contribution stays.
                if st.pending.get(&route) == Some(&p) {
                    st.pending.remove(&route);
                }
                if ok {
                    n += 1;
                    st.stored.insert(route, p);
                }
            }
            self.counters.pushed.fetch_add(n, Relaxed);
        }
        match beat {
            Ok(beat) => {
                if beat {
                    self.lock().heartbeat_ms = wall;
                }
                self.counters.last_push_ms.store(wall, Relaxed);
                if self.counters.degraded.swap(false, Relaxed) {
                    // The store is back: whatever changed meanwhile was not seen.
                    tracing::info!(node = %self.cfg.node_id, "store reachable again: resynchronising");
                    self.lock().resync = true;
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
        self.rebuild().await;
        self.merge_if_liveness_changed();
    }

    /// Notes `route`'s record as of this pulse: pending when it differs from what the store
    /// holds (a route too long for its record key is not kept).
    fn note_record(&self, st: &mut SyncState, route: &str, c: &LocalContribution, now: Timestamp, wall: u64) {
        if !self.keys.local_fits(route) {
            return;
        }
        let next = RouteRecord::of(c, now, wall);
        let same = match (st.records.get(route), &next) {
            (Some(stored), Some(next)) => stored.same(next),
            (None, None) => true,
            _ => false,
        };
        if same {
            st.record_pending.remove(route);
        } else {
            st.record_pending.insert(route.to_owned(), next);
        }
    }

    /// Writes and removes the pending route records, in one call each; `Err` when the store
    /// failed (they stay pending).
    async fn write_records(&self, records: Vec<(String, Option<RouteRecord>)>) -> Result<(), ()> {
        if records.is_empty() {
            return Ok(());
        }
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for (route, rec) in &records {
            let Some(key) = self.keys.local(route) else { continue };
            match rec {
                Some(rec) => puts.push((key, rec.encode(), None)),
                None => deletes.push(key),
            }
        }
        let within = self.cfg.store_timeout;
        if !puts.is_empty() && !matches!(tokio::time::timeout(within, self.store.batch_set(puts)).await, Ok(Ok(_))) {
            return Err(());
        }
        if !deletes.is_empty()
            && !matches!(tokio::time::timeout(within, self.store.batch_delete(&deletes)).await, Ok(Ok(_)))
        {
            return Err(());
        }
        let mut st = self.lock();
        for (route, rec) in records {
            // Only what was written leaves the buffer: a newer record stays.
            if st.record_pending.get(&route) == Some(&rec) {
                st.record_pending.remove(&route);
            }
            match rec {
                Some(rec) => st.records.insert(route, rec),
                None => st.records.remove(&route),
            };
            self.counters.records.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Reads this node's route records. At start (`warm_start`) they are brought back into
    /// the engine: holds as they were, open routes open for the rest of their interval or
    /// half-open. Later, records the store lost after acknowledging them are written again.
    async fn read_records(&self, warm_start: bool) -> Result<(), StoreError> {
        let within = self.cfg.store_timeout;
        let timeout = |op| StoreError::new(self.store.backend(), op, None, ErrorKind::Timeout);
        let keys = tokio::time::timeout(within, self.store.list_keys(self.keys.local_prefix()))
            .await
            .map_err(|_| timeout(Op::ListKeys))??;
        if !warm_start {
            let present: std::collections::HashSet<&str> =
                keys.iter().filter_map(|k| self.keys.parse_local(k)).collect();
            let mut st = self.lock();
            let st = &mut *st;
            let lost: Vec<(String, RouteRecord)> = st
                .records
                .iter()
                .filter(|(r, _)| !present.contains(r.as_str()) && !st.record_pending.contains_key(*r))
                .map(|(r, rec)| (r.clone(), *rec))
                .collect();
            self.counters.republished.fetch_add(lost.len() as u64, Relaxed);
            st.record_pending.extend(lost.into_iter().map(|(r, rec)| (r, Some(rec))));
            return Ok(());
        }
        let mut found = HashMap::new();
        for chunk in keys.chunks(512) {
            let entries = tokio::time::timeout(within, self.store.batch_get(chunk))
                .await
                .map_err(|_| timeout(Op::BatchGet))??;
            for (key, entry) in chunk.iter().zip(entries) {
                let (Some(entry), Some(route)) = (entry, self.keys.parse_local(key)) else { continue };
                match RouteRecord::decode(&entry.value) {
                    Some(rec) => {
                        found.insert(route.to_owned(), rec);
                    }
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                        tracing::warn!(key = %key, "skipping an unreadable route record");
                    }
                }
            }
        }
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        for (route, rec) in &found {
            if rec.hold != Hold::Released {
                let _ = self.engine.hold(route, rec.hold, now);
            }
            if let Some(left) = rec.open_left(wall) {
                let _ = self.engine.resume_open(route, left, now);
            }
        }
        if !found.is_empty() {
            tracing::info!(node = %self.cfg.node_id, routes = found.len(), "holds and open routes brought back");
        }
        self.lock().records = found;
        Ok(())
    }

    /// Writes this node's heartbeat.
    async fn beat(&self, wall: u64) -> Result<(), ()> {
        let ttl = self.store.capabilities().ttl.then_some(self.cfg.node_ttl * 3);
        let key = self.keys.heartbeat();
        let put = self.store.put(&key, Heartbeat::encode(wall, VERSION), ttl);
        match tokio::time::timeout(self.cfg.store_timeout, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(()),
        }
    }

    /// Pushes shares in one call; after the store refused the batch for something in it (not
    /// for being unreachable), item by item, so that one bad item does not block the rest:
    /// items refused for themselves are dropped and counted. Which were written, in order;
    /// `Err` when the store is unreachable (the caller keeps everything pending).
    async fn push_shares(&self, shares: Vec<ShareWrite>) -> Result<Vec<bool>, ()> {
        let n = shares.len();
        match tokio::time::timeout(self.cfg.store_timeout, self.store.put_shares(shares.clone())).await {
            Ok(Ok(())) => return Ok(vec![true; n]),
            Ok(Err(e)) if !transient(&e) => {}
            Ok(Err(_)) | Err(_) => return Err(()),
        }
        let mut done = Vec::with_capacity(n);
        for w in shares {
            let key = w.key.clone();
            match tokio::time::timeout(self.cfg.store_timeout, self.store.put_shares(vec![w])).await {
                Ok(Ok(())) => done.push(true),
                Ok(Err(e)) if !transient(&e) => {
                    self.counters.rejected.fetch_add(1, Relaxed);
                    tracing::warn!(node = %self.cfg.node_id, key = %key, error = %e, "the store refused a contribution: dropped");
                    done.push(false);
                }
                Ok(Err(_)) | Err(_) => return Err(()),
            }
        }
        Ok(done)
    }

    /// Reads in full the shares of routes whose listed leaders all stopped counting (this
    /// node, or nodes gone silent), and merges them.
    async fn rebuild(&self) {
        let routes: Vec<String> = self.lock().rebuild.drain().collect();
        for route in routes {
            let Some(key) = self.keys.route(&route) else { continue };
            match tokio::time::timeout(self.cfg.store_timeout, self.store.all_shares(&key)).await {
                Ok(Ok(shares)) => {
                    self.counters.rebuilds.fetch_add(1, Relaxed);
                    let mut st = self.lock();
                    match shares {
                        Some(shares) => st.remote.insert(route.clone(), shares),
                        None => st.remote.insert(route.clone(), Shares::default()),
                    };
                }
                Ok(Err(e)) if !transient(&e) => {
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                    self.lock().remote.remove(&route);
                    let _ = self.engine.set_cluster(&route, None, self.clock.now());
                    continue;
                }
                Ok(Err(_)) | Err(_) => {
                    self.counters.store_errors.fetch_add(1, Relaxed);
                    self.lock().rebuild.insert(route);
                    continue;
                }
            }
            self.merge_route(&route);
        }
    }

    /// Re-merges the routes whose listed shares name nodes that joined or fell silent since
    /// the last pulse. Other routes need nothing: the engine heals cluster values on its own,
    /// and changed shares are merged as they arrive.
    fn merge_if_liveness_changed(&self) {
        let wall = self.clock.wall_ms();
        let routes: Vec<String> = {
            let mut st = self.lock();
            let live: std::collections::HashSet<String> = self.live_nodes(&st, wall).cloned().collect();
            if live == st.live {
                return;
            }
            let changed: std::collections::HashSet<&String> = live.symmetric_difference(&st.live).collect();
            let routes = st
                .remote
                .iter()
                .filter(|(_, shares)| !shares.complete() || shares.top.iter().any(|s| changed.contains(&s.member)))
                .map(|(r, _)| r.clone())
                .collect();
            st.live = live;
            routes
        };
        for route in routes {
            self.merge_route(&route);
        }
    }

    /// Re-reads every route's leading shares and every heartbeat. At start, also seeds this
    /// node's own earlier scar (warm start).
    async fn full_sync(&self, warm_start: bool) -> Result<(), StoreError> {
        let fail = |e: StoreError| {
            self.counters.store_errors.fetch_add(1, Relaxed);
            e
        };
        let timeout = |op| StoreError::new(self.store.backend(), op, None, ErrorKind::Timeout);
        let within = self.cfg.store_timeout;
        let node = self.keys.node_id();
        let keys = tokio::time::timeout(within, self.store.list_shares(self.keys.routes_prefix()))
            .await
            .map_err(|_| fail(timeout(Op::ListShares)))?
            .map_err(fail)?;
        let mut views: Vec<Option<Shares>> = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(512) {
            let got = tokio::time::timeout(within, self.store.shares(chunk, node))
                .await
                .map_err(|_| fail(timeout(Op::GetShares)))?;
            match got {
                Ok(got) => views.extend(got),
                // Something under our keys that is not shares (written by someone else):
                // read the chunk key by key and skip the bad ones.
                Err(e) if !transient(&e) => {
                    for key in chunk {
                        match self.store.shares(std::slice::from_ref(key), node).await {
                            Ok(mut one) => views.push(one.pop().flatten()),
                            Err(e) if !transient(&e) => {
                                self.counters.decode_errors.fetch_add(1, Relaxed);
                                tracing::warn!(key = %key, error = %e, "skipping an unreadable value under the cluster's keys");
                                views.push(None);
                            }
                            Err(e) => return Err(fail(e)),
                        }
                    }
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let hb_keys = tokio::time::timeout(within, self.store.list_keys(self.keys.nodes_prefix()))
            .await
            .map_err(|_| fail(timeout(Op::ListKeys)))?
            .map_err(fail)?;
        let mut hb_entries = Vec::with_capacity(hb_keys.len());
        for chunk in hb_keys.chunks(512) {
            let got = tokio::time::timeout(within, self.store.batch_get(chunk))
                .await
                .map_err(|_| fail(timeout(Op::BatchGet)))?
                .map_err(fail)?;
            hb_entries.extend(got);
        }
        self.read_records(warm_start).await.map_err(fail)?;
        self.counters.full_syncs.fetch_add(1, Relaxed);
        let mut heartbeats = HashMap::new();
        for (key, entry) in hb_keys.iter().zip(hb_entries) {
            let (Some(entry), Some(node)) = (entry, self.keys.parse_heartbeat(key)) else { continue };
            match Heartbeat::decode(&entry.value) {
                Some(hb) if !self.keys.is_own(node) => {
                    heartbeats.insert(node.to_owned(), hb);
                }
                Some(_) => {}
                None => {
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                }
            }
        }
        let mut remote: HashMap<String, Shares> = HashMap::new();
        let mut own = Vec::new();
        for (key, view) in keys.iter().zip(views) {
            let (Some(shares), Some(route)) = (view, self.keys.parse_route(key)) else { continue };
            if let Some(mine) = shares.get(node) {
                match Contribution::decode(&mine.value) {
                    Some(c) => own.push((route.to_owned(), c)),
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                    }
                }
            }
            remote.insert(route.to_owned(), shares);
        }
        let own_routes: std::collections::HashSet<&str> = own.iter().map(|(r, _)| r.as_str()).collect();
        {
            // What the store acknowledged but no longer holds is pushed again.
            let mut st = self.lock();
            let st = &mut *st;
            let lost: Vec<(String, Pushed)> = st
                .stored
                .iter()
                .filter(|(r, _)| !own_routes.contains(r.as_str()) && !st.pending.contains_key(*r))
                .map(|(r, p)| (r.clone(), *p))
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
            // Routes that no longer have shares lose their cluster view.
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

    /// Applies one change from the feed. A change carries its value where the store can
    /// (every change of a route's shares does); otherwise the key is read.
    async fn apply(&self, change: Change) {
        let (key, value) = match change {
            Change::Resync => {
                tracing::debug!(node = %self.cfg.node_id, "change feed lost events: full sync at the next pulse");
                self.counters.resyncs.fetch_add(1, Relaxed);
                self.lock().resync = true;
                return;
            }
            Change::Set { key, value, .. } => (key, value),
            Change::Deleted { key } | Change::Expired { key } => {
                if let Some(route) = self.keys.parse_route(&key) {
                    self.lock().remote.remove(route);
                    let _ = self.engine.set_cluster(route, None, self.clock.now());
                } else if let Some(node) = self.keys.parse_heartbeat(&key) {
                    let mut st = self.lock();
                    if let Some(hb) = st.heartbeats.remove(node) {
                        st.departed.insert(node.to_owned(), hb);
                    }
                }
                return;
            }
        };
        if let Some(route) = self.keys.parse_route(&key) {
            let shares = match value {
                Some(v) => Shares::decode(&v),
                None => {
                    let read = self.store.shares(std::slice::from_ref(&key), self.keys.node_id());
                    match tokio::time::timeout(self.cfg.store_timeout, read).await {
                        Ok(Ok(mut got)) => match got.pop().flatten() {
                            Some(shares) => Some(shares),
                            None => return,
                        },
                        Ok(Err(e)) if !transient(&e) => None,
                        Ok(Err(_)) | Err(_) => {
                            self.counters.store_errors.fetch_add(1, Relaxed);
                            return;
                        }
                    }
                }
            };
            let Some(shares) = shares else {
                self.counters.decode_errors.fetch_add(1, Relaxed);
                return;
            };
            self.counters.pulled.fetch_add(1, Relaxed);
            // A notice that leaves this node's leader as it was (another node's share moved
            // below it, or this node's own; or there is still none but its own) changes
            // nothing to merge.
            let same_leader = {
                let mut st = self.lock();
                let st = &mut *st;
                let old = match st.remote.get_mut(route) {
                    Some(slot) => Some(std::mem::replace(slot, shares)),
                    None => {
                        st.remote.insert(route.to_owned(), shares);
                        None
                    }
                };
                let counts = self.counts(st, self.clock.wall_ms());
                old.is_some_and(|old| match (old.best(&counts), st.remote[route].best(&counts)) {
                    (Best::Found(a), Best::Found(b)) => a.member == b.member && a.value == b.value,
                    (Best::None, Best::None) => true,
                    _ => false,
                })
            };
            if !same_leader {
                self.merge_route(route);
            }
        } else if let Some(node) = self.keys.parse_heartbeat(&key).filter(|node| !self.keys.is_own(node)) {
            let value = match value {
                Some(v) => v,
                None => match tokio::time::timeout(self.cfg.store_timeout, self.store.get(&key)).await {
                    Ok(Ok(Some(e))) => e.value,
                    Ok(Ok(None)) => return,
                    Ok(Err(_)) | Err(_) => {
                        self.counters.store_errors.fetch_add(1, Relaxed);
                        return;
                    }
                },
            };
            self.counters.pulled.fetch_add(1, Relaxed);
            match Heartbeat::decode(&value) {
                Some(hb) => {
                    let mut st = self.lock();
                    st.departed.remove(node);
                    st.heartbeats.insert(node.to_owned(), hb);
                }
                None => {
                    self.counters.decode_errors.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Whether a node last heard from at `hb` still counts at `wall`: within `node_ttl`.
    fn is_live(&self, hb: &Heartbeat, wall: u64) -> bool {
        wall.saturating_sub(hb.ms) <= self.cfg.node_ttl.as_millis() as u64
    }

    /// The other nodes live at `wall`.
    fn live_nodes<'a>(&'a self, st: &'a SyncState, wall: u64) -> impl Iterator<Item = &'a String> + 'a {
        st.heartbeats.iter().filter(move |(_, hb)| self.is_live(hb, wall)).map(|(n, _)| n)
    }

    /// Whether a member's share counts in this node's merged view at `wall`: another node,
    /// live.
    fn counts<'a>(&'a self, st: &'a SyncState, wall: u64) -> impl Fn(&str) -> bool + 'a {
        move |m: &str| !self.keys.is_own(m) && st.heartbeats.get(m).is_some_and(|hb| self.is_live(hb, wall))
    }

    fn merge_all(&self) {
        let routes: Vec<String> = self.lock().remote.keys().cloned().collect();
        for route in routes {
            self.merge_route(&route);
        }
    }

    /// Hands the leading share of `route` among the other live nodes, with its age, to the
    /// engine, which heals it ([`Engine::merge_cluster`]) and blends the result by gamma. The
    /// shares are ranked by healed scar, so the leader is the largest at any time; when every
    /// listed leader is this node or a silent one, the route is read in full next pulse.
    fn merge_route(&self, route: &str) {
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let leader = {
            let mut st = self.lock();
            let Some(shares) = st.remote.get(route) else { return };
            match shares.best(self.counts(&st, wall)) {
                Best::Found(s) => match Contribution::decode(&s.value) {
                    Some(c) => Some(c),
                    None => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                        None
                    }
                },
                Best::None => None,
                Best::Incomplete => {
                    st.rebuild.insert(route.to_owned());
                    return;
                }
            }
        };
        let contributions = leader.map(|c| (c.scar, wall.saturating_sub(c.at_ms) as f64 / 1e3));
        if self.engine.merge_cluster(route, contributions, now).is_ok() {
            self.counters.merges.fetch_add(1, Relaxed);
        }
    }
}

/// A node's heartbeat as stored: its wall-clock milliseconds (8 bytes, little-endian), then
/// its software version (UTF-8, at most 32 bytes; absent from older nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heartbeat {
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

    pub(crate) fn decode(bytes: &[u8]) -> Option<Heartbeat> {
        let (ms, version) = bytes.split_first_chunk::<8>()?;
        if version.len() > 32 {
            return None;
        }
        let version = std::str::from_utf8(version).ok()?;
        Some(Heartbeat { ms: u64::from_le_bytes(*ms), version: (!version.is_empty()).then(|| version.to_owned()) })
    }
}

/// A node's pulse phase, in [0, 1) of a pulse: a hash of its id (FNV-1a), so that it is
/// stable across restarts and spread across a fleet.
fn phase_of(node_id: &str) -> f64 {
    (fnv1a(node_id.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a, 64 bits: stable across processes and versions (every node must agree): pulse
/// phases, designated pushers, and the hash of the policies a node runs.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// How many nodes push a route's change at once; the others give it a second look.
const DESIGNATED: usize = 2;

/// Whether `node` is one of the [`DESIGNATED`] pushers of `route` among itself and the
/// nodes of `others` (their [`fnv1a`] seeds): rendezvous hashing, so that every node with
/// the same view of who is live picks the same ones, and a node joining or leaving moves
/// only the routes it wins or held.
fn designated(node: &str, route: &str, others: &[u64]) -> bool {
    if others.len() < DESIGNATED {
        return true;
    }
    let r = fnv1a(route.as_bytes());
    let score = |seed: u64| {
        // splitmix64's finaliser: the seed and route mixed into an even spread.
        let mut z = (seed ^ r).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mine = score(fnv1a(node.as_bytes()));
    others.iter().filter(|&&o| score(o) > mine).count() < DESIGNATED
}

/// What one pulse's judging held back, by reason ([`Shared::judge`]).
#[derive(Debug, Default)]
struct Judged {
    deadbanded: u64,
    outranked: u64,
    deferred: u64,
}

/// What a run of [`Shared::pulse`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// The regular pulse.
    Pulse,
    /// The second look at the changes a pulse held ([`SyncConfig::second_look`]).
    Second,
    /// The last pulse of a node leaving.
    Flush,
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
            SyncConfig { second_look: 1.0, ..SyncConfig::default() },
            SyncConfig { second_look: f64::NAN, ..SyncConfig::default() },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(matches!(e.kind, ErrorKind::Config(_)), "{e}");
        }
    }

    #[test]
    fn every_node_agrees_on_two_designated_pushers_per_route_spread_over_the_fleet() {
        let nodes: Vec<String> = (0..12).map(|i| format!("node-{i}")).collect();
        let mut wins = vec![0; nodes.len()];
        for r in 0..600 {
            let route = format!("GET /r/{r}");
            let picked: Vec<usize> = (0..nodes.len())
                .filter(|&i| {
                    let others: Vec<u64> =
                        nodes.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, n)| fnv1a(n.as_bytes())).collect();
                    designated(&nodes[i], &route, &others)
                })
                .collect();
            assert_eq!(picked.len(), DESIGNATED, "{route}: {picked:?}");
            for i in picked {
                wins[i] += 1;
            }
        }
        // 1,200 picks over 12 nodes: 100 each on average.
        assert!(wins.iter().all(|&w| (50..=150).contains(&w)), "{wins:?}");
        // Alone or with one other node, a node always pushes at once.
        assert!(designated("a", "r", &[]) && designated("a", "r", &[fnv1a(b"b")]));
    }
}
