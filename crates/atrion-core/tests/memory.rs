//! Memory per route, counted by a global allocator: one allocation per route (its cell with
//! its id), and at most 400 bytes per route in all, the route table included (the
//! target is 320: docs/BENCHMARKS.md says how far off it is and why). Its own test
//! binary, with one test, so that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use atrion_core::{Engine, EngineLimits, PhysicsConfig, Priority, SilentObserver, Telemetry, Timestamp};

struct Counting;

/// Live allocations and live bytes requested.
static LIVE: AtomicI64 = AtomicI64::new(0);
static BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as i64, Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(1, Relaxed);
        BYTES.fetch_sub(layout.size() as i64, Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUTES: usize = 100_000;

#[test]
fn a_route_costs_one_allocation_and_a_bounded_number_of_bytes() {
    let mut limits = EngineLimits::default();
    limits.max_routes = ROUTES;
    let engine = Engine::with_observer(PhysicsConfig::default(), limits, SilentObserver).unwrap();
    // The ids, built before counting: `tenant-000042 GET /orders`, 25 bytes each.
    let ids: Vec<String> = (0..ROUTES).map(|i| format!("tenant-{i:06} GET /orders")).collect();
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let (live, bytes) = (LIVE.load(Relaxed), BYTES.load(Relaxed));
    for (i, id) in ids.iter().enumerate() {
        let now = Timestamp::from_millis(i as u64);
        engine.decide(id, now, Priority::Normal);
        engine.report(id, ok, now);
    }
    assert_eq!(engine.stats().routes, ROUTES);
    let allocations = (LIVE.load(Relaxed) - live) as f64 / ROUTES as f64;
    let per_route = (BYTES.load(Relaxed) - bytes) as f64 / ROUTES as f64;
    println!("{ROUTES} routes: {allocations:.3} live allocations and {per_route:.1} bytes per route");
    assert!(allocations < 1.01, "{allocations:.3} allocations per route");
    assert!(per_route <= 400.0, "{per_route:.1} bytes per route");
}
