//! The physics of one route: pressure, momentum, scar tissue, resistance, the AutoTuner
//! and the mode machine. Pure functions of (state, telemetry, now); no clock, no I/O.
//!
//! The two models share the shapes below and differ in how they move:
//!
//! | quantity | [`Model::Reference`] | [`Model::Default`] |
//! |---|---|---|
//! | latency baseline | one engine-wide constant | learned per route (`max(headroom·mean, mean + k·sd)` of its own healthy latency), or the route's SLO |
//! | pressure `p_j` | `tanh(k (x_j - b_j) / b_j)` of the sample | same, of the time-smoothed telemetry, against the route's baseline |
//! | between healthy and open | priority shedding only | a throttle: a shed ratio from an integral controller on latency over the baseline, which lets go when shedding does not help |
//! | momentum `M` | `\|P_now - P_two_back\| / dt_ms` | rise of the excess over baseline (fast vs slow smoothing), baselines per second, clamped |
//! | scar `S` | `S e^(-λ dt) + σ` per over-pressured update | `S e^(-λ dt) + (σ'/λ)(1 - e^(-λ dt))` while *trauma* pressure is over critical: per second, `σ' = σ (1 + m_s M / M_max)`; errors count only above their tolerance, latency only when the throttle cannot answer it |
//! | tuner | one EMA shared by all routes | per route, time-weighted, winsorised, frozen while unhealthy |
//! | open | until telemetry says healthy | timed, with a scout per interval; then half-open with a ramping probe quota; healthy probes heal scar |

use crate::config::{Model, PhysicsConfig};
use crate::mode::Mode;
use crate::time::Timestamp;

/// The largest excess over baseline momentum looks at: ten baselines (a latency ten
/// times its SLO is as bad as it gets).
pub(crate) const EXCESS_CAP: f64 = 10.0;

/// The gain of the error channel's trauma pressure above the tolerance: at twice the
/// tolerated excess... `tanh(4 x)` passes the critical pressure 0.7 a fifth of the way from
/// the tolerance to 100% errors (60% errors at the default tolerance of 50%).
pub(crate) const TOLERANCE_GAIN: f64 = 4.0;

/// Latency over the baseline for longer than this (seconds) is no longer learned: a spike
/// of a normal slow mode is brief, an overload or a creep is not.
pub(crate) const PERSISTENT_S: f64 = 1.0;

/// The futility test: shedding helps if the smoothed latency fell at least this far (a
/// fifth) below where it was when the throttle engaged, within its patience.
pub(crate) const DIP: f64 = 0.8;

/// Smoothed saturation at or above which a route counts as full: the throttle's futility
/// test does not let go of a full route (unknown saturation is reported as neutral, 0.5).
pub(crate) const SATURATED: f64 = 0.9;

/// Nothing is learned until the throttle has been idle this long (seconds).
pub(crate) const CALM_S: f64 = 5.0;

/// When shedding proved futile, the throttle's new target is this many times the latency it
/// could not bring down: a dead band, so that a slow creep does not re-engage the throttle at
/// every step (chosen with the wind tunnel, docs/TUNING.md).
pub(crate) const LATCH_MARGIN: f64 = 1.5;

/// Constants derived once from a validated [`PhysicsConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Physics {
    pub cfg: PhysicsConfig,
    pub weights: [f64; 3],
    pub baseline: [f64; 3],
    pub gain: [f64; 3],
    pub tau_fast: f64,
    pub tau_slow: f64,
    pub tuner_tau: f64,
    pub normal_tau: f64,
    pub tau_throttle: f64,
    pub ref_alpha: f64,
    pub backoff_lambda: f64,
}

impl Physics {
    pub fn new(cfg: PhysicsConfig) -> Self {
        let c = cfg.criticality.as_array();
        Physics {
            weights: c.map(f64::ln_1p),
            baseline: cfg.baseline.as_array(),
            gain: cfg.gain.as_array(),
            tau_fast: cfg.smoothing.as_secs_f64(),
            tau_slow: cfg.smoothing_slow.as_secs_f64(),
            tuner_tau: cfg.tuner.horizon.as_secs_f64(),
            normal_tau: cfg.normal.horizon.as_secs_f64(),
            tau_throttle: cfg.throttle.smoothing.as_secs_f64(),
            ref_alpha: 2.0 / (f64::from(cfg.tuner.window) + 1.0),
            backoff_lambda: std::f64::consts::LN_2 / cfg.half_open.backoff_half_life.as_secs_f64(),
            cfg,
        }
    }

    /// `p_j = tanh(k_j (x_j - b_j) / b_j)`; zero for a non-finite input or baseline `<= 0`.
    pub fn pressure(&self, raw: [f64; 3]) -> [f64; 3] {
        let mut p = [0.0; 3];
        for j in 0..3 {
            let b = self.baseline[j];
            if b > 0.0 && raw[j].is_finite() {
                p[j] = (self.gain[j] * (raw[j] - b) / b).tanh();
            }
        }
        p
    }

