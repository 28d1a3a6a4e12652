//! `Model::Default` fixes each flaw of the reference (docs/DESIGN.md §7.2). Each fix is a property
//! written once for both models: the test asserts it holds for the default model and that
//! it does not hold for the reference, so the flaw and its fix are both on record.

use std::time::Duration;

use atrion_core::{
    CollectorObserver, Engine, EngineLimits, Mode, Model, PhysicsConfig, PhysicsVector, Priority, Reason, Telemetry,
    Timestamp,
};

use super::{drive, engine, healthy, ms, outage};

fn secs(t: f64) -> Timestamp {
    Timestamp::from_nanos((t * 1e9).round() as u64)
}

/// Seconds from the start of an outage to the trip, after 10 s of health, at `rate`/s.
fn outage_trip_delay(model: Model, rate: f64) -> f64 {
    let e = engine(model);
    drive(&e, "r", rate, 0.0, 10.0, |_| healthy());
    drive(&e, "r", rate, 10.0, 30.0, |_| outage()).expect("an outage trips") - 10.0
}

/// Flaw 1: the same outage trips within 25% of the same wall time at 10, 100 and 10,000/s.
fn rate_invariant(model: Model) -> bool {
    let delays = [10.0, 100.0, 10_000.0].map(|rate| outage_trip_delay(model, rate));
    let (lo, hi) = delays.iter().fold((f64::MAX, 0f64), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
    println!("{model:?}: trip delays {delays:?}");
    hi <= 1.25 * lo
}

#[test]
fn fix_1_scar_is_rate_invariant() {
    assert!(rate_invariant(Model::Default));
    assert!(!rate_invariant(Model::Reference), "the reference's per-update trauma depends on rate");
}

/// Peak contribution of momentum (ohms) while latency ramps from 100 ms to 2 s in `secs`
/// (about ten baselines of excess for both models: the reference's fixed 100 ms, the default
/// model's learned normal with its headroom).
fn peak_momentum_ohms(model: Model, ramp_secs: f64) -> f64 {
    let e = engine(model);
    drive(&e, "r", 100.0, 0.0, 10.0, |_| Telemetry::new(100.0, 0.01, 0.5).unwrap());
    let mut peak: f64 = 0.0;
    for i in 0..(ramp_secs * 100.0) as u64 {
        let t = 10.0 + i as f64 / 100.0;
        let latency = 100.0 + 1_900.0 * (t - 10.0) / ramp_secs;
        e.report("r", Telemetry::new(latency, 0.01, 0.5).unwrap(), secs(t));
        peak = peak.max(e.snapshot("r").unwrap().momentum * e.config().momentum_weight);
    }
    peak
}

#[test]
fn fix_2_momentum_matters() {
    // A fast ramp (1 s) lifts R by a visible share of the way to the break; the
    // reference's per-millisecond momentum is below one ohm.
    let default_fast = peak_momentum_ohms(Model::Default, 1.0);
    let default_slow = peak_momentum_ohms(Model::Default, 100.0);
    assert!(default_fast >= 5.0, "{default_fast}");
    assert!(default_fast > 3.0 * default_slow, "fast {default_fast} vs slow {default_slow}");
    assert!(peak_momentum_ohms(Model::Reference, 1.0) < 1.0);
}

/// Seconds from the start of a latency ramp (20 ms to 1 s over `ramp_secs`) to the trip.
/// The throttle is off: latency is first the throttle's to answer, and this measures what
/// momentum does to the scar, the path a failure takes when the throttle cannot answer it.
fn ramp_trip(ramp_secs: f64, momentum: bool) -> f64 {
    let mut cfg = PhysicsConfig::default();
    cfg.throttle.enabled = false;
    if !momentum {
        cfg.momentum_weight = 0.0;
        cfg.momentum_scar = 0.0;
    }
    let e = Engine::new(cfg).unwrap();
    drive(&e, "r", 100.0, 0.0, 10.0, |_| healthy());
    let latency = |t: f64| (20.0 + 1_000.0 * (t - 10.0) / ramp_secs).min(1_000.0);
    drive(&e, "r", 100.0, 10.0, 100.0, |t| Telemetry::new(latency(t), 0.0, 0.3).unwrap()).expect("trips") - 10.0
}

#[test]
fn fix_2_momentum_makes_a_ramp_trip_earlier() {
    for ramp in [1.0, 5.0] {
        let (with, without) = (ramp_trip(ramp, true), ramp_trip(ramp, false));
        assert!(with <= 0.8 * without, "{ramp} s ramp: with momentum {with} s, without {without} s");
    }
}

/// Trips a route, then sends no telemetry at all; does a request get through later?
fn recovers_without_traffic(model: Model) -> bool {
    let e = engine(model);
    drive(&e, "r", 100.0, 0.0, 10.0, |_| healthy());
    drive(&e, "r", 100.0, 10.0, 15.0, |_| outage()).unwrap();
    (0..10).any(|k| e.decide("r", secs(60.0 + k as f64), Priority::Normal).is_admitted())
}

#[test]
fn fix_3_an_open_route_half_opens_on_a_timer() {
    assert!(recovers_without_traffic(Model::Default));
    assert!(!recovers_without_traffic(Model::Reference), "the reference never leaves open without telemetry");
}

/// A route with noisy but healthy latency, then a 2 s ramp to a sustained step (x8). Scar
/// is switched off (P_crit out of reach) and momentum too, so only the tuner decides.
fn step_trips(model: Model) -> (bool, f64, f64) {
    let mut cfg = PhysicsConfig::for_model(model);
    cfg.critical_pressure = 1.7;
    cfg.momentum_weight = 0.0;
    cfg.tuner.floor = 10.5;
    cfg.tuner.recovery_floor = 10.2;
    cfg.tuner.min_sd = 0.1;
    let e = Engine::new(cfg).unwrap();
    drive(&e, "r", 20.0, 0.0, 120.0, |t| {
        Telemetry::new(if (t * 20.0).round() as u64 % 2 == 0 { 100.0 } else { 140.0 }, 0.01, 0.5).unwrap()
    });
    let before = e.status("r").unwrap().break_point;
    let tripped = drive(&e, "r", 20.0, 120.0, 135.0, |t| {
        Telemetry::new((120.0 + 450.0 * (t - 120.0)).min(1_000.0), 0.01, 0.5).unwrap()
    })
    .is_some();
    (tripped, before, e.status("r").unwrap().break_point)
}

#[test]
fn fix_4_the_tuner_does_not_explain_away_a_step() {
    let (tripped, before, after) = step_trips(Model::Default);
    assert!(tripped, "default trips on the step (break {before} -> {after})");
    assert!((after - before).abs() < 0.5, "frozen: {before} -> {after}");
    let (tripped, before, after) = step_trips(Model::Reference);
    assert!(!tripped, "the reference's break follows the step");
    assert!(after > before + 0.3, "{before} -> {after}");
}

/// Route b's break point after route a went through chaos, against b's own before.
fn tuner_isolated(model: Model) -> bool {
    let e = engine(model);
    for k in 0..1_000u64 {
        e.report("b", healthy(), ms(k * 10));
    }
    let before = e.status("b").unwrap().break_point;
    for k in 0..2_000u64 {
        let t = if (k / 50) % 2 == 0 { healthy() } else { outage() };
        e.report("a", t, ms(10_000 + k * 10));
    }
    e.report("b", healthy(), ms(30_000));
    e.status("b").unwrap().break_point == before
}

#[test]
fn fix_4_each_route_has_its_own_tuner() {
    assert!(tuner_isolated(Model::Default));
    assert!(!tuner_isolated(Model::Reference), "the reference shares one tuner");
}

/// Largest resistance seen under absurd but valid telemetry, a microsecond apart.
fn peak_resistance(model: Model) -> f64 {
    let e = engine(model);
    let mut peak: f64 = 0.0;
    for k in 0..400u64 {
        let t = if k % 3 == 0 {
            Telemetry::new(0.0, 0.0, 0.0)
        } else {
            Telemetry::new(Telemetry::MAX_LATENCY_MS, 1.0, 1.0)
        };
        peak = peak.max(e.report("r", t.unwrap(), Timestamp::from_micros(k)).resistance);
    }
    peak
}

#[test]
fn fix_6_resistance_is_clamped() {
    assert!(peak_resistance(Model::Default) <= PhysicsConfig::default().r_max);
    assert!(peak_resistance(Model::Reference) > PhysicsConfig::default().r_max, "the reference has no clamp");
}

#[test]
fn fix_6_clock_skew_has_a_rule() {
    for model in [Model::Reference, Model::Default] {
        let e = engine(model);
        drive(&e, "r", 100.0, 0.0, 10.0, |_| healthy());
        drive(&e, "r", 100.0, 10.0, 10.3, |_| outage());
        let before = e.snapshot("r").unwrap();
        // A sample stamped 5 s in the past: no time passes, nothing heals, time stays put.
        e.report("r", healthy(), secs(5.0));
        let after = e.snapshot("r").unwrap();
        assert_eq!(after.timestamp, before.timestamp, "{model:?}");
        assert!(after.scar >= before.scar * (1.0 - 1e-12), "{model:?}: no healing from a skewed sample");
        assert!(after.resistance.is_finite() && after.momentum.is_finite());
        assert_eq!(e.stats().clock_skews, 1);
    }
}

// ---- the default model's open, half-open and backoff ----

fn tripped_engine() -> (Engine<CollectorObserver>, Timestamp) {
    let e = Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), CollectorObserver::new()).unwrap();
    for k in 0..1_000u64 {
        e.report("r", healthy(), ms(k * 10));
    }
    let mut t = 10_000;
    while e.report("r", outage(), ms(t)).mode != Mode::Open {
        t += 10;
    }
    (e, ms(t))
}

