//! Physics configuration: the constants of a model, validated before an engine uses them.
//!
//! Start from [`PhysicsConfig::for_model`] (or `default()` / `reference()`), change what you
//! need, and hand it to [`crate::Engine::new`], which calls [`PhysicsConfig::validate`] and
//! refuses a config that breaks any rule with a [`ConfigError`] naming the field. A config
//! read from a file (serde) goes through the same check; fields a file omits keep the values
//! of [`PhysicsConfig::default`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which physics model a route runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// The reference model (Atrion v1.2–v2.0), reproduced with its quirks so that its
    /// published figures can be reproduced: per-update trauma, momentum against the sample
    /// two updates back, one tuner shared by all routes, no half-open state.
    Reference,
    /// Our model: time-based scar, per-second momentum, per-route robust tuner, a timed
    /// half-open state with a ramping probe quota and a slowly decaying re-trip backoff.
    #[default]
    Default,
}

impl std::str::FromStr for Model {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "reference" => Ok(Model::Reference),
            "default" => Ok(Model::Default),
            _ => Err(ConfigError::UnknownName { field: "model", expected: "`reference` or `default`" }),
        }
    }
}

/// One value per telemetry channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    /// The latency channel (milliseconds where the value is a baseline).
    pub latency: f64,
    /// The error channel (a rate where the value is a baseline).
    pub error: f64,
    /// The saturation channel (a fraction where the value is a baseline).
    pub saturation: f64,
}

impl Channels {
    pub(crate) fn as_array(&self) -> [f64; 3] {
        [self.latency, self.error, self.saturation]
    }
}

/// Workload profiles of the reference: a latency baseline and a scar multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Fast in-memory work: baseline 10 ms, scar x2.
    Light,
    /// Ordinary API calls: baseline 100 ms, scar x1.
    Standard,
    /// Heavy jobs: baseline 5 s, scar x0.5.
    Heavy,
    /// Batch or model inference: baseline 60 s, scar x0.2.
    Extreme,
}

impl Profile {
    /// (latency baseline in ms, scar multiplier)
    fn constants(self) -> (f64, f64) {
        match self {
            Profile::Light => (10.0, 2.0),
            Profile::Standard => (100.0, 1.0),
            Profile::Heavy => (5_000.0, 0.5),
            Profile::Extreme => (60_000.0, 0.2),
        }
    }
}

/// The AutoTuner: learns a route's normal resistance and sets the break point at
/// `mean + k * sd`, clamped to `[floor, ceiling]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TunerConfig {
    /// Learn the break point at all; when false the static break and recovery hold.
    pub enabled: bool,
    /// Reference model: the EMA window `N` in samples (`alpha = 2 / (N + 1)`).
    pub window: u32,
    /// Default model: the time constant of the exponentially weighted statistics.
    #[serde(with = "serde_secs")]
    pub horizon: Duration,
    /// Standard deviations above the mean at which the route breaks.
    pub k: f64,
    /// Samples before the learned break point replaces the static one.
    pub warmup_samples: u32,
    /// Lowest break point the tuner may set (boiling-frog protection from below).
    pub floor: f64,
    /// Highest break point the tuner may set (hard ceiling).
    pub ceiling: f64,
    /// Recovery threshold as a fraction of the break point.
    pub recovery_ratio: f64,
    /// Lowest recovery threshold.
    pub recovery_floor: f64,
    /// Default model: samples are winsorised to `mean ± winsor * sd` before they are learned.
    pub winsor: f64,
    /// Default model: the smallest standard deviation used for the break point and the
    /// winsor band, so that a perfectly flat history does not give a zero-width band.
    pub min_sd: f64,
}

impl Default for TunerConfig {
    fn default() -> Self {
        TunerConfig {
            enabled: true,
            window: 100,
            horizon: Duration::from_secs(60),
            k: 3.0,
            warmup_samples: 50,
            floor: 30.0,
            ceiling: 200.0,
            recovery_ratio: 0.5,
            recovery_floor: 15.0,
            winsor: 3.0,
            min_sd: 0.5,
        }
    }
}

