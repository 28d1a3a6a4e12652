//! # atrion-node
//!
//! The native half of the Node.js package `atrion-node`: the facade's [`atrion::Atrion`] in
//! process, behind N-API (napi-rs). The JavaScript half (`index.js`) holds the API users
//! call: the original's `Atrion` class (`route`, `getState`, providers) and this project's
//! own (`decide`, `report`, `enter`), the Express middleware and the Fastify plugin.
//!
//! Why the split is where it is: every call across N-API costs a few dozen nanoseconds per
//! argument and far more per object built, so the hot methods here take numbers and one
//! string and return one integer; the rest of an answer (resistance, retry-after, throttle)
//! is written into a `Float64Array` the JavaScript side allocated once and reads back. The
//! objects users see are built in JavaScript, where building them is cheap. Names (modes,
//! reasons, priorities) are sent once, at load, from the core's own lists, so they have
//! one owner.
//!
//! The hot functions (`route`, `decide`, `report`, from [`hot_functions`]) are plain N-API
//! callbacks taking the engine's slot, not methods of [`NativeAtrion`] nor napi-rs
//! functions: napi-rs checks and unwraps the receiver of every method call, and wraps every
//! function call in checks of its own, each of which cost as much as the decision itself
//! (measured: ~430 ns a method call, ~220 ns a napi-rs function, ~110 ns a plain callback,
//! for the same decision). Each engine is entered in a per-thread table when made and
//! leaves it when its JavaScript object is collected; one JavaScript thread calls it (a
//! worker thread has its own table and its own engines).
//!
//! The route id is read into a buffer on the stack (one N-API call, no allocation) when it
//! is short, which it nearly always is.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use atrion::state::StateStore;
use atrion::{
    Atrion, Clock, EngineLimits, Mode, Model, PhysicsConfig, Priority, Reason, StoreConfig, SystemClock, Telemetry,
    Verdict,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;

mod task;

/// Where a route id longer than this is read through the heap.
const INLINE_ROUTE: usize = 256;

/// A route id read from JavaScript: on the stack when it fits.
pub struct RouteArg {
    inline: [u8; INLINE_ROUTE],
    len: usize,
    heap: Option<String>,
}

impl RouteArg {
    fn as_str(&self) -> &str {
        match &self.heap {
            Some(s) => s,
            // N-API writes whole UTF-8 characters only, so the prefix it wrote is valid UTF-8;
            // checked anyway (a cheap scan of a short id), never trusted.
            None => std::str::from_utf8(&self.inline[..self.len]).unwrap_or(""),
        }
    }
}

impl TypeName for RouteArg {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl ValidateNapiValue for RouteArg {}

impl FromNapiValue for RouteArg {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        let mut arg = RouteArg { inline: [0; INLINE_ROUTE], len: 0, heap: None };
        let mut written = 0;
        // SAFETY: the buffer is INLINE_ROUTE bytes long and N-API writes at most that many,
        // its terminating NUL included.
        let status = unsafe {
            sys::napi_get_value_string_utf8(env, value, arg.inline.as_mut_ptr().cast(), INLINE_ROUTE, &mut written)
        };
        if status != sys::Status::napi_ok {
            return Err(Error::new(Status::InvalidArg, "a route id must be a string"));
        }
        if written + 1 < INLINE_ROUTE {
            arg.len = written;
            return Ok(arg);
        }
        // It may have been cut: read it whole.
        // SAFETY: as above, through napi-rs's own conversion.
        arg.heap = Some(unsafe { String::from_napi_value(env, value)? });
        Ok(arg)
    }
}

/// The process's clock read in whole milliseconds, as the original reads `Date.now()`:
/// the reference model divides by the time between two updates, and two updates within
/// one millisecond are, for it, simultaneous (no momentum), never a millionth apart.
struct MillisClock(SystemClock);

impl Clock for MillisClock {
    fn elapsed(&self) -> Duration {
        let e = self.0.elapsed();
        // Whole seconds and whole milliseconds of the rest: no 128-bit division on a hot path.
        Duration::new(e.as_secs(), e.subsec_millis() * 1_000_000)
    }
    fn wall_ms(&self) -> u64 {
        self.0.wall_ms()
    }
}

/// How the JavaScript side configures an engine.
#[napi(object)]
pub struct NativeOptions {
    /// `reference` or `default`.
    pub model: String,
    /// Overrides of the model's `PhysicsConfig`, as JSON (snake_case field names, nested
    /// sections merged field by field).
    pub physics: Option<String>,
    /// This node's id in the cluster.
    pub node_id: Option<String>,
    /// The cluster's key namespace.
    pub namespace: Option<String>,
    /// How often the sync pushes and merges, in milliseconds.
    pub pulse_ms: Option<f64>,
    /// The most routes the engine tracks (idle ones are evicted beyond it).
    pub max_routes: Option<u32>,
}

/// A connected state store, opened by [`open_store`] and handed to a [`NativeAtrion`].
#[napi]
pub struct NativeStore {
    store: Arc<dyn StateStore>,
}

/// Opens the store a URL names (`file:PATH`, `redis://…`, `rediss://…`, `postgres://…`),
/// in the given key namespace.
#[napi]
pub fn open_store(env: &Env, url: String, namespace: Option<String>) -> Result<PromiseRaw<'_, NativeStore>> {
    let mut config = StoreConfig::from_url(&url).map_err(to_napi)?;
    if let Some(ns) = &namespace {
        config.set_namespace(ns);
    }
    env.spawn_future(async move {
        let store = config.build().await.map_err(to_napi)?;
        Ok(NativeStore { store })
    })
}

