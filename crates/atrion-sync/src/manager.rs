//! `StateManager`: the pulse that shares scar tissue across a cluster (docs/DESIGN.md §4).
//!
//! ```text
//! COMPUTE (engine, local, ns) -> BUFFER (dirty routes) -> PUSH (one batch per pulse)
//!                                                      -> PULL (change feed + full sync) -> MERGE (gamma)
//! ```
//!
//! - The engine decides on local state only; the manager never sits on the decision path.
//! - Each node writes only its own contribution for a route, as its share of
//!   `{namespace}/route/{route}` ([`atrion_state::shares`]): its *local* scar and momentum and the
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

use atrion_core::{Engine, PhysicsObserver, SyncedEngine};
use atrion_state::shares::Shares;
use atrion_state::{Clock, ErrorKind, StateStore, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::keys::ClusterKeys;
use crate::membership::phase_of;
use crate::push::{Look, Pushed};
use crate::record::RouteRecord;
use crate::stats::{Counters, SyncStats};
use crate::wire::{Contribution, Digest, Heartbeat};

/// Changes of the feed applied in one round of the pulse task (more when a notification
/// holds more): enough that a busy feed costs few rounds, few enough that a pulse is not held
/// up behind a flood.
const FEED_BATCH: usize = 1_024;

/// The sync's maps, keyed by route and node ids and looked up several times per dirty
/// route and per notice: foldhash (randomly seeded per process, as the engine's route
/// table), not SipHash, which cost a tenth of a pulse.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set of [`Map`]'s hashing.
pub(crate) type Set<K> = HashSet<K, foldhash::fast::RandomState>;

#[derive(Default)]
pub(crate) struct SyncState {
    /// route -> the leaders of its shares as last read or notified (other nodes', and
    /// perhaps this node's own). Routes are shared (`Arc`) with [`SyncState::merging`],
    /// which names them without allocating.
    pub(crate) remote: Map<Arc<str>, Shares>,
    /// Merges the notices of the feed batch being applied call for, one per route, made
    /// once the batch is applied ([`Shared::merge_queued`]): a route's two designated
    /// pushers' notices usually arrive together, and the engine merges the route once.
    /// `Some`: the leader the last notice brought; `None`: a route new to this node, merged
    /// as [`Shared::merge_route`] does.
    pub(crate) merging: Map<Arc<str>, Option<Option<Contribution>>>,
    /// Where a notice's shares are decoded before they take their route's place in
    /// `remote` (swapped with the route's previous ones, whose strings and buffers the next
    /// notice reuses: no allocation per notice).
    pub(crate) scratch: Shares,
    /// node -> last heartbeat, other nodes only.
    pub(crate) heartbeats: Map<String, Heartbeat>,
    /// Nodes whose heartbeat is gone from the store (left, or expired), with their last
    /// one; kept for [`StateManager::nodes`] a while ([`departed_retention`]).
    pub(crate) departed: Map<String, Heartbeat>,
    /// Our contributions not yet pushed, with their routes' healing rates.
    pub(crate) pending: Map<String, Pushed>,
    /// Our last contribution the store acknowledged, per route: what the other nodes
    /// predict (the deadband compares with it healed), and what is pushed again when a
    /// full sync finds it missing (a store that lost its data), so that an acknowledged
    /// write is never lost for good.
    pub(crate) stored: Map<String, Pushed>,
    /// Routes whose every listed leader is us or a silent node: read in full next pulse.
    pub(crate) rebuild: Set<String>,
    /// Our latest contribution per route that was held back (deadband, outranked): pushed
    /// when the node leaves.
    pub(crate) held: Map<String, Pushed>,
    /// Changes worth pushing that wait for a second look ([`SyncConfig::second_look`]).
    pub(crate) deferred: Map<String, Pushed>,
    /// The last full sync failed or events were lost: run one at the next pulse.
    pub(crate) resync: bool,
    /// The other nodes counted live at the last merge.
    pub(crate) live: Set<String>,
    /// When our heartbeat was last acknowledged (wall ms).
    pub(crate) heartbeat_ms: u64,
    /// The last full sync did not find our heartbeat in the store (a store that lost its
    /// data): beat at the next pulse, not at the heartbeat's period, or the other nodes
    /// would not count our shares until then.
    pub(crate) beat_lost: bool,
    /// The membership digest as last read or written, with its version (for the
    /// watchers' compare-and-swap).
    pub(crate) digest: Option<(u64, Digest)>,
    /// The last heartbeat heard from a watcher (wall ms): it vouches that every node of
    /// the digest was live then (the nodes' own refreshes are quiet).
    pub(crate) vouched_ms: u64,
    /// The watchers as this node last chose them (at its last beat): a beat of one of
    /// them vouches for the digest.
    pub(crate) watching: Vec<String>,
    /// The periodic full sync under way, a slice per pulse.
    pub(crate) sweep: Option<crate::sweep::Sweep>,
    /// This node's route records as the store holds them.
    pub(crate) records: Map<String, RouteRecord>,
    /// Records to write (`Some`) or remove (`None`), newest per route.
    pub(crate) record_pending: Map<String, Option<RouteRecord>>,
}

pub(crate) struct Shared {
    /// The engine, seen through what the sync may do to it.
    pub(crate) engine: Arc<dyn SyncedEngine>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) cfg: SyncConfig,
    pub(crate) keys: ClusterKeys,
    /// One pulse at a time: a pulse that overtook another could write an older contribution
    /// over a newer one.
    pub(crate) pulsing: tokio::sync::Mutex<()>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) state: Mutex<SyncState>,
    pub(crate) counters: Counters,
}

/// Shares this node's scar with the cluster and merges the cluster's into its engine.
/// Runs as a background task owned by this handle; [`StateManager::shutdown`] flushes and
/// stops it.
pub struct StateManager<O> {
    pub(crate) shared: Arc<Shared>,
    /// The engine this manager feeds, as its owner knows it.
    engine: Arc<Engine<O>>,
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
            engine: engine.clone(),
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
            // Changes of the feed that carry no value: their keys are read after the batch.
            let mut reads = Vec::new();
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
                    _ = full.tick() => s.begin_sweep().await,
                    // The feed is drained in batches: what is ready is applied in one round.
                    got = atrion_state::ChangeFeed::each_or_pending(&mut feed, FEED_BATCH, |change| {
                        if let Some(read) = s.apply_now(change) {
                            reads.push(read);
                        }
                    }) => match got {
                        Some(_) => {
                            s.merge_queued();
                            for change in reads.drain(..) {
                                s.apply(change).await;
                            }
                        }
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
        Ok(StateManager { shared, engine, token, task: Some(task) })
    }

    /// Counters of the sync.
    pub fn stats(&self) -> SyncStats {
        self.shared.counters.snapshot()
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
        &self.engine
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

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether an error says the store is away (retry later) rather than that the request was
/// refused for itself.
pub(crate) fn transient(e: &StoreError) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
}
