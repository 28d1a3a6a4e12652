//! # atrion-python
//!
//! The native half of the Python package `atrion`: the facade's [`atrion::Atrion`] in
//! process, as the extension module `atrion._native` (PyO3, abi3 for CPython 3.9 and
//! later). The Python half (`python/atrion`) adds the guard (`with` / `async with`) and the
//! ASGI, WSGI and Django middleware on top of these classes.
//!
//! **The GIL.** Connecting, the store's I/O and shutting down wait on the network or the
//! disk: they run with the GIL released ([`Python::detach`]), on a tokio runtime of the
//! module's own (one worker thread, started at first use) that also runs the cluster pulse
//! and the lease sweeper. Decisions and reports take nanoseconds and only the engine's own
//! short locks, never one that Python code can hold, so they keep the GIL: releasing and
//! taking it back would cost more than the decision.
//!
//! Lease aborts are seen by polling (`Lease.aborted`), never by a Python callback run from
//! the sweeper: a callback would need the GIL on a thread that may hold an engine lock.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atrion::{
    AbortHandle, Atrion, Decision, LeaseError as CoreLeaseError, LeaseOptions, Model, OwnedRouteHandle, PhysicsConfig,
    Priority, ProfileConfig, StoreConfig, TaskError, Telemetry, Timestamp,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(atrion, AtrionError, PyException, "Every error Atrion raises, except bad arguments.");
create_exception!(
    atrion,
    Shed,
    AtrionError,
    "The route shed the request or task: `retry_after` (seconds), `reason`, `mode`, `route`."
);
create_exception!(atrion, StoreError, AtrionError, "The state store could not be opened, connected or used.");
create_exception!(atrion, LeaseError, AtrionError, "A lease operation failed: it was aborted or has ended.");
create_exception!(
    atrion,
    InvalidInput,
    PyValueError,
    "A bad argument: an empty route, a latency that is not a finite number >= 0, an unknown name."
);

/// The module's runtime: the pulse, the sweeper and store I/O run on it.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("atrion")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| AtrionError::new_err(format!("could not start Atrion's runtime: {e}")))
}

fn invalid(e: impl std::fmt::Display) -> PyErr {
    InvalidInput::new_err(e.to_string())
}

/// A route id as the engine takes it: 1 byte at least.
fn check_route(route: &str) -> PyResult<()> {
    if route.is_empty() {
        return Err(invalid("a route id must not be empty"));
    }
    Ok(())
}

fn priority(p: Option<&str>) -> PyResult<Priority> {
    match p {
        None => Ok(Priority::Normal),
        Some(s) => s.parse().map_err(invalid),
    }
}

/// The priority a request is decided at: `priority`, one tier lower per retry (`attempt`, the
/// client's retry number; 0 or `None` a first try), critical staying critical.
fn request_priority(p: Option<&str>, attempt: Option<i64>) -> PyResult<Priority> {
    let attempt = match attempt {
        None => 0,
        Some(a) if a < 0 => {
            return Err(invalid(format!("attempt must be a whole number >= 0 (0 is a first try), not {a}")));
        }
        Some(a) => u32::try_from(a).unwrap_or(u32::MAX),
    };
    Ok(priority(p)?.for_attempt(attempt))
}

/// The retry's number in a value of the `X-Retry-Attempt` header: a whole number, else 0 (a
/// first try). A malformed header is never an error.
#[pyfunction]
fn retry_attempt(value: &str) -> u32 {
    atrion::parse_retry_attempt(value)
}

/// Seconds given by Python as a [`Duration`].
fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    if !(s.is_finite() && s > 0.0) {
        return Err(invalid(format!("{what} must be a finite number of seconds > 0, not {s}")));
    }
    Ok(Duration::from_secs_f64(s))
}

/// `base` with `overrides` (JSON) merged over it; the model cannot change.
fn physics(base: PhysicsConfig, overrides: &str) -> PyResult<PhysicsConfig> {
    let model = base.model;
    let patch: serde_json::Value = serde_json::from_str(overrides).map_err(invalid)?;
    let mut merged = serde_json::to_value(&base).map_err(|e| AtrionError::new_err(e.to_string()))?;
    atrion::merge_json(&mut merged, patch);
    let config: PhysicsConfig = serde_json::from_value(merged).map_err(|e| invalid(format!("config: {e}")))?;
    if config.model != model {
        return Err(invalid("config.model: set the model with the `model` argument"));
    }
    Ok(config)
}