#[test]
fn open_sheds_with_the_remaining_interval_as_hint() {
    let (e, at) = tripped_engine();
    let until = e.status("r").unwrap().open_until;
    assert_eq!(until.saturating_since(at), Duration::from_secs(2), "first trip: open_base");
    let d = e.decide("r", at + Duration::from_millis(500), Priority::Critical);
    assert_eq!((d.is_admitted(), d.reason), (false, Reason::Open));
    assert_eq!(d.retry_after, Some(Duration::from_millis(1_500)));
}

#[test]
fn half_open_probe_quota_ramps_with_health_then_closes() {
    let (e, at) = tripped_engine();
    let mut now = e.status("r").unwrap().open_until;
    let window = e.config().half_open.probe_window;
    let mut quotas = Vec::new();
    // Scar heals while the route probes; count admitted probes per window.
    for _ in 0..80 {
        let admitted: Vec<_> = (0..100).filter(|_| e.decide("r", now, Priority::Normal).is_admitted()).collect();
        quotas.push(admitted.len());
        for _ in &admitted {
            e.report("r", healthy(), now);
        }
        if e.status("r").unwrap().mode == Mode::Operational {
            break;
        }
        now = now + window;
    }
    assert_eq!(quotas[0], 1, "half-open starts with probe_min");
    assert!(quotas.windows(2).all(|w| w[1] >= w[0]), "the quota never shrinks while probes succeed: {quotas:?}");
    assert!(quotas.iter().any(|&q| q >= 8), "{quotas:?}");
    let s = e.status("r").unwrap();
    assert_eq!(s.mode, Mode::Operational, "closes once R < recovery: {quotas:?}");
    let t = e.observer().transitions();
    let modes: Vec<_> = t.iter().map(|(_, _, from, to)| (*from, *to)).collect();
    assert_eq!(
        modes,
        vec![
            (Mode::Bootstrap, Mode::Operational),
            (Mode::Operational, Mode::Open),
            (Mode::Open, Mode::HalfOpen),
            (Mode::HalfOpen, Mode::Operational)
        ],
        "each transition reported exactly once"
    );
    assert!(t[1].1 == at);
}

