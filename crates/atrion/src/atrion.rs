//! `Atrion`: the engine, a clock and (optionally) a cluster, behind one handle.

use std::sync::Arc;
use std::time::Duration;

use atrion_core::{
    ConfigError, Decision, Engine, EngineError, EngineLimits, LeaseOptions, LeaseStart, Model, OwnedRouteHandle,
    PhysicsConfig, PhysicsObserver, Priority, ProfileConfig, RouteHandle, RouteStatus, SilentObserver, Telemetry,
    TelemetryError, Timestamp,
};
use atrion_state::{Clock, CounterClock, InMemoryStore, StateStore, StoreError};
use atrion_sync::{ClusterKeys, Contribution, NodeInfo, StateManager, SyncConfig, SyncStats};

use crate::now::Now;
use crate::task::{Lease, Sweeper, TaskError};

/// What can go wrong building or connecting an [`Atrion`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtrionError {
    /// The physics or engine configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state store failed (at connect: the cluster view could not be loaded).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state service's configuration is invalid.
    #[error("state service: {0}")]
    Service(String),
    /// Connecting needs a tokio runtime.
    #[error("Atrion::connect must be called from within a tokio runtime")]
    NoRuntime,
    /// A per-route configuration was refused (an invalid pattern, a config of the other
    /// model).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Builds an [`Atrion`]. Every setting has a default: `Atrion::builder().build()` is the
/// embedded default (default model, in-memory store, this process alone).
pub struct AtrionBuilder<O = SilentObserver> {
    config: PhysicsConfig,
    limits: EngineLimits,
    store: Option<Arc<dyn StateStore>>,
    sync: SyncConfig,
    observer: O,
    routes: Vec<(String, PhysicsConfig)>,
    clock: Option<(Arc<dyn Clock>, Now)>,
}

impl Default for AtrionBuilder<SilentObserver> {
    fn default() -> Self {
        AtrionBuilder {
            config: PhysicsConfig::default(),
            limits: EngineLimits::default(),
            store: None,
            sync: SyncConfig::default(),
            observer: SilentObserver,
            routes: Vec::new(),
            clock: None,
        }
    }
}

impl<O: PhysicsObserver + 'static> AtrionBuilder<O> {
    /// The physics model, with its default constants (replaces any config set before).
    pub fn model(mut self, model: Model) -> Self {
        self.config = PhysicsConfig::for_model(model);
        self
    }

    /// The physics constants (validated at `build`).
    pub fn config(mut self, config: PhysicsConfig) -> Self {
        self.config = config;
        self
    }

    /// Limits of the route table.
    pub fn limits(mut self, limits: EngineLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The state store that shares scar tissue with other nodes (default: in memory, this
    /// process only).
    pub fn store(mut self, store: impl StateStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A shared state store.
    pub fn store_arc(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// This node's id in the cluster.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.sync.node_id = id.into();
        self
    }

    /// The cluster's key namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.sync.namespace = namespace.into();
        self
    }

    /// Weight of the cluster's scar (`S = g S_cluster + (1 - g) S_local`).
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.config.gamma = gamma;
        self
    }

    /// How often state is pushed and merged.
    pub fn pulse(mut self, every: Duration) -> Self {
        self.sync.pulse = every;
        self
    }

    /// All sync settings at once.
    pub fn sync(mut self, sync: SyncConfig) -> Self {
        self.sync = sync;
        self
    }

    /// The observer of engine events (replaces any set before).
    pub fn observer<P: PhysicsObserver + 'static>(self, observer: P) -> AtrionBuilder<P> {
        AtrionBuilder {
            config: self.config,
            limits: self.limits,
            store: self.store,
            sync: self.sync,
            observer,
            routes: self.routes,
            clock: self.clock,
        }
    }

    /// The clock of decisions, of the guard's and the layers' latencies, and of the cluster
    /// sync (one clock for all of them). Default: a [`CounterClock`] (the system's time,
    /// its monotonic part read from the processor's counter in a few nanoseconds). Tests
    /// pass a [`atrion_state::TokioClock`] to run on tokio's paused time. The default
    /// in-memory store keeps its TTLs on it too.
    ///
    /// A [`CounterClock`] or an [`atrion_state::SystemClock`] is read directly on the
    /// decision path; any other clock through the [`Clock`] trait (a virtual call).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Now::of(clock));
        self
    }

    /// The physics of the routes `pattern` matches: an exact route id, or a prefix ending in
    /// `*` (`"GET /reports/*"`). Routes need none; use it for what you know of a route (a
    /// latency objective: `config.normal.slo_ms`, a throttle off). Checked at
    /// [`AtrionBuilder::build`]; see [`Engine::set_route_config`].
    pub fn route_config(mut self, pattern: impl Into<String>, config: PhysicsConfig) -> Self {
        self.routes.push((pattern.into(), config));
        self
    }

    /// Validates everything and builds. Call [`Atrion::connect`] to join the cluster.
    pub fn build(self) -> Result<Atrion<O>, AtrionError> {
        self.sync.validate()?;
        let default_priority = Priority::Normal;
        let neutral_saturation = self.config.baseline.saturation;
        let engine = Arc::new(Engine::with_observer(self.config, self.limits, self.observer)?);
        for (pattern, config) in self.routes {
            engine.set_route_config(&pattern, Some(config))?;
        }
        let (clock, now) = self.clock.unwrap_or_else(|| Now::of(CounterClock::new()));
        Ok(Atrion {
            engine,
            store: self.store.unwrap_or_else(|| Arc::new(InMemoryStore::with_clock(clock.clone()))),
            clock,
            now,
            sync: self.sync,
            manager: tokio::sync::Mutex::new(None),
            sweeper: std::sync::Mutex::new(None),
            default_priority,
            neutral_saturation,
        })
    }
}

