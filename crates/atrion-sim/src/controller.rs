//! The controllers the wind tunnel compares, behind one trait, each fed the same requests.
//!
//! | name | what it is | published defaults used |
//! |---|---|---|
//! | `none` | no protection | |
//! | `breaker` | a count-window circuit breaker as common libraries build it | resilience4j: window 100 calls, failure rate 50%, 10 half-open calls; Polly: 5 s break |
//! | `aimd` | Netflix `AIMDLimit` | initial 20, min 20, max 200, backoff 0.9, timeout 5 s |
//! | `gradient2` | Netflix `Gradient2Limit` | initial 20, min 20, max 200, smoothing 0.2, queue 4, long window 600, RTT tolerance 1.5 |
//! | `envoy` | Envoy's adaptive-concurrency gradient controller | update every 100 ms, p50, min RTT over 50 requests every 60 s at concurrency 3, buffer 25%, max 1000 |
//! | `atrion-reference` | Atrion, [`Model::Reference`] | SPEC 9.1 |
//! | `atrion-default` | Atrion, [`Model::Default`] | `PhysicsConfig::default()` |
//! | `atrion-aimd` | Atrion's default model behind an AIMD concurrency limit: admitted only when both admit | the two above; a scenario's `atrion-default` settings unless it has its own |
//!
//! A scenario may override any of these per controller (`[settings.NAME]`); unknown keys
//! are errors.

use std::collections::VecDeque;

use atrion_core::{Engine, Mode, Model, PhysicsConfig, Priority, Telemetry, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A controller of the wind tunnel, by the name scenarios, settings tables and the command
/// line use (`none`, `breaker`, `aimd`, `gradient2`, `envoy`, `atrion-reference`,
/// `atrion-default`, `atrion-aimd`). Parsing one is the only check a name needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControllerKind {
    /// No protection.
    None,
    /// The count-window circuit breaker.
    Breaker,
    /// Netflix's AIMD limit.
    Aimd,
    /// Netflix's Gradient2 limit.
    Gradient2,
    /// Envoy's adaptive-concurrency gradient controller.
    Envoy,
    /// Atrion's reference model.
    AtrionReference,
    /// Atrion's default model.
    AtrionDefault,
    /// Atrion's default model behind an AIMD limit.
    AtrionAimd,
}

impl ControllerKind {
    /// Every controller, in table order.
    pub const ALL: [ControllerKind; 8] = [
        ControllerKind::None,
        ControllerKind::Breaker,
        ControllerKind::Aimd,
        ControllerKind::Gradient2,
        ControllerKind::Envoy,
        ControllerKind::AtrionReference,
        ControllerKind::AtrionDefault,
        ControllerKind::AtrionAimd,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

/// Ordered by name, as the settings tables that are keyed by it are written.
impl Ord for ControllerKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for ControllerKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for ControllerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ControllerKind {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, SettingsError> {
        ControllerKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| SettingsError::Unknown(s.to_owned()))
    }
}

/// The names of all controllers, in table order ([`ControllerKind::name`]).
pub const NAMES: [&str; 8] =
    ["none", "breaker", "aimd", "gradient2", "envoy", "atrion-reference", "atrion-default", "atrion-aimd"];

/// Settings that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// No controller has this name.
    #[error("unknown controller `{0}` (known: {NAMES:?})")]
    Unknown(String),
    /// The settings table has unknown keys or mistyped values.
    #[error("settings of `{controller}`: {source}")]
    Malformed {
        /// The controller.
        controller: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// The merged physics config breaks a rule.
    #[error("settings of `{controller}`: {source}")]
    Physics {
        /// The controller.
        controller: String,
        /// Why.
        #[source]
        source: atrion_core::ConfigError,
    },
    /// A value breaks a rule.
    #[error("settings of `{controller}`: {reason}")]
    Invalid {
        /// The controller.
        controller: String,
        /// Why.
        reason: String,
    },
}

/// The outcome of one admitted request, as the controller sees it when it completes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Latency seen by the caller (a timeout counts as the timeout), milliseconds.
    pub latency_ms: f64,
    /// Succeeded (no error, no timeout).
    pub ok: bool,
    /// Share of the route's workers and queue in use, in [0, 1].
    pub saturation: f64,
    /// Requests in flight on the route when this one was admitted, itself included.
    pub inflight: u32,
}

/// Open, half-open or closed: what transitions are counted between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Admitting by the usual rule.
    Closed = 0,
    /// Letting probes through.
    HalfOpen = 1,
    /// Shedding everything.
    Open = 2,
}

impl From<Mode> for State {
    /// Atrion's modes: bootstrap and operational admit by the usual rule (closed).
    fn from(mode: Mode) -> State {
        match mode {
            Mode::Bootstrap | Mode::Operational => State::Closed,
            Mode::Open => State::Open,
            Mode::HalfOpen => State::HalfOpen,
        }
    }
}

/// What a controller shows of a route at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauge {
    /// Resistance (Atrion), concurrency limit (limiters), failure rate in % (breaker).
    pub level: f64,
    /// Its state.
    pub state: State,
}

