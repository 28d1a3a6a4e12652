//! A route's state between and during updates: what the physics keeps ([`Kept`]), what
//! decisions read ([`Published`]), both joined for one update ([`RouteState`]), which
//! dispatches to its model; the mode setter and the gamma blend of the cluster's scar.

use super::learned::Learned;
use super::{Physics, Tuner};
use crate::config::Model;
use crate::mode::Mode;
use crate::time::Timestamp;

/// Model-specific memory of a route (the enum is as large as its larger variant, the
/// default model's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Memory {
    /// Reference: pressure one and two updates back (the pressure reported is the first),
    /// the shared tuner as this route's last update left it, in `f64` (bit for bit), the
    /// trips a snapshot or a warm start brought (the reference model never counts any), and
    /// momentum and the recovery point in `f64` (its golden traces are bit for bit).
    Reference { prev: [[f64; 3]; 2], tuner: Tuner, trips: f64, trips_at: Timestamp, momentum: f64, recovery: f64 },
    /// Default: smoothing, the learned normal, the throttle, its tuner and trips, momentum
    /// and the recovery point (`f32`: see [`Learned::momentum`]).
    Default(Learned),
}

/// The samples one physics step folds (docs/DESIGN.md §7.2, "Coalesced steps"): how many,
/// and the sum of each channel. A single sample is a window of one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub n: u32,
    pub sum: [f64; 3],
}

impl Window {
    /// One sample.
    pub fn one(raw: [f64; 3]) -> Self {
        Window { n: 1, sum: raw }
    }

    /// The mean of the window's samples (zero when empty).
    pub fn mean(&self) -> [f64; 3] {
        if self.n == 0 {
            return [0.0; 3];
        }
        let n = f64::from(self.n);
        self.sum.map(|s| s / n)
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
    /// The model's own memory, with the tuner, the trips, the pressure reported, momentum
    /// and the recovery point ([`Kept::momentum`], [`Kept::recovery`]).
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
            memory: match phys.cfg.model {
                Model::Reference => Memory::Reference {
                    prev: [[0.0; 3]; 2],
                    tuner: Tuner::default(),
                    trips: 0.0,
                    trips_at: Timestamp::ZERO,
                    momentum: 0.0,
                    recovery: phys.static_points().1,
                },
                Model::Default => {
                    Memory::Default(Learned { recovery: phys.static_points().1 as f32, ..Learned::default() })
                }
            },
        }
    }

    /// Momentum as the last update left it (the default model's in `f32`'s precision).
    pub fn momentum(&self) -> f64 {
        match &self.memory {
            Memory::Reference { momentum, .. } => *momentum,
            Memory::Default(m) => f64::from(m.momentum),
        }
    }

    pub fn set_momentum(&mut self, x: f64) {
        match &mut self.memory {
            Memory::Reference { momentum, .. } => *momentum = x,
            Memory::Default(m) => m.momentum = x as f32,
        }
    }

    /// The recovery point (ohms; the default model's in `f32`'s precision).
    pub fn recovery(&self) -> f64 {
        match &self.memory {
            Memory::Reference { recovery, .. } => *recovery,
            Memory::Default(m) => f64::from(m.recovery),
        }
    }

    pub fn set_recovery(&mut self, x: f64) {
        match &mut self.memory {
            Memory::Reference { recovery, .. } => *recovery = x,
            Memory::Default(m) => m.recovery = x as f32,
        }
    }

    /// Default: the learned memory (fresh if this state came from the other model).
    pub fn learned(&self) -> Learned {
        match self.memory {
            Memory::Default(m) => m,
            Memory::Reference { .. } => Learned::default(),
        }
    }

    /// The route's tuner (the reference model's: the shared one as of this route's last
    /// update).
    pub fn tuner(&self) -> Tuner {
        match &self.memory {
            Memory::Reference { tuner, .. } => *tuner,
            Memory::Default(m) => m.tuner.into(),
        }
    }

    pub fn set_tuner(&mut self, t: Tuner) {
        match &mut self.memory {
            Memory::Reference { tuner, .. } => *tuner = t,
            Memory::Default(m) => m.tuner = t.into(),
        }
    }

    /// The decayed count of recent trips, and when it was that.
    pub fn trips(&self) -> (f64, Timestamp) {
        match &self.memory {
            Memory::Reference { trips, trips_at, .. } => (*trips, *trips_at),
            Memory::Default(m) => (f64::from(m.trips), m.trips_at),
        }
    }

    pub fn set_trips(&mut self, count: f64, at: Timestamp) {
        match &mut self.memory {
            Memory::Reference { trips, trips_at, .. } => (*trips, *trips_at) = (count, at),
            Memory::Default(m) => (m.trips, m.trips_at) = (count as f32, at),
        }
    }

    /// The last pressure, as reported (in `f32`'s precision). The reference model's is the
    /// latest it remembers for momentum.
    pub fn pressure(&self) -> [f64; 3] {
        match &self.memory {
            Memory::Reference { prev, .. } => prev[0].map(|p| f64::from(p as f32)),
            Memory::Default(m) => m.pressure.map(f64::from),
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
    pub(super) fn advance(&mut self, now: Timestamp) -> f64 {
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
            Model::Default => self.update_default(phys, Window::one(raw), false, now, cluster),
        }
    }

    /// Default model: one physics step folding a window of samples gathered while the route
    /// was operational (docs/DESIGN.md §7.2). If the route has left operational since (the
    /// step that tripped it ran while they came), they feed the smoothers and the scar but
    /// are judged as no scout and no probe: they were admitted before the trip. The
    /// reference model has no windows: it updates once per sample.
    pub fn step(&mut self, phys: &Physics, window: Window, now: Timestamp, cluster: Option<f64>) -> Option<Change> {
        debug_assert!(phys.cfg.model == Model::Default);
        self.update_default(phys, window, true, now, cluster)
    }

    /// Resistance with the cluster's scar blended in: `S = g S_cluster + (1 - g) S_local`.
    /// Without a cluster contribution, the local resistance.
    pub(super) fn effective(&self, phys: &Physics, cluster: Option<f64>) -> f64 {
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

/// Gamma blending of scar (docs/DESIGN.md §4): `R + g (S_cluster - S_local)`, clamped, where `resistance`
/// and `scar` are local. Without a cluster contribution, `resistance` unchanged.
pub(crate) fn blend(phys: &Physics, resistance: f64, scar: f64, cluster: Option<f64>) -> f64 {
    match cluster {
        Some(s_cluster) => (resistance + phys.cfg.gamma * (s_cluster - scar)).clamp(phys.cfg.r_base, phys.cfg.r_max),
        None => resistance,
    }
}