/// Atrion: per-route admission control, optionally shared across a cluster.
///
/// Decisions are made on local state in nanoseconds and never wait on the store; after
/// [`Atrion::connect`], a background pulse shares scar tissue through the store.
///
/// ```
/// use std::time::Duration;
/// use atrion::{Atrion, Priority};
///
/// let atrion = Atrion::builder().build()?;
/// if let Ok(guard) = atrion.enter("GET /users", Priority::Normal) {
///     // ... handle the request; the guard reports latency and outcome when dropped ...
///     drop(guard);
/// }
/// # Ok::<(), atrion::AtrionError>(())
/// ```
pub struct Atrion<O: PhysicsObserver + 'static = SilentObserver> {
    engine: Arc<Engine<O>>,
    clock: Arc<dyn Clock>,
    /// `clock`, read without the virtual call when it is a known one.
    now: Now,
    store: Arc<dyn StateStore>,
    sync: SyncConfig,
    manager: tokio::sync::Mutex<Option<StateManager<O>>>,
    /// The lease sweeper, beside the pulse (from `connect` to `shutdown`).
    sweeper: std::sync::Mutex<Option<Sweeper>>,
    default_priority: Priority,
    neutral_saturation: f64,
}

impl<O: PhysicsObserver + 'static> std::fmt::Debug for Atrion<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Atrion").field("engine", &self.engine).field("node", &self.sync.node_id).finish()
    }
}

impl Atrion<SilentObserver> {
    /// A builder with every default.
    pub fn builder() -> AtrionBuilder<SilentObserver> {
        AtrionBuilder::default()
    }
}

