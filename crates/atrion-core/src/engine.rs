//! The engine: many routes at once, shared across threads.
//!
//! Concurrency contract:
//! - [`Engine::decide`] takes no lock. It finds the route in a lock-free map (`scc`'s
//!   `HashIndex`, epoch-protected reads) and reads the route's published view: a handful
//!   of atomics.
//!   In half-open it may take a probe with one atomic add. It never allocates on a route
//!   that exists.
//! - [`Engine::report`] on an operational route of the default model takes no lock: it adds
//!   the sample to the route's pending sums (one cache line: the route's, or the calling
//!   thread's lane once several threads report on the route). Once per `step` (10 ms) the
//!   first decision or report to find a step due takes the route's mutex with a try-lock and
//!   folds the window in one physics update (a few hundred nanoseconds of arithmetic), then
//!   publishes the view (docs/DESIGN.md §7.2, "Coalesced steps"). Other reports (the
//!   reference model, bootstrap, open, half-open) take the mutex for one update each.
//!   Reports of different routes never contend; the reference model's shared tuner is the
//!   one exception, as in the reference.
//! - A new route is created on first sight; that allocates once (its cell and its id
//!   together, the table's entry inline in its buckets).
//!
//! The route table is bounded ([`EngineLimits`]), and route ids are untrusted input: a
//! decision on one route never comes from another route's evidence. When the table is full
//! and a new route comes:
//! 1. routes idle for longer than [`EngineLimits::idle_timeout`] are evicted, and so are the
//!    least valuable ones idle for longer than [`EngineLimits::pressure_idle`] (no hold, no
//!    policy, neither open nor half-open, no scar: nothing a decision would miss). The scan
//!    runs at most once a second, so that a flood of new ids costs one scan per second.
//! 2. If that made no room, the new route is **untracked**: it is decided on no state at
//!    all (admitted with [`Reason::Untracked`], or as its policy's hold says) and its
//!    reports are dropped; both are counted ([`EngineStats`]). Observers see its decisions
//!    under [`UNTRACKED_ROUTE`]. It is tracked as soon as there is room again.
//!
//! An operator's hold ([`Engine::hold`]) always finds room: a full table is swept at once,
//! then held routes may use a reserve beyond the bound ([`EngineLimits::held_reserve`]),
//! and when that is used up too the least valuable route is evicted for it. A policy's hold
//! applies to untracked routes too.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::{ConfigError, Model, PhysicsConfig};
use crate::decision::{Decision, Priority, Reason, softmax_select};
use crate::mode::Mode;
use crate::observer::{Event, PhysicsObserver, SilentObserver};
use crate::pattern::RoutePattern;
use crate::physics::{
    Change, Kept, Physics, Published, RouteState, Tuner, Window, blend, decayed_resistance, heal, heal_factor_fast,
};
use crate::telemetry::Telemetry;
use crate::time::Timestamp;
use crate::vector::{DecodeError, PhysicsVector};

mod decide;
mod handle;
mod hold;
mod last;
mod lease;
mod pending;
mod policy;
mod route;
mod sync;
pub use policy::PolicyTarget;
pub use sync::SyncedEngine;
mod table;
use handle::Target;
pub use handle::{OwnedRouteHandle, RouteHandle};
pub use hold::Hold;
use pending::{Pending, Taken};
pub use policy::RoutePolicy;
use policy::{Override, Overrides};
use route::{PhysicsSet, Route, RouteCell, load_f, secs_since, store_f};
use table::Slot;

/// The route name observers see for decisions on untracked routes: made on no state because
/// the route table was full, or because the id is not valid.
pub const UNTRACKED_ROUTE: &str = "<untracked>";