fn to_napi(e: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidArg, e.to_string())
}

/// `base` with `overrides` (JSON) merged over it; the model cannot change.
fn physics(base: PhysicsConfig, overrides: Option<&str>) -> Result<PhysicsConfig> {
    let model = base.model;
    let Some(json) = overrides else { return Ok(base) };
    let patch: serde_json::Value = serde_json::from_str(json).map_err(invalid)?;
    let mut merged = serde_json::to_value(&base).map_err(to_napi)?;
    atrion::merge_json(&mut merged, patch);
    let config: PhysicsConfig = serde_json::from_value(merged).map_err(invalid)?;
    if config.model != model {
        return Err(invalid("physics.model: set the model with the `model` option"));
    }
    Ok(config)
}

/// The index of a mode in [`modes`].
fn mode_code(m: Mode) -> u32 {
    match m {
        Mode::Bootstrap => 0,
        Mode::Operational => 1,
        Mode::Open => 2,
        Mode::HalfOpen => 3,
    }
}

/// The modes' names, in the order of the codes the engine returns.
#[napi]
pub fn modes() -> Vec<&'static str> {
    [Mode::Bootstrap, Mode::Operational, Mode::Open, Mode::HalfOpen].map(Mode::as_str).to_vec()
}

/// The reasons' names, in the order of the codes the engine returns.
#[napi]
pub fn reasons() -> Vec<&'static str> {
    Reason::ALL.map(Reason::as_str).to_vec()
}

/// The priorities' names, critical first: a priority is passed as its index here.
#[napi]
pub fn priorities() -> Vec<&'static str> {
    Priority::ALL.map(Priority::as_str).to_vec()
}

fn priority(code: u32) -> Priority {
    Priority::ALL.get(code as usize).copied().unwrap_or(Priority::Normal)
}

/// How many low bits of a decision's priority code hold the priority's index; the bits above
/// hold the client's retry number (`attempt << PRIORITY_BITS`).
const PRIORITY_BITS: u32 = 3;

/// The priority a request is decided at, from its code: the priority's index in the low
/// [`PRIORITY_BITS`], a retry one tier lower per attempt ([`Priority::for_attempt`]).
fn priority_of_request(code: u32) -> Priority {
    priority(code & ((1 << PRIORITY_BITS) - 1)).for_attempt(code >> PRIORITY_BITS)
}

/// The header a client sets on a retry, lower-cased as Node.js names headers (`x-retry-attempt`).
#[napi]
pub fn retry_attempt_header() -> &'static str {
    atrion::RETRY_ATTEMPT_HEADER
}

/// The retry's number in a value of the retry header: a whole number, else 0 (a first try).
#[napi]
pub fn retry_attempt(value: String) -> u32 {
    atrion::parse_retry_attempt(&value)
}

