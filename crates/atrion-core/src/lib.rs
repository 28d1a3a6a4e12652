//! # atrion-core
//!
//! The physics engine of Atrion: per-route *resistance* computed from live telemetry,
//! `R = R_base + Pressure + Momentum + ScarTissue`, and the admit/shed decision made from it
//! in nanoseconds.
//!
//! This crate is pure and synchronous: no I/O, no clock reads (time is an input, a
//! [`Timestamp`]), no async, no allocation on the decision path of a route that exists.
//! That is why it can be embedded anywhere, replayed deterministically, and simulated for
//! hours of traffic in seconds. State sharing, HTTP and the CLI live in other crates.
//!
//! - [`Telemetry`] and [`PhysicsConfig`] validate everything that enters
//!   ([`TelemetryError`], [`ConfigError`] name the field).
//! - [`Model::Reference`] reproduces the reference model (docs/DESIGN.md §7.1) with its quirks;
//!   [`Model::Default`] fixes its flaws (docs/DESIGN.md §7.2). The table in the `physics` module says how
//!   they differ.
//! - [`Engine`] holds many routes, is `Send + Sync`, and decides without a lock.
//! - [`Decision`] is a value: admit or shed, a [`Reason`], and a retry-after hint.
//! - [`PhysicsVector`] snapshots a route for the state layer (serde and a versioned binary).
//! - [`PhysicsObserver`] receives [`Event`]s; [`SilentObserver`] costs nothing.
//!
//! ```
//! use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry, Timestamp};
//!
//! let engine = Engine::new(PhysicsConfig::default())?;
//! let mut admitted_while_down = 0;
//! for ms in 0..30_000u64 {
//!     let now = Timestamp::from_millis(ms);
//!     // One request a millisecond; the database has learned its normal (20 ms) when it
//!     // fails at 15 s.
//!     let down = ms >= 15_000;
//!     if engine.decide("db", now, Priority::Normal).is_admitted() {
//!         admitted_while_down += u32::from(down);
//!         engine.report("db", Telemetry::outcome(if down { 900.0 } else { 20.0 }, !down, 0.3)?, now);
//!     }
//! }
//! // Of the 15,000 requests sent to the failed database, almost all were shed.
//! assert!(admitted_while_down < 1_500, "{admitted_while_down}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This crate has no cargo features.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod decision;
mod engine;
mod lease;
pub mod limits;
mod mode;
mod observer;
mod pattern;
mod physics;
pub use physics::{heal, heal_rank};
mod telemetry;
mod time;
mod vector;

pub use config::ProfileConfig;
pub use config::{
    Channels, ConfigError, HalfOpenConfig, Model, NormalConfig, PhysicsConfig, PriorityThresholds, Profile,
    ThrottleConfig, TunerConfig, merge_json, serde_secs,
};
pub use decision::{Decision, Priority, Reason, UnknownPriority, Verdict, softmax_select};
pub use engine::{
    Engine, EngineError, EngineLimits, EngineStats, Hold, HoldHook, LocalContribution, OwnedRouteHandle, PolicyTarget,
    RouteHandle, RoutePolicy, RouteStatus, SyncedEngine, TunerStats, UNTRACKED_ROUTE,
};
pub use lease::{
    AbortHandle, AbortReason, LeaseDeadlines, LeaseError, LeaseGrant, LeaseId, LeaseOptions, LeaseOutcome, LeaseStart,
};
pub use limits::MAX_ROUTE_ID;
pub use mode::Mode;
pub use observer::{
    CollectorObserver, CompositeObserver, Event, FilteredObserver, OwnedEvent, PhysicsObserver, SilentObserver,
};
pub use pattern::RoutePattern;
pub use telemetry::{Telemetry, TelemetryError};
pub use time::Timestamp;
pub use vector::{DecodeError, PhysicsVector, VECTOR_VERSION};
