//! The sidecar's server-side cost, without the network: one request through the router
//! (`tower::ServiceExt::oneshot`), body parsing and answer serialisation included.
//!
//! - `decide` and `report` (by route): one request each;
//! - `decide_report_ticket`: a decision, then a report by its ticket (two requests: a ticket
//!   is taken once, so each report needs its own decision);
//! - `batch_100`: a `/v1/batch` of 100 decisions (throughput in decisions);
//! - `constant`: the same stack answering a constant JSON body (the floor).
//!
//! Run: `cargo bench -p atrion-bench --bench sidecar`. The load over real TCP is
//! `cargo run --release -p atrion-bench --bin load`.

use std::hint::black_box;

use atrion_bench::workload::{batch_body, floor_router, sidecar_atrion};
use atrion_server::ServerConfig;
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
