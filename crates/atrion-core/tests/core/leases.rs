//! Task leases: admitted like a request, counted while live, reported when they end,
//! aborted when they overrun or miss their heartbeats; all on the engine's passed-in time.

use std::time::Duration;

use atrion_core::{
    AbortHandle, AbortReason, CollectorObserver, Engine, EngineLimits, Hold, LeaseError, LeaseGrant, LeaseOptions,
    LeaseOutcome, LeaseStart, OwnedEvent, PhysicsConfig, Priority, Profile, Timestamp,
};

use crate::ms;

fn engine() -> Engine<CollectorObserver> {
    Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), CollectorObserver::new()).unwrap()
}

fn granted(start: Result<LeaseStart, LeaseError>) -> LeaseGrant {
    match start.unwrap() {
        LeaseStart::Granted(g) => g,
        LeaseStart::Shed(d) => panic!("shed: {d:?}"),
    }
}

/// The lease events and the route's reports, in order.
fn lease_events(e: &Engine<CollectorObserver>) -> Vec<String> {
    e.observer()
        .drain()
        .into_iter()
        .filter_map(|ev| match ev {
            OwnedEvent::LeaseStarted { route, .. } => Some(format!("start {route}")),
            OwnedEvent::LeaseEnded { route, outcome, duration, .. } => {
                Some(format!("end {route} {} {}ms", outcome.name(), duration.as_millis()))
            }
            OwnedEvent::Update { route, .. } => Some(format!("report {route}")),
            _ => None,
        })
        .collect()
}

#[test]
fn a_completed_lease_is_reported_and_stops_counting() {
    let e = engine();
    let g = granted(e.start_lease("jobs", ms(1_000), LeaseOptions::new()));
    assert_eq!(g.profile, "standard");
    assert_eq!(g.deadlines.expires_at, ms(31_000));
    assert_eq!(g.deadlines.heartbeat_by, None);
    assert_eq!(e.active_leases("jobs"), 1);
    assert_eq!(e.lease_count(), 1);
    assert_eq!(e.complete_lease(g.id, true, ms(3_500)), Ok(LeaseOutcome::Completed));
    assert_eq!(e.active_leases("jobs"), 0);
    assert_eq!(lease_events(&e), ["start jobs", "report jobs", "end jobs completed 2500ms"]);
    // Done is done: the id names nothing now.
    assert_eq!(e.complete_lease(g.id, true, ms(4_000)), Err(LeaseError::Gone { id: g.id }));
    assert_eq!(e.heartbeat_lease(g.id, ms(4_000)), Err(LeaseError::Gone { id: g.id }));
    assert!(!g.abort.is_aborted());
}

#[test]
fn a_lease_that_overruns_is_aborted_reported_as_a_failure_and_removed() {
    let e = engine();
    let (tx, rx) = std::sync::mpsc::channel();
    let abort = AbortHandle::with_callback(move |r| tx.send(r).unwrap());
    let opts = LeaseOptions::new().max_duration(Duration::from_secs(10)).abort(abort);
    let g = granted(e.start_lease("render", ms(0), opts));
    let other = granted(e.start_lease("render", ms(0), LeaseOptions::new()));
    assert_eq!(e.active_leases("render"), 2);
    assert_eq!(e.next_lease_deadline(), Some(ms(10_000)));
    // At its deadline it is still live; past it, the sweep aborts it.
    assert_eq!(e.sweep_leases(ms(10_000)), 0);
    assert_eq!(e.sweep_leases(ms(10_001)), 1);
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [AbortReason::MaxDuration]);
    assert_eq!(g.abort.reason(), Some(AbortReason::MaxDuration));
    assert_eq!(e.active_leases("render"), 1);
    assert_eq!(lease_events(&e), ["start render", "start render", "report render", "end render max_duration 10000ms"]);
    assert_eq!(e.heartbeat_lease(g.id, ms(10_002)), Err(LeaseError::Gone { id: g.id }));
    // The failure was the route's telemetry: one update, in error.
    assert!(e.snapshot("render").unwrap().updates == 1);
    assert!(!other.abort.is_aborted());
}