    /// The default model's pressure: latency against the route's baseline `b_lat`,
    /// `tanh(k (x - b) / b)`; errors and saturation as in the reference. Zero for a
    /// non-finite input.
    pub fn pressure_default(&self, raw: [f64; 3], b_lat: f64) -> [f64; 3] {
        pressure_of(self.relative_default(raw, b_lat))
    }

    /// The default model's trauma pressure: as [`Physics::pressure_default`], but errors
    /// count only above `error_tolerance`, as `tanh(4 (e - t) / (1 - t))`.
    pub fn trauma_default(&self, raw: [f64; 3], b_lat: f64) -> [f64; 3] {
        self.trauma_from(self.pressure_default(raw, b_lat), raw[1])
    }

    /// [`Physics::trauma_default`] from the pressure already computed and the error rate.
    pub fn trauma_from(&self, mut p: [f64; 3], error: f64) -> [f64; 3] {
        let t = self.cfg.error_tolerance;
        p[1] = if error > t && error.is_finite() { (TOLERANCE_GAIN * (error - t) / (1.0 - t)).tanh() } else { 0.0 };
        p
    }

    /// The default model's excess over baseline per channel (the argument of its tanh),
    /// clamped to `[0, EXCESS_CAP]`.
    pub fn excess_default(&self, raw: [f64; 3], b_lat: f64) -> [f64; 3] {
        excess_of(self.relative_default(raw, b_lat))
    }

    /// The default model's relative excess per channel, the argument of its tanh.
    pub fn relative_default(&self, raw: [f64; 3], b_lat: f64) -> [f64; 3] {
        let (be, bs) = (self.baseline[1], self.baseline[2]);
        [self.gain[0] * (raw[0] - b_lat) / b_lat, self.gain[1] * (raw[1] - be) / be, self.gain[2] * (raw[2] - bs) / bs]
    }

    /// `sum_j w_j p_j`
    pub fn weighted(&self, p: [f64; 3]) -> f64 {
        self.weights[0] * p[0] + self.weights[1] * p[1] + self.weights[2] * p[2]
    }

    /// The break and recovery points while the tuner has not learned.
    pub fn static_points(&self) -> (f64, f64) {
        (self.cfg.static_break, self.cfg.static_recovery)
    }
}

/// The healing law of scar tissue (SPEC 2), the one place it is written: `S e^(-λ t)`, with
/// `λ` a route's `scar_decay` (per second) and `t` the age in seconds. Local scar, the
/// cluster's contributions (merged by [`crate::Engine::merge_cluster`]), a warm start and a
/// shed request's retry hint all heal by it.
#[inline]
pub fn heal(scar: f64, lambda: f64, age_s: f64) -> f64 {
    scar * heal_factor(lambda * age_s)
}

/// The order of healed scars, whatever the time they are compared at: for scars `a` and `b`
/// measured at times `t_a` and `t_b` (seconds on one clock), `heal(a, λ, t - t_a) >
/// heal(b, λ, t - t_b)` at every `t` exactly when `heal_rank(a, λ, t_a) > heal_rank(b, λ,
/// t_b)`. It is `ln S + λ t`, so a store can keep the largest healed scar of many nodes
/// without knowing the law; no scar ranks `-inf`.
#[inline]
pub fn heal_rank(scar: f64, lambda: f64, at_s: f64) -> f64 {
    if scar > 0.0 { scar.ln() + lambda * at_s } else { f64::NEG_INFINITY }
}

/// `e^(-x)`, `x = λ t`: the share of scar left.
#[inline]
pub(crate) fn heal_factor(x: f64) -> f64 {
    (-x).exp()
}

/// [`heal_factor`] on the decision path: a short series where `x` is small (merged cluster
/// values are refreshed every pulse, so `x` is tiny there), the exact function beyond. The
/// series' error is below `x^4 / 24`, under 5e-7 for `x < 0.06`.
#[inline]
pub(crate) fn heal_factor_fast(x: f64) -> f64 {
    if x < 0.06 { 1.0 - x * (1.0 - x * (0.5 - x / 6.0)) } else { heal_factor(x) }
}

/// `e^(-dt / tau)`, exactly 1 when no time passed (samples that share a timestamp are
/// common at high rates, and skip the exp).
#[inline]
fn decay(dt_s: f64, tau: f64) -> f64 {
    let x = dt_s / tau;
    if x <= 0.0 {
        1.0
    } else if x < 0.01 {
        // A short series where samples come often (its error is below x^4 / 24, under 5e-10):
        // a report computes several decays, and most are of a few milliseconds.
        1.0 - x * (1.0 - x * (0.5 - x / 6.0))
    } else {
        (-x).exp()
    }
}

/// Pressure from the relative excess: `tanh` (an infinite excess is full pressure, never
/// none), zero where NaN.
fn pressure_of(rel: [f64; 3]) -> [f64; 3] {
    rel.map(|x| if x.is_nan() { 0.0 } else { x.tanh() })
}

/// The relative excess clamped to `[0, EXCESS_CAP]` (an infinite one to the cap), zero where
/// NaN.
fn excess_of(rel: [f64; 3]) -> [f64; 3] {
    rel.map(|x| if x.is_nan() { 0.0 } else { x.clamp(0.0, EXCESS_CAP) })
}

