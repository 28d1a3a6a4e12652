//! Policies across a cluster, against a private `redis-server` on loopback:
//!
//! - propagation: from a policy write through node A to it being in force on node B (B's
//!   engine runs it), over 1,000 changes (p50 and p99 printed after the run);
//! - `decide` on an engine with 1,000 glob patterns in force, beside a bare engine: the
//!   resolution happens at apply time, never per request.
//!
//! Run: `cargo bench -p atrion-bench --bench policy`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrion::{Engine, Hold, PhysicsConfig, Priority, RoutePolicy, Telemetry};
use atrion_policy::PolicyKeys;
use atrion_policy::{Change, Policy, PolicyConfig, PolicyEvent, PolicyNode, Source};
use atrion_redis::testing::RedisServer;
use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::{Clock, StateStore, TokioClock};
use atrion_sync::EngineClock;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn propagation(c: &mut Criterion) {
    let Some(redis) = RedisServer::start() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let open = || -> Arc<dyn StateStore> {
        Arc::new(rt.block_on(RedisStore::connect(&RedisConfig::new(redis.url()))).unwrap())
    };
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let node = |id: &str, store: Arc<dyn StateStore>| {
        let engine = Arc::new(Engine::with_observer(PhysicsConfig::default(), Default::default(), ()).unwrap());
        let mut cfg = PolicyConfig::default();
        cfg.every = Duration::from_millis(100);
        let n = rt.block_on(PolicyNode::start(
            engine.clone(),
            store,
            PolicyKeys::new("bench-policy", id),
            clock.clone(),
            cfg,
        ));
        (engine, n)
    };
    let (_, a) = node("a", open());
    let (eb, b) = node("b", open());
    let mut events = b.events();
    let mut k = 0u64;
    // One change: a policy written through A, until B has applied its version.
    let mut change = || {
        k += 1;
        let mut p = Policy { route: "GET /bench/*".into(), physics: None, lanes: None, state: None, note: None };
        p.physics =
            Some(serde_json::from_value(serde_json::json!({"tuner": {"k": 2.0 + (k % 50) as f64 * 0.1}})).unwrap());
        rt.block_on(async {
            let start = Instant::now();
            let done = a.change(Source::Api, &Change::Upsert(p), "bench", None).await.unwrap();
            let version = done.after.version;
            loop {
                match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                    Ok(Ok(PolicyEvent::Applied { version: v, .. })) if v >= version => break,
                    Ok(_) => {}
                    Err(_) => panic!("B never applied version {version}"),
                }
            }
            start.elapsed()
        })
    };
    let mut delays: Vec<Duration> = (0..1_000).map(|_| change()).collect();
    assert!(eb.route_config("GET /bench/x").tuner.k > 1.0);
    delays.sort_unstable();
    let pct = |p: f64| delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)];
    println!(
        "redis policy propagation over {} changes (write on A to in force on B): p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        pct(0.50),
        pct(0.99),
        delays[delays.len() - 1]
    );
    let mut g = c.benchmark_group("redis_policy_propagation");
    g.sample_size(10);
    g.bench_function("write_on_a_to_in_force_on_b", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| change()).sum())
    });
    g.finish();
    rt.block_on(async {
        a.shutdown().await;
        b.shutdown().await;
    });
}

fn decide_with_patterns(c: &mut Criterion) {
    let clock = TokioClock::new();
    let bare = Engine::new(PhysicsConfig::default()).unwrap();
    let patterned = Engine::new(PhysicsConfig::default()).unwrap();
    let mut cfg = PhysicsConfig::default();
    cfg.tuner.k = 4.0;
    let policies = (0..1_000)
        .map(|i| RoutePolicy {
            pattern: format!("GET /svc{i}/*/items?"),
            config: (i % 2 == 0).then(|| cfg.clone()),
            hold: Hold::Released,
        })
        .chain(std::iter::once(RoutePolicy {
            pattern: "GET /checkout".into(),
            config: Some(cfg.clone()),
            hold: Hold::Released,
        }))
        .collect();
    patterned.set_policies(policies).unwrap();
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    for _ in 0..1_000 {
        bare.report("GET /checkout", ok, clock.now());
        patterned.report("GET /checkout", ok, clock.now());
    }
    assert_eq!(patterned.route_config("GET /checkout").tuner.k, 4.0);
    let mut g = c.benchmark_group("decide_with_1000_patterns");
    g.throughput(Throughput::Elements(1));
    let now = clock.now();
    g.bench_function("bare_engine", |b| {
        b.iter(|| black_box(bare.decide(black_box("GET /checkout"), now, Priority::Normal)))
    });
    g.bench_function("1000_patterns", |b| {
        b.iter(|| black_box(patterned.decide(black_box("GET /checkout"), now, Priority::Normal)))
    });
    g.finish();
}

criterion_group!(benches, decide_with_patterns, propagation);
criterion_main!(benches);
