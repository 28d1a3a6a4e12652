//! The engine as a shared, bounded, concurrent table of routes.

use std::sync::Arc;
use std::time::Duration;

use atrion_core::{
    CollectorObserver, DecodeError, Engine, EngineError, EngineLimits, Hold, Mode, Model, OwnedEvent, PhysicsConfig,
    PhysicsVector, Priority, Reason, RoutePolicy, SilentObserver, Telemetry, Timestamp, UNTRACKED_ROUTE, Verdict,
};

use super::{drive, engine, healthy, ms, outage};

fn limits(max_routes: usize, idle: Duration) -> EngineLimits {
    let mut l = EngineLimits::default();
    l.max_routes = max_routes;
    l.idle_timeout = idle;
    l
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    assert_send_sync::<Engine<CollectorObserver>>();
}

#[test]
fn rejects_an_invalid_config() {
    let mut cfg = PhysicsConfig::default();
    cfg.tuner.floor = 1e6;
    assert!(Engine::new(cfg).is_err());
    assert!(Engine::with_observer(PhysicsConfig::default(), limits(0, Duration::from_secs(1)), ()).is_err());
}

#[test]
fn unknown_routes_and_bad_ids_are_typed_errors() {
    let e = engine(Model::Default);
    assert_eq!(e.status("nope"), Err(EngineError::UnknownRoute { route: "nope".into() }));
    assert!(matches!(e.snapshot("nope"), Err(EngineError::UnknownRoute { .. })));
    assert!(matches!(e.route("", ms(0)), Err(EngineError::InvalidRouteId { len: 0 })));
    let long = "x".repeat(2_000);
    assert!(matches!(e.route(&long, ms(0)), Err(EngineError::InvalidRouteId { len: 2_000 })));
    // Deciding on a bad id never fails: it is decided on no state.
    let d = e.decide("", ms(0), Priority::Normal);
    assert_eq!((d.verdict, d.reason), (Verdict::Admit, Reason::Untracked));
    assert_eq!(e.stats().untracked, 1);
    assert_eq!(e.stats().routes, 0);
}

#[test]
fn idle_routes_are_evicted_when_the_table_is_full() {
    let e =
        Engine::with_observer(PhysicsConfig::default(), limits(100, Duration::from_secs(60)), CollectorObserver::new())
            .unwrap();
    for i in 0..100 {
        e.report(&format!("route-{i}"), healthy(), ms(0));
    }
    // Route 0 stays busy; the rest fall idle.
    e.report("route-0", healthy(), ms(90_000));
    assert_eq!(e.stats().routes, 100);
    e.decide("newcomer", ms(120_000), Priority::Normal);
    let stats = e.stats();
    assert_eq!(stats.evicted, 99);
    assert_eq!(stats.routes, 2, "route-0 and the newcomer");
    assert!(e.status("route-0").is_ok() && e.status("newcomer").is_ok());
    let evictions = e.observer().events().iter().filter(|ev| matches!(ev, OwnedEvent::Evicted { .. })).count();
    assert_eq!(evictions, 99);
}

#[test]
fn a_flood_of_route_ids_cannot_grow_the_table() {
    let e = Engine::with_observer(PhysicsConfig::default(), limits(1_000, Duration::from_secs(60)), ()).unwrap();
    for i in 0..50_000u64 {
        let now = ms(i); // all within one idle timeout: nothing is idle
        e.decide(&format!("/attack/{i}"), now, Priority::Normal);
        e.report(&format!("/attack/{i}"), outage(), now);
    }
    let stats = e.stats();
    assert!(stats.routes <= 1_000, "{stats:?}");
    // (Past 30 s, the first routes, of little value, make room for a thousand more.)
    assert!(stats.untracked >= 48_000 && stats.untracked == stats.dropped_reports, "{stats:?}");
    // The failures reported on untracked routes went nowhere: another new route is decided
    // on no state, never on the attack's evidence.
    let d = e.decide("victim", ms(50_000), Priority::Normal);
    assert_eq!((d.verdict, d.reason), (Verdict::Admit, Reason::Untracked));
    assert!(e.status(UNTRACKED_ROUTE).is_err(), "no shared route is in the table");
    assert!(matches!(e.route("victim", ms(50_000)), Err(EngineError::TableFull { .. })));
    assert!(!e.handle("victim", ms(50_000)).is_tracked());
}