#[test]
fn a_lease_that_misses_its_heartbeats_is_aborted() {
    let e = engine();
    let opts = LeaseOptions::new().profile(Profile::Heavy).abort(AbortHandle::new());
    let g = granted(e.start_lease("train", ms(0), opts));
    // Heavy: a heartbeat every 5 s, three missed in a row abort it.
    assert_eq!(g.heartbeat, Some(Duration::from_secs(5)));
    assert_eq!(g.deadlines.heartbeat_by, Some(ms(15_000)));
    assert_eq!(g.deadlines.expires_at, ms(300_000));
    let d = e.heartbeat_lease(g.id, ms(12_000)).unwrap();
    assert_eq!(d.heartbeat_by, Some(ms(27_000)));
    // The heap still holds the old deadline: passing it moves the lease, does not abort it.
    assert_eq!(e.sweep_leases(ms(20_000)), 0);
    assert!(!g.abort.is_aborted());
    assert_eq!(e.sweep_leases(ms(27_001)), 1);
    assert_eq!(g.abort.reason(), Some(AbortReason::MissedHeartbeat));
    assert_eq!(e.active_leases("train"), 0);
    let events = lease_events(&e);
    assert_eq!(events.last().unwrap(), "end train missed_heartbeat 27000ms");
    assert!(events.contains(&"report train".to_owned()));
}

#[test]
fn an_overdue_lease_is_aborted_by_the_call_that_finds_it_whether_or_not_a_sweep_ran() {
    let e = engine();
    let g = granted(e.start_lease("r", ms(0), LeaseOptions::new().max_duration(Duration::from_secs(1))));
    assert_eq!(
        e.complete_lease(g.id, true, ms(1_500)),
        Err(LeaseError::Aborted { id: g.id, reason: AbortReason::MaxDuration })
    );
    assert!(g.abort.is_aborted());
    let h = granted(e.start_lease("r", ms(2_000), LeaseOptions::new().heartbeat(Duration::from_millis(100))));
    assert_eq!(
        e.heartbeat_lease(h.id, ms(2_301)),
        Err(LeaseError::Aborted { id: h.id, reason: AbortReason::MissedHeartbeat })
    );
    assert_eq!(e.lease_count(), 0);
}

#[test]
fn a_cancelled_lease_reports_nothing() {
    let e = engine();
    let g = granted(e.start_lease("r", ms(0), LeaseOptions::new()));
    e.cancel_lease(g.id, ms(500)).unwrap();
    assert_eq!(e.active_leases("r"), 0);
    assert_eq!(lease_events(&e), ["start r", "end r cancelled 500ms"]);
    assert!(!g.abort.is_aborted());
    // No failure was learned: the route saw no telemetry.
    assert_eq!(e.snapshot("r").unwrap().updates, 0);
}

#[test]
fn heavy_work_without_an_abort_handle_is_refused() {
    let e = engine();
    for p in [Profile::Heavy, Profile::Extreme] {
        let err = e.start_lease("gpu", ms(0), LeaseOptions::new().profile(p)).unwrap_err();
        assert_eq!(err, LeaseError::AbortRequired { route: "gpu".into(), profile: p.name() });
    }
    // Nothing was decided nor counted.
    assert_eq!(e.lease_count(), 0);
    assert!(lease_events(&e).is_empty());
    // A route profile that requires one applies to leases without their own profile.
    e.set_route_profile("gpu", Some(Profile::Extreme.config())).unwrap();
    assert!(matches!(e.start_lease("gpu", ms(0), LeaseOptions::new()), Err(LeaseError::AbortRequired { .. })));
    let g = granted(e.start_lease("gpu", ms(0), LeaseOptions::new().abort(AbortHandle::new())));
    assert_eq!((g.profile, g.deadlines.expires_at), ("extreme", ms(3_600_000)));
}

#[test]
fn a_lease_is_decided_like_a_request() {
    let e = engine();
    e.hold("down", Hold::Open, ms(0)).unwrap();
    match e.start_lease("down", ms(0), LeaseOptions::new().priority(Priority::High)).unwrap() {
        LeaseStart::Shed(d) => assert!(d.retry_after.is_some()),
        LeaseStart::Granted(_) => panic!("a held-open route admitted a lease"),
    }
    assert_eq!(e.active_leases("down"), 0);
}

