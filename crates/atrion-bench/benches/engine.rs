//! The engine's hot path beside peer crates, in one run:
//!
//! - `decide` and `report` on a warm route (by id and through a handle), beside governor's
//!   direct `check()` and failsafe's `is_call_permitted` / `on_success`;
//! - 10,000 routes round-robin, beside governor's keyed `check_key()`;
//! - two threads on distinct routes against one thread (scaling), and on one hot route
//!   (contention);
//! - the silent observer against an empty dynamic composite (what observation costs);
//! - the facade: `Atrion::decide` (the clock read included) beside the engine's `decide` and
//!   the facade on the standard library's clock (read directly, and through the `Clock`
//!   trait as before the facade knew its clocks), the clocks' reads alone, an admitted
//!   request through `Atrion::enter` and its guard's report on drop, and an admitted request
//!   through the tower layer beside the same service bare;
//! - `report`'s floor: the resistance formula alone on the same inputs (`formula_floor`);
//! - decide + report per call with the clock moving 1 ms a call, on 1 and 10,000 routes: the
//!   workload the original TypeScript implementation's `route()` is measured on.
//!
//! Run: `cargo bench -p atrion-bench --bench engine`

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use atrion::layer::AtrionLayer;
use atrion::{
    Clock, CompositeObserver, Engine, EngineClock, EngineLimits, PhysicsConfig, PhysicsObserver, Priority, SystemClock,
    Telemetry, Timestamp,
};
use axum::body::HttpBody;
use axum::http::{Request, Response, Uri};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use tower::{Layer, Service};

/// A clock for the benches: a counter, so that time moves as in production (1 µs a call)
/// without a clock read being part of what is measured.
/// Padded to its own cache lines, so that two threads' clocks do not share one.
#[repr(align(128))]
struct Ticks(AtomicU64);

impl Ticks {
    /// Starts after the warm-up's timestamps (0 to 1 s).
    fn new() -> Self {
        Ticks(AtomicU64::new(2_000_000_000))
    }

    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.0.fetch_add(1_000, Ordering::Relaxed))
    }
}

fn warm<O: PhysicsObserver>(engine: &Engine<O>, route: &str) {
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    for k in 0..1_000u64 {
        engine.report(route, ok, Timestamp::from_millis(k));
    }
}

fn engine() -> Engine {
    Engine::new(PhysicsConfig::default()).unwrap()
}

fn single_route(c: &mut Criterion) {
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let mut g = c.benchmark_group("warm_route");
    g.throughput(Throughput::Elements(1));

    let e = engine();
    warm(&e, "GET /checkout");
    let clock = Ticks::new();
    g.bench_function("atrion/decide", |b| {
        b.iter(|| black_box(e.decide(black_box("GET /checkout"), clock.now(), Priority::Normal)))
    });
    let h = e.route("GET /checkout", Timestamp::ZERO).unwrap();
    g.bench_function("atrion/decide_handle", |b| b.iter(|| black_box(h.decide(clock.now(), Priority::Normal))));
    g.bench_function("atrion/report", |b| {
        b.iter(|| black_box(e.report(black_box("GET /checkout"), black_box(ok), clock.now())))
    });
    g.bench_function("atrion/report_handle", |b| b.iter(|| black_box(h.report(black_box(ok), clock.now()))));
    // Two routes by name taking turns on one thread (an iteration decides on both).
    warm(&e, "GET /payments");
    g.bench_function("atrion/decide_two_routes_alternating", |b| {
        b.iter(|| {
            black_box(e.decide(black_box("GET /checkout"), clock.now(), Priority::Normal));
            black_box(e.decide(black_box("GET /payments"), clock.now(), Priority::Normal))
        })
    });

    let reference = Engine::new(PhysicsConfig::reference()).unwrap();
    warm(&reference, "GET /checkout");
    g.bench_function("atrion_reference/decide", |b| {
        b.iter(|| black_box(reference.decide(black_box("GET /checkout"), clock.now(), Priority::Critical)))
    });
    g.bench_function("atrion_reference/report", |b| {
        b.iter(|| black_box(reference.report(black_box("GET /checkout"), black_box(ok), clock.now())))
    });

    let governor = RateLimiter::direct(Quota::per_second(NonZeroU32::MAX));
    g.bench_function("governor/direct_check", |b| b.iter(|| black_box(governor.check())));

    let breaker = failsafe::Config::new().build();
    g.bench_function("failsafe/is_call_permitted", |b| b.iter(|| black_box(breaker.is_call_permitted())));
    g.bench_function("failsafe/on_success", |b| b.iter(|| breaker.on_success()));

    let composite =
        Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), CompositeObserver::new()).unwrap();
    warm(&composite, "GET /checkout");
    g.bench_function("atrion/report_observer_composite_empty", |b| {
        b.iter(|| black_box(composite.report(black_box("GET /checkout"), black_box(ok), clock.now())))
    });
    g.finish();
}

