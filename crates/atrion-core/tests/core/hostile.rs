//! Hostile configurations and telemetry: whatever `validate` accepts, `decide` and `report`
//! never panic and the state never holds a value that is not finite.

use std::time::Duration;

use atrion_core::{ConfigError, Engine, EngineLimits, Mode, Model, PhysicsConfig, Priority, Telemetry, TelemetryError};
use proptest::prelude::*;

use super::{healthy, ms, outage};

/// Drives a route through health, a trip, half-open probes and recovery, checking every
/// value on the way.
fn drive_hard(cfg: PhysicsConfig, steps: &[(u64, f64, f64, usize)]) {
    let e = Engine::with_observer(cfg, EngineLimits::default(), ()).expect("the config was validated");
    let mut t = 1_000u64;
    for &(dt, latency, error, priority) in steps {
        t = t.saturating_add(dt);
        let now = ms(t);
        let d = e.decide("r", now, Priority::ALL[priority]);
        assert!(d.resistance.is_finite(), "{d:?}");
        let st = e.report("r", Telemetry::new(latency, error, 0.5).unwrap(), now);
        assert!(st.resistance.is_finite(), "{st:?}");
        let v = e.snapshot("r").unwrap();
        assert!(v.validate().is_ok(), "{v:?}");
    }
}

#[test]
fn open_max_under_a_millisecond_does_not_panic_decide() {
    let mut cfg = PhysicsConfig::default();
    cfg.half_open.open_base = Duration::from_micros(100);
    cfg.half_open.open_max = Duration::from_micros(500);
    cfg.validate().unwrap();
    let e = Engine::new(cfg).unwrap();
    let mut t = 0;
    for _ in 0..200 {
        t += 50;
        e.report("r", outage(), ms(t));
        let d = e.decide("r", ms(t), Priority::Low);
        if let Some(retry) = d.retry_after {
            assert!(retry <= Duration::from_millis(1), "{retry:?}");
        }
    }
}

#[test]
fn durations_that_cannot_work_are_refused() {
    let mut cfg = PhysicsConfig::default();
    cfg.half_open.open_base = Duration::MAX;
    cfg.half_open.open_max = Duration::MAX;
    assert!(matches!(cfg.validate(), Err(ConfigError::OutOfRange { field: "half_open.open_base", .. })));
    // Past u64 nanoseconds, a duration would wrap in a timestamp.
    let mut cfg = PhysicsConfig::default();
    cfg.smoothing_slow = Duration::from_secs(u64::MAX / 1_000_000_000 + 1);
    assert!(matches!(cfg.validate(), Err(ConfigError::OutOfRange { field: "smoothing_slow", .. })));
    // The longest duration allowed still trips and reopens without panicking.
    let mut cfg = PhysicsConfig::default();
    cfg.half_open.open_base = PhysicsConfig::MAX_DURATION;
    cfg.half_open.open_max = PhysicsConfig::MAX_DURATION;
    cfg.validate().unwrap();
    let e = Engine::new(cfg).unwrap();
    let mut t = 0;
    while e.status("r").map(|s| s.mode) != Ok(Mode::Open) && t < 60_000 {
        t += 50;
        e.report("r", outage(), ms(t));
    }
    assert_eq!(e.status("r").unwrap().mode, Mode::Open);
    let d = e.decide("r", ms(t + 1), Priority::Normal);
    assert!(!d.is_admitted() && d.retry_after.unwrap() <= PhysicsConfig::MAX_DURATION);
}

#[test]
fn a_scar_decay_that_makes_nan_is_refused() {
    let mut cfg = PhysicsConfig::default();
    cfg.scar_decay = 1e-308;
    assert!(matches!(cfg.validate(), Err(ConfigError::OutOfRange { field: "scar_decay", .. })));
    cfg.scar_decay = 1e308;
    assert!(matches!(cfg.validate(), Err(ConfigError::OutOfRange { field: "scar_decay", .. })));
}

#[test]
fn absurd_latency_is_refused_at_construction() {
    assert!(matches!(Telemetry::new(f64::MAX, 0.0, 0.0), Err(TelemetryError::OutOfRange { field: "latency_ms", .. })));
    assert!(Telemetry::new(Telemetry::MAX_LATENCY_MS, 0.0, 0.0).is_ok());
    assert!(Telemetry::new(Telemetry::MAX_LATENCY_MS * 1.01, 0.0, 0.0).is_err());
}

#[test]
fn extreme_latencies_do_not_blind_a_route() {
    for model in [Model::Default, Model::Reference] {
        let e = Engine::new(PhysicsConfig::for_model(model)).unwrap();
        let mut t = 0;
        for _ in 0..600 {
            t += 50;
            e.report("r", healthy(), ms(t));
        }
        let worst = Telemetry::new(Telemetry::MAX_LATENCY_MS, 1.0, 1.0).unwrap();
        e.report("r", worst, ms(t + 1));
        e.report("r", worst, ms(t + 2));
        t += 60_000;
        for _ in 0..600 {
            t += 50;
            e.report("r", healthy(), ms(t));
        }
        let mut shed = 0;
        for _ in 0..400 {
            t += 50;
            e.report("r", Telemetry::new(5_000.0, 1.0, 0.9).unwrap(), ms(t));
            shed += usize::from(!e.decide("r", ms(t), Priority::Normal).is_admitted());
        }
        assert!(shed > 100, "{model:?}: a 20 s outage at 5 s latency was shed {shed} times of 400");
        let v = e.snapshot("r").unwrap();
        assert!(v.validate().is_ok(), "{v:?}");
    }
}