#[test]
fn a_failed_probe_retrips_with_backoff_that_decays_slowly() {
    let (e, _) = tripped_engine();
    let first = e.status("r").unwrap().open_until;
    assert_eq!(sheds_before_probe(&e, "r", first), 3, "the timer's probe waits for three sheds");
    e.report("r", outage(), first);
    let s = e.status("r").unwrap();
    assert_eq!(s.mode, Mode::Open);
    let second = s.open_until.saturating_since(first).as_secs_f64();
    let h = &e.config().half_open;
    let expected = h.open_base.as_secs_f64() * h.backoff_factor;
    assert!(second > expected - 0.1 && second <= expected, "open_base x backoff_factor: {second} s");

    // Heal fully, close, stay healthy for one backoff half-life (120 s), trip again: the
    // backoff has decayed by half, not been reset.
    let mut now = s.open_until;
    while e.status("r").unwrap().mode != Mode::Operational {
        if e.decide("r", now, Priority::Normal).is_admitted() {
            e.report("r", healthy(), now);
        }
        now = now + Duration::from_millis(10);
    }
    let healed_at = now;
    let trips_before = e.snapshot("r").unwrap().trips;
    now = secs(healed_at.as_nanos() as f64 / 1e9 + 120.0);
    e.report("r", healthy(), now);
    while e.report("r", outage(), now).mode != Mode::Open {
        now = now + Duration::from_millis(10);
    }
    let third = e.status("r").unwrap().open_until.saturating_since(now);
    assert!(third > Duration::from_secs(2), "backoff not reset on close: {third:?} (trips was {trips_before})");
    assert!(third < Duration::from_secs(4), "but decays: {third:?}");
}

