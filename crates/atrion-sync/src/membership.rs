//! Membership and liveness: heartbeats, which nodes count, and how the cluster is listed
//! ([`StateManager::nodes`]).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use atrion_core::PhysicsObserver;
use atrion_state::{CasOutcome, ErrorKind, Op, StoreError, fnv1a};
use serde::Serialize;

use crate::manager::{Map, Shared, StateManager, SyncState};
use crate::push::rendezvous;
use crate::wire::{Digest, Heartbeat, VERSION};

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
    /// Its last heartbeat, or the last watcher's beat that vouched for it (this node: its
    /// last acknowledged push), in ms since the Unix epoch; 0 if never.
    pub last_seen_ms: u64,
    /// Its software version, if it says.
    pub version: Option<String>,
    /// How far behind the present this node's view of it is, in ms (this node: since its
    /// last acknowledged push); `None` before the first.
    pub sync_lag_ms: Option<u64>,
}

impl<O: PhysicsObserver + 'static> StateManager<O> {
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
                // Vouched for by a watcher: as recent as the watcher's beat.
                let vouched = !departed && st.digest.as_ref().is_some_and(|(_, d)| d.nodes.contains_key(id));
                let seen = if vouched { hb.ms.max(st.vouched_ms) } else { hb.ms };
                let age = wall.saturating_sub(seen);
                let status = match age {
                    _ if departed || age > ttl => NodeStatus::Gone,
                    _ if age > ttl / 3 => NodeStatus::Suspect,
                    _ => NodeStatus::Healthy,
                };
                NodeInfo {
                    id: id.clone(),
                    this_node: false,
                    status,
                    last_seen_ms: seen,
                    version: hb.version.clone(),
                    sync_lag_ms: Some(age),
                }
            })
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        std::iter::once(ours).chain(others).collect()
    }
}

impl Shared {
    /// How often the heartbeat is written: six times per `node_ttl`, at most every pulse.
    pub(crate) fn heartbeat_every(&self) -> u64 {
        (self.cfg.node_ttl / 6).max(self.cfg.pulse).as_millis() as u64
    }

    /// The rendezvous seeds of the other nodes live at `wall`.
    pub(crate) fn live_seeds(&self, st: &SyncState, wall: u64) -> Vec<u64> {
        self.live_nodes(st, wall).map(|n| fnv1a(n.as_bytes())).collect()
    }

    /// Writes this node's heartbeat: aloud (on the change feed) or quietly (read by the
    /// watchers alone).
    pub(crate) async fn beat(&self, wall: u64, aloud: bool) -> Result<(), ()> {
        let ttl = self.store.capabilities().ttl.then_some(self.cfg.node_ttl * 3);
        let key = self.keys.heartbeat();
        let value = Heartbeat::encode(wall, VERSION);
        let put = async {
            if aloud { self.store.put(&key, value, ttl).await } else { self.store.put_quiet(&key, value, ttl).await }
        };
        match tokio::time::timeout(self.cfg.store_timeout, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(()),
        }
    }

    /// Whether node `node`, last heard from at `hb`, still counts at `wall`: heard within
    /// `node_ttl`, or listed by the membership digest while a watcher vouched for it within
    /// `node_ttl` (a node's refreshes are quiet unless it is a watcher).
    pub(crate) fn is_live(&self, st: &SyncState, node: &str, hb: &Heartbeat, wall: u64) -> bool {
        self.live_by(st.digest.as_ref().map(|(_, d)| d), st.vouched_ms, node, hb, wall)
    }

    /// [`Shared::is_live`] on the digest and the last vouch alone.
    fn live_by(&self, digest: Option<&Digest>, vouched_ms: u64, node: &str, hb: &Heartbeat, wall: u64) -> bool {
        let ttl = self.cfg.node_ttl.as_millis() as u64;
        wall.saturating_sub(hb.ms) <= ttl
            || (wall.saturating_sub(vouched_ms) <= ttl && digest.is_some_and(|d| d.nodes.contains_key(node)))
    }