/// A `config` argument: a mapping (dumped with `json`) or a JSON string.
fn config_json(config: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = config.extract::<String>() {
        return Ok(s);
    }
    if config.is_instance_of::<PyDict>() {
        let json = config.py().import("json")?;
        return json.call_method1("dumps", (config,))?.extract();
    }
    Err(invalid("config must be a dict or a JSON string"))
}

/// One decision: `admitted`, `reason`, `retry_after` (seconds, or `None` when admitted),
/// `mode`, `resistance` (ohms).
#[pyclass(frozen, module = "atrion._native", name = "Decision")]
pub struct PyDecision {
    inner: Decision,
}

#[pymethods]
impl PyDecision {
    /// Whether the request may go ahead.
    #[getter]
    fn admitted(&self) -> bool {
        self.inner.is_admitted()
    }
    /// Why (`healthy`, `overloaded`, `open`, ...).
    #[getter]
    fn reason(&self) -> &'static str {
        self.inner.reason.as_str()
    }
    /// When shed: seconds to wait before trying again.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.inner.retry_after.map(|d| d.as_secs_f64())
    }
    /// The route's mode (`bootstrap`, `operational`, `open`, `half_open`).
    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode.as_str()
    }
    /// The resistance decided against (ohms).
    #[getter]
    fn resistance(&self) -> f64 {
        self.inner.resistance
    }
    fn __bool__(&self) -> bool {
        self.inner.is_admitted()
    }
    fn __repr__(&self) -> String {
        format!(
            "Decision(admitted={}, reason={:?}, retry_after={:?}, mode={:?}, resistance={:.3})",
            if self.inner.is_admitted() { "True" } else { "False" },
            self.reason(),
            self.retry_after(),
            self.mode(),
            self.inner.resistance
        )
    }
}

/// The `Shed` exception of a shedding decision, its fields as attributes.
fn shed_error(py: Python<'_>, route: &str, d: &Decision) -> PyErr {
    let retry = d.retry_after.map(|r| r.as_secs_f64());
    let msg = match retry {
        Some(r) => format!("route `{route}` shed ({}): retry after {r:.3} s", d.reason.as_str()),
        None => format!("route `{route}` shed ({})", d.reason.as_str()),
    };
    let err = Shed::new_err(msg);
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail but for memory.
    let _ = value.setattr("route", route);
    let _ = value.setattr("reason", d.reason.as_str());
    let _ = value.setattr("mode", d.mode.as_str());
    let _ = value.setattr("retry_after", retry);
    let _ = value.setattr("resistance", d.resistance);
    err
}

/// An admitted request in flight, from `Atrion._enter`: `finish` reports it once.
#[pyclass(frozen, module = "atrion._native")]
pub struct Admission {
    atrion: Arc<Atrion>,
    handle: OwnedRouteHandle<atrion::SilentObserver>,
    started: Timestamp,
    done: std::sync::atomic::AtomicBool,
}

#[pymethods]
impl Admission {
    /// Reports the request: its latency since admission, its outcome and, if measured, the
    /// route's saturation in `[0, 1]` (an out-of-range one falls back to neutral). A second
    /// call does nothing.
    #[pyo3(signature = (ok, saturation=None))]
    fn finish(&self, ok: bool, saturation: Option<f64>) {
        if self.done.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let r = self.atrion.report_handle_since(&self.handle, self.started, ok, saturation);
        if r.is_err() {
            let _ = self.atrion.report_handle_since(&self.handle, self.started, ok, None);
        }
    }

    /// Seconds since admission.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.atrion.now().saturating_since(self.started).as_secs_f64()
    }
}

/// A route's state, from `Atrion.route(name)`.
#[pyclass(frozen, get_all, module = "atrion._native")]
pub struct RouteState {
    /// The route id.
    route: String,
    /// Its mode.
    mode: &'static str,
    /// Resistance (ohms).
    resistance: f64,
    /// Scar tissue (ohms).
    scar: f64,
    /// Momentum.
    momentum: f64,
    /// Pressure per channel: latency, error, saturation.
    pressure: (f64, f64, f64),
    /// Break point (ohms).
    break_point: f64,
    /// Recovery point (ohms).
    recovery: f64,
    /// Telemetry updates absorbed.
    updates: u64,
    /// Live task leases on the route.
    active_tasks: u32,
}

