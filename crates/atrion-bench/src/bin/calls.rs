//! Requests through the sidecar's router in one thread, without the network, for an
//! instruction count: what the server's own code costs a request, on any machine load.
//!
//! ```text
//! cargo build --release -p atrion-bench --bin calls
//! valgrind --tool=callgrind target/release/calls pair 20000
//! ```
//!
//! `KIND` is `decide`, `report`, `pair` (a decide then a report of the ticket-less kind,
//! as the load bench sends), `batch` (100 decisions a request) or `floor` (the same stack
//! answering a constant JSON body). `tcp-front` and `tcp-axum` send pairs over one loopback
//! keep-alive connection, to the router behind `atrion_server::serve` (the front door) or
//! behind plain `axum::serve`: the client's share is the same in both. Compare two runs'
//! totals (`callgrind_annotate`); a run of 0 requests gives the set-up to subtract.

use atrion_bench::workload::{
    batch_body, decide_body, floor_router, http_client, json_request, report_body, sidecar_atrion,
};
use atrion_server::ServerConfig;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn request(path: &str, body: String) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("host", "127.0.0.1:7070")
        .body(Body::from(body))
        .expect("a valid request")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "pair".to_owned());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    if kind.starts_with("tcp") {
        rt.block_on(tcp(&kind, n));
        return;
    }
    let app = match kind.as_str() {
        "floor" => floor_router(),
        _ => atrion_server::router(sidecar_atrion(), &ServerConfig::default()),
    };
    let batch = batch_body(0);
    let mut bytes = 0usize;
    rt.block_on(async {
        for i in 0..n {
            let calls: Vec<(&str, String)> = match kind.as_str() {
                "decide" | "floor" => vec![("/v1/decide", decide_body(i))],
                "report" => vec![("/v1/report", report_body(i))],
                "batch" => vec![("/v1/batch", batch.clone())],
                _ => vec![("/v1/decide", decide_body(i)), ("/v1/report", report_body(i))],
            };
            for (path, body) in calls {
                let response = app.clone().oneshot(request(path, body)).await.expect("an answer");
                assert!(response.status().is_success(), "{path}: {}", response.status());
                bytes += response.into_body().collect().await.expect("a body").to_bytes().len();
            }
        }
    });
    println!("{kind}: {n} rounds, {bytes} bytes answered");
}

/// `n` pairs over one keep-alive connection to the router behind the front door
/// (`tcp-front`) or plain axum (`tcp-axum`).
async fn tcp(kind: &str, n: u64) {
    let atrion = sidecar_atrion();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    if kind == "tcp-front" {
        tokio::spawn(async move {
            atrion_server::serve(listener, atrion, &ServerConfig::default(), std::future::pending()).await
        });
    } else {
        let app = atrion_server::router(atrion, &ServerConfig::default());
        tokio::spawn(async move { axum::serve(atrion_server::nodelay(listener), app).await });
    }
    let client = http_client();
    for i in 0..n {
        for (path, body) in [("/v1/decide", decide_body(i)), ("/v1/report", report_body(i))] {
            let response = client.request(json_request(true, addr, path, body.into())).await.expect("an answer");
            assert!(response.status().is_success(), "{path}: {}", response.status());
            response.into_body().collect().await.expect("a body");
        }
    }
    println!("{kind}: {n} pairs");
}
