//! The API over real TCP on loopback, on tokio's paused clock (the engine's clock is
//! tokio's, so the physics sees the test's sleeps, not the machine's speed).

use std::sync::Arc;
use std::time::Duration;

mod common;

use atrion_server::{AdminToken, ServerConfig, SidecarAtrion};
use common::{post, start_with};
use serde_json::{Value, json};

async fn start() -> (Arc<SidecarAtrion>, String) {
    start_with(ServerConfig::default()).await
}

#[tokio::test(start_paused = true)]
async fn health_decide_and_report_by_ticket_and_by_route() {
    let (atrion, base) = start().await;
    let health: Value = reqwest::get(format!("{base}/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready: Value = reqwest::get(format!("{base}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!((ready["ready"].clone(), ready["degraded"].clone()), (json!(true), json!(false)));

    let (status, _, d) = post(&base, "/v1/decide", r#"{"route": "GET /users", "priority": "high"}"#).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["verdict"], "admit");
    let ticket = d["ticket"].as_str().expect("an admitted decision carries a ticket").to_owned();
    // The server measures the latency from the ticket: 250 ms of tokio's time.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (status, _, r) = post(&base, "/v1/report", &json!({"ticket": ticket, "ok": true}).to_string()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["route"], "GET /users");
    assert_eq!(atrion.engine().snapshot("GET /users").unwrap().updates, 1);

    // A failing route, reported by route, is shed with a retry hint and no ticket.
    let mut shed = None;
    for _ in 0..400 {
        let (_, _, d) = post(&base, "/v1/decide", r#"{"route": "GET /broken"}"#).await;
        if d["verdict"] == "shed" {
            shed = Some(d);
            break;
        }
        let (status, _, r) =
            post(&base, "/v1/report", r#"{"route": "GET /broken", "latency_ms": 900, "ok": false, "saturation": 0.9}"#)
                .await;
        assert_eq!(status, 200, "{r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = shed.expect("a failing route is shed");
    assert!(shed["retry_after_ms"].as_u64().unwrap() >= 1 && shed["ticket"].is_null(), "{shed}");
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_a_problem_that_names_the_field_and_changes_nothing() {
    let (atrion, base) = start().await;
    let long = "r".repeat(1_100);
    let big = format!(r#"{{"route": "{}"}}"#, "x".repeat(1_100_000));
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        ("/v1/decide", "{not json".into(), 400, "malformed-json", None),
        ("/v1/decide", r#"{"route": 5}"#.into(), 400, "invalid-body", Some("route")),
        ("/v1/decide", r#"{"route": "a", "prio": "high"}"#.into(), 400, "invalid-body", None),
        // serde reads a struct from an array of its fields too; the API takes objects only.
        ("/v1/decide", r#"["GET /a"]"#.into(), 400, "invalid-body", None),
        ("/v1/batch", " []".into(), 400, "invalid-body", None),
        ("/v1/decide", r#"{"route": ""}"#.into(), 422, "invalid-value", Some("route")),
        ("/v1/decide", format!(r#"{{"route": "{long}"}}"#), 422, "invalid-value", Some("route")),
        ("/v1/decide", r#"{"route": "a", "priority": "vip"}"#.into(), 422, "invalid-value", Some("priority")),
        ("/v1/decide", big, 413, "body-too-large", None),
        (
            "/v1/report",
            r#"{"route": "a", "latency_ms": -1, "ok": true}"#.into(),
            422,
            "invalid-value",
            Some("latency_ms"),
        ),
        (
            "/v1/report",
            r#"{"route": "a", "latency_ms": 5, "ok": true, "saturation": 1.5}"#.into(),
            422,
            "invalid-value",
            Some("saturation"),
        ),
        ("/v1/report", r#"{"route": "a", "latency_ms": 5}"#.into(), 422, "invalid-value", Some("ok")),
        // JSON has no NaN: the literal is malformed, an overflowing number out of range.
        ("/v1/report", r#"{"route": "a", "latency_ms": NaN, "ok": true}"#.into(), 400, "malformed-json", None),
        (
            "/v1/report",
            r#"{"route": "a", "latency_ms": 1e999, "ok": true}"#.into(),
            400,
            "malformed-json",
            Some("latency_ms"),
        ),
        (
            "/v1/report",
            r#"{"route": "a", "latency_ms": 5, "error_rate": -0.1}"#.into(),
            422,
            "invalid-value",
            Some("error_rate"),
        ),
        (
            "/v1/report",
            r#"{"route": "a", "latency_ms": 5, "ok": true, "error_rate": 0.5}"#.into(),
            422,
            "invalid-value",
            Some("ok"),
        ),
        (
            "/v1/report",
            r#"{"ticket": "v1.5.YQ", "route": "a", "ok": true}"#.into(),
            422,
            "invalid-value",
            Some("ticket"),
        ),
        ("/v1/report", r#"{"ticket": "forged", "ok": true}"#.into(), 422, "ticket-malformed", Some("ticket")),
        (
            "/v1/report",
            r#"{"ticket": "v1.5.YQ", "ok": true, "latency_ms": 3}"#.into(),
            422,
            "invalid-value",
            Some("latency_ms"),
        ),
        (
            "/v1/report",
            r#"{"route": "a", "latency_ms": "fast", "ok": true}"#.into(),
            400,
            "invalid-body",
            Some("latency_ms"),
        ),
    ];
    for (path, body, status, kind, field) in cases {
        let (got, content_type, p) = post(&base, path, &body).await;
        let shown = &body[..body.len().min(80)];
        assert_eq!(got, status, "{path} {shown}: {p}");
        assert_eq!(content_type, "application/problem+json", "{path} {shown}");
        assert_eq!(p["type"], format!("tag:atrion,2026:problem/{kind}"), "{path} {shown}: {p}");
        assert_eq!(p["status"], status);
        if let Some(field) = field {
            assert_eq!(p["field"], field, "{path} {shown}: {p}");
        }
    }
    assert!(atrion.engine().route_ids().is_empty(), "no error created a route: {:?}", atrion.engine().route_ids());
}

#[tokio::test(start_paused = true)]
async fn a_batch_answers_each_item_and_routes_are_readable() {
    let (atrion, base) = start().await;
    let body = json!({
        "decide": [{"route": "GET /a"}, {"route": ""}, {"route": "GET /b", "priority": "bulk"}, ["GET /d"]],
        "report": [
            {"route": "GET /a", "latency_ms": 12, "ok": true},
            {"route": "GET /a", "latency_ms": -3, "ok": true},
            {"route": "GET /c", "latency_ms": "x", "ok": true}
        ]
    });
    let (status, _, r) = post(&base, "/v1/batch", &body.to_string()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["decide"][0]["verdict"], "admit");
    assert_eq!(r["decide"][1]["problem"]["field"], "decide[1].route", "{r}");
    assert_eq!(r["decide"][2]["verdict"], "admit");
    assert_eq!(r["decide"][3]["problem"]["field"], "decide[3]", "an item is an object: {r}");
    assert_eq!(r["report"][0]["route"], "GET /a");
    assert_eq!(r["report"][1]["problem"]["field"], "report[1].latency_ms", "{r}");
    assert_eq!(r["report"][2]["problem"]["field"], "report[2].latency_ms", "{r}");
    assert!(atrion.engine().status("GET /c").is_err(), "a bad item changed nothing");

    let too_many = json!({ "decide": vec![json!({"route": "x"}); 1_001] });
    let (status, _, p) = post(&base, "/v1/batch", &too_many.to_string()).await;
    assert_eq!((status, p["type"].clone()), (413, json!("tag:atrion,2026:problem/batch-too-large")));

    let list: Value = reqwest::get(format!("{base}/v1/routes")).await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list["routes"].as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!((names, list["next"].clone()), (vec!["GET /a", "GET /b"], Value::Null));
    let one: Value = reqwest::get(format!("{base}/v1/routes/GET%20%2Fa")).await.unwrap().json().await.unwrap();
    assert_eq!((one["route"].clone(), one["updates"].clone()), (json!("GET /a"), json!(1)), "{one}");
    assert_eq!(one["decisions"], json!({"admitted": 1, "shed": 0}), "{one}");
    let r = reqwest::get(format!("{base}/v1/routes/nope")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "tag:atrion,2026:problem/unknown-route");
}

const SECRET: &str = "s3cret-s3cret-s3cret";

async fn send(method: reqwest::Method, url: String, token: Option<&str>, body: Option<String>) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(start_paused = true)]
async fn admin_needs_a_named_token_and_holds_resets_backs_up_and_restores() {
    let mut config = ServerConfig::default();
    config.admin_tokens = AdminToken::parse_list(&format!("ops:{SECRET}")).unwrap();
    let (atrion, base) = start_with(config).await;
    let post = reqwest::Method::POST;
    post_json(&base, "/v1/decide", json!({"route": "GET /x"})).await;
    let before = atrion.engine().snapshot("GET /x").unwrap();

    // Missing and wrong tokens: 401 with the problem's type, and nothing changed.
    let open = || Some(json!({"route": "GET /x"}).to_string());
    for (token, kind) in [(None, "missing-token"), (Some("not-the-token-at-all"), "invalid-token")] {
        let (status, p) = send(post.clone(), format!("{base}/v1/admin/open"), token, open()).await;
        assert_eq!((status, p["type"].as_str().unwrap()), (401, &*format!("tag:atrion,2026:problem/{kind}")), "{p}");
        assert!(!p.to_string().contains(SECRET));
        assert_eq!(atrion.engine().held("GET /x"), Ok(atrion::Hold::Released));
    }
    // A token on a read endpoint that needs none changes nothing about the answer.
    let (s1, with) = send(reqwest::Method::GET, format!("{base}/v1/routes"), Some(SECRET), None).await;
    let (s2, without) = send(reqwest::Method::GET, format!("{base}/v1/routes"), None, None).await;
    assert_eq!((s1, &with), (s2, &without));

    // Held open: shed with reason `held`; closed: admitted; released: the physics again.
    let (status, view) = send(post.clone(), format!("{base}/v1/admin/open"), Some(SECRET), open()).await;
    assert_eq!((status, view["held"].clone()), (200, json!("open")), "{view}");
    let d = post_json(&base, "/v1/decide", json!({"route": "GET /x", "priority": "critical"})).await;
    assert_eq!((d["verdict"].clone(), d["reason"].clone()), (json!("shed"), json!("held")), "{d}");
    send(post.clone(), format!("{base}/v1/admin/close"), Some(SECRET), open()).await;
    assert_eq!(post_json(&base, "/v1/decide", json!({"route": "GET /x"})).await["reason"], "held");
    send(post.clone(), format!("{base}/v1/admin/release"), Some(SECRET), open()).await;
    assert_ne!(post_json(&base, "/v1/decide", json!({"route": "GET /x"})).await["reason"], "held");

    // Reset: what the route learned is gone.
    post_json(&base, "/v1/report", json!({"route": "GET /x", "latency_ms": 900, "ok": false})).await;
    assert!(atrion.engine().snapshot("GET /x").unwrap().updates > before.updates);
    let (status, view) = send(post.clone(), format!("{base}/v1/admin/reset"), Some(SECRET), open()).await;
    assert_eq!((status, view["updates"].clone()), (200, json!(0)), "{view}");
    let (status, p) =
        send(post.clone(), format!("{base}/v1/admin/reset"), Some(SECRET), Some(json!({"route": "nope"}).to_string()))
            .await;
    assert_eq!((status, p["type"].clone()), (404, json!("tag:atrion,2026:problem/unknown-route")));

    // Backup and restore: JSON lines; a bad line refuses the whole body and writes nothing.
    let store = atrion.store().clone();
    let beat = bytes::Bytes::from_static(b"\x01\0\0\0\0\0\0\0v1");
    store.put("atrion/node/other", beat.clone(), None).await.unwrap();
    let r = reqwest::Client::new().get(format!("{base}/v1/admin/backup")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines = r.text().await.unwrap();
    assert!(lines.lines().any(|l| l.contains("atrion/node/other")), "{lines}");
    store.delete("atrion/node/other").await.unwrap();
    let bad = format!("{lines}{{\"key\": \"k\"}}\n");
    let (status, p) = send(post.clone(), format!("{base}/v1/admin/restore"), Some(SECRET), Some(bad)).await;
    assert_eq!((status, p["type"].clone()), (400, json!("tag:atrion,2026:problem/malformed-backup")), "{p}");
    assert!(store.get("atrion/node/other").await.unwrap().is_none(), "a refused restore wrote nothing");
    // A key of no family of the namespace, or a value its owner cannot read: 422, nothing written.
    let foreign = format!("{lines}{{\"key\":\"atrion/test/a\",\"value\":\"b25l\",\"ttl_ms\":null}}\n");
    let garbage = format!("{lines}{{\"key\":\"atrion/policy/desired\",\"value\":\"YWJjZGVm\",\"ttl_ms\":null}}\n");
    let n = lines.lines().count() + 1;
    for (body, kind) in [(foreign, "foreign-key"), (garbage, "invalid-backup-value")] {
        let (status, p) = send(post.clone(), format!("{base}/v1/admin/restore"), Some(SECRET), Some(body)).await;
        assert_eq!((status, p["type"].clone()), (422, json!(format!("tag:atrion,2026:problem/{kind}"))), "{p}");
        assert_eq!(p["field"], format!("line {n}"), "{p}");
        assert!(store.get("atrion/node/other").await.unwrap().is_none(), "a refused restore wrote nothing");
    }
    assert!(store.get("atrion/test/a").await.unwrap().is_none());
    let (status, r) = send(post.clone(), format!("{base}/v1/admin/restore"), Some(SECRET), Some(lines.clone())).await;
    assert_eq!((status, r["restored"].as_u64()), (200, Some(lines.lines().count() as u64)), "{r}");
    assert_eq!(store.get("atrion/node/other").await.unwrap().unwrap().value, beat);
}

#[tokio::test(start_paused = true)]
async fn without_tokens_administration_is_disabled() {
    let (_, base) = start().await;
    let (status, p) =
        send(reqwest::Method::POST, format!("{base}/v1/admin/open"), Some(SECRET), Some(r#"{"route":"a"}"#.into()))
            .await;
    assert_eq!((status, p["type"].clone()), (403, json!("tag:atrion,2026:problem/admin-disabled")));
}

async fn post_json(base: &str, path: &str, body: Value) -> Value {
    let (status, _, v) = post(base, path, &body.to_string()).await;
    assert_eq!(status, 200, "{path} {v}");
    v
}

#[tokio::test(start_paused = true)]
async fn the_openapi_document_lists_every_route_the_router_serves() {
    let (_, base) = start().await;
    let doc: Value = reqwest::get(format!("{base}/openapi.json")).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    assert_eq!(doc, serde_json::to_value(atrion_server::openapi()).unwrap(), "one document, served as built");
    let paths = doc["paths"].as_object().unwrap();
    // Every reference resolves: a client generated from the document finds each schema.
    let text = doc.to_string();
    for (i, _) in text.match_indices("\"#/components/schemas/") {
        let name = &text[i + 22..];
        let name = &name[..name.find('"').unwrap()];
        assert!(doc["components"]["schemas"][name].is_object(), "a reference to `{name}` dangles");
    }
    // Client mistakes and admin refusals are documented as problems.
    for (path, codes) in [("/v1/decide", &["400", "413", "422"][..]), ("/v1/admin/open", &["400", "401", "403", "422"])]
    {
        let responses = &paths[path]["post"]["responses"];
        for code in codes {
            assert!(responses[*code]["content"]["application/problem+json"].is_object(), "{path} {code}: {responses}");
        }
    }
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let url = format!("{base}{}", path.replace("{route}", "x"));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = reqwest::Client::new().request(m, url).send().await.unwrap();
            let status = r.status().as_u16();
            if path == "/v1/dashboard/stream" {
                // A live feed: it never ends, so only its answer is read.
                assert_eq!(status, 200);
                continue;
            }
            let body = r.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(!body.contains("problem/not-found"), "{method} {path} is documented but not routed: {body}");
        }
    }
    assert!(operations >= 16, "{operations} operations: {:?}", paths.keys().collect::<Vec<_>>());
    // The other way round: the router serves nothing the document does not list, but for
    // the dashboard's page and files (not API operations). Around every documented path,
    // each method it does not document is refused (405), and each path next to it (a
    // segment more, each prefix) that no template matches is `not-found`.
    let documented = |path: &str| paths.keys().any(|t| matches_template(t, path));
    let mut probes = vec!["/v1".to_owned(), "/v2/nothing".to_owned(), "/assets".to_owned(), "/index.html".to_owned()];
    for (template, item) in paths {
        let path = template.replace("{route}", "x");
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                continue;
            }
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = reqwest::Client::new().request(m, format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 405, "{method} {path} is served but not documented");
        }
        probes.push(format!("{path}/x"));
        let mut prefix = path.as_str();
        while let Some((head, _)) = prefix.rsplit_once('/') {
            if !head.is_empty() {
                probes.push(head.to_owned());
            }
            prefix = head;
        }
    }
    for path in probes.iter().filter(|p| !documented(p)) {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let r = reqwest::Client::new().request(method.clone(), format!("{base}{path}")).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                status == 404 && body.contains("problem/not-found"),
                "{method} {path} is served but not documented: {status} {body}"
            );
        }
    }
    // The dashboard's page and files are served, outside the document.
    for page in ["/", "/assets/app.js"] {
        assert!(!documented(page));
        assert_eq!(reqwest::get(format!("{base}{page}")).await.unwrap().status(), 200, "{page}");
    }
    // An unknown path is a problem, not an empty 404.
    let r = reqwest::get(format!("{base}/v2/nothing")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "tag:atrion,2026:problem/not-found");
}

/// Whether `path` is one the OpenAPI path `template` names (`{param}` is one segment).
fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

#[tokio::test(start_paused = true)]
async fn an_admin_switches_the_store_with_its_state_migrated() {
    use atrion::state::{InMemoryStore, StateService, StateStore};
    let service = StateService::builder().backend("first", InMemoryStore::new()).build().unwrap();
    service.put("atrion/route/a/node/n", bytes::Bytes::from_static(b"kept"), None).await.unwrap();
    let mut config = ServerConfig::default();
    config.admin_tokens = AdminToken::parse_list(&format!("ops:{SECRET}")).unwrap();
    config.store_switch = Some(atrion_server::StoreSwitch {
        service: service.clone(),
        open: Arc::new(|url: String| {
            Box::pin(async move {
                match url.as_str() {
                    "memory" => Ok(Arc::new(InMemoryStore::new()) as Arc<dyn StateStore>),
                    other => Err(format!("cannot open `{other}`")),
                }
            })
        }),
    });
    let (_, base) = start_with(config).await;
    let switch = |url: &str| {
        send(
            reqwest::Method::POST,
            format!("{base}/v1/admin/store"),
            Some(SECRET),
            Some(json!({"url": url}).to_string()),
        )
    };
    let (status, p) = switch("redis://:pw@127.0.0.1:1").await;
    assert_eq!((status, p["type"].clone()), (422, json!("tag:atrion,2026:problem/store-unopenable")), "{p}");
    assert!(!p.to_string().contains(":pw@"), "no password in a problem: {p}");
    assert_eq!(service.active_name(), "first", "a failed switch changes nothing");
    let (status, r) = switch("memory").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!((r["from"].clone(), r["to"].clone(), r["copied"].clone()), (json!("first"), json!("memory"), json!(1)));
    assert_eq!(service.active_name(), "memory");
    let moved = service.get("atrion/route/a/node/n").await.unwrap().unwrap();
    assert_eq!(moved.value, bytes::Bytes::from_static(b"kept"), "the state came along");
    let (status, p) = switch("memory").await;
    assert_eq!((status, p["type"].clone()), (409, json!("tag:atrion,2026:problem/already-active")));
}

/// `attempt` marks a client's retry: decided one priority tier lower per retry, so that on a
/// route loaded enough to shed low-priority traffic a first try goes through and its retry
/// is shed; critical traffic stays critical.
#[tokio::test(start_paused = true)]
async fn a_retry_is_decided_a_tier_lower() {
    use atrion::{Mode, Model, PhysicsVector, Priority, Timestamp};
    let (atrion, base) = start().await;
    let now = atrion.now();
    // Thresholds on the way from R_base 10 to a break point of 30: bulk 16, low 20, normal 25.
    let v = PhysicsVector {
        model: Model::Default,
        mode: Mode::Operational,
        resistance: 22.0,
        scar: 0.0,
        momentum: 0.0,
        pressure: [0.0; 3],
        break_point: 30.0,
        recovery: 15.0,
        tuner_samples: 100,
        tuner_weight: 100.0,
        tuner_mean: 10.0,
        tuner_var: 0.0,
        updates: 1_000,
        trips: 0.0,
        open_until: Timestamp::ZERO,
        timestamp: now,
        normal_samples: 0,
        normal_mean: 0.0,
        normal_var: 0.0,
    };
    atrion.engine().restore("GET /x", &v, now).unwrap();
    // The keep-alive lets one shed request through per interval: take it first.
    atrion.engine().decide("GET /x", now, Priority::Bulk);
    let retry = post_json(&base, "/v1/decide", json!({"route": "GET /x", "attempt": 1})).await;
    assert_eq!((retry["verdict"].clone(), retry["reason"].clone()), (json!("shed"), json!("overloaded")), "{retry}");
    let first = post_json(&base, "/v1/decide", json!({"route": "GET /x", "attempt": 0})).await;
    assert_eq!(first["verdict"], "admit", "{first}");
    let first = post_json(&base, "/v1/decide", json!({"route": "GET /x"})).await;
    assert_eq!(first["verdict"], "admit", "{first}");
    let critical =
        post_json(&base, "/v1/decide", json!({"route": "GET /x", "priority": "critical", "attempt": 3})).await;
    assert_eq!(critical["verdict"], "admit", "{critical}");
    let (status, _, p) = post(&base, "/v1/decide", r#"{"route": "GET /x", "attempt": -1}"#).await;
    assert_eq!((status, p["field"].clone()), (400, json!("attempt")), "{p}");
    let (status, _, p) = post(&base, "/v1/decide", r#"{"route": "GET /x", "attempt": 2147483648}"#).await;
    assert_eq!((status, p["field"].clone()), (422, json!("attempt")), "{p}");
}