/// One admission controller over all routes of a scenario (routes are indexed).
pub trait Controller {
    /// The controller's name (one of [`NAMES`]).
    fn name(&self) -> &'static str;
    /// Whether a request on `route` may go ahead at `now` (ns) with `inflight` requests
    /// already in flight there.
    fn admit(&mut self, route: usize, now: u64, inflight: u32) -> bool;
    /// An admitted request completed.
    fn complete(&mut self, route: usize, now: u64, sample: &Sample);
    /// The route's level and state.
    fn gauge(&self, route: usize) -> Gauge;
    /// State transitions so far, over all routes.
    fn transitions(&self) -> u64;
    /// A balancer's choice among `members` (route indexes) for a request at `now`; `u` is
    /// uniform in [0, 1). By default, at random among the members not open (all of them
    /// when every one is).
    fn select(&mut self, members: &[usize], now: u64, u: f64) -> usize {
        let _ = now;
        let closed = members.iter().filter(|&&m| self.gauge(m).state != State::Open).count();
        let pick = |n: usize| ((u * n as f64) as usize).min(n.saturating_sub(1));
        if closed == 0 {
            return members[pick(members.len())];
        }
        let k = pick(closed);
        members.iter().copied().filter(|&m| self.gauge(m).state != State::Open).nth(k).unwrap_or(members[0])
    }
    /// Telemetry-driven experiments: one observation per tick. Returns false when the
    /// controller does not apply (limiters learn from requests, not from rates).
    fn tick(&mut self, route: usize, now: u64, latency_ms: f64, error: f64, saturation: f64) -> bool {
        let _ = (route, now, latency_ms, error, saturation);
        false
    }
}

/// What a controller needs to know of a route.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The route's name.
    pub name: String,
    /// The priority of its requests; when absent, each controller's default (Atrion's
    /// reference model: critical, its default voltage of 100; the default model: normal,
    /// as the `atrion` facade).
    pub priority: Option<Priority>,
    /// Atrion's physics for this route only (`[route.atrion]`), merged over the
    /// controller's settings.
    pub atrion: Option<toml::Table>,
}

/// Builds controller `kind` for `routes`, with a scenario's overrides.
pub fn build(
    kind: ControllerKind,
    routes: &[RouteInfo],
    settings: Option<&toml::Table>,
) -> Result<Box<dyn Controller>, SettingsError> {
    let n = routes.len();
    let name = kind.name();
    Ok(match kind {
        ControllerKind::None => {
            parse::<NoSettings>(name, settings)?;
            Box::new(Unprotected)
        }
        ControllerKind::Breaker => Box::new(Breaker::new(check(name, parse::<BreakerSettings>(name, settings)?)?, n)),
        ControllerKind::Aimd => Box::new(Aimd::new(check(name, parse::<AimdSettings>(name, settings)?)?, n)),
        ControllerKind::Gradient2 => {
            Box::new(Gradient2::new(check(name, parse::<Gradient2Settings>(name, settings)?)?, n))
        }
        ControllerKind::Envoy => Box::new(Envoy::new(check(name, parse::<EnvoySettings>(name, settings)?)?, n)),
        ControllerKind::AtrionReference => {
            Box::new(Atrion::new("atrion-reference", Model::Reference, routes, settings)?)
        }
        ControllerKind::AtrionDefault => Box::new(Atrion::new("atrion-default", Model::Default, routes, settings)?),
        ControllerKind::AtrionAimd => {
            // `[settings.atrion-aimd]`: an `aimd` table for the limit, the rest for the physics.
            let mut physics = settings.cloned().unwrap_or_default();
            let aimd = match physics.remove("aimd") {
                None => AimdSettings::default(),
                Some(toml::Value::Table(t)) => parse(name, Some(&t))?,
                Some(_) => {
                    return Err(SettingsError::Invalid {
                        controller: name.to_owned(),
                        reason: "`aimd` must be a table".into(),
                    });
                }
            };
            let atrion = Atrion::new("atrion-aimd", Model::Default, routes, Some(&physics))?;
            Box::new(Paired { atrion, limit: Aimd::new(check(name, aimd)?, n) })
        }
    })
}

fn parse<T: DeserializeOwned + Default>(name: &str, settings: Option<&toml::Table>) -> Result<T, SettingsError> {
    match settings {
        None => Ok(T::default()),
        Some(t) => T::deserialize(toml::Value::Table(t.clone()))
            .map_err(|source| SettingsError::Malformed { controller: name.to_owned(), source }),
    }
}

fn check<T: Checked>(name: &str, s: T) -> Result<T, SettingsError> {
    match s.problem() {
        None => Ok(s),
        Some(reason) => Err(SettingsError::Invalid { controller: name.to_owned(), reason }),
    }
}

/// Settings that can say what is wrong with them.
trait Checked {
    /// The first rule broken, in words naming the key.
    fn problem(&self) -> Option<String>;
}

/// The largest limit, window or count a setting may hold.
const MAX_COUNT: u32 = 1_000_000;
/// The longest duration a setting may hold, milliseconds (one day).
const MAX_MS: f64 = 86_400_000.0;

fn limits_problem(initial: u32, min: u32, max: u32) -> Option<String> {
    (min < 1 || min > max || initial < min || initial > max || max > MAX_COUNT).then(|| {
        format!("need 1 <= min_limit ({min}) <= initial_limit ({initial}) <= max_limit ({max}) <= {MAX_COUNT}")
    })
}

/// `Some(message)` when `v` is not a finite number in `range`.
fn outside(key: &str, v: f64, range: std::ops::RangeInclusive<f64>, words: &str) -> Option<String> {
    (!(v.is_finite() && range.contains(&v))).then(|| format!("`{key}` must be {words}, got {v}"))
}

fn duration_ms(key: &str, v: f64) -> Option<String> {
    outside(key, v, f64::MIN_POSITIVE..=MAX_MS, "a positive number of milliseconds up to one day")
}

fn count(key: &str, v: u32, min: u32) -> Option<String> {
    (v < min || v > MAX_COUNT).then(|| format!("`{key}` must be in [{min}, {MAX_COUNT}], got {v}"))
}

impl Checked for BreakerSettings {
    fn problem(&self) -> Option<String> {
        count("window", self.window, 1)
            .or_else(|| outside("failure_threshold", self.failure_threshold, 0.0..=1.0, "a rate in [0, 1]"))
            .or_else(|| count("min_calls", self.min_calls, 0))
            .or_else(|| duration_ms("open_ms", self.open_ms))
            .or_else(|| count("half_open_calls", self.half_open_calls, 0))
            .or_else(|| self.slow_call_ms.and_then(|v| duration_ms("slow_call_ms", v)))
    }
}

