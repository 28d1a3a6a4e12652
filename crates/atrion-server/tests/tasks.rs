//! Task leases over real TCP on loopback, on tokio's paused clock: one that completes, ones
//! that expire (by duration, by missed heartbeats, aborted by the sweeper) and answer `410`
//! after, the per-client bound, a shed task.

use std::sync::Arc;
use std::time::Duration;

mod common;

use atrion::Hold;
use atrion_server::{ServerConfig, SidecarAtrion};
use common::{post, start_with};
use serde_json::{Value, json};

async fn start() -> (Arc<SidecarAtrion>, String) {
    start_with(ServerConfig::default()).await
}

async fn delete(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new().delete(format!("{base}{path}")).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn slug(problem: &Value) -> &str {
    problem["type"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn a_task_that_completes_is_reported_and_its_id_is_gone_after() {
    let (atrion, base) = start().await;
    let (status, _, t) = post(&base, "/v1/tasks", r#"{"route": "reports/build", "priority": "low"}"#).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!((t["verdict"].as_str(), t["profile"].as_str()), (Some("admit"), Some("standard")));
    assert_eq!(t["expires_in_ms"], 30_000);
    assert!(t["heartbeat_within_ms"].is_null(), "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    assert_eq!(atrion.engine().active_leases("reports/build"), 1);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _, d) = post(&base, &format!("/v1/tasks/{id}/heartbeat"), "").await;
    assert_eq!((status, d["expires_in_ms"].as_u64()), (200, Some(28_000)), "{d}");
    let (status, _, c) = post(&base, &format!("/v1/tasks/{id}/complete"), r#"{"ok": true}"#).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!((c["outcome"].as_str(), c["duration_ms"].as_u64()), (Some("completed"), Some(2_000)));
    assert_eq!(atrion.engine().active_leases("reports/build"), 0);
    assert_eq!(atrion.engine().snapshot("reports/build").unwrap().updates, 1, "the completion was reported");

    // Ended: its id answers 410 from now on; an id this node never issued, 404.
    let (status, kind, p) = post(&base, &format!("/v1/tasks/{id}/heartbeat"), "").await;
    assert_eq!((status, kind.as_str(), slug(&p)), (410, "application/problem+json", "task-gone"), "{p}");
    let (status, p) = delete(&base, &format!("/v1/tasks/{id}")).await;
    assert_eq!((status, slug(&p)), (410, "task-gone"));
    let forged = format!("{}AAAA", &id[..id.len() - 4]);
    let (status, _, p) = post(&base, &format!("/v1/tasks/{forged}/complete"), r#"{"ok": true}"#).await;
    assert_eq!((status, slug(&p)), (404, "task-unknown"), "{p}");
    let (status, _, p) = post(&base, "/v1/tasks/t1.0000000100000000.x/heartbeat", "").await;
    assert_eq!((status, slug(&p)), (404, "task-unknown"), "{p}");
}

#[tokio::test(start_paused = true)]
async fn a_task_that_overruns_or_misses_its_heartbeats_answers_410_after() {
    let (atrion, base) = start().await;
    // Without a sweeper, the call that finds the task overdue aborts it.
    let (_, _, t) = post(&base, "/v1/tasks", r#"{"route": "video/transcode", "max_duration_ms": 1000}"#).await;
    let id = t["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, _, p) = post(&base, &format!("/v1/tasks/{id}/complete"), r#"{"ok": true}"#).await;
    assert_eq!((status, slug(&p)), (410, "task-gone"), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("longest duration"), "{p}");
    assert_eq!(atrion.engine().active_leases("video/transcode"), 0);
    assert_eq!(atrion.engine().snapshot("video/transcode").unwrap().updates, 1, "reported as a failure");

    // With the facade's sweeper (what `atrion serve` runs after `connect`), a task whose
    // holder stopped heartbeating is aborted with nobody calling.
    atrion.connect().await.unwrap();
    let body = json!({"route": "ml/train", "profile": "heavy", "max_duration_ms": 60_000}).to_string();
    let (status, _, t) = post(&base, "/v1/tasks", &body).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!((t["heartbeat_ms"].as_u64(), t["heartbeat_within_ms"].as_u64()), (Some(5_000), Some(15_000)));
    let id = t["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, _, d) = post(&base, &format!("/v1/tasks/{id}/heartbeat"), "").await;
    assert_eq!((status, d["heartbeat_within_ms"].as_u64()), (200, Some(15_000)), "{d}");
    for _ in 0..600 {
        if atrion.engine().active_leases("ml/train") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(atrion.engine().active_leases("ml/train"), 0, "the sweeper aborted it");
    assert_eq!(atrion.engine().snapshot("ml/train").unwrap().updates, 1, "reported as a failure");
    let (status, _, p) = post(&base, &format!("/v1/tasks/{id}/heartbeat"), "").await;
    assert_eq!((status, slug(&p)), (410, "task-gone"), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("missed its heartbeats"), "{p}");
    atrion.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn live_tasks_are_bounded_per_client() {
    let mut config = ServerConfig::default();
    config.max_tasks_per_client = 2;
    let (atrion, base) = start_with(config).await;
    let start_as = |client: &'static str| {
        let base = base.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/tasks"))
                .header("content-type", "application/json")
                .header("x-atrion-client", client)
                .body(r#"{"route": "etl"}"#)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (status, retry, r.json::<Value>().await.unwrap())
        }
    };
    let (_, _, first) = start_as("a").await;
    let (status, _, _) = start_as("a").await;
    assert_eq!(status, 200);
    let (status, retry, p) = start_as("a").await;
    assert_eq!((status, slug(&p), retry.as_deref()), (429, "too-many-tasks", Some("1")), "{p}");
    let (status, _, _) = start_as("b").await;
    assert_eq!(status, 200, "another client is not affected");
    assert_eq!(atrion.engine().active_leases("etl"), 3);
    // Released (cancelled, nothing reported), its slot is free again.
    let (status, _) = delete(&base, &format!("/v1/tasks/{}", first["id"].as_str().unwrap())).await;
    assert_eq!(status, 204);
    assert_eq!(atrion.engine().snapshot("etl").unwrap().updates, 0);
    let (status, _, _) = start_as("a").await;
    assert_eq!(status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_route_that_sheds_sheds_its_tasks_and_bad_options_are_problems() {
    let (atrion, base) = start().await;
    atrion.engine().hold("down", Hold::Open, atrion.now()).unwrap();
    let (status, _, t) = post(&base, "/v1/tasks", r#"{"route": "down"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(t["verdict"], "shed");
    assert!(t["id"].is_null() && t["retry_after_ms"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(atrion.engine().active_leases("down"), 0);

    let cases = [
        (r#"{"route": "a", "profile": "huge"}"#, "profile"),
        (r#"{"route": "a", "max_duration_ms": 1000, "heartbeat_ms": 5000}"#, "heartbeat_ms"),
        (r#"{"route": "a", "max_duration_ms": 86400001}"#, "max_duration_ms"),
        (r#"{"route": ""}"#, "route"),
    ];
    for (body, field) in cases {
        let (status, _, p) = post(&base, "/v1/tasks", body).await;
        assert_eq!((status, slug(&p), p["field"].as_str()), (422, "invalid-value", Some(field)), "{body}: {p}");
    }
    // A heartbeat of zero is refused for what it is, not for being longer than the task.
    let (status, _, p) = post(&base, "/v1/tasks", r#"{"route": "a", "heartbeat_ms": 0}"#).await;
    assert_eq!((status, p["field"].as_str()), (422, Some("heartbeat_ms")), "{p}");
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("at most the longest duration"), "{p}");
    assert_eq!(atrion.engine().lease_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_aborts_a_short_task_at_its_deadline_not_at_its_next_idle_wake() {
    let (atrion, base) = start().await;
    atrion.connect().await.unwrap();
    // Let the sweeper find nothing to do and go to sleep for its longest nap.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    let (status, _, t) = post(&base, "/v1/tasks", r#"{"route": "quick", "max_duration_ms": 200}"#).await;
    assert_eq!(status, 200, "{t}");
    while atrion.engine().active_leases("quick") > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "never aborted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // On tokio's paused clock: the abort came at the task's deadline (plus a tick), not when
    // the sweeper would have woken anyway (a second after it went to sleep).
    assert!(started.elapsed() < Duration::from_millis(500), "aborted after {:?}", started.elapsed());
    atrion.shutdown().await;
}
