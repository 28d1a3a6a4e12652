//! A sustained decide + report load against the default file store: the store is healthy,
//! so `/readyz` never reads degraded and the sync counts no store error, whatever the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Serve, eventually, free_port};

/// Routes the load spreads over: each pulse has that many changed routes to push.
const ROUTES: usize = 300;
/// Concurrent clients of the load.
const CLIENTS: usize = 8;
/// `/readyz` samples taken during the load, one every 200 ms.
const SAMPLES: u32 = 50;

/// A sync counter from `/metrics`.
async fn sync_counter(s: &Serve, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", s.url)).await.ok()?.text().await.ok()?;
    let line = format!("atrion_sync_{name}_total ");
    text.lines().find_map(|l| l.strip_prefix(line.as_str()))?.trim().parse().ok()
}

/// One client: decide, then report through the ticket, a third of the time a failure, so
/// that scar moves on every route and every pulse has writes to make.
async fn client(url: String, n: usize, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let http = reqwest::Client::new();
    let mut i = n;
    while !stop.load(Relaxed) {
        i = i.wrapping_add(CLIENTS);
        let route = format!("GET /load/{}", i % ROUTES);
        let Ok(r) = http.post(format!("{url}/v1/decide")).json(&json!({"route": route})).send().await else { continue };
        let Ok(d) = r.json::<Value>().await else { continue };
        let report = match d["ticket"].as_str() {
            Some(t) => json!({"ticket": t, "ok": i % 3 != 0}),
            None => json!({"route": route, "latency_ms": 900, "ok": i % 3 != 0}),
        };
        let _ = http.post(format!("{url}/v1/report")).json(&report).send().await;
        done.fetch_add(1, Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_file_store_never_reads_degraded_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.redb").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Serve::start(&["--listen", &listen, "--store", &store, "--node-id", "loaded"], &[]);
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> =
        (0..CLIENTS).map(|n| tokio::spawn(client(s.url.clone(), n, stop.clone(), done.clone()))).collect();
    // Sampled while the load runs: every route has been pushed at least once, twice over.
    let (mut samples, mut degraded) = (0, 0);
    let http = reqwest::Client::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ready: Value = http.get(format!("{}/readyz", s.url)).send().await.unwrap().json().await.unwrap();
        samples += 1;
        degraded += u32::from(ready["degraded"] == json!(true));
        if samples >= SAMPLES {
            break;
        }
    }
    stop.store(true, Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(done.load(Relaxed) > 500, "the load ran: {} decide + report", done.load(Relaxed));
    let errors = sync_counter(&s, "store_errors").await.unwrap();
    let pushed = sync_counter(&s, "pushed").await.unwrap();
    eprintln!(
        "load: {} decide + report, {pushed} pushed, {degraded} of {samples} degraded, {errors} store errors",
        done.load(Relaxed)
    );
    assert_eq!((degraded, errors), (0, 0.0), "{degraded} of {samples} samples read degraded; store errors");
    let ready = eventually("readyz answers", || async { Some(s.get("/readyz").await) }).await;
    assert_eq!(ready["degraded"], json!(false));
    s.stop();
}
