//! Proxy mode in front of a real upstream HTTP server started by the test, over real TCP on
//! tokio's paused clock: a failing route is shed with 503, Retry-After and a problem body
//! (as a ban is, and as the API refuses) while healthy routes flow, the upstream's own 503
//! passes untouched, it comes back after the upstream recovers, a large streamed body passes
//! through intact both ways, and hop-by-hop headers stay on their hop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atrion::state::TokioClock;
use atrion::{Atrion, PhysicsConfig};
use atrion_server::{ProxyConfig, SidecarAtrion, SidecarObserver, proxy_router};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

fn quick() -> PhysicsConfig {
    let mut c = PhysicsConfig::default().with_scar_half_life(Duration::from_millis(400));
    c.scar_rate = 60.0;
    c.half_open.open_base = Duration::from_millis(200);
    c.half_open.open_max = Duration::from_millis(400);
    c.half_open.probe_window = Duration::from_millis(50);
    c
}

async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The upstream: `/users/{id}` healthy, `/busy` its own `503` with `Retry-After`, `/pay` failing while `failing` is set, `/big`
/// streams 8 MiB in 64 KiB chunks, `/echo` sends the request body back, `/headers` shows
/// what arrived.
async fn upstream(failing: Arc<AtomicBool>) -> String {
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/busy", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "7")], "busy") }))
        .route(
            "/pay",
            get(move || {
                let failing = failing.clone();
                async move {
                    if failing.load(Ordering::Relaxed) {
                        (StatusCode::INTERNAL_SERVER_ERROR, "down")
                    } else {
                        (StatusCode::OK, "paid")
                    }
                }
            }),
        )
        .route(
            "/big",
            get(|| async {
                let chunks =
                    (0..128u32).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; 64 * 1024])));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route("/echo", post(|body: Bytes| async move { body }).layer(axum::extract::DefaultBodyLimit::disable()))
        .route(
            "/headers",
            get(|headers: HeaderMap| async move {
                let mut names: Vec<String> =
                    headers.iter().map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?"))).collect();
                names.sort();
                names.join("\n")
            }),
        );
    listen(app).await
}

async fn start(upstream: &str) -> (Arc<SidecarAtrion>, String) {
    let atrion = Arc::new(
        Atrion::builder().observer(SidecarObserver::new()).config(quick()).clock(TokioClock::new()).build().unwrap(),
    );
    let config = ProxyConfig::new(upstream, &["/users/{id}".to_owned()]).unwrap();
    let proxy = listen(proxy_router(atrion.clone(), &config)).await;
    (atrion, proxy)
}