/// The default model's open and half-open states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HalfOpenConfig {
    /// How long a route stays open after its first trip.
    #[serde(with = "serde_secs")]
    pub open_base: Duration,
    /// The longest open interval, however often the route has tripped.
    #[serde(with = "serde_secs")]
    pub open_max: Duration,
    /// Each recent trip multiplies the open interval by this factor.
    pub backoff_factor: f64,
    /// Half-life of the trip count behind the backoff. It is not reset when the route
    /// closes, so a route that keeps re-tripping stays open longer and longer.
    #[serde(with = "serde_secs")]
    pub backoff_half_life: Duration,
    /// Probes are counted per window of this length.
    #[serde(with = "serde_secs")]
    pub probe_window: Duration,
    /// Probes per window when half-open begins.
    pub probe_min: u32,
    /// Probes per window at full health; the quota doubles with each healthy probe.
    pub probe_max: u32,
    /// Healthy probes needed to close.
    pub close_after: u32,
    /// Largest fraction of unhealthy probes a half-open phase tolerates before it re-trips.
    pub max_probe_failure: f64,
    /// While open, one request per this interval goes through as a scout; a healthy scout
    /// ends the open interval at once (recovery follows evidence, not the backoff timer).
    #[serde(with = "serde_secs")]
    pub scout_interval: Duration,
    /// Each healthy probe heals this fraction of the scar, so that a route whose probes
    /// succeed comes back as fast as the evidence allows. Closing also halves the count of
    /// recent trips behind the backoff.
    pub probe_heal: f64,
}

impl Default for HalfOpenConfig {
    fn default() -> Self {
        HalfOpenConfig {
            open_base: Duration::from_secs(2),
            // Chosen with the wind tunnel (docs/TUNING.md): x2 up to 60 s recovered slowly;
            // a 10 s ceiling let a route flap with its failures.
            open_max: Duration::from_secs(30),
            backoff_factor: 1.5,
            backoff_half_life: Duration::from_secs(120),
            // 100 ms (issue 9's sweep, docs/TUNING.md): at 500 ms a busy route needed 1-1.5 s of
            // quota windows to gather its healthy probes after a fault ended.
            probe_window: Duration::from_millis(100),
            probe_min: 1,
            probe_max: 32,
            close_after: 5,
            max_probe_failure: 0.2,
            scout_interval: Duration::from_secs(1),
            probe_heal: 0.5,
        }
    }
}

/// The default model's per-route normal: each route learns what its own healthy latency
/// looks like, and latency pressure is measured against that, not against one engine-wide
/// constant.
///
/// The latency baseline of a route is
/// `b = clamp(max(headroom * mean, mean + k * sd), floor_ms, ceiling_ms)`, where `mean` and
/// `sd` are the time-weighted statistics of the route's smoothed latency. For the first
/// `warmup` (and at least `warmup_samples` reports) every sample is learned and latency is
/// judged against `ceiling_ms` only, so that a slow mode that is normal (a bimodal route)
/// becomes part of the normal. After it, a sample is learned only while the route is healthy
/// (latency under its baseline, errors under their tolerance, no throttle, closed), so that
/// a creeping latency (the boiling frog) outruns what is learned and is caught, and an
/// overload is never learned as normal.
///
/// `slo_ms` fixes the baseline (no learning): the route's latency objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NormalConfig {
    /// Learn each route's latency normal. When false (or `slo_ms` is set) the latency
    /// baseline is fixed: `slo_ms`, else `baseline.latency`.
    pub learn: bool,
    /// Time constant of the learned statistics, once warm.
    #[serde(with = "serde_secs")]
    pub horizon: Duration,
    /// How long a new route learns everything it sees before it judges latency by it.
    #[serde(with = "serde_secs")]
    pub warmup: Duration,
    /// Reports a new route learns at least before it judges latency by them.
    pub warmup_samples: u32,
    /// Latency up to `headroom` times the learned mean is healthy.
    pub headroom: f64,
    /// ... as is latency up to `k` standard deviations above it (noisy routes).
    pub k: f64,
    /// The lowest latency baseline (ms): below it, a difference is not a failure.
    pub floor_ms: f64,
    /// The highest latency baseline (ms), whatever was learned: the absolute ceiling.
    pub ceiling_ms: f64,
    /// A fixed latency baseline for the route (ms), instead of a learned one.
    pub slo_ms: Option<f64>,
}

