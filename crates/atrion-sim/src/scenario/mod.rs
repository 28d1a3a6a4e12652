//! Scenarios as data: a TOML file describes the service, its traffic, the faults over time,
//! the controllers' settings and the pass criteria. [`Scenario::from_toml`] parses and
//! validates one; every rule broken is a [`ScenarioError`] naming the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::controller::ControllerKind;

mod validate;
use serde::{Deserialize, Serialize};

/// A scenario that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("malformed scenario: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value breaks a rule.
    #[error("scenario `{scenario}`: {field}: {reason}")]
    Invalid {
        /// The scenario's name.
        scenario: String,
        /// The field.
        field: String,
        /// The rule it breaks.
        reason: String,
    },
    /// No built-in scenario has this name and no such file exists.
    #[error("no scenario named `{0}` (try `atrion simulate --list`) and no such file")]
    Unknown(String),
    /// A trace to replay could not be read.
    #[error("scenario `{scenario}`: trace {path}: {reason}")]
    Trace {
        /// The scenario.
        scenario: String,
        /// The trace file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used on the command line and in file names.
    pub name: String,
    /// What the scenario shows.
    pub description: String,
    /// Where the case comes from (a reference wind-tunnel case, a peer's known failure mode).
    #[serde(default)]
    pub origin: String,
    /// What the results mean (Markdown), printed under the table of the results page.
    #[serde(default)]
    pub notes: String,
    /// Simulated length, seconds.
    #[serde(default = "default_duration")]
    pub duration_s: f64,
    /// Length used by the shortened test suite (same shape, scaled), seconds.
    #[serde(default)]
    pub quick_duration_s: Option<f64>,
    /// Width of a time bin for series and time-based metrics, milliseconds.
    #[serde(default = "default_bin")]
    pub bin_ms: f64,
    /// The default seed (the command line may override it).
    #[serde(default)]
    pub seed: u64,
    /// A success slower than this does not count as goodput, milliseconds.
    #[serde(default = "default_slo")]
    pub slo_ms: f64,
    /// The incident that detection and recovery are measured against, `[start_s, end_s]`;
    /// by default the span of the first fault.
    #[serde(default)]
    pub incident: Option<[f64; 2]>,
    /// Windows in which the service is healthy, for the false-shedding metric; by default
    /// everything before the incident (or the first fault) starts.
    #[serde(default)]
    pub healthy: Vec<[f64; 2]>,
    /// The routes of the simulated service.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
    /// Load balancers: traffic spread over several routes by the controller's choice.
    #[serde(default, rename = "balancer")]
    pub balancers: Vec<BalancerSpec>,
    /// Faults over time.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// A telemetry-driven experiment instead of a request-level simulation.
    #[serde(default)]
    pub telemetry: Option<TelemetrySpec>,
    /// Which controllers run it (all that apply, by default).
    #[serde(default)]
    pub controllers: Vec<ControllerKind>,
    /// Settings per controller: a table of overrides keyed by controller name.
    #[serde(default)]
    pub settings: BTreeMap<ControllerKind, toml::Table>,
    /// The pass criteria.
    #[serde(default, rename = "expect")]
    pub expects: Vec<Expect>,
}

fn default_duration() -> f64 {
    60.0
}
fn default_bin() -> f64 {
    100.0
}
fn default_slo() -> f64 {
    500.0
}

/// A route of the simulated service: workers, a bounded queue, a service-time distribution,
/// the traffic it is offered, and optionally a downstream route it calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The route's name.
    pub name: String,
    /// Concurrent workers (`c`).
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Requests that may wait for a worker; the next one is refused.
    #[serde(default = "default_queue")]
    pub queue: u32,
    /// The client gives up (an error) after this long, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: f64,
    /// Service time of one request on a free worker.
    pub service: ServiceTime,
    /// The traffic offered from outside; none when the route is only called by another.
    #[serde(default)]
    pub traffic: Option<Traffic>,
    /// A route this one calls after its own work (the worker waits for the answer).
    #[serde(default)]
    pub calls: Option<String>,
    /// A route that takes this route's requests when its controller sheds them (a router's
    /// fallback); one hop, not followed further.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Another route whose workers and queue this one shares (its own `workers` and `queue`
    /// are then unused; the owner's capacity faults apply).
    #[serde(default)]
    pub shares: Option<String>,
    /// The priority of the route's requests (critical, high, normal, low, bulk).
    #[serde(default)]
    pub priority: Option<String>,
    /// Weight of the route's goodput (revenue per request, say); 1 by default.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// The route's own latency objective (ms): its successes count as goodput only within
    /// it. The scenario's `slo_ms` when absent. Controllers are not told.
    #[serde(default)]
    pub slo_ms: Option<f64>,
    /// The clients of the route's own traffic retry what fails or is shed.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Atrion's physics for this route only, merged over the controller's settings
    /// (`[route.atrion]`: an SLO or a ceiling the operator knows). Used by `atrion-default`
    /// and `atrion-aimd`.
    #[serde(default)]
    pub atrion: Option<toml::Table>,
}

