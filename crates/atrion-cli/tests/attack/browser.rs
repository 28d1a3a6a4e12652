//! What a web page in the user's browser can do to the sidecar (defect 10): a `text/plain`
//! form or fetch (CSRF), a rebound DNS name (a foreign `Host`), a cross-origin `Origin`; and
//! what still passes: the server's own origin, configured CORS origins, client tokens.

use serde_json::Value;

use crate::common::{Serve, free_port};
use crate::wire::{self, port_of, post};

const LOCAL: [u8; 4] = [127, 0, 0, 1];

fn start(extra: &[&str]) -> Serve {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--store", "memory", "--listen", &listen];
    args.extend_from_slice(extra);
    Serve::start(&args, &[])
}

/// Whether the server tracks `route`.
async fn known(s: &Serve, route: &str) -> bool {
    let r = reqwest::get(format!("{}/v1/routes/{route}", s.url)).await.unwrap();
    match r.status().as_u16() {
        200 => true,
        404 => false,
        other => panic!("GET /v1/routes/{route}: {other}"),
    }
}

fn problem(answer: &wire::Answer, status: u16, kind: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/problem+json"), "{answer:?}");
    let body: Value = serde_json::from_str(&answer.body).expect("a JSON problem");
    assert_eq!(body["type"], format!("tag:atrion,2026:problem/{kind}"), "{body}");
}