/// The priority tier of a voltage (the original's `route(…, voltage)`): the highest tier
/// whose voltage it reaches.
fn tier(voltage: f64) -> Priority {
    Priority::ALL.into_iter().find(|p| voltage >= p.voltage()).unwrap_or(Priority::Bulk)
}

/// A decision packed into one integer: bit 0 admitted, bits 1–2 the mode, bits 3– the reason.
fn pack(admitted: bool, mode: Mode, reason: Reason) -> u32 {
    u32::from(admitted) | (mode_code(mode) << 1) | ((reason.index() as u32) << 3)
}

/// A route's state as the original's `getState` shows it.
#[napi(object)]
pub struct NativeState {
    /// Mode code ([`modes`]).
    pub mode: u32,
    /// Resistance (ohms).
    pub resistance: f64,
    /// Scar tissue (ohms).
    pub scar: f64,
    /// Momentum.
    pub momentum: f64,
    /// Pressure per channel: latency, error, saturation.
    pub pressure: Vec<f64>,
    /// Telemetry updates absorbed.
    pub updates: f64,
    /// The last update, in milliseconds since the Unix epoch.
    pub updated_at_ms: f64,
    /// Break point (ohms).
    pub break_point: f64,
    /// Recovery point (ohms).
    pub recovery: f64,
    /// When the open interval ends, in milliseconds since the Unix epoch (0 if not open).
    pub open_until_ms: f64,
    /// The route's own tuner (default model): samples, mean, standard deviation.
    pub tuner_samples: u32,
    /// Its mean resistance.
    pub tuner_mean: f64,
    /// Its standard deviation.
    pub tuner_sd: f64,
}

/// What a tuner has learned.
#[napi(object)]
pub struct NativeTuner {
    /// Mean resistance.
    pub mean: f64,
    /// Standard deviation.
    pub std_dev: f64,
    /// Samples.
    pub sample_count: u32,
    /// Past its warm-up.
    pub is_warmed_up: bool,
}

/// The most route ids one engine interns ([`intern`]); past it, ids are passed as strings.
const MAX_INTERNED: usize = 4096;

/// An engine as the hot functions reach it.
struct Entry {
    atrion: Arc<Atrion>,
    model: Model,
    /// Route ids by the number JavaScript passes instead ([`intern`]): reading a number
    /// across N-API costs a fraction of copying a string.
    routes: Vec<Box<str>>,
}

/// This thread's engines and the array numbers cross in.
struct Table {
    engines: Vec<Option<Entry>>,
    /// The numbers of a call that do not travel as arguments, both ways: in `[3..7]` what
    /// JavaScript passes (latency, error rate, saturation, voltage), in `[0..3]` the rest of
    /// the answer (resistance, retry-after ms or -1, throttle). Set once per thread by
    /// [`set_answer_array`].
    io: Option<Float64Array>,
}

/// Where a call's inputs sit in the shared array.
const IN_LATENCY: usize = 3;
const IN_ERROR: usize = 4;
const IN_SATURATION: usize = 5;
const IN_VOLTAGE: usize = 6;
const IO_LEN: usize = 7;

thread_local! {
    static TABLE: RefCell<Table> = const { RefCell::new(Table { engines: Vec::new(), io: None }) };
}

/// Sets the array the hot functions read their numbers from and write the rest of their
/// answers into (7 elements: `[3..7]` in, `[0..3]` out).
#[napi]
pub fn set_answer_array(io: Float64Array) -> Result<()> {
    if io.len() < IO_LEN {
        return Err(invalid(format!("the shared array needs {IO_LEN} elements")));
    }
    TABLE.with(|t| t.borrow_mut().io = Some(io));
    Ok(())
}

/// Interns `route` for the engine in `slot`: the number to pass for it from now on, or
/// `None` when the engine has interned its most (4096) ids: pass the string.
#[napi]
pub fn intern(slot: u32, route: String) -> Result<Option<u32>> {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let entry = t
            .engines
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| invalid("this Atrion's engine is gone"))?;
        if entry.routes.len() >= MAX_INTERNED {
            return Ok(None);
        }
        entry.routes.push(route.into_boxed_str());
        Ok(u32::try_from(entry.routes.len() - 1).ok())
    })
}

/// A route given by JavaScript: its interned number, or the string itself.
// The id's buffer is on the stack on purpose: boxing it would allocate on every call.
#[allow(clippy::large_enum_variant)]
pub enum RouteRef {
    /// An index into the engine's interned ids.
    Interned(u32),
    /// The id.
    Id(RouteArg),
}