#[tokio::test(start_paused = true)]
async fn the_proxy_sheds_a_failing_route_keeps_the_others_and_lets_it_back() {
    let failing = Arc::new(AtomicBool::new(false));
    let (atrion, proxy) = start(&upstream(failing.clone()).await).await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{proxy}{path}")).send();

    for i in 0..30 {
        assert_eq!(get(&format!("/users/{i}")).await.unwrap().text().await.unwrap(), "user");
        assert_eq!(get("/pay").await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Path templates bound the routes: thirty users are one route.
    let mut ids = atrion.engine().route_ids();
    ids.sort();
    assert_eq!(ids, ["GET /pay", "GET /users/{id}"]);

    failing.store(true, Ordering::Relaxed);
    let mut shed = None;
    for i in 0..400 {
        let r = get("/pay").await.unwrap();
        if r.status() == 503 {
            shed = Some(r);
            break;
        }
        assert_eq!(r.status(), 500, "the upstream's failure passes through until Atrion sheds");
        // Healthy routes keep flowing meanwhile.
        assert_eq!(get(&format!("/users/{i}")).await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = shed.expect("the failing route is shed");
    let retry: u64 = shed.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    // The API's shape: a problem, its retry hint the header's.
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = shed.json().await.unwrap();
    assert_eq!((p["type"].as_str(), p["status"].as_u64()), (Some("tag:atrion,2026:problem/shed"), Some(503)), "{p}");
    assert_eq!(p["retry_after_ms"].as_u64(), Some(retry * 1_000), "{p}");
    assert_eq!(get("/users/7").await.unwrap().status(), 200, "a healthy route is not shed");

    // The upstream recovers: the route comes back.
    failing.store(false, Ordering::Relaxed);
    let mut back = false;
    for _ in 0..600 {
        if get("/pay").await.unwrap().status() == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "the route is let back after recovery");
}

#[tokio::test(start_paused = true)]
async fn bodies_stream_through_intact_and_hop_by_hop_headers_stay_behind() {
    let (atrion, proxy) = start(&upstream(Arc::new(AtomicBool::new(false))).await).await;
    let client = reqwest::Client::new();
    // 8 MiB down, in chunks, read as a stream.
    let mut r = client.get(format!("{proxy}/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (mut n, mut sum) = (0usize, 0u64);
    while let Some(chunk) = r.chunk().await.unwrap() {
        n += chunk.len();
        sum += chunk.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    let expected: u64 = (0..128u64).map(|i| (i % 251) * 64 * 1024).sum();
    assert_eq!((n, sum), (8 * 1024 * 1024, expected));
    assert_eq!(atrion.engine().snapshot("GET /big").unwrap().updates, 1, "reported once, at the body's end");
    // 4 MiB up and back.
    let body: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let r = client.post(format!("{proxy}/echo")).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == body, "the request body streams up intact");
    // Hop-by-hop headers, and those `Connection` names, are not forwarded; Host is the upstream's.
    let seen = client
        .get(format!("{proxy}/headers"))
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-end-to-end", "kept")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(seen.contains("x-end-to-end=kept"), "{seen}");
    assert!(!seen.contains("x-hop") && !seen.contains("proxy-authorization"), "{seen}");
    assert!(seen.contains("x-forwarded-host=127.0.0.1"), "{seen}");
}

#[tokio::test(start_paused = true)]
async fn the_upstreams_own_503_is_not_taken_for_a_shed() {
    let (atrion, proxy) = start(&upstream(Arc::new(AtomicBool::new(false))).await).await;
    let r = reqwest::get(format!("{proxy}/busy")).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (503, "7"));
    assert_ne!(r.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/problem+json"[..]));
    assert_eq!(r.text().await.unwrap(), "busy", "the upstream's answer, as it sent it");
    assert_eq!(atrion.engine().snapshot("GET /busy").unwrap().updates, 1, "admitted, forwarded, reported");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_is_away_is_a_502_problem_and_a_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (atrion, proxy) = start(&format!("http://127.0.0.1:{port}")).await;
    let r = reqwest::get(format!("{proxy}/users/1")).await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(atrion.engine().snapshot("GET /users/{id}").unwrap().updates, 1);
}

#[tokio::test(start_paused = true)]
async fn the_proxy_sheds_banned_clients_and_routes_until_the_deadline() {
    use atrion_policy::{Ban, Change, PolicyConfig, PolicyNode, Source};
    let upstream = upstream(Arc::new(AtomicBool::new(false))).await;
    let atrion = Arc::new(
        Atrion::builder().observer(SidecarObserver::new()).config(quick()).clock(TokioClock::new()).build().unwrap(),
    );
    let store: Arc<dyn atrion::state::StateStore> = Arc::new(atrion::state::InMemoryStore::new());
    let policy = PolicyNode::start(
        atrion.engine().clone(),
        store,
        atrion_policy::PolicyKeys::new("proxy", "p"),
        atrion.clock().clone(),
        PolicyConfig::default(),
    )
    .await;
    let mut config = ProxyConfig::new(&upstream, &["/users/{id}".to_owned()]).unwrap();
    config.policy = Some(policy.clone());
    let proxy = listen(proxy_router(atrion.clone(), &config)).await;
    let client = reqwest::Client::new();
    let get = |path: &str, key: &str| client.get(format!("{proxy}{path}")).header("x-atrion-client", key).send();
    assert_eq!(get("/users/1", "bot").await.unwrap().status(), 200, "nothing banned yet");
    let until = policy.wall_ms() + 5_000;
    let bans = [
        Ban { route: None, client: Some("bot".into()), until_ms: until, reason: None },
        Ban { route: Some("GET /pay".into()), client: None, until_ms: until, reason: None },
    ];
    for b in bans {
        policy.change(Source::Api, &Change::Ban(b), "test", None).await.unwrap();
    }
    let r = get("/users/1", "bot").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (p["type"].as_str(), p["retry_after_ms"].as_u64()),
        (Some("tag:atrion,2026:problem/banned"), Some(5_000))
    );
    assert_eq!(get("/users/1", "alice").await.unwrap().status(), 200, "other clients pass");
    assert_eq!(get("/pay", "alice").await.unwrap().status(), 503, "a banned route is shed for everyone");
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    assert_eq!(get("/users/1", "bot").await.unwrap().status(), 200, "the ban is over at its deadline");
    assert_eq!(get("/pay", "alice").await.unwrap().status(), 200);
    policy.shutdown().await;
}

/// An upstream that counts the TCP connections it accepts: `/users/{id}` answers, `/last`
/// answers with `Connection: close` (and closes).
async fn counting_upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::serve::ListenerExt as _;
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/last", get(|| async { ([("connection", "close")], "bye") }))
        .route("/target", get(|uri: axum::http::Uri| async move { uri.to_string() }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), accepted)
}

#[tokio::test(start_paused = true)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (upstream, accepted) = counting_upstream().await;
    let (atrion, proxy) = start(&upstream).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let r = client.get(format!("{proxy}/users/{i}")).send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "user".to_owned()));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one request at a time: one upstream connection");
    let target = client.get(format!("{proxy}/target?a=1&b=%2F")).send().await.unwrap().text().await.unwrap();
    assert_eq!(target, "/target?a=1&b=%2F", "the request target in origin form, the query as it came");
    // Eight at a time, five rounds: at most eight connections, kept across rounds.
    for round in 0..5 {
        let calls = (0..8).map(|i| {
            let (client, proxy) = (client.clone(), proxy.clone());
            async move { client.get(format!("{proxy}/users/{round}{i}")).send().await.unwrap().status() }
        });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200);
        }
    }
    let n = accepted.load(Ordering::SeqCst);
    assert!((1..=8).contains(&n), "{n} upstream connections for 8 concurrent requests");
    assert_eq!(atrion.engine().snapshot("GET /users/{id}").unwrap().updates, 60, "every request reported");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_closes_its_connections_is_connected_to_again() {
    let (upstream, accepted) = counting_upstream().await;
    let (_atrion, proxy) = start(&upstream).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client.get(format!("{proxy}/last")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("connection").is_none(), "a hop-by-hop header stays on its hop");
        assert_eq!(r.text().await.unwrap(), "bye");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "a closed connection is not reused");
    let r = client.get(format!("{proxy}/users/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_dropped_is_replaced() {
    // A bare upstream that answers one request per connection, then closes it without a
    // `Connection: close`: the proxy pools the connection and finds it closed later.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
            s.shutdown().await.unwrap();
            drop(s);
            closed_tx.send(()).unwrap();
        }
    });
    let (_atrion, proxy) = start(&upstream).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client.get(format!("{proxy}/users/1")).send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "ok".to_owned()));
        closed.recv().await.unwrap();
    }
}