#[test]
fn live_leases_are_bounded() {
    let mut limits = EngineLimits::default();
    limits.max_leases = 2;
    let e = Engine::with_observer(PhysicsConfig::default(), limits, CollectorObserver::new()).unwrap();
    let a = granted(e.start_lease("a", ms(0), LeaseOptions::new()));
    granted(e.start_lease("b", ms(0), LeaseOptions::new()));
    assert_eq!(e.start_lease("c", ms(0), LeaseOptions::new()).unwrap_err(), LeaseError::TooMany { max: 2 });
    e.complete_lease(a.id, true, ms(1)).unwrap();
    granted(e.start_lease("c", ms(2), LeaseOptions::new()));
}

#[test]
fn many_short_leases_of_long_deadlines_keep_the_registry_small() {
    let e = engine();
    let opts = || LeaseOptions::new().profile(Profile::Extreme).abort(AbortHandle::new());
    let keep = granted(e.start_lease("r", ms(0), opts()));
    for i in 0..10_000 {
        let g = granted(e.start_lease("r", ms(i), opts()));
        e.complete_lease(g.id, true, ms(i + 1)).unwrap();
    }
    assert_eq!(e.lease_count(), 1);
    assert_eq!(e.active_leases("r"), 1);
    // Stale heap entries were dropped: the next deadline is the live lease's.
    assert_eq!(e.next_lease_deadline(), Some(ms(30_000)));
    assert_eq!(e.lease_deadlines(keep.id).unwrap().heartbeat_by, Some(ms(30_000)));
}

#[test]
fn a_profile_seeds_a_new_routes_normal_and_leaves_a_learned_one_alone() {
    let e = engine();
    e.report("learned", crate::healthy(), ms(0));
    e.decide("new", ms(0), Priority::Normal);
    let heavy = Profile::Heavy.config();
    e.set_route_profile("new", Some(heavy.clone())).unwrap();
    e.set_route_profile("learned", Some(heavy.clone())).unwrap();
    let new = e.snapshot("new").unwrap();
    assert_eq!((new.normal_samples, new.normal_mean), (1, 5_000.0));
    assert_eq!(e.snapshot("learned").unwrap().normal_mean, 20.0);
    // The profile's physics: the normal may learn tasks up to the profile's longest.
    assert_eq!(e.route_config("new").normal.ceiling_ms, 300_000.0);
    assert_eq!(e.route_profile("new"), Some(heavy));
    // A custom profile on a glob applies to the leases of every route it matches.
    let mut custom = Profile::Standard.config().custom();
    custom.max_duration = Duration::from_secs(90);
    e.set_route_profile("batch/*", Some(custom)).unwrap();
    let g = granted(e.start_lease("batch/nightly", ms(0), LeaseOptions::new()));
    assert_eq!((g.profile, g.deadlines.expires_at), ("custom", ms(90_000)));
    e.set_route_profile("batch/*", None).unwrap();
    assert_eq!(e.route_profile("batch/nightly"), None);
}

#[test]
fn leases_at_shutdown_are_aborted_without_a_report() {
    let e = engine();
    let g = granted(e.start_lease("r", ms(0), LeaseOptions::new()));
    assert_eq!(e.abort_leases(ms(10)), 1);
    assert_eq!(g.abort.reason(), Some(AbortReason::Shutdown));
    assert_eq!(lease_events(&e), ["start r", "end r shutdown 10ms"]);
    let _ = Timestamp::ZERO;
}

/// One operation on the registry, at a time offset.
#[derive(Debug, Clone)]
enum Op {
    Start { route: u8, max_ms: u64, beat_ms: Option<u64> },
    Heartbeat(usize),
    Complete(usize, bool),
    Cancel(usize),
    Sweep,
}

fn op() -> impl proptest::strategy::Strategy<Value = (u64, Op)> {
    use proptest::prelude::*;
    let op = prop_oneof![
        3 => (0u8..3, 1u64..2_000, proptest::option::of(1u64..500))
            .prop_map(|(route, max_ms, beat_ms)| Op::Start { route, max_ms, beat_ms }),
        3 => (0usize..16).prop_map(Op::Heartbeat),
        2 => (0usize..16, any::<bool>()).prop_map(|(i, ok)| Op::Complete(i, ok)),
        1 => (0usize..16).prop_map(Op::Cancel),
        2 => Just(Op::Sweep),
    ];
    (0u64..400, op)
}

