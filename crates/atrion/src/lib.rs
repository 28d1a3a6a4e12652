//! # atrion
//!
//! The crate users depend on: per-route admission control that protects a service from
//! overload and cascading failure, optionally shared across a cluster.
//!
//! - [`Atrion`]: the engine, a clock and the cluster sync behind one handle.
//!   `Atrion::builder().build()` is the embedded default (default model, in-memory store);
//!   [`Atrion::connect`] joins a cluster through a [`state::StateStore`];
//!   [`Atrion::enter`] returns a [`Guard`] that reports latency and outcome when dropped.
//! - [`Atrion::start_task`]: a [`Lease`] for work that runs minutes or hours (heartbeats,
//!   an abort when it overruns, workload profiles); see [`task`].
//! - [`AtrionLayer`] (feature `tower`): a tower layer for HTTP services that answers
//!   `503` with `Retry-After` when a route sheds.
//! - Everything of `atrion-core` is re-exported: [`Engine`], [`PhysicsConfig`], [`Decision`],
//!   observers; plus [`SystemClock`], [`CounterClock`] and [`ConsoleObserver`], which touch the OS.
//!
//! ```
//! use atrion::{Atrion, Priority};
//!
//! let atrion = Atrion::builder().build()?;
//! match atrion.enter("GET /checkout", Priority::High) {
//!     Ok(mut guard) => {
//!         // ... serve the request; on failure:
//!         guard.fail();
//!     } // reported here
//!     Err(shed) => println!("busy, retry after {:?}", shed.retry_after),
//! }
//! # Ok::<(), atrion::AtrionError>(())
//! ```
//!
//! ## Features
//! - `tower` (default): [`AtrionLayer`].
//! - `axum`: the layer's default route uses axum's matched path (`GET /users/{id}`).
//! - `file`: the embedded file store, as `file::FileStore`.
//! - `metrics`: [`metrics::MetricsObserver`], Atrion's metrics through the `metrics` facade.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::io::Write;

pub use atrion_core::*;

mod atrion;
mod config;
#[cfg(feature = "tower")]
pub mod layer;
#[cfg(feature = "metrics")]
pub mod metrics;
mod now;
mod retry;
pub mod task;

pub use atrion::{Atrion, AtrionBuilder, AtrionError, Guard};
/// Encryption at rest (feature `encryption`): the `atrion-crypt` crate.
#[cfg(feature = "encryption")]
pub use atrion_crypt as crypt;
#[cfg(feature = "encryption")]
pub use config::EncryptionConfig;
pub use config::{StoreConfig, redacted_url, state_service};
#[cfg(feature = "tower")]
pub use layer::{AtrionLayer, AtrionService, ReportBody, ShedError, ShedLayer, ShedService, retry_attempt};
pub use retry::{RETRY_ATTEMPT_HEADER, parse_retry_attempt};
pub use task::{Lease, TaskError};

/// The state layer: the `StateStore` port, stores, the service, the clock (`atrion-state`)
/// and the cluster sync (`atrion-sync`).
pub mod state {
    pub use atrion_state::*;
    pub use atrion_sync::*;
}

/// The process's clocks (the standard library's time, and the same with its monotonic part
/// read from the processor's counter: the facade's default), and engine time from any clock.
pub use atrion_state::{Clock, CounterClock, SystemClock};
pub use atrion_sync::EngineClock;

/// The embedded file store (feature `file`).
#[cfg(feature = "file")]
pub mod file {
    pub use atrion_file::*;
}

/// The Redis store (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use atrion_redis::*;
}

/// The PostgreSQL store (feature `postgres`).
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use atrion_postgres::*;
}

/// Prints transitions and evictions (and, if asked, every update) to standard error, one
/// line each. Printing is I/O: use it to watch a service, not on a hot path in production.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleObserver {
    updates: bool,
}

impl ConsoleObserver {
    /// Transitions and evictions only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every update as well.
    pub fn verbose() -> Self {
        ConsoleObserver { updates: true }
    }
}

impl PhysicsObserver for ConsoleObserver {
    fn on_event(&self, event: &Event<'_>) {
        let mut err = std::io::stderr().lock();
        // A failed write to stderr is not worth failing a request for.
        let _ = match *event {
            Event::Transition { route, at, from, to, resistance } => {
                writeln!(err, "[atrion] {at} {route}: {from} -> {to} (R = {resistance:.1})")
            }
            Event::Evicted { route, at } => writeln!(err, "[atrion] {at} {route}: evicted (idle)"),
            Event::Update { route, at, mode, resistance, scar, momentum } if self.updates => {
                writeln!(err, "[atrion] {at} {route}: {mode} R = {resistance:.2} S = {scar:.2} M = {momentum:.3}")
            }
            _ => Ok(()),
        };
    }
}
