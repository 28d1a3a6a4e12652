//! The sections of a [`PhysicsConfig`](super::PhysicsConfig), one per concern, with their
//! defaults (those of the default model).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_secs;

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