#[test]
fn priority_sheds_bulk_first_and_critical_last() {
    let e = engine(Model::Default);
    let now = ms(1_000);
    let v = PhysicsVector {
        model: Model::Default,
        mode: Mode::Operational,
        resistance: 24.0,
        scar: 0.0,
        momentum: 0.0,
        pressure: [0.0; 3],
        break_point: 30.0,
        recovery: 15.0,
        tuner_samples: 100,
        tuner_weight: 100.0,
        tuner_mean: 10.0,
        tuner_var: 0.0,
        updates: 1_000,
        trips: 0.0,
        open_until: Timestamp::ZERO,
        timestamp: now,
        normal_samples: 0,
        normal_mean: 0.0,
        normal_var: 0.0,
    };
    e.restore("r", &v, now).unwrap();
    // Thresholds on the way from 10 to 30: bulk 16, low 20, normal 25, high 28.
    e.decide("r", now, Priority::Bulk); // takes this interval's keep-alive slot
    let admitted: Vec<bool> = Priority::ALL.iter().map(|p| e.decide("r", now, *p).is_admitted()).collect();
    assert_eq!(admitted, vec![true, true, true, false, false]);
    let low = e.decide("r", now, Priority::Low);
    assert_eq!(low.reason, Reason::Overloaded);
    assert!(low.retry_after.is_some());
}

#[test]
fn a_shed_route_keeps_one_request_per_keepalive_flowing() {
    let e = engine(Model::Default);
    drive(&e, "r", 100.0, 0.0, 10.0, |_| healthy());
    // Scar without tripping: restore a vector above the bulk threshold.
    let mut v = e.snapshot("r").unwrap();
    v.scar = 12.0;
    v.resistance = 22.0;
    e.restore("r", &v, secs(10.0)).unwrap();
    let admitted: Vec<_> = (0..2_000u64)
        .map(|k| e.decide("r", secs(10.0 + k as f64 * 0.001), Priority::Bulk))
        .filter(|d| d.is_admitted())
        .collect();
    let per = e.config().keepalive.as_secs_f64();
    assert_eq!(admitted.len() as f64, (2.0 / per).round(), "one per keep-alive interval over two seconds");
    assert!(admitted.iter().all(|d| d.reason == Reason::Keepalive));
}

// ---- issue 9: per-route normals, the proportional answer, recovery that follows evidence ----

/// Drives `route` at `rate`/s from `from` to `to` s through decide and report, with the
/// telemetry `f(t)`; returns (offered, shed).
fn serve<O: atrion_core::PhysicsObserver>(
    e: &Engine<O>,
    route: &str,
    rate: f64,
    from: f64,
    to: f64,
    mut f: impl FnMut(f64) -> Telemetry,
) -> (u64, u64) {
    let n = ((to - from) * rate).round() as u64;
    let mut shed = 0;
    for i in 0..n {
        let t = from + i as f64 / rate;
        if e.decide(route, secs(t), Priority::Normal).is_admitted() {
            e.report(route, f(t), secs(t));
        } else {
            shed += 1;
        }
    }
    (n, shed)
}

/// Latency with a deterministic spread around `mean` (a lognormal-like cycle of factors).
fn around(mean: f64, t: f64) -> f64 {
    const F: [f64; 8] = [0.7, 1.3, 0.9, 1.1, 0.8, 1.5, 1.0, 0.7];
    mean * F[((t * 997.0) as usize) % F.len()]
}

#[test]
fn slow_healthy_routes_learn_their_normal_and_are_not_shed() {
    // One engine, zero configuration: routes at 10 ms, 800 ms, 3 s and 10 s.
    let e = engine(Model::Default);
    for (route, mean, rate) in
        [("cache", 10.0, 200.0), ("search", 800.0, 20.0), ("llm", 3_000.0, 5.0), ("report", 10_000.0, 1.0)]
    {
        let (offered, shed) =
            serve(&e, route, rate, 0.0, 120.0, |t| Telemetry::new(around(mean, t), 0.0, 0.3).unwrap());
        assert_eq!(shed, 0, "{route}: {shed} of {offered} shed");
        assert_eq!(e.status(route).unwrap().mode, Mode::Operational, "{route}");
    }
    // The fast route still trips on an outage.
    let (_, shed) = serve(&e, "cache", 200.0, 120.0, 130.0, |_| outage());
    assert!(shed > 1_000, "{shed}");
}

#[test]
fn a_normal_slow_mode_is_learned() {
    // 90% at 25 ms, 10% at 1.5 s (every tenth request), 100/s.
    let e = engine(Model::Default);
    let mut k = 0u64;
    let (offered, shed) = serve(&e, "r", 100.0, 0.0, 120.0, |_| {
        k += 1;
        Telemetry::new(if k % 10 == 0 { 1_500.0 } else { 25.0 }, 0.0, 0.3).unwrap()
    });
    assert!(shed * 200 <= offered, "{shed} of {offered} shed (at most 0.5%)");
    assert_eq!(e.status("r").unwrap().mode, Mode::Operational);
}

