//! One decision and one report on a tracked route: the published view read without a lock,
//! holds, the default model's modes (bootstrap, operational, open with its scout, half-open
//! with its probe quota), shedding by priority with a dithered fraction, and the reference
//! model; a report's physics update under the route's own lock.

use super::*;

impl<O: PhysicsObserver> Engine<O> {
    #[inline]
    pub(super) fn decide_route(&self, route: &Route, now: Timestamp, priority: Priority) -> Decision {
        let cell = route.cell();
        cell.touch(now);
        let decision = match (Hold::from_u8(cell.view.held.load(Relaxed)), self.phys.cfg.model) {
            (Hold::Released, Model::Reference) => decide_reference(cell, now, priority),
            (Hold::Released, Model::Default) => self.decide_default(route, now, priority),
            (Hold::Shadow, model) => {
                let d = match model {
                    Model::Reference => decide_reference(cell, now, priority),
                    Model::Default => self.decide_default(route, now, priority),
                };
                if d.is_admitted() {
                    d
                } else {
                    cell.view.shadowed.fetch_add(1, Relaxed);
                    Decision::admit(Reason::Shadow, d.mode, d.resistance)
                }
            }
            (hold, _) => held_decision(cell, hold),
        };
        self.observer.on_event(&Event::Decided { route: route.name(), at: now, priority, decision });
        decision
    }

    pub(super) fn decide_default(&self, route: &Route, now: Timestamp, priority: Priority) -> Decision {
        self.step_if_due(route, now, false);
        let cell = route.cell();
        let c = &cell.phys().cfg;
        let v = &cell.view;
        let mut mode = Mode::from_u8(v.mode.load(Acquire));
        let r = load_f(&v.resistance);
        if mode == Mode::Open {
            let until = Timestamp::from_nanos(v.open_until.load(Relaxed));
            if now < until {
                // One scout per interval, so that recovery is seen before the timer ends, once
                // the interval has shed `SCOUT_AFTER` requests since the trip or the last scout:
                // on a quiet route the timer's own probe is the scout.
                let shed = v.probes.load(Relaxed);
                if shed >= SCOUT_AFTER && take_slot(&v.keepalive_at, now, c.half_open.scout_interval) {
                    v.probes.store(0, Relaxed);
                    return Decision::admit(Reason::Probe, mode, r);
                }
                if shed < SCOUT_AFTER {
                    // Counted only up to the bar: an open route's decisions do not all write
                    // the view's line.
                    v.probes.fetch_add(1, Relaxed);
                }
                return Decision::shed(Reason::Open, mode, r, until.saturating_since(now));
            }
            // The open interval is over, once it has shed `PROBE_AFTER` requests: half-open,
            // whether or not telemetry arrives. At a few requests a minute the timer alone
            // would make nearly every request a probe.
            if v.probes.load(Relaxed) < PROBE_AFTER {
                v.probes.fetch_add(1, Relaxed);
                return Decision::shed(Reason::Open, mode, r, c.half_open.scout_interval);
            }
            if v.mode.compare_exchange(Mode::Open as u8, Mode::HalfOpen as u8, AcqRel, Acquire).is_ok() {
                v.window_start.store(now.as_nanos(), Relaxed);
                v.probes.store(0, Relaxed);
                v.quota.store(c.half_open.probe_min, Relaxed);
                self.observer.on_event(&Event::Transition {
                    route: route.name(),
                    at: now,
                    from: Mode::Open,
                    to: Mode::HalfOpen,
                    resistance: r,
                });
            }
            mode = Mode::HalfOpen;
        }
        if mode == Mode::HalfOpen {
            let window = c.half_open.probe_window;
            if take_slot(&v.window_start, now, window) {
                v.probes.store(0, Relaxed);
            }
            if v.probes.fetch_add(1, Relaxed) < v.quota.load(Relaxed) {
                return Decision::admit(Reason::Probe, mode, r);
            }
            let ends = Timestamp::from_nanos(v.window_start.load(Relaxed)).saturating_add(window);
            return Decision::shed(
                Reason::ProbeQuota,
                mode,
                r,
                ends.saturating_since(now).max(Duration::from_millis(1)),
            );
        }
        let r_now = resistance_now(cell, now);
        let base = if mode == Mode::Bootstrap { Reason::Bootstrap } else { Reason::Healthy };
        let fraction = match priority {
            Priority::Critical => return Decision::admit(base, mode, r_now),
            Priority::High => c.priority.high,
            Priority::Normal => c.priority.normal,
            Priority::Low => c.priority.low,
            Priority::Bulk => c.priority.bulk,
        };
        let threshold = c.r_base + fraction * (load_f(&v.break_point) - c.r_base);
        if r_now <= threshold {
            let ratio = f64::from(f32::from_bits(v.throttle.load(Relaxed))) * fraction_weight(priority);
            if ratio <= 0.0 || dither_admits(&v.throttled, ratio) {
                return Decision::admit(base, mode, r_now);
            }
            return Decision::shed(Reason::Throttled, mode, r_now, c.keepalive);
        }
        // Over threshold. One request per keep-alive interval still goes through, so that
        // a route shed for lack of telemetry can learn that it has recovered.
        if take_slot(&v.keepalive_at, now, c.keepalive) {
            return Decision::admit(Reason::Keepalive, mode, r_now);
        }
        // The hint: how long until scar has healed enough to bring R under the threshold.
        let excess = r_now - threshold;
        let (scar, age) = (load_f(&v.scar), secs_since(now, v.at.load(Relaxed)));
        let heal_secs = if scar > excess && excess > 0.0 {
            let remaining = heal(scar, c.scar_decay, age);
            (remaining / (remaining - excess).max(f64::MIN_POSITIVE)).ln() / c.scar_decay
        } else {
            c.keepalive.as_secs_f64()
        };
        // `min` then `max`, not `clamp`: `open_max` may be under the 1 ms floor of a hint.
        let retry = Duration::try_from_secs_f64(heal_secs)
            .unwrap_or(c.keepalive)
            .min(c.half_open.open_max)
            .max(Duration::from_millis(1));
        Decision::shed(Reason::Overloaded, mode, r_now, retry)
    }