/// Client retries: a failed or shed request is offered again after a backoff, while the
/// retry budget allows: every first attempt earns `budget` tokens (at most 10 saved), every
/// retry spends one (the retry budget of gRPC and Finagle). Retries draw from the route's
/// call stream, since whether they happen depends on the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt, at most.
    pub attempts: u32,
    /// The first backoff, milliseconds; each next one is `multiplier` times longer, with
    /// equal jitter (half fixed, half uniform).
    #[serde(default = "default_backoff")]
    pub backoff_ms: f64,
    /// Backoff growth per attempt.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Retry tokens earned per first attempt (0.2: retries add at most 20% load).
    #[serde(default = "default_budget")]
    pub budget: f64,
}

fn default_backoff() -> f64 {
    50.0
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_budget() -> f64 {
    0.2
}

fn default_workers() -> u32 {
    16
}
fn default_queue() -> u32 {
    64
}
fn default_timeout() -> f64 {
    1_000.0
}
fn default_weight() -> f64 {
    1.0
}

/// A load balancer in front of several routes (replicas, providers): each request goes to
/// the member its controller selects. Atrion picks by softmax of resistance (the
/// reference's router); the others pick at random among members they have not opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerSpec {
    /// The balancer's name.
    pub name: String,
    /// The routes it spreads over (at least two, each once).
    pub members: Vec<String>,
    /// The traffic it is offered.
    pub traffic: Traffic,
}

/// A service-time distribution.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum ServiceTime {
    /// Always `mean_ms`.
    Constant {
        /// Milliseconds.
        mean_ms: f64,
    },
    /// Exponential with mean `mean_ms`.
    Exponential {
        /// Milliseconds.
        mean_ms: f64,
    },
    /// Log-normal with mean `mean_ms` and shape `sigma` (the sd of the log).
    Lognormal {
        /// Milliseconds.
        mean_ms: f64,
        /// Shape.
        sigma: f64,
    },
    /// A mixture of two log-normals of shape `sigma`: a share `slow_share` of requests
    /// takes `slow_ms` on average, the rest `mean_ms` (a cache miss, a cold path: a slow
    /// mode that is normal).
    Bimodal {
        /// Milliseconds, the fast mode's mean.
        mean_ms: f64,
        /// Milliseconds, the slow mode's mean.
        slow_ms: f64,
        /// Fraction of requests in the slow mode, in [0, 1].
        slow_share: f64,
        /// Shape of both modes.
        sigma: f64,
    },
}

impl ServiceTime {
    /// The mean, milliseconds.
    pub fn mean_ms(&self) -> f64 {
        match *self {
            ServiceTime::Constant { mean_ms }
            | ServiceTime::Exponential { mean_ms }
            | ServiceTime::Lognormal { mean_ms, .. } => mean_ms,
            ServiceTime::Bimodal { mean_ms, slow_ms, slow_share, .. } => {
                (1.0 - slow_share) * mean_ms + slow_share * slow_ms
            }
        }
    }
}

/// The traffic a route is offered. Every pattern but `constant` has Poisson arrivals at
/// the pattern's rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "pattern", rename_all = "lowercase", deny_unknown_fields)]
pub enum Traffic {
    /// Evenly spaced arrivals.
    Constant {
        /// Requests per second.
        rps: f64,
    },
    /// Poisson arrivals at a fixed rate.
    Poisson {
        /// Requests per second.
        rps: f64,
    },
    /// `rps`, and `peak_rps` between `start_s` and `end_s`.
    Spike {
        /// Base rate.
        rps: f64,
        /// Rate during the spike.
        peak_rps: f64,
        /// Spike start, seconds.
        start_s: f64,
        /// Spike end, seconds.
        end_s: f64,
    },
    /// `from_rps` until `start_s`, linearly to `to_rps` at `end_s`, then `to_rps`.
    Ramp {
        /// Rate before the ramp.
        from_rps: f64,
        /// Rate after the ramp.
        to_rps: f64,
        /// Ramp start, seconds.
        start_s: f64,
        /// Ramp end, seconds.
        end_s: f64,
    },
    /// `rps + amplitude * sin(2 pi t / period_s)`.
    Sine {
        /// Mean rate.
        rps: f64,
        /// Swing of the rate.
        amplitude: f64,
        /// Period, seconds.
        period_s: f64,
    },
    /// The arrival times of a trace (the format of `atrion replay`), every route of the trace
    /// sent to this route, repeated to fill the scenario, `speed` times as fast.
    Replay {
        /// The trace file, relative to the scenario file.
        file: PathBuf,
        /// Time compression factor.
        #[serde(default = "default_speed")]
        speed: f64,
    },
}