#[test]
fn the_normal_does_not_follow_a_creep() {
    // 40 ms for a minute, then latency creeps x12 over two minutes. What is learned while
    // the route is healthy stays near 40 ms: the creep is judged against the old normal.
    let e = engine(Model::Default);
    serve(&e, "r", 100.0, 0.0, 60.0, |_| Telemetry::new(40.0, 0.0, 0.3).unwrap());
    let learned = |e: &Engine| e.snapshot("r").unwrap().normal_mean;
    let before = learned(&e);
    assert!((before - 40.0).abs() < 2.0, "{before}");
    let (_, shed) = serve(&e, "r", 100.0, 60.0, 180.0, |t| {
        Telemetry::new(40.0 * (1.0 + 11.0 * (t - 60.0) / 120.0), 0.0, 0.3).unwrap()
    });
    let after = learned(&e);
    assert!(after < 2.0 * before, "the normal followed the creep: {before} -> {after}");
    assert!(shed > 0, "the creep was noticed");
}

#[test]
fn cheap_errors_under_the_tolerance_are_not_shed_and_a_total_failure_is() {
    let e = engine(Model::Default);
    serve(&e, "r", 200.0, 0.0, 20.0, |_| healthy());
    // 25% fast errors for a minute: nothing is shed.
    let mut k = 0u64;
    let (offered, shed) = serve(&e, "r", 200.0, 20.0, 80.0, |_| {
        k += 1;
        Telemetry::outcome(20.0, k % 4 != 0, 0.3).unwrap()
    });
    assert_eq!(shed, 0, "{shed} of {offered}");
    // Every request failing, fast: the route trips.
    let (offered, shed) = serve(&e, "r", 200.0, 80.0, 90.0, |_| Telemetry::outcome(20.0, false, 0.3).unwrap());
    assert!(shed * 2 > offered, "{shed} of {offered}");
}

/// A service with `capacity` requests/s in front of a queue: the latency a request
/// admitted at `t` sees, given how many were admitted in the last second.
struct Queue {
    admitted: std::collections::VecDeque<f64>,
    capacity: f64,
    service_ms: f64,
}

impl Queue {
    fn latency(&mut self, t: f64) -> f64 {
        while self.admitted.front().is_some_and(|&a| a < t - 1.0) {
            self.admitted.pop_front();
        }
        self.admitted.push_back(t);
        let excess = (self.admitted.len() as f64 - self.capacity).max(0.0);
        self.service_ms + 1_000.0 * excess / self.capacity
    }
}

#[test]
fn overload_is_answered_in_proportion_without_a_trip() {
    // 20% more traffic than capacity: the throttle sheds about the excess, the route never
    // opens, and latency is held near its baseline.
    let e = Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), CollectorObserver::new()).unwrap();
    let mut q = Queue { admitted: Default::default(), capacity: 400.0, service_ms: 20.0 };
    serve(&e, "r", 300.0, 0.0, 30.0, |t| Telemetry::new(q.latency(t), 0.0, 0.3).unwrap());
    let (offered, shed) = serve(&e, "r", 480.0, 30.0, 90.0, |t| Telemetry::new(q.latency(t), 0.0, 0.3).unwrap());
    let ratio = shed as f64 / offered as f64;
    assert!(ratio > 0.1 && ratio < 0.4, "shed {ratio} of an overload of 1/6");
    let opened = e.observer().transitions().iter().any(|(_, _, _, to)| *to == Mode::Open);
    assert!(!opened, "no trip: the throttle answered the overload");
    // What sheds is the throttle.
    let mut reasons = std::collections::BTreeSet::new();
    // The highest shed ratio the engine shows while it acts (the throttle rises and falls as
    // the queue answers).
    let mut share = 0.0f64;
    for i in 0..480u32 {
        let t = 90.0 + f64::from(i) / 480.0;
        let d = e.decide("r", secs(t), Priority::Normal);
        share = share.max(e.throttle("r").unwrap());
        if d.is_admitted() {
            e.report("r", Telemetry::new(q.latency(t), 0.0, 0.3).unwrap(), secs(t));
        } else {
            reasons.insert(d.reason.as_str());
        }
    }
    assert_eq!(reasons.into_iter().collect::<Vec<_>>(), vec!["throttled"]);
    assert!(e.decide("r", secs(90.0), Priority::Critical).is_admitted(), "critical is never throttled");
    // The engine shows the shed ratio it is acting on, within the throttle's bound.
    assert!(share > 0.0 && share <= PhysicsConfig::default().throttle.max + 1e-6, "throttle {share}");
    assert_eq!(e.throttle("unknown"), None);
}

