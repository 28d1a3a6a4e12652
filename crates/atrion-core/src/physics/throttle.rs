//! The default model's proportional answer: an integral controller (with a proportional
//! part) on the quick latency's excess over the route's baseline, which engages only on an
//! excess that lasts, and lets go, latching a higher target, when shedding does not bring
//! latency down (the futility test).

use super::default::EXCESS_CAP;
use super::learned::{Learned, pack_rate, unpack_rate};
use super::{Physics, decay};

/// The futility test: shedding helps if the smoothed latency fell at least this far (a
/// fifth) below where it was when the throttle engaged, within its patience.
pub(crate) const DIP: f64 = 0.8;

/// Smoothed saturation at or above which a route counts as full: the throttle's futility
/// test does not let go of a full route (unknown saturation is reported as neutral, 0.5).
pub(crate) const SATURATED: f64 = 0.9;

/// When shedding proved futile, the throttle's new target is this many times the latency it
/// could not bring down: a dead band, so that a slow creep does not re-engage the throttle at
/// every step (chosen with the wind tunnel, docs/TUNING.md).
pub(crate) const LATCH_MARGIN: f64 = 1.5;

/// The throughput test beside the futility test's latency: shedding that leaves the route's
/// successful completions at this share (four fifths) or more of what they were when the
/// throttle began to shed is shedding a queue's excess, not the route's work (a slower
/// dependency serves less when fewer requests are admitted; a full route serves as much).
pub(crate) const HELD: f64 = 0.8;

/// The decayed sample count (samples per time constant of the fast smoothing) under which
/// the completion rate is too noisy for the throughput test: below it, latency alone judges.
pub(crate) const SERVED_EVIDENCE: f64 = 16.0;

impl Learned {
    /// The proportional answer: an integral controller on the relative latency excess over
    /// the throttle's target, with a test of whether shedding helps (`throttle.patience`).
    pub(super) fn update_throttle(&mut self, phys: &Physics, b_lat: f64, dt_s: f64, settled: f64, saturation: f64) {
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
        if was <= 0.0 && throttle > 0.0 {
            // Shedding begins: what the route served before it is the throughput test's
            // reference.
            self.engaged_ok = self.served(phys).map_or(0, pack_rate);
        }
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
                // Nor is it futile while the route serves as much as when shedding began: then
                // what is shed is a queue's excess, which drains however slowly its latency
                // shows it (a deep queue).
                let held =
                    self.engaged_ok > 0 && self.served(phys).is_some_and(|r| r >= HELD * unpack_rate(self.engaged_ok));
                if f64::from(self.engaged_min) >= DIP * f64::from(self.engaged_x) && saturation < SATURATED && !held {
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

    /// The route's successful completions a second: the fast smoother's decayed count over
    /// its time constant, less the failed share; `None` under [`SERVED_EVIDENCE`] samples.
    fn served(&self, phys: &Physics) -> Option<f64> {
        let weight = self.fast.weight();
        (weight >= SERVED_EVIDENCE).then(|| weight * (1.0 - self.fast.mean()[1].clamp(0.0, 1.0)) / phys.tau_fast)
    }
}
