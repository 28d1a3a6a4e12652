//! Route ids are untrusted (defect 1): a client that fills the route table and reports
//! failures on more new routes sheds no other client's route; it meets its own budget of
//! new routes (429 + Retry-After); an operator's hold still finds room; `/v1/routes` pages
//! through every route.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{Serve, free_port};

const TOKEN: &str = "ops-secret-0123456789abcdef";

/// `POST path` as client `who`: (status, `Retry-After`, body).
async fn post_as(s: &Serve, who: &str, path: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", s.url))
        .header("x-atrion-client", who)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn failure(route: &str) -> Value {
    json!({"route": route, "latency_ms": 5000.0, "ok": false, "saturation": 1.0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_filling_the_route_table_sheds_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("ops:{TOKEN}\n")).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Serve::start(
        &[
            "--store",
            "memory",
            "--listen",
            &listen,
            "--max-routes",
            "40",
            "--route-creation-rate",
            "1",
            "--route-creation-burst",
            "30",
            "--admin-tokens-file",
            tokens.to_str().unwrap(),
        ],
        &[],
    );
    // The victim's own route, known before the attack.
    let (status, _, d) = post_as(&s, "victim", "/v1/decide", json!({"route": "GET /victim/known"})).await;
    assert_eq!((status, d["verdict"].as_str()), (200, Some("admit")), "{d}");

    // The attacker creates routes with failures until its budget is spent.
    let mut created = 0;
    let refused = loop {
        let (status, retry, body) = post_as(&s, "attacker", "/v1/report", failure(&format!("/a/{created}"))).await;
        if status != 200 {
            break (status, retry, body);
        }
        created += 1;
        assert!(created <= 30, "the budget stops the attacker");
    };
    assert_eq!(created, 30, "a burst of 30 new routes");
    let (status, retry, p) = refused;
    assert_eq!(status, 429, "{p}");
    assert_eq!(p["type"], "tag:atrion,2026:problem/too-many-new-routes", "{p}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1), "429 carries Retry-After");
    assert!(p["retry_after_ms"].as_u64().unwrap() >= 1, "{p}");
    // Routes that exist cost nothing: the attacker may go on reporting on them.
    let (status, _, _) = post_as(&s, "attacker", "/v1/report", failure("/a/0")).await;
    assert_eq!(status, 200);
    // The same 429 in a batch is that item's problem alone.
    let batch = json!({"report": [failure("/a/0"), failure("/a/new-in-batch")]});
    let (status, _, b) = post_as(&s, "attacker", "/v1/batch", batch).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["report"][0]["route"], "/a/0", "{b}");
    assert_eq!(b["report"][1]["problem"]["status"], 429, "{b}");

    // Made-up client keys fill the rest of the table, then fail on many more new routes.
    for i in 0..200 {
        let (status, _, _) = post_as(&s, &format!("attacker-{i}"), "/v1/report", failure(&format!("/b/{i}"))).await;
        assert_eq!(status, 200, "a full table answers, untracked");
    }

    // Another client's fresh route is admitted every time, on no shared state.
    for _ in 0..50 {
        let (status, _, d) = post_as(&s, "victim", "/v1/decide", json!({"route": "GET /victim/fresh"})).await;
        assert_eq!((status, d["verdict"].as_str()), (200, Some("admit")), "{d}");
        assert_eq!(d["reason"], "untracked", "{d}");
    }
    let (_, _, d) = post_as(&s, "victim", "/v1/decide", json!({"route": "GET /victim/known"})).await;
    assert_eq!(d["verdict"], "admit", "the victim's known route keeps its own state: {d}");

    // An operator's hold on a new route finds room.
    let (status, view) =
        s.admin(reqwest::Method::POST, "/v1/admin/open", TOKEN, Some(json!({"route": "GET /held/new"}))).await;
    assert_eq!((status, view["held"].as_str()), (200, Some("open")), "{view}");
    let (_, _, d) =
        post_as(&s, "victim", "/v1/decide", json!({"route": "GET /held/new", "priority": "critical"})).await;
    assert_eq!((d["verdict"].as_str(), d["reason"].as_str()), (Some("shed"), Some("held")), "{d}");

    // `/v1/routes` pages through every route, each once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let mut req = client.get(format!("{}/v1/routes", s.url)).query(&[("limit", "7")]);
        if let Some(a) = &after {
            req = req.query(&[("after", a.as_str())]);
        }
        let page: Value = req.send().await.unwrap().json().await.unwrap();
        let routes = page["routes"].as_array().unwrap();
        assert!(routes.len() <= 7, "{page}");
        seen.extend(routes.iter().map(|r| r["route"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no route twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert_eq!(seen.len(), 41, "the table's 40 and the held one: {seen:?}");
    assert!(unique.contains("GET /held/new") && unique.contains("GET /victim/known"));
    let r = client.get(format!("{}/v1/routes?limit=0", s.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let health = s.get("/healthz").await;
    assert_eq!(health["status"], "ok");
}
