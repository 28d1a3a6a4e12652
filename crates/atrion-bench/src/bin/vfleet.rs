//! The cluster sync as a fleet in virtual time (`atrion_bench::vfleet`): N real
//! `StateManager`s over a model of one shared store (a single server that serves one
//! operation after another, 13 µs per share written by default, with a round trip and a
//! notice delay), on tokio's paused clock: the CPU time of this process does not count, so
//! what the table shows is the protocol and the model, whatever the machine.
//!
//! Per node per pulse: store operations (one per key read or written), round trips, bytes
//! out and in (notices included), notices received; the whole fleet's store operations and
//! notice deliveries per pulse, the server's busy fraction, full syncs; convergence p50 /
//! p99 / max in pulses (a probe route scarred on one node, until every other node's merged
//! view shows it). `--faults` adds a partition (a share of the nodes cut off, healed) and a
//! store restart (data lost, down for a while), and the pulses until every node converged
//! after each. Each row also says how long it took on this machine (`wall s`).
//!
//! Run: `cargo run --release -p atrion-bench --bin vfleet -- [--nodes 3,10,30,100,300,1000]
//! [--routes 1000,10000,100000] [--dirty 0.01,0.05] [--pulses 30] [--seed 1]
//! [--latency-us 100] [--share-us 13] [--key-us 5] [--delivery-us 1] [--notice-us 50]
//! [--deadband OHMS] [--second-look FRACTION] [--node-ttl SECS] [--full-sync SECS]
//! [--faults] [--partition-share 0.3] [--partition-pulses 20] [--restart-pulses 10]
//! [--json FILE]`; `vfleet --plot OUT.svg LABEL=ROWS.json...` draws rows written by `--json`.

use std::time::Duration;

use anyhow::{Context, bail};
use atrion_bench::vfleet::{Faults, Params, Row, run_paused};

struct Args {
    nodes: Vec<usize>,
    routes: Vec<usize>,
    dirty: Vec<f64>,
    base: Params,
    json: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        nodes: vec![3, 10, 30, 100],
        routes: vec![1_000],
        dirty: vec![0.01],
        base: Params::new(3, 1_000),
        json: None,
    };
    let mut faults = None::<Faults>;
    let list = |v: &str| v.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>();
    let us = |v: &str| v.parse::<f64>().map(|x| Duration::from_secs_f64(x / 1e6));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--faults" {
            faults.get_or_insert_with(Faults::default);
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let b = &mut a.base;
        match flag.as_str() {
            "--nodes" => a.nodes = list(&value)?,
            "--routes" => a.routes = list(&value)?,
            "--dirty" => a.dirty = value.split(',').map(str::parse).collect::<Result<Vec<f64>, _>>()?,
            "--pulses" => b.pulses = value.parse()?,
            "--seed" => b.seed = value.parse()?,
            "--latency-us" => b.model.latency = us(&value)?,
            "--share-us" => b.model.share_write = us(&value)?,
            "--key-us" => b.model.key_op = us(&value)?,
            "--delivery-us" => b.model.delivery = us(&value)?,
            "--notice-us" => b.model.notice_delay = us(&value)?,
            "--deadband" => b.deadband = value.parse()?,
            "--second-look" => b.second_look = value.parse()?,
            "--node-ttl" => b.node_ttl = Duration::from_secs_f64(value.parse()?),
            "--full-sync" => b.full_sync = Duration::from_secs_f64(value.parse()?),
            "--partition-share" => faults.get_or_insert_with(Faults::default).partition_share = value.parse()?,
            "--partition-pulses" => faults.get_or_insert_with(Faults::default).partition_pulses = value.parse()?,
            "--restart-pulses" => faults.get_or_insert_with(Faults::default).restart_pulses = value.parse()?,
            "--json" => a.json = Some(value),
            _ => bail!("unknown flag {flag}"),
        }
    }
    a.base.faults = faults;
    Ok(a)
}

