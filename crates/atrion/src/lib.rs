//! # atrion
//!
//! The crate users depend on: per-route admission control that protects a service from
//! overload and cascading failure, optionally shared across a cluster.
//!
//! - [`Atrion`]: the engine, a clock and the cluster sync behind one handle.
//!   `Atrion::builder().build()` is the embedded default (default model, in-memory store);
//!   [`Atrion::connect`] joins a cluster through a [`state::StateStore`];
//!   [`Atrion::enter`] returns a [`Guard`] that reports latency and outcome when dropped.
//! - [`AtrionLayer`] (feature `tower`): a tower layer for HTTP services that answers
//!   `503` with `Retry-After` when a route sheds.
//! - Everything of `atrion-core` is re-exported: [`Engine`], [`PhysicsConfig`], [`Decision`],
//!   observers; plus [`SystemClock`] and [`ConsoleObserver`], which touch the OS.
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
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use atrion_core::*;

mod atrion;
mod config;
#[cfg(feature = "tower")]
pub mod layer;
#[cfg(feature = "metrics")]
pub mod metrics;

pub use atrion::{Atrion, AtrionBuilder, AtrionError, Guard};
pub use config::{StoreConfig, redacted_url, state_service};
#[cfg(feature = "tower")]
pub use layer::{AtrionLayer, AtrionService, ReportBody, ShedError, ShedLayer, ShedService};

/// The state layer: the `StateStore` port, stores, the service and the cluster sync.
pub mod state {
    pub use atrion_state::*;
}

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

/// A monotonic clock that turns [`Instant`]s into the engine's [`Timestamp`]s, counting from
/// its own creation.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
    wall_origin_ms: u64,
}

impl SystemClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        SystemClock { origin: Instant::now(), wall_origin_ms: wall }
    }

    /// Now, as a timestamp.
    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// `instant` as a timestamp (the epoch for instants before it).
    pub fn at(&self, instant: Instant) -> Timestamp {
        let nanos = instant.saturating_duration_since(self.origin).as_nanos();
        Timestamp::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl atrion_state::Clock for SystemClock {
    fn now(&self) -> Timestamp {
        SystemClock::now(self)
    }

    /// Wall time at creation plus monotonic time since: it never jumps with the system clock.
    fn wall_ms(&self) -> u64 {
        self.wall_origin_ms + self.origin.elapsed().as_millis() as u64
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_clamps_before_origin() {
        let before = Instant::now();
        let clock = SystemClock::new();
        assert_eq!(clock.at(before), Timestamp::ZERO);
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}