impl Checked for EnvoySettings {
    fn problem(&self) -> Option<String> {
        duration_ms("interval_ms", self.interval_ms)
            .or_else(|| {
                let p = self.percentile;
                (!(p.is_finite() && p > 0.0 && p < 1.0)).then(|| format!("`percentile` must be in (0, 1), got {p}"))
            })
            .or_else(|| count("min_concurrency", self.min_concurrency, 1))
            .or_else(|| {
                count("max_limit", self.max_limit, self.min_concurrency.max(1))
                    .map(|m| format!("{m} (and >= min_concurrency)"))
            })
            .or_else(|| {
                outside(
                    "min_rtt_interval_s",
                    self.min_rtt_interval_s,
                    f64::MIN_POSITIVE..=86_400.0,
                    "positive seconds up to one day",
                )
            })
            .or_else(|| count("min_rtt_requests", self.min_rtt_requests, 1))
            .or_else(|| outside("buffer", self.buffer, 0.0..=100.0, "a fraction in [0, 100]"))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

/// No protection: everything is admitted.
#[derive(Debug)]
pub struct Unprotected;

impl Controller for Unprotected {
    fn name(&self) -> &'static str {
        "none"
    }
    fn admit(&mut self, _: usize, _: u64, _: u32) -> bool {
        true
    }
    fn complete(&mut self, _: usize, _: u64, _: &Sample) {}
    fn gauge(&self, _: usize) -> Gauge {
        Gauge { level: 0.0, state: State::Closed }
    }
    fn transitions(&self) -> u64 {
        0
    }
}

const MS: f64 = 1e6;

/// Settings of the count-window breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Calls in the sliding window.
    pub window: u32,
    /// Failure rate at which the breaker opens, in [0, 1].
    pub failure_threshold: f64,
    /// Calls needed in the window before the rate is judged.
    pub min_calls: u32,
    /// How long it stays open, milliseconds.
    pub open_ms: f64,
    /// Probes let through while half-open; 0 closes straight after the open wait.
    pub half_open_calls: u32,
    /// A call slower than this counts as a failure (off when absent), milliseconds.
    pub slow_call_ms: Option<f64>,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            window: 100,
            failure_threshold: 0.5,
            min_calls: 100,
            open_ms: 5_000.0,
            half_open_calls: 10,
            slow_call_ms: None,
        }
    }
}

#[derive(Debug, Clone)]
enum BreakerState {
    Closed,
    Open { until: u64 },
    HalfOpen { issued: u32, done: u32, failed: u32 },
}

#[derive(Debug, Clone)]
struct BreakerRoute {
    state: BreakerState,
    window: VecDeque<bool>,
    failures: u32,
}

/// A count-window circuit breaker: opens when the failure rate of the last `window` calls
/// reaches the threshold, stays open for a fixed wait, then lets `half_open_calls` probes
/// through and closes if their failure rate is under the threshold.
#[derive(Debug)]
pub struct Breaker {
    s: BreakerSettings,
    routes: Vec<BreakerRoute>,
    transitions: u64,
}

impl Breaker {
    /// A breaker for `n` routes.
    pub fn new(s: BreakerSettings, n: usize) -> Self {
        let route = BreakerRoute { state: BreakerState::Closed, window: VecDeque::new(), failures: 0 };
        Breaker { s, routes: vec![route; n], transitions: 0 }
    }

    fn set(&mut self, route: usize, state: BreakerState) {
        let r = &mut self.routes[route];
        if std::mem::discriminant(&r.state) != std::mem::discriminant(&state) {
            self.transitions += 1;
        }
        if matches!(state, BreakerState::Closed) {
            r.window.clear();
            r.failures = 0;
        }
        r.state = state;
    }

    fn open(&mut self, route: usize, now: u64) {
        let until = now + (self.s.open_ms * MS) as u64;
        self.set(route, BreakerState::Open { until });
    }

    /// The state after the open wait has run out: half-open, or closed without probes.
    fn after_wait(&mut self, route: usize) {
        let next = if self.s.half_open_calls == 0 {
            BreakerState::Closed
        } else {
            BreakerState::HalfOpen { issued: 0, done: 0, failed: 0 }
        };
        self.set(route, next);
    }
}