/// Limits of the route table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EngineLimits {
    /// Most routes tracked one by one (default 65,536).
    pub max_routes: usize,
    /// A route with no decision or report for this long may be evicted when the table is
    /// full (default 10 minutes).
    pub idle_timeout: Duration,
    /// When the table is full, a route of little value (no hold, no policy, neither open nor
    /// half-open, no scar) idle for this long is evicted too (default 30 s).
    pub pressure_idle: Duration,
    /// Routes beyond `max_routes` that an operator's hold may add when nothing can be
    /// evicted (default 1,024): holds always find room.
    pub held_reserve: usize,
    /// Most task leases live at once, over all routes (default 65,536): past it a new lease
    /// is refused ([`crate::LeaseError::TooMany`]).
    pub max_leases: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_routes: 65_536,
            idle_timeout: Duration::from_secs(600),
            pressure_idle: Duration::from_secs(30),
            held_reserve: 1_024,
            max_leases: 65_536,
        }
    }
}

impl EngineLimits {
    /// The default limits with at most `max_routes` routes.
    pub fn with_max_routes(max_routes: usize) -> Self {
        EngineLimits { max_routes, ..EngineLimits::default() }
    }
}

/// An engine operation that could not be done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No route of this id is tracked.
    #[error("unknown route `{route}`")]
    UnknownRoute {
        /// The route id asked for.
        route: String,
    },
    /// A snapshot of another model cannot be restored into this engine.
    #[error("route `{route}`: snapshot is of the {found:?} model, the engine runs {expected:?}")]
    ModelMismatch {
        /// The route.
        route: String,
        /// The engine's model.
        expected: Model,
        /// The snapshot's model.
        found: Model,
    },
    /// A snapshot that breaks the physics' invariants.
    #[error("route `{route}`: {source}")]
    InvalidSnapshot {
        /// The route.
        route: String,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// A route id that is empty or longer than [`crate::limits::MAX_ROUTE_ID`] bytes.
    #[error("invalid route id ({len} bytes): must be 1 to {max} bytes", max = crate::limits::MAX_ROUTE_ID)]
    InvalidRouteId {
        /// Its length.
        len: usize,
    },
    /// A new route cannot be tracked: the table is full and no route can be evicted (its
    /// decisions are untracked).
    #[error("route `{route}`: the route table is full and no route can be evicted")]
    TableFull {
        /// The route.
        route: String,
    },
}

/// A route's state, read without a lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteStatus {
    /// Mode.
    pub mode: Mode,
    /// Resistance after the last update (ohms).
    pub resistance: f64,
    /// Scar tissue after the last update (ohms).
    pub scar: f64,
    /// Break point (ohms).
    pub break_point: f64,
    /// When the open state ends (default model).
    pub open_until: Timestamp,
}

/// What one node's own telemetry made of a route: the part it shares with the cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalContribution {
    /// Local scar (ohms).
    pub scar: f64,
    /// Local momentum.
    pub momentum: f64,
    /// When these were computed (the route's last update).
    pub at: Timestamp,
    /// The route's healing rate (`scar_decay`, per second), for predicting and ranking its
    /// scar ([`crate::heal`], [`crate::heal_rank`]).
    pub scar_decay: f64,
    /// The route's mode, for this node's own restart ([`Engine::resume_open`]).
    pub mode: Mode,
    /// When its open interval ends (default model; meaningful while `mode` is open).
    pub open_until: Timestamp,
    /// The operator's hold ([`Engine::hold`]); a hold its policy gives is not counted, since
    /// the policy gives it again.
    pub hold: Hold,
}

/// Told when an operator's hold changes ([`Engine::on_hold`]).
pub type HoldHook = Arc<dyn Fn() + Send + Sync>;

/// What an AutoTuner has learned of resistance ([`Engine::shared_tuner`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TunerStats {
    /// Samples learned.
    pub samples: u32,
    /// Mean resistance (ohms).
    pub mean: f64,
    /// Standard deviation of resistance (ohms).
    pub sd: f64,
}