impl Default for NormalConfig {
    fn default() -> Self {
        NormalConfig {
            learn: true,
            horizon: Duration::from_secs(120),
            warmup: Duration::from_secs(10),
            warmup_samples: 30,
            headroom: 2.0,
            k: 3.0,
            floor_ms: 5.0,
            ceiling_ms: 60_000.0,
            slo_ms: None,
        }
    }
}

/// The default model's proportional answer to overload: a shed ratio driven by how far the
/// route's latency is above its baseline, before any trip.
///
/// `shed = I + proportional * max(0, e)`, `dI/dt = gain * e`, `e = (x - b) / b` (each clamped to `[0, max]`), where `x` is the smoothed
/// latency and `b` the route's latency baseline: an integral controller that settles where
/// latency sits at the baseline, whatever the offered load, and lets go at the same pace
/// once latency is back under it. Decisions shed that ratio deterministically (no
/// randomness), weighted by priority; critical traffic is never throttled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// Throttle at all; when false the route is either admitting by priority or tripped.
    pub enabled: bool,
    /// Integral gain: shed ratio gained per second per unit of relative latency excess.
    pub gain: f64,
    /// Proportional gain: shed ratio added at once per unit of relative latency excess
    /// (the damping that keeps the integral from overshooting while a queue drains).
    pub proportional: f64,
    /// The highest shed ratio: some traffic always goes through, to keep the route measured.
    pub max: f64,
    /// Time constant of the latency the throttle reads: shorter than `smoothing`, because
    /// every lag in the loop makes the shed ratio overshoot while a queue drains.
    #[serde(with = "serde_secs")]
    pub smoothing: Duration,
    /// How long the throttle sheds at half its maximum or more before it asks whether
    /// shedding helps: if latency is no lower than when it began, the excess is not a queue
    /// (a slower dependency, the boiling frog) and shedding would only lose goodput. The
    /// throttle then lets go and takes 1.5 times the current latency as its target (latency
    /// is judged against it, by the throttle and the scar alike, while the slowness lasts);
    /// once latency is back under the normal's baseline, the target heals away with
    /// `normal.horizon`. The learned normal itself never follows.
    #[serde(with = "serde_secs")]
    pub patience: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        // Chosen with the wind tunnel (docs/TUNING.md): a gain of 2 overshoots while queues
        // drain; 0.5 with an equal proportional part settles fastest over the suite.
        ThrottleConfig {
            enabled: true,
            gain: 0.5,
            proportional: 0.5,
            max: 0.9,
            smoothing: Duration::from_millis(100),
            patience: Duration::from_secs(2),
        }
    }
}

/// Per-priority shedding thresholds of the default model, as a fraction of the way from
/// `r_base` to the break point: a request of that priority is shed while
/// `R > r_base + fraction * (break - r_base)`. Critical traffic is shed only when open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PriorityThresholds {
    /// Threshold for [`crate::Priority::High`].
    pub high: f64,
    /// Threshold for [`crate::Priority::Normal`].
    pub normal: f64,
    /// Threshold for [`crate::Priority::Low`].
    pub low: f64,
    /// Threshold for [`crate::Priority::Bulk`].
    pub bulk: f64,
}

impl Default for PriorityThresholds {
    fn default() -> Self {
        PriorityThresholds { high: 0.9, normal: 0.75, low: 0.5, bulk: 0.3 }
    }
}

