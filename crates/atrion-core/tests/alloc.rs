//! Heap use, counted by a global allocator per thread (so that tests running beside each
//! other do not count each other): zero allocations on a warm route's decide and report,
//! and what a route costs: one allocation (its cell with its id) and, at 100,000 routes, at
//! most 372 bytes each, the route table included (365 measured; the table's buckets vary a
//! little with the hash seed; the target is 320: docs/BENCHMARKS.md says how far off it is
//! and why).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use atrion_core::{Engine, EngineLimits, Model, PhysicsConfig, Priority, SilentObserver, Telemetry, Timestamp};

struct Counting;

thread_local! {
    /// Allocations made, allocations live, and bytes live, on this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static BYTES: Cell<i64> = const { Cell::new(0) };
}

fn count(allocations: u64, live: i64, bytes: i64) {
    // `try_with`: the allocator also runs while a thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + allocations));
    let _ = LIVE.try_with(|c| c.set(c.get() + live));
    let _ = BYTES.try_with(|c| c.set(c.get() + bytes));
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, 1, layout.size() as i64);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, -1, -(layout.size() as i64));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, 0, new_size as i64 - layout.size() as i64);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn warm_decide_and_report_do_not_allocate() {
    for model in [Model::Reference, Model::Default] {
        let engine = Engine::new(PhysicsConfig::for_model(model)).unwrap();
        let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
        let bad = Telemetry::new(900.0, 1.0, 0.9).unwrap();
        // Warm up: create the route and pass through every mode once.
        for k in 0..20_000u64 {
            let now = Timestamp::from_millis(k);
            engine.decide("warm", now, Priority::Normal);
            engine.report("warm", if (k / 3_000) % 2 == 1 { bad } else { ok }, now);
        }
        let handle = engine.route("warm", Timestamp::ZERO).unwrap();
        let before = allocations();
        for k in 20_000..120_000u64 {
            let now = Timestamp::from_millis(k);
            let t = if (k / 3_000) % 2 == 1 { bad } else { ok };
            engine.decide("warm", now, Priority::ALL[(k % 5) as usize]);
            engine.report("warm", t, now);
            handle.decide(now, Priority::Normal);
            handle.report(t, now);
        }
        assert_eq!(allocations() - before, 0, "{model:?}: allocations on the warm path");
        // The counter works: creating a route allocates.
        engine.decide("cold", Timestamp::ZERO, Priority::Normal);
        assert!(allocations() > before);
    }
}

const ROUTES: usize = 100_000;

#[test]
fn a_route_costs_one_allocation_and_a_bounded_number_of_bytes() {
    let mut limits = EngineLimits::default();
    limits.max_routes = ROUTES;
    let engine = Engine::with_observer(PhysicsConfig::default(), limits, SilentObserver).unwrap();
    // The ids, built before counting: `tenant-000042 GET /orders`, 25 bytes each.
    let ids: Vec<String> = (0..ROUTES).map(|i| format!("tenant-{i:06} GET /orders")).collect();
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let (live, bytes) = (LIVE.with(Cell::get), BYTES.with(Cell::get));
    for (i, id) in ids.iter().enumerate() {
        let now = Timestamp::from_millis(i as u64);
        engine.decide(id, now, Priority::Normal);
        engine.report(id, ok, now);
    }
    assert_eq!(engine.stats().routes, ROUTES);
    let allocations = (LIVE.with(Cell::get) - live) as f64 / ROUTES as f64;
    let per_route = (BYTES.with(Cell::get) - bytes) as f64 / ROUTES as f64;
    println!("{ROUTES} routes: {allocations:.3} live allocations and {per_route:.1} bytes per route");
    assert!(allocations < 1.01, "{allocations:.3} allocations per route");
    assert!(per_route <= 372.0, "{per_route:.1} bytes per route");
}