/// Euclidean norm.
pub(crate) fn norm(p: [f64; 3]) -> f64 {
    (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt()
}

/// Norm of the positive part: the check valve, better-than-baseline never scars.
pub(crate) fn positive_norm(p: [f64; 3]) -> f64 {
    norm(p.map(|x| x.max(0.0)))
}

/// A rate-invariant running mean: the sample-weighted mean of the telemetry seen in the
/// last `tau` seconds or so, whatever the sample rate. Every sample adds weight 1, and all
/// weight decays by `e^(-dt/tau)`.
///
/// Stored in `f32` (a route's state is kept small); the arithmetic is in `f64`. Seven
/// significant digits are far more than telemetry carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Smoother<const N: usize = 3> {
    weight: f32,
    sum: [f32; N],
}

impl<const N: usize> Default for Smoother<N> {
    fn default() -> Self {
        Smoother { weight: 0.0, sum: [0.0; N] }
    }
}

impl<const N: usize> Smoother<N> {
    fn push(&mut self, x: [f64; N], decay: f64) {
        self.weight = (f64::from(self.weight) * decay + 1.0) as f32;
        for (s, v) in self.sum.iter_mut().zip(x) {
            *s = (f64::from(*s) * decay + v) as f32;
        }
    }

    fn mean(&self) -> [f64; N] {
        if self.weight > 0.0 { self.sum.map(|s| f64::from(s) / f64::from(self.weight)) } else { [0.0; N] }
    }
}

/// A route's learned latency normal: the time-weighted mean and variance of its quick
/// latency (ms). The weight of past samples decays with the horizon, so the first samples
/// average plainly and later ones move the mean by about `1 / (rate * horizon)` each.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Normal {
    pub samples: u32,
    weight: f32,
    pub mean: f32,
    pub var: f32,
}

impl Normal {
    /// A normal restored from a snapshot. The sample weight is not carried: it restarts
    /// from the sample count (at most 1,000), so that the restored mean is not swept away by
    /// the first new samples.
    pub fn restored(samples: u32, mean: f64, var: f64) -> Self {
        if samples == 0 || !mean.is_finite() || !var.is_finite() {
            return Normal::default();
        }
        let max = crate::Telemetry::MAX_LATENCY_MS;
        Normal {
            samples,
            weight: samples.min(1_000) as f32,
            mean: mean.clamp(0.0, max) as f32,
            var: var.clamp(0.0, max * max) as f32,
        }
    }

    /// One sample, by the tuner's time-weighted recurrence ([`Tuner::observe_weighted`]).
    fn observe(&mut self, x: f64, dt_s: f64, tau: f64) {
        if !x.is_finite() {
            return;
        }
        let mut t = Tuner {
            samples: self.samples,
            weight: f64::from(self.weight),
            mean: f64::from(self.mean),
            var: f64::from(self.var),
        };
        t.observe_weighted(x, dt_s, tau);
        *self = Normal { samples: t.samples, weight: t.weight as f32, mean: t.mean as f32, var: t.var as f32 };
    }
}

/// What the default model keeps beyond the shared state: telemetry smoothing, the learned
/// normal and the throttle.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Learned {
    /// Fast and slow telemetry smoothing (pressure; momentum is their gap).
    pub fast: Smoother,
    pub slow: Smoother,
    /// Latency smoothed for the throttle (shorter than `fast`).
    pub quick: Smoother<1>,
    pub normal: Normal,
    /// The first report, when the warm-up began.
    pub born: Timestamp,
    /// The shed ratio of the proportional answer, in `[0, throttle.max]`, and its integral part.
    pub throttle: f32,
    pub integral: f32,
    /// The throttle's own target latency once shedding proved futile (0: none).
    pub target: f32,
    /// While the throttle sheds at half its maximum or more: the smoothed latency when it
    /// began (0: not engaged), the lowest since, and the seconds since.
    pub engaged_x: f32,
    pub engaged_min: f32,
    pub engaged_s: f32,
    /// The previous quick latency was over the throttle's goal, and for how long (s).
    pub was_excess: bool,
    pub over_s: f32,
    /// Seconds the quick latency has been over the normal's baseline without a break.
    pub excess_s: f32,
    /// Seconds since the throttle last shed.
    pub idle_s: f32,
}

impl Learned {
    /// Whether the route has learned its normal long enough to judge latency by it.
    fn warm(&self, phys: &Physics, now: Timestamp) -> bool {
        let n = &phys.cfg.normal;
        self.normal.samples >= n.warmup_samples && now.saturating_since(self.born) >= n.warmup
    }

    /// The route's latency baseline (ms): fixed (`slo_ms`, or `baseline.latency` when
    /// learning is off), the ceiling while warming up, else
    /// `clamp(max(headroom * mean, mean + k * sd), floor, ceiling)` of what was learned.
    fn latency_baseline(&self, phys: &Physics, warm: bool) -> f64 {
        let n = &phys.cfg.normal;
        if let Some(slo) = n.slo_ms {
            return slo;
        }
        if !n.learn {
            return phys.baseline[0];
        }
        if !warm {
            return n.ceiling_ms;
        }
        let (mean, sd) = (f64::from(self.normal.mean), f64::from(self.normal.var).sqrt());
        (n.headroom * mean).max(mean + n.k * sd).clamp(n.floor_ms, n.ceiling_ms)
    }