#[test]
fn the_throttle_lets_go_when_shedding_does_not_help() {
    // Latency x4 whatever is shed (a slower dependency, not a queue): after its patience the
    // throttle lets go and nothing more is shed.
    let e = engine(Model::Default);
    serve(&e, "r", 200.0, 0.0, 30.0, |_| healthy());
    let (_, early) = serve(&e, "r", 200.0, 30.0, 36.0, |_| Telemetry::new(80.0, 0.0, 0.3).unwrap());
    assert!(early > 0, "the throttle tried");
    let (offered, late) = serve(&e, "r", 200.0, 36.0, 96.0, |_| Telemetry::new(80.0, 0.0, 0.3).unwrap());
    assert_eq!(late, 0, "{late} of {offered} shed after the throttle let go");
    assert_eq!(e.status("r").unwrap().mode, Mode::Operational);
}

/// A deep FIFO queue in front of `capacity` completions a second: a request admitted at `t`
/// completes `service_s` after it starts, and starts when the ones before it have begun;
/// completions are reported when they happen, as a server's are.
struct Fifo {
    capacity: f64,
    service_s: f64,
    last_start: f64,
    pending: std::collections::VecDeque<(f64, f64)>,
}

impl Fifo {
    /// Offers `rate`/s from `from` to `to` s; returns (offered, shed, the latency of the last
    /// completion reported).
    fn serve<O: atrion_core::PhysicsObserver>(
        &mut self,
        e: &Engine<O>,
        rate: f64,
        from: f64,
        to: f64,
    ) -> (u64, u64, f64) {
        let n = ((to - from) * rate).round() as u64;
        let (mut shed, mut last) = (0, 0.0);
        for i in 0..n {
            let t = from + i as f64 / rate;
            while let Some(&(done, admitted)) = self.pending.front().filter(|(done, _)| *done <= t) {
                self.pending.pop_front();
                last = (done - admitted) * 1e3;
                e.report("r", Telemetry::new(last, 0.0, 0.5).unwrap(), secs(done));
            }
            if e.decide("r", secs(t), Priority::Normal).is_admitted() {
                self.last_start = t.max(self.last_start + 1.0 / self.capacity);
                self.pending.push_back((self.last_start + self.service_s, t));
            } else {
                shed += 1;
            }
        }
        (n, shed, last)
    }
}

#[test]
fn the_throttle_holds_on_while_a_deep_queue_drains() {
    // A 4x crowd into a deep queue: latency falls only as fast as the backlog drains, slower
    // than the futility test's patience asks of it. The route serves its capacity whatever is
    // shed, so shedding is a queue's excess: the throttle keeps shedding, and the queue is
    // held short, without a trip.
    let e = Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), CollectorObserver::new()).unwrap();
    let mut q = Fifo { capacity: 200.0, service_s: 0.02, last_start: 0.0, pending: Default::default() };
    let (_, calm, _) = q.serve(&e, 150.0, 0.0, 30.0);
    assert_eq!(calm, 0, "nothing shed while healthy");
    let (offered, shed, _) = q.serve(&e, 800.0, 30.0, 40.0);
    let (late_offered, late_shed, latency) = q.serve(&e, 800.0, 40.0, 50.0);
    assert!(shed > offered / 2, "{shed} of {offered} shed in the crowd's first 10 s");
    // At most a quarter of the crowd fits the capacity: three quarters is the excess.
    assert!(
        late_shed * 10 > late_offered * 6,
        "{late_shed} of {late_offered} shed in its last 10 s: the throttle let go"
    );
    assert!(latency < 1_000.0, "the queue is held short: {latency} ms at the crowd's end");
    let opened = e.observer().transitions().iter().any(|(_, _, _, to)| *to == Mode::Open);
    assert!(!opened, "no trip: the throttle answered the crowd");
}

#[test]
fn recovery_follows_evidence_scouts_and_probe_healing() {
    // A 20 s total outage, then health: the route is admitting fully again within a few
    // seconds, at any rate (the backoff of re-trips during the outage does not hold it).
    for rate in [20.0, 200.0, 2_000.0] {
        let e = engine(Model::Default);
        serve(&e, "r", rate, 0.0, 20.0, |_| healthy());
        serve(&e, "r", rate, 20.0, 40.0, |_| outage());
        assert_ne!(e.status("r").unwrap().mode, Mode::Operational, "{rate}/s: tripped");
        let mut back = None;
        for s in 0..30 {
            let from = 40.0 + f64::from(s);
            let (offered, shed) = serve(&e, "r", rate, from, from + 1.0, |_| healthy());
            if shed * 100 <= offered {
                back = Some(f64::from(s));
                break;
            }
        }
        let back = back.expect("recovers");
        assert!(back <= 4.0, "{rate}/s: admitting fully {back} s after the outage");
    }
}

