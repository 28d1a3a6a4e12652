//! Zero heap allocations on a warm route's decide and report, counted by a global
//! allocator. Its own test binary, so that no other test's allocations are counted; the
//! count is per thread all the same.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use atrion_core::{Engine, Model, PhysicsConfig, Priority, Telemetry, Timestamp};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
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
