//! # atrion-fuzz
//!
//! The bodies of Atrion's fuzz targets: every input surface that takes bytes from outside.
//! `fuzz/` (cargo fuzz, on the nightly toolchain) calls them with generated inputs; the
//! test `tests/corpus.rs` replays the committed corpora on stable, so CI keeps every input
//! that was ever interesting. Each function panics only when an invariant breaks.
//!
//! | target | surface | invariants |
//! |---|---|---|
//! | [`trace`] | the trace reader (JSON lines and CSV) | no panic, bounded lines |
//! | [`config`] | scenario TOML and the physics config through `validate` | no panic; a config that validates runs extreme telemetry with finite values |
//! | [`codecs`] | `PhysicsVector` and the cluster contribution | no panic; what decodes validates and round-trips |
//! | [`notices`] | change notices as the Redis and PostgreSQL feeds receive them | no panic; what parses re-encodes to a payload that parses the same; carried values decode or are refused |
//! | [`store_values`] | garbage under the cluster's keys, read by a node's sync; a backup file restored | no panic; the engine's values stay finite |
//! | [`engine`] | arbitrary sequences of decide, report, time steps and cluster views | every value finite, scar never negative, route count bounded |
//! | [`policies`] | policy files (TOML) and API bodies (JSON) through the validation pipeline; route patterns | no panic; what passes resolves and installs in an engine; two patterns that match one route overlap |
//! | [`policy_api`] | the policy endpoints' bodies (replace, set one, ban) | never a 5xx; a 4xx is a problem+json that leaves desired state at its version; a 2xx is in force on the node when answered |
//! | [`api`] | the sidecar's request bodies (decide, report, batch, admin hold and restore) | never a 5xx; a 4xx is a problem+json with a type and changes no route; a 2xx is JSON |
//! | [`proxy_path`] | request targets through proxy mode to a real upstream | what is forwarded is what was decided on: the normal path's route, the query as it came; a path that cannot be normalized is a 400 that reaches nothing; the normal form is idempotent and names the same resource |

use std::time::Duration;

use atrion_core::{Engine, EngineLimits, PhysicsConfig, PhysicsVector, Priority, Telemetry, Timestamp};
use atrion_state::{InMemoryStore, StateStore};
use atrion_sync::Contribution;

/// The trace reader on arbitrary bytes, format detected and forced to CSV.
pub fn trace(data: &[u8]) {
    use atrion_trace::{Format, TimeUnit, TraceReader};
    for format in [None, Some(Format::Csv)] {
        if let Ok(mut t) = TraceReader::new(data, format, TimeUnit::Ms) {
            for row in t.by_ref().flatten() {
                assert!(!row.route.is_empty());
                assert!(row.telemetry.latency_ms() <= Telemetry::MAX_LATENCY_MS);
            }
            let _ = t.finish();
        }
    }
}

/// Scenario TOML and the physics config on arbitrary text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = atrion_sim::Scenario::from_toml(text, std::path::Path::new("."));
    if let Ok(cfg) = toml::from_str::<PhysicsConfig>(text)
        && cfg.validate().is_ok()
    {
        drive(cfg);
    }
}

/// A validated config through health, an outage with extreme values, and recovery.
fn drive(cfg: PhysicsConfig) {
    let engine = Engine::new(cfg).expect("validated");
    let ok = Telemetry::new(20.0, 0.0, 0.3).expect("valid");
    let worst = Telemetry::new(Telemetry::MAX_LATENCY_MS, 1.0, 1.0).expect("valid");
    let mut t = 0u64;
    for k in 0..300u64 {
        t += if k % 50 == 0 { 60_000 } else { 37 };
        let now = Timestamp::from_millis(t);
        let d = engine.decide("r", now, Priority::ALL[(k % 5) as usize]);
        assert!(d.resistance.is_finite());
        engine.report("r", if (100..200).contains(&k) { worst } else { ok }, now);
        check(&engine, "r");
    }
}

fn check<O: atrion_core::PhysicsObserver>(engine: &Engine<O>, route: &str) {
    if let Ok(v) = engine.snapshot(route) {
        assert!(v.validate().is_ok(), "{v:?}");
        assert!(v.scar >= 0.0 && v.resistance.is_finite());
    }
}