#[test]
fn a_full_table_never_decides_a_new_route_on_another_routes_evidence() {
    let e =
        Engine::with_observer(PhysicsConfig::default(), limits(10, Duration::from_secs(600)), SilentObserver).unwrap();
    for i in 0..10 {
        drive(&e, &format!("a-{i}"), 100.0, 0.0, 5.0, |_| outage());
    }
    for i in 0..100 {
        e.report(&format!("more-{i}"), outage(), ms(5_000));
    }
    for _ in 0..50 {
        let d = e.decide("victim", ms(5_000), Priority::Normal);
        assert_eq!((d.verdict, d.reason), (Verdict::Admit, Reason::Untracked));
    }
    // A policy's hold still applies to an untracked route.
    e.set_policies(vec![RoutePolicy { pattern: "held-*".into(), config: None, hold: Hold::Open }]).unwrap();
    let d = e.decide("held-1", ms(5_000), Priority::Critical);
    assert_eq!((d.verdict, d.reason), (Verdict::Shed, Reason::Held));
}

#[test]
fn the_least_valuable_idle_routes_go_sooner_when_the_table_is_full() {
    let mut l = limits(10, Duration::from_secs(600));
    l.pressure_idle = Duration::from_secs(30);
    let e = Engine::with_observer(PhysicsConfig::default(), l, SilentObserver).unwrap();
    // Five routes learned an outage (scar, open): they are worth keeping. Five only
    // bootstrapped on one healthy report.
    for i in 0..5 {
        drive(&e, &format!("scarred-{i}"), 100.0, 0.0, 5.0, |_| outage());
        e.report(&format!("quiet-{i}"), healthy(), ms(5_000));
    }
    // Not idle long enough: untracked.
    assert_eq!(e.decide("new-0", ms(20_000), Priority::Normal).reason, Reason::Untracked);
    // Past the pressure timeout, the quiet ones make room; the scarred stay.
    assert_ne!(e.decide("new-1", ms(40_000), Priority::Normal).reason, Reason::Untracked);
    assert_eq!(e.stats().evicted, 5);
    for i in 0..5 {
        assert!(e.status(&format!("scarred-{i}")).is_ok());
    }
}

#[test]
fn a_route_is_created_only_when_the_gate_allows() {
    let e = engine(Model::Default);
    assert_eq!(e.decide_gated("a", ms(0), Priority::Normal, || false), None);
    assert!(e.status("a").is_err(), "a refused route is not created");
    assert!(e.report_gated("a", healthy(), ms(0), || false).is_none());
    assert!(e.decide_gated("a", ms(0), Priority::Normal, || true).is_some());
    // A tracked route never asks.
    assert!(e.decide_gated("a", ms(1), Priority::Normal, || panic!("asked")).is_some());
    assert!(e.report_gated("a", healthy(), ms(1), || panic!("asked")).is_some());
}

#[test]
fn a_hold_always_finds_room() {
    let mut l = limits(4, Duration::from_secs(600));
    l.held_reserve = 2;
    let e = Engine::with_observer(PhysicsConfig::default(), l, ()).unwrap();
    for i in 0..4 {
        e.report(&format!("busy-{i}"), healthy(), ms(1_000));
    }
    // Nothing idle: the reserve takes the held routes.
    e.hold("held-0", Hold::Open, ms(1_000)).unwrap();
    e.hold("held-1", Hold::Closed, ms(1_000)).unwrap();
    assert_eq!(e.stats().routes, 6);
    // The reserve used up: the least valuable route goes.
    e.hold("held-2", Hold::Open, ms(1_000)).unwrap();
    assert_eq!((e.stats().routes, e.stats().evicted), (6, 1));
    assert_eq!(e.decide("held-2", ms(1_000), Priority::Critical).reason, Reason::Held);
    assert_eq!(e.held("held-0"), Ok(Hold::Open), "a held route is never the one evicted");
    // Releasing an unknown route on a full table makes no room for it.
    e.hold("nobody", Hold::Released, ms(1_000)).unwrap();
    assert!(e.status("nobody").is_err());
}

