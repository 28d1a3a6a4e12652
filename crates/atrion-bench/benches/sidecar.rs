//! The sidecar's server-side cost, without the network: one request through the router
//! (`tower::ServiceExt::oneshot`), body parsing and answer serialisation included.
//!
//! - `decide` and `report` (by route): one request each;
//! - `decide_report_ticket`: a decision, then a report by its ticket (two requests: a ticket
//!   is taken once, so each report needs its own decision);
//! - `batch_100`: a `/v1/batch` of 100 decisions (throughput in decisions);
//! - `constant`: the same stack answering a constant JSON body (the floor);
//! - `ticket/issue` and `ticket/issue_take`: a decision's ticket made, and made then taken
//!   back, beside `ticket/hmac_sha256` (the peer crates' MAC of the same signed bytes, the
//!   floor of any HMAC-signed ticket).
//!
//! Run: `cargo bench -p atrion-bench --bench sidecar`. The load over real TCP is
//! `cargo run --release -p atrion-bench --bin load`.

use std::hint::black_box;

use atrion::Timestamp;
use atrion_bench::workload::{batch_body, floor_router, sidecar_atrion};
use atrion_server::{ServerConfig, TicketBook};
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn request(path: &str, body: &str) -> Request<Body> {
    Request::post(path).header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let app = atrion_server::router(sidecar_atrion(), &ServerConfig::default());
    let floor = floor_router();
    let call = |app: &Router, path: &str, body: &str| {
        let (app, req) = (app.clone(), request(path, body));
        rt.block_on(async move {
            let r = app.oneshot(req).await.unwrap();
            black_box(r.into_body().collect().await.unwrap().to_bytes())
        })
    };
    let batch = batch_body(0);

    let mut g = c.benchmark_group("sidecar");
    g.throughput(Throughput::Elements(1));
    g.bench_function("constant", |b| b.iter(|| call(&floor, "/v1/decide", r#"{"route":"GET /a"}"#)));
    g.bench_function("decide", |b| b.iter(|| call(&app, "/v1/decide", r#"{"route":"GET /a"}"#)));
    g.bench_function("report", |b| {
        b.iter(|| call(&app, "/v1/report", r#"{"route":"GET /a","latency_ms":5,"ok":true}"#))
    });
    g.bench_function("decide_report_ticket", |b| {
        b.iter(|| {
            let answer = call(&app, "/v1/decide", r#"{"route":"GET /a"}"#);
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            let ticket = answer["ticket"].as_str().unwrap();
            call(&app, "/v1/report", &format!(r#"{{"ticket":"{ticket}","ok":true}}"#))
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("batch_100", |b| b.iter(|| call(&app, "/v1/batch", &batch)));
    g.finish();

    let mut g = c.benchmark_group("ticket");
    g.throughput(Throughput::Elements(1));
    let book = TicketBook::new(std::time::Duration::from_secs(300));
    let at = Timestamp::from_millis(1);
    g.bench_function("issue", |b| b.iter(|| book.issue(black_box("GET /r5"), at)));
    g.bench_function("issue_take", |b| {
        b.iter(|| {
            let t = book.issue(black_box("GET /r5"), at);
            book.take(&t, at).unwrap()
        })
    });
    // The signed bytes of a ticket for `GET /r5`: a 20-byte head and the route's 10
    // base64url characters.
    let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[7; 32]).unwrap();
    g.bench_function("hmac_sha256", |b| {
        b.iter(|| {
            let mut m = mac.clone();
            m.update(black_box(&[1u8; 20]));
            m.update(black_box(b"R0VUIC9yNQ"));
            m.finalize().into_bytes()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