/// Counters of the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Routes tracked now.
    pub routes: usize,
    /// Decisions made on no state ([`Reason::Untracked`]): the table was full, or the id is
    /// not valid.
    pub untracked: u64,
    /// Reports dropped because their route was untracked.
    pub dropped_reports: u64,
    /// Idle routes evicted.
    pub evicted: u64,
    /// Timestamps that went backwards and were treated as no time passing, summed over the
    /// routes tracked now.
    pub clock_skews: u64,
}

/// The route table: lock-free reads (`scc`'s `HashIndex`), entries inline in its buckets.
type RouteMap = scc::HashIndex<Route, (), foldhash::fast::RandomState>;

/// The Atrion engine: per-route physics and decisions for many routes, `Send + Sync`.
///
/// ```
/// use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry, Timestamp};
///
/// let engine = Engine::new(PhysicsConfig::default())?;
/// let now = Timestamp::from_millis(1_000);
/// if engine.decide("GET /users", now, Priority::Normal).is_admitted() {
///     // ... call the route, then say how it went:
///     engine.report("GET /users", Telemetry::outcome(12.0, true, 0.1)?, now);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Engine<O = SilentObserver> {
    phys: Arc<Physics>,
    /// Per-route physics and holds, the most specific pattern first.
    overrides: std::sync::RwLock<Overrides>,
    /// Every physics handed to a route (cells point into it).
    physics: PhysicsSet,
    routes: RouteMap,
    /// Routes in the table: counted here, because counting the table walks its buckets.
    tracked: AtomicUsize,
    limits: EngineLimits,
    shared_tuner: Mutex<Tuner>,
    observer: O,
    next_sweep: AtomicU64,
    untracked: AtomicU64,
    dropped_reports: AtomicU64,
    evicted: AtomicU64,
    /// Told after each [`Engine::hold`] (the state layer writes holds at once).
    hold_hook: Mutex<Option<HoldHook>>,
    /// Task leases (`engine/lease.rs`): off the decision path of plain requests.
    leases: lease::Leases,
    /// This engine's number in the threads' last-route caches (`engine/last.rs`): never 0,
    /// never reused in the process.
    id: u64,
    /// Routes removed from the table so far, counted after each removal: a thread's cached
    /// route is used only while this has not moved since it was looked up.
    /// **Invariant:** every removal from `routes` is followed by [`Engine::removed`].
    removals: AtomicU64,
}

impl<O> Drop for Engine<O> {
    fn drop(&mut self) {
        last::forget(self.id);
    }
}

impl<O> std::fmt::Debug for Engine<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.phys.cfg.model)
            .field("routes", &self.tracked.load(Relaxed))
            .finish()
    }
}

impl Engine<SilentObserver> {
    /// An engine with default limits and no observer. The config is validated.
    pub fn new(config: PhysicsConfig) -> Result<Self, ConfigError> {
        Engine::with_observer(config, EngineLimits::default(), SilentObserver)
    }
}

impl<O: PhysicsObserver> Engine<O> {
    /// An engine with the given limits and observer. The config is validated.
    pub fn with_observer(config: PhysicsConfig, limits: EngineLimits, observer: O) -> Result<Self, ConfigError> {
        config.validate()?;
        if limits.max_routes == 0 {
            return Err(ConfigError::OutOfRange { field: "limits.max_routes", value: 0.0, expected: ">= 1" });
        }
        let physics = PhysicsSet::default();
        let phys = physics.keep(Physics::new(config));
        let routes = scc::HashIndex::with_hasher(foldhash::fast::RandomState::default());
        Ok(Engine {
            phys,
            overrides: std::sync::RwLock::new(Overrides::default()),
            physics,
            routes,
            tracked: AtomicUsize::new(0),
            limits,
            shared_tuner: Mutex::new(Tuner::default()),
            observer,
            next_sweep: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            dropped_reports: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            hold_hook: Mutex::new(None),
            leases: lease::Leases::default(),
            id: last::engine_id(),
            removals: AtomicU64::new(0),
        })
    }