fn many_routes(c: &mut Criterion) {
    const N: usize = 10_000;
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let names: Vec<String> = (0..N).map(|i| format!("GET /api/v1/items/{i}")).collect();
    let mut g = c.benchmark_group("routes_10k_round_robin");
    g.throughput(Throughput::Elements(1));

    let e = engine();
    for (i, n) in names.iter().enumerate() {
        e.report(n, ok, Timestamp::from_micros(i as u64));
    }
    let clock = Ticks::new();
    let mut i = 0;
    g.bench_function("atrion/decide", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(e.decide(&names[i], clock.now(), Priority::Normal))
        })
    });
    g.bench_function("atrion/report", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(e.report(&names[i], ok, clock.now()))
        })
    });
    let keyed = RateLimiter::keyed(Quota::per_second(NonZeroU32::MAX));
    for n in &names {
        let _ = keyed.check_key(n);
    }
    g.bench_function("governor/keyed_check", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(keyed.check_key(&names[i]))
        })
    });
    g.finish();
}

/// Runs `work(thread, iters)` on `n` threads at once and returns the wall time.
fn on_threads(n: usize, iters: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..n {
            let work = &work;
            s.spawn(move || work(t, iters));
        }
    });
    start.elapsed()
}

/// Each iteration is one decide (or decide + report) on every thread, each thread on its
/// own route: with perfect scaling, two threads take as long per iteration as one.
fn threads(c: &mut Criterion) {
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let e = engine();
    let routes = ["route-a", "route-b"];
    for r in routes {
        warm(&e, r);
    }
    // Boxed apart, so that the two limiters do not share a cache line.
    let governors = [0, 1].map(|_| Box::new(RateLimiter::direct(Quota::per_second(NonZeroU32::MAX))));
    // One clock per thread, kept across iterations so that time only moves forward.
    let clocks = [0, 1].map(|_| Ticks::new());
    let mut g = c.benchmark_group("threads_distinct_routes");
    for n in [1usize, 2] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("atrion/decide/{n}_threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |t, iters| {
                    for _ in 0..iters {
                        black_box(e.decide(routes[t], clocks[t].now(), Priority::Normal));
                    }
                })
            })
        });
        g.bench_function(format!("atrion/decide_report/{n}_threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |t, iters| {
                    for _ in 0..iters {
                        let now = clocks[t].now();
                        black_box(e.decide(routes[t], now, Priority::Normal));
                        black_box(e.report(routes[t], ok, now));
                    }
                })
            })
        });
        g.bench_function(format!("governor/direct_check/{n}_threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |t, iters| {
                    for _ in 0..iters {
                        black_box(governors[t].check()).ok();
                    }
                })
            })
        });
    }
    g.finish();
}