impl TypeName for RouteRef {
    fn type_name() -> &'static str {
        "number | string"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ValidateNapiValue for RouteRef {}

impl FromNapiValue for RouteRef {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        let mut n = 0u32;
        // SAFETY: `value` is a live value of this call; a non-number answers a status, not UB.
        if unsafe { sys::napi_get_value_uint32(env, value, &mut n) } == sys::Status::napi_ok {
            return Ok(RouteRef::Interned(n));
        }
        // SAFETY: as above.
        Ok(RouteRef::Id(unsafe { RouteArg::from_napi_value(env, value)? }))
    }
}

impl Entry {
    fn route<'a>(&'a self, r: &'a RouteRef) -> Result<&'a str> {
        match r {
            RouteRef::Interned(i) => {
                self.routes.get(*i as usize).map(|s| &**s).ok_or_else(|| invalid("unknown interned route"))
            }
            RouteRef::Id(a) => Ok(a.as_str()),
        }
    }
}

/// Runs `f` on the engine in `slot` and the shared array.
fn with_engine<R>(slot: u32, f: impl FnOnce(&Entry, &mut [f64]) -> Result<R>) -> Result<R> {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let Table { engines, io: out } = &mut *t;
        let entry = engines
            .get(slot as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| invalid("this Atrion's engine is gone"))?;
        let out = out.as_mut().ok_or_else(|| invalid("setAnswerArray was not called"))?;
        // SAFETY: the array is the package's own (index.js allocates it at load and never
        // hands it out), no other Rust reference to its data exists (the table is borrowed
        // mutably), and JavaScript does not run while this function does.
        let out = unsafe { out.as_mut() };
        f(entry, out)
    })
}

/// The original's `route()`: learns the telemetry (latency, error rate, saturation in the
/// shared array), then decides for a request of its voltage. Reference model: the
/// original's rule (`mode != open && voltage > R`); default model: the engine's decision
/// at the voltage's priority tier. Returns the decision packed (bit 0 admitted, bits 1–2 the mode, bits 3– the reason); `io[0]` = resistance.
fn route(slot: u32, route: RouteRef) -> Result<u32> {
    with_engine(slot, |e, out| {
        let t = Telemetry::new(out[IN_LATENCY], out[IN_ERROR], out[IN_SATURATION]).map_err(invalid)?;
        let voltage = out[IN_VOLTAGE];
        let now = e.atrion.now();
        let handle = e.atrion.engine().handle(e.route(&route)?, now);
        let status = handle.report(t, now);
        let (code, resistance) = match e.model {
            Model::Reference => {
                let admitted = status.mode != Mode::Open && voltage > status.resistance;
                let reason = if admitted {
                    Reason::Healthy
                } else if status.mode == Mode::Open {
                    Reason::Open
                } else {
                    Reason::Overloaded
                };
                (pack(admitted, status.mode, reason), status.resistance)
            }
            Model::Default => {
                let d = handle.decide(now, tier(voltage));
                (pack(d.is_admitted(), d.mode, d.reason), d.resistance)
            }
        };
        out[0] = resistance;
        Ok(code)
    })
}

/// The engine's decision for a request on `route` at `priority` ([`priorities`]' index, with
/// a retry's number above it: [`priority_of_request`]).
/// Returns the decision packed (bit 0 admitted, bits 1–2 the mode, bits 3– the reason); `out` = `[resistance, retry-after ms or -1, throttle]`.
fn decide(slot: u32, route: RouteRef, priority_code: u32) -> Result<u32> {
    with_engine(slot, |e, out| {
        let route = e.route(&route)?;
        let d = e.atrion.decide(route, priority_of_request(priority_code));
        out[0] = d.resistance;
        out[1] = d.retry_after.map_or(-1.0, |r| r.as_secs_f64() * 1e3);
        out[2] = match d.reason {
            // Read only where it can be non-zero: it is one more lookup.
            Reason::Healthy | Reason::Throttled | Reason::Keepalive => e.atrion.engine().throttle(route).unwrap_or(0.0),
            _ => 0.0,
        };
        Ok(pack(d.verdict == Verdict::Admit, d.mode, d.reason))
    })
}