/// The constants of the physics. Units are in the field docs.
///
/// Resistance: `R = clamp(r_base + sum_j w_j p_j + momentum_weight * M + S, r_base, r_max)`
/// with `p_j = tanh(gain_j * (x_j - baseline_j) / baseline_j)` and
/// `w_j = ln(1 + criticality_j)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PhysicsConfig {
    /// The model these constants drive.
    pub model: Model,
    /// Base resistance of a healthy route (ohms).
    pub r_base: f64,
    /// Upper clamp of resistance (ohms). The reference has none; its config sets this
    /// far out of reach.
    pub r_max: f64,
    /// Baselines per channel: latency in ms (the SLO; the default model learns one per
    /// route instead, see [`NormalConfig`]), error rate (the target), saturation.
    pub baseline: Channels,
    /// Default model: the error rate a route may show before errors alone count as trauma
    /// (scar, trips, failed probes). Under it, errors still raise resistance (a router
    /// prefers the route with fewer) but never shed by themselves: fast errors cost no
    /// capacity, and shedding would only turn the requests that succeed into failures too.
    /// Above it, the trauma pressure of errors is `tanh(4 (e - t) / (1 - t))`.
    pub error_tolerance: f64,
    /// Pressure gain per channel (`k`, dimensionless).
    pub gain: Channels,
    /// Criticality per channel; the weight is `ln(1 + criticality)`.
    pub criticality: Channels,
    /// Momentum weight `mu` (ohms per unit of momentum).
    pub momentum_weight: f64,
    /// Default model: upper clamp of momentum (baselines of excess per second).
    pub momentum_max: f64,
    /// Default model: trauma accrues up to `1 + momentum_scar` times faster while momentum
    /// is at its clamp (`σ' = σ (1 + momentum_scar * M / momentum_max)`), so that the mark a
    /// fast ramp leaves outlasts the ramp.
    pub momentum_scar: f64,
    /// Scar decay rate `lambda` (per second). Half-life is `ln 2 / lambda`.
    pub scar_decay: f64,
    /// Trauma `sigma`: reference, ohms added per over-pressured update; default model,
    /// ohms per second of over-pressure.
    pub scar_rate: f64,
    /// Upper clamp of scar (ohms).
    pub scar_max: f64,
    /// Critical pressure `P_crit`: the norm of positive pressure above which trauma accrues.
    pub critical_pressure: f64,
    /// Gamma: the weight of the other nodes' scar when they report on a route,
    /// `S = gamma * S_cluster + (1 - gamma) * S_local` (0 ignores the cluster, 1 obeys it).
    pub gamma: f64,
    /// Updates a new route spends in bootstrap, where it cannot trip.
    pub bootstrap_updates: u32,
    /// Break point before the tuner has learned (ohms).
    pub static_break: f64,
    /// Recovery point before the tuner has learned (ohms).
    pub static_recovery: f64,
    /// Reference: shed softly once `R > soft_limit * break` (the v1 guard).
    pub soft_limit: f64,
    /// Default model: fast smoothing time constant of telemetry (pressure).
    #[serde(with = "serde_secs")]
    pub smoothing: Duration,
    /// Default model: slow smoothing time constant; momentum is the gap between the two.
    #[serde(with = "serde_secs")]
    pub smoothing_slow: Duration,
    /// Default model: a route shedding by priority still admits one request per this
    /// interval, so that it keeps learning (and trips, or recovers) from fresh telemetry.
    #[serde(with = "serde_secs")]
    pub keepalive: Duration,
    /// The AutoTuner.
    pub tuner: TunerConfig,
    /// Open and half-open (default model).
    pub half_open: HalfOpenConfig,
    /// Priority shedding (default model).
    pub priority: PriorityThresholds,
    /// Per-route learned latency normal (default model).
    pub normal: NormalConfig,
    /// Proportional shedding under overload (default model).
    pub throttle: ThrottleConfig,
}