fn default_speed() -> f64 {
    1.0
}

impl Traffic {
    /// The rate at `t` seconds (requests per second); replay reports 0 (its times are given).
    pub fn rate(&self, t: f64) -> f64 {
        match *self {
            Traffic::Constant { rps } | Traffic::Poisson { rps } => rps,
            Traffic::Spike { rps, peak_rps, start_s, end_s } => {
                if t >= start_s && t < end_s {
                    peak_rps
                } else {
                    rps
                }
            }
            Traffic::Ramp { from_rps, to_rps, start_s, end_s } => {
                if t <= start_s {
                    from_rps
                } else if t >= end_s {
                    to_rps
                } else {
                    from_rps + (to_rps - from_rps) * (t - start_s) / (end_s - start_s)
                }
            }
            Traffic::Sine { rps, amplitude, period_s } => {
                (rps + amplitude * (2.0 * std::f64::consts::PI * t / period_s).sin()).max(0.0)
            }
            Traffic::Replay { .. } => 0.0,
        }
    }

    /// The highest rate the pattern reaches.
    pub fn peak(&self) -> f64 {
        match *self {
            Traffic::Constant { rps } | Traffic::Poisson { rps } => rps,
            Traffic::Spike { rps, peak_rps, .. } => rps.max(peak_rps),
            Traffic::Ramp { from_rps, to_rps, .. } => from_rps.max(to_rps),
            Traffic::Sine { rps, amplitude, .. } => rps + amplitude.abs(),
            Traffic::Replay { .. } => 0.0,
        }
    }
}

/// A fault on one route (or all routes) between `start_s` and `end_s`. In a file, the
/// kind's parameter sits beside `kind`: `kind = "errors"` with `rate`, `"latency"` with
/// `multiplier`, `"capacity"` with `factor`, `"outage"` with `mode`, `"degrade"` with
/// `to_multiplier`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawFault", into = "RawFault")]
pub struct FaultSpec {
    /// The route; all routes when absent.
    pub route: Option<String>,
    /// Seconds.
    pub start_s: f64,
    /// Seconds.
    pub end_s: f64,
    /// What goes wrong.
    pub kind: FaultKind,
    /// When set, the fault repeats with this period: it is on for the first `duty` of each
    /// period (flapping).
    pub period_s: Option<f64>,
    /// Fraction of each period the fault is on (0.5 by default).
    pub duty: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<String>,
    start_s: f64,
    end_s: f64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<OutageMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
}

impl TryFrom<RawFault> for FaultSpec {
    type Error = String;
    fn try_from(r: RawFault) -> Result<Self, String> {
        let need = |v: Option<f64>, name: &str| v.ok_or_else(|| format!("fault kind `{}` needs `{name}`", r.kind));
        let kind = match r.kind.as_str() {
            "errors" => FaultKind::Errors { rate: need(r.rate, "rate")?, latency_ms: r.latency_ms },
            "latency" => FaultKind::Latency { multiplier: need(r.multiplier, "multiplier")? },
            "capacity" => FaultKind::Capacity { factor: need(r.factor, "factor")? },
            "outage" => FaultKind::Outage { mode: r.mode.unwrap_or_default() },
            "degrade" => FaultKind::Degrade { to_multiplier: need(r.to_multiplier, "to_multiplier")? },
            other => {
                return Err(format!("unknown fault kind `{other}` (errors, latency, capacity, outage, degrade)"));
            }
        };
        Ok(FaultSpec {
            route: r.route,
            start_s: r.start_s,
            end_s: r.end_s,
            kind,
            period_s: r.period_s,
            duty: r.duty.unwrap_or(0.5),
        })
    }
}