/// Each iteration is one report (or decide) on every thread, all threads on one hot route:
/// what contention on a route costs. With no shared lock on report, two threads take as long
/// per iteration as one (the coalesced-physics issue asks at least 1.9x the throughput).
/// The threads read one clock, as a service's threads do: the processor's counter
/// (`CounterClock`, the facade's default, about 10 ns a read, in every variant alike).
/// Counters of their own would drift apart by seconds over a run, which threads sharing one
/// clock never do.
fn hot_route(c: &mut Criterion) {
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let e = engine();
    warm(&e, "GET /hot");
    let clock = atrion::CounterClock::new();
    // After the warm-up's timestamps (0 to 1 s).
    let now = || Timestamp::from_nanos(2_000_000_000 + clock.elapsed_nanos());
    let clocks = [0, 1].map(|_| Shared(&now));
    let mut g = c.benchmark_group("threads_one_hot_route");
    for n in [1usize, 2] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("atrion/report/{n}_threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |t, iters| {
                    for _ in 0..iters {
                        black_box(e.report("GET /hot", ok, clocks[t].now()));
                    }
                })
            })
        });
        g.bench_function(format!("atrion/decide/{n}_threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(n, iters, |t, iters| {
                    for _ in 0..iters {
                        black_box(e.decide("GET /hot", clocks[t].now(), Priority::Normal));
                    }
                })
            })
        });
    }
    g.finish();
}

/// The floor of `report`: the resistance formula alone (docs/DESIGN.md §2), on the warm route's inputs
/// (20 ms, no errors, saturation 0.3) and the default config's constants: three `tanh`
/// pressures, their weights, momentum and one `exp` of scar healing. No smoothing, no
/// learning, no lock, no lookup: what a report cannot cost less than.
/// One clock read by every thread (see `hot_route`).
struct Shared<'a, F: Fn() -> Timestamp>(&'a F);

impl<F: Fn() -> Timestamp> Shared<'_, F> {
    #[inline]
    fn now(&self) -> Timestamp {
        (self.0)()
    }
}

fn formula_floor(c: &mut Criterion) {
    let cfg = PhysicsConfig::default();
    let baseline = [cfg.baseline.latency, cfg.baseline.error, cfg.baseline.saturation];
    let gain = [cfg.gain.latency, cfg.gain.error, cfg.gain.saturation];
    let weights = [cfg.criticality.latency, cfg.criticality.error, cfg.criticality.saturation].map(f64::ln_1p);
    let (r_base, momentum_weight, lambda) = (cfg.r_base, cfg.momentum_weight, cfg.scar_decay);
    let mut g = c.benchmark_group("warm_route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("formula_floor", |b| {
        b.iter(|| {
            let x = black_box([20.0, 0.0, 0.3]);
            let (momentum, scar, dt) = black_box((0.01, 0.5, 0.001));
            let mut r = r_base + momentum_weight * momentum + scar * (-lambda * dt).exp();
            for j in 0..3 {
                r += weights[j] * (gain[j] * (x[j] - baseline[j]) / baseline[j]).tanh();
            }
            black_box(r)
        })
    });
    g.finish();
}