impl Default for PhysicsConfig {
    fn default() -> Self {
        PhysicsConfig {
            model: Model::Default,
            r_base: 10.0,
            r_max: 1_000.0,
            // The default model measures latency against each route's learned normal
            // (`normal`); `baseline.latency` is the fixed baseline when learning is off.
            // Per-request outcomes are smoothed over a short window, where a 1% target cannot
            // be told from noise: resistance aims at 5% with half the gain (what a router
            // prefers), while trauma waits for `error_tolerance`.
            baseline: Channels { latency: 100.0, error: 0.05, saturation: 0.5 },
            gain: Channels { latency: 1.0, error: 0.5, saturation: 1.0 },
            // Fast errors that cost no capacity are no reason to shed the requests that
            // succeed, up to half of them (a common breaker's threshold). Slow errors count
            // through latency and saturation.
            error_tolerance: 0.5,
            criticality: Channels { latency: 5.0, error: 8.0, saturation: 3.0 },
            momentum_weight: 5.0,
            momentum_max: 2.0,
            momentum_scar: 1.0,
            // A 3 s half-life, chosen with the wind tunnel (docs/TUNING.md): 5 s kept routes
            // shed long after outages; 2 s leaves a latency-only failure under the break.
            scar_decay: std::f64::consts::LN_2 / 3.0,
            scar_rate: 6.0,
            scar_max: 100.0,
            critical_pressure: 0.7,
            gamma: 0.3,
            bootstrap_updates: 10,
            static_break: 30.0,
            static_recovery: 15.0,
            soft_limit: 1.0,
            smoothing: Duration::from_millis(500),
            smoothing_slow: Duration::from_secs(4),
            keepalive: Duration::from_millis(100),
            tuner: TunerConfig::default(),
            half_open: HalfOpenConfig::default(),
            priority: PriorityThresholds::default(),
            normal: NormalConfig::default(),
            throttle: ThrottleConfig::default(),
        }
    }
}