#[pymethods]
impl RouteState {
    fn __repr__(&self) -> String {
        format!(
            "RouteState(route={:?}, mode={:?}, resistance={:.3}, scar={:.3}, updates={}, active_tasks={})",
            self.route, self.mode, self.resistance, self.scar, self.updates, self.active_tasks
        )
    }
}

/// A long-running task admitted on a route (from `Atrion.start_task`): heartbeat it, then
/// complete it. Used as a context manager it completes on exit (a failure if an exception
/// escapes), unless it already ended.
#[pyclass(module = "atrion._native")]
pub struct Lease {
    inner: atrion::Lease,
}

fn lease_error(e: CoreLeaseError) -> PyErr {
    LeaseError::new_err(e.to_string())
}

#[pymethods]
impl Lease {
    /// The lease's id.
    #[getter]
    fn id(&self) -> u64 {
        self.inner.id().as_u64()
    }
    /// The route.
    #[getter]
    fn route(&self) -> &str {
        self.inner.route()
    }
    /// The profile's name (`light`, `standard`, `heavy`, `extreme`, `custom`).
    #[getter]
    fn profile(&self) -> &'static str {
        self.inner.profile()
    }
    /// Whether it is neither ended nor aborted.
    #[getter]
    fn active(&self) -> bool {
        self.inner.is_active()
    }
    /// Whether the engine aborted it: the work should stop.
    #[getter]
    fn aborted(&self) -> bool {
        self.inner.is_aborted()
    }
    /// Why it was aborted (`max_duration`, `missed_heartbeat`, `shutdown`), if it was.
    #[getter]
    fn abort_reason(&self) -> Option<&'static str> {
        self.inner.abort_reason().map(|r| r.name())
    }
    /// Seconds left before it runs out.
    #[getter]
    fn remaining(&self) -> f64 {
        self.inner.remaining().as_secs_f64()
    }
    /// Keeps it alive. Raises `LeaseError` if it was aborted or has ended.
    fn heartbeat(&mut self) -> PyResult<()> {
        self.inner.heartbeat().map(|_| ()).map_err(lease_error)
    }
    /// Ends it and reports it (its duration as the latency). Returns the outcome's name
    /// (`completed`, `failed`); raises `LeaseError` if it was aborted or has ended.
    #[pyo3(signature = (ok=true))]
    fn complete(&mut self, ok: bool) -> PyResult<&'static str> {
        self.inner.complete(ok).map(|o| o.name()).map_err(lease_error)
    }
    /// Ends it without a report (cancelled). Raises `LeaseError` if it had already ended.
    fn release(&mut self) -> PyResult<()> {
        self.inner.release().map_err(lease_error)
    }
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    /// Completes it if still live: a success unless an exception escapes. A lease the
    /// engine aborted meanwhile stays aborted (and reported as a failure); nothing is
    /// raised for it here: `aborted` and `abort_reason` tell.
    fn __exit__(
        &mut self,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) {
        let failing = exc_type.is_some_and(|t| !t.is_none());
        if self.inner.is_active() {
            // Aborted at this very call, or gone: it ended either way.
            let _ = self.inner.complete(!failing);
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "Lease(id={}, route={:?}, profile={:?}, active={})",
            self.id(),
            self.route(),
            self.profile(),
            if self.active() { "True" } else { "False" }
        )
    }
}

/// The engine in this process: `Atrion(store="memory", model="default", config=None)`.
#[pyclass(subclass, frozen, module = "atrion._native", name = "Atrion")]
pub struct PyAtrion {
    atrion: Arc<Atrion>,
    store_url: String,
}

impl Drop for PyAtrion {
    /// Collected without `close()`: the pulse and the sweeper are stopped in the background
    /// (they hold the engine, which would otherwise live on with them).
    fn drop(&mut self) {
        if let Ok(rt) = runtime() {
            let atrion = self.atrion.clone();
            rt.spawn(async move { atrion.shutdown().await });
        }
    }
}

