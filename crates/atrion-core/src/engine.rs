//! The engine: many routes at once, shared across threads.
//!
//! Concurrency contract:
//! - [`Engine::decide`] takes no lock. It finds the route in a lock-free map (`scc`'s
//!   `HashIndex`, epoch-protected reads) and reads the route's published view: a handful
//!   of atomics.
//!   In half-open it may take a probe with one atomic add. It never allocates on a route
//!   that exists.
//! - [`Engine::report`] takes the route's own mutex for the length of one physics update
//!   (a few hundred nanoseconds of arithmetic, no I/O, no allocation), then publishes the
//!   view. Reports of different routes never contend; the reference model's shared tuner
//!   is the one exception, as in the reference.
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

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::{ConfigError, Model, PhysicsConfig};
use crate::decision::{Decision, Priority, Reason, softmax_select};
use crate::mode::Mode;
use crate::observer::{Event, PhysicsObserver, SilentObserver};
use crate::pattern::RoutePattern;
use crate::physics::{
    Change, Kept, Physics, Published, RouteState, Tuner, blend, decayed_resistance, heal, heal_factor_fast,
};
use crate::telemetry::Telemetry;
use crate::time::Timestamp;
use crate::vector::{DecodeError, PhysicsVector};

mod policy;
mod table;
pub use policy::RoutePolicy;
use policy::{Override, Overrides};
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
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_routes: 65_536,
            idle_timeout: Duration::from_secs(600),
            pressure_idle: Duration::from_secs(30),
            held_reserve: 1_024,
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
    /// A route id that is empty or longer than 1,024 bytes.
    #[error("invalid route id ({len} bytes): must be 1 to 1024 bytes")]
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

/// What a decision reads: published by `report`, read without a lock. The fields every
/// decision reads come first, 64 bytes together; the half-open and keep-alive bookkeeping
/// follows. Not aligned to a cache line: the padding would cost more memory per route than
/// the line it saves.
#[derive(Debug, Default)]
#[repr(C)]
struct View {
    // The first 64 bytes: what every decision reads.
    mode: AtomicU8,
    /// An operator's hold ([`Hold`] as a byte; 0 when none).
    held: AtomicU8,
    cluster_on: AtomicBool,
    /// Reported since the state layer last collected this route.
    dirty: AtomicBool,
    /// The shed ratio of the proportional answer (f32 bits, as the physics keeps it;
    /// default model).
    throttle: AtomicU32,
    resistance: AtomicU64,
    scar: AtomicU64,
    at: AtomicU64,
    break_point: AtomicU64,
    /// The other nodes' scar for this route (f64 bits) and when it was that value; only
    /// meaningful while `cluster_on`.
    cluster_scar: AtomicU64,
    cluster_at: AtomicU64,
    /// The half-open probe quota.
    quota: AtomicU32,
    /// Sheds turned into admits by a shadow hold (in the padding before the next field;
    /// wraps after 2^32).
    shadowed: AtomicU32,
    // Then open, half-open, keep-alive, throttle sequence and bookkeeping.
    last_seen: AtomicU64,
    /// Decisions that met the throttle: the deterministic dither counts them.
    throttled: AtomicU64,
    open_until: AtomicU64,
    window_start: AtomicU64,
    probes: AtomicU64,
    keepalive_at: AtomicU64,
}

/// Seconds from `then_ns` to `now` (zero if `then` is later), without building a `Duration`.
#[inline]
fn secs_since(now: Timestamp, then_ns: u64) -> f64 {
    now.as_nanos().saturating_sub(then_ns) as f64 * 1e-9
}

fn load_f(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Relaxed))
}

fn store_f(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Relaxed);
}

/// One route: the view decisions read, then its physics behind a short mutex. Its id
/// follows it in the same allocation ([`Route`]).
#[derive(Debug)]
#[repr(C)]
struct RouteCell {
    view: View,
    /// The route's physics: the engine's, or a per-route override's. Points into the
    /// engine's [`PhysicsSet`], which keeps every physics it hands out for as long as the
    /// engine lives; a cell is only used through its engine.
    phys: AtomicPtr<Physics>,
    /// The rest of the route's state: what the view publishes is stored only there.
    state: Mutex<Kept>,
}

impl RouteCell {
    /// A new route's cell, published; `last_seen` in nanoseconds.
    fn new(phys: &Arc<Physics>, last_seen: u64) -> Self {
        let kept = Kept::new(phys);
        let cell = RouteCell {
            view: View::default(),
            phys: AtomicPtr::new(Arc::as_ptr(phys).cast_mut()),
            state: Mutex::new(kept.clone()),
        };
        cell.publish(&kept, &Published::new(phys), phys);
        cell.view.last_seen.store(last_seen, Relaxed);
        cell
    }