impl PhysicsConfig {
    /// The longest duration a field may hold: one year. Longer ones would overflow the
    /// nanosecond timestamps they are added to; none of them makes sense for a route.
    pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3_600);

    /// The shortest scar half-life allowed (`scar_decay` at most `ln 2 / 1 ms`).
    pub const MIN_SCAR_HALF_LIFE: Duration = Duration::from_millis(1);

    /// The constants of the reference model (SPEC 9.1), exactly.
    pub fn reference() -> Self {
        PhysicsConfig {
            model: Model::Reference,
            r_max: 1e12,
            momentum_weight: 20.0,
            momentum_max: f64::MAX,
            momentum_scar: 0.0,
            scar_decay: 0.1,
            scar_rate: 5.0,
            scar_max: 1e12,
            static_break: 100.0,
            static_recovery: 50.0,
            soft_limit: 0.8,
            baseline: Channels { latency: 100.0, error: 0.01, saturation: 0.5 },
            gain: Channels { latency: 1.0, error: 1.0, saturation: 1.0 },
            tuner: TunerConfig { ceiling: 500.0, ..TunerConfig::default() },
            normal: NormalConfig { learn: false, ..NormalConfig::default() },
            throttle: ThrottleConfig { enabled: false, ..ThrottleConfig::default() },
            ..PhysicsConfig::default()
        }
    }

    /// The defaults of `model`.
    pub fn for_model(model: Model) -> Self {
        match model {
            Model::Reference => PhysicsConfig::reference(),
            Model::Default => PhysicsConfig::default(),
        }
    }

    /// Applies a workload profile: the latency baseline and a scar multiplier.
    pub fn with_profile(mut self, profile: Profile) -> Self {
        let (latency, scar) = profile.constants();
        self.baseline.latency = latency;
        self.scar_rate *= scar;
        self
    }

    /// Sets the scar decay from a half-life.
    pub fn with_scar_half_life(mut self, half_life: Duration) -> Self {
        self.scar_decay = std::f64::consts::LN_2 / half_life.as_secs_f64();
        self
    }

    /// This config, if it keeps every rule: `PhysicsConfig::default().with_profile(p).validated()?`.
    pub fn validated(self) -> Result<Self, ConfigError> {
        self.validate()?;
        Ok(self)
    }

    /// Checks every rule; the first broken one is returned, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError as E;
        let positive = |field: &'static str, v: f64| -> Result<(), ConfigError> {
            finite(field, v)?;
            if v > 0.0 { Ok(()) } else { Err(E::OutOfRange { field, value: v, expected: "> 0" }) }
        };
        let non_negative = |field: &'static str, v: f64| -> Result<(), ConfigError> {
            finite(field, v)?;
            if v >= 0.0 { Ok(()) } else { Err(E::OutOfRange { field, value: v, expected: ">= 0" }) }
        };
        let fraction = |field: &'static str, v: f64| -> Result<(), ConfigError> {
            finite(field, v)?;
            if v > 0.0 && v <= 1.0 { Ok(()) } else { Err(E::OutOfRange { field, value: v, expected: "in (0, 1]" }) }
        };
        let duration = |field: &'static str, d: Duration| -> Result<(), ConfigError> {
            if d.is_zero() {
                Err(E::OutOfRange { field, value: 0.0, expected: "> 0 s" })
            } else if d > Self::MAX_DURATION {
                Err(E::OutOfRange { field, value: d.as_secs_f64(), expected: "at most one year (31536000 s)" })
            } else {
                Ok(())
            }
        };

        positive("r_base", self.r_base)?;
        positive("r_max", self.r_max)?;
        positive("baseline.latency", self.baseline.latency)?;
        fraction("baseline.error", self.baseline.error)?;
        fraction("baseline.saturation", self.baseline.saturation)?;
        positive("gain.latency", self.gain.latency)?;
        positive("gain.error", self.gain.error)?;
        positive("gain.saturation", self.gain.saturation)?;
        non_negative("criticality.latency", self.criticality.latency)?;
        non_negative("criticality.error", self.criticality.error)?;
        non_negative("criticality.saturation", self.criticality.saturation)?;
        non_negative("momentum_weight", self.momentum_weight)?;
        positive("momentum_max", self.momentum_max)?;
        non_negative("momentum_scar", self.momentum_scar)?;
        positive("scar_decay", self.scar_decay)?;
        let half_life = std::f64::consts::LN_2 / self.scar_decay;
        if !(Self::MIN_SCAR_HALF_LIFE.as_secs_f64()..=Self::MAX_DURATION.as_secs_f64()).contains(&half_life) {
            return Err(E::OutOfRange {
                field: "scar_decay",
                value: self.scar_decay,
                expected: "a half-life (ln 2 / scar_decay) between 1 ms and one year",
            });
        }
        non_negative("scar_rate", self.scar_rate)?;
        positive("scar_max", self.scar_max)?;
        positive("critical_pressure", self.critical_pressure)?;
        if self.critical_pressure >= 3f64.sqrt() {
            return Err(E::OutOfRange {
                field: "critical_pressure",
                value: self.critical_pressure,
                expected: "< sqrt(3), the largest possible pressure norm",
            });
        }
        finite("gamma", self.gamma)?;
        if !(0.0..=1.0).contains(&self.gamma) {
            return Err(E::OutOfRange { field: "gamma", value: self.gamma, expected: "in [0, 1]" });
        }
        positive("static_break", self.static_break)?;
        positive("static_recovery", self.static_recovery)?;
        fraction("soft_limit", self.soft_limit)?;
        order("r_base", self.r_base, "static_break", self.static_break)?;
        order("static_recovery", self.static_recovery, "static_break", self.static_break)?;
        order("static_break", self.static_break, "r_max", self.r_max)?;
        duration("smoothing", self.smoothing)?;
        duration("keepalive", self.keepalive)?;
        if self.smoothing_slow <= self.smoothing {
            return Err(E::Order {
                field: "smoothing",
                value: self.smoothing.as_secs_f64(),
                other: "smoothing_slow",
                other_value: self.smoothing_slow.as_secs_f64(),
            });
        }
        duration("smoothing_slow", self.smoothing_slow)?;

        let t = &self.tuner;
        if t.window == 0 {
            return Err(E::OutOfRange { field: "tuner.window", value: 0.0, expected: ">= 1" });
        }
        duration("tuner.horizon", t.horizon)?;
        positive("tuner.k", t.k)?;
        positive("tuner.floor", t.floor)?;
        positive("tuner.ceiling", t.ceiling)?;
        order("r_base", self.r_base, "tuner.floor", t.floor)?;
        order("tuner.floor", t.floor, "tuner.ceiling", t.ceiling)?;
        order("tuner.ceiling", t.ceiling, "r_max", self.r_max)?;
        fraction("tuner.recovery_ratio", t.recovery_ratio)?;
        under_one("tuner.recovery_ratio", t.recovery_ratio, "< 1")?;
        positive("tuner.recovery_floor", t.recovery_floor)?;
        order("tuner.recovery_floor", t.recovery_floor, "tuner.floor", t.floor)?;
        positive("tuner.winsor", t.winsor)?;
        positive("tuner.min_sd", t.min_sd)?;

        let h = &self.half_open;
        duration("half_open.open_base", h.open_base)?;
        duration("half_open.probe_window", h.probe_window)?;
        duration("half_open.backoff_half_life", h.backoff_half_life)?;
        duration("half_open.open_max", h.open_max)?;
        if h.open_max < h.open_base {
            return Err(E::Order {
                field: "half_open.open_base",
                value: h.open_base.as_secs_f64(),
                other: "half_open.open_max",
                other_value: h.open_max.as_secs_f64(),
            });
        }
        finite("half_open.backoff_factor", h.backoff_factor)?;
        if h.backoff_factor < 1.0 {
            return Err(E::OutOfRange { field: "half_open.backoff_factor", value: h.backoff_factor, expected: ">= 1" });
        }
        if h.probe_min == 0 {
            return Err(E::OutOfRange { field: "half_open.probe_min", value: 0.0, expected: ">= 1" });
        }
        order("half_open.probe_min", f64::from(h.probe_min), "half_open.probe_max", f64::from(h.probe_max))?;
        fraction("half_open.max_probe_failure", h.max_probe_failure)?;
        under_one("half_open.max_probe_failure", h.max_probe_failure, "< 1")?;
        duration("half_open.scout_interval", h.scout_interval)?;
        non_negative("half_open.probe_heal", h.probe_heal)?;
        under_one("half_open.probe_heal", h.probe_heal, "in [0, 1)")?;
        if h.close_after == 0 {
            return Err(E::OutOfRange { field: "half_open.close_after", value: 0.0, expected: ">= 1" });
        }

        let n = &self.normal;
        duration("normal.horizon", n.horizon)?;
        positive("normal.headroom", n.headroom)?;
        if n.headroom < 1.0 {
            return Err(E::OutOfRange { field: "normal.headroom", value: n.headroom, expected: ">= 1" });
        }
        non_negative("normal.k", n.k)?;
        positive("normal.floor_ms", n.floor_ms)?;
        positive("normal.ceiling_ms", n.ceiling_ms)?;
        order("normal.floor_ms", n.floor_ms, "normal.ceiling_ms", n.ceiling_ms)?;
        if let Some(slo) = n.slo_ms {
            positive("normal.slo_ms", slo)?;
        }
        non_negative("error_tolerance", self.error_tolerance)?;
        under_one("error_tolerance", self.error_tolerance, "in [0, 1)")?;
        let th = &self.throttle;
        positive("throttle.gain", th.gain)?;
        non_negative("throttle.proportional", th.proportional)?;
        fraction("throttle.max", th.max)?;
        duration("throttle.smoothing", th.smoothing)?;
        duration("throttle.patience", th.patience)?;
        under_one("throttle.max", th.max, "< 1: some traffic must go through")?;

        let p = &self.priority;
        fraction("priority.high", p.high)?;
        fraction("priority.normal", p.normal)?;
        fraction("priority.low", p.low)?;
        fraction("priority.bulk", p.bulk)?;
        order("priority.bulk", p.bulk, "priority.low", p.low)?;
        order("priority.low", p.low, "priority.normal", p.normal)?;
        order("priority.normal", p.normal, "priority.high", p.high)?;
        Ok(())
    }
}

