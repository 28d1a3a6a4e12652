//! The cluster sync as a fleet: N nodes in one process (an engine and a `StateManager`
//! each, with its own connection) over one store: in memory, a private `redis-server`, or a
//! private six-node Redis Cluster. Every pulse each node reports failures on the same fraction
//! of the routes (a load-balanced fleet whose downstreams go bad for every replica at once),
//! so that their scar changes and is pushed; one node per pulse scars a fresh probe route,
//! and the time until every other node's merged view shows it is the convergence time.
//!
//! Per node per pulse it prints the store operations (one per key read or written: one Redis
//! command or script each), the round trips, the bytes written and received (keys and
//! values, change notices included) and the CPU time of the process divided among the nodes;
//! and convergence p50 / p99 in pulses. `--json FILE` also writes the rows.
//!
//! Run: `cargo run --release -p atrion-bench --bin fleet -- [--store memory|redis|cluster]
//! [--nodes 3,10,30,100] [--routes 1000,10000] [--pulses 40] [--dirty 0.05] [--deadband OHMS]
//! [--second-look FRACTION] [--json FILE]` (`--deadband 0` pushes every change: the most the
//! sync can cost; `--second-look 0` has every node push at once);
//! `fleet --plot OUT.svg LABEL=ROWS.json...` draws the chart of `docs/SCALING.md`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use atrion::state::{Clock, EngineClock, InMemoryStore, StateManager, StateStore, SyncConfig, TokioClock};
use atrion::{Engine, PhysicsConfig, Telemetry, Timestamp};
use atrion_bench::counting::{Counting, Tally};
use atrion_redis::testing::{RedisCluster, RedisServer};
use atrion_redis::{RedisConfig, RedisStore};

const PULSE: Duration = Duration::from_millis(100);

/// The store the fleet shares, and what keeps it running.
enum Backend {
    Memory(InMemoryStore),
    Redis(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    async fn connect(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        Ok(match self {
            Backend::Memory(m) => Arc::new(m.clone()),
            Backend::Redis(server) => Arc::new(RedisStore::connect(&RedisConfig::new(server.url())).await?),
            Backend::Cluster(cluster) => {
                let urls = cluster.urls();
                let mut cfg = RedisConfig::new(urls[0].clone());
                cfg.nodes = urls[1..].to_vec();
                Arc::new(RedisStore::connect(&cfg).await?)
            }
        })
    }
}

struct Args {
    store: String,
    nodes: Vec<usize>,
    routes: Vec<usize>,
    pulses: u64,
    dirty: f64,
    deadband: f64,
    second_look: f64,
    json: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        store: "memory".into(),
        nodes: vec![3, 10, 30, 100],
        routes: vec![1_000, 10_000],
        pulses: 40,
        dirty: 0.05,
        deadband: SyncConfig::default().deadband,
        second_look: SyncConfig::default().second_look,
        json: None,
    };
    let list = |v: &str| v.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--store" => a.store = value,
            "--nodes" => a.nodes = list(&value)?,
            "--routes" => a.routes = list(&value)?,
            "--pulses" => a.pulses = value.parse()?,
            "--dirty" => a.dirty = value.parse()?,
            "--deadband" => a.deadband = value.parse()?,
            "--second-look" => a.second_look = value.parse()?,
            "--json" => a.json = Some(value),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if !["memory", "redis", "cluster"].contains(&a.store.as_str()) {
        bail!("--store is memory, redis or cluster");
    }
    Ok(a)
}

/// User and system CPU time of this process so far.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| rest.split_whitespace().nth(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// `ms` milliseconds before `now`: the failures of a pulse happened during it.
fn ago(now: Timestamp, ms: u64) -> Timestamp {
    Timestamp::from_nanos(now.as_nanos().saturating_sub(ms * 1_000_000))
}