impl Controller for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }

    fn admit(&mut self, route: usize, now: u64, _: u32) -> bool {
        if let BreakerState::Open { until } = self.routes[route].state {
            if now < until {
                return false;
            }
            self.after_wait(route);
        }
        match &mut self.routes[route].state {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { issued, .. } => {
                let go = *issued < self.s.half_open_calls;
                *issued += u32::from(go);
                go
            }
        }
    }

    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        let failed = !sample.ok || self.s.slow_call_ms.is_some_and(|slow| sample.latency_ms > slow);
        let s = &self.s;
        let r = &mut self.routes[route];
        match &mut r.state {
            BreakerState::Closed => {
                r.window.push_back(failed);
                r.failures += u32::from(failed);
                if r.window.len() > s.window as usize {
                    r.failures -= u32::from(r.window.pop_front().unwrap_or(false));
                }
                let calls = r.window.len() as u32;
                if calls >= s.min_calls.max(1) && f64::from(r.failures) / f64::from(calls) >= s.failure_threshold {
                    self.open(route, now);
                }
            }
            BreakerState::HalfOpen { done, failed: f, .. } => {
                *done += 1;
                *f += u32::from(failed);
                if *done >= s.half_open_calls {
                    let rate = f64::from(*f) / f64::from(*done);
                    if rate >= s.failure_threshold {
                        self.open(route, now);
                    } else {
                        self.set(route, BreakerState::Closed);
                    }
                }
            }
            // Calls admitted before the breaker opened finish while it is open.
            BreakerState::Open { .. } => {}
        }
    }

    fn gauge(&self, route: usize) -> Gauge {
        let r = &self.routes[route];
        let rate = if r.window.is_empty() { 0.0 } else { 100.0 * f64::from(r.failures) / r.window.len() as f64 };
        let state = match r.state {
            BreakerState::Closed => State::Closed,
            BreakerState::Open { .. } => State::Open,
            BreakerState::HalfOpen { .. } => State::HalfOpen,
        };
        Gauge { level: rate, state }
    }

    fn transitions(&self) -> u64 {
        self.transitions
    }

    /// The tick form of the reference's flapping test: closed, it opens when the tick's
    /// error rate is above the threshold; open, it waits `open_ms`, then closes (or goes
    /// half-open) on the first tick after the wait, without judging that tick.
    fn tick(&mut self, route: usize, now: u64, _: f64, error: f64, _: f64) -> bool {
        match self.routes[route].state {
            BreakerState::Open { until } => {
                if now >= until {
                    self.after_wait(route);
                }
            }
            BreakerState::HalfOpen { .. } => {
                if error > self.s.failure_threshold {
                    self.open(route, now);
                } else {
                    self.set(route, BreakerState::Closed);
                }
            }
            BreakerState::Closed => {
                if error > self.s.failure_threshold {
                    self.open(route, now);
                }
            }
        }
        true
    }
}

/// Settings of Netflix's AIMD limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AimdSettings {
    /// Starting limit.
    pub initial_limit: u32,
    /// Lowest limit.
    pub min_limit: u32,
    /// Highest limit.
    pub max_limit: u32,
    /// Factor applied on a drop.
    pub backoff_ratio: f64,
    /// A call slower than this counts as a drop, milliseconds.
    pub timeout_ms: f64,
}

impl Default for AimdSettings {
    fn default() -> Self {
        AimdSettings { initial_limit: 20, min_limit: 20, max_limit: 200, backoff_ratio: 0.9, timeout_ms: 5_000.0 }
    }
}

impl Checked for AimdSettings {
    fn problem(&self) -> Option<String> {
        limits_problem(self.initial_limit, self.min_limit, self.max_limit)
            .or_else(|| {
                let b = self.backoff_ratio;
                (!(b.is_finite() && b > 0.0 && b < 1.0)).then(|| format!("`backoff_ratio` must be in (0, 1), got {b}"))
            })
            .or_else(|| duration_ms("timeout_ms", self.timeout_ms))
    }
}

/// Netflix `AIMDLimit`: on a drop (error or timeout) `limit = floor(limit * backoff)`; else,
/// when at least half the limit is in use, `limit + 1`; clamped to `[min, max]`. A request
/// is admitted while in-flight requests are under the limit.
#[derive(Debug)]
pub struct Aimd {
    s: AimdSettings,
    limits: Vec<u32>,
}

impl Aimd {
    /// An AIMD limit per route.
    pub fn new(s: AimdSettings, n: usize) -> Self {
        Aimd { limits: vec![s.initial_limit; n], s }
    }

    /// The formula: the limit after one sample.
    pub fn next_limit(&self, limit: u32, sample: &Sample) -> u32 {
        let next = if !sample.ok || sample.latency_ms > self.s.timeout_ms {
            (f64::from(limit) * self.s.backoff_ratio) as u32
        } else if sample.inflight * 2 >= limit {
            limit + 1
        } else {
            limit
        };
        next.clamp(self.s.min_limit, self.s.max_limit)
    }
}

impl Controller for Aimd {
    fn name(&self) -> &'static str {
        "aimd"
    }
    fn admit(&mut self, route: usize, _: u64, inflight: u32) -> bool {
        inflight < self.limits[route]
    }
    fn complete(&mut self, route: usize, _: u64, sample: &Sample) {
        self.limits[route] = self.next_limit(self.limits[route], sample);
    }
    fn gauge(&self, route: usize) -> Gauge {
        Gauge { level: f64::from(self.limits[route]), state: State::Closed }
    }
    fn transitions(&self) -> u64 {
        0
    }
}

/// Settings of Netflix's Gradient2 limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gradient2Settings {
    /// Starting limit.
    pub initial_limit: u32,
    /// Lowest limit.
    pub min_limit: u32,
    /// Highest limit (`maxConcurrency`).
    pub max_limit: u32,
    /// How much of the new estimate is taken per sample.
    pub smoothing: f64,
    /// Growth allowed per sample while latency is low.
    pub queue_size: f64,
    /// Samples in the long RTT average.
    pub long_window: u32,
    /// Tolerated ratio of short to long RTT before the limit shrinks.
    pub rtt_tolerance: f64,
}

impl Default for Gradient2Settings {
    fn default() -> Self {
        Gradient2Settings {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            smoothing: 0.2,
            queue_size: 4.0,
            long_window: 600,
            rtt_tolerance: 1.5,
        }
    }
}

impl Checked for Gradient2Settings {
    fn problem(&self) -> Option<String> {
        limits_problem(self.initial_limit, self.min_limit, self.max_limit)
            .or_else(|| outside("smoothing", self.smoothing, f64::MIN_POSITIVE..=1.0, "in (0, 1]"))
            .or_else(|| outside("queue_size", self.queue_size, 0.0..=f64::from(MAX_COUNT), "finite and >= 0"))
            .or_else(|| count("long_window", self.long_window, 1))
            .or_else(|| outside("rtt_tolerance", self.rtt_tolerance, 1.0..=1e6, ">= 1"))
    }
}