    /// The proportional answer: an integral controller on the relative latency excess over
    /// the throttle's target, with a test of whether shedding helps (`throttle.patience`).
    fn update_throttle(&mut self, phys: &Physics, b_lat: f64, dt_s: f64, settled: f64, saturation: f64) {
        let t = &phys.cfg.throttle;
        let x = self.quick.mean()[0];
        let mut target = f64::from(self.target);
        if x <= b_lat && target > 0.0 {
            // Back under the normal's baseline: the slowness is gone, and the target heals
            // back towards the baseline.
            target *= decay(dt_s, phys.normal_tau);
        }
        let goal = b_lat.max(target);
        let mut excess = ((x - goal) / goal).clamp(-1.0, EXCESS_CAP);
        // A queue keeps latency over the goal; a spike of a normal slow mode does not. An idle
        // throttle engages once the excess has lasted the quick smoothing's time constant, over two
        // samples or more (at a few requests a second the quick mean is the last sample);
        // once engaged, it follows every sample.
        self.over_s = if excess > 0.0 && self.was_excess { self.over_s + dt_s as f32 } else { 0.0 };
        let persistent = excess <= 0.0 || self.integral > 0.0 || f64::from(self.over_s) >= phys.tau_throttle;
        self.was_excess = excess > 0.0;
        if !persistent {
            excess = 0.0;
        }
        let integral = (f64::from(self.integral) + dt_s * t.gain * excess).clamp(0.0, t.max);
        let was = f64::from(self.throttle);
        let mut throttle = (integral + t.proportional * excess.max(0.0)).min(t.max);
        let mut integral = integral;
        if throttle < 0.5 * t.max {
            if was >= 0.5 * t.max {
                self.engaged_x = 0.0;
            }
        } else if self.engaged_x == 0.0 {
            (self.engaged_x, self.engaged_min, self.engaged_s) = (settled as f32, settled as f32, 0.0);
        } else {
            self.engaged_s += dt_s as f32;
            self.engaged_min = self.engaged_min.min(settled as f32);
            if f64::from(self.engaged_s) >= t.patience.as_secs_f64() {
                // Shedding half or more for the whole patience never brought the (smoothed)
                // latency a fifth below where it began: not a queue (a slower dependency, a
                // creep). A queue drains when shedding exceeds the overload, and its latency
                // falls. A route whose workers are full is overloaded beyond what the
                // throttle sheds: it keeps shedding, and the scar judges the rest.
                if f64::from(self.engaged_min) >= DIP * f64::from(self.engaged_x) && saturation < SATURATED {
                    // Let go, and take the latency shedding could not bring down as the goal.
                    target = (LATCH_MARGIN * settled).min(phys.cfg.normal.ceiling_ms);
                    (integral, throttle) = (0.0, 0.0);
                    self.engaged_x = 0.0;
                } else {
                    (self.engaged_x, self.engaged_min, self.engaged_s) = (settled as f32, settled as f32, 0.0);
                }
            }
        }
        (self.target, self.integral, self.throttle) = (target as f32, integral as f32, throttle as f32);
    }
}

/// Model-specific memory of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Memory {
    /// Reference: pressure one and two updates back.
    Reference { prev: [[f64; 3]; 2] },
    /// Default: smoothing, the learned normal and the throttle.
    Default(Learned),
}

/// Exponentially weighted mean and variance of resistance, the AutoTuner's memory.
///
/// The reference form is `d = x - mean; mean += a d; var = (1 - a)(var + a d^2)` with a
/// fixed `a`; the first sample sets the mean and a zero variance. The default model uses
/// the same recurrence with `a = 1 / W`, where `W` is the time-decayed sample weight, so
/// that its horizon is in seconds, not samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Tuner {
    pub samples: u32,
    pub weight: f64,
    pub mean: f64,
    pub var: f64,
}

impl Tuner {
    /// One sample with weight `alpha`: the reference model's tuner calls this directly
    /// with its fixed alpha.
    pub fn learn(&mut self, x: f64, alpha: f64) {
        if self.samples == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// One sample with weight `1 / W`, where `W` is the sample weight decayed with time
    /// constant `tau` (seconds), so that the horizon is in seconds, not samples.
    fn observe_weighted(&mut self, x: f64, dt_s: f64, tau: f64) {
        self.weight = self.weight * decay(dt_s, tau) + 1.0;
        self.learn(x, 1.0 / self.weight);
    }

    /// The default tuner: time-weighted, winsorised.
    fn observe_robust(&mut self, x: f64, dt_s: f64, phys: &Physics) {
        let t = &phys.cfg.tuner;
        let x = if self.samples == 0 {
            x
        } else {
            let band = t.winsor * self.var.sqrt().max(t.min_sd);
            x.clamp(self.mean - band, self.mean + band)
        };
        self.observe_weighted(x, dt_s, phys.tuner_tau);
    }

    /// (break, recovery) from what has been learned.
    pub fn points(&self, phys: &Physics, min_sd: f64) -> (f64, f64) {
        let t = &phys.cfg.tuner;
        if !t.enabled || self.samples <= t.warmup_samples {
            return phys.static_points();
        }
        let brk = (self.mean + t.k * self.var.sqrt().max(min_sd)).clamp(t.floor, t.ceiling);
        (brk, (t.recovery_ratio * brk).max(t.recovery_floor))
    }
}

/// A transition of the mode machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub from: Mode,
    pub to: Mode,
}