    /// The other nodes live at `wall`.
    pub(crate) fn live_nodes<'a>(&'a self, st: &'a SyncState, wall: u64) -> impl Iterator<Item = &'a String> + 'a {
        st.heartbeats.iter().filter(move |(n, hb)| self.is_live(st, n, hb, wall)).map(|(n, _)| n)
    }

    /// Whether a member's share counts in this node's merged view at `wall`: another node,
    /// live.
    pub(crate) fn counts<'a>(&'a self, st: &'a SyncState, wall: u64) -> impl Fn(&str) -> bool + 'a {
        self.counts_among(&st.heartbeats, st.digest.as_ref().map(|(_, d)| d), st.vouched_ms, wall)
    }

    /// [`Shared::counts`] with the heartbeats, the digest and the last vouch alone borrowed
    /// (the rest of the state stays free to change).
    pub(crate) fn counts_among<'a>(
        &'a self,
        heartbeats: &'a Map<String, Heartbeat>,
        digest: Option<&'a Digest>,
        vouched_ms: u64,
        wall: u64,
    ) -> impl Fn(&str) -> bool + 'a {
        move |m: &str| {
            !self.keys.is_own(m) && heartbeats.get(m).is_some_and(|hb| self.live_by(digest, vouched_ms, m, hb, wall))
        }
    }

    /// The cluster's [`WATCHERS`] at `wall`, as this node sees them: of the live nodes and
    /// itself, the first by rendezvous hashing, passing over any node (but this one) not
    /// heard from within half of `node_ttl` (a watcher gone silent, or one just chosen that
    /// has not yet beaten aloud), so that the next in line takes over before the vouching
    /// of the others runs out. Watchers beat aloud, read every heartbeat at each beat and
    /// write the membership digest when the live nodes change; every other node's beat is
    /// quiet (docs/DESIGN.md §4, membership).
    pub(crate) fn watchers<'a>(&'a self, st: &'a SyncState, wall: u64) -> Vec<&'a str> {
        let heard = (self.cfg.node_ttl / 2).as_millis() as u64;
        let own = self.keys.node_id();
        let mut ranked: Vec<(u64, &str, bool)> = self
            .live_nodes(st, wall)
            .map(|n| {
                (
                    rendezvous(fnv1a(n.as_bytes()), WATCH_KEY),
                    n.as_str(),
                    wall.saturating_sub(st.heartbeats[n].ms) <= heard,
                )
            })
            .chain(std::iter::once((rendezvous(fnv1a(own.as_bytes()), WATCH_KEY), own, true)))
            .collect();
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(a.1)));
        ranked.into_iter().filter(|(_, _, heard)| *heard).take(WATCHERS).map(|(_, n, _)| n).collect()
    }

    /// Takes `digest` (at `version`) as the cluster's membership: its nodes are known live
    /// (vouched for by the watchers' beats), and the nodes it leaves out that were last
    /// heard from before it was made have departed. A node that departed after its listed
    /// heartbeat is not brought back.
    pub(crate) fn take_digest(&self, st: &mut SyncState, version: u64, digest: Digest) {
        if st.digest.as_ref().is_some_and(|(v, _)| *v > version) {
            return;
        }
        for (node, &ms) in &digest.nodes {
            if self.keys.is_own(node) || st.departed.get(node).is_some_and(|hb| hb.ms >= ms) {
                continue;
            }
            st.departed.remove(node);
            let hb = st.heartbeats.entry(node.clone()).or_insert(Heartbeat { ms, version: None });
            hb.ms = hb.ms.max(ms);
        }
        depart(st, |n, hb| !digest.nodes.contains_key(n) && hb.ms <= digest.at_ms);
        st.digest = Some((version, digest));
    }

    /// Reads every heartbeat in the store: the other nodes' by id, and whether this node's
    /// own is there. Values that do not decode are skipped, and counted when `count` (by the
    /// full sync; a watcher reads them again at every beat).
    pub(crate) async fn read_heartbeats(&self, count: bool) -> Result<(Map<String, Heartbeat>, bool), StoreError> {
        let within = self.cfg.store_timeout;
        let timeout = |op| StoreError::new(self.store.backend(), op, None, ErrorKind::Timeout);
        let keys = tokio::time::timeout(within, self.store.list_keys(self.keys.nodes_prefix()))
            .await
            .map_err(|_| timeout(Op::ListKeys))??;
        let mut heartbeats = Map::default();
        let mut own = false;
        for chunk in keys.chunks(512) {
            let got = tokio::time::timeout(within, self.store.batch_get(chunk))
                .await
                .map_err(|_| timeout(Op::BatchGet))??;
            for (key, entry) in chunk.iter().zip(got) {
                let (Some(entry), Some(node)) = (entry, self.keys.parse_heartbeat(key)) else { continue };
                match Heartbeat::decode(&entry.value) {
                    Some(hb) if !self.keys.is_own(node) => {
                        heartbeats.insert(node.to_owned(), hb);
                    }
                    Some(_) => own = true,
                    None if count => {
                        self.counters.decode_errors.fetch_add(1, Relaxed);
                    }
                    None => {}
                }
            }
        }
        Ok((heartbeats, own))
    }

    /// A watcher's round, after its beat at `wall`: reads every heartbeat, takes them as its
    /// view, and writes the membership digest when the live nodes are not the digest's
    /// (compare-and-swap: of two watchers writing at once, one wins and the other reads it).
    pub(crate) async fn watch(&self, wall: u64) -> Result<(), StoreError> {
        let (beats, _) = self.read_heartbeats(false).await?;
        let ttl = self.cfg.node_ttl.as_millis() as u64;
        let (expected, digest) = {
            let mut st = self.lock();
            let st = &mut *st;
            depart(st, |n, _| !beats.contains_key(n));
            let mut live = std::collections::BTreeMap::new();
            live.insert(self.keys.node_id().to_owned(), wall);
            for (node, hb) in beats {
                if wall.saturating_sub(hb.ms) <= ttl {
                    live.insert(node.clone(), hb.ms);
                }
                st.departed.remove(&node);
                st.heartbeats.insert(node, hb);
            }
            let same = st.digest.as_ref().is_some_and(|(_, d)| d.nodes.keys().eq(live.keys()));
            if same {
                return Ok(());
            }
            (st.digest.as_ref().map(|(v, _)| *v), Digest { at_ms: wall, nodes: live })
        };
        let key = self.keys.digest();
        let cas = self.store.compare_and_swap(&key, expected, digest.encode(), None);
        let timeout = || StoreError::new(self.store.backend(), Op::CompareAndSwap, None, ErrorKind::Timeout);
        match tokio::time::timeout(self.cfg.store_timeout, cas).await.map_err(|_| timeout())?? {
            CasOutcome::Swapped { version } => {
                tracing::debug!(node = %self.cfg.node_id, nodes = digest.nodes.len(), "membership digest written");
                let mut st = self.lock();
                self.take_digest(&mut st, version, digest);
            }
            CasOutcome::Conflict { .. } => self.read_digest().await?,
        }
        Ok(())
    }

    /// Reads the membership digest and takes it.
    pub(crate) async fn read_digest(&self) -> Result<(), StoreError> {
        let key = self.keys.digest();
        let get = tokio::time::timeout(self.cfg.store_timeout, self.store.get(&key))
            .await
            .map_err(|_| StoreError::new(self.store.backend(), Op::Get, Some(&key), ErrorKind::Timeout))??;
        let Some(entry) = get else { return Ok(()) };
        match Digest::decode(&entry.value) {
            Some(d) => self.take_digest(&mut self.lock(), entry.version, d),
            None => {
                self.counters.decode_errors.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }
}

/// Moves the heartbeats `gone` picks from the live list to the departed.
fn depart(st: &mut SyncState, gone: impl Fn(&str, &Heartbeat) -> bool) {
    let nodes: Vec<String> = st.heartbeats.iter().filter(|(n, hb)| gone(n, hb)).map(|(n, _)| n.clone()).collect();
    for node in nodes {
        if let Some(hb) = st.heartbeats.remove(&node) {
            st.departed.insert(node, hb);
        }
    }
}

/// How many watchers a cluster has ([`Shared::watchers`]).
pub(crate) const WATCHERS: usize = 2;

/// The rendezvous key of the watchers: not a route id (a route id is never empty).
const WATCH_KEY: u64 = 0x7761_7463_6865_7273;

/// A node's pulse phase, in [0, 1) of a pulse: a hash of its id (FNV-1a), so that it is
/// stable across restarts and spread across a fleet.
pub(crate) fn phase_of(node_id: &str) -> f64 {
    (fnv1a(node_id.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64
}

/// How long a departed node stays listed by [`StateManager::nodes`] (as gone).
pub(crate) fn departed_retention(node_ttl: Duration) -> u64 {
    (node_ttl.as_millis() as u64).saturating_mul(20).max(60_000)
}