/// Reports how a request on `route` went: its latency and, if measured (not NaN), the
/// route's saturation (both in the shared array), and its outcome. Returns the mode's
/// code; `io[0]` = resistance.
fn report(slot: u32, route: RouteRef, ok: bool) -> Result<u32> {
    with_engine(slot, |e, out| {
        let (latency_ms, saturation) = (out[IN_LATENCY], out[IN_SATURATION]);
        if !(latency_ms.is_finite() && latency_ms >= 0.0) {
            return Err(invalid(format!("latencyMs must be a finite number >= 0, not {latency_ms}")));
        }
        let latency = Duration::from_secs_f64(latency_ms.min(Telemetry::MAX_LATENCY_MS) / 1e3);
        let sat = (!saturation.is_nan()).then_some(saturation);
        let status = e.atrion.report(e.route(&route)?, latency, ok, sat).map_err(invalid)?;
        out[0] = status.resistance;
        Ok(mode_code(status.mode))
    })
}

/// The engine behind one JavaScript `Atrion`: its lifecycle and its cold methods. The hot
/// ones are the plain callbacks of [`hot_functions`], on [`NativeAtrion::slot`].
#[napi]
pub struct NativeAtrion {
    atrion: Arc<Atrion>,
    model: Model,
    shared_store: bool,
    slot: u32,
}

impl Drop for NativeAtrion {
    fn drop(&mut self) {
        // Collected on the JavaScript thread that made it (napi-rs finalizes there); the
        // table may already be gone when the thread ends.
        let _ = TABLE.try_with(|t| {
            if let Ok(mut t) = t.try_borrow_mut()
                && let Some(e) = t.engines.get_mut(self.slot as usize)
            {
                *e = None;
            }
        });
    }
}

