//! `atrion replay` end to end: the real binary on the shipped sample traces.

use std::path::PathBuf;
use std::process::{Command, Output};

fn traces() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/traces")
}

fn atrion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atrion")).args(args).output().expect("the atrion binary runs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = atrion(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON document")
}

fn route<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["routes"].as_array().unwrap().iter().find(|r| r["route"] == name).unwrap()
}

fn modes(route: &serde_json::Value) -> Vec<(String, String)> {
    route["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].as_str().unwrap().to_owned(), t["to"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn outage_trips_and_recovers_on_the_default_model() {
    let path = traces().join("checkout-outage.jsonl");
    let report = json(&["replay", path.to_str().unwrap(), "--json"]);
    assert_eq!(report["rows"], 9_000);
    assert_eq!(report["malformed"], 0);
    let checkout = route(&report, "GET /checkout");
    let m = modes(checkout);
    assert!(m.contains(&("operational".into(), "open".into())), "{m:?}");
    assert!(m.contains(&("open".into(), "half_open".into())), "{m:?}");
    assert_eq!(m.last().unwrap(), &("half_open".to_owned(), "operational".to_owned()), "recovers: {m:?}");
    // It trips within two seconds of the outage (at 30 s: errors must pass their tolerance,
    // and the latency is first the throttle's) and sheds while down.
    let trip = checkout["transitions"].as_array().unwrap().iter().find(|t| t["to"] == "open").unwrap();
    let at = trip["at_ms"].as_f64().unwrap();
    assert!((30_000.0..32_000.0).contains(&at), "{at}");
    // 750 checkout requests fall inside the outage (30 s to 45 s, 50 per second).
    assert!(checkout["shed"].as_u64().unwrap() > 600, "{}", checkout["shed"]);
    assert!(checkout["peak_resistance"].as_f64().unwrap() > 30.0);
    // The healthy route is never touched.
    let search = route(&report, "GET /search");
    assert_eq!(search["shed"], 0);
    assert_eq!(modes(search), vec![("bootstrap".to_owned(), "operational".to_owned())]);
}

#[test]
fn the_reference_model_shows_its_flaws_on_the_same_trace() {
    let path = traces().join("checkout-outage.jsonl");
    let report = json(&["replay", path.to_str().unwrap(), "--json", "--model", "reference"]);
    assert_eq!(report["model"], "reference");
    // Per-request outcomes against a 1% target saturate pressure on every background
    // error, and per-update trauma piles up: the healthy route is shed too.
    let search = route(&report, "GET /search");
    assert!(search["shed"].as_u64().unwrap() > 1_000, "{search}");
    // Fed every row, it trips at the outage, and closes only when telemetry says so.
    let report = json(&["replay", path.to_str().unwrap(), "--json", "--model", "reference", "--feed", "all"]);
    let checkout = route(&report, "GET /checkout");
    let m = modes(checkout);
    assert!(m.contains(&("operational".into(), "open".into())), "{m:?}");
    assert!(!m.iter().any(|(_, to)| to == "half_open"), "the reference has no half-open: {m:?}");
}

#[test]
fn csv_traces_and_the_text_report() {
    let path = traces().join("latency-ramp.csv");
    let out = atrion(&["replay", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("route db"), "{text}");
    assert!(text.contains("operational -> open"), "{text}");
    assert!(text.contains("peak R"), "{text}");
}

#[test]
fn malformed_rows_are_reported_with_line_numbers_and_fail_the_run() {
    let path = traces().join("malformed.jsonl");
    let out = atrion(&["replay", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    for (line, what) in [(2, "latency_ms"), (3, "saturation"), (4, "malformed JSON"), (5, "unknown priority")] {
        assert!(stderr.contains(&format!("line {line}: ")) && stderr.contains(what), "line {line}: {stderr}");
    }
    assert!(stderr.contains("4 malformed row(s) skipped"), "{stderr}");
    // The good rows were still replayed.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 2);
}

#[test]
fn missing_files_and_bad_configs_are_clear_errors() {
    let out = atrion(&["replay", "/nonexistent/trace.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening /nonexistent/trace.jsonl"));

    let dir = std::env::temp_dir().join(format!("atrion-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "r_base = -1.0\n").unwrap();
    let trace = traces().join("flapping.csv");
    let out = atrion(&["replay", trace.to_str().unwrap(), "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("r_base"), "{stderr}");
    std::fs::write(&bad, "r_bsae = 1.0\n").unwrap();
    let out = atrion(&["replay", trace.to_str().unwrap(), "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("r_bsae"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_prints_a_complete_config_that_replay_accepts() {
    let dir = std::env::temp_dir().join(format!("atrion-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for model in ["reference", "default"] {
        let out = atrion(&["config", "--model", model]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&format!("model = \"{model}\"")), "{text}");
        let file = dir.join(format!("{model}.toml"));
        std::fs::write(&file, &text).unwrap();
        let trace = traces().join("flapping.csv");
        let via_config = json(&["replay", trace.to_str().unwrap(), "--json", "--config", file.to_str().unwrap()]);
        let via_model = json(&["replay", trace.to_str().unwrap(), "--json", "--model", model]);
        assert_eq!(via_config["routes"], via_model["routes"], "{model}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_atrion"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from another thread: the child may stop reading early.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn stdin_is_read_whole_and_a_directory_or_an_empty_input_is_a_clear_error() {
    let path = traces().join("checkout-outage.jsonl");
    let text = std::fs::read(&path).unwrap();
    let from_file = json(&["replay", path.to_str().unwrap(), "--json"]);
    let out = run_with_stdin(&["replay", "-", "--json"], &text);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_stdin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_stdin["rows"], from_file["rows"], "no byte of a piped input is lost");
    assert_eq!(from_stdin["routes"], from_file["routes"]);

    let dir = tempfile::tempdir().unwrap();
    let out = atrion(&["replay", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a directory") && err.contains(dir.path().to_str().unwrap()), "{err}");

    for (name, content) in
        [("empty.jsonl", ""), ("empty", ""), ("header.csv", "timestamp_ms,route,latency_ms,error,saturation\n")]
    {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let out = atrion(&["replay", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("has no rows"), "{name}");
    }
}

#[test]
fn an_endless_input_stops_with_bounded_memory() {
    // /dev/zero as a trace: one endless line.
    let out = atrion(&["replay", "/dev/zero", "--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("longer than") && err.contains("not a trace"), "{err}");
}

#[test]
fn unclear_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let array =
        write("array.json", r#"[{"timestamp_ms": 1, "route": "a", "latency_ms": 1, "error": 0, "saturation": 0}]"#);
    let err = String::from_utf8(atrion(&["replay", &array]).stderr).unwrap();
    assert!(err.contains("a JSON array") && err.contains("jq -c"), "{err}");

    let bad_header = write("bad.csv", "timestamp_ms,route,latency,error,saturation\n1,a,1,0,0\n");
    let out = atrion(&["replay", &bad_header]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown column `latency`") && !err.contains("malformed row"), "{err}");

    let bom = write(
        "bom.jsonl",
        "\u{feff}{\"timestamp_ms\": 1, \"route\": \"a\", \"latency_ms\": 1, \"error\": 0, \"saturation\": 0}\n",
    );
    assert!(atrion(&["replay", &bom]).status.success());

    let config = write("bad.toml", "r_base = -1.0\n");
    let out = atrion(&["replay", &bom, "--config", &config]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("invalid physics config").count(), 1, "said once: {err}");
}

#[test]
fn epoch_milliseconds_are_exact_and_microseconds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = traces().join("checkout-outage.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    // The same trace at an epoch: every timestamp plus 1.7e12 ms.
    const EPOCH: u64 = 1_700_000_000_000;
    let mut shifted = String::new();
    let mut micros = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["timestamp_ms"].as_f64().unwrap();
        assert_eq!(t.fract(), 0.0, "the sample trace is in whole milliseconds");
        v["timestamp_ms"] = serde_json::json!(EPOCH + t as u64);
        shifted.push_str(&format!("{v}\n"));
        v["timestamp_ms"] = serde_json::json!((EPOCH + t as u64) * 1_000);
        micros.push_str(&format!("{v}\n"));
    }
    let (a, b) = (dir.path().join("epoch.jsonl"), dir.path().join("micros.jsonl"));
    std::fs::write(&a, shifted).unwrap();
    std::fs::write(&b, &micros).unwrap();
    let base = json(&["replay", path.to_str().unwrap(), "--json"]);
    let epoch = json(&["replay", a.to_str().unwrap(), "--json"]);
    for (r0, r1) in base["routes"].as_array().unwrap().iter().zip(epoch["routes"].as_array().unwrap()) {
        // The physics sees the same intervals, to the nanosecond: identical resistance.
        assert_eq!(r0["peak_resistance"], r1["peak_resistance"]);
        assert_eq!(r0["shed"], r1["shed"]);
        let (t0, t1) = (r0["transitions"].as_array().unwrap(), r1["transitions"].as_array().unwrap());
        assert_eq!(t0.len(), t1.len());
        for (x, y) in t0.iter().zip(t1) {
            assert_eq!(x["resistance"], y["resistance"]);
            assert_eq!(y["at_ms"].as_f64().unwrap(), x["at_ms"].as_f64().unwrap() + EPOCH as f64, "whole ms");
        }
    }
    // Epoch microseconds in the millisecond column: every row refused, exit 1, with the fix.
    let out = atrion(&["replay", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("does not look like ms") && err.contains("--time-unit us"), "{err}");
    let told = json(&["replay", b.to_str().unwrap(), "--time-unit", "us", "--json"]);
    assert_eq!(told["routes"], epoch["routes"]);
}

#[test]
fn routes_merged_into_the_overflow_are_said_so_and_the_report_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let long = "x".repeat(1_100);
    for i in 0..200u64 {
        let route = if i % 50 == 0 { long.clone() } else { format!("r{}", i % 20) };
        text.push_str(&format!(
            "{{\"timestamp_ms\": {i}, \"route\": \"{route}\", \"latency_ms\": 5, \"error\": 0, \"saturation\": 0.1}}\n"
        ));
    }
    let p = dir.path().join("many.jsonl");
    std::fs::write(&p, text).unwrap();
    let out = atrion(&["replay", p.to_str().unwrap(), "--json", "--max-routes", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["routes"].as_array().unwrap().len(), 8, "bounded by --max-routes");
    assert!(report["routes"].as_array().unwrap().iter().all(|r| !r["final_mode"].is_null()));
    let overflow = &report["overflow"];
    let tracked: u64 = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["admitted"].as_u64().unwrap() + r["shed"].as_u64().unwrap())
        .sum();
    assert_eq!(tracked + overflow["rows"].as_u64().unwrap(), 200, "every row is counted once");
    assert!(overflow["rows"].as_u64().unwrap() >= 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("shared overflow route"));
    let out = atrion(&["replay", p.to_str().unwrap(), "--max-routes", "0"]);
    assert_eq!(out.status.code(), Some(2));
}
