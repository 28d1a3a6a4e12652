//! A real Prometheus scrapes `atrion serve`: after known traffic, a PromQL query through
//! Prometheus' HTTP API returns Atrion's series with the expected values.
//!
//! Needs the `prometheus` binary (`scripts/test` installs the Debian package); with
//! `ATRION_SKIP_SERVICES=1` set by hand, a missing binary skips the test with a reason.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Serve, free_port};
use serde_json::{Value, json};

/// Kills the child when dropped, so that a failing assertion leaves no process behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_binary() -> Option<&'static str> {
    let found = Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some("prometheus");
    }
    if std::env::var("ATRION_SKIP_SERVICES").as_deref() == Ok("1") {
        eprintln!("skipped: `prometheus` is not installed and ATRION_SKIP_SERVICES=1");
        return None;
    }
    panic!("`prometheus` is not installed (apt-get install prometheus; scripts/test does it)");
}

/// Polls `query` until `ok` accepts its vector, for at most a minute.
async fn until(base: &str, query: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut last = Value::Null;
    for _ in 0..240 {
        if let Ok(r) = client.get(format!("{base}/api/v1/query")).query(&[("query", query)]).send().await
            && let Ok(body) = r.json::<Value>().await
        {
            if let Some(v) = body["data"]["result"].as_array()
                && ok(v)
            {
                return v.clone();
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{query}: never as expected; last answer {last}");
}

fn value(series: &[Value]) -> f64 {
    series.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_sidecar() {
    let Some(prometheus) = prometheus_binary() else { return };
    let sidecar = format!("127.0.0.1:{}", free_port());
    let _serve = Serve::start(&["--store", "memory", "--listen", &sidecar], &[]);
    let base = format!("http://{sidecar}");
    let client = reqwest::Client::new();
    // Known traffic: 5 decisions on one route (all admitted: a new route learns), 3 reports.
    for _ in 0..5 {
        let d: Value = client
            .post(format!("{base}/v1/decide"))
            .json(&json!({"route": "GET /m"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["verdict"], "admit", "{d}");
    }
    for _ in 0..3 {
        let r = client
            .post(format!("{base}/v1/report"))
            .json(&json!({"route": "GET /m", "latency_ms": 20, "ok": true}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        r#"atrion_decisions_total{route="GET /m",verdict="admit",reason="bootstrap"} 5"#,
        r#"atrion_route_mode{route="GET /m",mode="bootstrap"} 1"#,
        "atrion_sync_degraded 0",
        "# TYPE atrion_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "/metrics lacks `{needle}`:\n{text}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: atrion\n    static_configs:\n      - targets: ['{sidecar}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let _prometheus = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let prom = format!("http://{web}");
    let admitted =
        until(&prom, r#"sum(atrion_decisions_total{job="atrion",route="GET /m",verdict="admit"})"#, |v| !v.is_empty())
            .await;
    assert_eq!(value(&admitted), 5.0);
    let mode = until(&prom, r#"atrion_route_mode{route="GET /m",mode="bootstrap"}"#, |v| !v.is_empty()).await;
    assert_eq!(value(&mode), 1.0);
    // The scrapes themselves are requests: the histogram counts them by path template.
    let scrapes =
        until(&prom, r#"sum(atrion_http_request_duration_seconds_count{path="/metrics"})"#, |v| value(v) >= 1.0).await;
    assert!(value(&scrapes) >= 1.0);
}