/// Netflix's exponential average with a warm-up: the plain mean of the first 10 samples,
/// then `v = v (1 - f) + x f` with `f = 2 / (window + 1)`.
#[derive(Debug, Clone, Copy, Default)]
struct ExpAvg {
    count: u32,
    sum: f64,
    value: f64,
}

impl ExpAvg {
    fn add(&mut self, x: f64, window: u32) -> f64 {
        if self.count < 10 {
            self.count += 1;
            self.sum += x;
            self.value = self.sum / f64::from(self.count);
        } else {
            let f = 2.0 / (f64::from(window) + 1.0);
            self.value = self.value * (1.0 - f) + x * f;
        }
        self.value
    }
}

#[derive(Debug, Clone, Copy)]
struct Gradient2Route {
    limit: f64,
    long: ExpAvg,
}

/// Netflix `Gradient2Limit`: `gradient = clamp(tolerance * longRtt / shortRtt, 0.5, 1)`,
/// `new = limit * gradient + queue`, `limit = limit (1 - smoothing) + new * smoothing`, not
/// updated while fewer than half the limit are in flight; the long RTT is cut by 10%
/// whenever it is more than twice the short one.
#[derive(Debug)]
pub struct Gradient2 {
    s: Gradient2Settings,
    routes: Vec<Gradient2Route>,
}

impl Gradient2 {
    /// A Gradient2 limit per route.
    pub fn new(s: Gradient2Settings, n: usize) -> Self {
        let route = Gradient2Route { limit: f64::from(s.initial_limit), long: ExpAvg::default() };
        Gradient2 { routes: vec![route; n], s }
    }

    /// The formula: one sample's update of a route's (limit, long RTT average).
    fn update(&self, r: &mut Gradient2Route, rtt: f64, inflight: u32) {
        let s = &self.s;
        let short = rtt.max(1e-6);
        let long = r.long.add(short, s.long_window);
        if long / short > 2.0 {
            r.long.value *= 0.9;
        }
        if f64::from(inflight) < r.limit / 2.0 {
            return;
        }
        let gradient = (s.rtt_tolerance * long / short).clamp(0.5, 1.0);
        let new = r.limit * gradient + s.queue_size;
        let new = r.limit * (1.0 - s.smoothing) + new * s.smoothing;
        r.limit = new.clamp(f64::from(s.min_limit), f64::from(s.max_limit));
    }
}

impl Controller for Gradient2 {
    fn name(&self) -> &'static str {
        "gradient2"
    }
    fn admit(&mut self, route: usize, _: u64, inflight: u32) -> bool {
        f64::from(inflight) < self.routes[route].limit.floor()
    }
    fn complete(&mut self, route: usize, _: u64, sample: &Sample) {
        let mut r = self.routes[route];
        self.update(&mut r, sample.latency_ms, sample.inflight);
        self.routes[route] = r;
    }
    fn gauge(&self, route: usize) -> Gauge {
        Gauge { level: self.routes[route].limit.floor(), state: State::Closed }
    }
    fn transitions(&self) -> u64 {
        0
    }
}

/// Settings of Envoy's adaptive-concurrency gradient controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvoySettings {
    /// How often the limit is recomputed, milliseconds.
    pub interval_ms: f64,
    /// The latency percentile summarising a window, in (0, 1).
    pub percentile: f64,
    /// Highest limit.
    pub max_limit: u32,
    /// How often the minimum RTT is measured again, seconds.
    pub min_rtt_interval_s: f64,
    /// Requests sampled for the minimum RTT.
    pub min_rtt_requests: u32,
    /// Concurrency while the minimum RTT is measured.
    pub min_concurrency: u32,
    /// Headroom over the minimum RTT, as a fraction of it.
    pub buffer: f64,
}

impl Default for EnvoySettings {
    fn default() -> Self {
        EnvoySettings {
            interval_ms: 100.0,
            percentile: 0.5,
            max_limit: 1_000,
            min_rtt_interval_s: 60.0,
            min_rtt_requests: 50,
            min_concurrency: 3,
            buffer: 0.25,
        }
    }
}

#[derive(Debug, Clone)]
struct EnvoyRoute {
    limit: f64,
    /// Measuring the minimum RTT (concurrency pinned to `min_concurrency`).
    measuring: bool,
    min_rtt: f64,
    next_min_rtt: u64,
    window_end: u64,
    samples: Vec<f64>,
}

/// `gradient = clamp(minRTT (1 + buffer) / sampleRTT, 0.5, 2)`, `new = gradient * limit`,
/// then `new + sqrt(new)`, clamped to `[1, max_limit]`.
fn envoy_limit(s: &EnvoySettings, limit: f64, min_rtt: f64, sample_rtt: f64) -> f64 {
    let gradient = (min_rtt * (1.0 + s.buffer) / sample_rtt.max(1e-9)).clamp(0.5, 2.0);
    let new = gradient * limit;
    (new + new.sqrt()).clamp(1.0, f64::from(s.max_limit))
}

/// Envoy's gradient controller: every interval, `gradient = clamp((minRTT (1 + buffer)) /
/// sampleRTT, 0.5, 2)` with `sampleRTT` the window's percentile, and `limit = gradient *
/// limit + sqrt(gradient * limit)`; the minimum RTT is re-measured periodically with the
/// concurrency pinned low.
#[derive(Debug)]
pub struct Envoy {
    s: EnvoySettings,
    routes: Vec<EnvoyRoute>,
}

impl Envoy {
    /// An Envoy controller per route.
    pub fn new(s: EnvoySettings, n: usize) -> Self {
        let route = EnvoyRoute {
            limit: f64::from(s.min_concurrency),
            measuring: true,
            min_rtt: 0.0,
            next_min_rtt: 0,
            window_end: 0,
            samples: Vec::new(),
        };
        Envoy { routes: vec![route; n], s }
    }