    /// The validated engine-wide configuration (routes without an override run it).
    pub fn config(&self) -> &PhysicsConfig {
        &self.phys.cfg
    }

    /// The configuration `route` runs: its override's, or the engine's.
    pub fn route_config(&self, route: &str) -> PhysicsConfig {
        self.find(route, |r| r.cell().phys().cfg.clone()).unwrap_or_else(|| self.physics_for(route).cfg.clone())
    }

    /// The observer.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// Admit or shed one request on `route` at `now`.
    ///
    /// Never blocks, never panics, and on a route that exists never allocates. An unknown
    /// route is created (bootstrap mode); when the table is full and nothing can be evicted,
    /// or the id is not valid (empty, over 1,024 bytes), it is decided on no state
    /// ([`Reason::Untracked`]: admitted, or as its policy's hold says; its reports dropped).
    #[inline]
    pub fn decide(&self, route: &str, now: Timestamp, priority: Priority) -> Decision {
        self.decide_gated(route, now, priority, || true).unwrap_or_else(|| self.decide_untracked(route, now, priority))
    }

    /// As [`Engine::decide`], but a route that is not tracked yet is created only if
    /// `may_create` says so: `None` when it said no (and nothing changed). `may_create` is
    /// called only when a route would really be created (not for a tracked route, nor for an
    /// untracked decision on a full table): the place for a per-client budget of new routes.
    #[inline]
    pub fn decide_gated(
        &self,
        route: &str,
        now: Timestamp,
        priority: Priority,
        may_create: impl FnOnce() -> bool,
    ) -> Option<Decision> {
        if let Some(d) = self.find_by_name(route, |r| self.decide_route(r, now, priority)) {
            return Some(d);
        }
        match self.route_or_create(route, now, may_create) {
            Slot::Tracked(r) => Some(self.decide_route(&r, now, priority)),
            Slot::Untracked => Some(self.decide_untracked(route, now, priority)),
            Slot::Refused => None,
        }
    }

    /// Feed one telemetry sample of `route` at `now` into the physics.
    ///
    /// A `now` earlier than the route's last update follows the clock-skew rule: no time
    /// passes (nothing heals or ages), the route keeps its later time, and the skew is
    /// counted in [`EngineStats::clock_skews`].
    ///
    /// A report on an untracked route (see [`Engine::decide`]) is dropped and counted in
    /// [`EngineStats::dropped_reports`]; the status returned is a new route's.
    pub fn report(&self, route: &str, telemetry: Telemetry, now: Timestamp) -> RouteStatus {
        self.report_gated(route, telemetry, now, || true).unwrap_or_else(|| self.untracked_status(route))
    }

    /// As [`Engine::report`], with a new route created only if `may_create` says so (as
    /// [`Engine::decide_gated`]): `None` when it said no.
    pub fn report_gated(
        &self,
        route: &str,
        telemetry: Telemetry,
        now: Timestamp,
        may_create: impl FnOnce() -> bool,
    ) -> Option<RouteStatus> {
        if let Some(st) = self.find_by_name(route, |r| self.report_route(r, telemetry, now)) {
            return Some(st);
        }
        match self.route_or_create(route, now, may_create) {
            Slot::Tracked(r) => Some(self.report_route(&r, telemetry, now)),
            Slot::Untracked => {
                self.dropped_reports.fetch_add(1, Relaxed);
                Some(self.untracked_status(route))
            }
            Slot::Refused => None,
        }
    }

    /// Whether `route` is tracked now.
    pub fn contains(&self, route: &str) -> bool {
        self.routes.contains(route)
    }