/// The workload the original TypeScript implementation's `route()` was measured on: one
/// decide and one report per call, the clock moving 1 ms a call, healthy telemetry, on one
/// route and on 10,000 routes round-robin.
fn calm(c: &mut Criterion) {
    const N: usize = 10_000;
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let mut g = c.benchmark_group("calm_decide_report_1ms");
    g.throughput(Throughput::Elements(1));
    let names: Vec<String> = (0..N).map(|i| format!("route-{i}")).collect();
    for routes in [1, N] {
        let e = engine();
        let mut ms = 0u64;
        let mut call = |i: usize| {
            ms += 1;
            let now = Timestamp::from_millis(ms);
            let route = &names[i % routes];
            black_box(e.decide(route, now, Priority::Normal));
            black_box(e.report(route, ok, now));
        };
        for i in 0..(routes * 30).max(200_000) {
            call(i);
        }
        let mut i = 0;
        g.bench_function(format!("atrion/{routes}_routes"), |b| {
            b.iter(|| {
                i += 1;
                call(i)
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

/// The facade a service uses: its own clock read (the default counter clock), the guard's
/// report; beside the engine's `decide` on the bench's counter (what the facade adds), the
/// facade on the standard library's clock, and the clocks' reads alone.
fn facade(c: &mut Criterion) {
    let mut g = c.benchmark_group("facade");
    g.throughput(Throughput::Elements(1));
    let atrion = atrion::Atrion::builder().build().unwrap();
    for _ in 0..1_000 {
        drop(atrion.enter("GET /checkout", Priority::Normal));
    }
    let e = engine();
    warm(&e, "GET /checkout");
    let ticks = Ticks::new();
    g.bench_function("engine/decide", |b| {
        b.iter(|| black_box(e.decide(black_box("GET /checkout"), ticks.now(), Priority::Normal)))
    });
    g.bench_function("atrion/decide", |b| {
        b.iter(|| black_box(atrion.decide(black_box("GET /checkout"), Priority::Normal)))
    });
    let system = atrion::Atrion::builder().clock(SystemClock::new()).build().unwrap();
    for _ in 0..1_000 {
        drop(system.enter("GET /checkout", Priority::Normal));
    }
    g.bench_function("atrion_system_clock/decide", |b| {
        b.iter(|| black_box(system.decide(black_box("GET /checkout"), Priority::Normal)))
    });
    // The system's clock behind a type the facade does not know: read through the trait, as
    // every clock was before the facade read known ones directly.
    let opaque = atrion::Atrion::builder().clock(Opaque(SystemClock::new())).build().unwrap();
    for _ in 0..1_000 {
        drop(opaque.enter("GET /checkout", Priority::Normal));
    }
    g.bench_function("atrion_dyn_system_clock/decide", |b| {
        b.iter(|| black_box(opaque.decide(black_box("GET /checkout"), Priority::Normal)))
    });
    let shared: Arc<dyn Clock> = Arc::new(SystemClock::new());
    g.bench_function("clock/system_dyn_now", |b| b.iter(|| black_box(black_box(&shared).now())));
    g.bench_function("clock/system_now", |b| b.iter(|| black_box(system.now())));
    g.bench_function("clock/counter_now", |b| b.iter(|| black_box(atrion.now())));
    g.bench_function("clock/bench_ticks", |b| b.iter(|| black_box(ticks.now())));
    g.bench_function("atrion/enter_and_report", |b| {
        b.iter(|| drop(black_box(atrion.enter(black_box("GET /checkout"), Priority::Normal))))
    });
    // An admitted request through the tower layer (the route named, decided, the inner
    // service called, the body read to its end, the report), beside the same service bare.
    let inner = tower::service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    let mut layered = AtrionLayer::new(Arc::new(atrion)).layer(inner);
    let mut bare = inner;
    g.bench_function("atrion/layer_request", |b| b.iter(|| black_box(request(&mut layered))));
    g.bench_function("bare/service_request", |b| b.iter(|| black_box(request(&mut bare))));
    g.finish();
}

/// A clock the facade does not know, so that it reads it through the [`Clock`] trait.
struct Opaque(SystemClock);

impl Clock for Opaque {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn wall_ms(&self) -> u64 {
        self.0.wall_ms()
    }
}

/// One `GET /checkout` through `service`, polled to its end (the services answer at once),
/// its body read to the end; whether it succeeded.
fn request<S, B>(service: &mut S) -> bool
where
    S: Service<Request<()>, Response = Response<B>>,
    B: HttpBody,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut req = Request::new(());
    *req.uri_mut() = Uri::from_static("/checkout");
    let mut future = std::pin::pin!(service.call(req));
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else { return false };
    let ok = response.status().is_success();
    let mut body = std::pin::pin!(response.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
    ok
}

criterion_group! { name = benches; config = config(); targets = single_route, formula_floor, many_routes, calm, threads, hot_route, facade }
criterion_main!(benches);
