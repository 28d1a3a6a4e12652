//! The default model (docs/DESIGN.md §7.2): time-smoothed telemetry against the route's learned
//! baseline, momentum as the rise of the excess, scar per second of *trauma* pressure
//! (errors above their tolerance; latency only when the throttle cannot answer it), the
//! learned normal, the throttle, and a timed open interval with scouts, then half-open
//! probes that heal scar.

use super::heal::heal_step;
use super::state::Window;
use super::{Change, Memory, Physics, RouteState, decay, norm, positive_norm};
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

/// Nothing is learned until the throttle has been idle this long (seconds).
pub(crate) const CALM_S: f64 = 5.0;

impl Physics {
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

impl RouteState<'_> {
    /// One step of the default model, folding `w`'s samples: one sample at a time while the
    /// route is not operational, a window of them while it is (docs/DESIGN.md §7.2).
    /// `coalesced`: the window was gathered while the route was operational; if it is open
    /// or half-open now, its samples judge no scout and no probe.
    pub(super) fn update_default(
        &mut self,
        phys: &Physics,
        w: Window,
        coalesced: bool,
        now: Timestamp,
        cluster: Option<f64>,
    ) -> Option<Change> {
        let c = &phys.cfg;
        // The window's mean stands for its samples where one value is judged (a scout, a
        // probe); the smoothers take the sums.
        let raw = w.mean();
        let mut m = self.k.learned();
        if !self.k.seen {
            m.born = now;
        }
        let dt_s = self.advance(now);
        self.k.updates = self.k.updates.saturating_add(w.n);

        m.fast.push(w.sum, w.n, decay(dt_s, phys.tau_fast));
        m.slow.push(w.sum, w.n, decay(dt_s, phys.tau_slow));
        let fast = m.fast.mean();
        let warm = m.warm(phys, now);
        let b_lat = m.latency_baseline(phys, warm);

        // The proportional answer comes first: latency trouble is the throttle's to answer
        // while it can (an integral controller on the relative excess, once the route knows
        // its normal and while it is closed).
        m.quick.push([w.sum[0]], w.n, decay(dt_s, phys.tau_throttle));
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
        let momentum = (gap / (phys.tau_slow - phys.tau_fast)).clamp(0.0, c.momentum_max);
        m.momentum = momentum as f32;

        // Latency becomes trauma only when the throttle cannot answer it (it is at its
        // maximum, or not acting); errors above their tolerance and saturation always can.
        let answered = throttling && f64::from(m.throttle) < c.throttle.max;
        let pt = phys.trauma_from(p, fast[1]);
        let over = positive_norm(if answered { [0.0, pt[1], pt[2]] } else { pt });
        let is_over = over > c.critical_pressure;
        // A healthy route without scar has nothing to decay or accrue: skip the exp.
        let heal = if self.scar > 0.0 || is_over || self.k.was_over { heal_step(c.scar_decay, dt_s) } else { 1.0 };
        // Trauma accrues per second of over-pressure, whatever the sample rate, and up to
        // `1 + momentum_scar` times faster while pressure is still rising: tanh saturates pressure within
        // a fraction of a second of a fast ramp, so momentum must leave a mark in the scar,
        // which outlasts the ramp, to make a fast ramp trip earlier than a slow one.
        let rate = c.scar_rate * (1.0 + c.momentum_scar * momentum / c.momentum_max);
        // Trapezoid rule: an interval that ends over-pressured but began healthy counts half,
        // so a slow sample rate does not charge the whole gap to the first bad sample.
        let share = (f64::from(u8::from(is_over)) + f64::from(u8::from(self.k.was_over))) / 2.0;
        self.k.was_over = is_over;
        let trauma = share * rate / c.scar_decay * (1.0 - heal);
        self.scar = (self.scar * heal + trauma).clamp(0.0, c.scar_max);
        let r = c.r_base + phys.weighted(p) + c.momentum_weight * momentum + self.scar;
        self.resistance = r.clamp(c.r_base, c.r_max);
        m.pressure = p.map(|x| x as f32);

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
            m.normal.observe(quick.min(2.0 * b_lat), w.n, dt_s, phys.normal_tau);
        }
        self.k.memory = Memory::Default(m);

        let healthy = positive_norm(p) <= c.critical_pressure;
        if self.k.mode == Mode::Operational && healthy && self.resistance < self.break_point {
            let mut tuner = self.k.tuner();
            tuner.observe_robust(self.resistance, w.n, dt_s, phys);
            let recovery;
            (self.break_point, recovery) = tuner.points(phys, c.tuner.min_sd);
            self.k.set_recovery(recovery);
            self.k.set_tuner(tuner);
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
            // Requests admitted before the trip are no scouts and no probes.
            Mode::Open | Mode::HalfOpen if coalesced => None,
            // The open interval is over, or a scout is back healthy: a healthy sample once the
            // scout interval has passed since the trip ends the open interval early (requests
            // admitted before the trip do not count).
            Mode::Open
                if now >= self.open_until
                    || (now.saturating_since(self.k.trips().1) >= c.half_open.scout_interval
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
        if u32::from(self.k.probe_ok) >= h.close_after && self.effective(phys, cluster) < self.k.recovery() {
            let (trips, at) = self.k.trips();
            self.k.set_trips(trips * 0.5, at);
            return self.set_mode(Mode::Operational);
        }
        None
    }

    /// Opens the route for `open_base * factor^(recent trips)`, capped at `open_max`.
    fn trip(&mut self, phys: &Physics, now: Timestamp) -> Option<Change> {
        let h = &phys.cfg.half_open;
        let (trips, trips_at) = self.k.trips();
        let age = now.saturating_since(trips_at).as_secs_f64();
        let previous = trips * (-phys.backoff_lambda * age).exp();
        self.k.set_trips((previous + 1.0).min(64.0), now);
        let secs = (h.open_base.as_secs_f64() * h.backoff_factor.powf(previous)).min(h.open_max.as_secs_f64());
        let open = std::time::Duration::try_from_secs_f64(secs).unwrap_or(h.open_max).min(h.open_max);
        self.open_until = now.saturating_add(open);
        self.set_mode(Mode::Open)
    }
}