    /// A decision on no state: admitted ([`Reason::Untracked`]), unless a policy holds the
    /// route's pattern (an untracked route still obeys its policy's hold).
    #[cold]
    fn decide_untracked(&self, route: &str, now: Timestamp, priority: Priority) -> Decision {
        self.untracked.fetch_add(1, Relaxed);
        let (phys, hold) = match check_id(route) {
            Ok(()) => self.override_for(route),
            Err(_) => (self.phys.clone(), Hold::Released),
        };
        let r = phys.cfg.r_base;
        let decision = match hold {
            Hold::Open => Decision::shed(Reason::Held, Mode::Bootstrap, r, Duration::from_secs(1)),
            Hold::Closed => Decision::admit(Reason::Held, Mode::Bootstrap, r),
            Hold::Released | Hold::Shadow => Decision::admit(Reason::Untracked, Mode::Bootstrap, r),
        };
        self.observer.on_event(&Event::Decided { route: UNTRACKED_ROUTE, at: now, priority, decision });
        decision
    }

    /// What an untracked route looks like: a new route of its physics.
    #[cold]
    fn untracked_status(&self, route: &str) -> RouteStatus {
        let phys = if check_id(route).is_ok() { self.physics_for(route) } else { self.phys.clone() };
        let p = Published::new(&phys);
        RouteStatus {
            mode: Mode::Bootstrap,
            resistance: p.resistance,
            scar: p.scar,
            break_point: p.break_point,
            open_until: p.open_until,
        }
    }

    /// Runs `f` on a tracked route, under the table's epoch guard.
    #[inline]
    fn find<R>(&self, route: &str, f: impl FnOnce(&Route) -> R) -> Option<R> {
        self.routes.peek_with(route, |r, ()| f(r))
    }