fn pulses(x: Option<f64>) -> String {
    x.map_or_else(|| "never".into(), |x| format!("{x:.2}"))
}

/// `vfleet --plot OUT.svg LABEL=ROWS.json...`: convergence, the fleet's store operations
/// and the notices delivered against the number of nodes, one line per `--json` file (the
/// chart of docs/SCALING.md's issue-30 grid; drawn as `fleet --plot` draws its own).
fn plot(out: &str, inputs: &[String]) -> anyhow::Result<()> {
    use atrion_bench::plot::{panel, read_rows};
    let series: Vec<(String, Vec<Row>)> = read_rows(inputs)?;
    let nodes = |r: &Row| r.nodes;
    let svg = atrion_sim::chart::lines_svg(
        "The fleet in virtual time against the number of nodes (docs/SCALING.md, issue 30)",
        "nodes",
        &[
            panel("convergence p99 (pulses)", "pulses", &series, nodes, |r| r.converge_p99),
            panel("store operations per pulse, the whole fleet", "operations", &series, nodes, |r| r.total_ops),
            panel("notices the store delivers per pulse", "notices", &series, nodes, |r| r.deliveries),
        ],
    )?;
    std::fs::write(out, svg)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--plot") {
        let out = argv.get(2).context("--plot OUT.svg LABEL=ROWS.json...")?;
        return plot(out, &argv[3..]);
    }
    let a = args()?;
    let m = &a.base.model;
    println!(
        "virtual time, {} pulses of 100 ms, seed {}; store model: round trip {:?}, {:?} per share written, {:?} per other key op, {:?} per notice delivered, notices {:?} after the write; deadband {} ohm, second look {}, node_ttl {:?}, full_sync {:?}",
        a.base.pulses,
        a.base.seed,
        m.latency,
        m.share_write,
        m.key_op,
        m.delivery,
        m.notice_delay,
        a.base.deadband,
        a.base.second_look,
        a.base.node_ttl,
        a.base.full_sync
    );
    println!(
        "| nodes | routes | dirty/node | store ops / node / pulse | round trips | bytes out | bytes in | notices / node / pulse | store ops / pulse | deliveries / pulse (heartbeats, records, second leader only) | server busy | pushed | outranked | full syncs | convergence p50 / p99 / max (pulses) | partition healed in | restart healed in | wall s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    let mut rows: Vec<Row> = Vec::new();
    for &dirty in &a.dirty {
        for &routes in &a.routes {
            for &n in &a.nodes {
                let p = Params { nodes: n, routes, dirty, ..a.base.clone() };
                let r = run_paused(&p)?;
                println!(
                    "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} ({:.0}, {:.0}, {:.0}) | {:.1}% | {:.2} | {:.1} | {} | {:.2} / {:.2} / {:.2}{} | {} | {} | {:.1} |",
                    r.nodes,
                    r.routes,
                    r.dirty_per_node,
                    r.ops,
                    r.calls,
                    r.bytes_out,
                    r.bytes_in,
                    r.notices,
                    r.total_ops,
                    r.deliveries,
                    r.heartbeat_deliveries,
                    r.other_deliveries,
                    r.second_only_deliveries,
                    r.server_busy * 100.0,
                    r.pushed,
                    r.outranked,
                    r.full_syncs,
                    r.converge_p50,
                    r.converge_p99,
                    r.converge_max,
                    if r.unconverged > 0 { format!(" ({} never)", r.unconverged) } else { String::new() },
                    if p.faults.is_some() { pulses(r.partition_heal) } else { "-".into() },
                    if p.faults.is_some() {
                        format!("{} ({} republished)", pulses(r.restart_heal), r.republished)
                    } else {
                        "-".into()
                    },
                    r.wall_s
                );
                rows.push(r);
                if let Some(path) = &a.json {
                    std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
                }
            }
        }
    }
    Ok(())
}
