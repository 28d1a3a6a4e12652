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
//! over it, because a closure cannot cross a network), and [`StateStore::transact`] applies a
//! [`Group`] of writes to several keys, with version preconditions, all or none; errors name the backend, the
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
//! The crate is the store contract only: it does not depend on the engine (`atrion-core`),
//! so an adapter compiles the port and nothing else. The cluster sync that writes through it
//! is `atrion-sync`; the policy layer's keys are `atrion-policy`'s. Each layer builds its keys
//! on the namespace's one key format ([`family_prefix`]: `{namespace}/{family}/…`, the
//! namespace checked by [`check_namespace`], [`DEFAULT_NAMESPACE`] when none is set), and
//! every layer takes its time from one [`Clock`] ([`SystemClock`], [`CounterClock`] or
//! [`TokioClock`]).
//!
//! ## Features
//! - `testing`: the `conformance` module, the `conformance_tests!` macro and
//!   `conformance::all`.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod backup;
mod clock;
mod error;
mod group;
mod hash;
mod memory;
mod namespace;
mod service;
pub mod shares;
mod store;

#[cfg(feature = "testing")]
pub mod conformance;

pub use backup::{
    BACKUP_CHUNK, BackupError, BackupLine, BackupSeal, BackupWriter, KeyFamilies, KeyFamily, RestoreRefusal, SealError,
    ValueCheck,
};
pub use clock::{Clock, CounterClock, Monotonic, RuntimeClock, SystemClock, TokioClock, system_wall_ms};
pub use error::{BoxError, ErrorKind, Op, StoreError};
pub use group::{Group, GroupWrite, Precondition, slot_group, split_slot_group};
pub use hash::fnv1a;
pub use memory::InMemoryStore;
pub use namespace::{DEFAULT_NAMESPACE, MAX_NAMESPACE_LEN, check_namespace, family_prefix, namespace_prefix};
pub use service::{CleanupTask, ServiceError, StateService, StateServiceBuilder, SwitchReport};
pub use store::{
    Capabilities, CasOutcome, Change, ChangeBus, ChangeFeed, ChangeRef, CleanupStats, Entry, MAX_KEY_LEN,
    MAX_VALUE_LEN, Notice, NoticeParser, StateStore, StoreStats, check_key, check_share, check_value, update,
};

/// Durations in config files are written as seconds (a non-negative number):
/// `#[serde(with = "atrion_state::serde_secs")]`. The same format as the core's
/// `atrion_core::serde_secs`, for the adapters' configs, which do not depend on the core.
pub mod serde_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes a duration as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads seconds as a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| D::Error::custom(format!("not a duration in seconds: {secs}")))
    }
}