fn finite(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() { Ok(()) } else { Err(ConfigError::NotFinite { field, value: v }) }
}

/// `v < 1`, or an out-of-range error saying `expected`.
fn under_one(field: &'static str, v: f64, expected: &'static str) -> Result<(), ConfigError> {
    if v < 1.0 { Ok(()) } else { Err(ConfigError::OutOfRange { field, value: v, expected }) }
}

fn order(field: &'static str, value: f64, other: &'static str, other_value: f64) -> Result<(), ConfigError> {
    if value <= other_value { Ok(()) } else { Err(ConfigError::Order { field, value, other, other_value }) }
}

/// A configuration that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The value is NaN or infinite.
    #[error("invalid physics config: `{field}` is not finite ({value})")]
    NotFinite {
        /// The field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The value is outside its range.
    #[error("invalid physics config: `{field}` = {value}, expected {expected}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The rule, in words.
        expected: &'static str,
    },
    /// Two values are in the wrong order (a floor above a ceiling, say).
    #[error("invalid physics config: `{field}` ({value}) must not exceed `{other}` ({other_value})")]
    Order {
        /// The field that must be the smaller.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The field that must be the larger.
        other: &'static str,
        /// Its value.
        other_value: f64,
    },
    /// A name that is not one of the known ones.
    #[error("invalid physics config: unknown `{field}`, expected {expected}")]
    UnknownName {
        /// The field.
        field: &'static str,
        /// The names accepted.
        expected: &'static str,
    },
}

