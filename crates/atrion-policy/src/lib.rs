//! # atrion-policy
//!
//! Policies across a cluster: how an operator steers running Atrion nodes.
//!
//! - **Desired state** ([`Desired`]) lives in the shared store as one versioned document,
//!   written by compare-and-swap ([`DesiredStore`]): the management API's layer (first
//!   priority) and the policy file's (second); routes no policy targets run the node's
//!   defaults (third). A [`Policy`] targets routes by exact id or glob (the most
//!   specific wins, whole) and sets physics overrides, priority lanes, a manual state
//!   (open, closed, shadow); a [`Ban`] sheds a route or a client key until a deadline.
//! - **Validation** ([`Validator`]): schema → semantic → resource; every issue with its
//!   path; any issue rejects the whole change.
//! - **Applicable and current state** ([`PolicyNode`]): each node resolves desired state
//!   into its engine's overrides at apply time ([`atrion_core::Engine::set_policies`], a
//!   hot patch that keeps each route's scar, mode and tuner) and into the [`Gate`] of bans
//!   and VIP lanes, then reports the version and a hash of what it runs.
//! - **Reconciliation**: on a change of desired state and on every tick; each change is a
//!   [`HistoryEvent`] in a bounded log; a node behind desired state for too long raises a
//!   divergence [`Alert`], classified as in the distributed state design.
//! - **Audit trail**: every admin action, and every refused attempt ([`AuditEntry`]).
//!
//! Keys live under the cluster's namespace, built by [`PolicyKeys`] on the namespace's one
//! key format ([`atrion_state::family_prefix`]).
//!
//! ## Example
//!
//! A policy file checked as a node checks it, then made the file's layer of desired state
//! on one node over a shared store (here in memory), and in force in its engine at once:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use atrion_core::{Engine, PhysicsConfig, Priority, Reason, Timestamp};
//! use atrion_policy::{Change, Limits, PolicyConfig, PolicyKeys, PolicyNode, Source, Validator};
//! use atrion_state::{Clock, InMemoryStore, StateStore, TokioClock};
//!
//! let validator = Validator::new(PhysicsConfig::default(), Limits::default());
//! let file = validator.check_toml(
//!     r#"
//!     [[policies]]
//!     route = "GET /reports/*"
//!     physics = { tuner = { k = 4.5 } }
//!
//!     [[policies]]
//!     route = "POST /admin"
//!     state = "open"
//!     "#,
//!     0,
//! )?;
//! // Any issue rejects the whole file, each issue with its path.
//! let bad = validator.check_toml("[[policies]]\nroute = \"x\"\nphysics = { tuner = { k = -1.0 } }", 0);
//! assert_eq!(bad.unwrap_err().issues[0].path, "policies[0].physics.tuner.k");
//!
//! let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
//! let engine = Arc::new(Engine::new(PhysicsConfig::default())?);
//! let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
//! let keys = PolicyKeys::new("atrion", "node-1");
//! let node = PolicyNode::start(engine.clone(), store, keys, clock, PolicyConfig::default()).await;
//!
//! let changed = node.change(Source::File, &Change::Replace(file), "ops", None).await?;
//! assert_eq!(changed.after.version, 1);
//! assert_eq!(node.current().version, 1, "this node runs it");
//! assert_eq!(engine.route_config("GET /reports/daily").tuner.k, 4.5);
//! let d = engine.decide("POST /admin", Timestamp::from_millis(1), Priority::Critical);
//! assert_eq!((d.is_admitted(), d.reason), (false, Reason::Held), "held open: everything shed");
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod desired;
mod families;
mod keys;
mod log;
mod model;
mod reconcile;
mod runtime;
mod validate;
mod view;

pub use desired::{Change, Changed, DesiredStore, decode};
pub use families::key_families;
pub use keys::{PolicyKeys, fnv1a};
pub use log::{Log, Logged, Page, RELIST_EVERY, Retention};
pub use model::{Ban, Desired, Lanes, ManualState, Policy, PolicySet, Source};
pub use reconcile::{
    Alert, Applicable, ApplyError, AuditEntry, Divergence, HistoryEvent, NodeDiff, PolicyChange, PolicyConfig,
    PolicyEvent, PolicyNode, Report, StateDump,
};
pub use runtime::Gate;
pub use validate::{Issue, Limits, Rejected, Stage, Validator};
pub use view::Cluster;

use atrion_state::StoreError;

/// Why a policy operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The change breaks the validation pipeline; nothing was written.
    #[error("the change is rejected: {0}")]
    Rejected(#[from] Rejected),
    /// Another writer changed desired state first (compare-and-swap).
    #[error("desired state is at version {found}, not {expected}: re-read and try again")]
    Conflict {
        /// The version the writer expected.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// Writers kept racing: the change was tried this many times.
    #[error("desired state changed under the writer {attempts} times: try again")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// Nothing to remove.
    #[error("{what} is not in desired state")]
    NotFound {
        /// What was asked for.
        what: String,
    },
    /// The stored document does not decode.
    #[error("`{key}` does not hold a desired-state document: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store did not answer in time.
    #[error("the store did not answer in time")]
    Timeout,
    /// The change was not ready before its deadline: nothing was written.
    #[error("the change could not be made before its deadline: nothing was written")]
    Late,
    /// A value could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// A log entry is larger than its log takes.
    #[error("the entry takes {bytes} bytes, more than the {limit} a log entry may")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The most a log entry may take.
        limit: u64,
    },
}