/// What the physics keeps about one route between updates, beside the values it publishes
/// for decisions ([`Published`], which the engine stores only in the route's view).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Kept {
    pub mode: Mode,
    /// Healthy and unhealthy probes in this half-open phase.
    pub probe_ok: u16,
    pub probe_bad: u16,
    pub seen: bool,
    /// Default: the previous update was over-pressured.
    pub was_over: bool,
    /// Reports whose timestamp was earlier than the route's last.
    pub skews: u32,
    /// Saturates at `u32::MAX` (only the bootstrap count reads it).
    pub updates: u32,
    /// Only reported (snapshots): no update reads it back, so `f32` loses nothing a
    /// decision uses.
    pub pressure: [f32; 3],
    pub momentum: f64,
    pub recovery: f64,
    pub tuner: Tuner,
    /// Default: decayed count of recent trips, behind the re-trip backoff.
    pub trips: f64,
    pub trips_at: Timestamp,
    pub memory: Memory,
}

impl Kept {
    pub fn new(phys: &Physics) -> Self {
        Kept {
            mode: Mode::Bootstrap,
            probe_ok: 0,
            probe_bad: 0,
            seen: false,
            was_over: false,
            skews: 0,
            updates: 0,
            pressure: [0.0; 3],
            momentum: 0.0,
            recovery: phys.static_points().1,
            tuner: Tuner::default(),
            trips: 0.0,
            trips_at: Timestamp::ZERO,
            memory: match phys.cfg.model {
                Model::Reference => Memory::Reference { prev: [[0.0; 3]; 2] },
                Model::Default => Memory::Default(Learned::default()),
            },
        }
    }

    /// Default: the learned memory (fresh if this state came from the other model).
    pub fn learned(&self) -> Learned {
        match self.memory {
            Memory::Default(m) => m,
            Memory::Reference { .. } => Learned::default(),
        }
    }

    /// Default: the throttle's shed ratio (kept in `f32`).
    pub fn throttle(&self) -> f32 {
        match &self.memory {
            Memory::Default(m) => m.throttle,
            Memory::Reference { .. } => 0.0,
        }
    }

    /// The probe quota while half-open: doubles with each healthy probe, and an unhealthy
    /// one takes two doublings back.
    pub fn probe_quota(&self, phys: &Physics) -> u32 {
        let h = &phys.cfg.half_open;
        let shift = u32::from(self.probe_ok.saturating_sub(self.probe_bad.saturating_mul(2))).min(31);
        h.probe_min.saturating_mul(1u32 << shift).min(h.probe_max).max(h.probe_min)
    }
}

/// The values of a route's state that decisions read. The engine publishes them in the
/// route's view and stores them only there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Published {
    pub resistance: f64,
    pub scar: f64,
    pub break_point: f64,
    /// The latest `now` seen; never moves backwards (the clock-skew rule).
    pub last: Timestamp,
    /// Default: when the open state ends.
    pub open_until: Timestamp,
}

impl Published {
    pub fn new(phys: &Physics) -> Self {
        Published {
            resistance: phys.cfg.r_base,
            scar: 0.0,
            break_point: phys.static_points().0,
            last: Timestamp::ZERO,
            open_until: Timestamp::ZERO,
        }
    }
}

/// A route's whole state for the length of one update: its kept part, borrowed in place
/// (under the route's lock), and its published values, read from the view and published
/// again after. Nothing is copied but the five published values.
#[derive(Debug)]
pub(crate) struct RouteState<'k> {
    pub k: &'k mut Kept,
    pub resistance: f64,
    pub scar: f64,
    pub break_point: f64,
    pub last: Timestamp,
    pub open_until: Timestamp,
}

impl<'k> RouteState<'k> {
    pub fn new(k: &'k mut Kept, p: Published) -> Self {
        RouteState {
            k,
            resistance: p.resistance,
            scar: p.scar,
            break_point: p.break_point,
            last: p.last,
            open_until: p.open_until,
        }
    }

    /// The values to publish.
    pub fn published(&self) -> Published {
        Published {
            resistance: self.resistance,
            scar: self.scar,
            break_point: self.break_point,
            last: self.last,
            open_until: self.open_until,
        }
    }

    /// Forgets everything: the state of a new route (the clock-skew count stays).
    pub fn reset(&mut self, phys: &Physics) {
        let skews = self.k.skews;
        *self.k = Kept::new(phys);
        self.k.skews = skews;
        let p = Published::new(phys);
        (self.resistance, self.scar, self.break_point, self.last, self.open_until) =
            (p.resistance, p.scar, p.break_point, p.last, p.open_until);
    }

