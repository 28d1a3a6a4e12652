//! Golden tests of `Model::Reference`, each expected value written out from the formulas of
//! docs/DESIGN.md §7.1, independently of the implementation. Where a test names a figure of
//! the original (TypeScript, at 2fccefa), the original gave that figure when driven through
//! its `Atrion` class with the same telemetry at the same times.

use atrion_core::{CollectorObserver, Engine, EngineLimits, Mode, Model, PhysicsConfig, Priority, Reason, Telemetry};

use super::{engine, ms};

const W_LAT: f64 = 1.791_759_469_228_055; // ln(1 + 5)
const W_ERR: f64 = 2.197_224_577_336_219_6; // ln(1 + 8)

/// Baseline telemetry: every channel exactly at its baseline, so p = 0.
fn at_baseline() -> Telemetry {
    Telemetry::new(100.0, 0.01, 0.5).unwrap()
}

/// Ten baseline updates, 100 ms apart, at t = 0.0 .. 0.9 s: nine in bootstrap at
/// `1.2 R_base`, and the tenth, which ends it, with the physics of p = 0: `R = R_base`.
fn bootstrapped(e: &Engine<impl atrion_core::PhysicsObserver>) {
    for i in 0..9 {
        let s = e.report("r", at_baseline(), ms(i * 100));
        assert_eq!((s.mode, s.resistance), (Mode::Bootstrap, 12.0), "bootstrap R = 1.2 R_base");
    }
    let s = e.report("r", at_baseline(), ms(900));
    assert_eq!((s.mode, s.resistance, s.scar), (Mode::Operational, 10.0, 0.0));
}

#[test]
fn bootstrap_lasts_ten_updates_at_1_2_r_base() {
    let e =
        Engine::with_observer(PhysicsConfig::reference(), EngineLimits::default(), CollectorObserver::new()).unwrap();
    for i in 0..9 {
        let s = e.report("r", Telemetry::new(5_000.0, 1.0, 1.0).unwrap(), ms(i * 100));
        assert_eq!((s.mode, s.resistance, s.scar), (Mode::Bootstrap, 12.0, 0.0), "update {}", i + 1);
    }
    // The tenth update ends bootstrap and is computed: at baseline p = 0 and nothing scarred
    // during bootstrap, so R = R_base (the original: 10).
    let s = e.report("r", at_baseline(), ms(900));
    assert_eq!((s.mode, s.resistance, s.scar), (Mode::Operational, 10.0, 0.0));
    assert_eq!(e.snapshot("r").unwrap().momentum, 0.0);
    assert_eq!(e.observer().transitions(), vec![("r".to_owned(), ms(900), Mode::Bootstrap, Mode::Operational)]);
}

#[test]
fn the_update_that_ends_bootstrap_has_full_physics_but_no_momentum() {
    let e = engine(Model::Reference);
    for i in 0..9 {
        e.report("r", at_baseline(), ms(i * 100));
    }
    let slow = Telemetry::new(200.0, 0.01, 0.5).unwrap(); // p = (tanh 1, 0, 0), |P+| > P_crit
    let p = 1f64.tanh();

    // Update 10 at 0.9 s: no momentum, one scar, R from pressure; not yet learned by the
    // tuner (the original: R = 16.36459354064249, S = 5, M = 0, 0 tuner samples).
    let s10 = 5.0;
    let r = e.report("r", slow, ms(900));
    assert_eq!((r.mode, r.scar), (Mode::Operational, s10));
    assert!((r.resistance - (10.0 + W_LAT * p + s10)).abs() < 1e-12, "{}", r.resistance);
    assert!((r.resistance - 16.364_593_540_642_49).abs() < 1e-12);
    assert_eq!(e.snapshot("r").unwrap().momentum, 0.0);
    assert_eq!(e.shared_tuner().samples, 0, "the update that ends bootstrap teaches no tuner");
    assert_eq!(r.break_point, 100.0);

    // Update 11 at 1.0 s: two back is update 9 (p = 0), so momentum p / 100 ms
    // (the original: R = 21.467161540579482, S = 9.950249168745842, M = 0.007615941559557649).
    let m = p / 100.0;
    let s11 = s10 * (-0.1f64 * 0.1).exp() + 5.0;
    let r = e.report("r", slow, ms(1_000));
    assert!((r.scar - s11).abs() < 1e-12);
    assert!((e.snapshot("r").unwrap().momentum - m).abs() < 1e-15);
    assert!((r.resistance - (10.0 + W_LAT * p + 20.0 * m + s11)).abs() < 1e-12, "{}", r.resistance);
    assert!((r.resistance - 21.467_161_540_579_482).abs() < 1e-12);
    assert_eq!(e.shared_tuner().samples, 1);

    // Update 12 at 1.1 s: two back is update 10, the same pressure: no momentum
    // (the original: R = 26.21583607592211).
    let s12 = s11 * (-0.1f64 * 0.1).exp() + 5.0;
    let r = e.report("r", slow, ms(1_100));
    assert_eq!(e.snapshot("r").unwrap().momentum, 0.0);
    assert!((r.resistance - (10.0 + W_LAT * p + s12)).abs() < 1e-12);
    assert!((r.resistance - 26.215_836_075_922_11).abs() < 1e-12);
}

