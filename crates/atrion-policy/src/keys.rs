//! The policy layer's keys: the one place that builds them, on the namespace's key format
//! ([`atrion_state::family_prefix`]); and [`fnv1a`], the hash of what a node runs.
//!
//! ```text
//! {namespace}/policy/desired          the cluster's desired policies (one document)
//! {namespace}/policy/index            the nodes that report
//! {namespace}/policy/node/{node}      a node's report of what it runs
//! {namespace}/policy/history/…        the history of applied changes
//! {namespace}/audit/…                 the audit trail
//! ```

use atrion_state::family_prefix;

/// Builds the policy layer's keys of one node of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyKeys {
    node_id: String,
    /// `{namespace}/policy/`
    policy: String,
    /// `{namespace}/audit/`
    audit: String,
}

impl PolicyKeys {
    /// The keys of node `node_id` in cluster `namespace` (both checked where they are
    /// configured: `atrion_sync::SyncConfig::validate`).
    pub fn new(namespace: &str, node_id: &str) -> Self {
        PolicyKeys {
            node_id: node_id.to_owned(),
            policy: family_prefix(namespace, "policy"),
            audit: family_prefix(namespace, "audit"),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether `node` is this node's id.
    pub fn is_own(&self, node: &str) -> bool {
        node == self.node_id
    }

    /// The key of the cluster's desired policies (one document).
    pub fn policy_desired(&self) -> String {
        format!("{}desired", self.policy)
    }

    /// Where every policy key lives (the reconciler's feed).
    pub fn policy_prefix(&self) -> String {
        self.policy.clone()
    }

    /// Where nodes report the policies they run (their current state).
    pub fn policy_reports_prefix(&self) -> String {
        format!("{}node/", self.policy)
    }

    /// This node's policy report.
    pub fn policy_report(&self) -> String {
        self.policy_report_of(&self.node_id)
    }

    /// A node's policy report.
    pub fn policy_report_of(&self, node: &str) -> String {
        format!("{}{node}", self.policy_reports_prefix())
    }

    /// The index of the nodes that report (so that reading every report is O(nodes), not a
    /// scan of the namespace).
    pub fn policy_index(&self) -> String {
        format!("{}index", self.policy)
    }

    /// Where the history of applied policy changes lives.
    pub fn policy_history_prefix(&self) -> String {
        format!("{}history/", self.policy)
    }

    /// Where the audit trail lives.
    pub fn audit_prefix(&self) -> String {
        self.audit.clone()
    }
}

pub use atrion_state::fnv1a;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_keys_live_under_the_namespace_apart_from_each_other() {
        let k = PolicyKeys::new("ns", "n1");
        assert_eq!(k.policy_desired(), "ns/policy/desired");
        assert_eq!(
            (k.policy_report(), k.policy_report_of("n2")),
            ("ns/policy/node/n1".into(), "ns/policy/node/n2".into())
        );
        assert_eq!(
            (k.policy_index(), k.policy_history_prefix(), k.audit_prefix()),
            ("ns/policy/index".into(), "ns/policy/history/".into(), "ns/audit/".into())
        );
        for key in [k.policy_desired(), k.policy_report(), k.policy_index(), k.audit_prefix()] {
            assert!(key.starts_with("ns/"), "{key}");
            assert!(!key.starts_with("ns/route/") && !key.starts_with("ns/node/"), "{key}");
        }
        assert!(k.policy_desired().starts_with(&k.policy_prefix()));
        assert!(!k.policy_index().starts_with(&k.policy_reports_prefix()), "the index is not a report");
        assert!(k.is_own("n1") && !k.is_own("n2") && k.node_id() == "n1");
        // The reference values of FNV-1a 64: nodes of every version must agree.
        assert_eq!((fnv1a(b""), fnv1a(b"a")), (0xcbf2_9ce4_8422_2325, 0xaf63_dc4c_8601_ec8c));
    }
}