impl<O: PhysicsObserver + 'static> Atrion<O> {
    /// Admit or shed a request on `route` now.
    #[inline]
    pub fn decide(&self, route: &str, priority: Priority) -> Decision {
        self.engine.decide(route, self.now.now(), priority)
    }

    /// Reports how a request on `route` went. `saturation` defaults to the neutral baseline.
    pub fn report(
        &self,
        route: &str,
        latency: Duration,
        ok: bool,
        saturation: Option<f64>,
    ) -> Result<RouteStatus, TelemetryError> {
        let t = self.telemetry(latency, ok, saturation)?;
        Ok(self.engine.report(route, t, self.now.now()))
    }

    /// The telemetry of one request: its latency, its outcome, and `saturation` (the
    /// neutral baseline when not given, [`Atrion::neutral_saturation`]).
    pub fn telemetry(&self, latency: Duration, ok: bool, saturation: Option<f64>) -> Result<Telemetry, TelemetryError> {
        Telemetry::from_duration(latency, ok, saturation.unwrap_or(self.neutral_saturation))
    }

    /// The saturation reported when a caller does not measure it: the model's baseline, so
    /// that it adds no pressure.
    pub fn neutral_saturation(&self) -> f64 {
        self.neutral_saturation
    }

    /// Admits a request and returns a guard that reports its latency and outcome when
    /// dropped (a failure if dropped while panicking or after [`Guard::fail`]); or the
    /// shedding decision.
    ///
    /// Allocates nothing: the guard holds the route's handle, not a copy of its name.
    pub fn enter(&self, route: &str, priority: Priority) -> Result<Guard<'_, O>, Decision> {
        let now = self.now.now();
        let handle = self.engine.handle(route, now);
        let decision = handle.decide(now, priority);
        if !decision.is_admitted() {
            return Err(decision);
        }
        Ok(Guard { atrion: self, handle, started: now, failed: false, saturation: None })
    }

    /// The default priority of requests that do not say.
    pub fn default_priority(&self) -> Priority {
        self.default_priority
    }

    /// Joins the cluster: loads what it knows (warm start), then starts the pulse. Calling it
    /// again does nothing. Without a store configured this shares nothing, but costs little.
    pub async fn connect(&self) -> Result<(), AtrionError> {
        tokio::runtime::Handle::try_current().map_err(|_| AtrionError::NoRuntime)?;
        let mut manager = self.manager.lock().await;
        if manager.is_none() {
            let clock = self.clock.clone();
            *manager =
                Some(StateManager::start(self.engine.clone(), self.store.clone(), self.sync.clone(), clock).await?);
        }
        let mut sweeper = self.sweeper.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sweeper.is_none() {
            *sweeper = Some(Sweeper::start(self.engine.clone(), self.now.clone()));
        }
        Ok(())
    }

    /// Pushes what this node learned, leaves the cluster and stops the pulse and the lease
    /// sweeper. Live task leases stay live (their holders may go on); they are swept on
    /// calls again ([`Atrion::sweep_tasks`]). [`Engine::abort_leases`] aborts them all.
    pub async fn shutdown(&self) {
        let sweeper = self.sweeper.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(s) = sweeper {
            s.stop().await;
        }
        if let Some(m) = self.manager.lock().await.take() {
            m.shutdown().await;
        }
    }

    /// Starts a long-running task on `route` (docs/DESIGN.md §2, task leases): admitted
    /// like a request at `options.priority` ([`TaskError::Shed`] carries the decision),
    /// then counted in [`Atrion::active_tasks`] until the [`Lease`] completes, is released
    /// or dropped (cancelled: nothing reported), or is aborted for running past its longest
    /// duration or missing its heartbeats (its abort handle fired, a failure reported).
    ///
    /// The profile is the options', else the route's ([`Atrion::set_route_profile`]), else
    /// the standard one. Heavy and extreme work needs an abort handle
    /// ([`LeaseOptions::abort`]): without one, [`atrion_core::LeaseError::AbortRequired`].
    /// The module [`crate::task`] says when expiry is noticed.
    pub fn start_task(&self, route: &str, options: LeaseOptions) -> Result<Lease<O>, TaskError> {
        match self.engine.start_lease(route, self.now.now(), options)? {
            LeaseStart::Granted(grant) => {
                self.wake_task_sweeper();
                Ok(Lease::new(self.engine.clone(), self.now.clone(), grant, route))
            }
            LeaseStart::Shed(decision) => Err(TaskError::Shed(decision)),
        }
    }

    /// Live task leases on `route` (overdue ones swept first): its work in flight. With a
    /// known capacity, `active_tasks / capacity` is the route's saturation, which leases
    /// report when their profile sets [`ProfileConfig::capacity`].
    pub fn active_tasks(&self, route: &str) -> u32 {
        self.engine.sweep_leases(self.now.now());
        self.engine.active_leases(route)
    }

    /// Tells the sweeper (after [`Atrion::connect`]) that a lease was started on the engine
    /// directly ([`Engine::start_lease_gated`], as the sidecar does): its deadline may be the
    /// next, earlier than the sweeper's nap of up to a second. [`Atrion::start_task`] does it
    /// itself.
    pub fn wake_task_sweeper(&self) {
        if let Some(s) = self.sweeper.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            s.wake();
        }
    }

    /// Aborts every overdue lease now (each reported as a failure, its abort fired) and
    /// returns how many: for a process without [`Atrion::connect`]'s sweeper.
    pub fn sweep_tasks(&self) -> usize {
        self.engine.sweep_leases(self.now.now())
    }

    /// Sets the workload profile of the routes `pattern` matches (an exact id or a glob):
    /// their physics (the engine's config with the profile: [`PhysicsConfig::with_workload`],
    /// replacing a per-route config set on the same pattern), their leases' defaults, and
    /// the seed of a learned normal not yet learned. A profile is a hint where normals are
    /// learned: docs/DESIGN.md §2 says how they interact.
    pub fn set_route_profile(&self, pattern: &str, profile: impl Into<ProfileConfig>) -> Result<(), AtrionError> {
        Ok(self.engine.set_route_profile(pattern, Some(profile.into()))?)
    }

    /// Removes the workload profile set on `pattern` (and the physics it set).
    pub fn remove_route_profile(&self, pattern: &str) -> Result<(), AtrionError> {
        Ok(self.engine.set_route_profile(pattern, None)?)
    }

    /// Counters of the cluster sync (`None` before `connect`).
    pub async fn sync_stats(&self) -> Option<SyncStats> {
        self.manager.lock().await.as_ref().map(StateManager::stats)
    }

    /// As [`Atrion::sync_stats`], from synchronous code that must not wait (a metrics
    /// callback): `None` also while `connect` or `shutdown` holds the manager.
    pub fn try_sync_stats(&self) -> Option<SyncStats> {
        self.manager.try_lock().ok()?.as_ref().map(StateManager::stats)
    }

    /// The cluster's nodes as this one sees them, itself first (`None` before `connect`).
    pub async fn nodes(&self) -> Option<Vec<NodeInfo>> {
        self.manager.lock().await.as_ref().map(StateManager::nodes)
    }

    /// The other nodes' contributions to `route`, by node (empty before `connect`).
    pub async fn route_nodes(&self, route: &str) -> Vec<(String, Contribution)> {
        self.manager.lock().await.as_ref().map(|m| m.route_nodes(route)).unwrap_or_default()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine<O>> {
        &self.engine
    }

    /// Sets (`Some`) or removes (`None`) the physics of the routes `pattern` matches, at run
    /// time; see [`Engine::set_route_config`].
    pub fn set_route_config(&self, pattern: &str, config: Option<PhysicsConfig>) -> Result<(), AtrionError> {
        Ok(self.engine.set_route_config(pattern, config)?)
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The keys this node reads and writes in the store: its namespace and node id.
    pub fn keys(&self) -> ClusterKeys {
        self.sync.keys()
    }

    /// The clock decisions are made with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Now, on [`Atrion::clock`] (`atrion_sync::EngineClock::now`).
    #[inline]
    pub fn now(&self) -> Timestamp {
        self.now.now()
    }

    /// Reports a request that started at `started` (on [`Atrion::now`]) and ends now.
    pub fn report_since(
        &self,
        route: &str,
        started: Timestamp,
        ok: bool,
        saturation: Option<f64>,
    ) -> Result<RouteStatus, TelemetryError> {
        let (t, now) = self.ended(started, ok, saturation)?;
        Ok(self.engine.report(route, t, now))
    }

    /// An owned handle on `route` (created if unknown), for code that decides now and
    /// reports later, across `.await`s: what the tower layers hold between a request's
    /// decision and its report. Allocates nothing on a known route.
    pub fn route_handle(&self, route: &str) -> OwnedRouteHandle<O> {
        self.route_handle_at(route, self.now.now())
    }

    /// As [`Atrion::route_handle`], with now already read from [`Atrion::clock`].
    pub(crate) fn route_handle_at(&self, route: &str, now: Timestamp) -> OwnedRouteHandle<O> {
        self.engine.owned_handle(route, now)
    }

    /// As [`Atrion::report_since`], on a handle.
    pub fn report_handle_since(
        &self,
        handle: &OwnedRouteHandle<O>,
        started: Timestamp,
        ok: bool,
        saturation: Option<f64>,
    ) -> Result<RouteStatus, TelemetryError> {
        let (t, now) = self.ended(started, ok, saturation)?;
        Ok(handle.report(t, now))
    }

    /// The telemetry of a request that started at `started` and ends now, and now.
    fn ended(
        &self,
        started: Timestamp,
        ok: bool,
        saturation: Option<f64>,
    ) -> Result<(Telemetry, Timestamp), TelemetryError> {
        let now = self.now.now();
        Ok((self.telemetry(now.saturating_since(started), ok, saturation)?, now))
    }
}

/// An admitted request in flight; reports on drop.
pub struct Guard<'a, O: PhysicsObserver + 'static> {
    atrion: &'a Atrion<O>,
    handle: RouteHandle<'a, O>,
    started: Timestamp,
    failed: bool,
    saturation: Option<f64>,
}

impl<O: PhysicsObserver + 'static> Guard<'_, O> {
    /// Marks the request as failed.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// The route's saturation as measured by the caller, in `[0, 1]`.
    pub fn saturation(&mut self, saturation: f64) {
        self.saturation = Some(saturation);
    }
}

impl<O: PhysicsObserver + 'static> Drop for Guard<'_, O> {
    fn drop(&mut self) {
        let failed = self.failed || std::thread::panicking();
        // An out-of-range saturation falls back to neutral rather than losing the sample.
        let now = self.atrion.now.now();
        let latency = now.saturating_since(self.started);
        let t = self
            .atrion
            .telemetry(latency, !failed, self.saturation)
            .or_else(|_| self.atrion.telemetry(latency, !failed, None));
        if let Ok(t) = t {
            self.handle.report(t, now);
        }
    }
}