#[napi]
impl NativeAtrion {
    /// An engine; `store` a store from [`open_store`] (none: this process alone).
    #[napi(constructor)]
    pub fn new(options: NativeOptions, store: Option<&NativeStore>) -> Result<Self> {
        let model: Model = options.model.parse().map_err(invalid)?;
        let config = physics(PhysicsConfig::for_model(model), options.physics.as_deref())?;
        let mut builder = Atrion::builder().config(config);
        if model == Model::Reference {
            builder = builder.clock(MillisClock(SystemClock::new()));
        }
        if let Some(n) = options.max_routes {
            builder = builder.limits(EngineLimits::with_max_routes(n as usize));
        }
        if let Some(id) = options.node_id {
            builder = builder.node_id(id);
        }
        if let Some(ns) = options.namespace {
            builder = builder.namespace(ns);
        }
        if let Some(ms) = options.pulse_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return Err(invalid("pulseMs must be a positive number"));
            }
            builder = builder.pulse(Duration::from_secs_f64(ms / 1e3));
        }
        if let Some(s) = store {
            builder = builder.store_arc(s.store.clone());
        }
        let atrion = Arc::new(builder.build().map_err(invalid)?);
        let entry = Entry { atrion: atrion.clone(), model, routes: Vec::new() };
        let slot = TABLE.with(|t| {
            let engines = &mut t.borrow_mut().engines;
            match engines.iter().position(Option::is_none) {
                Some(free) => {
                    engines[free] = Some(entry);
                    free
                }
                None => {
                    engines.push(Some(entry));
                    engines.len() - 1
                }
            }
        });
        let slot = u32::try_from(slot).map_err(|_| invalid("too many engines"))?;
        Ok(NativeAtrion { atrion, model, shared_store: store.is_some(), slot })
    }

    /// Where the hot functions find this engine.
    #[napi(getter)]
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Joins the cluster through the store (warm start, then the pulse). Without a shared
    /// store there is nothing to join, and nothing runs.
    #[napi]
    pub fn connect<'e>(&self, env: &'e Env) -> Result<PromiseRaw<'e, ()>> {
        let atrion = self.atrion.clone();
        let shared = self.shared_store;
        env.spawn_future(async move {
            if shared {
                atrion.connect().await.map_err(to_napi)?;
            }
            Ok(())
        })
    }

    /// Pushes what this node learned and leaves the cluster.
    #[napi]
    pub fn shutdown<'e>(&self, env: &'e Env) -> Result<PromiseRaw<'e, ()>> {
        let atrion = self.atrion.clone();
        env.spawn_future(async move {
            atrion.shutdown().await;
            Ok(())
        })
    }

    /// A route's state; `None` for a route that has learned nothing (unknown, or reset).
    #[napi]
    pub fn state(&self, route: String) -> Option<NativeState> {
        let v = self.atrion.engine().snapshot(&route).ok()?;
        if v.updates == 0 {
            return None;
        }
        let now = self.atrion.now();
        let wall = self.atrion.clock().wall_ms() as f64;
        let to_wall = |t: atrion::Timestamp| wall - (now.as_millis_f64() - t.as_millis_f64());
        let open_until_ms = if v.mode == Mode::Open { to_wall(v.open_until) } else { 0.0 };
        Some(NativeState {
            mode: mode_code(v.mode),
            resistance: v.resistance,
            scar: v.scar,
            momentum: v.momentum,
            pressure: v.pressure.to_vec(),
            updates: v.updates as f64,
            updated_at_ms: to_wall(v.timestamp).round(),
            break_point: v.break_point,
            recovery: v.recovery,
            open_until_ms,
            tuner_samples: v.tuner_samples,
            tuner_mean: v.tuner_mean,
            tuner_sd: v.tuner_var.max(0.0).sqrt(),
        })
    }

    /// The routes that have learned something, sorted.
    #[napi]
    pub fn routes(&self) -> Vec<String> {
        let engine = self.atrion.engine();
        let mut ids: Vec<String> =
            engine.route_ids().into_iter().filter(|r| engine.snapshot(r).is_ok_and(|v| v.updates > 0)).collect();
        ids.sort();
        ids
    }

    /// The tuner: the reference model's one shared tuner, or (default model) `route`'s own
    /// (`None` if the route is unknown or not given). `None` when the tuner is off.
    #[napi]
    pub fn tuner(&self, route: Option<String>) -> Option<NativeTuner> {
        let engine = self.atrion.engine();
        let t = &engine.config().tuner;
        if !t.enabled {
            return None;
        }
        let (samples, mean, sd) = match (self.model, route) {
            (Model::Reference, _) => {
                let s = engine.shared_tuner();
                (s.samples, s.mean, s.sd)
            }
            (Model::Default, Some(r)) => {
                let v = engine.snapshot(&r).ok()?;
                (v.tuner_samples, v.tuner_mean, v.tuner_var.max(0.0).sqrt())
            }
            (Model::Default, None) => return None,
        };
        // The reference tuner is warm at `warmup_samples` samples, the default's after them
        // (docs/DESIGN.md §7.1).
        let is_warmed_up = match self.model {
            Model::Reference => samples >= t.warmup_samples,
            Model::Default => samples > t.warmup_samples,
        };
        Some(NativeTuner { mean, std_dev: sd, sample_count: samples, is_warmed_up })
    }

    /// Forgets what a route learned: it starts again as new. Unknown routes are left alone.
    #[napi]
    pub fn reset(&self, route: String) {
        let _ = self.atrion.engine().reset(&route, self.atrion.now());
    }

    /// Sets (`Some`, JSON overrides of the engine's config) or removes (`None`) the physics
    /// of the routes `pattern` matches (an exact id, or a prefix ending in `*`).
    #[napi]
    pub fn set_route_config(&self, pattern: String, physics_json: Option<String>) -> Result<()> {
        let config = match physics_json {
            // Merged over the engine's own config, not the model's defaults.
            Some(json) => Some(physics(self.atrion.engine().config().clone(), Some(&json))?),
            None => None,
        };
        self.atrion.set_route_config(&pattern, config).map_err(invalid)
    }
}

/// Reads a call's first `N` arguments (missing ones are `undefined`).
///
/// # Safety
/// `env` and `info` are those N-API passed to the running callback.
unsafe fn call_args<const N: usize>(env: sys::napi_env, info: sys::napi_callback_info) -> Result<[sys::napi_value; N]> {
    let mut argc = N;
    let mut argv = [std::ptr::null_mut(); N];
    // SAFETY: `argv` holds `argc` values; the caller's contract covers `env` and `info`.
    let status = unsafe {
        sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), std::ptr::null_mut(), std::ptr::null_mut())
    };
    if status != sys::Status::napi_ok {
        return Err(invalid("could not read the call's arguments"));
    }
    Ok(argv)
}