#[test]
fn resistance_momentum_and_scar_follow_the_formulas() {
    let e = engine(Model::Reference);
    bootstrapped(&e);
    let slow = Telemetry::new(200.0, 0.01, 0.5).unwrap(); // p = (tanh 1, 0, 0)
    let p = 1f64.tanh();
    assert!(p > 0.7, "|P+| above P_crit, so each update scars");

    // Update 11 at 1.0 s: two back is update 9 (p = 0); dt = 100 ms
    // (the original: R = 16.51691237183364, M = 0.007615941559557649).
    let m = p / 100.0;
    let s1 = 5.0;
    let r = e.report("r", slow, ms(1_000));
    assert!((r.resistance - (10.0 + W_LAT * p + 20.0 * m + s1)).abs() < 1e-12, "{}", r.resistance);
    assert!((r.resistance - 16.516_912_371_833_64).abs() < 1e-12);
    assert!((e.snapshot("r").unwrap().momentum - m).abs() < 1e-15);

    // Update 12 at 1.1 s: two back is update 10 (p = 0) again.
    let s2 = s1 * (-0.1f64 * 0.1).exp() + 5.0;
    let r = e.report("r", slow, ms(1_100));
    assert!((r.scar - s2).abs() < 1e-12);
    assert!((r.resistance - (10.0 + W_LAT * p + 20.0 * m + s2)).abs() < 1e-12);

    // Update 13 at 1.3 s: two back is update 11, the same pressure: no momentum
    // (the original: R = 26.11781457491881, S = 14.753221034276319).
    let s3 = s2 * (-0.1f64 * 0.2).exp() + 5.0;
    let r = e.report("r", slow, ms(1_300));
    assert_eq!(e.snapshot("r").unwrap().momentum, 0.0);
    assert!((r.resistance - (10.0 + W_LAT * p + s3)).abs() < 1e-12);
    assert!((r.resistance - 26.117_814_574_918_81).abs() < 1e-12);
    assert!((r.scar - 14.753_221_034_276_319).abs() < 1e-12);
}

#[test]
fn momentum_is_zero_when_no_time_passes() {
    let e = engine(Model::Reference);
    bootstrapped(&e);
    e.report("r", Telemetry::new(400.0, 0.01, 0.5).unwrap(), ms(900));
    assert_eq!(e.snapshot("r").unwrap().momentum, 0.0);
}

#[test]
fn negative_pressure_never_scars_and_r_floors_at_base() {
    let e = engine(Model::Reference);
    bootstrapped(&e);
    let r = e.report("r", Telemetry::new(0.0, 0.0, 0.0).unwrap(), ms(1_000));
    // p = tanh(-1) on each channel: sum w p < 0, so R = max(R_base, ...) = R_base
    // (momentum |p - 0| / 100 is too small to lift it back).
    let p = (-1f64).tanh();
    let raw = 10.0 + (W_LAT + W_ERR + 4f64.ln()) * p + 20.0 * (3.0 * p * p).sqrt() / 100.0;
    assert!(raw < 10.0);
    assert_eq!((r.resistance, r.scar), (10.0, 0.0));
}