#[test]
fn concurrent_reports_lose_nothing() {
    let e = Arc::new(engine(Model::Default));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for k in 0..5_000u64 {
                    let route = if k % 2 == 0 { "shared" } else { ["a", "b", "c", "d"][t] };
                    let now = ms(k);
                    e.decide(route, now, Priority::Normal);
                    e.report(route, healthy(), now);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(e.snapshot("shared").unwrap().updates, 4 * 2_500);
    for r in ["a", "b", "c", "d"] {
        assert_eq!(e.snapshot(r).unwrap().updates, 2_500);
    }
}

#[test]
fn snapshot_restores_into_another_engine() {
    let a = engine(Model::Default);
    drive(&a, "r", 100.0, 0.0, 10.0, |_| healthy());
    drive(&a, "r", 100.0, 10.0, 12.0, |_| outage());
    let v = a.snapshot("r").unwrap();
    let bytes = v.to_bytes();
    let b = engine(Model::Default);
    b.restore("r", &PhysicsVector::from_bytes(&bytes).unwrap(), ms(12_000)).unwrap();
    assert_eq!(b.snapshot("r").unwrap(), v);
    let (sa, sb) = (a.status("r").unwrap(), b.status("r").unwrap());
    assert_eq!(sa, sb);
    let now = ms(12_500);
    assert_eq!(a.decide("r", now, Priority::Normal), b.decide("r", now, Priority::Normal));

    let reference = engine(Model::Reference);
    assert!(matches!(reference.restore("r", &v, now), Err(EngineError::ModelMismatch { .. })));
    let bad = PhysicsVector { scar: f64::INFINITY, ..v };
    assert!(matches!(
        b.restore("r", &bad, now),
        Err(EngineError::InvalidSnapshot { source: DecodeError::Invalid { field: "scar", .. }, .. })
    ));
    assert_eq!(b.snapshot("r").unwrap().scar, a.snapshot("r").unwrap().scar, "a rejected restore changes nothing");
}

#[test]
fn handles_decide_like_the_engine() {
    let e = engine(Model::Default);
    let h = e.route("checkout", ms(0)).unwrap();
    assert_eq!(h.id(), "checkout");
    for k in 0..2_000u64 {
        let t = if k < 1_000 { healthy() } else { outage() };
        h.report(t, ms(k * 10));
    }
    assert_eq!(h.status().mode, Mode::Open);
    assert_eq!(h.status(), e.status("checkout").unwrap());
    // Once the scout interval has passed, the open route's scout goes through after eight
    // sheds; a handle's decisions are the engine's.
    let shed = crate::default_model::sheds_before_probe(&e, "checkout", ms(20_000));
    assert_eq!(shed, 8, "the scout waits for eight sheds");
    assert_eq!(h.decide(ms(20_000), Priority::Normal), e.decide("checkout", ms(20_000), Priority::Normal));
}

#[test]
fn select_prefers_low_resistance_skips_open_routes_and_tries_new_ones() {
    let e = engine(Model::Default);
    drive(&e, "good", 100.0, 0.0, 10.0, |_| healthy());
    drive(&e, "bad", 100.0, 0.0, 10.0, |_| healthy());
    drive(&e, "bad", 100.0, 10.0, 20.0, |_| outage());
    let now = Timestamp::from_secs(20);
    assert_eq!(e.status("bad").unwrap().mode, Mode::Open);
    for u in [0.0, 0.3, 0.99] {
        assert_eq!(e.select(&["bad", "good"], now, 1.0, u), Some(1));
    }
    // A route never seen is new and healthy (R = R_base), as likely as a healthy one: a
    // router must send it traffic for it to learn anything.
    assert_eq!(e.select(&["bad", "unknown"], now, 1.0, 0.5), Some(1));
    assert_eq!(e.select(&["bad", "good", "unknown"], now, 1.0, 0.0), Some(1));
    assert_eq!(e.select(&["bad", "good", "unknown"], now, 1.0, 0.99), Some(2));
    assert_eq!(e.select(&["bad"], now, 1.0, 0.5), None, "every route open");
    // Once its open interval is over, the default model's open route can be picked again:
    // the picks' decisions are what half-open it (after the open interval's sheds).
    let later = e.status("bad").unwrap().open_until;
    assert_eq!(e.select(&["bad"], later, 1.0, 0.5), Some(0));
    crate::default_model::sheds_before_probe(&e, "bad", later);
    assert_eq!(e.status("bad").unwrap().mode, Mode::HalfOpen);
}

#[test]
fn status_is_readable_while_other_threads_decide() {
    let e = Arc::new(engine(Model::Default));
    e.report("r", healthy(), ms(0));
    let reader = {
        let e = e.clone();
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                let s = e.status("r").unwrap();
                assert!(s.resistance.is_finite() && s.resistance >= 10.0);
            }
        })
    };
    for k in 0..10_000u64 {
        e.decide("r", ms(k), Priority::Normal);
        e.report("r", if k % 7 == 0 { outage() } else { healthy() }, ms(k));
    }
    reader.join().unwrap();
}

