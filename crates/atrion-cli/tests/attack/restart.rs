//! Restarts with holds and tripped routes (issue 25, defect 5): an operator's hold and an
//! open route survive SIGTERM and SIGKILL on the default file store. What the process had
//! not yet written when killed is at most one pulse; a hold is written at once, and the
//! tests wait for the write (`atrion_sync_records_total`), never for a guessed time.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Serve, eventually, free_port};

const TOKEN: &str = "0123456789abcdef-restart";

/// A sidecar on the file store in `dir`, with an admin token.
fn serve(dir: &tempfile::TempDir, listen: &str) -> Serve {
    let store = format!("file:{}", dir.path().join("state.redb").display());
    Serve::start(
        &["--listen", listen, "--store", &store, "--node-id", "restarted"],
        &[("ATRION_ADMIN_TOKENS", &format!("ops:{TOKEN}"))],
    )
}

/// This node's route records written or removed so far.
async fn records(s: &Serve) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", s.url)).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("atrion_sync_records_total "))?.trim().parse().ok()
}

/// Runs an admin action on `route` and waits until its record is in the store.
async fn act(s: &Serve, action: &str, route: &str) {
    let before = records(s).await.unwrap_or(0.0);
    let (status, body) =
        s.admin(Method::POST, &format!("/v1/admin/{action}"), TOKEN, Some(json!({"route": route}))).await;
    assert_eq!(status, 200, "{action} {route}: {body}");
    eventually("the hold reaches the store", || async { (records(s).await? > before).then_some(()) }).await;
}

async fn decide(s: &Serve, route: &str) -> Value {
    s.post("/v1/decide", json!({"route": route})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_survive_sigterm_and_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let s = serve(&dir, &listen);
    act(&s, "open", "GET /held-open").await;
    act(&s, "close", "GET /held-closed").await;
    act(&s, "open", "GET /released").await;
    act(&s, "release", "GET /released").await;
    s.stop();

    let s = serve(&dir, &listen);
    let d = decide(&s, "GET /held-open").await;
    assert_eq!((d["verdict"].as_str(), d["reason"].as_str()), (Some("shed"), Some("held")), "after SIGTERM: {d}");
    let d = decide(&s, "GET /held-closed").await;
    assert_eq!((d["verdict"].as_str(), d["reason"].as_str()), (Some("admit"), Some("held")), "{d}");
    let d = decide(&s, "GET /released").await;
    assert_ne!(d["reason"], "held", "a released hold stays released: {d}");
    // Changed, then killed without a word once the change reached the store.
    act(&s, "open", "GET /killed-open").await;
    act(&s, "release", "GET /held-closed").await;
    s.kill();

    let s = serve(&dir, &listen);
    for (route, verdict) in [("GET /killed-open", "shed"), ("GET /held-open", "shed")] {
        let d = decide(&s, route).await;
        assert_eq!((d["verdict"].as_str(), d["reason"].as_str()), (Some(verdict), Some("held")), "after SIGKILL: {d}");
    }
    let d = decide(&s, "GET /held-closed").await;
    assert_ne!(d["reason"], "held", "released before the kill: {d}");
    s.stop();
}

/// Reports failures on `route` until it trips open.
async fn trip(s: &Serve, route: &str) {
    eventually("the route trips open", || async {
        let r = s.post("/v1/report", json!({"route": route, "latency_ms": 900, "ok": false, "saturation": 0.9})).await;
        (r["mode"] == "open").then_some(())
    })
    .await;
}

/// A restarted route must not be in bootstrap: open (shedding, but for a scout) or
/// half-open (admitting only probes).
fn not_bootstrap(d: &Value, when: &str) {
    let mode = d["mode"].as_str().unwrap_or_default();
    assert!(mode == "open" || mode == "half_open", "{when}: back in {mode}: {d}");
    if d["verdict"] == "admit" {
        assert_eq!(d["reason"], "probe", "{when}: only probes are admitted: {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_route_comes_back_open_after_sigterm_and_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let s = serve(&dir, &listen);
    trip(&s, "GET /pay").await;
    s.stop();

    let s = serve(&dir, &listen);
    let d = decide(&s, "GET /pay").await;
    not_bootstrap(&d, "after SIGTERM");
    // A burst onto it admits no more than the probes.
    let mut admitted = 0;
    for _ in 0..50 {
        admitted += u32::from(decide(&s, "GET /pay").await["verdict"] == "admit");
    }
    assert!(admitted < 50, "a burst was admitted whole");

    // Tripped again, and killed once the pulse wrote it.
    let before = records(&s).await.unwrap_or(0.0);
    trip(&s, "GET /orders").await;
    eventually("the open route reaches the store", || async { (records(&s).await? > before).then_some(()) }).await;
    s.kill();

    let s = serve(&dir, &listen);
    let d = decide(&s, "GET /orders").await;
    not_bootstrap(&d, "after SIGKILL");
    s.stop();
}