/// A page can post `text/plain` anywhere without a preflight: the sidecar answers 415 and
/// creates nothing; the same body as JSON is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_plain_decision_is_refused_and_changes_nothing() {
    let s = start(&[]);
    let port = port_of(&s.url);
    let host = format!("127.0.0.1:{port}");
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let body = r#"{"route":"csrf-victim"}"#;
        let a = wire::send(LOCAL, port, &post(&host, "/v1/decide", content_type, "", body)).await.unwrap();
        problem(&a, 415, "unsupported-media-type");
        let report = r#"{"route":"csrf-victim","latency_ms":5000,"ok":false}"#;
        let a = wire::send(LOCAL, port, &post(&host, "/v1/report", content_type, "", report)).await.unwrap();
        problem(&a, 415, "unsupported-media-type");
    }
    assert!(!known(&s, "csrf-victim").await, "a refused decision created no route");
    let a = wire::send(
        LOCAL,
        port,
        &post(&host, "/v1/decide", "application/json; charset=utf-8", "", r#"{"route":"csrf-victim"}"#),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(known(&s, "csrf-victim").await);
    s.stop();
}

/// DNS rebinding: a page on `rebound.example` that resolves to 127.0.0.1 sends
/// `Host: rebound.example:PORT`. It gets 421 and changes nothing; the listen address and
/// `localhost` pass, and so does a configured name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_and_changes_nothing() {
    let s = start(&["--allowed-host", "atrion.internal"]);
    let port = port_of(&s.url);
    let body = r#"{"route":"rebound"}"#;
    for host in [format!("rebound.example:{port}"), format!("127.0.0.2:{port}"), "localhost".to_owned()] {
        let a = wire::send(LOCAL, port, &post(&host, "/v1/decide", "application/json", "", body)).await.unwrap();
        problem(&a, 421, "misdirected-request");
        let get = format!("GET /v1/routes HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        problem(&wire::send(LOCAL, port, &get).await.unwrap(), 421, "misdirected-request");
    }
    let no_host = "GET /v1/routes HTTP/1.1\r\nConnection: close\r\n\r\n";
    problem(&wire::send(LOCAL, port, no_host).await.unwrap(), 421, "misdirected-request");
    assert!(!known(&s, "rebound").await, "a refused decision created no route");
    for (host, route) in [
        (format!("127.0.0.1:{port}"), "by-address"),
        (format!("LocalHost:{port}"), "by-localhost"),
        (format!("atrion.internal:{port}"), "by-name"),
    ] {
        let a = wire::send(
            LOCAL,
            port,
            &post(&host, "/v1/decide", "application/json", "", &format!(r#"{{"route":"{route}"}}"#)),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200, "{host}: {a:?}");
    }
    // Probes pass whatever name they use.
    let probe = "GET /healthz HTTP/1.1\r\nHost: kubelet.example\r\nConnection: close\r\n\r\n";
    assert_eq!(wire::send(LOCAL, port, probe).await.unwrap().status, 200);
    s.stop();
}

/// A cross-origin request from a browser (an `Origin` of another site, or
/// `Sec-Fetch-Site: cross-site`) is refused; the server's own origin (the dashboard) passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_request_is_refused_and_the_same_origin_passes() {
    let s = start(&[]);
    let port = port_of(&s.url);
    let host = format!("127.0.0.1:{port}");
    let body = r#"{"route":"cross"}"#;
    for extra in [
        "Origin: http://evil.example\r\n".to_owned(),
        "Origin: null\r\n".to_owned(),
        format!("Origin: http://localhost:{port}\r\n"),
        "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\n".to_owned(),
    ] {
        let a = wire::send(LOCAL, port, &post(&host, "/v1/decide", "application/json", &extra, body)).await.unwrap();
        problem(&a, 403, "cross-origin");
        assert!(a.header("access-control-allow-origin").is_none(), "no CORS unless configured");
    }
    assert!(!known(&s, "cross").await, "a refused decision created no route");
    // The dashboard's own requests: same origin.
    let own = format!("Origin: http://{host}\r\nSec-Fetch-Site: same-origin\r\n");
    let a = wire::send(LOCAL, port, &post(&host, "/v1/decide", "application/json", &own, body)).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    // A link to the dashboard from another site still opens it.
    let nav = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(wire::send(LOCAL, port, &nav).await.unwrap().status, 200);
    s.stop();
}

/// With `--cors-origin`, that origin's preflight and request get CORS headers; another
/// origin is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_cors_origin_passes_with_its_headers() {
    let s = start(&["--cors-origin", "https://app.example"]);
    let port = port_of(&s.url);
    let host = format!("127.0.0.1:{port}");
    let preflight = format!(
        "OPTIONS /v1/decide HTTP/1.1\r\nHost: {host}\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
    );
    let a = wire::send(LOCAL, port, &preflight).await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(a.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{a:?}");
    let from_app = "Origin: https://app.example\r\nSec-Fetch-Site: cross-site\r\n";
    let a = wire::send(LOCAL, port, &post(&host, "/v1/decide", "application/json", from_app, r#"{"route":"app"}"#))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("access-control-allow-origin"), Some("https://app.example"));
    let evil = "Origin: https://evil.example\r\n";
    let a = wire::send(LOCAL, port, &post(&host, "/v1/decide", "application/json", evil, r#"{"route":"evil"}"#))
        .await
        .unwrap();
    problem(&a, 403, "cross-origin");
    s.stop();
}

/// With `--client-tokens-file`, decide and report need a client token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_can_require_a_client_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients");
    std::fs::write(&file, "checkout:client-secret-0123456789\n").unwrap();
    let s = start(&["--client-tokens-file", file.to_str().unwrap()]);
    let port = port_of(&s.url);
    let host = format!("127.0.0.1:{port}");
    let body = r#"{"route":"tokened"}"#;
    for extra in ["", "Authorization: Bearer wrong-secret-0123456789\r\n"] {
        let a = wire::send(LOCAL, port, &post(&host, "/v1/decide", "application/json", extra, body)).await.unwrap();
        problem(&a, 401, "client-token-required");
        assert!(a.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    }
    assert!(!known(&s, "tokened").await);
    let a = wire::send(
        LOCAL,
        port,
        &post(&host, "/v1/decide", "application/json", "Authorization: bearer client-secret-0123456789\r\n", body),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    s.stop();
}

/// A path whose escapes are not UTF-8 is a problem, as every other refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_path_is_a_problem() {
    let s = start(&[]);
    let port = port_of(&s.url);
    for path in ["/v1/routes/%FF", "/v1/dashboard/routes/%C3%28", "/v1/routes/a%FFb"] {
        let a = wire::send(LOCAL, port, &wire::get(port, path)).await.unwrap();
        problem(&a, 400, "invalid-path");
    }
    s.stop();
}