    /// A handle to `route` (created if unknown) that decides and reports without looking
    /// the route up again. A handle outlives eviction: a route evicted while a handle is
    /// held goes on working on its own, detached from the table.
    /// A full table with nothing to evict is [`EngineError::TableFull`].
    pub fn route(&self, route: &str, now: Timestamp) -> Result<RouteHandle<'_, O>, EngineError> {
        check_id(route)?;
        match self.target(route, now) {
            Target::Tracked(r) => Ok(RouteHandle { engine: self, target: Target::Tracked(r) }),
            Target::Untracked(_) => Err(EngineError::TableFull { route: route.to_owned() }),
        }
    }

    /// A handle on `route` that never fails: an id that is not valid, or a new route when
    /// the table is full, gets an untracked handle, deciding on no state as
    /// [`Engine::decide`] would.
    pub fn handle(&self, route: &str, now: Timestamp) -> RouteHandle<'_, O> {
        RouteHandle { engine: self, target: self.target(route, now) }
    }

    /// As [`Engine::handle`], for an engine behind an `Arc`: the handle owns a reference to
    /// the engine, so that it can be kept across `.await`s and threads (a tower layer holds
    /// one from a request's decision to its report). Allocates nothing on a known route.
    pub fn owned_handle(self: &Arc<Self>, route: &str, now: Timestamp) -> OwnedRouteHandle<O> {
        OwnedRouteHandle { engine: self.clone(), target: self.target(route, now) }
    }

    fn target(&self, route: &str, now: Timestamp) -> Target {
        if let Some(r) = self.find(route, Route::clone) {
            return Target::Tracked(r);
        }
        match self.route_or_create(route, now, || true) {
            Slot::Tracked(r) => Target::Tracked(r),
            Slot::Untracked | Slot::Refused => Target::Untracked(route.into()),
        }
    }

    /// The route, tracked or created; a full table is an error.
    fn tracked_or_full(&self, route: &str, now: Timestamp) -> Result<Route, EngineError> {
        check_id(route)?;
        if let Some(r) = self.find(route, Route::clone) {
            return Ok(r);
        }
        match self.route_or_create(route, now, || true) {
            Slot::Tracked(r) => Ok(r),
            Slot::Untracked | Slot::Refused => Err(EngineError::TableFull { route: route.to_owned() }),
        }
    }

    /// The status of a tracked route.
    pub fn status(&self, route: &str) -> Result<RouteStatus, EngineError> {
        self.find(route, |r| r.cell().status()).ok_or_else(|| unknown(route))
    }

    /// Resistance of `route` as a decision at `now` would see it (scar healed since the
    /// last update). `None` for an unknown or open route.
    pub fn resistance(&self, route: &str, now: Timestamp) -> Option<f64> {
        self.find(route, |r| {
            let cell = r.cell();
            (Mode::from_u8(cell.view.mode.load(Acquire)) != Mode::Open).then(|| resistance_now(cell, now))
        })
        .flatten()
    }

    /// The share of a tracked route's traffic its throttle turns away now, in `[0, 1]`,
    /// before the priority weights (default model; 0 while the throttle is idle, always 0
    /// in the reference model). `None` for an unknown route.
    pub fn throttle(&self, route: &str) -> Option<f64> {
        self.find(route, |r| f64::from(f32::from_bits(r.cell().view.throttle.load(Relaxed))))
    }

    /// The reference model's AutoTuner, one for every route (docs/DESIGN.md §7.1): what it
    /// has learned of resistance. The default model's tuners are per route
    /// ([`Engine::snapshot`]'s `tuner_*`); there this stays empty.
    pub fn shared_tuner(&self) -> TunerStats {
        let t = *self.shared_tuner.lock().unwrap_or_else(PoisonError::into_inner);
        TunerStats { samples: t.samples, mean: t.mean, sd: t.var.max(0.0).sqrt() }
    }

    /// Softmax route selection among `routes` (docs/DESIGN.md §7.1): picks one with probability
    /// proportional to `exp(-beta R)`, skipping open routes (in the default model, only
    /// until their open interval ends: then a pick is what lets the route half-open and
    /// probe). A route the engine has not seen
    /// yet counts as new, with the resistance a new route starts with (the reference's
    /// bootstrap `1.2 R_base`, the default model's `R_base`), so that a router sends it
    /// traffic and it starts to learn. `u` is a uniform random number in `[0, 1)`, passed
    /// in so that selection is testable. Returns `None` only when every route is open.
    pub fn select(&self, routes: &[&str], now: Timestamp, beta: f64, u: f64) -> Option<usize> {
        let new_route = match self.phys.cfg.model {
            Model::Reference => 1.2 * self.phys.cfg.r_base,
            Model::Default => self.phys.cfg.r_base,
        };
        let timed = self.phys.cfg.model == Model::Default;
        let resistance = |r: &&str| {
            self.find(r, |route| {
                let cell = route.cell();
                if Mode::from_u8(cell.view.mode.load(Acquire)) == Mode::Open {
                    let until = cell.view.open_until.load(Relaxed);
                    return (timed && now.as_nanos() >= until).then(|| resistance_now(cell, now));
                }
                Some(resistance_now(cell, now))
            })
            .unwrap_or(Some(new_route))
        };
        softmax_select(routes.iter().map(resistance), beta, u)
    }

    /// Route ids tracked now (allocates; for tools and dumps).
    pub fn route_ids(&self) -> Vec<String> {
        let guard = scc::Guard::new();
        self.routes.iter(&guard).map(|(r, ())| r.name().to_owned()).collect()
    }

    /// One page of the tracked route ids in order: the first `limit` after `after` (from
    /// the first when `None`), sorted. One pass over the table, `O(n log limit)`, allocating
    /// only the page: for listing a large table page by page.
    pub fn route_ids_after(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        let mut page: std::collections::BinaryHeap<String> = std::collections::BinaryHeap::with_capacity(limit + 1);
        if limit == 0 {
            return Vec::new();
        }
        let guard = scc::Guard::new();
        for (route, ()) in self.routes.iter(&guard) {
            let name = route.name();
            if after.is_some_and(|a| name <= a) {
                continue;
            }
            if page.len() < limit {
                page.push(name.to_owned());
            } else if page.peek().is_some_and(|last| name < last.as_str()) {
                page.pop();
                page.push(name.to_owned());
            }
        }
        page.into_sorted_vec()
    }

    /// A snapshot of a route's physics, with every sample reported so far folded in (the
    /// samples waiting for the next step are folded at the route's last update time).
    pub fn snapshot(&self, route: &str) -> Result<PhysicsVector, EngineError> {
        let model = self.phys.cfg.model;
        self.find(route, |r| {
            let cell = r.cell();
            let mut kept = cell.lock();
            if model == Model::Default {
                self.fold(r, &mut kept, Timestamp::from_nanos(cell.view.at.load(Relaxed)), false);
            }
            vector(model, &RouteState::new(&mut kept, cell.published()))
        })
        .ok_or_else(|| unknown(route))
    }

    /// Restores a route's physics from a snapshot (creating the route if needed). Telemetry
    /// smoothing starts afresh; everything the vector carries is taken as is, after
    /// validation.
    pub fn restore(&self, route: &str, v: &PhysicsVector, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        if v.model != self.phys.cfg.model {
            return Err(EngineError::ModelMismatch {
                route: route.to_owned(),
                expected: self.phys.cfg.model,
                found: v.model,
            });
        }
        v.validate().map_err(|source| EngineError::InvalidSnapshot { route: route.to_owned(), source })?;
        let found = self.tracked_or_full(route, now)?;
        let cell = found.cell();
        let phys = cell.phys();
        let c = &phys.cfg;
        cell.modify(phys, |s| {
            // The samples pending were of the state the snapshot replaces.
            cell.take_pending(false);
            s.reset(phys);
            s.k.mode = v.mode;
            s.resistance = v.resistance.clamp(c.r_base, c.r_max);
            s.scar = v.scar.min(c.scar_max);
            // A snapshot comes from elsewhere: every value is brought into the range the physics
            // keeps, so that no later update can overflow from it.
            s.k.set_momentum(v.momentum.min(c.momentum_max));
            match &mut s.k.memory {
                crate::physics::Memory::Reference { prev, .. } => *prev = [v.pressure, v.pressure],
                crate::physics::Memory::Default(m) => {
                    m.pressure = v.pressure.map(|p| p as f32);
                    m.normal = crate::physics::Normal::restored(v.normal_samples, v.normal_mean, v.normal_var);
                    // What was learned counts as learned: the warm-up is not run again.
                    m.born = v.timestamp.saturating_sub(c.normal.warmup);
                }
            }
            s.break_point = v.break_point.clamp(c.r_base, c.r_max);
            s.k.set_recovery(v.recovery.clamp(c.r_base, c.r_max));
            s.k.set_tuner(Tuner {
                samples: v.tuner_samples,
                weight: v.tuner_weight.min(f64::from(u32::MAX)),
                mean: v.tuner_mean.min(c.r_max),
                var: v.tuner_var.min(c.r_max * c.r_max),
            });
            s.k.updates = u32::try_from(v.updates).unwrap_or(u32::MAX);
            s.k.set_trips(v.trips.min(64.0), v.timestamp);
            s.open_until = v.open_until;
            s.last = v.timestamp;
            s.k.seen = true;
        });
        Ok(())
    }

    /// Forgets what a tracked route learned (scar, normal, tuner, mode): it starts again as
    /// new, in bootstrap. A hold stays; the cluster's view of the route is kept.
    pub fn reset(&self, route: &str, now: Timestamp) -> Result<(), EngineError> {
        let found = self.find(route, Route::clone).ok_or_else(|| unknown(route))?;
        let cell = found.cell();
        let phys = cell.phys();
        let ((), before) = cell.modify(phys, |s| {
            cell.take_pending(false);
            s.reset(phys);
            s.last = now;
        });
        cell.view.dirty.store(true, Relaxed);
        if before != Mode::Bootstrap {
            let resistance = load_f(&cell.view.resistance);
            self.observer.on_event(&Event::Transition {
                route,
                at: now,
                from: before,
                to: Mode::Bootstrap,
                resistance,
            });
        }
        Ok(())
    }

    /// Counters of the route table.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            routes: self.tracked.load(Relaxed),
            untracked: self.untracked.load(Relaxed),
            dropped_reports: self.dropped_reports.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            clock_skews: self
                .routes
                .iter(&scc::Guard::new())
                .map(|(r, ())| u64::from(r.cell().lock().skews))
                .sum::<u64>(),
        }
    }
}