    /// Seconds since the last update, under the clock-skew rule (never negative), and moves
    /// `last` forward.
    fn advance(&mut self, now: Timestamp) -> f64 {
        let dt = if self.k.seen { now.saturating_since(self.last).as_secs_f64() } else { 0.0 };
        if !self.k.seen || now > self.last {
            self.last = now;
        }
        self.k.seen = true;
        dt
    }

    /// One telemetry update. `shared` is the reference model's tuner shared by all routes;
    /// `cluster` is the other nodes' scar for this route at `now`, if any report on it.
    pub fn update(
        &mut self,
        phys: &Physics,
        raw: [f64; 3],
        now: Timestamp,
        shared: Option<&mut Tuner>,
        cluster: Option<f64>,
    ) -> Option<Change> {
        match phys.cfg.model {
            Model::Reference => self.update_reference(phys, raw, now, shared, cluster),
            Model::Default => self.update_default(phys, raw, now, cluster),
        }
    }

    fn update_reference(
        &mut self,
        phys: &Physics,
        raw: [f64; 3],
        now: Timestamp,
        shared: Option<&mut Tuner>,
        cluster: Option<f64>,
    ) -> Option<Change> {
        let c = &phys.cfg;
        let dt_s = self.advance(now);
        self.k.updates = self.k.updates.saturating_add(1);
        let p = phys.pressure(raw);
        if self.k.mode == Mode::Bootstrap {
            // No physics during bootstrap: R is fixed and the route cannot trip. The
            // pressure history is kept so that momentum has something to compare with.
            self.k.pressure = p.map(|x| x as f32);
            self.push_prev(p);
            self.resistance = 1.2 * c.r_base;
            if self.k.updates >= c.bootstrap_updates {
                return self.set_mode(Mode::Operational);
            }
            return None;
        }
        let dt_ms = dt_s * 1e3;
        let two_back = match self.k.memory {
            Memory::Reference { prev } => prev[1],
            Memory::Default(_) => [0.0; 3],
        };
        let delta = [p[0] - two_back[0], p[1] - two_back[1], p[2] - two_back[2]];
        self.k.momentum = if dt_ms > 0.0 { norm(delta) / dt_ms } else { 0.0 };
        let trauma = if positive_norm(p) > c.critical_pressure { c.scar_rate } else { 0.0 };
        self.scar = (heal(self.scar, c.scar_decay, dt_s) + trauma).min(c.scar_max);
        let r = c.r_base + phys.weighted(p) + c.momentum_weight * self.k.momentum + self.scar;
        self.resistance = r.clamp(c.r_base, c.r_max);
        self.k.pressure = p.map(|x| x as f32);
        self.push_prev(p);

        let mut own = self.k.tuner;
        let tuner = shared.unwrap_or(&mut own);
        tuner.learn(self.resistance, phys.ref_alpha);
        (self.break_point, self.k.recovery) = tuner.points(phys, 0.0);
        self.k.tuner = *tuner;

        match self.k.mode {
            Mode::Operational if self.effective(phys, cluster) >= self.break_point => self.set_mode(Mode::Open),
            Mode::Open
                if (self.scar < c.scar_rate && norm(p) < c.critical_pressure)
                    || self.effective(phys, cluster) < self.k.recovery =>
            {
                self.set_mode(Mode::Operational)
            }
            _ => None,
        }
    }

    /// Reference: remembers `p` as the latest pressure.
    fn push_prev(&mut self, p: [f64; 3]) {
        if let Memory::Reference { prev } = &mut self.k.memory {
            *prev = [p, prev[0]];
        }
    }

