//! Three `atrion node` processes share one store (a private Redis, then a private
//! PostgreSQL): one sees its route fail; the others' view of the route rises within two
//! pulses; after it heals, every node's view heals at the single-node rate (no echo).

use std::process::{Child, Command, Stdio};

use atrion_postgres::testing::PgServer;
use atrion_redis::testing::RedisServer;
use serde_json::Value;

const PULSE_MS: u64 = 50;

fn spawn(store: &str, node: &str, fail: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrion"));
    cmd.args(["node", "--store", store, "--node-id", node, "--namespace", "xproc", "--duration", "7"]).args([
        "--pulse-ms",
        &PULSE_MS.to_string(),
        "--every-ms",
        "20",
        "--rate",
        "200",
    ]);
    if let Some(f) = fail {
        cmd.args(["--fail", f]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("atrion node starts")
}

fn lines(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn field(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

/// First time (since the process started) at which `f` holds.
fn first(view: &[Value], f: impl Fn(&Value) -> bool) -> Option<f64> {
    view.iter().find(|v| f(v)).map(|v| field(v, "t"))
}

/// The time and the value of `k` at the first sample at or after `t`.
fn at(view: &[Value], t: f64, k: &str) -> (f64, f64) {
    view.iter()
        .find(|v| field(v, "t") >= t)
        .map(|v| (field(v, "t"), field(v, k)))
        .unwrap_or_else(|| panic!("no sample at {t}: {} lines, the last {:?}", view.len(), view.last()))
}

fn three_processes(store: &str) {
    // A fails from 1.0 s to 2.5 s; B and C stay healthy.
    let a = spawn(store, "a", Some("1.0..2.5"));
    let b = spawn(store, "b", None);
    let c = spawn(store, "c", None);
    // Read the three at once: a node blocked on a full pipe would stop sampling.
    let [a, b, c] = [a, b, c].map(|child| std::thread::spawn(move || lines(child)));
    let (a, b, c) = (a.join().unwrap(), b.join().unwrap(), c.join().unwrap());

    // Processes start at different moments: compare them on wall-clock time.
    let wall = |view: &[Value], f: &dyn Fn(&Value) -> bool| view.iter().find(|v| f(v)).map(|v| field(v, "wall_ms"));
    let hurt = wall(&a, &|v| field(v, "local_scar") > 1.0).expect("A is scarred");
    // A's first scar at all: nothing can reach another node before it.
    let first_scar = wall(&a, &|v| field(v, "local_scar") > 0.0).expect("A is scarred");
    for (name, view) in [("b", &b), ("c", &c)] {
        let seen = wall(view, &|v| field(v, "cluster_scar") > 0.5).unwrap_or_else(|| panic!("{name} never sees it"));
        // The order of events, not their speed (two pulses on an idle machine; printed).
        // (Less one 20 ms print interval: A's views are samples.)
        assert!(seen >= first_scar - 20.0, "{name} saw A's scar before it rose");
        eprintln!(
            "{name} saw A's scar {:.0} ms ({:.1} pulses) after it rose",
            seen - hurt,
            (seen - hurt) / PULSE_MS as f64
        );
        assert!(first(view, |v| field(v, "resistance") > 10.0).is_some(), "{name}'s resistance rises");
        // No echo: B and C only ever publish their own (healthy) state.
        assert!(view.iter().all(|v| field(v, "local_scar") == 0.0), "{name} has no scar of its own");
    }
    assert!(a.iter().all(|v| field(v, "cluster_scar") < 1e-9), "A's cluster view stays empty: nothing echoed");

    // Healing, from 4.5 s to 6.5 s: everyone's view shrinks by e^(-lambda dt), as on one node
    // (dt between the samples actually taken, whatever the machine's pace).
    let lambda = atrion::PhysicsConfig::default().scar_decay;
    let ratio = |view: &[Value], k: &str| {
        let ((t0, v0), (t1, v1)) = (at(view, 4.5, k), at(view, 6.5, k));
        (v1 / v0, (-lambda * (t1 - t0)).exp())
    };
    let (a_ratio, expected) = ratio(&a, "local_scar");
    assert!((a_ratio / expected - 1.0).abs() < 0.15, "A heals at {a_ratio} (one node: {expected})");
    for (name, view) in [("b", &b), ("c", &c)] {
        let (r, expected) = ratio(view, "cluster_scar");
        assert!((r / expected - 1.0).abs() < 0.15, "{name} heals at {r} (one node: {expected})");
    }
}

#[test]
fn three_processes_converge_through_redis() {
    let Some(server) = RedisServer::start() else { return };
    three_processes(&server.url());
}

#[test]
fn three_processes_converge_through_postgres() {
    let Some(server) = PgServer::start() else { return };
    three_processes(&server.url());
}

#[test]
fn node_flags_are_validated_before_anything_starts() {
    let long = "r".repeat(1_020);
    for (flags, says) in [
        (vec!["--rate", "1e-20"], "--rate 0.00000000000000000001: expected requests per second"),
        (vec!["--rate", "NaN"], "--rate NaN"),
        (vec!["--duration", "1e300"], "--duration"),
        (vec!["--route", ""], "--route is 0 bytes"),
        (vec!["--route", long.as_str()], "--route is 1020 bytes"),
        (vec!["--fail", "a..b"], "FROM \"a\" is not a number"),
        (vec!["--fail", "5"], "expected FROM..UNTIL"),
        (vec!["--pulse-ms", "0"], "--pulse-ms 0"),
        (vec!["--namespace", "a/b"], "namespace"),
    ] {
        // Nothing listens on port 1: a run that got past validation would fail to connect.
        let mut args = vec!["node", "--store", "redis://127.0.0.1:1", "--node-id", "a"];
        args.extend(&flags);
        let out = Command::new(env!("CARGO_BIN_EXE_atrion")).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}
