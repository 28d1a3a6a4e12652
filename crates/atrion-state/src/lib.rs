//! # atrion-state
//!
//! The state port of Atrion's hexagon: the [`StateStore`] trait that every storage adapter
//! implements, the types that cross it, the in-memory store that is the embedded default,
//! and (feature `testing`) the conformance suite every adapter must pass.
//!
//! The engine never waits on a store: stores hold the cluster's shared view and a node's
//! durable copy, and are read and written off the decision path.
//!
//! Lessons from the design this replaces are built in: values carry versions and
//! [`StateStore::compare_and_swap`] is the atomic primitive ([`update`] is the retry loop
//! over it, because a closure cannot cross a network); errors name the backend, the
//! operation and the key and keep their source; a capability is advertised only when the
//! conformance suite proves it.
//!
//! ```
//! use atrion_state::{InMemoryStore, StateStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let v1 = store.set("ns/route/checkout", "scarred".into()).await?;
//! let entry = store.get("ns/route/checkout").await?.expect("just written");
//! assert_eq!((entry.value.as_ref(), entry.version), (&b"scarred"[..], v1));
//! # Ok::<(), atrion_state::StoreError>(())
//! # }).unwrap();
//! ```
//!
//! ## Features
//! - `testing`: the `conformance` module and the `conformance_tests!` macro.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod backup;
mod error;
mod keys;
mod manager;
mod memory;
mod record;
mod service;
pub mod shares;
mod store;

#[cfg(feature = "testing")]
pub mod conformance;

/// Durations in config files are written as seconds: `#[serde(with = "atrion_state::serde_secs")]`.
pub use atrion_core::serde_secs;
pub use backup::{BACKUP_CHUNK, BackupLine, KeyFamilies, KeyFamily, RestoreRefusal, ValueCheck, cluster_families};
pub use error::{BoxError, ErrorKind, Op, StoreError};
pub use keys::ClusterKeys;
pub use manager::{Clock, Contribution, NodeInfo, NodeStatus, StateManager, SyncConfig, SyncStats, TokioClock, fnv1a};
pub use memory::InMemoryStore;
pub use record::RouteRecord;
pub use service::{CleanupTask, ServiceError, StateService, StateServiceBuilder, SwitchReport};
pub use store::{
    Capabilities, CasOutcome, Change, ChangeBus, ChangeFeed, CleanupStats, Entry, MAX_KEY_LEN, MAX_VALUE_LEN,
    StateStore, StoreStats, check_key, check_share, check_value, update,
};
