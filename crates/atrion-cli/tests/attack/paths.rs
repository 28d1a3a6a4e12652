//! Path variants through proxy mode (issue 25, defect 7): with `GET /file.txt` held open,
//! `//file.txt`, `/./file.txt`, `/%66ile.txt` and `/x/../file.txt` reached the upstream and
//! each became a new route. Now each variant is that held route, a path that cannot be
//! normalized is refused with 400, and the upstream only ever sees normal paths.

use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Serve, free_port};

const TOKEN: &str = "ops-secret-for-the-path-attack";

/// An upstream on loopback that answers 200 to everything and records each request target
/// it receives.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let kept = kept.clone();
        async move {
            kept.lock().unwrap().push(uri.to_string());
            "the file"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// `GET target` sent byte for byte (an HTTP client would normalize it first): the status and
/// the `Content-Type`.
async fn raw_get(proxy: &str, target: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{answer}"));
    let content_type = answer
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    (status, content_type)
}

/// Whether the sidecar tracks `route`.
async fn tracked(s: &Serve, route: &str) -> bool {
    let path: String = route.bytes().map(|b| format!("%{b:02X}")).collect();
    let status = reqwest::get(format!("{}/v1/routes/{path}", s.url)).await.unwrap().status();
    assert!(status == 200 || status == 404, "{route}: {status}");
    status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_variants_of_a_held_route_are_that_route_and_the_upstream_sees_only_normal_paths() {
    let (upstream, seen) = recording_upstream().await;
    let (listen, proxy) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let s = Serve::start(
        &["--store", "memory", "--listen", &listen, "--upstream", &upstream, "--proxy-listen", &proxy],
        &[("ATRION_ADMIN_TOKENS", &format!("ops:{TOKEN}"))],
    );
    assert_eq!(raw_get(&proxy, "/file.txt").await.0, 200);
    let (status, _) = s.admin(Method::POST, "/v1/admin/open", TOKEN, Some(json!({"route": "GET /file.txt"}))).await;
    assert_eq!(status, 200);

    let variants = [
        "//file.txt",
        "/./file.txt",
        "/%66ile.txt",
        "/x/../file.txt",
        "/%2e/x/%2E%2e//file.txt",
        "/x/y/../..//./%66%69%6c%65.txt",
    ];
    for variant in variants {
        assert_eq!(raw_get(&proxy, variant).await.0, 503, "{variant} is the held route, shed");
        assert!(!tracked(&s, &format!("GET {variant}")).await, "{variant} became a route of its own");
    }

    // What cannot be normalized is refused, as a problem, and never forwarded.
    for bad in ["/a%2Fb", "/a%5cb", "/a\\b", "/a%zz", "/a%00", "/..", "/%2e%2e/file.txt", "/x/../../file.txt"] {
        let (status, content_type) = raw_get(&proxy, bad).await;
        assert_eq!((status, content_type.as_str()), (400, "application/problem+json"), "{bad}");
        assert!(!tracked(&s, &format!("GET {bad}")).await, "{bad} became a route");
    }

    // Released, a variant is forwarded normalized; its query goes as it came.
    let (status, _) = s.admin(Method::POST, "/v1/admin/release", TOKEN, Some(json!({"route": "GET /file.txt"}))).await;
    assert_eq!(status, 200);
    assert_eq!(raw_get(&proxy, "/x/../%66ile.txt?a=%2e%2E/..&b=//").await.0, 200);
    assert_eq!(raw_get(&proxy, "/docs//a/./b/").await.0, 200);
    assert!(tracked(&s, "GET /docs/a/b/").await);
    assert_eq!(
        *seen.lock().unwrap(),
        ["/file.txt", "/file.txt?a=%2e%2E/..&b=//", "/docs/a/b/"],
        "the upstream saw only normal paths, and nothing while the route was held"
    );
    assert_eq!(reqwest::get(format!("{}/healthz", s.url)).await.unwrap().status(), 200);
    s.stop();
}