    /// A report. On an operational route of the default model it adds the sample to the
    /// route's pending sums without its lock, and runs the physics step if one is due and no
    /// one else is running it (docs/DESIGN.md §7.2, "Coalesced steps"); the status returned
    /// is the route's published one, which may not include the sample yet. Otherwise (the
    /// reference model, bootstrap, open, half-open) the sample is one
    /// update under the route's lock, after the samples pending.
    #[inline(never)]
    pub(super) fn report_route(&self, route: &Route, telemetry: Telemetry, now: Timestamp) -> RouteStatus {
        let cell = route.cell();
        cell.touch(now);
        let phys = cell.phys();
        let v = &cell.view;
        if phys.cfg.model == Model::Default && Mode::from_u8(v.mode.load(Acquire)) == Mode::Operational {
            // A sample stamped before the last step (a late report, another thread's clock a
            // little behind) joins the window all the same: the clock-skew rule, no time
            // passes for it.
            cell.pending.add(telemetry.channels(), now.as_nanos() < v.at.load(Relaxed));
            if !v.pending.load(SeqCst) {
                v.pending.store(true, Relaxed);
            }
            cell.mark_dirty();
            self.step_if_due(route, now, true);
            return cell.status();
        }
        let mut kept = cell.lock();
        if phys.cfg.model == Model::Default {
            self.fold(route, &mut kept, now, true);
        }
        self.update(route, &mut kept, Input::Sample(telemetry.channels()), now);
        drop(kept);
        cell.mark_dirty();
        cell.status()
    }

    /// Runs a due physics step if no one else is (a try-lock: it never waits), after a
    /// report or before a decision. `may_stripe`: see [`Pending::take`] (a decision's step
    /// never allocates).
    #[inline]
    pub(super) fn step_if_due(&self, route: &Route, now: Timestamp, may_stripe: bool) {
        let cell = route.cell();
        if cell.step_due(cell.phys(), now)
            && let Some(mut kept) = cell.try_lock()
            && self.fold(route, &mut kept, now, may_stripe)
        {
            // The state layer collects what changed (a trip found by a decision too).
            cell.mark_dirty();
        }
    }

    /// Under the route's lock: folds the samples pending into one physics step at `now`;
    /// false when none were pending. `may_stripe`: see [`Pending::take`].
    pub(super) fn fold(&self, route: &Route, kept: &mut Kept, now: Timestamp, may_stripe: bool) -> bool {
        let Taken { window, skewed } = route.cell().take_pending(may_stripe);
        kept.skews = kept.skews.saturating_add(skewed);
        if window.n == 0 {
            return false;
        }
        self.update(route, kept, Input::Window(window), now);
        true
    }

    /// Under the route's lock: one physics update, published, and its events.
    fn update(&self, route: &Route, kept: &mut Kept, input: Input, now: Timestamp) {
        let cell = route.cell();
        let phys = cell.phys();
        let ((change, update), before_view) = cell.modify_locked(kept, phys, |s| {
            // A window's skewed samples were counted as they came (`Pending`).
            if matches!(input, Input::Sample(_)) && s.k.seen && now < s.last {
                s.k.skews = s.k.skews.saturating_add(1);
            }
            let cluster = cell.cluster(phys, now);
            let change = match (input, phys.cfg.model) {
                (Input::Window(w), _) => s.step(phys, w, now, cluster),
                (Input::Sample(raw), Model::Reference) => {
                    let mut shared = self.shared_tuner.lock().unwrap_or_else(PoisonError::into_inner);
                    s.update(phys, raw, now, Some(&mut shared), cluster)
                }
                (Input::Sample(raw), Model::Default) => s.update(phys, raw, now, None, cluster),
            };
            if change.is_some_and(|c| c.to == Mode::Open) {
                cell.view.keepalive_at.store(now.as_nanos(), Relaxed);
                cell.view.probes.store(0, Relaxed);
            }
            if change.is_some_and(|c| c.to == Mode::HalfOpen) {
                cell.view.window_start.store(now.as_nanos(), Relaxed);
                cell.view.probes.store(0, Relaxed);
            }
            (change, (s.k.mode, s.resistance, s.scar, s.k.momentum()))
        });
        let (mode, resistance, scar, momentum) = update;
        self.observer.on_event(&Event::Update { route: route.name(), at: now, mode, resistance, scar, momentum });
        if let Some(Change { from, to }) = change {
            // Suppress the event a racing decision already emitted for the same timer.
            if !(to == Mode::HalfOpen && before_view == Mode::HalfOpen) {
                self.observer.on_event(&Event::Transition { route: route.name(), at: now, from, to, resistance });
            }
        }
    }
}