impl From<FaultSpec> for RawFault {
    fn from(f: FaultSpec) -> Self {
        let mut r = RawFault {
            period_s: f.period_s,
            duty: f.period_s.map(|_| f.duty),
            route: f.route,
            start_s: f.start_s,
            end_s: f.end_s,
            kind: String::new(),
            rate: None,
            multiplier: None,
            factor: None,
            mode: None,
            to_multiplier: None,
            latency_ms: None,
        };
        r.kind = match f.kind {
            FaultKind::Errors { rate, latency_ms } => {
                r.rate = Some(rate);
                r.latency_ms = latency_ms;
                "errors"
            }
            FaultKind::Latency { multiplier } => {
                r.multiplier = Some(multiplier);
                "latency"
            }
            FaultKind::Capacity { factor } => {
                r.factor = Some(factor);
                "capacity"
            }
            FaultKind::Outage { mode } => {
                r.mode = Some(mode);
                "outage"
            }
            FaultKind::Degrade { to_multiplier } => {
                r.to_multiplier = Some(to_multiplier);
                "degrade"
            }
        }
        .to_owned();
        r
    }
}

/// What goes wrong during a fault.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum FaultKind {
    /// A fraction of requests fail after their service time, or after `latency_ms` when
    /// given (slow errors, which hold a worker that long).
    Errors {
        /// Fraction in [0, 1].
        rate: f64,
        /// How long a failing request takes, milliseconds.
        latency_ms: Option<f64>,
    },
    /// Service time is multiplied (a slow dependency, GC pauses).
    Latency {
        /// Factor >= 0.
        multiplier: f64,
    },
    /// Only a fraction of the workers remain.
    Capacity {
        /// Fraction in (0, 1].
        factor: f64,
    },
    /// Nothing works: requests are refused at once, or hang until the client times out.
    Outage {
        /// `refuse` or `hang`.
        mode: OutageMode,
    },
    /// Service time grows linearly from x1 at the start to `to_multiplier` at the end (the
    /// boiling frog).
    Degrade {
        /// Factor reached at the end.
        to_multiplier: f64,
    },
}

/// How an outage shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutageMode {
    /// Connection refused: a fast error.
    #[default]
    Refuse,
    /// The request hangs until the client's timeout.
    Hang,
}

/// A telemetry-driven experiment (the reference's tick-based tests): every tick, each
/// controller is given one observation computed from the channel signals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Time between ticks, milliseconds.
    pub tick_ms: f64,
    /// Number of ticks.
    pub ticks: u32,
    /// Latency signal (ms).
    pub latency: Signal,
    /// Error signal (a rate; the reference's experiments go beyond 1).
    pub error: Signal,
    /// Saturation signal.
    pub saturation: Signal,
}

/// A signal over ticks `t = 1, 2, ...`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Signal {
    /// The same value every tick.
    Constant(f64),
    /// The values in turn, starting with the first at tick 0.
    Alternate(Vec<f64>),
    /// `offset + amplitude * sin(2 pi t / period)`, with `t` in ticks, floored at 0.
    Sine {
        /// Centre.
        offset: f64,
        /// Swing.
        amplitude: f64,
        /// Period in ticks.
        period: f64,
    },
}

impl Signal {
    /// The value at tick `t` (0-based index, as the reference's series are).
    pub fn at(&self, t: u32) -> f64 {
        match self {
            Signal::Constant(v) => *v,
            Signal::Alternate(vs) => vs.get(t as usize % vs.len().max(1)).copied().unwrap_or(0.0),
            Signal::Sine { offset, amplitude, period } => {
                (offset + amplitude * (2.0 * std::f64::consts::PI * f64::from(t) / period).sin()).max(0.0)
            }
        }
    }
}

/// A metric of a run, by the name scenarios use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Weighted successes within the SLO per second.
    Goodput,
    /// Median latency of admitted requests, ms.
    P50Ms,
    /// 99th percentile latency of admitted requests, ms.
    P99Ms,
    /// Fraction of offered requests shed while the service was healthy.
    HealthyShed,
    /// Fraction of all offered requests shed.
    Shed,
    /// Fraction of admitted requests that failed.
    ErrorRate,
    /// Seconds from the incident's start to the first bin shedding at least 10%.
    DetectS,
    /// Seconds from the incident's end until goodput is back to 90% of its level before.
    RecoverS,
    /// State transitions (closed, open, half-open).
    Transitions,
}

impl Metric {
    /// All metrics, in table order.
    pub const ALL: [Metric; 9] = [
        Metric::Goodput,
        Metric::P50Ms,
        Metric::P99Ms,
        Metric::HealthyShed,
        Metric::Shed,
        Metric::ErrorRate,
        Metric::DetectS,
        Metric::RecoverS,
        Metric::Transitions,
    ];

    /// Whether the metric is also measured per route.
    pub fn per_route(self) -> bool {
        matches!(
            self,
            Metric::Goodput
                | Metric::HealthyShed
                | Metric::Shed
                | Metric::ErrorRate
                | Metric::DetectS
                | Metric::RecoverS
        )
    }

