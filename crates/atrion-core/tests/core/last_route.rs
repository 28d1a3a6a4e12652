//! Deciding and reporting by name through the thread's last-route cache: it never stands
//! for anything the table would not give (a removed route, another engine's, another id's).

use std::sync::Arc;
use std::time::Duration;

use atrion_core::{Engine, EngineLimits, Mode, Model, PhysicsConfig, Priority, Reason, SilentObserver, Verdict};

use super::{drive, engine, healthy, ms, outage};

/// Trips `route`: healthy for 10 s, then an outage for 2 s (open at 12 s).
fn trip(e: &Engine, route: &str) {
    drive(e, route, 100.0, 0.0, 10.0, |_| healthy());
    assert!(drive(e, route, 100.0, 10.0, 12.0, |_| outage()).is_some(), "the outage trips `{route}`");
}

/// An engine of one route at most, idle after 60 s.
fn one_route() -> Engine {
    let mut l = EngineLimits::default();
    l.max_routes = 1;
    l.idle_timeout = Duration::from_secs(60);
    Engine::with_observer(PhysicsConfig::default(), l, SilentObserver).unwrap()
}

#[test]
fn a_route_removed_from_the_table_is_not_reached_by_name() {
    let e = one_route();
    trip(&e, "a");
    // `a` is this thread's last route by name now.
    let d = e.decide("a", ms(12_000), Priority::Normal);
    assert_eq!((d.verdict, d.mode), (Verdict::Shed, Mode::Open));
    let old = e.route("a", ms(12_000)).unwrap();
    let before = old.status();
    // A handle made elsewhere (not through the cache) on a full table evicts idle `a`.
    assert!(e.route("b", ms(120_000)).is_ok());
    assert_eq!(e.stats().evicted, 1);
    // By name, `a` is not the evicted route: the table is full of a busy `b`, so it is
    // decided on no state, and its report is dropped, not added to the evicted route.
    let d = e.decide("a", ms(121_000), Priority::Normal);
    assert_eq!((d.verdict, d.reason), (Verdict::Admit, Reason::Untracked));
    e.report("a", outage(), ms(121_000));
    assert_eq!(e.stats().dropped_reports, 1);
    assert_eq!(old.status(), before, "the evicted route's state is not reached");
    // Once `b` is idle, `a` comes back as a new route.
    let d = e.decide("a", ms(200_000), Priority::Normal);
    assert_eq!((d.verdict, d.reason, d.mode), (Verdict::Admit, Reason::Bootstrap, Mode::Bootstrap));
    assert_eq!(e.status("a").unwrap().mode, Mode::Bootstrap);
}

#[test]
fn two_engines_on_one_thread_keep_their_own_routes() {
    let (tripped, calm) = (engine(Model::Default), engine(Model::Default));
    trip(&tripped, "r");
    drive(&calm, "r", 100.0, 0.0, 12.0, |_| healthy());
    let route = "r";
    for k in 0..10 {
        let now = ms(12_000 + k);
        assert_eq!(tripped.decide(route, now, Priority::Normal).mode, Mode::Open, "call {k}");
        assert_eq!(calm.decide(route, now, Priority::Normal).verdict, Verdict::Admit, "call {k}");
        tripped.report(route, outage(), now);
        calm.report(route, healthy(), now);
    }
    // A new engine is another engine, even where a dropped one was.
    drop(calm);
    let fresh = engine(Model::Default);
    assert_eq!(fresh.decide(route, ms(12_100), Priority::Normal).mode, Mode::Bootstrap);
    assert_eq!(fresh.stats().routes, 1);
}

#[test]
fn ids_are_compared_in_full_not_by_pointer_or_hash() {
    let e = engine(Model::Default);
    trip(&e, "route-a");
    drive(&e, "route-b", 100.0, 0.0, 12.0, |_| healthy());
    // One buffer refilled with ids of the same length: the same pointer, another id.
    let mut id = String::with_capacity(16);
    for k in 0..10 {
        for (name, mode) in [("route-a", Mode::Open), ("route-b", Mode::Operational)] {
            id.clear();
            id.push_str(name);
            assert_eq!(e.decide(&id, ms(12_000 + k), Priority::Normal).mode, mode, "{name}, call {k}");
        }
    }
    // A prefix of the last id is another id.
    assert_eq!(e.decide("route-", ms(12_100), Priority::Normal).mode, Mode::Bootstrap);
}

#[test]
fn threads_deciding_by_name_while_routes_are_evicted_see_only_tracked_routes() {
    let mut l = EngineLimits::default();
    l.max_routes = 8;
    l.idle_timeout = Duration::from_secs(1);
    let e = Arc::new(Engine::with_observer(PhysicsConfig::default(), l, SilentObserver).unwrap());
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let e = &e;
            s.spawn(move || {
                for i in 0..20_000u64 {
                    // Time moves 1 ms a call; each thread keeps to a few routes, so that
                    // routes fall idle and are evicted while others decide on them.
                    let now = ms(i);
                    let route = format!("r-{}", (i / 500 + t) % 12);
                    e.decide(&route, now, Priority::Normal);
                    e.report(&route, healthy(), now);
                }
            });
        }
    });
    assert!(e.stats().evicted > 0, "{:?}", e.stats());
    assert!(e.stats().routes <= 8);
}