/// The physics vector, the cluster contribution and the shares decoders on arbitrary bytes.
pub fn codecs(data: &[u8]) {
    if let Ok(v) = PhysicsVector::from_bytes(data) {
        assert!(v.validate().is_ok(), "decoded means validated: {v:?}");
        let engine = Engine::new(PhysicsConfig::default()).expect("defaults are valid");
        if engine.restore("r", &v, Timestamp::from_millis(1)).is_ok() {
            let d = engine.decide("r", Timestamp::from_millis(2), Priority::Normal);
            assert!(d.resistance.is_finite());
            check(&engine, "r");
        }
    }
    if let Some(c) = Contribution::decode(data) {
        assert!(c.scar.is_finite() && c.scar >= 0.0 && c.momentum.is_finite() && c.momentum >= 0.0);
        assert_eq!(Contribution::decode(&c.encode()), Some(c));
    }
    if let Some(s) = atrion_state::shares::Shares::decode(data) {
        assert!(s.top.iter().all(|x| !x.rank.is_nan() && !x.member.is_empty()));
        assert_eq!(atrion_state::shares::Shares::decode(&s.encode()), Some(s));
    }
}

/// Change notices on arbitrary payloads, as the Redis feed (bytes) and the PostgreSQL feed
/// (text, values hex-coded) receive them.
pub fn notices(data: &[u8]) {
    use atrion_state::Change;
    use atrion_state::shares::{Shares, push_token as tok};
    // The records of `changes` again, `ns` after the version where the backend writes one,
    // values through `value`.
    fn encode(changes: &[Change], ns: Option<&[u8]>, value: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        for c in changes {
            let (kind, version, key) = match c {
                Change::Set { key, version, value: Some(_) } => (&b"set"[..], *version, key),
                Change::Set { key, version, value: None } => (&b"ref"[..], *version, key),
                Change::Deleted { key } => (&b"del"[..], 0, key),
                other => panic!("a notice never says {other:?}"),
            };
            tok(&mut out, kind);
            tok(&mut out, version.to_string().as_bytes());
            if let Some(ns) = ns {
                tok(&mut out, ns);
            }
            tok(&mut out, key.as_bytes());
            if let Change::Set { value: Some(v), .. } = c {
                tok(&mut out, &value(v));
                // A carried value is a route's shares or a heartbeat: decoding never panics.
                let _ = Shares::decode(v);
            }
        }
        out
    }
    let redis = atrion_redis::parse_notice(data);
    assert_eq!(atrion_redis::parse_notice(&encode(&redis, None, <[u8]>::to_vec)), redis);
    if let Ok(text) = std::str::from_utf8(data) {
        let pg = atrion_postgres::parse_notice(text, "atrion");
        let hex = |v: &[u8]| v.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect();
        let again = String::from_utf8(encode(&pg, Some(b"atrion"), hex)).expect("keys are text, values hex");
        assert_eq!(atrion_postgres::parse_notice(&again, "atrion"), pg);
    }
}

/// Arbitrary values under the cluster's keys, read by a node's warm start and merged into
/// its engine; and the same bytes restored as a backup file.
pub fn store_values(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    rt.block_on(async {
        let store = InMemoryStore::new();
        for (i, chunk) in data.chunks(25).take(64).enumerate() {
            let value = bytes::Bytes::copy_from_slice(chunk);
            let key = match i % 3 {
                0 => format!("atrion/route/r{}", i % 4),
                1 => format!("atrion/node/n{}", i % 5),
                _ => format!("atrion/route/a{i}"),
            };
            store.set(&key, value).await.expect("the memory store takes any value");
        }
        // The whole input as a route's shares, when it reads as such.
        if atrion_state::shares::Shares::decode(data).is_some() {
            let value = bytes::Bytes::copy_from_slice(data);
            store.set("atrion/route/whole", value).await.expect("the memory store takes any value");
        }
        let engine = std::sync::Arc::new(Engine::new(PhysicsConfig::default()).expect("defaults are valid"));
        let clock = std::sync::Arc::new(atrion_state::TokioClock::new());
        let cfg = atrion_sync::SyncConfig::for_node("a");
        if let Ok(m) = atrion_sync::StateManager::start(engine.clone(), std::sync::Arc::new(store), cfg, clock).await {
            for route in engine.route_ids() {
                check(&engine, &route);
                let d = engine.decide(&route, Timestamp::from_millis(1), Priority::Normal);
                assert!(d.resistance.is_finite());
            }
            m.shutdown().await;
        }
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("backup.jsonl");
        std::fs::write(&path, data).expect("writable");
        let service = atrion_state::StateService::builder().backend("m", InMemoryStore::new()).build().expect("valid");
        let _ = service.restore(&path).await;
    });
}