#[test]
fn trips_at_the_static_break_and_recovers_below_recovery() {
    let e = engine(Model::Reference);
    bootstrapped(&e);
    let bad = Telemetry::new(100.0, 0.02, 0.5).unwrap(); // p = (0, tanh 1, 0)
    let p = 1f64.tanh();
    // By hand: S_n = S_(n-1) e^(-0.01) + 5 at 100 ms steps; the first update also carries
    // momentum p / 100 (two back is a baseline sample), the second too, then none.
    let mut scar = 0.0;
    let mut expected_trip = None;
    for n in 1..=40u64 {
        scar = scar * (-0.01f64).exp() + 5.0;
        let m = if n <= 2 { p / 100.0 } else { 0.0 };
        let r = 10.0 + W_ERR * p + 20.0 * m + scar;
        if r >= 100.0 {
            expected_trip = Some(n);
            break;
        }
    }
    let expected_trip = expected_trip.unwrap();
    assert_eq!(expected_trip, 20, "the original trips on the 20th bad update");
    let mut tripped = None;
    for n in 1..=40u64 {
        let s = e.report("r", bad, ms(900 + n * 100));
        if s.mode == Mode::Open {
            tripped = Some(n);
            break;
        }
    }
    assert_eq!(tripped, Some(expected_trip));
    assert_eq!(e.status("r").unwrap().break_point, 100.0, "static break for the first 50 tuner samples");

    // Healthy again: |P| = |(tanh -0.5, tanh -1, tanh -0.5)| > P_crit, so only R < recovery
    // closes. By hand, with the tuner: every update from the 11th is learned (alpha = 2/101),
    // recovery is 50 until 50 samples, then max(15, 0.5 clamp(mean + 3 sd, 30, 500)). The
    // first two healthy updates carry momentum |P_good - P_bad| / 100 ms (two back is bad).
    let good = Telemetry::new(50.0, 0.0, 0.25).unwrap();
    let g = [(-0.5f64).tanh(), (-1f64).tanh(), (-0.5f64).tanh()];
    let alpha = 2.0 / 101.0;
    let (mut mean, mut var, mut samples) = (0.0, 0.0, 0u32);
    let mut learn = |x: f64| {
        if samples == 0 {
            (mean, var) = (x, 0.0);
        } else {
            let d = x - mean;
            mean += alpha * d;
            var = (1.0 - alpha) * (var + alpha * d * d);
        }
        samples += 1;
        let recovery =
            if samples >= 50 { (0.5 * (mean + 3.0 * f64::sqrt(var)).clamp(30.0, 500.0)).max(15.0) } else { 50.0 };
        (samples, recovery)
    };
    let mut scar = 0.0;
    for n in 1..=expected_trip {
        scar = scar * (-0.01f64).exp() + 5.0;
        let m = if n <= 2 { p / 100.0 } else { 0.0 };
        learn(10.0 + W_ERR * p + 20.0 * m + scar);
    }
    let jump = ((g[0] * g[0]) + (g[1] - p) * (g[1] - p) + (g[2] * g[2])).sqrt() / 100.0;
    let mut expected_close = None;
    for k in 1..=400u64 {
        scar *= (-0.01f64).exp();
        let m = if k <= 2 { jump } else { 0.0 };
        let r = (10.0 + W_LAT * g[0] + W_ERR * g[1] + 4f64.ln() * g[2] + 20.0 * m + scar).max(10.0);
        let (n, recovery) = learn(r);
        if r < recovery {
            expected_close = Some((k, n, r));
            break;
        }
    }
    let (expected_k, samples_then, r_then) = expected_close.unwrap();
    // The original closes on the 30th healthy update, its tuner just warm with 50 samples,
    // at R = 74.33803231841522 (a tuner warm at 51 samples would keep it open longer).
    assert_eq!((expected_k, samples_then), (30, 50));
    assert!((r_then - 74.338_032_318_415_22).abs() < 1e-9, "{r_then}");
    let t0 = 900 + expected_trip * 100;
    let mut closed_at = None;
    for k in 1..=400u64 {
        let s = e.report("r", good, ms(t0 + k * 100));
        let recovery = e.snapshot("r").unwrap().recovery;
        if s.mode == Mode::Operational {
            closed_at = Some((k, s.resistance, recovery));
            break;
        }
        assert!(s.resistance >= recovery, "still open only while R >= recovery");
    }
    let (k, r, recovery) = closed_at.expect("recovers once R < recovery");
    assert!(r < recovery, "{r} < {recovery}");
    assert_eq!(k, expected_k);
    assert!((r - r_then).abs() < 1e-9, "{r} vs {r_then}");
    assert_eq!(e.shared_tuner().samples, 50);
}

#[test]
fn the_shared_tuner_is_warm_at_50_samples() {
    let e = engine(Model::Reference);
    // Ten bootstrap updates teach nothing; each later one teaches R = 10 (p = 0).
    for i in 0..59 {
        e.report("a", at_baseline(), ms(i * 100));
    }
    assert_eq!(e.shared_tuner().samples, 49);
    assert_eq!(e.status("a").unwrap().break_point, 100.0, "static break at 49 samples");
    // The 50th sample warms it (the original: isWarmedUp once count >= 50): mean 10, sd 0,
    // break = clamp(10, 30, 500) = 30, recovery = max(15, 15).
    let s = e.report("a", at_baseline(), ms(5_900));
    assert_eq!(e.shared_tuner().samples, 50);
    assert_eq!(s.break_point, 30.0);
    assert_eq!(e.snapshot("a").unwrap().recovery, 15.0);
}

#[test]
fn open_route_stays_open_without_telemetry() {
    let e = engine(Model::Reference);
    bootstrapped(&e);
    for n in 1..=30 {
        e.report("r", Telemetry::new(1_000.0, 1.0, 1.0).unwrap(), ms(900 + n * 100));
    }
    assert_eq!(e.status("r").unwrap().mode, Mode::Open);
    // An hour later, with no telemetry in between, it is still open: no timer, no half-open.
    let d = e.decide("r", ms(3_600_000), Priority::Critical);
    assert_eq!((d.is_admitted(), d.reason, d.mode), (false, Reason::Open, Mode::Open));
}

