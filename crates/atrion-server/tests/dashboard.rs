//! The dashboard's server side over real TCP: the page and its assets, the live feed
//! (server-sent events), a route's page and charts, the switch that turns it off, and a
//! graceful shutdown with feeds open. The page itself is tested in real browsers in
//! `atrion-cli/tests/dashboard.rs`.

mod common;

use std::time::Duration;

use atrion_server::ServerConfig;
use common::start_with;
use serde_json::Value;

async fn post(base: &str, path: &str, body: &str) -> Value {
    let (status, _, v) = common::post(base, path, body).await;
    assert_eq!(status, 200, "{path} {body}: {v}");
    v
}

/// Fails `GET /broken` until it is open, asks a few more times (shed, by `open`), and
/// waits for the next sample.
async fn trip(base: &str) {
    post(base, "/v1/report", r#"{"route": "GET /fine", "latency_ms": 20, "ok": true}"#).await;
    for _ in 0..1000 {
        let d = post(base, "/v1/decide", r#"{"route": "GET /broken"}"#).await;
        if d["mode"] == "open" {
            for _ in 0..5 {
                post(base, "/v1/decide", r#"{"route": "GET /broken"}"#).await;
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
            return;
        }
        post(base, "/v1/report", r#"{"route": "GET /broken", "latency_ms": 900, "ok": false, "saturation": 0.9}"#)
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a failing route trips open");
}

/// Reads server-sent events until `n` `update` events have come; returns their data.
async fn updates(res: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = res.chunk().await.unwrap().expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: update") {
                let data: String = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                out.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    out
}

fn route<'a>(update: &'a Value, id: &str) -> &'a Value {
    update["routes"].as_array().unwrap().iter().find(|r| r["route"] == id).unwrap_or_else(|| panic!("{id} in {update}"))
}

#[tokio::test(start_paused = true)]
async fn the_page_and_its_assets_are_served_with_a_strict_content_policy() {
    let (_, base) = start_with(ServerConfig::default()).await;
    for (path, kind, has) in [
        ("/", "text/html", "<title>Atrion</title>"),
        ("/assets/app.js", "text/javascript", "EventSource"),
        ("/assets/app.css", "text/css", ".mode.open"),
    ] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}: {:?}", h["content-type"]);
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().contains(has), "{path}");
    }
    // Nothing is fetched from elsewhere: every script, style and image is the server's own.
    let page = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from the internet");
    let r = reqwest::get(format!("{base}/assets/nope.js")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test(start_paused = true)]
async fn the_feed_sends_every_route_with_its_sparkline_then_one_update_per_sample() {
    let (_, base) = start_with(ServerConfig::default()).await;
    trip(&base).await;
    let mut res = reqwest::get(format!("{base}/v1/dashboard/stream")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let got = updates(&mut res, 3).await;
    let first = route(&got[0], "GET /broken");
    assert_eq!(first["mode"], "open", "{first}");
    assert!(first["spark"].as_array().is_some_and(|s| !s.is_empty()), "the first update carries sparklines: {first}");
    assert!(first["shed_ratio"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["shed_by"]["open"].as_f64().unwrap() > 0.0, "shed by reason: {first}");
    assert!(first["resistance"].as_f64().unwrap() > first["break_point"].as_f64().unwrap() * 0.5, "{first}");
    assert!(first["mode_since_ms"].as_u64().unwrap() <= got[0]["clock_ms"].as_u64().unwrap(), "since when: {first}");
    assert_eq!(got[0]["full"], true);
    assert_eq!(route(&got[0], "GET /fine")["mode"], "bootstrap");
    for later in &got[1..] {
        assert_eq!(later["full"], false, "then deltas: {later}");
        assert_eq!(later["every_ms"], 1000);
        for r in later["routes"].as_array().unwrap() {
            assert!(r.get("spark").is_none(), "a delta carries the new point only: {r}");
        }
    }
    // Nothing moves on an idle route: after the first delta, it is left out.
    let fine = |u: &Value| u["routes"].as_array().unwrap().iter().any(|r| r["route"] == "GET /fine");
    assert!(!fine(&got[2]), "an unchanged row is not sent again: {}", got[2]);
    assert!(got[0]["policy"].is_null(), "no policy layer on this server");
}

#[tokio::test(start_paused = true)]
async fn a_route_page_lists_transitions_and_decisions_and_its_charts_are_svg() {
    let (_, base) = start_with(ServerConfig::default()).await;
    trip(&base).await;
    let d: Value =
        reqwest::get(format!("{base}/v1/dashboard/routes/GET%20%2Fbroken")).await.unwrap().json().await.unwrap();
    assert_eq!(d["route"]["route"], "GET /broken");
    let t = &d["transitions"][0];
    assert_eq!((t["to"].as_str(), t["from"].as_str()), (Some("open"), Some("operational")), "newest first: {d}");
    let newest = &d["decisions"][0];
    assert_eq!((newest["verdict"].as_str(), newest["reason"].as_str()), (Some("shed"), Some("open")), "{d}");
    assert!(d["decisions"].as_array().unwrap().len() >= 6, "the latest decisions: {d}");
    for (kind, has) in [("resistance", "break point"), ("tuner", "tuner mean")] {
        let r =
            reqwest::get(format!("{base}/v1/dashboard/routes/GET%20%2Fbroken/chart.svg?kind={kind}")).await.unwrap();
        assert_eq!(r.status(), 200, "{kind}");
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        let svg = r.text().await.unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(has) && svg.contains("seconds ago"), "{kind}: axes and legend");
    }
    let r = reqwest::get(format!("{base}/v1/dashboard/routes/GET%20%2Fbroken/chart.svg?kind=pie")).await.unwrap();
    assert_eq!(r.status(), 400, "an unknown chart is a problem");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "query", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("pie"), "{p}");
    for path in ["/v1/dashboard/routes/nope", "/v1/dashboard/routes/nope/chart.svg"] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_follows_at_most_its_limit_of_routes_and_says_how_many_there_are() {
    let mut dashboard = atrion_server::DashboardConfig::default();
    dashboard.max_routes = 2;
    let mut config = ServerConfig::default();
    config.dashboard = Some(dashboard);
    let (_, base) = start_with(config).await;
    for r in ["GET /a", "GET /b", "GET /c"] {
        post(&base, "/v1/report", &format!(r#"{{"route": "{r}", "latency_ms": 20, "ok": true}}"#)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut res = reqwest::get(format!("{base}/v1/dashboard/stream")).await.unwrap();
    let got = updates(&mut res, 1).await;
    assert_eq!(got[0]["routes"].as_array().unwrap().len(), 2, "{}", got[0]);
    assert_eq!(got[0]["routes_total"], 3);
    let later = updates(&mut res, 1).await;
    assert_eq!(later[0]["routes"].as_array().unwrap().len(), 2, "the same two, not a third: {}", later[0]);
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_can_be_turned_off() {
    let mut config = ServerConfig::default();
    config.dashboard = None;
    let (_, base) = start_with(config).await;
    for path in ["/", "/assets/app.js", "/v1/dashboard/stream", "/v1/dashboard/routes/x"] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["type"].as_str().map(|t| t.ends_with("dashboard-disabled")), Some(true), "{path}: {p}");
    }
    // The API is untouched.
    post(&base, "/v1/decide", r#"{"route": "GET /a"}"#).await;
}

#[tokio::test]
async fn a_graceful_shutdown_ends_the_open_feeds() {
    let atrion = common::sidecar();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        atrion_server::serve(listener, atrion, &ServerConfig::default(), async move {
            let _ = stopped.await;
        })
        .await
    });
    let mut res = reqwest::get(format!("{base}/v1/dashboard/stream")).await.unwrap();
    updates(&mut res, 1).await;
    stop.send(()).unwrap();
    // The feed ends (the server does not wait for the page to leave), and the server exits.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = res.chunk().await.unwrap_or(None) {
            drop(chunk);
        }
    })
    .await;
    assert!(ended.is_ok(), "the feed ends on shutdown");
    let exited = tokio::time::timeout(Duration::from_secs(60), server).await;
    assert!(exited.is_ok_and(|r| r.is_ok_and(|r| r.is_ok())), "the server exits");
}

fn config(f: impl FnOnce(&mut atrion_server::DashboardConfig, &mut ServerConfig)) -> ServerConfig {
    let mut dashboard = atrion_server::DashboardConfig::default();
    let mut config = ServerConfig::default();
    f(&mut dashboard, &mut config);
    config.dashboard = Some(dashboard);
    config
}

#[tokio::test(start_paused = true)]
async fn past_its_cap_the_feed_answers_503_with_retry_after_and_a_place_comes_back_when_a_page_leaves() {
    let (_, base) = start_with(config(|d, _| d.max_clients = 2)).await;
    let mut a = reqwest::get(format!("{base}/v1/dashboard/stream")).await.unwrap();
    let mut b = reqwest::get(format!("{base}/v1/dashboard/stream")).await.unwrap();
    let (first_a, first_b) = (updates(&mut a, 1).await, updates(&mut b, 1).await);
    assert_eq!(first_a, first_b, "pages opening on the same sample share one full update");
    let r = reqwest::get(format!("{base}/v1/dashboard/stream")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "{wait}");
    let p: Value = r.json().await.unwrap();
    assert!(p["type"].as_str().unwrap().ends_with("dashboard-busy"), "{p}");
    // The open pages go on.
    updates(&mut a, 2).await;
    drop(b);
    let mut c = loop {
        let r = reqwest::get(format!("{base}/v1/dashboard/stream")).await.unwrap();
        if r.status() == 200 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(updates(&mut c, 1).await[0]["full"], true);
}

const ADMIN: &str = "admin-secret-0123456789";
const READER: &str = "reader-secret-0123456789";

async fn get(base: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn behind_a_token_the_dashboard_serves_its_page_but_not_its_data() {
    use atrion_server::{AdminToken, DashboardAuth};
    let admin = AdminToken::new("ops", ADMIN).unwrap();
    let reader = AdminToken::new("wall", READER).unwrap();
    for auth in [DashboardAuth::Admin, DashboardAuth::Tokens(vec![reader])] {
        let read_only = matches!(auth, DashboardAuth::Tokens(_));
        let (_, base) = start_with(config(|d, c| {
            d.auth = auth;
            c.admin_tokens = vec![admin.clone()];
        }))
        .await;
        trip(&base).await;
        // The page holds no data: it loads, and asks for the token.
        for path in ["/", "/assets/app.js"] {
            assert_eq!(get(&base, path, None).await.status(), 200, "{path}");
        }
        let data = [
            "/v1/dashboard/stream",
            "/v1/dashboard/routes/GET%20%2Fbroken",
            "/v1/dashboard/routes/GET%20%2Fbroken/chart.svg",
        ];
        for path in data {
            for token in [None, Some("not-a-token-of-ours-0123")] {
                let r = get(&base, path, token).await;
                assert_eq!(r.status(), 401, "{path} {token:?}");
                assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
                assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{path}");
                let body = r.text().await.unwrap();
                assert!(!body.contains("GET /broken") && !body.contains("event:"), "nothing of the data: {body}");
            }
            assert_eq!(get(&base, path, Some(ADMIN)).await.status(), 200, "{path} with the admin token");
            if read_only {
                assert_eq!(get(&base, path, Some(READER)).await.status(), 200, "{path} with a read-only token");
            }
        }
        let mut feed = get(&base, "/v1/dashboard/stream", Some(if read_only { READER } else { ADMIN })).await;
        assert_eq!(route(&updates(&mut feed, 1).await[0], "GET /broken")["mode"], "open");
        if read_only {
            // A read-only token opens the dashboard, nothing else.
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/admin/open"))
                .bearer_auth(READER)
                .json(&serde_json::json!({"route": "GET /fine"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "a dashboard token is not an admin token");
        }
    }
}
