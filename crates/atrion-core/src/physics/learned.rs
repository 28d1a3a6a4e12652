//! What the default model learns of a route: rate-invariant smoothing of its telemetry
//! ([`Smoother`]), its latency normal ([`Normal`]), and the memory that holds them with the
//! throttle's ([`Learned`]); from them, the route's latency baseline.

use super::Physics;
use super::tuner::{CompactTuner, Tuner};
use crate::time::Timestamp;

/// A rate-invariant running mean: the sample-weighted mean of the telemetry seen in the
/// last `tau` seconds or so, whatever the sample rate. Every sample adds weight 1, and all
/// weight decays by `e^(-dt/tau)`.
///
/// Stored in `f32` (a route's state is kept small); the arithmetic is in `f64`. Seven
/// significant digits are far more than telemetry carries.
/// A rate kept in sixteen bits, on a log scale: 1/1024 of a doubling (0.07%) per step, up to
/// about 2^64 a second; 0 for none.
pub(crate) fn pack_rate(rate: f64) -> u16 {
    if rate.is_nan() || rate <= 0.0 {
        return 0;
    }
    ((rate + 1.0).log2() * 1024.0).round().min(f64::from(u16::MAX)) as u16
}

/// The rate [`pack_rate`] kept.
pub(crate) fn unpack_rate(packed: u16) -> f64 {
    (f64::from(packed) / 1024.0).exp2() - 1.0
}

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
    /// Adds `n` samples whose channels sum to `sum`, after decaying what was there by
    /// `decay`. One sample is `n = 1`, `sum` its values; a window of samples folded at once
    /// weighs what its samples would have, less the decay within the window.
    pub(super) fn push(&mut self, sum: [f64; N], n: u32, decay: f64) {
        self.weight = (f64::from(self.weight) * decay + f64::from(n)) as f32;
        for (s, v) in self.sum.iter_mut().zip(sum) {
            *s = (f64::from(*s) * decay + v) as f32;
        }
    }

    /// The decayed count of samples: about the sample rate times the time constant.
    pub(super) fn weight(&self) -> f64 {
        f64::from(self.weight)
    }

    pub(super) fn mean(&self) -> [f64; N] {
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

    /// One observation standing for `n` samples, by the tuner's time-weighted recurrence
    /// ([`Tuner::observe_weighted`]).
    pub(super) fn observe(&mut self, x: f64, n: u32, dt_s: f64, tau: f64) {
        if !x.is_finite() {
            return;
        }
        let mut t = Tuner {
            samples: self.samples,
            weight: f64::from(self.weight),
            mean: f64::from(self.mean),
            var: f64::from(self.var),
        };
        t.observe_weighted(x, n, dt_s, tau);
        *self = Normal { samples: t.samples, weight: t.weight as f32, mean: t.mean as f32, var: t.var as f32 };
    }
}

/// What the default model keeps beyond the shared state: telemetry smoothing, the learned
/// normal, the throttle, its tuner and its trips.
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
    /// The successful completions a second (smoothed) when the throttle began to shed, the
    /// throughput test's reference ([`pack_rate`]; 0: too few samples to judge). Sixteen
    /// bits: it fits beside `was_excess`, and the test compares rates by a fifth.
    pub engaged_ok: u16,
    /// The previous quick latency was over the throttle's goal, and for how long (s).
    pub was_excess: bool,
    pub over_s: f32,
    /// Seconds the quick latency has been over the normal's baseline without a break.
    pub excess_s: f32,
    /// Seconds since the throttle last shed.
    pub idle_s: f32,
    /// The route's own tuner (the reference model's is shared and kept in `f64`).
    pub tuner: CompactTuner,
    /// Decayed count of recent trips, behind the re-trip backoff, and when it was that.
    pub trips: f32,
    pub trips_at: Timestamp,
    /// Only reported (snapshots): no update reads it back, so `f32` loses nothing a
    /// decision uses.
    pub pressure: [f32; 3],
    /// Momentum as the last step left it: each step computes it afresh (in `f64`, and uses
    /// that) before reading it, so this copy is only reported (events, snapshots, the
    /// cluster's contribution) and `f32` loses nothing an update uses.
    pub momentum: f32,
    /// The recovery point (ohms) the tuner last gave: a half-open route closes under it.
    pub recovery: f32,
}

impl Learned {
    /// Whether the route has learned its normal long enough to judge latency by it.
    pub(super) fn warm(&self, phys: &Physics, now: Timestamp) -> bool {
        let n = &phys.cfg.normal;
        self.normal.samples >= n.warmup_samples && now.saturating_since(self.born) >= n.warmup
    }

    /// The route's latency baseline (ms): fixed (`slo_ms`, or `baseline.latency` when
    /// learning is off), the ceiling while warming up, else
    /// `clamp(max(headroom * mean, mean + k * sd), floor, ceiling)` of what was learned.
    pub(super) fn latency_baseline(&self, phys: &Physics, warm: bool) -> f64 {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_rate_keeps_its_value_within_a_tenth_of_a_percent() {
        assert_eq!(pack_rate(0.0), 0);
        assert_eq!(pack_rate(f64::NAN), 0);
        assert_eq!(pack_rate(-3.0), 0);
        for rate in [0.5, 1.0, 16.0, 333.3, 1e4, 1e6, 1e12] {
            let back = unpack_rate(pack_rate(rate));
            assert!((back - rate).abs() <= 1e-3 * (rate + 1.0), "{rate} came back as {back}");
        }
        assert_eq!(pack_rate(f64::INFINITY), u16::MAX);
    }

    #[test]
    fn smoother_is_rate_invariant() {
        // One second of samples of 1.0 at 10/s and at 1000/s: the same mean afterwards.
        let tau = 0.25;
        let run = |rate: u32| {
            let mut s = Smoother::default();
            for _ in 0..(rate * 4) {
                s.push([0.0; 3], 1, (-(1.0 / f64::from(rate)) / tau).exp());
            }
            for _ in 0..(rate / 10) {
                s.push([1.0; 3], 1, (-(1.0 / f64::from(rate)) / tau).exp());
            }
            s.mean()[0]
        };
        let (slow, fast) = (run(10), run(1000));
        assert!((slow - fast).abs() < 0.12, "{slow} vs {fast}");
    }
}