#[test]
fn telemetry_rejections_leave_state_untouched() {
    let e = engine(Model::Default);
    e.report("r", healthy(), ms(0));
    let before = e.snapshot("r").unwrap();
    for bad in [Telemetry::new(f64::NAN, 0.0, 0.0), Telemetry::new(-3.0, 0.0, 0.0), Telemetry::new(1.0, 0.0, 1.01)] {
        assert!(bad.is_err());
    }
    assert_eq!(e.snapshot("r").unwrap(), before);
}

#[test]
fn cluster_scar_is_gamma_blended_and_heals() {
    let e = engine(Model::Default);
    drive(&e, "r", 100.0, 0.0, 10.0, |_| healthy());
    let now = Timestamp::from_secs(10);
    let alone = e.resistance("r", now).unwrap();
    assert_eq!(alone, 10.0);
    e.set_cluster("r", Some(60.0), now).unwrap();
    let g = e.config().gamma;
    let blended = e.decide("r", now, Priority::Critical).resistance;
    assert!((blended - (10.0 + g * 60.0)).abs() < 1e-9, "{blended}");
    // Shed by priority: 28 is above the normal threshold (25, on the way to a break of 30);
    // the first request may pass as the keep-alive, the next is shed.
    e.decide("r", now, Priority::Normal);
    assert_eq!(e.decide("r", now, Priority::Normal).reason, atrion_core::Reason::Overloaded);
    // The cluster's scar heals at the local rate: one half-life later, half the excess.
    let half_life = std::f64::consts::LN_2 / e.config().scar_decay;
    let later = Timestamp::from_nanos(now.as_nanos() + (half_life * 1e9) as u64);
    let healed = e.decide("r", later, Priority::Critical).resistance;
    assert!((healed - (10.0 + g * 30.0)).abs() < 1e-6, "{healed}");
    // A report counts the blend in its trip decision: a cluster scar of 100 trips the route.
    e.set_cluster("r", Some(100.0), later).unwrap();
    let s = e.report("r", healthy(), later);
    assert_eq!(s.mode, Mode::Open, "R = 10 + 0.3 * 100 >= 30");
    // Cleared: back to the local view.
    e.set_cluster("r", None, later).unwrap();
    assert_eq!(e.resistance("r", later), None, "open routes have no selectable resistance");
}