/// The engine driven by arbitrary operations, four bytes each: an operation, a route (of
/// eight, in a table of four), and two bytes of argument.
pub fn engine(data: &[u8]) {
    let mut limits = EngineLimits::default();
    limits.max_routes = 4;
    limits.idle_timeout = Duration::from_secs(5);
    let model = if data.first().is_some_and(|b| b & 1 == 1) {
        atrion_core::Model::Reference
    } else {
        atrion_core::Model::Default
    };
    let engine = Engine::with_observer(PhysicsConfig::for_model(model), limits, ()).expect("defaults are valid");
    let mut now: u64 = 1_000_000_000;
    for op in data.chunks_exact(4) {
        let route = ["a", "b", "c", "d", "e", "f", "", "x"][usize::from(op[1] % 8)];
        let arg = u16::from_le_bytes([op[2], op[3]]);
        match op[0] % 8 {
            0 | 1 => {
                let d = engine.decide(route, Timestamp::from_nanos(now), Priority::ALL[usize::from(op[2] % 5)]);
                assert!(d.resistance.is_finite());
                if let Some(r) = d.retry_after {
                    assert!(r > Duration::ZERO);
                }
            }
            2 | 3 => {
                let latency = match op[3] % 4 {
                    0 => Telemetry::MAX_LATENCY_MS,
                    1 => 0.0,
                    _ => f64::from(arg),
                };
                let t =
                    Telemetry::new(latency, f64::from(op[2] % 3) / 2.0, f64::from(op[3]) / 255.0).expect("in range");
                let st = engine.report(route, t, Timestamp::from_nanos(now));
                assert!(st.resistance.is_finite());
            }
            4 => now = now.saturating_add(u64::from(arg) * 1_000_000),
            5 => now = now.saturating_sub(u64::from(arg) * 1_000),
            6 => now = now.saturating_add(u64::from(arg) << 32),
            _ => {
                let scar = if arg == u16::MAX { None } else { Some(f64::from(arg) / 10.0) };
                let _ = engine.set_cluster(route, scar, Timestamp::from_nanos(now));
            }
        }
        assert!(engine.stats().routes <= 4, "bounded route table");
        for id in engine.route_ids() {
            check(&engine, &id);
        }
    }
}

/// The sidecar's router, built once, over an in-memory store, with one admin token and the
/// policy layer.
struct Sidecar {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    atrion: std::sync::Arc<atrion_server::SidecarAtrion>,
    policy: atrion_server::PolicyHandle,
}

/// The admin token of [`api`]'s sidecar.
const FUZZ_TOKEN: &str = "fuzz-token-0123456789";

fn sidecar() -> &'static Sidecar {
    static SIDECAR: std::sync::OnceLock<Sidecar> = std::sync::OnceLock::new();
    SIDECAR.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let atrion = std::sync::Arc::new(
            atrion::Atrion::builder().observer(atrion_server::SidecarObserver::new()).build().expect("an engine"),
        );
        let mut config = atrion_server::ServerConfig::default();
        config.admin_tokens =
            atrion_server::AdminToken::parse_list(&format!("fuzz:{FUZZ_TOKEN}")).expect("a valid token");
        let policy = rt.block_on(atrion_policy::PolicyNode::start(
            atrion.engine().clone(),
            atrion.store().clone(),
            atrion_policy::PolicyKeys::new("fuzz", "fuzz"),
            atrion.clock().clone(),
            atrion_policy::PolicyConfig::default(),
        ));
        config.policy = Some(policy.clone());
        let app = atrion_server::router(atrion.clone(), &config);
        Sidecar { rt, app, atrion, policy }
    })
}