/// One measured configuration.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Row {
    store: String,
    nodes: usize,
    routes: usize,
    dirty_per_node: usize,
    pulses: u64,
    ops: f64,
    calls: f64,
    bytes_out: f64,
    bytes_in: f64,
    cpu_ms: f64,
    pushed: f64,
    deadbanded: f64,
    outranked: f64,
    resyncs: f64,
    converge_p50: f64,
    converge_p99: f64,
    unconverged: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(backend: &Backend, store: &str, n: usize, routes: usize, a: &Args) -> anyhow::Result<Row> {
    let dirty = ((routes as f64 * a.dirty) as usize).max(1);
    let clock: Arc<TokioClock> = Arc::new(TokioClock::new());
    let namespace = format!("fleet-{n}-{routes}-{}", std::process::id());
    let mut nodes = Vec::with_capacity(n);
    let mut tallies = Vec::with_capacity(n);
    for i in 0..n {
        let engine = Arc::new(Engine::new(PhysicsConfig::default())?);
        let mut cfg = SyncConfig::for_node(format!("node-{i}"));
        cfg.namespace = namespace.clone();
        cfg.pulse = PULSE;
        cfg.node_ttl = Duration::from_secs(60);
        cfg.full_sync = Duration::from_secs(600);
        cfg.deadband = a.deadband;
        cfg.second_look = a.second_look;
        let tally = Arc::new(Tally::default());
        let counted: Arc<dyn StateStore> = Arc::new(Counting::new(backend.connect().await?, tally.clone()));
        let manager = StateManager::start(engine.clone(), counted, cfg, clock.clone() as Arc<dyn Clock>).await?;
        nodes.push((engine, manager));
        tallies.push(tally);
    }
    let names: Vec<String> = (0..routes).map(|i| format!("GET /api/items/{i}")).collect();
    let bad = Telemetry::new(900.0, 1.0, 0.9)?;
    let engines: Arc<Vec<Arc<Engine>>> = Arc::new(nodes.iter().map(|(e, _)| e.clone()).collect());
    // Failures spread over the pulse on each changing route, so that its scar moves. A
    // load-balanced fleet: every node sees the same routes go bad.
    let load = |k: u64| {
        let now = clock.now();
        for engine in engines.iter() {
            for j in 0..dirty {
                let route = &names[(k as usize * dirty + j * 7) % routes];
                for t in 0..5u64 {
                    engine.report(route, bad, ago(now, 80 - 20 * t));
                }
            }
        }
    };
    // Warm-up, not counted: one round over every route, so that each route has every node's
    // share (a node joining a route is news once; the steady state is measured).
    let rounds = routes.div_ceil(dirty) as u64 + 2;
    for k in 0..rounds {
        load(k);
        tokio::time::sleep(PULSE).await;
    }
    let base: Vec<(u64, u64, u64, u64)> = tallies
        .iter()
        .map(|t| (t.ops.load(Relaxed), t.calls.load(Relaxed), t.bytes_out.load(Relaxed), t.bytes_in.load(Relaxed)))
        .collect();
    let stats0: Vec<_> = nodes.iter().map(|(_, m)| m.stats()).collect();
    let (cpu0, wall0) = (cpu(), Instant::now());
    let mut probes = Vec::new();
    for k in 0..a.pulses {
        let now = clock.now();
        load(rounds + k);
        // A fresh route scarred on one node: how long until every other node sees it.
        let writer = k as usize % n;
        let probe = format!("probe/{k}");
        for t in 0..50u64 {
            engines[writer].report(&probe, bad, ago(now, 98 - 2 * t));
        }
        let (engines, clock) = (engines.clone(), clock.clone());
        probes.push(tokio::spawn(async move {
            let start = Instant::now();
            let seen = |e: &Engine| e.cluster_scar(&probe, clock.now()).is_some_and(|s| s > 0.0);
            while start.elapsed() < Duration::from_secs(10) {
                if engines.iter().enumerate().all(|(i, e)| i == writer || seen(e)) {
                    return Some(start.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            None
        }));
        tokio::time::sleep(PULSE).await;
    }
    let (cpu1, wall) = (cpu(), wall0.elapsed());
    let pulses = wall.as_secs_f64() / PULSE.as_secs_f64();
    let per = |f: &dyn Fn(usize) -> u64| (0..n).map(f).sum::<u64>() as f64 / n as f64 / pulses;
    let row_ops = per(&|i| tallies[i].ops.load(Relaxed) - base[i].0);
    let row_calls = per(&|i| tallies[i].calls.load(Relaxed) - base[i].1);
    let row_out = per(&|i| tallies[i].bytes_out.load(Relaxed) - base[i].2);
    let row_in = per(&|i| tallies[i].bytes_in.load(Relaxed) - base[i].3);
    let stats1: Vec<_> = nodes.iter().map(|(_, m)| m.stats()).collect();
    let pushed = per(&|i| stats1[i].pushed - stats0[i].pushed);
    let deadbanded = per(&|i| stats1[i].deadbanded - stats0[i].deadbanded);
    let outranked = per(&|i| stats1[i].outranked - stats0[i].outranked);
    let resyncs = (0..n).map(|i| stats1[i].resyncs - stats0[i].resyncs).sum::<u64>() as f64 / n as f64;
    let sum = |f: &dyn Fn(&atrion_sync::SyncStats) -> u64| (0..n).map(|i| f(&stats1[i])).sum::<u64>();
    eprintln!(
        "  n={n} routes={routes}: pulses {} store_errors {} degraded {} rebuilds {} decode_errors {} pulled {}",
        sum(&|s| s.pulses),
        sum(&|s| s.store_errors),
        sum(&|s| u64::from(s.degraded)),
        sum(&|s| s.rebuilds),
        sum(&|s| s.decode_errors),
        sum(&|s| s.pulled)
    );
    let mut times = Vec::new();
    let mut unconverged = 0;
    for p in probes {
        match p.await? {
            Some(t) => times.push(t.as_secs_f64() / PULSE.as_secs_f64()),
            None => unconverged += 1,
        }
    }
    times.sort_by(f64::total_cmp);
    for (_, m) in nodes {
        m.shutdown().await;
    }
    Ok(Row {
        store: store.to_owned(),
        nodes: n,
        routes,
        dirty_per_node: dirty,
        pulses: a.pulses,
        ops: row_ops,
        calls: row_calls,
        bytes_out: row_out,
        bytes_in: row_in,
        cpu_ms: (cpu1 - cpu0).as_secs_f64() * 1e3 / n as f64 / pulses,
        pushed,
        deadbanded,
        outranked,
        resyncs,
        converge_p50: percentile(&times, 0.5),
        converge_p99: percentile(&times, 0.99),
        unconverged,
    })
}

/// `fleet --plot OUT.svg LABEL=ROWS.json...`: the chart of cost against the number of nodes,
/// one line per file and route count.
fn plot(out: &str, inputs: &[String]) -> anyhow::Result<()> {
    use atrion_bench::plot::{panel, read_rows};
    let mut series: Vec<(String, Vec<Row>)> = Vec::new();
    for (label, rows) in read_rows::<Row>(inputs)? {
        // A run where most probes never converged fell behind: its per-pulse figures mean
        // nothing, so it is left off the chart.
        let rows = rows.into_iter().filter(|r| r.unconverged * 2 <= r.pulses as usize);
        let mut by_routes: std::collections::BTreeMap<usize, Vec<Row>> = Default::default();
        for r in rows {
            by_routes.entry(r.routes).or_default().push(r);
        }
        for (routes, rows) in by_routes {
            series.push((format!("{label}, {routes} routes"), rows));
        }
    }
    let nodes = |r: &Row| r.nodes;
    let svg = atrion_sim::chart::lines_svg(
        "Cluster sync per node against the number of nodes (the runs of docs/SCALING.md)",
        "nodes",
        &[
            panel("store operations per node per pulse", "operations", &series, nodes, |r| r.ops),
            panel("bytes received per node per pulse (reads and change notices)", "bytes", &series, nodes, |r| {
                r.bytes_in
            }),
            panel(
                "convergence p99, write on one node to the merged view on all (pulses)",
                "pulses",
                &series,
                nodes,
                |r| r.converge_p99,
            ),
        ],
    )?;
    std::fs::write(out, svg)?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--plot") {
        let out = argv.get(2).context("--plot OUT.svg LABEL=ROWS.json...")?;
        return plot(out, &argv[3..]);
    }
    let a = args()?;
    let backend = match a.store.as_str() {
        "memory" => Backend::Memory(InMemoryStore::new()),
        "redis" => Backend::Redis(RedisServer::start().context("redis-server is needed")?),
        _ => Backend::Cluster(RedisCluster::start().context("redis-server and redis-cli are needed")?),
    };
    println!(
        "store {}, {} pulses of {PULSE:?}, {:.0}% of routes reported failing per node per pulse, deadband {} ohm, second look {}",
        a.store,
        a.pulses,
        a.dirty * 100.0,
        a.deadband,
        a.second_look
    );
    println!(
        "| nodes | routes | store ops / node / pulse | round trips | bytes out | bytes in | CPU ms / node / pulse | pushed | deadbanded | outranked | resyncs / node | convergence p50 / p99 (pulses) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut rows = Vec::new();
    for &routes in &a.routes {
        for &n in &a.nodes {
            let r = run(&backend, &a.store, n, routes, &a).await?;
            println!(
                "| {} | {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} / {:.2}{} |",
                r.nodes,
                r.routes,
                r.ops,
                r.calls,
                r.bytes_out,
                r.bytes_in,
                r.cpu_ms,
                r.pushed,
                r.deadbanded,
                r.outranked,
                r.resyncs,
                r.converge_p50,
                r.converge_p99,
                if r.unconverged > 0 { format!(" ({} never)", r.unconverged) } else { String::new() }
            );
            rows.push(r);
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
