//! What the state layer keeps across a restart: the operator's hold as `take_dirty` reports
//! it, the hold hook, and `resume_open` bringing back an open interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use atrion_core::{Engine, Hold, Mode, PhysicsConfig, Priority, Reason, RoutePolicy, Timestamp};

use crate::healthy;

fn taken(engine: &Engine) -> Vec<(String, Mode, Hold)> {
    let mut v = Vec::new();
    engine.take_dirty(|route, c| v.push((route.to_owned(), c.mode, c.hold)));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_hold_is_collected_at_once_and_a_policys_hold_is_not_the_operators() {
    let engine = Engine::new(PhysicsConfig::default()).unwrap();
    let told = Arc::new(AtomicU32::new(0));
    let t = told.clone();
    engine.on_hold(Some(Arc::new(move || {
        t.fetch_add(1, Relaxed);
    })));
    let now = Timestamp::from_millis(1);
    engine.hold("a", Hold::Open, now).unwrap();
    engine.hold("b", Hold::Closed, now).unwrap();
    assert_eq!(told.load(Relaxed), 2);
    assert_eq!(
        taken(&engine),
        [("a".into(), Mode::Bootstrap, Hold::Open), ("b".into(), Mode::Bootstrap, Hold::Closed)],
        "held routes are dirty without a report"
    );
    assert!(taken(&engine).is_empty());
    // A hold its policy gives comes back with the policy: it is not the operator's.
    engine.set_policies(vec![RoutePolicy { pattern: "p*".into(), config: None, hold: Hold::Open }]).unwrap();
    engine.report("p1", healthy(), now);
    assert_eq!(engine.held("p1").unwrap(), Hold::Open);
    assert_eq!(taken(&engine), [("p1".into(), Mode::Bootstrap, Hold::Released)]);
    engine.hold("p1", Hold::Closed, now).unwrap();
    assert_eq!(taken(&engine), [("p1".into(), Mode::Bootstrap, Hold::Closed)]);
    engine.on_hold(None);
    engine.hold("c", Hold::Open, now).unwrap();
    assert_eq!(told.load(Relaxed), 3, "removed");
}

#[test]
fn a_resumed_route_is_open_for_what_is_left_then_half_open() {
    let engine = Engine::new(PhysicsConfig::default()).unwrap();
    let h = engine.config().half_open.clone();
    let now = Timestamp::from_millis(1_000);
    engine.resume_open("r", Duration::from_secs(1), now).unwrap();
    assert_eq!(engine.status("r").unwrap().mode, Mode::Open);
    let d = engine.decide("r", now, Priority::Normal);
    assert_eq!((d.is_admitted(), d.reason, d.retry_after), (false, Reason::Open, Some(Duration::from_secs(1))));
    // Over: half-open, the first probes admitted, then the quota sheds.
    let later = now.saturating_add(Duration::from_secs(1));
    let admitted = (0..100).filter(|_| engine.decide("r", later, Priority::Normal).is_admitted()).count();
    assert_eq!(admitted as u32, h.probe_min);
    assert_eq!(engine.status("r").unwrap().mode, Mode::HalfOpen);
    // A deadline beyond `open_max` (a wall clock that jumped) is cut to it.
    engine.resume_open("far", Duration::from_secs(1_000_000), now).unwrap();
    assert_eq!(engine.status("far").unwrap().open_until, now.saturating_add(h.open_max));
    // Nothing left: half-open at once, with the first probe quota.
    engine.resume_open("ended", Duration::ZERO, now).unwrap();
    assert_eq!(engine.status("ended").unwrap().mode, Mode::HalfOpen);
    let d = engine.decide("ended", now, Priority::Normal);
    assert_eq!((d.is_admitted(), d.reason), (true, Reason::Probe));
    // Healthy probes close it as they would any half-open route.
    let mut t = now;
    for _ in 0..200 {
        t = t.saturating_add(Duration::from_millis(50));
        if engine.decide("ended", t, Priority::Normal).is_admitted() {
            engine.report("ended", healthy(), t);
        }
    }
    assert_eq!(engine.status("ended").unwrap().mode, Mode::Operational);
}