/// The sidecar's API on arbitrary bodies: the first byte picks the endpoint, the rest is the
/// body. Client mistakes are 4xx problems that change no route; nothing is ever a 5xx.
pub fn api(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let (path, admin) = match pick % 6 {
        0 => ("/v1/decide", false),
        1 => ("/v1/report", false),
        2 => ("/v1/batch", false),
        3 => ("/v1/admin/open", true),
        4 => ("/v1/admin/restore", true),
        _ => ("/v1/admin/reset", true),
    };
    let s = sidecar();
    let routes_before = s.atrion.engine().route_ids().len();
    let (status, kind, bytes) = send(s, axum::http::Method::POST, path, admin, body);
    assert!(!status.is_server_error(), "{path}: {status} for a client's body");
    let answer: serde_json::Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
    if status.is_client_error() {
        assert_eq!(kind, "application/problem+json", "{path}: {answer}");
        assert!(answer["type"].as_str().is_some_and(|t| t.starts_with("tag:atrion,2026:problem/")), "{answer}");
        if path == "/v1/decide" || path == "/v1/report" {
            assert_eq!(s.atrion.engine().route_ids().len(), routes_before, "{path}: a refused body created a route");
        }
    }
}

/// Policy documents through the validation pipeline, and route patterns. The first byte
/// picks TOML or JSON; the text is the document. Three lines of text (two patterns and a
/// route) also check that patterns which both match a route are found to overlap.
pub fn policies(data: &[u8]) {
    use atrion_policy::{Desired, Limits, Validator};
    let Some((&pick, body)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(body) else { return };
    let mut lines = text.lines();
    if let (Some(p), Some(q), Some(route)) = (lines.next(), lines.next(), lines.next())
        && let (Ok(p), Ok(q)) = (atrion_core::RoutePattern::parse(p), atrion_core::RoutePattern::parse(q))
        && p.matches(route)
        && q.matches(route)
    {
        assert!(p.overlaps(&q) && q.overlaps(&p), "`{p}` and `{q}` both match `{route}`");
    }
    let v = Validator::new(PhysicsConfig::default(), Limits::default());
    // Deadlines are judged at a fixed time, so that an input means the same on every run.
    const NOW: u64 = 1_700_000_000_000;
    let checked = if pick % 2 == 0 { v.check_toml(text, NOW) } else { v.check_json(text, NOW) };
    let set = match checked {
        Ok(set) => set,
        Err(r) => {
            assert!(!r.issues.is_empty(), "a rejection names its issues");
            return;
        }
    };
    let desired = Desired { api: set, ..Desired::default() };
    v.check_desired(&desired).expect("a set that passes alone passes as a document");
    let engine = Engine::new(PhysicsConfig::default()).expect("the default config");
    let mut installed = Vec::new();
    for (_, p) in desired.effective() {
        let physics = v.physics(p).expect("validated physics resolves");
        installed.push(atrion_core::RoutePolicy {
            pattern: p.route.clone(),
            config: physics,
            hold: p.state.map_or(atrion_core::Hold::Released, Into::into),
        });
    }
    engine.set_policies(installed).expect("validated policies install");
    for (_, p) in desired.effective().into_iter().take(16) {
        let route = p.route.replace(['*', '?'], "x");
        let d = engine.decide(&route, Timestamp::from_millis(1), Priority::Normal);
        assert!(d.resistance.is_finite());
    }
}

/// One request to the fuzz sidecar: (status, content type, body).
fn send(
    s: &Sidecar,
    method: axum::http::Method,
    path: &str,
    admin: bool,
    body: &[u8],
) -> (axum::http::StatusCode, String, axum::body::Bytes) {
    use tower::ServiceExt as _;
    let mut req = axum::http::Request::builder().method(method).uri(path).header("content-type", "application/json");
    if admin {
        req = req.header("authorization", format!("Bearer {FUZZ_TOKEN}"));
    }
    let req = req.body(axum::body::Body::from(body.to_vec())).expect("a request");
    s.rt.block_on(async {
        let r = s.app.clone().oneshot(req).await.expect("the router is infallible");
        let status = r.status();
        let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.expect("a body");
        (status, kind, bytes)
    })
}

/// Task leases on arbitrary input; the first byte picks the surface. Even: the engine's
/// lease operations, four bytes each (an operation, a route of five, two bytes of
/// argument) on a registry of at most eight leases and a table of two routes, with the
/// counts checked after every step (live leases in all equal the sum per route, and never
/// more than the bound). Odd: the sidecar's task endpoints on arbitrary bodies and ids
/// (never a 5xx; a 4xx is a problem+json; an id it did not issue is 404).
pub fn tasks(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    if pick % 2 == 0 { lease_ops(rest) } else { task_api(rest) }
}

fn lease_ops(data: &[u8]) {
    use atrion_core::{AbortHandle, LeaseOptions, LeaseStart, Profile};
    let mut limits = EngineLimits::default();
    limits.max_routes = 2;
    limits.max_leases = 8;
    let engine = Engine::with_observer(PhysicsConfig::default(), limits, ()).expect("defaults are valid");
    let routes = ["a", "b", "c", "", "a*"];
    let mut ids = Vec::new();
    let mut now: u64 = 1_000_000_000;
    for op in data.chunks_exact(4) {
        let route = routes[usize::from(op[1] % 5)];
        let arg = u16::from_le_bytes([op[2], op[3]]);
        let at = Timestamp::from_nanos(now);
        let pick = |ids: &Vec<atrion_core::LeaseId>| ids.get(usize::from(arg) % ids.len().max(1)).copied();
        match op[0] % 8 {
            0 | 1 => {
                let mut o = LeaseOptions::new().max_duration(Duration::from_millis(u64::from(arg) + 1));
                if op[0] & 0x10 != 0 {
                    o = o.heartbeat(Duration::from_millis(u64::from(op[3]) + 1));
                }
                if op[0] & 0x20 != 0 {
                    o = o.profile(Profile::ALL[usize::from(op[2] % 4)]);
                }
                if op[0] & 0x40 != 0 {
                    o = o.abort(AbortHandle::new());
                }
                if let Ok(LeaseStart::Granted(g)) = engine.start_lease(route, at, o) {
                    assert!(g.deadlines.expires_at > at);
                    ids.push(g.id);
                }
            }
            2 => {
                if let Some(id) = pick(&ids) {
                    if let Ok(d) = engine.heartbeat_lease(id, at) {
                        assert!(d.heartbeat_by.is_none_or(|h| h > at) && d.expires_at >= at);
                    }
                }
            }
            3 => {
                if let Some(id) = pick(&ids) {
                    let _ = engine.complete_lease(id, op[3] & 1 == 0, at);
                    assert!(engine.lease_deadlines(id).is_err(), "a completed lease is gone");
                }
            }
            4 => {
                if let Some(id) = pick(&ids) {
                    let _ = engine.cancel_lease(id, at);
                }
            }
            5 => {
                let swept = engine.sweep_leases(at);
                assert!(swept <= 8);
                assert!(engine.next_lease_deadline().is_none_or(|d| d >= at), "nothing overdue is left");
            }
            6 => now = now.saturating_add(u64::from(arg) * 1_000_000),
            _ => {
                let profile = Profile::ALL.get(usize::from(op[2] % 5)).map(|p| p.config());
                let _ = engine.set_route_profile(route, profile);
            }
        }
        let live = engine.lease_count();
        assert!(live <= 8, "bounded registry");
        let counted: u32 = routes.iter().filter(|r| !r.is_empty()).map(|r| engine.active_leases(r)).sum();
        assert_eq!(counted as usize, live, "every live lease counted on its route");
    }
}

fn task_api(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let s = sidecar();
    // An id: a real one of this node (tampered or not), or the input's URL-safe bytes.
    let id = match pick % 4 {
        0 | 1 => {
            let (_, _, bytes) = send(s, axum::http::Method::POST, "/v1/tasks", false, br#"{"route": "fuzz/task"}"#);
            let answer: serde_json::Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
            let mut id = answer["id"].as_str().unwrap_or("t1").to_owned();
            if pick % 4 == 1 && !body.is_empty() {
                id.pop();
                id.push(if body[0] % 2 == 0 { 'A' } else { 'B' });
            }
            id
        }
        _ => body
            .iter()
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            .map(|&b| char::from(b))
            .collect(),
    };
    let id = if id.is_empty() { "x".to_owned() } else { id };
    let (method, path) = match pick / 4 % 4 {
        0 => (axum::http::Method::POST, "/v1/tasks".to_owned()),
        1 => (axum::http::Method::POST, format!("/v1/tasks/{id}/heartbeat")),
        2 => (axum::http::Method::POST, format!("/v1/tasks/{id}/complete")),
        _ => (axum::http::Method::DELETE, format!("/v1/tasks/{id}")),
    };
    let (status, kind, bytes) = send(s, method, &path, false, body);
    assert!(!status.is_server_error(), "{path}: {status}");
    if status.is_client_error() {
        let answer: serde_json::Value = serde_json::from_slice(&bytes).expect("every problem is JSON");
        assert_eq!(kind, "application/problem+json", "{path}: {answer}");
    }
}

/// The policy endpoints on arbitrary bodies: the first byte picks `PUT /v1/policies`,
/// `POST /v1/policies` or `POST /v1/bans`. Never a 5xx; a 4xx is a problem+json and leaves
/// desired state at its version; a 2xx names the version now in force on this node.
pub fn policy_api(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let (method, path) = match pick % 3 {
        0 => (axum::http::Method::PUT, "/v1/policies"),
        1 => (axum::http::Method::POST, "/v1/policies"),
        _ => (axum::http::Method::POST, "/v1/bans"),
    };
    let s = sidecar();
    let version = || s.rt.block_on(s.policy.desired().read()).expect("the memory store answers").0.version;
    let before = version();
    let (status, kind, bytes) = send(s, method, path, true, body);
    assert!(!status.is_server_error(), "{path}: {status} for a client's body");
    let answer: serde_json::Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
    if status.is_client_error() {
        assert_eq!(kind, "application/problem+json", "{path}: {answer}");
        assert_eq!(version(), before, "{path}: a refused change changed desired state: {answer}");
    } else {
        let now = answer["version"].as_u64().expect("a version");
        assert!(now >= before);
        assert_eq!(s.policy.current().version, now, "applied on this node before the answer");
    }
}

/// Proxy mode in front of an upstream on loopback that records each request target it
/// receives; the runtime that drives both.
struct Proxied {
    rt: tokio::runtime::Runtime,
    upstream: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn proxied() -> &'static Proxied {
    static PROXIED: std::sync::OnceLock<Proxied> = std::sync::OnceLock::new();
    PROXIED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            kept.lock().expect("not poisoned").push(uri.to_string());
            std::future::ready("upstream")
        });
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a loopback port");
        let upstream = format!("http://{}", listener.local_addr().expect("bound"));
        rt.spawn(async move { axum::serve(listener, app).await });
        Proxied { rt, upstream, seen }
    })
}

