//! `SyncConfig`: how a node takes part in the cluster, and its validation.

use std::time::Duration;

use atrion_state::{DEFAULT_NAMESPACE, ErrorKind, Op, StoreError, check_namespace};
use serde::Deserialize;

use crate::keys::ClusterKeys;

/// How a node takes part in the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SyncConfig {
    /// The cluster's namespace: nodes of one cluster share it; every key is under it
    /// (`{namespace}/…`, [`atrion_state::family_prefix`]). Checked by the one rule,
    /// [`atrion_state::check_namespace`]; default [`atrion_state::DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// This node's id, unique in the cluster: 1 to 64 of `[A-Za-z0-9._-]`.
    pub node_id: String,
    /// How often dirty routes are pushed and aggregates recomputed.
    #[serde(with = "atrion_core::serde_secs")]
    pub pulse: Duration,
    /// How often everything is re-read from the store, repairing change events lost without
    /// a disconnect (a disconnect, or a feed that fell behind, forces a full sync at once).
    /// Each one reads every route's leaders, a slice per pulse over the period (at least
    /// 256 keys a pulse): a node's store reads are its route count per period, so a large
    /// fleet wants it rare.
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
            namespace: DEFAULT_NAMESPACE.into(),
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
        check_namespace(&self.namespace).or_else(bad)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert!(SyncConfig::default().validate().is_ok());
        for bad in [
            SyncConfig { namespace: "a/b".into(), ..SyncConfig::default() },
            SyncConfig { namespace: "a:b".into(), ..SyncConfig::default() },
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
}