    fn update_default(
        &mut self,
        phys: &Physics,
        raw: [f64; 3],
        now: Timestamp,
        cluster: Option<f64>,
    ) -> Option<Change> {
        let c = &phys.cfg;
        let mut m = self.k.learned();
        if !self.k.seen {
            m.born = now;
        }
        let dt_s = self.advance(now);
        self.k.updates = self.k.updates.saturating_add(1);

        m.fast.push(raw, decay(dt_s, phys.tau_fast));
        m.slow.push(raw, decay(dt_s, phys.tau_slow));
        let fast = m.fast.mean();
        let warm = m.warm(phys, now);
        let b_lat = m.latency_baseline(phys, warm);

        // The proportional answer comes first: latency trouble is the throttle's to answer
        // while it can (an integral controller on the relative excess, once the route knows
        // its normal and while it is closed).
        m.quick.push([raw[0]], decay(dt_s, phys.tau_throttle));
        let throttling = c.throttle.enabled && warm && self.k.mode == Mode::Operational;
        if throttling {
            m.update_throttle(phys, b_lat, dt_s, fast[0], fast[2]);
        } else {
            (m.integral, m.throttle, m.engaged_x) = (0.0, 0.0, 0.0);
        }
        // Latency is judged against the normal, or against the throttle's target once
        // shedding proved that the excess is no queue.
        let b_judged = b_lat.max(f64::from(m.target));
        let rel = phys.relative_default(fast, b_judged);
        let p = pressure_of(rel);
        // Momentum is the rise of the excess over baseline, not of pressure: tanh saturates
        // pressure within a fraction of a second of any real failure, which would leave
        // momentum nothing to measure. The gap between a fast and a slow mean, divided by
        // the gap between their time constants, estimates the slope in baselines per second.
        let gap = norm(excess_of(rel)) - norm(phys.excess_default(m.slow.mean(), b_judged));
        self.k.momentum = (gap / (phys.tau_slow - phys.tau_fast)).clamp(0.0, c.momentum_max);

        // Latency becomes trauma only when the throttle cannot answer it (it is at its
        // maximum, or not acting); errors above their tolerance and saturation always can.
        let answered = throttling && f64::from(m.throttle) < c.throttle.max;
        let pt = phys.trauma_from(p, fast[1]);
        let over = positive_norm(if answered { [0.0, pt[1], pt[2]] } else { pt });
        let is_over = over > c.critical_pressure;
        // A healthy route without scar has nothing to decay or accrue: skip the exp.
        let heal = if self.scar > 0.0 || is_over || self.k.was_over { decay(dt_s, 1.0 / c.scar_decay) } else { 1.0 };
        // Trauma accrues per second of over-pressure, whatever the sample rate, and up to
        // `1 + momentum_scar` times faster while pressure is still rising: tanh saturates pressure within
        // a fraction of a second of a fast ramp, so momentum must leave a mark in the scar,
        // which outlasts the ramp, to make a fast ramp trip earlier than a slow one.
        let rate = c.scar_rate * (1.0 + c.momentum_scar * self.k.momentum / c.momentum_max);
        // Trapezoid rule: an interval that ends over-pressured but began healthy counts half,
        // so a slow sample rate does not charge the whole gap to the first bad sample.
        let share = (f64::from(u8::from(is_over)) + f64::from(u8::from(self.k.was_over))) / 2.0;
        self.k.was_over = is_over;
        let trauma = share * rate / c.scar_decay * (1.0 - heal);
        self.scar = (self.scar * heal + trauma).clamp(0.0, c.scar_max);
        let r = c.r_base + phys.weighted(p) + c.momentum_weight * self.k.momentum + self.scar;
        self.resistance = r.clamp(c.r_base, c.r_max);
        self.k.pressure = p.map(|x| x as f32);

        // Learning the normal: everything while warming up; once warm, only what a healthy
        // route shows, so that neither an overload nor a creeping latency is learned.
        let closed = matches!(self.k.mode, Mode::Bootstrap | Mode::Operational);
        // The statistics are of the throttle's quick latency, the noisiest signal that is
        // compared with the baseline, so that the `k * sd` band covers its noise.
        let quick = m.quick.mean()[0];
        // Latency over the baseline is learned while it is brief (a normal slow mode: leaving
        // its spikes out would shrink the learned spread until the slow mode is shed); once
        // it has lasted `PERSISTENT_S` (an overload, a creep), it is not.
        m.excess_s = if quick > b_lat { m.excess_s + dt_s as f32 } else { 0.0 };
        let brief = f64::from(m.excess_s) < PERSISTENT_S;
        // Nor is anything learned until the throttle has been idle for `CALM_S`: at the edge
        // of an overload latency sits just under the baseline, and learning it would drift
        // the normal upwards (Gradient2's failure).
        m.idle_s = if m.throttle > 0.0 { 0.0 } else { m.idle_s + dt_s as f32 };
        let calm = f64::from(m.idle_s) >= CALM_S;
        if closed && (!warm || ((quick <= b_lat || brief) && p[1] <= 0.0 && calm)) {
            // A brief excess teaches at most twice the baseline, so that one second of a fast
            // ramp cannot widen the learned spread enough to hide the failure that follows.
            m.normal.observe(quick.min(2.0 * b_lat), dt_s, phys.normal_tau);
        }
        self.k.memory = Memory::Default(m);

        let healthy = positive_norm(p) <= c.critical_pressure;
        if self.k.mode == Mode::Operational && healthy && self.resistance < self.break_point {
            self.k.tuner.observe_robust(self.resistance, dt_s, phys);
            (self.break_point, self.k.recovery) = self.k.tuner.points(phys, c.tuner.min_sd);
        }

        match self.k.mode {
            Mode::Bootstrap => {
                if self.k.updates >= c.bootstrap_updates {
                    return self.set_mode(Mode::Operational);
                }
                None
            }
            Mode::Operational if self.effective(phys, cluster) >= self.break_point => self.trip(phys, now),
            Mode::Operational => None,
            // The open interval is over, or a scout is back healthy: a healthy sample once the
            // scout interval has passed since the trip ends the open interval early (requests
            // admitted before the trip do not count).
            Mode::Open
                if now >= self.open_until
                    || (now.saturating_since(self.k.trips_at) >= c.half_open.scout_interval
                        && positive_norm(phys.trauma_default(raw, b_judged)) <= c.critical_pressure) =>
            {
                let change = self.set_mode(Mode::HalfOpen);
                self.probe(phys, raw, now, cluster, b_judged).or(change)
            }
            Mode::Open => None,
            Mode::HalfOpen => self.probe(phys, raw, now, cluster, b_judged),
        }
    }

