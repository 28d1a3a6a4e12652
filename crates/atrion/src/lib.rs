//! # atrion
//!
//! The crate users depend on. Today it re-exports the engine of `atrion-core` and adds
//! what needs the outside world: a monotonic [`SystemClock`] and a [`ConsoleObserver`] that
//! prints events. Later it gains the `Atrion` builder, the state layer and a tower layer.
//!
//! ```
//! use atrion::{Engine, PhysicsConfig, Priority, SystemClock, Telemetry};
//!
//! let engine = Engine::new(PhysicsConfig::default())?;
//! let clock = SystemClock::new();
//! let decision = engine.decide("GET /checkout", clock.now(), Priority::High);
//! if decision.is_admitted() {
//!     let started = clock.now();
//!     // ... serve the request ...
//!     let took = clock.now().saturating_since(started);
//!     engine.report("GET /checkout", Telemetry::from_duration(took, true, 0.2)?, clock.now());
//! } else {
//!     println!("busy, retry after {:?}", decision.retry_after);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This crate has no cargo features yet.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::io::Write;
use std::time::Instant;

pub use atrion_core::*;

/// A monotonic clock that turns [`Instant`]s into the engine's [`Timestamp`]s, counting from
/// its own creation.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        SystemClock { origin: Instant::now() }
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