/// Durations in config files are written as seconds (floats): `#[serde(with = "serde_secs")]`.
/// Shared by every crate's configuration.
pub mod serde_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes a duration as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads seconds (a non-negative number) as a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| D::Error::custom(format!("expected a non-negative number of seconds, got {secs}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PhysicsConfig::default().validate().unwrap();
        PhysicsConfig::reference().validate().unwrap();
        for p in [Profile::Light, Profile::Standard, Profile::Heavy, Profile::Extreme] {
            PhysicsConfig::default().with_profile(p).validate().unwrap();
        }
    }

    #[test]
    fn errors_name_the_field() {
        let c = PhysicsConfig { r_base: f64::NAN, ..PhysicsConfig::default() };
        assert!(matches!(c.validate(), Err(ConfigError::NotFinite { field: "r_base", .. })));

        let mut c = PhysicsConfig::default();
        c.baseline.latency = 0.0;
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "baseline.latency", .. })));

        let mut c = PhysicsConfig::default();
        c.baseline.latency = -5.0;
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "baseline.latency", .. })));

        let mut c = PhysicsConfig::default();
        c.tuner.floor = 300.0;
        let e = c.validate().unwrap_err();
        assert_eq!(
            e,
            ConfigError::Order { field: "tuner.floor", value: 300.0, other: "tuner.ceiling", other_value: 200.0 }
        );
        assert!(e.to_string().contains("`tuner.floor` (300) must not exceed `tuner.ceiling` (200)"));

        let mut c = PhysicsConfig::default();
        c.half_open.open_max = Duration::from_millis(1);
        assert!(matches!(c.validate(), Err(ConfigError::Order { field: "half_open.open_base", .. })));

        let c = PhysicsConfig { error_tolerance: 1.0, ..PhysicsConfig::default() };
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "error_tolerance", .. })));

        let mut c = PhysicsConfig::default();
        c.throttle.max = 1.0;
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "throttle.max", .. })));

        let mut c = PhysicsConfig::default();
        c.normal.slo_ms = Some(-3.0);
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "normal.slo_ms", .. })));

        let mut c = PhysicsConfig::default();
        c.priority.bulk = 0.95;
        assert!(matches!(c.validate(), Err(ConfigError::Order { field: "priority.bulk", .. })));
    }

    #[test]
    fn model_parses() {
        assert_eq!("reference".parse::<Model>().unwrap(), Model::Reference);
        assert!(matches!("fast".parse::<Model>(), Err(ConfigError::UnknownName { field: "model", .. })));
    }

    #[test]
    fn serde_roundtrip_and_rejects_unknown_fields() {
        let c = PhysicsConfig::reference();
        let json = serde_json::to_string(&c).unwrap();
        let back: PhysicsConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<PhysicsConfig>(r#"{"r_bsae": 3}"#).is_err());
        assert!(serde_json::from_str::<PhysicsConfig>(r#"{"smoothing": -1}"#).is_err());
        let partial: PhysicsConfig = serde_json::from_str(r#"{"r_base": 12.5}"#).unwrap();
        assert_eq!(partial.r_base, 12.5);
        assert_eq!(partial.scar_max, PhysicsConfig::default().scar_max);
    }
}
