//! `atrion simulate` and `atrion stability-map` end to end: the real binary, its exit codes,
//! its files.

use std::process::{Command, Output};

fn atrion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atrion")).args(args).output().expect("the atrion binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn flapping_prints_the_reference_figures_and_writes_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = atrion(&["simulate", "--scenario", "flapping", "--no-progress", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.contains("breaker") && text.contains("49"), "{text}");
    assert!(text.contains("[pass] atrion-reference transitions = 1 == 1"), "{text}");
    let svg = std::fs::read_to_string(dir.path().join("flapping.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
}

#[test]
fn series_are_written_for_plotting_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = atrion(&["simulate", "--scenario", "rate-10", "--series", "--no-charts", "--json", "--out", d]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(dir.path().join("rate-10.series.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["bin_ms"], 100.0);
    let bins = doc["controllers"][0]["bins"].as_array().unwrap();
    assert_eq!(bins.len(), 700, "70 s in 100 ms bins");
    let offered: u64 = bins.iter().map(|b| b["offered"].as_u64().unwrap()).sum();
    // 10 requests per second for 70 s, the first one gap (100 ms) after the start.
    assert_eq!(offered, 699);
}

#[test]
fn json_is_one_document_with_a_summary_per_controller() {
    let out = atrion(&["simulate", "--scenario", "cb-recovery", "--quick", "--json", "--no-charts", "--seed", "3"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &doc[0];
    assert_eq!(report["seed"], 3);
    let names: Vec<&str> =
        report["results"].as_array().unwrap().iter().map(|r| r["controller"].as_str().unwrap()).collect();
    assert_eq!(names, atrion_sim::ControllerKind::names(), "every controller, in table order");
    assert!(report["results"][0]["summary"]["goodput"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_failed_criterion_exits_1_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strict.toml");
    std::fs::write(
        &file,
        r#"
name = "strict"
description = "asks for the impossible"
duration_s = 5
[[route]]
name = "a"
service = { dist = "constant", mean_ms = 5 }
traffic = { pattern = "constant", rps = 100 }
[[expect]]
controller = "none"
metric = "goodput"
min = 1000.0
"#,
    )
    .unwrap();
    let out = atrion(&["simulate", "--scenario", file.to_str().unwrap(), "--no-charts", "--no-progress"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("[FAIL] none goodput"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("criteria failed in: strict"));
}

#[test]
fn bad_input_is_a_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "name = \"bad\"\ndescription = \"x\"\n[[route]]\nname = \"a\"\nworkers = 0\nservice = { dist = \"constant\", mean_ms = 5 }\n").unwrap();
    for (args, needle) in [
        (vec!["simulate", "--scenario", file.to_str().unwrap()], "route[0].workers"),
        (vec!["simulate", "--scenario", "no-such-thing"], "no scenario named"),
        (vec!["simulate"], "--all"),
        (vec!["simulate", "--scenario", "flapping", "--set", "nobody.x=1"], "unknown controller"),
        (vec!["simulate", "--scenario", "flapping", "--set", "atrion-default.scar_decay=-1"], "scar_decay"),
    ] {
        let out = atrion(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn set_overrides_a_controller_setting() {
    let run = |extra: &[&str]| {
        let mut args = vec!["simulate", "--scenario", "flapping", "--json", "--no-charts"];
        args.extend_from_slice(extra);
        let doc: serde_json::Value = serde_json::from_slice(&atrion(&args).stdout).unwrap();
        doc[0]["results"][0]["summary"]["transitions"].as_u64().unwrap()
    };
    assert_eq!(run(&[]), 49);
    // A 10-tick cooldown instead of 3: far fewer transitions.
    assert!(run(&["--set", "breaker.open_ms=1000"]) < 30);
}

#[test]
fn stability_map_reproduces_90_2_percent_and_writes_heat_maps() {
    let dir = tempfile::tempdir().unwrap();
    let out = atrion(&["stability-map", "--json", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mean = doc[0]["map"]["mean"].as_f64().unwrap();
    assert_eq!(format!("{:.1}", mean * 100.0), "90.2");
    assert_eq!(doc[1]["input"], "unsaturated");
    assert!(dir.path().join("stability-reference-saturated.svg").exists());
    assert!(dir.path().join("stability-reference-unsaturated.svg").exists());
}

#[test]
fn stability_map_takes_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grid.toml");
    std::fs::write(
        &file,
        r#"
model = "default"
lambda = { min = 0.1, max = 1.0, steps = 2 }
sigma = { min = 1.0, max = 5.0, steps = 3 }
ticks = 50
tick_ms = 100.0
latency = { constant = 500.0 }
error = { constant = 0.5 }
saturation = { constant = 0.9 }
max_variance = 100.0
"#,
    )
    .unwrap();
    let out =
        atrion(&["stability-map", "--config", file.to_str().unwrap(), "--json", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 1);
    assert_eq!(doc[0]["map"]["scores"].as_array().unwrap().len(), 2);
    assert_eq!(doc[0]["map"]["scores"][0].as_array().unwrap().len(), 3);
    std::fs::write(&file, "model = \"default\"\n").unwrap();
    let out = atrion(&["stability-map", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed"));
}