fn seconds(choice: u8, default: Duration) -> Duration {
    match choice % 7 {
        0 => Duration::from_nanos(1),
        1 => Duration::from_micros(1),
        2 => Duration::from_millis(1),
        3 => PhysicsConfig::MAX_DURATION,
        4 => Duration::from_secs(3_600),
        _ => default,
    }
}

fn number(choice: u8, default: f64) -> f64 {
    match choice % 9 {
        0 => f64::MIN_POSITIVE,
        1 => 1e-300,
        2 => 1e-9,
        3 => 1e9,
        4 => 1e300,
        5 => f64::MAX,
        6 => 1.0,
        _ => default,
    }
}

/// A configuration with some fields set to extremes; most of them fail validation.
fn hostile(model: Model, picks: &[u8]) -> PhysicsConfig {
    let mut c = PhysicsConfig::for_model(model);
    let mut p = picks.iter().copied().cycle();
    let mut n = |d: f64| number(p.next().unwrap(), d);
    c.r_base = n(c.r_base);
    c.r_max = n(c.r_max);
    c.baseline.latency = n(c.baseline.latency);
    c.gain.latency = n(c.gain.latency);
    c.gain.error = n(c.gain.error);
    c.criticality.latency = n(c.criticality.latency);
    c.momentum_weight = n(c.momentum_weight);
    c.momentum_max = n(c.momentum_max);
    c.momentum_scar = n(c.momentum_scar);
    c.scar_decay = n(c.scar_decay);
    c.scar_rate = n(c.scar_rate);
    c.scar_max = n(c.scar_max);
    c.static_break = n(c.static_break);
    c.tuner.k = n(c.tuner.k);
    c.tuner.floor = n(c.tuner.floor);
    c.tuner.ceiling = n(c.tuner.ceiling);
    c.tuner.winsor = n(c.tuner.winsor);
    c.tuner.min_sd = n(c.tuner.min_sd);
    c.half_open.backoff_factor = n(c.half_open.backoff_factor);
    c.normal.headroom = n(c.normal.headroom);
    c.normal.k = n(c.normal.k);
    c.normal.floor_ms = n(c.normal.floor_ms);
    c.normal.ceiling_ms = n(c.normal.ceiling_ms);
    c.throttle.gain = n(c.throttle.gain);
    c.throttle.proportional = n(c.throttle.proportional);
    let mut d = |x: Duration| seconds(p.next().unwrap(), x);
    c.smoothing = d(c.smoothing);
    c.smoothing_slow = d(c.smoothing_slow);
    c.keepalive = d(c.keepalive);
    c.tuner.horizon = d(c.tuner.horizon);
    c.half_open.open_base = d(c.half_open.open_base);
    c.half_open.open_max = d(c.half_open.open_max);
    c.half_open.backoff_half_life = d(c.half_open.backoff_half_life);
    c.half_open.probe_window = d(c.half_open.probe_window);
    c.half_open.scout_interval = d(c.half_open.scout_interval);
    c.normal.horizon = d(c.normal.horizon);
    c.normal.warmup = d(c.normal.warmup);
    c.throttle.smoothing = d(c.throttle.smoothing);
    c.throttle.patience = d(c.throttle.patience);
    c
}

fn trace() -> impl Strategy<Value = Vec<(u64, f64, f64, usize)>> {
    prop::collection::vec(
        (
            prop_oneof![0u64..100, 0u64..100_000, Just(0), Just(u64::MAX / 4)],
            prop_oneof![Just(0.0), 0.0..1e3f64, Just(Telemetry::MAX_LATENCY_MS)],
            prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64],
            0usize..5,
        ),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Every configuration that validates runs every trace without a panic or a value that
    /// is not finite.
    #[test]
    fn what_validates_never_panics(
        reference in any::<bool>(),
        picks in prop::collection::vec(any::<u8>(), 40),
        steps in trace(),
    ) {
        let model = if reference { Model::Reference } else { Model::Default };
        let cfg = hostile(model, &picks);
        if cfg.validate().is_ok() {
            drive_hard(cfg, &steps);
        }
    }

    /// Extremes of telemetry on the default configurations.
    #[test]
    fn extreme_telemetry_stays_finite(reference in any::<bool>(), steps in trace()) {
        let model = if reference { Model::Reference } else { Model::Default };
        drive_hard(PhysicsConfig::for_model(model), &steps);
    }
}

/// Found by fuzzing: a snapshot whose values are finite but beyond what the physics keeps (a
/// learned normal of 1e300 ms, a tuner variance of 1e300) became infinite once restored.
#[test]
fn a_restored_snapshot_cannot_bring_a_value_past_the_physics_range() {
    use atrion_core::PhysicsVector;
    let e = Engine::new(PhysicsConfig::default()).unwrap();
    for _ in 0..100 {
        e.report("r", healthy(), ms(1_000));
    }
    let good = e.snapshot("r").unwrap();
    let mut v = good.clone();
    v.normal_mean = 1e300;
    assert!(v.validate().is_err(), "a learned normal past a day is refused");
    assert!(PhysicsVector::from_bytes(&v.to_bytes()).is_err());
    let mut v = good.clone();
    v.tuner_mean = 1e300;
    v.tuner_var = 1e300;
    v.momentum = 1e300;
    v.break_point = 1e300;
    v.trips = 1e300;
    let other = Engine::new(PhysicsConfig::default()).unwrap();
    other.restore("r", &v, ms(2_000)).unwrap();
    for k in 0..200 {
        let now = ms(2_000 + 50 * k);
        other.decide("r", now, Priority::Normal);
        other.report("r", if k % 3 == 0 { outage() } else { healthy() }, now);
        let s = other.snapshot("r").unwrap();
        assert!(s.validate().is_ok(), "{s:?}");
    }
}