proptest::proptest! {
    /// Against a plain model (each lease's deadlines, checked by brute force): every lease
    /// ends once, exactly when the model says, with the outcome it says; the counts per
    /// route and in all always match.
    #[test]
    fn the_registry_matches_a_brute_force_model(ops in proptest::collection::vec(op(), 1..120)) {
        let e = engine();
        // (id, route, expires, beat interval, heartbeat_by, live)
        let mut model: Vec<(atrion_core::LeaseId, String, u64, Option<u64>, u64, bool)> = Vec::new();
        let mut now = 0u64;
        let overdue = |l: &(atrion_core::LeaseId, String, u64, Option<u64>, u64, bool), now: u64| {
            let beat = l.3.is_some() && now > l.4 && l.4 < l.2;
            if beat { Some(AbortReason::MissedHeartbeat) } else { (now > l.2).then_some(AbortReason::MaxDuration) }
        };
        for (dt, op) in ops {
            now += dt;
            let t = ms(now);
            match op {
                Op::Start { route, max_ms, beat_ms } => {
                    // Starting sweeps first.
                    for l in model.iter_mut().filter(|l| l.5) {
                        if overdue(l, now).is_some() { l.5 = false; }
                    }
                    let mut o = LeaseOptions::new().max_duration(Duration::from_millis(max_ms));
                    if let Some(b) = beat_ms.filter(|b| *b <= max_ms) {
                        o = o.heartbeat(Duration::from_millis(b));
                    }
                    let route = format!("r{route}");
                    // Expired leases are failures: a route may come to shed new ones.
                    let LeaseStart::Granted(g) = e.start_lease(&route, t, o).unwrap() else { continue };
                    let beat = beat_ms.filter(|b| *b <= max_ms);
                    model.push((g.id, route, now + max_ms, beat, beat.map_or(u64::MAX, |b| now + 3 * b), true));
                }
                Op::Heartbeat(i) | Op::Complete(i, _) | Op::Cancel(i) if i >= model.len() => {}
                Op::Heartbeat(i) => {
                    let l = &mut model[i];
                    let got = e.heartbeat_lease(l.0, t);
                    match (l.5, overdue(l, now)) {
                        (false, _) => proptest::prop_assert_eq!(got, Err(LeaseError::Gone { id: l.0 })),
                        (true, Some(reason)) => {
                            proptest::prop_assert_eq!(got, Err(LeaseError::Aborted { id: l.0, reason }));
                            l.5 = false;
                        }
                        (true, None) => {
                            if let Some(b) = l.3 { l.4 = now + 3 * b; }
                            proptest::prop_assert!(got.is_ok());
                        }
                    }
                }
                Op::Complete(i, _) | Op::Cancel(i) => {
                    let ok = matches!(op, Op::Complete(_, true));
                    let l = &mut model[i];
                    let got = match op {
                        Op::Cancel(_) => e.cancel_lease(l.0, t).map(|()| LeaseOutcome::Cancelled),
                        _ => e.complete_lease(l.0, ok, t),
                    };
                    match (l.5, overdue(l, now)) {
                        (false, _) => proptest::prop_assert_eq!(got, Err(LeaseError::Gone { id: l.0 })),
                        (true, Some(reason)) => proptest::prop_assert_eq!(got, Err(LeaseError::Aborted { id: l.0, reason })),
                        (true, None) => proptest::prop_assert!(got.is_ok()),
                    }
                    l.5 = false;
                }
                Op::Sweep => {
                    let expected = model.iter().filter(|l| l.5 && overdue(l, now).is_some()).count();
                    proptest::prop_assert_eq!(e.sweep_leases(t), expected);
                    for l in model.iter_mut().filter(|l| l.5) {
                        if overdue(l, now).is_some() { l.5 = false; }
                    }
                }
            }
            let live = model.iter().filter(|l| l.5).count();
            proptest::prop_assert_eq!(e.lease_count(), live);
            for r in ["r0", "r1", "r2"] {
                let n = model.iter().filter(|l| l.5 && l.1 == r).count();
                proptest::prop_assert_eq!(e.active_leases(r) as usize, n);
            }
        }
        // Every lease that started ended at most once.
        let events = e.observer().drain();
        let started = events.iter().filter(|ev| matches!(ev, OwnedEvent::LeaseStarted { .. })).count();
        let ended = events.iter().filter(|ev| matches!(ev, OwnedEvent::LeaseEnded { .. })).count();
        proptest::prop_assert_eq!(started, model.len());
        proptest::prop_assert_eq!(ended, model.iter().filter(|l| !l.5).count());
    }
}