/// Proxy mode's path normalization on arbitrary request targets, through the real proxy
/// (normalization, route, decision, forwarding) to a real upstream. What it forwards is what
/// it decided on: the upstream receives the normal path (the query as it came) and the one
/// route decided is that path's route; a path that cannot be normalized is a `400` problem
/// that creates no route and reaches nothing. The normal form is idempotent, holds no empty,
/// `.` or `..` segment, no lowercase or needless escape, and names the same resource: its
/// decoded segments are those of the target's, resolved by a plain model of RFC 3986.
pub fn proxy_path(data: &[u8]) {
    use tower::ServiceExt as _;
    let Ok(uri) = axum::http::Uri::try_from(data) else { return };
    let normal = atrion_server::normalize_path(uri.path());
    let model = resolve(uri.path().as_bytes());
    match (&normal, &model) {
        (Ok(n), Some(m)) => {
            check_normal(n);
            assert_eq!(&segments_of(n.as_bytes()), m, "{n} names another resource than {}", uri.path());
        }
        (Err(_), None) => {}
        _ => panic!("{}: normalized {normal:?}, model {model:?}", uri.path()),
    }
    let p = proxied();
    p.seen.lock().expect("not poisoned").clear();
    let atrion = std::sync::Arc::new(
        atrion::Atrion::builder().observer(atrion_server::SidecarObserver::new()).build().expect("an engine"),
    );
    let templates = ["/users/{id}".to_owned(), "/files/{name}/raw".to_owned()];
    let config = atrion_server::ProxyConfig::new(&p.upstream, &templates).expect("a valid proxy");
    let app = atrion_server::proxy_router(atrion.clone(), &config);
    let request = axum::http::Request::get(uri.clone()).body(axum::body::Body::empty()).expect("a request");
    let (status, kind) = p.rt.block_on(async {
        let r = app.oneshot(request).await.expect("the router is infallible");
        let kind = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let status = r.status();
        let _ = axum::body::to_bytes(r.into_body(), usize::MAX).await;
        (status, kind)
    });
    let seen = std::mem::take(&mut *p.seen.lock().expect("not poisoned"));
    let routes = atrion.engine().route_ids();
    let Ok(n) = normal else {
        assert_eq!((status.as_u16(), kind.as_str()), (400, "application/problem+json"), "{uri}");
        assert!(seen.is_empty() && routes.is_empty(), "{uri}: refused, yet {seen:?} {routes:?}");
        return;
    };
    assert_eq!(status.as_u16(), 200, "{uri} -> {n}");
    let target = match uri.query() {
        Some(q) => format!("{n}?{q}"),
        None => n.clone().into_owned(),
    };
    assert_eq!(seen, [target], "{uri}: forwarded as its normal form, once");
    let forwarded: axum::http::Uri = seen[0].parse().expect("what the upstream received parses");
    let head = axum::http::Request::get(forwarded).body(()).expect("a request");
    let mut route = String::new();
    let parts = head.into_parts().0;
    config.route(
        &atrion::layer::RequestHead {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
        },
        &mut route,
    );
    assert_eq!(routes, [route], "{uri}: the route decided is the forwarded path's");
}