/// A route's state as a snapshot.
fn vector(model: Model, s: &RouteState) -> PhysicsVector {
    let (k, normal, tuner) = (&*s.k, s.k.learned().normal, s.k.tuner());
    PhysicsVector {
        model,
        mode: k.mode,
        resistance: s.resistance,
        scar: s.scar,
        momentum: k.momentum(),
        pressure: k.pressure(),
        break_point: s.break_point,
        recovery: k.recovery(),
        tuner_samples: tuner.samples,
        tuner_weight: tuner.weight,
        tuner_mean: tuner.mean,
        tuner_var: tuner.var,
        updates: u64::from(k.updates),
        trips: k.trips().0,
        open_until: s.open_until,
        timestamp: s.last,
        normal_samples: normal.samples,
        normal_mean: f64::from(normal.mean),
        normal_var: f64::from(normal.var),
    }
}

/// What a decision sees: the published resistance, with scar healed to `now` and the
/// cluster's scar blended in.
#[inline]
fn resistance_now(cell: &RouteCell, now: Timestamp) -> f64 {
    let phys = cell.phys();
    let v = &cell.view;
    let (r, scar) = (load_f(&v.resistance), load_f(&v.scar));
    let age = secs_since(now, v.at.load(Relaxed));
    let healed = decayed_resistance(phys, r, scar, age);
    match cell.cluster(phys, now) {
        Some(cluster) => {
            let local = if scar > 0.0 { scar * heal_factor_fast(phys.cfg.scar_decay * age) } else { 0.0 };
            blend(phys, healed, local, Some(cluster))
        }
        None => healed,
    }
}