/// An integer argument.
///
/// # Safety
/// `value` is a live value of the running callback.
unsafe fn u32_arg(env: sys::napi_env, value: sys::napi_value, what: &str) -> Result<u32> {
    let mut n = 0u32;
    // SAFETY: the caller's contract; a non-number answers a status.
    if unsafe { sys::napi_get_value_uint32(env, value, &mut n) } != sys::Status::napi_ok {
        return Err(invalid(format!("{what} must be a number")));
    }
    Ok(n)
}

/// The callback's answer: the integer, or a thrown error.
///
/// # Safety
/// `env` is the running callback's.
unsafe fn answer(env: sys::napi_env, r: Result<u32>) -> sys::napi_value {
    let mut out = std::ptr::null_mut();
    match r {
        // SAFETY: the caller's contract; `out` receives the new value.
        Ok(code) => unsafe {
            sys::napi_create_uint32(env, code, &mut out);
        },
        Err(e) => {
            let msg = std::ffi::CString::new(e.reason.replace('\0', " ")).unwrap_or_default();
            // SAFETY: the caller's contract; `msg` outlives the call, which copies it.
            unsafe {
                sys::napi_throw_error(env, std::ptr::null(), msg.as_ptr());
            }
        }
    }
    out
}

/// `route(slot, route)`: [`route`] as a plain N-API callback.
unsafe extern "C" fn hot_route(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY (all calls): N-API passed `env` and `info` to this running callback.
    let r = (|| unsafe {
        let [slot, id] = call_args::<2>(env, info)?;
        route(u32_arg(env, slot, "slot")?, RouteRef::from_napi_value(env, id)?)
    })();
    unsafe { answer(env, r) }
}

/// `decide(slot, route, priority)`: [`decide`] as a plain N-API callback.
unsafe extern "C" fn hot_decide(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY (all calls): as in `hot_route`.
    let r = (|| unsafe {
        let [slot, id, p] = call_args::<3>(env, info)?;
        decide(u32_arg(env, slot, "slot")?, RouteRef::from_napi_value(env, id)?, u32_arg(env, p, "priority")?)
    })();
    unsafe { answer(env, r) }
}

/// `report(slot, route, ok)`: [`report`] as a plain N-API callback.
unsafe extern "C" fn hot_report(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY (all calls): as in `hot_route`.
    let r = (|| unsafe {
        let [slot, id, ok] = call_args::<3>(env, info)?;
        let mut okv = false;
        if sys::napi_get_value_bool(env, ok, &mut okv) != sys::Status::napi_ok {
            return Err(invalid("ok must be a boolean"));
        }
        report(u32_arg(env, slot, "slot")?, RouteRef::from_napi_value(env, id)?, okv)
    })();
    unsafe { answer(env, r) }
}

/// The hot functions, `{ route, decide, report }`, as plain N-API callbacks: `route(slot,
/// route)` (the original's `route()`, telemetry and voltage in the shared array),
/// `decide(slot, route, priority)`, `report(slot, route, ok)` (latency and saturation in the
/// shared array). Each returns the packed decision (or the mode's code) and writes the rest
/// into the shared array.
#[napi]
pub fn hot_functions(env: &Env) -> Result<Object<'_>> {
    type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;
    let mut obj = Object::new(env)?;
    let fns: [(&std::ffi::CStr, Callback); 3] =
        [(c"route", hot_route), (c"decide", hot_decide), (c"report", hot_report)];
    for (name, cb) in fns {
        let mut f = std::ptr::null_mut();
        // SAFETY: `env` is this call's; the name is NUL-terminated and its length given.
        let status = unsafe {
            sys::napi_create_function(
                env.raw(),
                name.as_ptr(),
                name.to_bytes().len() as isize,
                Some(cb),
                std::ptr::null_mut(),
                &mut f,
            )
        };
        if status != sys::Status::napi_ok {
            return Err(to_napi("could not create the hot functions"));
        }
        // SAFETY: `f` is the live function just created in `env`.
        let f = unsafe { Unknown::from_raw_unchecked(env.raw(), f) };
        obj.set_named_property(name.to_str().unwrap_or_default(), f)?;
    }
    Ok(obj)
}
