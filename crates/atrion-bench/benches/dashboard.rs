//! What the dashboard costs the sidecar, without the network (`tower::ServiceExt::oneshot`):
//!
//! - `decide/silent` vs `decide/sidecar_observer`: the engine's decision with no observer,
//!   and with the sidecar's (counts, sheds by reason, the ring of latest decisions that the
//!   route page shows): what every decision pays for the dashboard's data;
//! - `sample/1000_routes`: one pass of the sampler over 1,000 routes (it runs once a second);
//! - `first_update/1000_routes`: the first message of the live feed with 1,000 routes and
//!   their sparklines (what a page opening costs the server: built once per sample and
//!   shared, so this is mostly a page opening on a sample already built);
//! - `first_update/1000_routes_x64_pages`: a sample, then 64 pages opening on it, each
//!   reading its first message (what a crowd of pages costs: one build, shared);
//! - `chart_svg/300_samples`: one route's resistance chart over five minutes of samples.
//!
//! Run: `cargo bench -p atrion-bench --bench dashboard`. The page's own render time with
//! 1,000 routes is measured in Chromium by `a_thousand_routes_stay_responsive`
//! (`atrion-cli/tests/dashboard.rs`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use atrion::state::TokioClock;
use atrion::{Atrion, Priority, Telemetry};
use atrion_server::{ServerConfig, SidecarAtrion, SidecarObserver};
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tower::ServiceExt;

const ROUTES: usize = 1_000;
/// Pages opening together (the server's default cap on open feeds).
const PAGES: usize = 64;

fn sidecar() -> Arc<SidecarAtrion> {
    Arc::new(Atrion::builder().observer(SidecarObserver::new()).clock(TokioClock::new()).build().unwrap())
}

fn get(app: &Router, rt: &tokio::runtime::Runtime, path: &str) -> bytes::Bytes {
    rt.block_on(first(app.clone(), path))
}

/// The body's first message: the feed never ends, and opens with its retry delay; a chart
/// is one frame.
async fn first(app: Router, path: &str) -> bytes::Bytes {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let mut body = app.oneshot(req).await.unwrap().into_body();
    loop {
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        if !data.starts_with(b"retry:") {
            return data;
        }
    }
}

/// A sample, then `pages` feeds opening together, each to its first message.
fn crowd(app: &Router, rt: &tokio::runtime::Runtime, pages: usize) -> usize {
    rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let open = (0..pages).map(|_| tokio::spawn(first(app.clone(), "/v1/dashboard/stream")));
        let mut bytes = 0;
        for page in open.collect::<Vec<_>>() {
            bytes += page.await.unwrap().len();
        }
        bytes
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dashboard");

    // Every decision feeds the dashboard: measured against no observer at all.
    g.throughput(Throughput::Elements(1));
    let silent = Atrion::builder().build().unwrap();
    let watched = sidecar();
    let now = atrion::Timestamp::from_nanos(1_000_000_000);
    for (name, decide) in [
        (
            "decide/silent",
            &(|| silent.engine().decide("GET /a", now, Priority::Normal).is_admitted()) as &dyn Fn() -> bool,
        ),
        ("decide/sidecar_observer", &|| watched.engine().decide("GET /a", now, Priority::Normal).is_admitted()),
    ] {
        g.bench_function(name, |b| b.iter(|| black_box(decide())));
    }

    // The sidecar on tokio's paused clock: the sampler's five minutes pass at once.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let atrion = rt.block_on(async { sidecar() });
    let app = rt.block_on(async { atrion_server::router(atrion.clone(), &ServerConfig::default()) });
    let routes: Vec<String> = (0..ROUTES).map(|i| format!("GET /items/{i:04}")).collect();
    rt.block_on(async {
        for step in 0..300u64 {
            let now = atrion.now();
            for (i, r) in routes.iter().enumerate() {
                let slow = (i as u64 + step) % 7 == 0;
                let t = Telemetry::new(if slow { 400.0 } else { 20.0 }, f64::from(u8::from(slow)), 0.3).unwrap();
                atrion.engine().report(r, t, now);
                atrion.engine().decide(r, now, Priority::Normal);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    g.throughput(Throughput::Elements(ROUTES as u64));
    // One second of paused time: the sampler's pass over every route, and nothing else.
    g.bench_function("sample/1000_routes", |b| {
        b.iter(|| rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await }));
    });
    g.bench_function("first_update/1000_routes", |b| b.iter(|| black_box(get(&app, &rt, "/v1/dashboard/stream"))));
    g.throughput(Throughput::Elements(PAGES as u64));
    g.bench_function("first_update/1000_routes_x64_pages", |b| b.iter(|| black_box(crowd(&app, &rt, PAGES))));
    g.throughput(Throughput::Elements(1));
    g.bench_function("chart_svg/300_samples", |b| {
        b.iter(|| black_box(get(&app, &rt, "/v1/dashboard/routes/GET%20%2Fitems%2F0007/chart.svg")))
    });
    let svg = get(&app, &rt, "/v1/dashboard/routes/GET%20%2Fitems%2F0007/chart.svg");
    let update = get(&app, &rt, "/v1/dashboard/stream");
    println!("sizes: chart {} bytes; first update with {ROUTES} routes {} bytes", svg.len(), update.len());
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
