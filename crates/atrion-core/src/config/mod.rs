//! Physics configuration: the constants of a model, validated before an engine uses them.
//!
//! Start from [`PhysicsConfig::for_model`] (or `default()` / `reference()`), change what you
//! need, and hand it to [`crate::Engine::new`], which calls [`PhysicsConfig::validate`] and
//! refuses a config that breaks any rule with a [`ConfigError`] naming the field. A config
//! read from a file (serde) goes through the same check; fields a file omits keep the values
//! of [`PhysicsConfig::default`].
//!
//! Its parts: the constants and their defaults here (the two models' sets, profiles);
//! the per-concern sections ([`TunerConfig`], [`HalfOpenConfig`], [`NormalConfig`],
//! [`ThrottleConfig`], [`PriorityThresholds`]) in `sections`; the rules every consumer
//! calls ([`PhysicsConfig::validate`]) and [`ConfigError`] in `validate`; [`serde_secs`],
//! the seconds format of durations every crate's configuration shares.

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod profile;
mod sections;
pub mod serde_secs;
mod validate;

pub use profile::{Profile, ProfileConfig};
pub use sections::{HalfOpenConfig, NormalConfig, PriorityThresholds, ThrottleConfig, TunerConfig};
pub use validate::ConfigError;

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
    /// Default model: how often an operational route's physics steps. Reports between steps
    /// are summed without the route's lock and folded in one step, which a decision or a
    /// report runs once this long has passed since the last (docs/DESIGN.md §7.2); zero steps
    /// on every report. At most `throttle.smoothing`, the quickest smoothing.
    #[serde(with = "serde_secs")]
    pub step: Duration,
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
            step: Self::STEP,
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

    /// The default `step`: 10 ms, a tenth of the quickest smoothing (chosen with the wind
    /// tunnel, docs/TUNING.md).
    pub const STEP: Duration = Duration::from_millis(10);

    /// The shortest scar half-life allowed (`scar_decay` at most `ln 2 / 1 ms`).
    pub const MIN_SCAR_HALF_LIFE: Duration = Duration::from_millis(1);

    /// The constants of the reference model (docs/DESIGN.md §7.1), exactly.
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

    /// Applies a workload profile for work of any length (docs/DESIGN.md §2, task leases):
    /// the latency baseline and the scar multiplier of [`PhysicsConfig::with_profile`], and
    /// the learned normal's ceiling raised to the profile's longest task
    /// (`max_duration`), so that a task within its profile's bounds can be learned as
    /// normal. The profile must be valid ([`ProfileConfig::validate`]).
    pub fn with_workload(mut self, profile: &ProfileConfig) -> Self {
        self.baseline.latency = profile.baseline_latency_ms;
        self.scar_rate *= profile.scar_multiplier;
        let longest = profile.max_duration.as_secs_f64() * 1e3;
        self.normal.ceiling_ms = self.normal.ceiling_ms.max(longest);
        self
    }

    /// Sets the scar decay from a half-life.
    pub fn with_scar_half_life(mut self, half_life: Duration) -> Self {
        self.scar_decay = std::f64::consts::LN_2 / half_life.as_secs_f64();
        self
    }
}

/// Merges a JSON `patch` into `base`, objects field by field; anything else replaces. The
/// one merge of physics overrides over a config serialized to JSON (a policy's `physics`,
/// the Node and Python packages' `physics` options), before it is read back.
pub fn merge_json(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
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

    #[test]
    fn a_json_patch_merges_objects_field_by_field() {
        let mut base = serde_json::to_value(PhysicsConfig::default()).unwrap();
        merge_json(&mut base, serde_json::json!({"scar_rate": 2.0, "tuner": {"k": 4.0}}));
        let merged: PhysicsConfig = serde_json::from_value(base).unwrap();
        let mut expected = PhysicsConfig { scar_rate: 2.0, ..PhysicsConfig::default() };
        expected.tuner.k = 4.0;
        assert_eq!(merged, expected);
    }
}