    /// The route's physics.
    #[inline]
    fn phys(&self) -> &Physics {
        // SAFETY: the pointer comes from an `Arc<Physics>` that the engine's `PhysicsSet`
        // holds until the engine is dropped, and a cell is only used through its own engine
        // (the engine's methods, a `Handle` holding a borrow or an `Arc` of it; nothing
        // reads the physics when a cell is dropped), so the physics outlives every use.
        unsafe { &*self.phys.load(Acquire) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // The critical section is arithmetic that cannot panic; a poisoned lock still
        // holds a consistent state, so it is used as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The published part of the state, as the view holds it (under the route's lock, the
    /// last values published).
    #[inline]
    fn published(&self) -> Published {
        let v = &self.view;
        Published {
            resistance: load_f(&v.resistance),
            scar: load_f(&v.scar),
            break_point: load_f(&v.break_point),
            last: Timestamp::from_nanos(v.at.load(Relaxed)),
            open_until: Timestamp::from_nanos(v.open_until.load(Relaxed)),
        }
    }

    /// Runs `f` on the route's whole state, under the route's lock.
    fn inspect<R>(&self, f: impl FnOnce(&RouteState) -> R) -> R {
        let mut kept = self.lock();
        f(&RouteState::new(&mut kept, self.published()))
    }

    /// Runs `f` on the route's whole state under the route's lock, then publishes it.
    /// Returns what `f` returned and the mode the view had before.
    #[inline]
    fn modify<R>(&self, phys: &Physics, f: impl FnOnce(&mut RouteState) -> R) -> (R, Mode) {
        let mut kept = self.lock();
        let mut s = RouteState::new(&mut kept, self.published());
        // A decision may have moved the route to half-open on its timer; follow it, so that
        // publishing does not undo it.
        if s.k.mode == Mode::Open && Mode::from_u8(self.view.mode.load(Acquire)) == Mode::HalfOpen {
            s.set_mode(Mode::HalfOpen);
        }
        let out = f(&mut s);
        let published = s.published();
        (out, self.publish(&kept, &published, phys))
    }

    /// Publishes the state for decisions. The mode goes last (release), so a decision that
    /// sees a mode sees the values written with it. Returns the mode the view had before.
    fn publish(&self, k: &Kept, p: &Published, phys: &Physics) -> Mode {
        let v = &self.view;
        store_f(&v.resistance, p.resistance);
        store_f(&v.scar, p.scar);
        v.at.store(p.last.as_nanos(), Relaxed);
        store_f(&v.break_point, p.break_point);
        v.throttle.store(k.throttle().to_bits(), Relaxed);
        v.open_until.store(p.open_until.as_nanos(), Relaxed);
        v.quota.store(k.probe_quota(phys), Relaxed);
        Mode::from_u8(v.mode.swap(k.mode as u8, Release))
    }

    /// The cluster's scar for this route healed to `now`, if other nodes report on it.
    #[inline]
    fn cluster(&self, phys: &Physics, now: Timestamp) -> Option<f64> {
        let v = &self.view;
        if !v.cluster_on.load(Acquire) {
            return None;
        }
        let age = secs_since(now, v.cluster_at.load(Relaxed));
        Some(load_f(&v.cluster_scar) * heal_factor_fast(phys.cfg.scar_decay * age))
    }

    fn touch(&self, now: Timestamp) {
        // Written at most once a second, so that deciding threads do not fight over it.
        let seen = self.view.last_seen.load(Relaxed);
        if now.as_nanos().saturating_sub(seen) > 1_000_000_000 {
            self.view.last_seen.store(now.as_nanos(), Relaxed);
        }
    }

    fn status(&self) -> RouteStatus {
        let v = &self.view;
        RouteStatus {
            mode: Mode::from_u8(v.mode.load(Acquire)),
            resistance: load_f(&v.resistance),
            scar: load_f(&v.scar),
            break_point: load_f(&v.break_point),
            open_until: Timestamp::from_nanos(v.open_until.load(Relaxed)),
        }
    }
}

/// A route: its cell and its id, in one allocation (`triomphe`'s header-and-slice `Arc`,
/// whose count has no weak half). It is the route table's key, hashed and compared by id,
/// so that the id is stored once.
#[derive(Clone)]
struct Route(triomphe::Arc<triomphe::HeaderSlice<RouteCell, str>>);

impl Route {
    fn new(name: &str, phys: &Arc<Physics>, now: Timestamp) -> Self {
        Route(triomphe::Arc::from_header_and_str(RouteCell::new(phys, now.as_nanos()), name))
    }

    #[inline]
    fn name(&self) -> &str {
        &self.0.slice
    }

    #[inline]
    fn cell(&self) -> &RouteCell {
        &self.0.header
    }
}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Route {}

impl std::borrow::Borrow<str> for Route {
    fn borrow(&self) -> &str {
        self.name()
    }
}

/// Every physics the engine has handed to a route, kept until the engine is dropped (cells
/// point into it). Equal configurations share one, so that setting the same per-route
/// config again and again does not grow it.
#[derive(Debug, Default)]
struct PhysicsSet(Mutex<Vec<Arc<Physics>>>);

impl PhysicsSet {
    fn keep(&self, phys: Physics) -> Arc<Physics> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(same) = all.iter().find(|p| p.cfg == phys.cfg) {
            return same.clone();
        }
        let phys = Arc::new(phys);
        all.push(phys.clone());
        phys
    }
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
        if let Some(d) = self.find(route, |r| self.decide_route(r, now, priority)) {
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
        if let Some(st) = self.find(route, |r| self.report_route(r, telemetry, now)) {
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

    /// Softmax route selection among `routes` (SPEC 9.1): picks one with probability
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

    /// A snapshot of a route's physics.
    pub fn snapshot(&self, route: &str) -> Result<PhysicsVector, EngineError> {
        let model = self.phys.cfg.model;
        self.find(route, |r| r.cell().inspect(|s| vector(model, s))).ok_or_else(|| unknown(route))
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
            s.reset(phys);
            s.k.mode = v.mode;
            s.resistance = v.resistance.clamp(c.r_base, c.r_max);
            s.scar = v.scar.min(c.scar_max);
            // A snapshot comes from elsewhere: every value is brought into the range the physics
            // keeps, so that no later update can overflow from it.
            s.k.momentum = v.momentum.min(c.momentum_max);
            s.k.pressure = v.pressure.map(|p| p as f32);
            match &mut s.k.memory {
                crate::physics::Memory::Reference { prev } => *prev = [v.pressure, v.pressure],
                crate::physics::Memory::Default(m) => {
                    m.normal = crate::physics::Normal::restored(v.normal_samples, v.normal_mean, v.normal_var);
                    // What was learned counts as learned: the warm-up is not run again.
                    m.born = v.timestamp.saturating_sub(c.normal.warmup);
                }
            }
            s.break_point = v.break_point.clamp(c.r_base, c.r_max);
            s.k.recovery = v.recovery.clamp(c.r_base, c.r_max);
            s.k.tuner = Tuner {
                samples: v.tuner_samples,
                weight: v.tuner_weight.min(f64::from(u32::MAX)),
                mean: v.tuner_mean.min(c.r_max),
                var: v.tuner_var.min(c.r_max * c.r_max),
            };
            s.k.updates = u32::try_from(v.updates).unwrap_or(u32::MAX);
            s.k.trips = v.trips.min(64.0);
            s.k.trips_at = v.timestamp;
            s.open_until = v.open_until;
            s.last = v.timestamp;
            s.k.seen = true;
        });
        Ok(())
    }

    /// Holds `route` open (every request shed with [`Reason::Held`]), closed (every request
    /// admitted), or releases it to its physics. The route is created if unknown; telemetry
    /// goes on being learned while it is held, and a held route is never evicted.
    ///
    /// A hold always finds room: on a full table, idle routes are evicted at once, then the
    /// route takes a place of the reserve ([`EngineLimits::held_reserve`]), and when that is
    /// used up too, the least valuable route that no operator holds is evicted for it.
    /// [`EngineError::TableFull`] only when every route is held.
    pub fn hold(&self, route: &str, hold: Hold, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        let found = match self.find(route, Route::clone) {
            Some(r) => r,
            None => match self.route_or_create(route, now, || true) {
                Slot::Tracked(r) => r,
                // Nothing to release on a route that is not tracked: no room is made for it.
                Slot::Untracked | Slot::Refused if hold == Hold::Released => return Ok(()),
                Slot::Untracked | Slot::Refused => self.room_for_hold(route, now)?,
            },
        };
        let view = &found.cell().view;
        view.held.store(hold as u8, Relaxed);
        // Collected by the next pulse, which the hook may call at once: a hold is rare and
        // must outlive a crash.
        view.dirty.store(true, Release);
        let hook = self.hold_hook.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(hook) = hook {
            hook();
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the hook told after every [`Engine::hold`], once the
    /// hold is in place and the route marked for [`Engine::take_dirty`]. It must not block.
    pub fn on_hold(&self, hook: Option<HoldHook>) {
        *self.hold_hook.lock().unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// The operator's hold on a tracked route.
    pub fn held(&self, route: &str) -> Result<Hold, EngineError> {
        self.find(route, |r| Hold::from_u8(r.cell().view.held.load(Relaxed))).ok_or_else(|| unknown(route))
    }

    /// How many of a tracked route's decisions a shadow hold turned from shed into admit.
    pub fn shadowed(&self, route: &str) -> Result<u32, EngineError> {
        self.find(route, |r| r.cell().view.shadowed.load(Relaxed)).ok_or_else(|| unknown(route))
    }

    /// Forgets what a tracked route learned (scar, normal, tuner, mode): it starts again as
    /// new, in bootstrap. A hold stays; the cluster's view of the route is kept.
    pub fn reset(&self, route: &str, now: Timestamp) -> Result<(), EngineError> {
        let found = self.find(route, Route::clone).ok_or_else(|| unknown(route))?;
        let cell = found.cell();
        let phys = cell.phys();
        let ((), before) = cell.modify(phys, |s| {
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

    /// Calls `f` for every route reported since the last call, with its local contribution
    /// (what its own telemetry produced: never the cluster's), and marks it clean. For the
    /// state layer's pulse; takes each dirty route's lock briefly.
    pub fn take_dirty(&self, mut f: impl FnMut(&str, LocalContribution)) {
        let guard = scc::Guard::new();
        let mut overrides = None;
        for (route, ()) in self.routes.iter(&guard) {
            let cell = route.cell();
            if cell.view.dirty.swap(false, AcqRel) {
                let scar_decay = cell.phys().cfg.scar_decay;
                let held = Hold::from_u8(cell.view.held.load(Relaxed));
                let hold = if held == Hold::Released {
                    held
                } else {
                    // Read once per call, and only when a held route is dirty.
                    let list =
                        overrides.get_or_insert_with(|| self.overrides.read().unwrap_or_else(PoisonError::into_inner));
                    let given = list.find(route.name()).map_or(Hold::Released, |o| o.hold);
                    if held == given { Hold::Released } else { held }
                };
                // The view's mode: a decision may have half-opened the route on its timer.
                let mode = Mode::from_u8(cell.view.mode.load(Acquire));
                let contribution = cell.inspect(|s| LocalContribution {
                    scar: s.scar,
                    momentum: s.k.momentum,
                    at: s.last,
                    scar_decay,
                    mode,
                    open_until: s.open_until,
                    hold,
                });
                f(route.name(), contribution);
            }
        }
    }

    /// Brings back an open interval from a previous life of this node (its warm start):
    /// `route` is open for `left` more, at most its `open_max`, or half-open with its first
    /// probe quota when `left` is zero; its scout and its re-trip backoff count from `now`.
    /// A route that was open must never come back in bootstrap, admitting everything onto a
    /// dependency that may still be failing.
    pub fn resume_open(&self, route: &str, left: Duration, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        let found = match self.route_or_create(route, now, || true) {
            Slot::Tracked(r) => r,
            // A full table at the warm start: the route is decided untracked, on no state.
            Slot::Untracked | Slot::Refused => return Err(EngineError::TableFull { route: route.to_owned() }),
        };
        let cell = found.cell();
        let phys = cell.phys();
        let h = &phys.cfg.half_open;
        let (to, before) = cell.modify(phys, |s| {
            if !s.k.seen || now > s.last {
                s.last = now;
                s.k.seen = true;
            }
            s.k.trips = s.k.trips.max(1.0);
            s.k.trips_at = now;
            if left.is_zero() {
                s.set_mode(Mode::HalfOpen);
                Mode::HalfOpen
            } else {
                s.open_until = now.saturating_add(left.min(h.open_max));
                s.set_mode(Mode::Open);
                Mode::Open
            }
        });
        let v = &cell.view;
        v.keepalive_at.store(now.as_nanos(), Relaxed);
        v.window_start.store(now.as_nanos(), Relaxed);
        v.probes.store(0, Relaxed);
        if before != to {
            let resistance = load_f(&v.resistance);
            self.observer.on_event(&Event::Transition { route, at: now, from: before, to, resistance });
        }
        Ok(())
    }

    /// Sets the other nodes' scar for `route` as of `now` (`None`: no other node reports on
    /// it), creating the route if unknown. Decisions blend it with the local scar by
    /// [`PhysicsConfig::gamma`], healing it at the local rate.
    /// Clearing the view of a route that is not tracked does nothing; setting it on a full
    /// table is [`EngineError::TableFull`].
    pub fn set_cluster(&self, route: &str, scar: Option<f64>, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        if scar.is_none() && !self.contains(route) {
            return Ok(());
        }
        let found = self.tracked_or_full(route, now)?;
        let cell = found.cell();
        let v = &cell.view;
        match scar {
            Some(s) if s.is_finite() => {
                store_f(&v.cluster_scar, s.clamp(0.0, cell.phys().cfg.scar_max));
                v.cluster_at.store(now.as_nanos(), Relaxed);
                v.cluster_on.store(true, Release);
            }
            _ => v.cluster_on.store(false, Release),
        }
        Ok(())
    }

    /// Merges the other nodes' contributions to `route` (SPEC 4): each `(scar, age_s)` healed
    /// by the route's own law ([`heal`]) to `now`, and the largest becomes its cluster view
    /// ([`Engine::set_cluster`]); none clears the view. Cluster sync only moves bytes: the
    /// physics of the merge is here.
    pub fn merge_cluster(
        &self,
        route: &str,
        contributions: impl IntoIterator<Item = (f64, f64)>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        check_id(route)?;
        let lambda = self.physics_for(route).cfg.scar_decay;
        let merged = contributions
            .into_iter()
            .filter(|(scar, age)| scar.is_finite() && *scar >= 0.0 && age.is_finite())
            .map(|(scar, age)| heal(scar, lambda, age.max(0.0)))
            .fold(None, |acc: Option<f64>, s| Some(acc.map_or(s, |a| a.max(s))));
        self.set_cluster(route, merged, now)
    }

    /// The other nodes' scar for `route` as decisions see it at `now` (healed), if any.
    pub fn cluster_scar(&self, route: &str, now: Timestamp) -> Option<f64> {
        self.find(route, |r| r.cell().cluster(r.cell().phys(), now)).flatten()
    }

    /// Seeds `route`'s local scar from a previous life of this node (warm start): the scar
    /// becomes at least `scar`, healed from `at` to `now`.
    pub fn warm_start(&self, route: &str, scar: f64, at: Timestamp, now: Timestamp) -> Result<(), EngineError> {
        check_id(route)?;
        if !scar.is_finite() || scar < 0.0 {
            return Ok(());
        }
        let found = self.tracked_or_full(route, now)?;
        let cell = found.cell();
        let phys = cell.phys();
        let healed = heal(scar, phys.cfg.scar_decay, now.saturating_since(at).as_secs_f64());
        cell.modify(phys, |s| {
            if healed > s.scar {
                let c = &phys.cfg;
                s.resistance = (s.resistance + (healed.min(c.scar_max) - s.scar)).clamp(c.r_base, c.r_max);
                s.scar = healed.min(c.scar_max);
                if !s.k.seen || now > s.last {
                    s.last = now;
                    s.k.seen = true;
                }
            }
        });
        Ok(())
    }

    #[inline]
    fn decide_route(&self, route: &Route, now: Timestamp, priority: Priority) -> Decision {
        let cell = route.cell();
        cell.touch(now);
        let decision = match (Hold::from_u8(cell.view.held.load(Relaxed)), self.phys.cfg.model) {
            (Hold::Released, Model::Reference) => decide_reference(cell, now, priority),
            (Hold::Released, Model::Default) => self.decide_default(route, now, priority),
            (Hold::Shadow, model) => {
                let d = match model {
                    Model::Reference => decide_reference(cell, now, priority),
                    Model::Default => self.decide_default(route, now, priority),
                };
                if d.is_admitted() {
                    d
                } else {
                    cell.view.shadowed.fetch_add(1, Relaxed);
                    Decision::admit(Reason::Shadow, d.mode, d.resistance)
                }
            }
            (hold, _) => held_decision(cell, hold),
        };
        self.observer.on_event(&Event::Decided { route: route.name(), at: now, priority, decision });
        decision
    }

    fn decide_default(&self, route: &Route, now: Timestamp, priority: Priority) -> Decision {
        let cell = route.cell();
        let c = &cell.phys().cfg;
        let v = &cell.view;
        let mut mode = Mode::from_u8(v.mode.load(Acquire));
        let r = load_f(&v.resistance);
        if mode == Mode::Open {
            let until = Timestamp::from_nanos(v.open_until.load(Relaxed));
            if now < until {
                // One scout per interval, so that recovery is seen before the timer ends.
                if take_slot(&v.keepalive_at, now, c.half_open.scout_interval) {
                    return Decision::admit(Reason::Probe, mode, r);
                }
                return Decision::shed(Reason::Open, mode, r, until.saturating_since(now));
            }
            // The open interval is over: half-open, whether or not telemetry arrives.
            if v.mode.compare_exchange(Mode::Open as u8, Mode::HalfOpen as u8, AcqRel, Acquire).is_ok() {
                v.window_start.store(now.as_nanos(), Relaxed);
                v.probes.store(0, Relaxed);
                v.quota.store(c.half_open.probe_min, Relaxed);
                self.observer.on_event(&Event::Transition {
                    route: route.name(),
                    at: now,
                    from: Mode::Open,
                    to: Mode::HalfOpen,
                    resistance: r,
                });
            }
            mode = Mode::HalfOpen;
        }
        if mode == Mode::HalfOpen {
            let window = c.half_open.probe_window;
            if take_slot(&v.window_start, now, window) {
                v.probes.store(0, Relaxed);
            }
            if v.probes.fetch_add(1, Relaxed) < u64::from(v.quota.load(Relaxed)) {
                return Decision::admit(Reason::Probe, mode, r);
            }
            let ends = Timestamp::from_nanos(v.window_start.load(Relaxed)).saturating_add(window);
            return Decision::shed(
                Reason::ProbeQuota,
                mode,
                r,
                ends.saturating_since(now).max(Duration::from_millis(1)),
            );
        }
        let r_now = resistance_now(cell, now);
        let base = if mode == Mode::Bootstrap { Reason::Bootstrap } else { Reason::Healthy };
        let fraction = match priority {
            Priority::Critical => return Decision::admit(base, mode, r_now),
            Priority::High => c.priority.high,
            Priority::Normal => c.priority.normal,
            Priority::Low => c.priority.low,
            Priority::Bulk => c.priority.bulk,
        };
        let threshold = c.r_base + fraction * (load_f(&v.break_point) - c.r_base);
        if r_now <= threshold {
            let ratio = f64::from(f32::from_bits(v.throttle.load(Relaxed))) * fraction_weight(priority);
            if ratio <= 0.0 || dither_admits(&v.throttled, ratio) {
                return Decision::admit(base, mode, r_now);
            }
            return Decision::shed(Reason::Throttled, mode, r_now, c.keepalive);
        }
        // Over threshold. One request per keep-alive interval still goes through, so that
        // a route shed for lack of telemetry can learn that it has recovered.
        if take_slot(&v.keepalive_at, now, c.keepalive) {
            return Decision::admit(Reason::Keepalive, mode, r_now);
        }
        // The hint: how long until scar has healed enough to bring R under the threshold.
        let excess = r_now - threshold;
        let (scar, age) = (load_f(&v.scar), secs_since(now, v.at.load(Relaxed)));
        let heal_secs = if scar > excess && excess > 0.0 {
            let remaining = heal(scar, c.scar_decay, age);
            (remaining / (remaining - excess).max(f64::MIN_POSITIVE)).ln() / c.scar_decay
        } else {
            c.keepalive.as_secs_f64()
        };
        // `min` then `max`, not `clamp`: `open_max` may be under the 1 ms floor of a hint.
        let retry = Duration::try_from_secs_f64(heal_secs)
            .unwrap_or(c.keepalive)
            .min(c.half_open.open_max)
            .max(Duration::from_millis(1));
        Decision::shed(Reason::Overloaded, mode, r_now, retry)
    }

    #[inline(never)]
    fn report_route(&self, route: &Route, telemetry: Telemetry, now: Timestamp) -> RouteStatus {
        let cell = route.cell();
        cell.touch(now);
        let phys = cell.phys();
        let ((change, update), before_view) = cell.modify(phys, |s| {
            if s.k.seen && now < s.last {
                s.k.skews = s.k.skews.saturating_add(1);
            }
            let cluster = cell.cluster(phys, now);
            let change = match phys.cfg.model {
                Model::Reference => {
                    let mut shared = self.shared_tuner.lock().unwrap_or_else(PoisonError::into_inner);
                    s.update(phys, telemetry.channels(), now, Some(&mut shared), cluster)
                }
                Model::Default => s.update(phys, telemetry.channels(), now, None, cluster),
            };
            if change.is_some_and(|c| c.to == Mode::Open) {
                cell.view.keepalive_at.store(now.as_nanos(), Relaxed);
            }
            if change.is_some_and(|c| c.to == Mode::HalfOpen) {
                cell.view.window_start.store(now.as_nanos(), Relaxed);
                cell.view.probes.store(0, Relaxed);
            }
            (change, (s.k.mode, s.resistance, s.scar, s.k.momentum))
        });
        cell.view.dirty.store(true, Relaxed);
        let (mode, resistance, scar, momentum) = update;
        self.observer.on_event(&Event::Update { route: route.name(), at: now, mode, resistance, scar, momentum });
        if let Some(Change { from, to }) = change {
            // Suppress the event a racing decision already emitted for the same timer.
            if !(to == Mode::HalfOpen && before_view == Mode::HalfOpen) {
                self.observer.on_event(&Event::Transition { route: route.name(), at: now, from, to, resistance });
            }
        }
        cell.status()
    }
}

/// An operator's hold on a route ([`Engine::hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Hold {
    /// No hold: the physics decides.
    #[default]
    Released = 0,
    /// Every request is shed.
    Open = 1,
    /// Every request is admitted.
    Closed = 2,
    /// Shadow: the physics decides and its decision is recorded, but nothing is shed (a
    /// shed becomes an admit with [`Reason::Shadow`], counted by [`Engine::shadowed`]): the
    /// safe way to roll Atrion out on a route.
    Shadow = 3,
}

impl Hold {
    fn from_u8(v: u8) -> Hold {
        match v {
            1 => Hold::Open,
            2 => Hold::Closed,
            3 => Hold::Shadow,
            _ => Hold::Released,
        }
    }
}

/// Reference: shed while open; shed softly above `soft_limit * break`; otherwise admit
/// when the priority's voltage exceeds R. The reference gives no retry hint; ours is
/// `half_open.open_base`.
fn decide_reference(cell: &RouteCell, now: Timestamp, priority: Priority) -> Decision {
    let phys = cell.phys();
    let c = &phys.cfg;
    let v = &cell.view;
    let mode = Mode::from_u8(v.mode.load(Acquire));
    let r = blend(phys, load_f(&v.resistance), load_f(&v.scar), cell.cluster(phys, now));
    if mode == Mode::Open {
        return Decision::shed(Reason::Open, mode, r, c.half_open.open_base);
    }
    if r > c.soft_limit * load_f(&v.break_point) {
        return Decision::shed(Reason::SoftLimit, mode, r, c.half_open.open_base);
    }
    if priority.voltage() > r {
        let reason = if mode == Mode::Bootstrap { Reason::Bootstrap } else { Reason::Healthy };
        return Decision::admit(reason, mode, r);
    }
    Decision::shed(Reason::Overloaded, mode, r, c.half_open.open_base)
}

/// A route's state as a snapshot.
fn vector(model: Model, s: &RouteState) -> PhysicsVector {
    let (k, normal) = (&*s.k, s.k.learned().normal);
    PhysicsVector {
        model,
        mode: k.mode,
        resistance: s.resistance,
        scar: s.scar,
        momentum: k.momentum,
        pressure: k.pressure.map(f64::from),
        break_point: s.break_point,
        recovery: k.recovery,
        tuner_samples: k.tuner.samples,
        tuner_weight: k.tuner.weight,
        tuner_mean: k.tuner.mean,
        tuner_var: k.tuner.var,
        updates: u64::from(k.updates),
        trips: k.trips,
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

/// The decision on a held route: shed (retry after a second) or admit, at the route's
/// published resistance and mode.
#[cold]
fn held_decision(cell: &RouteCell, hold: Hold) -> Decision {
    let mode = Mode::from_u8(cell.view.mode.load(Acquire));
    let r = load_f(&cell.view.resistance);
    match hold {
        Hold::Open => Decision::shed(Reason::Held, mode, r, Duration::from_secs(1)),
        _ => Decision::admit(Reason::Held, mode, r),
    }
}

/// Claims the slot `at` (a timestamp in nanoseconds) when `every` has passed since it was
/// last claimed: one caller wins the CAS, the others see it taken. Behind the keep-alive, the
/// open route's scout and the half-open probe window.
#[inline]
fn take_slot(at: &AtomicU64, now: Timestamp, every: Duration) -> bool {
    let last = at.load(Relaxed);
    now.as_nanos().saturating_sub(last) >= every.as_nanos() as u64
        && at.compare_exchange(last, now.as_nanos(), Relaxed, Relaxed).is_ok()
}

/// How much of the route's throttle a priority takes: bulk twice, low one and a half,
/// normal all of it, high half (critical never reaches the throttle).
#[inline]
fn fraction_weight(priority: Priority) -> f64 {
    match priority {
        Priority::Critical => 0.0,
        Priority::High => 0.5,
        Priority::Normal => 1.0,
        Priority::Low => 1.5,
        Priority::Bulk => 2.0,
    }
}

/// Sheds `ratio` of the calls deterministically: the `n`-th call is admitted when
/// `floor((n + 1) a) > floor(n a)` with `a = 1 - ratio`, which spreads the admitted calls
/// evenly (one `fetch_add`, no randomness, no lock).
#[inline]
fn dither_admits(counter: &AtomicU64, ratio: f64) -> bool {
    let a = (1.0 - ratio).clamp(0.0, 1.0);
    let n = counter.fetch_add(1, Relaxed) as f64;
    ((n + 1.0) * a).floor() > (n * a).floor()
}

/// The longest route id, in bytes (a route id is 1 to this many bytes).
pub const MAX_ROUTE_ID: usize = 1024;

fn check_id(route: &str) -> Result<(), EngineError> {
    if route.is_empty() || route.len() > MAX_ROUTE_ID {
        return Err(EngineError::InvalidRouteId { len: route.len() });
    }
    Ok(())
}

/// A route resolved once, for callers that decide on the same route many times: decides
/// and reports without looking the route up again. `E` is how it holds its engine: a borrow
/// ([`RouteHandle`], from [`Engine::route`] and [`Engine::handle`]) or an `Arc`
/// ([`OwnedRouteHandle`], from [`Engine::owned_handle`], to keep across `.await`s).
pub struct Handle<E> {
    engine: E,
    target: Target,
}

/// What a handle decides on.
enum Target {
    /// A route of the table (or one evicted since: it goes on, detached).
    Tracked(Route),
    /// No room when the handle was made: decided on no state, reports dropped.
    Untracked(Box<str>),
}

/// A handle borrowing its engine.
pub type RouteHandle<'e, O> = Handle<&'e Engine<O>>;

/// A handle holding its engine.
pub type OwnedRouteHandle<O> = Handle<Arc<Engine<O>>>;

impl<E: std::ops::Deref<Target = Engine<O>>, O: PhysicsObserver> Handle<E> {
    /// The route id.
    pub fn id(&self) -> &str {
        match &self.target {
            Target::Tracked(r) => r.name(),
            Target::Untracked(id) => id,
        }
    }

    /// Whether the handle decides on a tracked route (false: untracked, on no state).
    pub fn is_tracked(&self) -> bool {
        matches!(self.target, Target::Tracked(_))
    }

    /// As [`Engine::decide`], without the lookup.
    #[inline]
    pub fn decide(&self, now: Timestamp, priority: Priority) -> Decision {
        match &self.target {
            Target::Tracked(r) => self.engine.decide_route(r, now, priority),
            Target::Untracked(id) => self.engine.decide_untracked(id, now, priority),
        }
    }

    /// As [`Engine::report`], without the lookup.
    pub fn report(&self, telemetry: Telemetry, now: Timestamp) -> RouteStatus {
        match &self.target {
            Target::Tracked(r) => self.engine.report_route(r, telemetry, now),
            Target::Untracked(id) => {
                self.engine.dropped_reports.fetch_add(1, Relaxed);
                self.engine.untracked_status(id)
            }
        }
    }

    /// The route's status.
    pub fn status(&self) -> RouteStatus {
        match &self.target {
            Target::Tracked(r) => r.cell().status(),
            Target::Untracked(id) => self.engine.untracked_status(id),
        }
    }
}

impl<E> std::fmt::Debug for Handle<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id: &str = match &self.target {
            Target::Tracked(r) => r.name(),
            Target::Untracked(id) => id,
        };
        f.debug_tuple("Handle").field(&id).finish()
    }
}

#[cfg(test)]
mod tests {
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
        assert!(size() <= 112, "View: {}", size());
        // What the physics keeps beside what the view publishes.
        assert!(std::mem::size_of::<Kept>() <= 200, "Kept: {}", std::mem::size_of::<Kept>());
        // With its published view and lock, the whole cell (its id follows it in the same
        // allocation; `tests/alloc.rs` counts the whole).
        assert!(std::mem::size_of::<RouteCell>() <= 328, "RouteCell: {}", std::mem::size_of::<RouteCell>());
    }
}