    /// The formula: the next limit from the current one, the minimum RTT and a window's RTT.
    pub fn next_limit(&self, limit: f64, min_rtt: f64, sample_rtt: f64) -> f64 {
        envoy_limit(&self.s, limit, min_rtt, sample_rtt)
    }

    fn percentile(samples: &mut [f64], q: f64) -> f64 {
        samples.sort_by(f64::total_cmp);
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)]
    }
}

impl Controller for Envoy {
    fn name(&self) -> &'static str {
        "envoy"
    }
    fn admit(&mut self, route: usize, now: u64, inflight: u32) -> bool {
        let r = &mut self.routes[route];
        if !r.measuring && now >= r.next_min_rtt {
            r.measuring = true;
            r.samples.clear();
        }
        let limit = if r.measuring { f64::from(self.s.min_concurrency) } else { r.limit };
        f64::from(inflight) < limit.floor()
    }
    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        let s = &self.s;
        let r = &mut self.routes[route];
        r.samples.push(sample.latency_ms);
        if r.measuring {
            if r.samples.len() < s.min_rtt_requests as usize {
                return;
            }
            r.min_rtt = Self::percentile(&mut r.samples, s.percentile);
            r.measuring = false;
            r.next_min_rtt = now + (s.min_rtt_interval_s * 1e9) as u64;
        } else if now >= r.window_end {
            let sample_rtt = Self::percentile(&mut r.samples, s.percentile);
            r.limit = envoy_limit(s, r.limit, r.min_rtt, sample_rtt);
        } else {
            return;
        }
        r.window_end = now + (s.interval_ms * MS) as u64;
        r.samples.clear();
    }
    fn gauge(&self, route: usize) -> Gauge {
        let r = &self.routes[route];
        let level = if r.measuring { f64::from(self.s.min_concurrency) } else { r.limit.floor() };
        Gauge { level, state: State::Closed }
    }
    fn transitions(&self) -> u64 {
        0
    }
}

/// Atrion behind a concurrency limit: the limit bounds what is in flight (overload), the
/// physics sheds failing routes (trauma, priorities).
#[derive(Debug)]
pub struct Paired {
    atrion: Atrion,
    limit: Aimd,
}

impl Controller for Paired {
    fn name(&self) -> &'static str {
        "atrion-aimd"
    }
    fn admit(&mut self, route: usize, now: u64, inflight: u32) -> bool {
        self.limit.admit(route, now, inflight) && self.atrion.admit(route, now, inflight)
    }
    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        self.limit.complete(route, now, sample);
        self.atrion.complete(route, now, sample);
    }
    fn gauge(&self, route: usize) -> Gauge {
        self.atrion.gauge(route)
    }
    fn select(&mut self, members: &[usize], now: u64, u: f64) -> usize {
        self.atrion.select(members, now, u)
    }
    fn transitions(&self) -> u64 {
        self.atrion.transitions()
    }
}

/// Atrion: the engine itself, one route per scenario route, time passed in.
pub struct Atrion {
    name: &'static str,
    engine: Engine,
    routes: Vec<String>,
    priorities: Vec<Priority>,
    states: Vec<State>,
    transitions: u64,
}

impl std::fmt::Debug for Atrion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Atrion").field("name", &self.name).field("routes", &self.routes).finish_non_exhaustive()
    }
}

/// `model`'s default config with a scenario's overrides merged in (nested tables merge key
/// by key), validated.
pub fn physics_config(
    controller: &str,
    model: Model,
    settings: Option<&toml::Table>,
) -> Result<PhysicsConfig, SettingsError> {
    let base = PhysicsConfig::for_model(model);
    let Some(overrides) = settings else { return Ok(base) };
    let mut table = toml::Table::try_from(&base).map_err(|e| SettingsError::Invalid {
        controller: controller.to_owned(),
        reason: format!("cannot encode the base config: {e}"),
    })?;
    merge(&mut table, overrides);
    let cfg = PhysicsConfig::deserialize(toml::Value::Table(table))
        .map_err(|source| SettingsError::Malformed { controller: controller.to_owned(), source })?;
    cfg.validated().map_err(|source| SettingsError::Physics { controller: controller.to_owned(), source })
}

fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Atrion {
    /// An engine of `model` with the routes registered.
    pub fn new(
        name: &'static str,
        model: Model,
        routes: &[RouteInfo],
        settings: Option<&toml::Table>,
    ) -> Result<Self, SettingsError> {
        let cfg = physics_config(name, model, settings)?;
        let engine =
            Engine::new(cfg).map_err(|source| SettingsError::Physics { controller: name.to_owned(), source })?;
        for r in routes {
            let Some(own) = &r.atrion else { continue };
            let mut merged = settings.cloned().unwrap_or_default();
            merge(&mut merged, own);
            let cfg = physics_config(name, model, Some(&merged))?;
            engine.set_route_config(&r.name, Some(cfg)).map_err(|e| SettingsError::Invalid {
                controller: name.to_owned(),
                reason: format!("route `{}`: {e}", r.name),
            })?;
        }
        Ok(Atrion {
            name,
            engine,
            routes: routes.iter().map(|r| r.name.clone()).collect(),
            priorities: routes
                .iter()
                .map(|r| {
                    r.priority.unwrap_or(match model {
                        Model::Reference => Priority::Critical,
                        Model::Default => Priority::Normal,
                    })
                })
                .collect(),
            states: vec![State::Closed; routes.len()],
            transitions: 0,
        })
    }

    fn track(&mut self, route: usize, mode: Mode) {
        let state = State::from(mode);
        if self.states[route] != state {
            self.states[route] = state;
            self.transitions += 1;
        }
    }
}

