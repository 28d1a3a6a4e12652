//! # atrion-sync
//!
//! Cluster sync: the [`StateManager`] shares this node's scar tissue with the other nodes of
//! a cluster through any [`atrion_state::StateStore`], and merges theirs into its engine,
//! always off the decision path (`docs/DESIGN.md §4`).
//!
//! ```text
//! COMPUTE (engine, local, ns) -> BUFFER (dirty routes) -> PUSH (one batch per pulse)
//!                                                      -> PULL (change feed + full sync) -> MERGE (gamma)
//! ```
//!
//! The crate is split along those seams: [`SyncConfig`] (`config.rs`), the bytes it writes
//! ([`Contribution`], heartbeats: `wire.rs`; [`RouteRecord`]: `record.rs`), its keys
//! ([`ClusterKeys`]: `keys.rs`) and their families for a restore ([`cluster_families`]),
//! membership and liveness (`membership.rs`: [`NodeInfo`]), the pulse and its push
//! (`push.rs`), the change feed, the full sync and the warm start (`pull.rs`), the periodic
//! full sync spread over its period (`sweep.rs`), and the merge (`merge.rs`); `manager.rs` holds the handle and the task that drives them.
//!
//! It depends on the store contract (`atrion-state`) and the engine (`atrion-core`); store
//! adapters depend on the contract alone. Time comes from the contract's
//! [`atrion_state::Clock`], read as engine time through [`EngineClock`].
//!
//! ## Features
//! - `testing`: the `testing` module, checks of a shared store through two managers.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod clock;
mod config;
mod families;
mod keys;
mod manager;
mod membership;
mod merge;
mod pull;
mod push;
mod record;
mod stats;
mod sweep;
mod wire;

#[cfg(feature = "testing")]
pub mod testing;

pub use clock::EngineClock;
pub use config::SyncConfig;
pub use families::cluster_families;
pub use keys::ClusterKeys;
pub use manager::StateManager;
pub use membership::{NodeInfo, NodeStatus};
pub use record::RouteRecord;
pub use stats::SyncStats;
pub use wire::Contribution;