fn unknown(route: &str) -> EngineError {
    EngineError::UnknownRoute { route: route.to_owned() }
}

fn check_id(route: &str) -> Result<(), EngineError> {
    crate::limits::check_route_id(route).map_err(|e| EngineError::InvalidRouteId { len: e.len })
}

#[cfg(test)]
mod tests {
    use super::route::View;
    use super::*;

    #[test]
    fn the_decision_paths_heal_matches_the_law() {
        for i in 0..1_000 {
            let x = f64::from(i) * 0.001;
            assert!((heal_factor_fast(x) - (-x).exp()).abs() < 5e-7, "{x}");
        }
        assert_eq!(heal_factor_fast(3.0), (-3.0f64).exp());
        assert_eq!(heal(8.0, 0.5, 2.0), 8.0 * (-1.0f64).exp());
    }

    #[test]
    fn per_route_memory_is_bounded() {
        let size = std::mem::size_of::<View>;
        // The route's one-byte lock is in the view's spare bytes.
        assert!(size() <= 104, "View: {}", size());
        // What the physics keeps beside what the view publishes.
        assert!(std::mem::size_of::<Kept>() <= 168, "Kept: {}", std::mem::size_of::<Kept>());
        // With its published view and lock, the whole cell (its id follows it in the same
        // allocation; `tests/alloc.rs` counts the whole).
        // The pending sums of coalesced steps are 32 bytes of it (docs/DESIGN.md §7.2).
        assert!(std::mem::size_of::<RouteCell>() <= 312, "RouteCell: {}", std::mem::size_of::<RouteCell>());
    }
}