#[test]
fn dirty_routes_are_taken_once_with_their_local_contribution() {
    let e = engine(Model::Default);
    e.report("a", outage(), ms(0));
    e.report("a", outage(), ms(500));
    e.report("b", healthy(), ms(500));
    e.set_cluster("c", Some(5.0), ms(500)).unwrap(); // remote-only: not dirty
    let mut seen = Vec::new();
    e.take_dirty(|route, c| seen.push((route.to_owned(), c)));
    seen.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(seen.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    assert!(seen[0].1.scar > 0.0 && seen[0].1.at == ms(500));
    let mut again = 0;
    e.take_dirty(|_, _| again += 1);
    assert_eq!(again, 0, "taken once");
}

#[test]
fn warm_start_seeds_healed_local_scar() {
    let e = engine(Model::Default);
    let half_life = std::f64::consts::LN_2 / e.config().scar_decay;
    let at = Timestamp::from_secs(100);
    let now = Timestamp::from_nanos(at.as_nanos() + (half_life * 1e9) as u64);
    e.warm_start("r", 40.0, at, now).unwrap();
    let v = e.snapshot("r").unwrap();
    assert!((v.scar - 20.0).abs() < 1e-6, "{}", v.scar);
    assert!((v.resistance - 30.0).abs() < 1e-6);
    // Never lowers what the route already has.
    e.warm_start("r", 1.0, now, now).unwrap();
    assert!((e.snapshot("r").unwrap().scar - 20.0).abs() < 1e-6);
}

#[test]
fn cluster_contributions_heal_by_the_routes_own_law_and_the_largest_wins() {
    let e = engine(Model::Default);
    let fast = PhysicsConfig::default().with_scar_half_life(Duration::from_secs(1));
    e.set_route_config("fast/*", Some(fast)).unwrap();
    let now = ms(10_000);
    // Two contributions: 10 ohms one half-life old, 4 ohms fresh.
    e.merge_cluster("fast/a", [(10.0, 1.0), (4.0, 0.0), (f64::NAN, 0.0), (-3.0, 0.0)], now).unwrap();
    let s = e.cluster_scar("fast/a", now).unwrap();
    assert!((s - 5.0).abs() < 1e-9, "{s}");
    // The engine's default law elsewhere: half-life 3 s.
    e.merge_cluster("slow", [(10.0, 3.0)], now).unwrap();
    assert!((e.cluster_scar("slow", now).unwrap() - 5.0).abs() < 1e-9);
    // Nothing live: the view is cleared.
    e.merge_cluster("slow", [], now).unwrap();
    assert_eq!(e.cluster_scar("slow", now), None);
    assert_eq!(atrion_core::heal(8.0, std::f64::consts::LN_2, 1.0), 4.0);
}

#[test]
fn an_operator_holds_a_route_open_or_closed_and_reset_forgets_what_it_learned() {
    for model in [Model::Default, Model::Reference] {
        let e = Engine::with_observer(
            PhysicsConfig::for_model(model),
            limits(2, Duration::from_secs(1)),
            CollectorObserver::new(),
        )
        .unwrap();
        // Held open: a healthy route sheds everything, with a retry hint, and keeps learning.
        drive_collector(&e, "a", 0.0, 10.0, healthy);
        e.hold("a", Hold::Open, ms(10_000)).unwrap();
        let d = e.decide("a", ms(10_000), Priority::Critical);
        assert_eq!((d.verdict, d.reason), (Verdict::Shed, Reason::Held), "{model:?}");
        assert!(d.retry_after.is_some());
        let updates = e.snapshot("a").unwrap().updates;
        e.report("a", healthy(), ms(10_010));
        assert_eq!(e.snapshot("a").unwrap().updates, updates + 1);
        // Held closed: an open (failing) route admits everything.
        let opened = drive_collector(&e, "b", 0.0, 30.0, outage);
        assert!(opened, "{model:?}: the outage opens the route");
        e.hold("b", Hold::Closed, ms(30_000)).unwrap();
        let d = e.decide("b", ms(30_000), Priority::Bulk);
        assert_eq!((d.verdict, d.reason), (Verdict::Admit, Reason::Held));
        assert_eq!(e.held("b"), Ok(Hold::Closed));
        // Released: the physics decides again.
        e.hold("b", Hold::Released, ms(30_000)).unwrap();
        assert_ne!(e.decide("b", ms(30_000), Priority::Bulk).reason, Reason::Held);
        // Reset: what the route learned is gone; it is new again.
        assert!(e.snapshot("b").unwrap().scar > 0.0);
        e.reset("b", ms(30_001)).unwrap();
        let v = e.snapshot("b").unwrap();
        assert_eq!((v.mode, v.scar, v.updates), (Mode::Bootstrap, 0.0, 0));
        let d = e.decide("b", ms(30_002), Priority::Normal);
        assert_eq!(d.verdict, Verdict::Admit, "{model:?} {d:?}");
        assert!(matches!(e.reset("nope", ms(0)), Err(EngineError::UnknownRoute { .. })));
        assert!(matches!(e.hold("", Hold::Open, ms(0)), Err(EngineError::InvalidRouteId { len: 0 })));
        // A full table evicts idle routes, but not a held one.
        e.decide("c", ms(100_000), Priority::Normal);
        assert_eq!(e.held("a"), Ok(Hold::Open), "{model:?}: held routes are not evicted");
        // A full table with nothing idle: a new route is held all the same (the reserve).
        e.hold("d", Hold::Open, ms(100_000)).unwrap();
        assert_eq!(e.held("d"), Ok(Hold::Open), "{model:?}");
        assert!(e.status("b").is_err(), "{model:?}: an idle released route is");
    }
}

/// As `drive`, on an engine with a collector: whether the route opened.
fn drive_collector(e: &Engine<CollectorObserver>, route: &str, from: f64, to: f64, f: fn() -> Telemetry) -> bool {
    let mut opened = false;
    let mut t = from;
    while t < to {
        let status = e.report(route, f(), Timestamp::from_nanos((t * 1e9) as u64));
        opened |= status.mode == Mode::Open;
        t += 0.01;
    }
    opened
}

#[test]
fn no_report_is_lost_while_a_routes_config_changes() {
    let e = Arc::new(engine(Model::Default));
    let slow = PhysicsConfig::default().with_scar_half_life(Duration::from_secs(30));
    const REPORTS: u64 = 20_000;
    std::thread::scope(|s| {
        let reporter = s.spawn(|| {
            let t = Telemetry::new(20.0, 0.0, 0.3).unwrap();
            for k in 0..REPORTS {
                e.report("api/x", t, ms(k));
            }
        });
        // Swap the route's physics back and forth for as long as the reports go on.
        let mut swaps = 0u64;
        while !reporter.is_finished() || swaps == 0 {
            let config = if swaps % 2 == 0 { Some(slow.clone()) } else { None };
            e.set_route_config("api/*", config).unwrap();
            swaps += 1;
        }
    });
    // Every report reached the route's one cell: none landed in a cell that was replaced.
    assert_eq!(e.snapshot("api/x").unwrap().updates, REPORTS);
    assert_eq!(e.stats().routes, 1);
}

#[test]
fn an_owned_handle_keeps_its_route_and_engine() {
    let e = Arc::new(engine(Model::Default));
    let h = e.owned_handle("api/owned", ms(0));
    assert_eq!(h.id(), "api/owned");
    let t = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    for k in 0..50 {
        assert!(h.decide(ms(k), Priority::Normal).is_admitted());
        h.report(t, ms(k));
    }
    // The handle and the engine see the same route.
    assert_eq!(e.snapshot("api/owned").unwrap().updates, 50);
    assert_eq!(h.status(), e.status("api/owned").unwrap());
    // The handle keeps the engine alive on its own.
    drop(e);
    h.report(t, ms(60));
    assert_eq!(h.status().mode, Mode::Operational);
}

fn policy(pattern: &str, config: Option<PhysicsConfig>, hold: Hold) -> atrion_core::RoutePolicy {
    atrion_core::RoutePolicy { pattern: pattern.into(), config, hold }
}

#[test]
fn policies_hot_patch_routes_that_keep_scar_mode_and_tuner() {
    let e =
        Engine::with_observer(PhysicsConfig::default(), limits(16, Duration::from_secs(60)), CollectorObserver::new())
            .unwrap();
    // A route learns its normal, then fails and trips.
    drive_collector(&e, "GET /pay", 0.0, 10.0, healthy);
    assert!(drive_collector(&e, "GET /pay", 10.0, 13.0, outage), "the outage trips the route");
    let before = e.snapshot("GET /pay").unwrap();
    assert_eq!(before.mode, Mode::Open);
    let mut patched = PhysicsConfig::default();
    patched.tuner.k = 5.0;
    e.set_policies(vec![policy("GET /*", Some(patched.clone()), Hold::Released)]).unwrap();
    assert_eq!(e.route_config("GET /pay").tuner.k, 5.0, "the new constants are in force");
    let after = e.snapshot("GET /pay").unwrap();
    assert_eq!((after.mode, after.scar, after.updates), (before.mode, before.scar, before.updates));
    assert_eq!((after.tuner_mean, after.tuner_var), (before.tuner_mean, before.tuner_var));
    // A bad entry refuses the whole set: what was in force stays.
    let mut bad = PhysicsConfig::default();
    bad.tuner.k = -1.0;
    assert!(
        e.set_policies(vec![policy("GET /a", None, Hold::Open), policy("GET /b", Some(bad), Hold::Released)]).is_err()
    );
    assert_eq!(e.route_config("GET /pay").tuner.k, 5.0);
    assert_eq!(e.held("GET /pay"), Ok(Hold::Released));
}

#[test]
fn the_most_specific_policy_wins_and_new_routes_take_their_hold() {
    let e = engine(Model::Default);
    let mut k4 = PhysicsConfig::default();
    k4.tuner.k = 4.0;
    e.set_policies(vec![
        policy("GET /*", Some(k4), Hold::Released),
        policy("GET /admin/*", None, Hold::Open),
        policy("GET /admin/health", None, Hold::Closed),
    ])
    .unwrap();
    // Routes that appear after the policies take them when they appear.
    assert_eq!(e.decide("GET /admin/users", ms(0), Priority::Critical).reason, Reason::Held);
    assert_eq!(e.held("GET /admin/users"), Ok(Hold::Open));
    assert_eq!(e.held("GET /admin/health"), Err(EngineError::UnknownRoute { route: "GET /admin/health".into() }));
    assert!(e.decide("GET /admin/health", ms(0), Priority::Bulk).is_admitted());
    assert_eq!(e.held("GET /admin/health"), Ok(Hold::Closed));
    assert_eq!(e.route_config("GET /users").tuner.k, 4.0);
    assert_eq!(e.route_config("GET /admin/users").tuner.k, PhysicsConfig::default().tuner.k, "the whole policy wins");
    assert_eq!(e.route_pattern("GET /admin/users").as_deref(), Some("GET /admin/*"));
    assert_eq!(e.route_pattern("GET /admin/health").as_deref(), Some("GET /admin/health"));
    assert_eq!(e.route_pattern("POST /x"), None, "the defaults");
    // An operator's own hold stays while its policy's hold does not change.
    e.hold("GET /users", Hold::Open, ms(1)).unwrap();
    e.set_policies(vec![policy("GET /*", None, Hold::Released), policy("GET /admin/*", None, Hold::Released)]).unwrap();
    assert_eq!(e.held("GET /users"), Ok(Hold::Open));
    assert_eq!(e.held("GET /admin/users"), Ok(Hold::Released), "the policy's hold is lifted");
    assert_eq!(e.held("GET /admin/health"), Ok(Hold::Released));
    assert_eq!(e.route_config("GET /users").tuner.k, PhysicsConfig::default().tuner.k);
}

#[test]
fn a_shadow_route_never_sheds_and_counts_what_it_would_have_shed() {
    for model in [Model::Default, Model::Reference] {
        let e = Engine::with_observer(
            PhysicsConfig::for_model(model),
            limits(4, Duration::from_secs(60)),
            CollectorObserver::new(),
        )
        .unwrap();
        e.set_policies(vec![policy("pay", None, Hold::Shadow)]).unwrap();
        drive_collector(&e, "pay", 0.0, 5.0, healthy);
        assert!(drive_collector(&e, "pay", 5.0, 8.0, outage), "{model:?}: the physics trips the route");
        let mut shadowed = 0;
        for i in 0..100 {
            let d = e.decide("pay", ms(8_000 + i), Priority::Bulk);
            assert!(d.is_admitted(), "{model:?}: {d:?}");
            shadowed += u32::from(d.reason == Reason::Shadow);
        }
        assert!(shadowed > 90, "{model:?}: the would-be sheds are marked: {shadowed}");
        assert_eq!(e.shadowed("pay"), Ok(shadowed));
        // Out of shadow, the same route sheds.
        e.set_policies(Vec::new()).unwrap();
        assert!(!e.decide("pay", ms(8_200), Priority::Bulk).is_admitted(), "{model:?}");
    }
}

#[test]
fn routes_held_by_a_policy_pattern_are_evicted_when_idle_and_come_back_held() {
    let e = Engine::with_observer(PhysicsConfig::default(), limits(4, Duration::from_secs(1)), ()).unwrap();
    e.set_policies(vec![policy("GET /admin/*", None, Hold::Open)]).unwrap();
    e.hold("GET /mine", Hold::Open, ms(0)).unwrap();
    for i in 0..3 {
        e.decide(&format!("GET /admin/{i}"), ms(0), Priority::Normal);
    }
    // The table is full; later, fresh ids under the pattern evict the idle policy-held ones,
    // and the operator's own hold stays.
    for i in 3..10 {
        let d = e.decide(&format!("GET /admin/{i}"), ms(10_000 + i * 2_000), Priority::Normal);
        assert_eq!(d.reason, Reason::Held, "each new route takes the policy's hold");
    }
    assert!(e.stats().evicted > 0);
    assert_eq!(e.held("GET /mine"), Ok(Hold::Open));
    assert_eq!(e.held("GET /admin/9"), Ok(Hold::Open));
}
