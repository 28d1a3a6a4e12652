//! One hot-path operation `n` times in one thread, for an instruction count: the engine's
//! decide and report beside governor's and failsafe's, as the `engine` criterion bench
//! times them. Instructions do not move with the machine's load, so these figures compare
//! across runs and machines where the timings cannot.
//!
//! ```text
//! crates/atrion-bench/scripts/instructions.sh        # every operation, a table
//! valgrind --tool=callgrind target/release/ops atrion/report 100000
//! ```
//!
//! Each run warms its subject first (a route with 1,000 calm reports); a run of 0
//! operations gives that set-up, to subtract. `OP` is one of [`OPS`].

use std::hint::black_box;
use std::num::NonZeroU32;

use atrion::{Atrion, Engine, PhysicsConfig, Priority, Telemetry, Timestamp};
use governor::{Quota, RateLimiter};

/// The operations, as the `engine` bench names them.
const OPS: [&str; 12] = [
    "atrion/decide",
    "atrion/decide_alternating",
    "atrion/decide_report_alternating",
    "atrion/report",
    "atrion/decide_handle",
    "atrion/report_handle",
    "atrion/decide_report_1ms",
    "atrion/decide_report_1ms_10k",
    "atrion/facade_decide",
    "governor/direct_check",
    "failsafe/is_call_permitted",
    "failsafe/on_success",
];

const ROUTE: &str = "GET /checkout";
const OTHER: &str = "GET /payments";

fn warm(engine: &Engine) {
    warm_route(engine, ROUTE);
}

fn warm_route(engine: &Engine, route: &str) {
    let ok = calm();
    for k in 0..1_000u64 {
        engine.report(route, ok, Timestamp::from_millis(k));
    }
}

fn calm() -> Telemetry {
    Telemetry::new(20.0, 0.0, 0.3).unwrap_or_else(|e| panic!("calm telemetry: {e}"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let engine = Engine::new(PhysicsConfig::default()).unwrap_or_else(|e| panic!("the default config: {e}"));
    warm(&engine);
    // Time moves 1 µs a call from after the warm-up, as in the criterion bench.
    let at = |i: u64| Timestamp::from_nanos(2_000_000_000 + i * 1_000);
    let ok = calm();
    match op.as_str() {
        "atrion/decide" => (0..n).for_each(|i| {
            black_box(engine.decide(black_box(ROUTE), at(i), Priority::Normal));
        }),
        "atrion/decide_alternating" | "atrion/decide_report_alternating" => {
            // Two routes by name, taking turns on one thread: the worst case of a cache of
            // the last route (every call a miss), against today's lookup.
            warm_route(&engine, OTHER);
            let both = op == "atrion/decide_report_alternating";
            (0..n).for_each(|i| {
                let route = if i % 2 == 0 { ROUTE } else { OTHER };
                black_box(engine.decide(black_box(route), at(i), Priority::Normal));
                if both {
                    black_box(engine.report(black_box(route), black_box(ok), at(i)));
                }
            })
        }
        "atrion/report" => (0..n).for_each(|i| {
            black_box(engine.report(black_box(ROUTE), black_box(ok), at(i)));
        }),
        "atrion/decide_handle" => {
            let h = engine.handle(ROUTE, Timestamp::ZERO);
            (0..n).for_each(|i| {
                black_box(h.decide(at(i), Priority::Normal));
            })
        }
        "atrion/report_handle" => {
            let h = engine.handle(ROUTE, Timestamp::ZERO);
            (0..n).for_each(|i| {
                black_box(h.report(black_box(ok), at(i)));
            })
        }
        "atrion/decide_report_1ms" => (0..n).for_each(|i| {
            let now = Timestamp::from_millis(2_000 + i);
            black_box(engine.decide(black_box(ROUTE), now, Priority::Normal));
            black_box(engine.report(black_box(ROUTE), black_box(ok), now));
        }),
        "atrion/decide_report_1ms_10k" => {
            // Round robin over 10,000 routes, one call a millisecond: each route sees one
            // decision and one report every 10 s (the criterion bench's `10000_routes`).
            let names: Vec<String> = (0..10_000).map(|i| format!("route-{i}")).collect();
            let call = |i: u64| {
                let now = Timestamp::from_millis(2_000 + i);
                let route = names[(i % 10_000) as usize].as_str();
                black_box(engine.decide(black_box(route), now, Priority::Normal));
                black_box(engine.report(black_box(route), black_box(ok), now));
            };
            (0..300_000).for_each(&call);
            (300_000..300_000 + n).for_each(call);
        }
        "atrion/facade_decide" => {
            let atrion = Atrion::builder().build().unwrap_or_else(|e| panic!("the facade: {e}"));
            for _ in 0..1_000 {
                let _ = atrion.report(ROUTE, std::time::Duration::from_millis(20), true, Some(0.3));
            }
            (0..n).for_each(|_| {
                black_box(atrion.decide(black_box(ROUTE), Priority::Normal));
            })
        }
        "governor/direct_check" => {
            let governor = RateLimiter::direct(Quota::per_second(NonZeroU32::MAX));
            (0..n).for_each(|_| {
                let _ = black_box(governor.check());
            })
        }
        "failsafe/is_call_permitted" | "failsafe/on_success" => {
            let breaker = failsafe::Config::new().build();
            if op == "failsafe/on_success" {
                (0..n).for_each(|_| breaker.on_success());
            } else {
                (0..n).for_each(|_| {
                    black_box(breaker.is_call_permitted());
                });
            }
        }
        _ => {
            eprintln!("usage: ops OP [N]\nOP: {}", OPS.join(", "));
            std::process::exit(2);
        }
    }
}
