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
