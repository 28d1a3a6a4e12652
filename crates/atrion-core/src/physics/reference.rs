//! The reference model (docs/DESIGN.md §7.1), with its quirks: pressure of the raw sample against one
//! engine-wide baseline, momentum from the pressure two updates back (none on the update
//! that ends bootstrap), scar by a fixed amount per over-pressured update, one tuner shared
//! by every route and warm at `warmup_samples` samples, and open until telemetry says
//! healthy.

use super::{Change, Memory, Physics, RouteState, Tuner, heal, norm, positive_norm};
use crate::mode::Mode;
use crate::time::Timestamp;

impl Physics {
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
}

impl RouteState<'_> {
    pub(super) fn update_reference(
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
        let in_bootstrap = self.k.mode == Mode::Bootstrap;
        if in_bootstrap && self.k.updates < c.bootstrap_updates {
            // No physics during bootstrap: R is fixed and the route cannot trip. The
            // pressure history is kept so that momentum has something to compare with.
            self.push_prev(p);
            self.resistance = 1.2 * c.r_base;
            return None;
        }
        // The update that ends bootstrap computes the physics with no momentum, then goes
        // operational without teaching the tuner or testing the break point (the break
        // point shown is what the tuner gives now); every later update does all of it.
        let dt_ms = dt_s * 1e3;
        let two_back = match self.k.memory {
            Memory::Reference { prev, .. } => prev[1],
            Memory::Default(_) => [0.0; 3],
        };
        let delta = [p[0] - two_back[0], p[1] - two_back[1], p[2] - two_back[2]];
        let momentum = if in_bootstrap || dt_ms <= 0.0 { 0.0 } else { norm(delta) / dt_ms };
        self.k.set_momentum(momentum);
        let trauma = if positive_norm(p) > c.critical_pressure { c.scar_rate } else { 0.0 };
        self.scar = (heal(self.scar, c.scar_decay, dt_s) + trauma).min(c.scar_max);
        let r = c.r_base + phys.weighted(p) + c.momentum_weight * momentum + self.scar;
        self.resistance = r.clamp(c.r_base, c.r_max);
        self.push_prev(p);
        if in_bootstrap {
            let tuner = shared.map_or(self.k.tuner(), |t| *t);
            let recovery;
            (self.break_point, recovery) = tuner.reference_points(phys);
            self.k.set_recovery(recovery);
            return self.set_mode(Mode::Operational);
        }

        let mut own = self.k.tuner();
        let tuner = shared.unwrap_or(&mut own);
        tuner.learn(self.resistance, phys.ref_alpha);
        let recovery;
        (self.break_point, recovery) = tuner.reference_points(phys);
        self.k.set_recovery(recovery);
        self.k.set_tuner(*tuner);

        match self.k.mode {
            Mode::Operational if self.effective(phys, cluster) >= self.break_point => self.set_mode(Mode::Open),
            Mode::Open
                if (self.scar < c.scar_rate && norm(p) < c.critical_pressure)
                    || self.effective(phys, cluster) < self.k.recovery() =>
            {
                self.set_mode(Mode::Operational)
            }
            _ => None,
        }
    }

    /// Reference: remembers `p` as the latest pressure (the one reported).
    fn push_prev(&mut self, p: [f64; 3]) {
        if let Memory::Reference { prev, .. } = &mut self.k.memory {
            *prev = [p, prev[0]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PhysicsConfig;

    #[test]
    fn pressure_zero_for_bad_baseline_or_input() {
        let mut cfg = PhysicsConfig::reference();
        cfg.baseline.latency = 0.0; // bypasses validate on purpose: the formula's own guard
        let phys = Physics::new(cfg);
        let p = phys.pressure([500.0, f64::NAN, 0.5]);
        assert_eq!(p, [0.0, 0.0, 0.0]);
    }
}
