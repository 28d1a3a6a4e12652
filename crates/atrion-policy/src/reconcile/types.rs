//! What the reconciliation loop reads and writes: its configuration, a node's report, the
//! divergence classes and their alerts, what applies, the history and audit entries, the
//! events it broadcasts, and the state dumps and diffs the API shows.

use std::time::Duration;

use atrion_core::PhysicsConfig;
use serde::{Deserialize, Serialize};

use crate::log::Retention;
use crate::model::{Desired, ManualState, Source};
use crate::validate::Limits;

/// How a node's reconciliation runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// The tick: the divergence check (on what the change feed brought; no store call). The
    /// sidecar sets its pulse.
    pub every: Duration,
    /// How often desired state and every node's report are read in full, beside the change
    /// feed (at once after the feed is lost or lagged; every tick when the store has none).
    pub full_sync: Duration,
    /// How often a node rewrites its report when nothing changed (its policy heartbeat); a
    /// node silent for three of these is taken for cut off.
    pub report_every: Duration,
    /// Ticks a node may stay behind desired state before a divergence alert.
    pub divergence_after: u32,
    /// How much of the history of applied changes is kept (default: 10,000 events, 64 MiB,
    /// 90 days).
    pub history: Retention,
    /// How much of the audit trail is kept (default: 10,000 entries, 64 MiB, 90 days).
    pub audit: Retention,
    /// The bounds of the validation pipeline.
    pub limits: Limits,
    /// The longest a store call may take.
    pub store_timeout: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            every: Duration::from_secs(1),
            full_sync: Duration::from_secs(5),
            report_every: Duration::from_secs(2),
            divergence_after: 5,
            history: Retention::default(),
            audit: Retention::default(),
            limits: Limits::default(),
            store_timeout: Duration::from_secs(2),
        }
    }
}

/// The classes of divergence (seed 003): what an operator should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// The node is alive and reports, but runs an older version: it will reconcile.
    ConfigurationDrift,
    /// The node (or this node's link to the store) is silent: retry, check the network.
    NetworkIssue,
    /// The node cannot take the policies for lack of room: the policies exceed its own
    /// validation limits ([`Limits`]) (or, should the engine report one, its route table is
    /// full).
    ResourceConstraint,
    /// The node refuses the policies (a policy it cannot apply): investigate.
    SoftwareBug,
}

/// Why a node could not apply the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyError {
    /// The class.
    pub class: Divergence,
    /// What happened.
    pub message: String,
}

/// A node's current state, as it reports it under `{ns}/policy/node/{node}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node.
    pub node: String,
    /// The desired version it runs (0: none yet).
    pub version: u64,
    /// A hash of what it runs (the applicable policies and bans).
    pub hash: String,
    /// When it applied them (ms since the Unix epoch).
    pub applied_ms: u64,
    /// When it wrote this report.
    pub at_ms: u64,
    /// Why it could not apply a newer version, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApplyError>,
}

/// A divergence alert: a node that stayed behind desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The node.
    pub node: String,
    /// The class.
    pub class: Divergence,
    /// Since when it is behind (ms since the Unix epoch).
    pub since_ms: u64,
    /// The desired version.
    pub desired: u64,
    /// The version the node runs, as last heard.
    pub current: u64,
    /// In words.
    pub message: String,
}

/// A policy as a node applies it: the pattern, its source, and what its routes run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applicable {
    /// The pattern.
    pub route: String,
    /// Where it comes from.
    pub source: Source,
    /// The physics its routes run (`None`: the node's defaults).
    pub physics: Option<PhysicsConfig>,
    /// The manual state.
    pub state: Option<ManualState>,
    /// The VIP client keys.
    pub vip: Vec<String>,
}

/// One change as the history records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyChange {
    /// The pattern (or a ban's target, `ban route=… client=…`).
    pub target: String,
    /// Before (`None`: added).
    pub from: Option<serde_json::Value>,
    /// After (`None`: removed).
    pub to: Option<serde_json::Value>,
}

/// A history event: what a node changed when it applied a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// The desired version applied.
    pub version: u64,
    /// The node that applied it.
    pub node: String,
    /// When.
    pub at_ms: u64,
    /// What changed.
    pub changes: Vec<PolicyChange>,
}

/// An admin action, or a refused attempt, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Who: the token's name (`-` when none was valid).
    pub who: String,
    /// The action (`policy.apply`, `ban`, `route.open`, `restore`, `auth`...).
    pub action: String,
    /// What it was about (a route, a pattern, a store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    /// After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
    /// Whether it was done.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The node that took it.
    pub node: String,
    /// How many attempts the entry stands for: refused attempts are recorded once per
    /// source and minute, with their count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// What the policy layer tells its observers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PolicyEvent {
    /// This node applied a desired version.
    Applied {
        /// The version.
        version: u64,
        /// How many policies and bans changed.
        changes: usize,
    },
    /// This node could not apply a desired version.
    Failed {
        /// The version.
        version: u64,
        /// Why.
        error: ApplyError,
    },
    /// A node stayed behind desired state.
    Diverged(Alert),
    /// A node caught up.
    Converged {
        /// The node.
        node: String,
    },
}

/// A state dump: desired, applicable (this node) and current (every node).
#[derive(Debug, Clone, Serialize)]
pub struct StateDump {
    /// The node answering (`None`: read from the store directly).
    pub node: Option<String>,
    /// The store could not be read: desired state and the others' reports are as this
    /// node last read them.
    pub stale: bool,
    /// The desired state.
    pub desired: Desired,
    /// What this node resolved it into.
    pub applicable: Vec<Applicable>,
    /// Every node's report, this node's first.
    pub current: Vec<Report>,
    /// Divergence alerts in force.
    pub alerts: Vec<Alert>,
}

/// What one node runs that differs from desired.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDiff {
    /// The node.
    pub node: String,
    /// The version it runs.
    pub version: u64,
    /// The desired version.
    pub desired: u64,
    /// Whether it runs desired state.
    pub in_sync: bool,
    /// The changes of the versions it has not applied (from the history), newest last.
    pub missing: Vec<PolicyChange>,
    /// Why it could not apply, if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApplyError>,
}