#[test]
fn a_panicking_abort_callback_does_not_stop_the_sweep_of_the_others() {
    let e = engine();
    let opts = |abort: AbortHandle| LeaseOptions::new().max_duration(Duration::from_secs(1)).abort(abort);
    let bad = granted(e.start_lease("render", ms(0), opts(AbortHandle::with_callback(|_| panic!("a holder's bug")))));
    let (tx, rx) = std::sync::mpsc::channel();
    let good = granted(e.start_lease("render", ms(0), opts(AbortHandle::with_callback(move |r| tx.send(r).unwrap()))));
    // Both are due at once; the first one's callback panics.
    let swept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.sweep_leases(ms(1_001))));
    assert_eq!(swept.ok(), Some(2), "the sweep went on past the panic");
    assert_eq!(bad.abort.reason(), Some(AbortReason::MaxDuration));
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [AbortReason::MaxDuration]);
    assert_eq!(e.active_leases("render"), 0);
    assert_eq!(e.snapshot("render").unwrap().updates, 2, "both expiries were reported");
    assert!(good.abort.is_aborted());
}

#[test]
fn a_route_with_a_live_lease_is_not_evicted_as_idle() {
    let mut limits = EngineLimits::default();
    limits.max_routes = 1;
    limits.idle_timeout = Duration::from_secs(10);
    let e = Engine::with_observer(PhysicsConfig::default(), limits, CollectorObserver::new()).unwrap();
    let g = granted(e.start_lease("jobs", ms(0), LeaseOptions::new().max_duration(Duration::from_secs(60))));
    // Past the idle timeout, a new route asks for room: the route working on a lease keeps it.
    e.decide("other", ms(20_000), Priority::Normal);
    assert!(e.snapshot("jobs").is_ok(), "the route with work in flight was evicted");
    assert_eq!(e.complete_lease(g.id, false, ms(30_000)), Ok(LeaseOutcome::Failed));
    assert_eq!(e.snapshot("jobs").unwrap().updates, 1, "the completion reached the route");
    // Once its lease ended, it may go like any idle route.
    e.decide("other", ms(45_000), Priority::Normal);
    assert!(e.snapshot("jobs").is_err());
}

#[test]
fn a_heartbeat_deadline_is_never_past_the_expiry() {
    let e = engine();
    // Three missed heartbeats of 5 s outlast a lease of 10 s.
    let opts = LeaseOptions::new().max_duration(Duration::from_secs(10)).heartbeat(Duration::from_secs(5));
    let g = granted(e.start_lease("short", ms(0), opts));
    assert_eq!(g.deadlines.heartbeat_by, Some(ms(10_000)), "{:?}", g.deadlines);
    let d = e.heartbeat_lease(g.id, ms(8_000)).unwrap();
    assert_eq!(d, atrion_core::LeaseDeadlines { expires_at: ms(10_000), heartbeat_by: Some(ms(10_000)) });
    // Past both, it ran out: the expiry is the reason.
    assert_eq!(e.sweep_leases(ms(10_001)), 1);
    assert_eq!(g.abort.reason(), Some(AbortReason::MaxDuration));
}

#[test]
fn a_hold_on_a_full_table_evicts_a_route_without_leases_first_and_still_finds_room() {
    let mut limits = EngineLimits::default();
    limits.max_routes = 2;
    limits.held_reserve = 0;
    let e = Engine::with_observer(PhysicsConfig::default(), limits, CollectorObserver::new()).unwrap();
    let _g = granted(e.start_lease("jobs", ms(0), LeaseOptions::new().max_duration(Duration::from_secs(600))));
    e.decide("web", ms(1_000), Priority::Normal);
    // The least valuable route is the one no lease works on, though it was seen last.
    e.hold("ops", Hold::Open, ms(2_000)).unwrap();
    assert!(e.snapshot("jobs").is_ok() && e.snapshot("web").is_err());
    // When only working routes are left, a hold still finds room.
    e.hold("ops2", Hold::Open, ms(3_000)).unwrap();
    assert!(e.snapshot("jobs").is_err() && e.snapshot("ops2").is_ok());
}
