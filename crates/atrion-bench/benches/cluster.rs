//! The cluster adapters against private servers on loopback (`redis-server`; PostgreSQL by
//! `initdb` + `pg_ctl`), in one run:
//!
//! - one pulse pushing 10,000 dirty routes (pipelined scripts);
//! - convergence delay: from a route's report on node A to its scar in node B's engine,
//!   over 1,000 changes at a 10 ms pulse (p50 and p99 printed after the run);
//! - `decide` with a Redis-backed manager attached, beside the bare engine; and on one node
//!   of a fleet of 30 managers on one Redis under load;
//! - `decide` + `report` while that Redis is killed and the node is degraded (the tests
//!   assert only that decisions go on; how fast they go is this bench's claim);
//! - 10,000 shares in one `put_shares`, on Redis and on PostgreSQL; on PostgreSQL also what
//!   the server reports for the same statement (`EXPLAIN ANALYZE`: its execution, and of
//!   that the notice trigger), so that the pulse's cost splits into the server's and ours;
//! - `stats()` over 10,000 keys on a local Redis Cluster (three primaries).
//!
//! Run: `cargo bench -p atrion-bench --bench cluster`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrion::{Engine, PhysicsConfig, Priority, Telemetry};
use atrion_postgres::testing::PgServer;
use atrion_postgres::{PostgresConfig, PostgresStore};
use atrion_redis::testing::{RedisCluster, RedisServer};
use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::shares::{Share, ShareWrite};
use atrion_state::{Clock, StateStore, TokioClock};
use atrion_sync::{EngineClock, StateManager};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;

use common::{bench_pulse, runtime, sync};

/// A backend under test: its name and a way to open a fresh connection to it.
struct Backend<'a> {
    name: &'static str,
    open: Box<dyn Fn() -> Arc<dyn StateStore> + 'a>,
}

fn store(backend: &Backend<'_>) -> Arc<dyn StateStore> {
    (backend.open)()
}

fn pulse_10k(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &Backend<'_>) {
    let mut g = c.benchmark_group(format!("{}_pulse_10k_dirty_routes", server.name));
    g.throughput(Throughput::Elements(common::PULSE_ROUTES));
    g.sample_size(10);
    bench_pulse(&mut g, server.name, rt, store(server));
    g.finish();
}

fn convergence(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &Backend<'_>) {
    let clock = Arc::new(TokioClock::new());
    let pulse = Duration::from_millis(10);
    let (a, b) = (
        Arc::new(Engine::new(PhysicsConfig::default()).unwrap()),
        Arc::new(Engine::new(PhysicsConfig::default()).unwrap()),
    );
    let (sa, sb) = (store(server), store(server));
    let (ma, mb) = rt.block_on(async {
        let dyn_clock = clock.clone() as Arc<dyn Clock>;
        let ma =
            StateManager::start(a.clone(), sa, sync("bench-convergence", "a", pulse), dyn_clock.clone()).await.unwrap();
        let mb = StateManager::start(b.clone(), sb, sync("bench-convergence", "b", pulse), dyn_clock).await.unwrap();
        (ma, mb)
    });
    let bad = Telemetry::new(900.0, 1.0, 0.9).unwrap();
    let mut k = 0u64;
    // One change: a route's report on A, until B's engine holds A's scar for it.
    let mut change = || {
        k += 1;
        let route = format!("conv/{k}");
        let t0 = clock.now();
        a.report(&route, bad, t0);
        a.report(&route, bad, atrion::Timestamp::from_nanos(t0.as_nanos() + 100_000_000));
        let start = Instant::now();
        while b.cluster_scar(&route, clock.now()).is_none_or(|s| s <= 0.0) {
            assert!(start.elapsed() < Duration::from_secs(5), "no convergence for {route}");
            std::thread::sleep(Duration::from_micros(100));
        }
        start.elapsed()
    };
    let began = Instant::now();
    let mut delays: Vec<Duration> = (0..1_000).map(|_| change()).collect();
    println!("1,000 changes in {:?}: a {:?}, b {:?}", began.elapsed(), ma.stats(), mb.stats());
    delays.sort_unstable();
    let pct = |p: f64| delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)];
    println!(
        "{} convergence over {} changes at a {pulse:?} pulse: p50 {:?}, p99 {:?}, max {:?}",
        server.name,
        delays.len(),
        pct(0.50),
        pct(0.99),
        delays[delays.len() - 1]
    );
    let mut g = c.benchmark_group(format!("{}_convergence_10ms_pulse", server.name));
    g.sample_size(10);
    g.bench_function("report_on_a_to_merge_on_b", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| change()).sum())
    });
    g.finish();
    rt.block_on(async {
        ma.shutdown().await;
        mb.shutdown().await;
    });
}