#[test]
fn decision_uses_voltage_and_the_soft_limit() {
    let e = engine(Model::Reference);
    bootstrapped(&e);
    // R = R_base = 10 once bootstrap ends at baseline: voltage must exceed it.
    let now = ms(950);
    assert!(e.decide("r", now, Priority::Critical).is_admitted());
    assert!(e.decide("r", now, Priority::High).is_admitted());
    assert!(e.decide("r", now, Priority::Normal).is_admitted());
    let low = e.decide("r", now, Priority::Low);
    assert_eq!((low.is_admitted(), low.reason), (false, Reason::Overloaded));
    assert!(!e.decide("r", now, Priority::Bulk).is_admitted());

    // Push R above 0.8 * 100 without tripping: the v1 guard sheds even critical traffic.
    let bad = Telemetry::new(100.0, 0.02, 0.5).unwrap();
    let mut n = 0;
    while e.status("r").unwrap().resistance <= 80.0 {
        n += 1;
        e.report("r", bad, ms(900 + n * 100));
    }
    let s = e.status("r").unwrap();
    assert!(s.resistance < 100.0 && s.mode == Mode::Operational);
    let d = e.decide("r", ms(900 + n * 100), Priority::Critical);
    assert_eq!((d.is_admitted(), d.reason), (false, Reason::SoftLimit));
}

#[test]
fn one_tuner_is_shared_by_all_routes() {
    let e = engine(Model::Reference);
    // 60 operational samples on route a, none on b beyond its bootstrap.
    for i in 0..70 {
        e.report("a", at_baseline(), ms(i * 100));
    }
    for i in 0..10 {
        e.report("b", at_baseline(), ms(i * 100));
    }
    let b = e.report("b", at_baseline(), ms(7_000));
    // The tuner has 61 samples of R = 10 (mean 10, var 0): break = clamp(10, 30, 500).
    assert_eq!(e.snapshot("b").unwrap().tuner_samples, 61);
    assert_eq!(b.break_point, 30.0);
    // The engine shows the shared tuner itself, whichever route fed it last.
    let t = e.shared_tuner();
    assert_eq!((t.samples, t.mean, t.sd), (61, 10.0, 0.0));
    assert_eq!(e.throttle("a"), Some(0.0), "the reference model has no throttle");
    assert_eq!(e.throttle("unknown"), None);
}

/// The original's own figures: `original-trace.csv` was recorded from the original
/// (TypeScript, at 2fccefa) by bindings/node/scripts/original-trace.mjs: four engines fed
/// 400 pseudo-random reports each (one to three routes; calm, overloaded, fast and
/// flapping phases; gaps of 0 to 300 ms), with, after each report, the route's mode,
/// resistance, scar and momentum and the shared tuner's statistics. The same reports at
/// the same times give the same modes and tuner counts, and the same figures to 1e-9.
#[test]
fn replays_the_originals_trace() {
    let mut engines: Vec<(String, Engine)> = Vec::new();
    let (mut trips, mut warm) = (0, false);
    for (i, line) in include_str!("original-trace.csv").lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |j: usize| f[j].parse::<f64>().unwrap_or_else(|_| panic!("line {}: column {j}", i + 1));
        if engines.last().is_none_or(|(trace, _)| trace != f[0]) {
            engines.push((f[0].to_owned(), engine(Model::Reference)));
        }
        let e = &engines.last().unwrap().1;
        let route = f[2];
        let before = e.status(route).ok().map(|s| s.mode);
        let s = e.report(route, Telemetry::new(num(3), num(4), num(5)).unwrap(), ms(f[1].parse().unwrap()));
        let mode = match f[6] {
            "bootstrap" => Mode::Bootstrap,
            "operational" => Mode::Operational,
            _ => Mode::Open,
        };
        let t = e.shared_tuner();
        let at = format!("line {}: {line}", i + 1);
        assert_eq!(s.mode, mode, "{at}");
        assert_eq!(t.samples, f[10].parse::<u32>().unwrap(), "{at}");
        for (ours, theirs) in [
            (s.resistance, num(7)),
            (s.scar, num(8)),
            (e.snapshot(route).unwrap().momentum, num(9)),
            (t.mean, num(11)),
            (t.sd, num(12)),
        ] {
            assert!((ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0), "{at}: {ours} vs {theirs}");
        }
        trips += usize::from(before == Some(Mode::Operational) && mode == Mode::Open);
        warm |= t.samples >= 50;
    }
    assert_eq!(engines.len(), 4);
    assert!(trips >= 4 && warm, "the trace trips routes ({trips}) and warms the tuner");
}
