//! Membership and liveness: heartbeats, which nodes count, and how the cluster is listed
//! ([`StateManager::nodes`]).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use atrion_core::PhysicsObserver;
use atrion_state::fnv1a;
use serde::Serialize;

use crate::manager::{Shared, StateManager, SyncState};
use crate::wire::{Heartbeat, VERSION};

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

    /// Writes this node's heartbeat.
    pub(crate) async fn beat(&self, wall: u64) -> Result<(), ()> {
        let ttl = self.store.capabilities().ttl.then_some(self.cfg.node_ttl * 3);
        let key = self.keys.heartbeat();
        let put = self.store.put(&key, Heartbeat::encode(wall, VERSION), ttl);
        match tokio::time::timeout(self.cfg.store_timeout, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(()),
        }
    }

    /// Whether a node last heard from at `hb` still counts at `wall`: within `node_ttl`.
    pub(crate) fn is_live(&self, hb: &Heartbeat, wall: u64) -> bool {
        wall.saturating_sub(hb.ms) <= self.cfg.node_ttl.as_millis() as u64
    }

    /// The other nodes live at `wall`.
    pub(crate) fn live_nodes<'a>(&'a self, st: &'a SyncState, wall: u64) -> impl Iterator<Item = &'a String> + 'a {
        st.heartbeats.iter().filter(move |(_, hb)| self.is_live(hb, wall)).map(|(n, _)| n)
    }

    /// Whether a member's share counts in this node's merged view at `wall`: another node,
    /// live.
    pub(crate) fn counts<'a>(&'a self, st: &'a SyncState, wall: u64) -> impl Fn(&str) -> bool + 'a {
        move |m: &str| !self.keys.is_own(m) && st.heartbeats.get(m).is_some_and(|hb| self.is_live(hb, wall))
    }
}

/// A node's pulse phase, in [0, 1) of a pulse: a hash of its id (FNV-1a), so that it is
/// stable across restarts and spread across a fleet.
pub(crate) fn phase_of(node_id: &str) -> f64 {
    (fnv1a(node_id.as_bytes()) >> 11) as f64 / (1u64 << 53) as f64
}

/// How long a departed node stays listed by [`StateManager::nodes`] (as gone).
pub(crate) fn departed_retention(node_ttl: Duration) -> u64 {
    (node_ttl.as_millis() as u64).saturating_mul(20).max(60_000)
}