#[test]
fn healthy_probes_heal_scar() {
    let mut cfg = PhysicsConfig::default();
    cfg.half_open.probe_heal = 0.0;
    let slow = Engine::new(cfg).unwrap();
    let fast = engine(Model::Default);
    for e in [&slow, &fast] {
        serve(e, "r", 100.0, 0.0, 20.0, |_| healthy());
        serve(e, "r", 100.0, 20.0, 30.0, |_| outage());
        serve(e, "r", 100.0, 30.0, 33.0, |_| healthy());
    }
    let (s, f) = (slow.snapshot("r").unwrap().scar, fast.snapshot("r").unwrap().scar);
    assert!(f < 0.5 * s, "probe healing {f} vs the decay law alone {s}");
}

// ---- per-route configuration ----

#[test]
fn per_route_config_by_exact_id_and_prefix() {
    let e = engine(Model::Default);
    let mut slo = PhysicsConfig::default();
    slo.normal.slo_ms = Some(250.0);
    let mut no_throttle = PhysicsConfig::default();
    no_throttle.throttle.enabled = false;
    e.set_route_config("GET /reports/*", Some(slo.clone())).unwrap();
    e.set_route_config("GET /reports/daily", Some(no_throttle.clone())).unwrap();
    assert_eq!(e.route_config("GET /reports/weekly").normal.slo_ms, Some(250.0), "prefix");
    assert!(!e.route_config("GET /reports/daily").throttle.enabled, "an exact id wins over a prefix");
    assert_eq!(e.route_config("GET /users"), *e.config(), "no match: the engine's");
    // An existing route keeps what it learned and runs the new constants.
    serve(&e, "GET /users", 100.0, 0.0, 20.0, |_| healthy());
    let before = e.snapshot("GET /users").unwrap();
    e.set_route_config("GET /users", Some(slo)).unwrap();
    assert_eq!(e.route_config("GET /users").normal.slo_ms, Some(250.0));
    assert_eq!(e.snapshot("GET /users").unwrap().updates, before.updates);
    e.set_route_config("GET /users", None).unwrap();
    assert_eq!(e.route_config("GET /users").normal.slo_ms, None, "removed");
    // Errors name the problem.
    let mut bad = PhysicsConfig::default();
    bad.throttle.max = 1.0;
    assert!(matches!(e.set_route_config("x", Some(bad)), Err(atrion_core::EngineError::Config(_))));
    assert!(matches!(
        e.set_route_config("x", Some(PhysicsConfig::reference())),
        Err(atrion_core::EngineError::ModelMismatch { .. })
    ));
    assert!(matches!(
        e.set_route_config("", Some(PhysicsConfig::default())),
        Err(atrion_core::EngineError::InvalidRouteId { .. })
    ));
}

#[test]
fn an_slo_fixes_the_latency_baseline() {
    // A route that is slow from its first request (so it would learn 600 ms as normal) but
    // whose objective is 200 ms: with the SLO set, it is throttled and shed.
    let e = engine(Model::Default);
    let mut cfg = PhysicsConfig::default();
    cfg.normal.slo_ms = Some(200.0);
    e.set_route_config("strict", Some(cfg)).unwrap();
    let (_, free) = serve(&e, "free", 100.0, 0.0, 60.0, |_| Telemetry::new(600.0, 0.0, 0.3).unwrap());
    let (_, strict) = serve(&e, "strict", 100.0, 0.0, 60.0, |_| Telemetry::new(600.0, 0.0, 0.3).unwrap());
    assert_eq!(free, 0);
    assert!(strict > 0);
}

/// When the route first opens, in seconds, under 1,000 requests/s: 30 s healthy, then every
/// request failing; physics stepped every `step` (zero: on every report).
fn first_trip(step: Duration) -> f64 {
    let mut cfg = PhysicsConfig::default();
    cfg.step = step;
    let e = Engine::with_observer(cfg, EngineLimits::default(), CollectorObserver::new()).unwrap();
    serve(&e, "r", 1_000.0, 0.0, 30.0, |_| healthy());
    serve(&e, "r", 1_000.0, 30.0, 40.0, |_| Telemetry::outcome(20.0, false, 0.3).unwrap());
    let trips = e.observer().transitions();
    let (_, at, _, _) = trips.iter().find(|(_, _, _, to)| *to == Mode::Open).expect("the outage trips the route");
    at.as_nanos() as f64 * 1e-9
}

#[test]
fn coalesced_steps_see_an_outage_within_one_step() {
    // The same outage with a physics step per report and with the default step: the
    // coalesced route trips no later than one step (and one request) after.
    let per_sample = first_trip(Duration::ZERO);
    let step = PhysicsConfig::STEP.as_secs_f64();
    for s in [PhysicsConfig::STEP, 2 * PhysicsConfig::STEP] {
        let coalesced = first_trip(s);
        assert!(per_sample > 30.0 && coalesced > 30.0, "{per_sample} / {coalesced}");
        assert!(
            coalesced <= per_sample + s.as_secs_f64() + 0.001,
            "step {s:?}: trips at {coalesced}, per report at {per_sample} (step {step})"
        );
    }
}