/// A bare engine beside one whose state a manager syncs through `store` (10 ms pulse), on
/// one clock: what the decide benches compare.
struct Beside {
    clock: Arc<TokioClock>,
    bare: Engine,
    synced: Arc<Engine>,
    manager: StateManager<atrion::SilentObserver>,
}

fn beside(rt: &tokio::runtime::Runtime, store: Arc<dyn StateStore>, namespace: &str) -> Beside {
    let clock = Arc::new(TokioClock::new());
    let synced = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let manager = rt.block_on(async {
        StateManager::start(
            synced.clone(),
            store,
            sync(namespace, "decider", Duration::from_millis(10)),
            clock.clone() as Arc<dyn Clock>,
        )
        .await
        .unwrap()
    });
    Beside { clock, bare: Engine::new(PhysicsConfig::default()).unwrap(), synced, manager }
}

fn decide_with_manager(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &Backend<'_>) {
    let Beside { clock, bare, synced, manager } = beside(rt, store(server), "bench-decide");
    let label = format!("with_{}_manager", server.name);
    decide_pair(c, &format!("{}_decide", server.name), &clock, &bare, (&label, &synced));
    rt.block_on(manager.shutdown());
}

/// `decide` on a warm route, on `bare` and on `other.1` (named `other.0`), in group `group`;
/// the clock is read every 256 calls.
fn decide_pair(c: &mut Criterion, group: &str, clock: &TokioClock, bare: &Engine, other: (&str, &Engine)) {
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    for _ in 0..1_000 {
        bare.report("GET /checkout", ok, clock.now());
        other.1.report("GET /checkout", ok, clock.now());
    }
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut n = 0u32;
    let mut now = clock.now();
    let mut tick = |clock: &TokioClock| {
        n = n.wrapping_add(1);
        if n % 256 == 0 {
            now = clock.now();
        }
        now
    };
    g.bench_function("bare_engine", |b| {
        b.iter(|| black_box(bare.decide(black_box("GET /checkout"), tick(clock), Priority::Normal)))
    });
    g.bench_function(other.0, |b| {
        b.iter(|| black_box(other.1.decide(black_box("GET /checkout"), tick(clock), Priority::Normal)))
    });
    g.finish();
}