#[pymethods]
impl PyAtrion {
    /// Builds the engine and, with a store, connects to it (the GIL released meanwhile):
    /// `memory` (this process alone), `file:PATH`, `redis://…`, `rediss://…`,
    /// `postgres://…`. `config`: overrides of the model's physics (a dict or JSON, nested
    /// sections merged field by field). The lease sweeper and, with a shared store, the
    /// cluster pulse run in the background until `close()`.
    #[new]
    #[pyo3(signature = (store="memory", model="default", config=None, *, node_id=None, namespace=None, pulse=None, connect=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: &str,
        model: &str,
        config: Option<&Bound<'_, PyAny>>,
        node_id: Option<String>,
        namespace: Option<String>,
        pulse: Option<f64>,
        connect: bool,
    ) -> PyResult<Self> {
        let model: Model = model.parse().map_err(invalid)?;
        let mut physics_config = PhysicsConfig::for_model(model);
        if let Some(c) = config {
            physics_config = physics(physics_config, &config_json(c)?)?;
        }
        let mut store_config =
            StoreConfig::from_url(store).map_err(|e| InvalidInput::new_err(format!("store: {e}")))?;
        let mut builder = Atrion::builder().config(physics_config);
        if let Some(id) = node_id {
            builder = builder.node_id(id);
        }
        if let Some(ns) = namespace {
            store_config.set_namespace(&ns);
            builder = builder.namespace(ns);
        }
        if let Some(p) = pulse {
            builder = builder.pulse(seconds("pulse", p)?);
        }
        let rt = runtime()?;
        let shown = atrion::redacted_url(store);
        let atrion = py.detach(|| {
            rt.block_on(async {
                let built = store_config.build().await.map_err(|e| StoreError::new_err(format!("{shown}: {e}")))?;
                let atrion = Arc::new(builder.store_arc(built).build().map_err(invalid)?);
                if connect {
                    atrion.connect().await.map_err(|e| StoreError::new_err(format!("{shown}: {e}")))?;
                }
                Ok::<_, PyErr>(atrion)
            })
        })?;
        Ok(PyAtrion { atrion, store_url: shown })
    }

    /// Admits or sheds a request on `route` now, at `priority` (`critical`, `high`,
    /// `normal`, `low`, `bulk`). `attempt`: the client's retry number (0 or `None`: a first
    /// try); a retry is decided one tier lower per retry, critical staying critical.
    #[pyo3(signature = (route, priority=None, attempt=None))]
    fn decide(&self, route: &str, priority: Option<&str>, attempt: Option<i64>) -> PyResult<PyDecision> {
        check_route(route)?;
        Ok(PyDecision { inner: self.atrion.decide(route, request_priority(priority, attempt)?) })
    }

    /// Reports how a request on `route` went: its latency in milliseconds, its outcome and,
    /// if measured, the route's saturation in `[0, 1]`.
    #[pyo3(signature = (route, latency_ms, ok=true, saturation=None))]
    fn report(&self, route: &str, latency_ms: f64, ok: bool, saturation: Option<f64>) -> PyResult<()> {
        check_route(route)?;
        if !(latency_ms.is_finite() && latency_ms >= 0.0) {
            return Err(invalid(format!("latency_ms must be a finite number >= 0, not {latency_ms}")));
        }
        let latency = Duration::from_secs_f64(latency_ms.min(Telemetry::MAX_LATENCY_MS) / 1e3);
        self.atrion.report(route, latency, ok, saturation).map(|_| ()).map_err(invalid)
    }

    /// Decides for a request on `route`: an `Admission` to finish, or `Shed` raised. What
    /// `guard()` is built on.
    #[pyo3(signature = (route, priority=None, attempt=None))]
    fn _enter(&self, py: Python<'_>, route: &str, priority: Option<&str>, attempt: Option<i64>) -> PyResult<Admission> {
        check_route(route)?;
        let p = request_priority(priority, attempt)?;
        let now = self.atrion.now();
        let handle = self.atrion.route_handle(route);
        let d = handle.decide(now, p);
        if !d.is_admitted() {
            return Err(shed_error(py, route, &d));
        }
        Ok(Admission {
            atrion: self.atrion.clone(),
            handle,
            started: now,
            done: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The routes the engine tracks, sorted.
    fn routes(&self) -> Vec<String> {
        let mut ids = self.atrion.engine().route_ids();
        ids.sort();
        ids
    }

    /// A route's state, or `None` if the engine does not track it.
    fn route(&self, name: &str) -> Option<RouteState> {
        let v = self.atrion.engine().snapshot(name).ok()?;
        Some(RouteState {
            route: name.to_owned(),
            mode: v.mode.as_str(),
            resistance: v.resistance,
            scar: v.scar,
            momentum: v.momentum,
            pressure: (v.pressure[0], v.pressure[1], v.pressure[2]),
            break_point: v.break_point,
            recovery: v.recovery,
            updates: v.updates,
            active_tasks: self.atrion.engine().active_leases(name),
        })
    }

    /// Starts a long-running task on `route`: admitted like a request (`Shed` raised if
    /// not), then counted in `active_tasks` until its lease completes, is released, or is
    /// aborted for running past `max_duration` (seconds) or missing its heartbeats (every
    /// `heartbeat` seconds). `profile`: `light`, `standard`, `heavy`, `extreme`, or the
    /// route's (else standard).
    #[pyo3(signature = (route, *, priority=None, profile=None, max_duration=None, heartbeat=None))]
    fn start_task(
        &self,
        py: Python<'_>,
        route: &str,
        priority: Option<&str>,
        profile: Option<&str>,
        max_duration: Option<f64>,
        heartbeat: Option<f64>,
    ) -> PyResult<Lease> {
        check_route(route)?;
        // Aborts are polled (`Lease.aborted`): every lease gets a handle, so heavy work is
        // always stoppable.
        let mut options = LeaseOptions::new().priority(self::priority(priority)?).abort(AbortHandle::new());
        if let Some(p) = profile {
            let p: atrion::Profile = p.parse().map_err(invalid)?;
            options = options.profile(ProfileConfig::from(p));
        }
        if let Some(s) = max_duration {
            options = options.max_duration(seconds("max_duration", s)?);
        }
        if let Some(s) = heartbeat {
            options = options.heartbeat(seconds("heartbeat", s)?);
        }
        match self.atrion.start_task(route, options) {
            Ok(inner) => Ok(Lease { inner }),
            Err(TaskError::Shed(d)) => Err(shed_error(py, route, &d)),
            Err(TaskError::Lease(e @ (CoreLeaseError::Config(_) | CoreLeaseError::InvalidRouteId { .. }))) => {
                Err(invalid(e))
            }
            Err(e) => Err(LeaseError::new_err(e.to_string())),
        }
    }

    /// Live task leases on `route` (overdue ones aborted first).
    fn active_tasks(&self, route: &str) -> u32 {
        self.atrion.active_tasks(route)
    }

    /// Aborts every overdue lease now and returns how many (the background sweeper does
    /// this on its own, on time).
    fn sweep_tasks(&self) -> usize {
        self.atrion.sweep_tasks()
    }

    /// The store's URL, its password hidden.
    #[getter]
    fn store(&self) -> &str {
        &self.store_url
    }

    /// This node's id in the cluster.
    #[getter]
    fn node_id(&self) -> String {
        self.atrion.keys().node_id().to_owned()
    }

    /// Pushes what this node learned, leaves the cluster and stops the background tasks
    /// (the GIL released meanwhile). The engine still decides afterwards, alone.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let rt = runtime()?;
        let atrion = self.atrion.clone();
        py.detach(|| rt.block_on(atrion.shutdown()));
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "Atrion(store={:?}, model={:?})",
            self.store_url,
            format!("{:?}", self.atrion.engine().config().model).to_lowercase()
        )
    }
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyAtrion>()?;
    m.add_class::<PyDecision>()?;
    m.add_class::<Admission>()?;
    m.add_class::<RouteState>()?;
    m.add_class::<Lease>()?;
    m.add("AtrionError", py.get_type::<AtrionError>())?;
    m.add("Shed", py.get_type::<Shed>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("LeaseError", py.get_type::<LeaseError>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("PRIORITIES", Priority::ALL.map(Priority::as_str).to_vec())?;
    m.add("RETRY_ATTEMPT_HEADER", atrion::RETRY_ATTEMPT_HEADER)?;
    m.add_function(wrap_pyfunction!(retry_attempt, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
