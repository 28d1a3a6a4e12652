//! The audit flood (issue 25, defect 2): thousands of wrong-token admin requests at once.
//! Refusals are counted per source and minute (one audit entry each, not one per request),
//! the flooding source waits (429 with Retry-After), a valid token still works from the same
//! host, and the store does not grow with the flood.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Serve, eventually};

const TOKEN: &str = "ops-secret-0123456789";
const FLOOD: usize = 3_000;

fn start(store: &str) -> Serve {
    Serve::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            "--no-dashboard",
            "--auth-failures",
            "5",
            "--auth-backoff-ms",
            "1000",
        ],
        &[("ATRION_ADMIN_TOKENS", &format!("ops:{TOKEN}"))],
    )
}

/// The audit trail's refusal entries (action `auth`).
async fn refusals(s: &Serve) -> Vec<Value> {
    let (status, page) = s.admin(Method::GET, "/v1/audit?limit=1000", TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    page["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "auth").cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_token_flood_is_counted_limited_and_leaves_the_admin_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.redb");
    let store = format!("file:{}", file.display());
    let s = start(&store);
    let (status, _) = s.admin(Method::POST, "/v1/admin/open", TOKEN, Some(json!({"route": "GET /before"}))).await;
    assert_eq!(status, 200);
    let size_before = std::fs::metadata(&file).unwrap().len();

    // The flood: wrong tokens, some without any, many connections at once.
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for t in 0..30 {
        let (client, url) = (client.clone(), s.url.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..FLOOD / 30 {
                let mut r = client.get(format!("{url}/v1/audit"));
                if (t + i) % 7 != 0 {
                    r = r.bearer_auth(format!("wrong-token-{t}-{i}-xxxxxxxx"));
                }
                let r = r.send().await.unwrap();
                let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                seen.push((r.status(), retry));
            }
            seen
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    assert_eq!(answers.len(), FLOOD);
    assert!(answers.iter().all(|(st, _)| *st == StatusCode::UNAUTHORIZED || *st == StatusCode::TOO_MANY_REQUESTS));
    let limited: Vec<_> = answers.iter().filter(|(st, _)| *st == StatusCode::TOO_MANY_REQUESTS).collect();
    assert!(limited.len() > FLOOD / 2, "past 5 failures the source waits: {} of {FLOOD}", limited.len());
    assert!(limited.iter().all(|(_, retry)| retry.is_some_and(|r| r >= 1)), "429 says when to retry");

    // What must hold: a valid token still works (from the same host), the trail answers,
    // the store is healthy, and the flood is one entry per source and minute.
    let (status, v) = s.admin(Method::POST, "/v1/admin/open", TOKEN, Some(json!({"route": "GET /after"}))).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = s.admin(Method::POST, "/v1/admin/open", "bearer-but-lowercase", None).await;
    assert_eq!(status, 429, "the flooding source still waits");
    let r = reqwest::Client::new()
        .get(format!("{}/v1/audit?limit=5", s.url))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the scheme is case-insensitive, and a valid token is never limited");
    let ready = s.get("/readyz").await;
    assert_eq!(ready["degraded"], false, "{ready}");
    let entries = eventually("the flood's first refusal is on record", || async {
        let e = refusals(&s).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(entries.len() <= 2, "one entry per source and minute, not one per request: {}", entries.len());
    assert!(entries.iter().all(|e| e["target"] == "127.0.0.1"), "{entries:?}");
    let grown = std::fs::metadata(&file).unwrap().len().saturating_sub(size_before);
    assert!(grown < 512 * 1024, "the store grew by {grown} bytes");

    // The count of the minute under way is written at shutdown, and outlives it.
    s.stop();
    let s = start(&store);
    let entries = refusals(&s).await;
    let counted: u64 = entries.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, FLOOD as u64 + 1, "every refusal is counted: {entries:?}");
    assert!(entries.len() <= 2, "{entries:?}");
    s.stop();
}