/// What a physics update takes: one sample, or a window of them (default model).
#[derive(Clone, Copy)]
enum Input {
    Sample([f64; 3]),
    Window(Window),
}

/// Reference: shed while open; shed softly above `soft_limit * break`; otherwise admit
/// when the priority's voltage exceeds R. The reference gives no retry hint; ours is
/// `half_open.open_base`.
fn decide_reference(cell: &RouteCell, now: Timestamp, priority: Priority) -> Decision {
    let phys = cell.phys();
    let c = &phys.cfg;
    let v = &cell.view;
    let mode = Mode::from_u8(v.mode.load(Acquire));
    let r = blend(phys, load_f(&v.resistance), load_f(&v.scar), cell.cluster(phys, now));
    if mode == Mode::Open {
        return Decision::shed(Reason::Open, mode, r, c.half_open.open_base);
    }
    if r > c.soft_limit * load_f(&v.break_point) {
        return Decision::shed(Reason::SoftLimit, mode, r, c.half_open.open_base);
    }
    if priority.voltage() > r {
        let reason = if mode == Mode::Bootstrap { Reason::Bootstrap } else { Reason::Healthy };
        return Decision::admit(reason, mode, r);
    }
    Decision::shed(Reason::Overloaded, mode, r, c.half_open.open_base)
}

/// The decision on a held route: shed (retry after a second) or admit, at the route's
/// published resistance and mode.
#[cold]
fn held_decision(cell: &RouteCell, hold: Hold) -> Decision {
    let mode = Mode::from_u8(cell.view.mode.load(Acquire));
    let r = load_f(&cell.view.resistance);
    match hold {
        Hold::Open => Decision::shed(Reason::Held, mode, r, Duration::from_secs(1)),
        _ => Decision::admit(Reason::Held, mode, r),
    }
}

/// Requests an open route sheds before a scout may go through (then one per
/// `half_open.scout_interval`): at tens of requests a second this is a fraction of the
/// interval and changes nothing; at a few requests a minute no scout comes, and the open
/// interval's end is the only probe, so that an outage on a quiet route is shed instead of
/// scouted request by request (docs/DESIGN.md §7.2).
pub(super) const SCOUT_AFTER: u32 = 8;

/// Requests an open route sheds, since the trip or its last scout, before the end of its
/// timer lets the next one through as a probe: on a busy route a few milliseconds' worth,
/// on a quiet one most of its requests while the failure lasts (docs/DESIGN.md §7.2).
pub(super) const PROBE_AFTER: u32 = 3;

/// Claims the slot `at` (a timestamp in nanoseconds) when `every` has passed since it was
/// last claimed: one caller wins the CAS, the others see it taken. Behind the keep-alive, the
/// open route's scout and the half-open probe window.
#[inline]
fn take_slot(at: &AtomicU64, now: Timestamp, every: Duration) -> bool {
    let last = at.load(Relaxed);
    now.as_nanos().saturating_sub(last) >= every.as_nanos() as u64
        && at.compare_exchange(last, now.as_nanos(), Relaxed, Relaxed).is_ok()
}

/// How much of the route's throttle a priority takes: bulk twice, low one and a half,
/// normal all of it, high half (critical never reaches the throttle).
#[inline]
fn fraction_weight(priority: Priority) -> f64 {
    match priority {
        Priority::Critical => 0.0,
        Priority::High => 0.5,
        Priority::Normal => 1.0,
        Priority::Low => 1.5,
        Priority::Bulk => 2.0,
    }
}

/// Sheds `ratio` of the calls deterministically: the `n`-th call is admitted when
/// `floor((n + 1) a) > floor(n a)` with `a = 1 - ratio`, which spreads the admitted calls
/// evenly (one `fetch_add`, no randomness, no lock).
#[inline]
fn dither_admits(counter: &AtomicU32, ratio: f64) -> bool {
    let a = (1.0 - ratio).clamp(0.0, 1.0);
    let n = counter.fetch_add(1, Relaxed) as f64;
    ((n + 1.0) * a).floor() > (n * a).floor()
}