#[test]
fn a_step_longer_than_the_quickest_smoothing_is_refused() {
    let mut cfg = PhysicsConfig::default();
    cfg.step = cfg.throttle.smoothing + Duration::from_millis(1);
    let err = Engine::new(cfg).unwrap_err().to_string();
    assert!(err.contains("step"), "{err}");
    let mut cfg = PhysicsConfig::default();
    cfg.step = Duration::ZERO;
    assert!(Engine::new(cfg).is_ok(), "zero steps on every report");
}

#[test]
fn a_report_stamped_in_the_future_does_not_stop_the_physics() {
    // One report stamped a minute ahead: the route's last step is in the future, and every
    // report after it is a clock skew (no time passes). The physics still steps on them:
    // an outage that follows raises resistance at once, as it would per sample.
    let e = engine(Model::Default);
    drive(&e, "r", 1_000.0, 0.0, 30.0, |_| healthy());
    e.report("r", healthy(), secs(90.0));
    let before = e.status("r").unwrap().resistance;
    drive(&e, "r", 1_000.0, 30.0, 31.0, |_| outage());
    let after = e.status("r").unwrap().resistance;
    assert!(after > before + 1.0, "resistance {before} -> {after}: the skewed reports were not stepped");
    assert!(e.stats().clock_skews >= 1_000, "{}", e.stats().clock_skews);
}

#[test]
fn samples_gathered_before_a_route_opened_are_no_probes() {
    // Failing samples wait for the next step when the route is opened (here by the state
    // layer's warm start; under load, by the step that trips it while reports still come).
    // When the open interval ends, they are folded, but judged as no probe: the route
    // half-opens and admits a real probe instead of re-tripping on old evidence.
    let e = Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), CollectorObserver::new()).unwrap();
    for k in 0..30_000u64 {
        e.report("r", healthy(), ms(k));
    }
    for k in 0..5u64 {
        e.report("r", outage(), ms(30_000 + k));
    }
    e.resume_open("r", Duration::from_secs(2), ms(30_005)).unwrap();
    sheds_before_probe(&e, "r", ms(32_100));
    let s = e.status("r").unwrap();
    assert_eq!(s.mode, Mode::HalfOpen, "{s:?}");
    let opened = e.observer().transitions().iter().filter(|(_, _, _, to)| *to == Mode::Open).count();
    assert_eq!(opened, 1, "no re-trip on the samples from before the interval");
}

// ---- a quiet route ----

/// Decides on the open `route` at `now` until a request goes through as a probe or a scout;
/// returns how many were shed first (each shed as open).
pub fn sheds_before_probe<O: atrion_core::PhysicsObserver>(e: &Engine<O>, route: &str, now: Timestamp) -> u32 {
    for shed in 0..=16 {
        let d = e.decide(route, now, Priority::Normal);
        if d.is_admitted() {
            assert_eq!(d.reason, Reason::Probe, "{d:?}");
            return shed;
        }
        assert_eq!((d.mode, d.reason), (Mode::Open, Reason::Open), "{d:?}");
    }
    panic!("no probe after 16 sheds");
}

/// A route called four times a minute (every 15 s, a request failing with its caller's
/// 2 s timeout during the outage): the decisions of an outage of `minutes`, after half an
/// hour of health, as `(admitted, reason)` per request.
fn quiet_outage(minutes: u32) -> Vec<(bool, Reason)> {
    let e = engine(Model::Default);
    let gap = 15.0;
    let (start, end) = (1_800.0, 1_800.0 + 60.0 * f64::from(minutes));
    let mut seen = Vec::new();
    let mut t = 0.0;
    while t < end {
        let d = e.decide("webhook", secs(t), Priority::Normal);
        if t >= start {
            seen.push((d.is_admitted(), d.reason));
        }
        if d.is_admitted() {
            let failing = t >= start;
            let (done, sample) = if failing {
                (t + 2.0, Telemetry::outcome(2_000.0, false, 0.5).unwrap())
            } else {
                (t + 0.08, healthy())
            };
            e.report("webhook", sample, secs(done));
        }
        t += gap;
    }
    seen
}

#[test]
fn a_quiet_route_opens_after_a_few_failures_and_sheds_most_of_an_outage() {
    let seen = quiet_outage(20);
    println!("{seen:?}");
    let first_shed = seen.iter().position(|(admitted, _)| !admitted).expect("the outage is shed");
    assert!(first_shed <= 5, "{first_shed} failing requests admitted before the first shed");
    let admitted = seen.iter().filter(|(a, _)| *a).count();
    assert!(admitted * 3 <= seen.len(), "{admitted} of {} requests admitted during the outage", seen.len());
}