    /// A sample while half-open is a probe. The phase re-trips as soon as more than
    /// `max_probe_failure` of its probes were unhealthy (so the first probe failing re-trips
    /// at once, while one background error among many healthy probes does not); it closes
    /// after `close_after` healthy probes once resistance is back under the recovery point.
    fn probe(
        &mut self,
        phys: &Physics,
        raw: [f64; 3],
        now: Timestamp,
        cluster: Option<f64>,
        b_judged: f64,
    ) -> Option<Change> {
        let h = &phys.cfg.half_open;
        // Only the probe's own health counts: resistance may still be high from scar that is
        // healing, which is what the recovery point is for.
        if positive_norm(phys.trauma_default(raw, b_judged)) > phys.cfg.critical_pressure {
            self.k.probe_bad = self.k.probe_bad.saturating_add(1);
            let total = f64::from(self.k.probe_ok) + f64::from(self.k.probe_bad);
            if f64::from(self.k.probe_bad) > h.max_probe_failure * total {
                return self.trip(phys, now);
            }
            return None;
        }
        self.k.probe_ok = self.k.probe_ok.saturating_add(1);
        // Evidence heals: each healthy probe takes a share of the scar away.
        let healed = self.scar * h.probe_heal;
        self.scar -= healed;
        self.resistance = (self.resistance - healed).max(phys.cfg.r_base);
        if u32::from(self.k.probe_ok) >= h.close_after && self.effective(phys, cluster) < self.k.recovery {
            self.k.trips *= 0.5;
            return self.set_mode(Mode::Operational);
        }
        None
    }

    /// Opens the route for `open_base * factor^(recent trips)`, capped at `open_max`.
    fn trip(&mut self, phys: &Physics, now: Timestamp) -> Option<Change> {
        let h = &phys.cfg.half_open;
        let age = now.saturating_since(self.k.trips_at).as_secs_f64();
        let previous = self.k.trips * (-phys.backoff_lambda * age).exp();
        self.k.trips = (previous + 1.0).min(64.0);
        self.k.trips_at = now;
        let secs = (h.open_base.as_secs_f64() * h.backoff_factor.powf(previous)).min(h.open_max.as_secs_f64());
        let open = std::time::Duration::try_from_secs_f64(secs).unwrap_or(h.open_max).min(h.open_max);
        self.open_until = now.saturating_add(open);
        self.set_mode(Mode::Open)
    }

    /// Resistance with the cluster's scar blended in: `S = g S_cluster + (1 - g) S_local`.
    /// Without a cluster contribution, the local resistance.
    fn effective(&self, phys: &Physics, cluster: Option<f64>) -> f64 {
        blend(phys, self.resistance, self.scar, cluster)
    }

    pub fn set_mode(&mut self, to: Mode) -> Option<Change> {
        let from = self.k.mode;
        if from == to {
            return None;
        }
        self.k.mode = to;
        if to == Mode::HalfOpen || to == Mode::Open {
            self.k.probe_ok = 0;
            self.k.probe_bad = 0;
        }
        Some(Change { from, to })
    }
}

/// Gamma blending of scar (SPEC 4): `R + g (S_cluster - S_local)`, clamped, where `resistance`
/// and `scar` are local. Without a cluster contribution, `resistance` unchanged.
pub(crate) fn blend(phys: &Physics, resistance: f64, scar: f64, cluster: Option<f64>) -> f64 {
    match cluster {
        Some(s_cluster) => (resistance + phys.cfg.gamma * (s_cluster - scar)).clamp(phys.cfg.r_base, phys.cfg.r_max),
        None => resistance,
    }
}

/// `R - S (1 - e^(-λ age))`: what resistance would be after `age` seconds of healing.
pub(crate) fn decayed_resistance(phys: &Physics, resistance: f64, scar: f64, age_s: f64) -> f64 {
    if scar <= 0.0 || age_s <= 0.0 || phys.cfg.model == Model::Reference {
        return resistance;
    }
    (resistance - scar * (1.0 - heal_factor(phys.cfg.scar_decay * age_s))).max(phys.cfg.r_base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_kept_state_fits_in_200_bytes() {
        assert!(std::mem::size_of::<Kept>() <= 200, "{}", std::mem::size_of::<Kept>());
    }

    #[test]
    fn pressure_zero_for_bad_baseline_or_input() {
        let mut cfg = PhysicsConfig::reference();
        cfg.baseline.latency = 0.0; // bypasses validate on purpose: the formula's own guard
        let phys = Physics::new(cfg);
        let p = phys.pressure([500.0, f64::NAN, 0.5]);
        assert_eq!(p, [0.0, 0.0, 0.0]);
    }

    #[test]
    fn smoother_is_rate_invariant() {
        // One second of samples of 1.0 at 10/s and at 1000/s: the same mean afterwards.
        let tau = 0.25;
        let run = |rate: u32| {
            let mut s = Smoother::default();
            for _ in 0..(rate * 4) {
                s.push([0.0; 3], (-(1.0 / f64::from(rate)) / tau).exp());
            }
            for _ in 0..(rate / 10) {
                s.push([1.0; 3], (-(1.0 / f64::from(rate)) / tau).exp());
            }
            s.mean()[0]
        };
        let (slow, fast) = (run(10), run(1000));
        assert!((slow - fast).abs() < 0.12, "{slow} vs {fast}");
    }
}