    /// The name used in files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Goodput => "goodput",
            Metric::P50Ms => "p50_ms",
            Metric::P99Ms => "p99_ms",
            Metric::HealthyShed => "healthy_shed",
            Metric::Shed => "shed",
            Metric::ErrorRate => "error_rate",
            Metric::DetectS => "detect_s",
            Metric::RecoverS => "recover_s",
            Metric::Transitions => "transitions",
        }
    }
}

/// A pass criterion: `controller`'s `metric` compared with a bound, or with another
/// controller's value times `factor`. A metric that has no value (never detected, never
/// recovered) counts as infinitely large.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The controller judged.
    pub controller: ControllerKind,
    /// The metric.
    pub metric: Metric,
    /// Judge one route's value instead of the whole service's (goodput, healthy_shed,
    /// shed, error_rate, detect_s, recover_s: what was offered to that route's controller).
    #[serde(default)]
    pub route: Option<String>,
    /// Value must be `>= min`.
    #[serde(default)]
    pub min: Option<f64>,
    /// Value must be `<= max`.
    #[serde(default)]
    pub max: Option<f64>,
    /// Value must equal this exactly.
    #[serde(default)]
    pub equals: Option<f64>,
    /// Value must be `<= factor *` that controller's value.
    #[serde(default)]
    pub at_most: Option<ControllerKind>,
    /// Value must be `>= factor *` that controller's value.
    #[serde(default)]
    pub at_least: Option<ControllerKind>,
    /// Factor of the comparison with another controller (1 by default).
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Why this is expected, shown when it fails.
    #[serde(default)]
    pub why: String,
}

fn default_factor() -> f64 {
    1.0
}

impl Scenario {
    /// Parses and validates a scenario. `base` is the folder that relative paths in it
    /// (replayed traces) are resolved against.
    pub fn from_toml(text: &str, base: &Path) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = toml::from_str(text)?;
        for r in &mut s.routes {
            if let Some(Traffic::Replay { file, .. }) = &mut r.traffic
                && file.is_relative()
            {
                *file = base.join(&*file);
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Io { path: path.to_owned(), source })?;
        Scenario::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// The same scenario shortened to `quick_duration_s` (when it has one): every time in
    /// it is scaled by the same factor, so the story keeps its shape.
    pub fn quick(&self) -> Scenario {
        let Some(q) = self.quick_duration_s else { return self.clone() };
        let k = q / self.duration_s;
        let mut s = self.clone();
        s.duration_s = q;
        s.incident = s.incident.map(|[a, b]| [a * k, b * k]);
        s.healthy = s.healthy.iter().map(|[a, b]| [a * k, b * k]).collect();
        for f in &mut s.faults {
            f.start_s *= k;
            f.end_s *= k;
        }
        let traffic = s
            .routes
            .iter_mut()
            .filter_map(|r| r.traffic.as_mut())
            .chain(s.balancers.iter_mut().map(|b| &mut b.traffic));
        for t in traffic {
            match t {
                Traffic::Spike { start_s, end_s, .. } | Traffic::Ramp { start_s, end_s, .. } => {
                    *start_s *= k;
                    *end_s *= k;
                }
                Traffic::Sine { period_s, .. } => *period_s *= k,
                _ => {}
            }
        }
        s
    }

    /// The route whose gauge (resistance, limit, state) the series and charts follow: the
    /// first fault's route, else the first route with traffic of its own, else the first.
    pub fn chart_route(&self) -> usize {
        let index = |name: &str| self.routes.iter().position(|r| r.name == name);
        self.faults
            .first()
            .and_then(|f| f.route.as_deref())
            .and_then(index)
            .or_else(|| self.routes.iter().position(|r| r.traffic.is_some()))
            .unwrap_or(0)
    }

    /// The incident window `[start, end]` in seconds, if the scenario has one.
    pub fn incident_window(&self) -> Option<[f64; 2]> {
        self.incident.or_else(|| self.faults.first().map(|f| [f.start_s, f.end_s]))
    }

    /// The healthy windows in seconds.
    pub fn healthy_windows(&self) -> Vec<[f64; 2]> {
        if !self.healthy.is_empty() {
            return self.healthy.clone();
        }
        let start = self
            .incident_window()
            .map(|[a, _]| a)
            .into_iter()
            .chain(self.faults.iter().map(|f| f.start_s))
            .fold(self.duration_s, f64::min);
        vec![[0.0, start]]
    }
}
