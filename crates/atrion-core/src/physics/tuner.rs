//! The AutoTuner: break and recovery points learned from a route's own resistance.

use super::{Physics, decay};

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

/// A [`Tuner`] as the default model keeps it, in `f32` (a route's state is kept small; its
/// arithmetic is in `f64`, as the learned normal's). The reference model keeps its tuner in
/// `f64`: its figures are reproduced bit for bit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CompactTuner {
    samples: u32,
    weight: f32,
    mean: f32,
    var: f32,
}

impl From<Tuner> for CompactTuner {
    fn from(t: Tuner) -> Self {
        CompactTuner { samples: t.samples, weight: t.weight as f32, mean: t.mean as f32, var: t.var as f32 }
    }
}

impl From<CompactTuner> for Tuner {
    fn from(t: CompactTuner) -> Self {
        Tuner { samples: t.samples, weight: f64::from(t.weight), mean: f64::from(t.mean), var: f64::from(t.var) }
    }
}

impl Tuner {
    /// One sample with weight `alpha`: the reference model's tuner calls this directly
    /// with its fixed alpha.
    pub fn learn(&mut self, x: f64, alpha: f64) {
        self.learn_n(x, alpha, 1);
    }

    /// As [`Tuner::learn`], for an observation that stands for `n` samples (a physics step
    /// folding a window of them): the sample count moves by `n`.
    fn learn_n(&mut self, x: f64, alpha: f64, n: u32) {
        if self.samples == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        self.samples = self.samples.saturating_add(n.max(1));
    }

    /// One observation with weight `1 / W`, where `W` is the observation weight decayed
    /// with time constant `tau` (seconds), so that the horizon is in seconds, not samples or
    /// steps. It stands for `n` samples.
    pub(super) fn observe_weighted(&mut self, x: f64, n: u32, dt_s: f64, tau: f64) {
        self.weight = self.weight * decay(dt_s, tau) + 1.0;
        self.learn_n(x, 1.0 / self.weight, n);
    }

    /// The default tuner: time-weighted, winsorised.
    pub(super) fn observe_robust(&mut self, x: f64, n: u32, dt_s: f64, phys: &Physics) {
        let t = &phys.cfg.tuner;
        let x = if self.samples == 0 {
            x
        } else {
            let band = t.winsor * self.var.sqrt().max(t.min_sd);
            x.clamp(self.mean - band, self.mean + band)
        };
        self.observe_weighted(x, n, dt_s, phys.tuner_tau);
    }

    /// The default model's (break, recovery) from what has been learned: the static points
    /// until the tuner has more than `warmup_samples` samples.
    pub fn points(&self, phys: &Physics, min_sd: f64) -> (f64, f64) {
        self.points_when(phys, min_sd, self.samples > phys.cfg.tuner.warmup_samples)
    }

    /// The reference model's (break, recovery): the reference tuner is warm once it has
    /// `warmup_samples` samples (docs/DESIGN.md §7.1), one sample before the default's,
    /// and uses the standard deviation as learned (no floor).
    pub fn reference_points(&self, phys: &Physics) -> (f64, f64) {
        self.points_when(phys, 0.0, self.samples >= phys.cfg.tuner.warmup_samples)
    }

    /// (break, recovery): learned when `warm`, else the static points.
    fn points_when(&self, phys: &Physics, min_sd: f64, warm: bool) -> (f64, f64) {
        let t = &phys.cfg.tuner;
        if !t.enabled || !warm {
            return phys.static_points();
        }
        let brk = (self.mean + t.k * self.var.sqrt().max(min_sd)).clamp(t.floor, t.ceiling);
        (brk, (t.recovery_ratio * brk).max(t.recovery_floor))
    }
}
