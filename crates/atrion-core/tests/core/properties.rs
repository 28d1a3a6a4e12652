//! Property tests of the invariants of docs/DESIGN.md §2, for both models.

use std::time::Duration;

use atrion_core::{
    CollectorObserver, Engine, EngineLimits, Mode, Model, OwnedEvent, PhysicsConfig, Priority, Telemetry, Timestamp,
};
use proptest::prelude::*;

/// One step of a trace: a time offset (possibly backwards), telemetry, and a decision.
#[derive(Debug, Clone)]
struct Step {
    dt_ms: i64,
    latency: f64,
    error: f64,
    saturation: f64,
    priority: usize,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![8 => 0i64..2_000, 1 => -5_000i64..0, 1 => 0i64..1],
        prop_oneof![0.0..300.0f64, 0.0..1e7f64, Just(0.0)],
        prop_oneof![0.0..=1.0f64, Just(0.0), Just(1.0)],
        0.0..=1.0f64,
        0usize..5,
    )
        .prop_map(|(dt_ms, latency, error, saturation, priority)| Step {
            dt_ms,
            latency,
            error,
            saturation,
            priority,
        })
}

fn model() -> impl Strategy<Value = Model> {
    prop_oneof![Just(Model::Reference), Just(Model::Default)]
}

fn run(model: Model, steps: &[Step]) -> Engine<CollectorObserver> {
    let e = Engine::with_observer(PhysicsConfig::for_model(model), EngineLimits::default(), CollectorObserver::new())
        .unwrap();
    let mut t: i64 = 1_000_000;
    for s in steps {
        t = (t + s.dt_ms).max(0);
        let now = Timestamp::from_millis(t as u64);
        let d = e.decide("r", now, Priority::ALL[s.priority]);
        assert!(d.resistance.is_finite());
        if let Some(retry) = d.retry_after {
            assert!(retry > Duration::ZERO && retry <= Duration::from_secs(3_600));
        }
        let st = e.report("r", Telemetry::new(s.latency, s.error, s.saturation).unwrap(), now);
        let v = e.snapshot("r").unwrap();
        let c = e.config();
        assert!(v.validate().is_ok(), "{v:?}");
        assert!(st.resistance >= c.r_base && st.resistance <= c.r_max, "{st:?}");
        assert!(v.scar >= 0.0 && v.scar <= c.scar_max);
        assert!(v.momentum.is_finite() && v.momentum >= 0.0);
        assert!(v.break_point.is_finite() && v.recovery.is_finite());
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the valid input, in any order, every value stays finite and in range.
    #[test]
    fn every_value_stays_finite(model in model(), steps in prop::collection::vec(step(), 1..200)) {
        run(model, &steps);
    }

    /// The check valve: telemetry at or better than every baseline never adds scar.
    #[test]
    fn better_than_baseline_never_scars(
        model in model(),
        samples in prop::collection::vec((0.0..100.0f64, 0.0..0.01f64, 0.0..0.5f64, 1u64..500), 1..300),
    ) {
        let e = Engine::new(PhysicsConfig::for_model(model)).unwrap();
        let mut t = 0;
        for (latency, error, saturation, dt) in samples {
            t += dt;
            let s = e.report("r", Telemetry::new(latency, error, saturation).unwrap(), Timestamp::from_millis(t));
            prop_assert_eq!(s.scar, 0.0);
        }
    }

    /// Scar decays toward zero with the configured half-life, whatever the update spacing.
    #[test]
    fn scar_halves_every_half_life(
        model in model(),
        half_life_s in 1.0..60.0f64,
        scar in 1.0..80.0f64,
        gaps in prop::collection::vec(1u64..1_000, 1..20),
    ) {
        // The decay law alone: healthy half-open probes also heal scar (`probe_heal`), which
        // `healthy_probes_heal_scar` tests.
        let mut cfg = PhysicsConfig::for_model(model).with_scar_half_life(Duration::from_secs_f64(half_life_s));
        cfg.half_open.probe_heal = 0.0;
        let e = Engine::new(cfg).unwrap();
        let healthy = Telemetry::new(20.0, 0.0, 0.1).unwrap();
        for k in 0..20 {
            e.report("r", healthy, Timestamp::from_millis(k));
        }
        let mut v = e.snapshot("r").unwrap();
        let start = v.timestamp;
        v.scar = scar;
        v.resistance = 10.0 + scar;
        e.restore("r", &v, start).unwrap();
        // Walk exactly one half-life in uneven steps of healthy telemetry.
        let total: u64 = gaps.iter().sum();
        let span = (half_life_s * 1e9) as u64;
        let mut t = start.as_nanos();
        for g in &gaps {
            t += span * g / total;
            e.report("r", healthy, Timestamp::from_nanos(t));
        }
        let end = start.as_nanos() + span;
        e.report("r", healthy, Timestamp::from_nanos(end));
        // The snapshot is as of the route's last physics step (reports closer together than
        // the default model's step wait in its window): the scar at that step's time.
        let snap = e.snapshot("r").unwrap();
        let elapsed = snap.timestamp.saturating_since(start).as_secs_f64();
        let want = scar * 0.5f64.powf(elapsed / half_life_s);
        prop_assert!(elapsed >= half_life_s - 0.011, "stepped {} s into {} s", elapsed, half_life_s);
        prop_assert!((snap.scar - want).abs() <= 1e-6 * scar, "{} -> {} (want {})", scar, snap.scar, want);
    }

    /// Bootstrap lasts exactly `bootstrap_updates` updates, whatever the telemetry, and a
    /// route in bootstrap never trips.
    #[test]
    fn bootstrap_length(model in model(), n in 1u32..40, steps in prop::collection::vec(step(), 40..60)) {
        let mut cfg = PhysicsConfig::for_model(model);
        cfg.bootstrap_updates = n;
        let e = Engine::new(cfg).unwrap();
        let mut t = 0u64;
        for (i, s) in steps.iter().enumerate() {
            t += s.dt_ms.unsigned_abs();
            let st = e.report("r", Telemetry::new(s.latency, s.error, s.saturation).unwrap(), Timestamp::from_millis(t));
            if (i as u32) + 1 < n {
                prop_assert_eq!(st.mode, Mode::Bootstrap);
            } else if (i as u32) + 1 == n {
                prop_assert_eq!(st.mode, Mode::Operational);
            } else {
                prop_assert_ne!(st.mode, Mode::Bootstrap);
            }
        }
    }

    /// Hysteresis: a tripped route closes only below its recovery point, which lies below
    /// the break point, so it cannot flap on one threshold.
    #[test]
    fn closes_only_below_recovery(model in model(), steps in prop::collection::vec(step(), 1..300)) {
        let e = run(model, &steps);
        let c = e.config();
        for ev in e.observer().events() {
            if let OwnedEvent::Transition { from, to: Mode::Operational, resistance, .. } = ev {
                if from == Mode::Bootstrap {
                    continue;
                }
                prop_assert!(c.static_recovery < c.static_break && c.tuner.recovery_ratio < 1.0);
                if model == Model::Default {
                    // Closing needs R < recovery <= max(recovery_floor, ratio * ceiling).
                    let most = c.tuner.recovery_floor.max(c.tuner.recovery_ratio * c.tuner.ceiling).max(c.static_recovery);
                    prop_assert!(resistance < most, "closed at R = {}", resistance);
                }
            }
        }
    }
}