/// The invariants of a normal path, checked byte by byte.
fn check_normal(n: &str) {
    assert_eq!(atrion_server::normalize_path(n).as_deref(), Ok(n), "idempotent, and normal costs no allocation");
    assert!(matches!(atrion_server::normalize_path(n), Ok(std::borrow::Cow::Borrowed(_))), "{n}");
    let rest = n.strip_prefix('/').expect("absolute");
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(!matches!(*seg, "." | "..") && (last || !seg.is_empty()), "{n}: segment {seg:?}");
    }
    let b = n.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = u8::from_str_radix(&n[i + 1..i + 3], 16).expect("two hex digits");
            assert!(n[i + 1..i + 3].bytes().all(|c| !c.is_ascii_lowercase()), "{n}: lowercase escape");
            assert!(!v.is_ascii_alphanumeric() && !b"-._~/\\\0".contains(&v), "{n}: escape of {v:#x}");
            i += 3;
        } else {
            assert!(b[i] == b'/' || b[i].is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b[i]), "{n}");
            i += 1;
        }
    }
}

/// A plain model of what a path names: its segments, each fully percent-decoded, with
/// RFC 3986 dot-segments resolved and empty segments dropped (a trailing slash kept as a
/// last empty one). `None` where the proxy must refuse: not absolute, a bad escape, `%00`,
/// an encoded or raw `\` or an encoded `/`, a `..` above the root.
fn resolve(path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let rest = path.strip_prefix(b"/")?;
    let raw: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut trailing = false;
    for (i, seg) in raw.iter().enumerate() {
        let seg = decode(seg)?;
        if seg.iter().any(|&b| matches!(b, 0 | b'/' | b'\\')) {
            return None;
        }
        trailing = i + 1 == raw.len();
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            _ => {
                out.push(seg);
                trailing = false;
            }
        }
    }
    if trailing && !out.is_empty() {
        out.push(Vec::new());
    }
    Some(out)
}

/// The decoded segments of a normal path, in the model's terms.
fn segments_of(n: &[u8]) -> Vec<Vec<u8>> {
    resolve(n).expect("a normal path resolves")
}

/// Percent-decodes one segment; `None` for a bad escape.
fn decode(seg: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'%' {
            let hex = std::str::from_utf8(seg.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(seg[i]);
            i += 1;
        }
    }
    Some(out)
}