impl Controller for Atrion {
    fn name(&self) -> &'static str {
        self.name
    }
    fn admit(&mut self, route: usize, now: u64, _: u32) -> bool {
        let d = self.engine.decide(&self.routes[route], Timestamp::from_nanos(now), self.priorities[route]);
        self.track(route, d.mode);
        d.is_admitted()
    }
    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        // The simulator only produces valid values; a rejected one is dropped, not guessed.
        if let Ok(t) = Telemetry::outcome(sample.latency_ms, sample.ok, sample.saturation) {
            let status = self.engine.report(&self.routes[route], t, Timestamp::from_nanos(now));
            self.track(route, status.mode);
        }
    }
    fn gauge(&self, route: usize) -> Gauge {
        match self.engine.status(&self.routes[route]) {
            Ok(s) => Gauge { level: s.resistance, state: State::from(s.mode) },
            Err(_) => Gauge { level: self.engine.config().r_base, state: State::Closed },
        }
    }
    fn transitions(&self) -> u64 {
        self.transitions
    }
    /// Softmax of `exp(-R)` over the members not open (SPEC 9.1, beta = 1); a member not
    /// seen yet counts as new and healthy; at random when every member is open.
    fn select(&mut self, members: &[usize], now: u64, u: f64) -> usize {
        let names: Vec<&str> = members.iter().map(|&m| self.routes[m].as_str()).collect();
        match self.engine.select(&names, Timestamp::from_nanos(now), 1.0, u) {
            Some(i) => members[i],
            None => members[((u * members.len() as f64) as usize).min(members.len() - 1)],
        }
    }
    fn tick(&mut self, route: usize, now: u64, latency_ms: f64, error: f64, saturation: f64) -> bool {
        if let Ok(t) = Telemetry::unbounded(latency_ms, error, saturation) {
            let status = self.engine.report(&self.routes[route], t, Timestamp::from_nanos(now));
            self.track(route, status.mode);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latency_ms: f64, ok: bool, inflight: u32) -> Sample {
        Sample { latency_ms, ok, saturation: 0.0, inflight }
    }

    #[test]
    fn aimd_adds_one_when_busy_and_multiplies_on_a_drop() {
        let a = Aimd::new(AimdSettings::default(), 1);
        assert_eq!(a.next_limit(40, &sample(10.0, true, 20)), 41, "inflight * 2 >= limit: +1");
        assert_eq!(a.next_limit(40, &sample(10.0, true, 19)), 40, "app-limited: unchanged");
        assert_eq!(a.next_limit(40, &sample(10.0, false, 30)), 36, "drop: floor(40 * 0.9)");
        assert_eq!(a.next_limit(40, &sample(6_000.0, true, 30)), 36, "slower than the timeout is a drop");
        assert_eq!(a.next_limit(21, &sample(10.0, false, 30)), 20, "clamped to min");
        assert_eq!(a.next_limit(200, &sample(10.0, true, 200)), 200, "clamped to max");
    }

    #[test]
    fn aimd_admits_under_the_limit() {
        let mut a = Aimd::new(AimdSettings::default(), 1);
        assert!(a.admit(0, 0, 19));
        assert!(!a.admit(0, 0, 20));
    }

    #[test]
    fn exp_avg_is_a_plain_mean_for_ten_samples_then_exponential() {
        let mut m = ExpAvg::default();
        for x in 1..=10 {
            m.add(f64::from(x), 600);
        }
        assert_eq!(m.value, 5.5);
        let f = 2.0 / 601.0;
        assert!((m.add(100.0, 600) - (5.5 * (1.0 - f) + 100.0 * f)).abs() < 1e-12);
    }

    #[test]
    fn gradient2_follows_its_formula() {
        let g = Gradient2::new(Gradient2Settings::default(), 1);
        let mut r = Gradient2Route { limit: 100.0, long: ExpAvg { count: 10, sum: 0.0, value: 10.0 } };
        // Short RTT 30 ms against a long 10 ms: gradient clamps at 0.5; new = 100 * 0.5 + 4 =
        // 54; smoothed: 100 * 0.8 + 54 * 0.2 = 90.8.
        g.update(&mut r, 30.0, 80);
        let long = 10.0 * (1.0 - 2.0 / 601.0) + 30.0 * 2.0 / 601.0;
        let gradient = (1.5 * long / 30.0_f64).clamp(0.5, 1.0);
        let expected = 100.0 * 0.8 + (100.0 * gradient + 4.0) * 0.2;
        assert!((r.limit - expected).abs() < 1e-9, "{} vs {expected}", r.limit);
        // App-limited (inflight under half the limit): unchanged.
        let before = r.limit;
        g.update(&mut r, 30.0, 10);
        assert_eq!(r.limit, before);
        // Low RTT: gradient 1, the limit grows by smoothing * queue_size.
        let mut r = Gradient2Route { limit: 50.0, long: ExpAvg { count: 10, sum: 0.0, value: 10.0 } };
        g.update(&mut r, 10.0, 50);
        assert!((r.limit - 50.8).abs() < 1e-9, "{}", r.limit);
    }

    #[test]
    fn gradient2_cuts_a_long_rtt_twice_the_short_one() {
        let g = Gradient2::new(Gradient2Settings::default(), 1);
        let mut r = Gradient2Route { limit: 20.0, long: ExpAvg { count: 10, sum: 0.0, value: 100.0 } };
        g.update(&mut r, 10.0, 0);
        let long = 100.0 * (1.0 - 2.0 / 601.0) + 10.0 * 2.0 / 601.0;
        assert!((r.long.value - long * 0.9).abs() < 1e-9);
    }

    #[test]
    fn envoy_gradient_and_headroom() {
        let e = Envoy::new(EnvoySettings::default(), 1);
        // minRTT 10, buffer 25%: sample 12.5 gives gradient 1 and adds sqrt(limit).
        assert!((e.next_limit(100.0, 10.0, 12.5) - 110.0).abs() < 1e-9);
        // A sample of 100 clamps the gradient at 0.5: 50 + sqrt(50).
        assert!((e.next_limit(100.0, 10.0, 100.0) - (50.0 + 50f64.sqrt())).abs() < 1e-9);
        // A fast sample clamps at 2: 200 + sqrt(200).
        assert!((e.next_limit(100.0, 10.0, 1.0) - (200.0 + 200f64.sqrt())).abs() < 1e-9);
    }

    #[test]
    fn envoy_measures_min_rtt_at_min_concurrency_first() {
        let mut e = Envoy::new(EnvoySettings::default(), 1);
        assert!(e.admit(0, 0, 2) && !e.admit(0, 0, 3), "pinned at min_concurrency while measuring");
        for i in 0..50 {
            e.complete(0, i, &sample(10.0 + f64::from(i as u32 % 3), true, 1));
        }
        assert_eq!(e.routes[0].min_rtt, 11.0, "the p50 of the samples");
        assert!(!e.routes[0].measuring);
    }

    #[test]
    fn breaker_opens_at_the_failure_rate_then_probes_then_closes() {
        let s =
            BreakerSettings { window: 10, min_calls: 10, open_ms: 1_000.0, half_open_calls: 2, ..Default::default() };
        let mut b = Breaker::new(s, 1);
        for i in 0..10 {
            assert!(b.admit(0, i, 0));
            b.complete(0, i, &sample(5.0, i % 2 == 0 && i < 9, 1)); // 5 failures in 10
        }
        assert_eq!(b.gauge(0).state, State::Open, "50% >= threshold");
        assert!(!b.admit(0, 500_000_000, 0), "open for open_ms");
        let after = 1_000_000_010;
        assert!(b.admit(0, after, 0) && b.admit(0, after, 0));
        assert_eq!(b.gauge(0).state, State::HalfOpen);
        assert!(!b.admit(0, after, 0), "only half_open_calls probes");
        b.complete(0, after + 1, &sample(5.0, true, 1));
        b.complete(0, after + 2, &sample(5.0, true, 1));
        assert_eq!(b.gauge(0).state, State::Closed);
        assert_eq!(b.transitions(), 3);
    }

    #[test]
    fn breaker_tick_form_is_the_reference_test() {
        let s = BreakerSettings { failure_threshold: 0.5, open_ms: 300.0, half_open_calls: 0, ..Default::default() };
        let mut b = Breaker::new(s, 1);
        let states: Vec<State> = (0..8u64)
            .map(|i| {
                b.tick(0, (i + 1) * 100_000_000, 0.0, if i % 2 == 0 { 0.4 } else { 0.6 }, 0.0);
                b.gauge(0).state
            })
            .collect();
        use State::*;
        assert_eq!(states, vec![Closed, Open, Open, Open, Closed, Open, Open, Open]);
    }

    #[test]
    fn settings_are_checked() {
        let routes = [RouteInfo { name: "a".into(), priority: None, atrion: None }];
        let bad: toml::Table = toml::from_str("min_limit = 50\ninitial_limit = 20").unwrap();
        assert!(matches!(build(ControllerKind::Aimd, &routes, Some(&bad)), Err(SettingsError::Invalid { .. })));
        let unknown: toml::Table = toml::from_str("windw = 5").unwrap();
        assert!(matches!(
            build(ControllerKind::Breaker, &routes, Some(&unknown)),
            Err(SettingsError::Malformed { .. })
        ));
        let physics: toml::Table = toml::from_str("scar_decay = -1.0").unwrap();
        assert!(matches!(
            build(ControllerKind::AtrionDefault, &routes, Some(&physics)),
            Err(SettingsError::Physics { .. })
        ));
        assert!(matches!("nope".parse::<ControllerKind>(), Err(SettingsError::Unknown(_))));
        assert_eq!("atrion-aimd".parse::<ControllerKind>().unwrap(), ControllerKind::AtrionAimd);
        for k in ControllerKind::ALL {
            assert_eq!(k.name().parse::<ControllerKind>().unwrap(), k);
            let t: toml::Table = toml::from_str(&format!("k = \"{k}\"")).unwrap();
            assert_eq!(t["k"].clone().try_into::<ControllerKind>().unwrap(), k, "serde uses the same names");
        }
        for (controller, text, says) in [
            (ControllerKind::Breaker, "failure_threshold = nan", "failure_threshold"),
            (ControllerKind::Breaker, "window = 0", "window"),
            (ControllerKind::Breaker, "open_ms = 1e300", "open_ms"),
            (ControllerKind::Envoy, "percentile = 7.0", "percentile"),
            (ControllerKind::Envoy, "min_concurrency = 0", "min_concurrency"),
            (ControllerKind::Envoy, "interval_ms = -1.0", "interval_ms"),
            (ControllerKind::Aimd, "backoff_ratio = 1.5", "backoff_ratio"),
            (ControllerKind::Gradient2, "smoothing = 0.0", "smoothing"),
        ] {
            let t: toml::Table = toml::from_str(text).unwrap();
            match build(controller, &routes, Some(&t)) {
                Err(SettingsError::Invalid { reason, .. }) => assert!(reason.contains(says), "{controller}: {reason}"),
                other => panic!("{controller} {text}: {:?}", other.map(|c| c.name())),
            }
        }
        let nested: toml::Table = toml::from_str("half_open = { open_max = 10.0 }").unwrap();
        let cfg = physics_config("atrion-default", Model::Default, Some(&nested)).unwrap();
        assert_eq!(cfg.half_open.open_max.as_secs(), 10);
        assert_eq!(cfg.half_open.open_base, PhysicsConfig::default().half_open.open_base, "siblings keep their values");
    }
}
