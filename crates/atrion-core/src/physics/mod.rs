//! The physics of one route: pressure, momentum, scar tissue, resistance, the AutoTuner
//! and the mode machine. Pure functions of (state, telemetry, now); no clock, no I/O.
//!
//! The two models share the shapes below and differ in how they move:
//!
//! | quantity | [`Model::Reference`](crate::Model::Reference) | [`Model::Default`](crate::Model::Default) |
//! |---|---|---|
//! | latency baseline | one engine-wide constant | learned per route (`max(headroom·mean, mean + k·sd)` of its own healthy latency), or the route's SLO |
//! | pressure `p_j` | `tanh(k (x_j - b_j) / b_j)` of the sample | same, of the time-smoothed telemetry, against the route's baseline |
//! | between healthy and open | priority shedding only | a throttle: a shed ratio from an integral controller on latency over the baseline, which lets go when shedding does not help |
//! | momentum `M` | `\|P_now - P_two_back\| / dt_ms` | rise of the excess over baseline (fast vs slow smoothing), baselines per second, clamped |
//! | scar `S` | `S e^(-λ dt) + σ` per over-pressured update | `S e^(-λ dt) + (σ'/λ)(1 - e^(-λ dt))` while *trauma* pressure is over critical: per second, `σ' = σ (1 + m_s M / M_max)`; errors count only above their tolerance, latency only when the throttle cannot answer it |
//! | tuner | one EMA shared by all routes | per route, time-weighted, winsorised, frozen while unhealthy |
//! | open | until telemetry says healthy | timed, with a scout per interval; then half-open with a ramping probe quota; healthy probes heal scar |
//!
//! One module per part:
//!
//! - `heal` — the healing law of scar tissue, its one owner: every healed
//!   scar in the workspace (local, the cluster's, a warm start, a retry hint) is computed there.
//! - `reference` — the reference model: its pressure and its update.
//! - `default` — the default model: its pressure (and trauma), its update, probes and trips.
//! - `learned` — the default model's memory: the smoothers and the learned normal.
//! - `throttle` — the default model's proportional answer (the throttle) and its futility test.
//! - `tuner` — the AutoTuner (break and recovery points), shared by both models.
//! - `state` — a route's state (`Kept`, `Published`, `RouteState`), the dispatch of one
//!   update to its model, the mode setter and the gamma blend of the cluster's scar.

mod default;
mod heal;
mod learned;
mod reference;
mod state;
mod throttle;
mod tuner;

pub(crate) use heal::{decayed_resistance, heal_factor_fast};
pub use heal::{heal, heal_rank};
pub(crate) use learned::Normal;
pub(crate) use state::{Change, Kept, Memory, Published, RouteState, Window, blend};
pub(crate) use tuner::Tuner;

use crate::config::PhysicsConfig;

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
    /// `step` in nanoseconds.
    pub step_ns: u64,
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
            step_ns: u64::try_from(cfg.step.as_nanos()).unwrap_or(u64::MAX),
            cfg,
        }
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

/// Euclidean norm.
pub(crate) fn norm(p: [f64; 3]) -> f64 {
    (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt()
}

/// Norm of the positive part: the check valve, better-than-baseline never scars.
pub(crate) fn positive_norm(p: [f64; 3]) -> f64 {
    norm(p.map(|x| x.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_kept_state_fits_in_168_bytes() {
        assert!(std::mem::size_of::<Kept>() <= 168, "{}", std::mem::size_of::<Kept>());
    }
}