/// `decide` on one node of a fleet of 30 (each an engine and a manager with its own
/// connection to one store, all pulsing every 100 ms while 5% of 1,000 routes fail on every
/// node each pulse), beside a bare engine measured under the same background.
fn decide_beside_a_fleet(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &Backend<'_>) {
    const NODES: usize = 30;
    let clock = Arc::new(TokioClock::new());
    let mut fleet = Vec::new();
    for i in 0..NODES {
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let cfg = sync("bench-fleet", &format!("node-{i}"), Duration::from_millis(100));
        let m = rt
            .block_on(StateManager::start(engine.clone(), store(server), cfg, clock.clone() as Arc<dyn Clock>))
            .unwrap();
        fleet.push((engine, m));
    }
    let engines: Vec<Arc<Engine>> = fleet.iter().map(|(e, _)| e.clone()).collect();
    let load = rt.spawn({
        let clock = clock.clone();
        async move {
            let bad = Telemetry::new(900.0, 1.0, 0.9).unwrap();
            let names: Vec<String> = (0..1_000).map(|i| format!("GET /api/items/{i}")).collect();
            for k in 0usize.. {
                let now = clock.now();
                for e in &engines {
                    for j in 0..50 {
                        e.report(&names[(k * 50 + j * 7) % 1_000], bad, now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let bare = Engine::new(PhysicsConfig::default()).unwrap();
    let group = format!("{}_decide_beside_{NODES}_nodes", server.name);
    decide_pair(c, &group, &clock, &bare, ("node_of_the_fleet", &fleet[0].0));
    load.abort();
    rt.block_on(async {
        for (_, m) in fleet {
            m.shutdown().await;
        }
    });
}

fn decide_during_outage(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &mut RedisServer) {
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let s: Arc<dyn StateStore> = Arc::new(rt.block_on(RedisStore::connect(&RedisConfig::new(server.url()))).unwrap());
    let Beside { clock, bare, synced, manager } = beside(rt, s, "bench-outage");
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !manager.stats().degraded {
        synced.report("GET /checkout", ok, clock.now());
        assert!(Instant::now() < deadline, "the node never noticed the outage");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut g = c.benchmark_group("redis_down_decide_report");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bare_engine", |b| {
        b.iter(|| {
            black_box(bare.decide(black_box("GET /checkout"), clock.now(), Priority::Normal));
            bare.report("GET /checkout", ok, clock.now())
        })
    });
    g.bench_function("with_degraded_redis_manager", |b| {
        b.iter(|| {
            black_box(synced.decide(black_box("GET /checkout"), clock.now(), Priority::Normal));
            synced.report("GET /checkout", ok, clock.now())
        })
    });
    g.finish();
    assert!(manager.stats().degraded, "measured while degraded");
    rt.block_on(manager.shutdown());
    server.restart();
}

/// 10,000 shares as one pulse writes them (a rank that moves every time, so each is an
/// update and every key's leaders are noticed).
fn shares_10k(round: u64) -> Vec<ShareWrite> {
    (0..10_000)
        .map(|i| ShareWrite {
            key: format!("bench-shares/route/GET /api/items/{i}"),
            share: Share {
                member: "node-1".to_owned(),
                rank: round as f64 + f64::from(i) * 1e-6,
                value: Bytes::from(vec![7u8; 40]),
            },
        })
        .collect()
}

fn put_shares_10k(c: &mut Criterion, rt: &tokio::runtime::Runtime, redis: Option<&RedisServer>, pg: Option<&PgServer>) {
    let mut g = c.benchmark_group("put_shares_10k");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(10);
    let mut round = 0u64;
    let mut timed = |b: &mut criterion::Bencher<'_>, write: &mut dyn FnMut(Vec<ShareWrite>) -> Duration| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    round += 1;
                    write(shares_10k(round))
                })
                .sum()
        })
    };
    if let Some(server) = redis {
        let s = rt.block_on(RedisStore::connect(&RedisConfig::new(server.url()))).unwrap();
        g.bench_function("redis", |b| {
            timed(b, &mut |items| {
                let start = Instant::now();
                rt.block_on(s.put_shares(items)).unwrap();
                start.elapsed()
            })
        });
    }
    if let Some(server) = pg {
        let s = rt.block_on(PostgresStore::connect(&PostgresConfig::new(server.url()))).unwrap();
        g.bench_function("postgres", |b| {
            timed(b, &mut |items| {
                let start = Instant::now();
                rt.block_on(s.put_shares(items)).unwrap();
                start.elapsed()
            })
        });
        // What the server says the same statement cost: the rest of the call above is the
        // client's (binding, the wire, sqlx) and the round trip's.
        g.bench_function("postgres_server_execution", |b| {
            timed(b, &mut |items| rt.block_on(s.put_shares_explained(items)).unwrap().execution)
        });
        g.bench_function("postgres_server_notice_trigger", |b| {
            timed(b, &mut |items| rt.block_on(s.put_shares_explained(items)).unwrap().triggers)
        });
    }
    g.finish();
}

fn cluster_stats_10k(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let Some(cluster) = RedisCluster::start() else { return };
    let urls = cluster.urls();
    let mut cfg = RedisConfig::new(urls[0].clone());
    cfg.nodes = urls[1..].to_vec();
    let s = rt.block_on(RedisStore::connect(&cfg)).unwrap();
    let items = (0..10_000).map(|i| (format!("bench-stats/{i}"), Bytes::from(vec![7u8; 40]), None)).collect();
    rt.block_on(s.batch_set(items)).unwrap();
    let mut g = c.benchmark_group("redis_cluster_stats_10k_keys");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(10);
    g.bench_function("stats", |b| {
        b.iter(|| {
            let stats = rt.block_on(s.stats()).unwrap();
            assert!(stats.keys >= 10_000, "{stats:?}");
        })
    });
    g.finish();
}

fn adapters(c: &mut Criterion) {
    let rt = runtime();
    {
        let (redis, pg) = (RedisServer::start(), PgServer::start());
        put_shares_10k(c, &rt, redis.as_ref(), pg.as_ref());
    }
    cluster_stats_10k(c, &rt);
    if let Some(mut outage) = RedisServer::start() {
        decide_during_outage(c, &rt, &mut outage);
    }
    if let Some(server) = RedisServer::start() {
        let backend = Backend {
            name: "redis",
            open: Box::new(|| {
                Arc::new(rt.block_on(RedisStore::connect(&RedisConfig::new(server.url()))).unwrap())
                    as Arc<dyn StateStore>
            }),
        };
        pulse_10k(c, &rt, &backend);
        convergence(c, &rt, &backend);
        decide_with_manager(c, &rt, &backend);
        decide_beside_a_fleet(c, &rt, &backend);
    }
    if let Some(server) = PgServer::start() {
        let backend = Backend {
            name: "postgres",
            open: Box::new(|| {
                Arc::new(rt.block_on(PostgresStore::connect(&PostgresConfig::new(server.url()))).unwrap())
                    as Arc<dyn StateStore>
            }),
        };
        pulse_10k(c, &rt, &backend);
        convergence(c, &rt, &backend);
        decide_with_manager(c, &rt, &backend);
    }
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = adapters }
criterion_main!(benches);
