//! The sidecar under load, over loopback with keep-alive connections, behind its own front
//! door (`atrion_server::serve`, limits and guard included) beside its floor: axum on tokio
//! answering a constant JSON body, measured in the same run.
//!
//! ```text
//! cargo run --release -p atrion-bench --bin load -- [SECONDS] [CONNECTIONS]
//! ```
//!
//! or, the servers and the load in two processes (each pinned to a core with `taskset`):
//!
//! ```text
//! taskset -c 1 target/release/load serve > addrs &      # prints one line of addresses
//! taskset -c 0 target/release/load drive "$(cat addrs)" [SECONDS] [CONNECTIONS]
//! ```
//!
//! Prints a Markdown table: decide+report pairs per second at the most (closed loop), the
//! latency of those requests at half that rate (open loop, from each request's scheduled
//! time, so a stall is not hidden), `/v1/batch` decisions per second in batches of 100, and
//! proxy mode's latency over a direct call beside a plain reverse proxy's on the same stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atrion_bench::workload::{
    Http, batch_body, decide_body, floor_router, http_client, json_request, report_body, sidecar_atrion,
};
use atrion_server::{ProxyConfig, ServerConfig};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::get;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;

/// One request: method, path, body (empty for GET).
#[derive(Clone)]
struct Call {
    post: bool,
    path: String,
    body: Bytes,
}

impl Call {
    fn post(path: &str, body: String) -> Self {
        Call { post: true, path: path.to_owned(), body: Bytes::from(body) }
    }

    fn get(path: &str) -> Self {
        Call { post: false, path: path.to_owned(), body: Bytes::new() }
    }
}

async fn send(client: &Http, base: SocketAddr, call: &Call) -> bool {
    match client.request(json_request(call.post, base, &call.path, call.body.clone())).await {
        Ok(r) => {
            let ok = r.status().is_success();
            // Read the whole body, so that the connection goes back to the pool.
            ok & r.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

struct Run {
    per_sec: f64,
    latency: Histogram<u64>,
    errors: u64,
}

impl Run {
    fn us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64
    }
}

/// `connections` tasks, each sending `calls(i)` in turn as fast as answers come, for
/// `secs`; counts rounds (all of a task's calls once) per second.
async fn closed(
    client: &Http,
    base: SocketAddr,
    connections: usize,
    secs: f64,
    calls: impl Fn(u64) -> Vec<Call>,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, stop, rounds, errors) = (client.clone(), stop.clone(), rounds.clone(), errors.clone());
        let calls: Vec<Vec<Call>> = (0..64).map(|i| calls(c as u64 * 64 + i)).collect();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("a histogram");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for call in &calls[i % calls.len()] {
                    let t = Instant::now();
                    if !send(&client, base, call).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = h.record(t.elapsed().as_micros() as u64);
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            h
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (r0, t0) = (rounds.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (r1, t1) = (rounds.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new(3).expect("a histogram");
    for t in tasks {
        latency.add(t.await.expect("a load task")).expect("histograms of one shape");
    }
    Run { per_sec: (r1 - r0) as f64 / (t1 - t0).as_secs_f64(), latency, errors: errors.load(Ordering::Relaxed) }
}

/// `connections` tasks sending rounds at `rate` rounds per second in all. A request's latency
/// counts from its round's scheduled start when the task is behind (so that a stall is not
/// hidden: no coordinated omission), else from when the timer woke it (its slack, up to a
/// millisecond, is the load generator's, not the server's).
async fn open(
    client: &Http,
    base: SocketAddr,
    connections: usize,
    secs: f64,
    rate: f64,
    calls: impl Fn(u64) -> Vec<Call>,
) -> Run {
    let every = Duration::from_secs_f64(connections as f64 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, errors) = (client.clone(), errors.clone());
        let calls: Vec<Vec<Call>> = (0..64).map(|i| calls(c as u64 * 64 + i)).collect();
        // Spread the tasks' schedules over one interval.
        let first = start + every.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("a histogram");
            let mut n = 0u32;
            loop {
                let due = first + every * n;
                if due >= end {
                    break;
                }
                let from = if tokio::time::Instant::now() >= due {
                    due
                } else {
                    tokio::time::sleep_until(due).await;
                    tokio::time::Instant::now()
                };
                for call in &calls[n as usize % calls.len()] {
                    if !send(&client, base, call).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = h.record(from.elapsed().as_micros() as u64);
                }
                n += 1;
            }
            (h, n)
        }));
    }
    let mut latency = Histogram::<u64>::new(3).expect("a histogram");
    let mut rounds = 0u64;
    for t in tasks {
        let (h, n) = t.await.expect("a load task");
        latency.add(h).expect("histograms of one shape");
        rounds += u64::from(n);
    }
    Run { per_sec: rounds as f64 / secs, latency, errors: errors.load(Ordering::Relaxed) }
}

async fn listen(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(atrion_server::nodelay(listener), app).await });
    addr
}

fn pair(i: u64) -> Vec<Call> {
    vec![Call::post("/v1/decide", decide_body(i)), Call::post("/v1/report", report_body(i))]
}

/// The servers under test: (sidecar, floor, upstream, Atrion's proxy, plain proxy).
type Addrs = (SocketAddr, SocketAddr, SocketAddr, SocketAddr, SocketAddr);

async fn servers() -> Addrs {
    let atrion = sidecar_atrion();
    // The sidecar behind its real front door (`atrion_server::serve`: the connection limits,
    // the Host and content-type guard), as `atrion serve` runs it; the floor on plain axum.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let sidecar = listener.local_addr().expect("an address");
    let served = atrion.clone();
    tokio::spawn(async move {
        atrion_server::serve(listener, served, &ServerConfig::default(), std::future::pending()).await
    });
    let floor = listen(floor_router()).await;
    let upstream = listen(Router::new().route("/users/{id}", get(|| async { Body::from("user") }))).await;
    let config = ProxyConfig::new(&format!("http://{upstream}"), &["/users/{id}".to_owned()]).expect("a proxy config");
    let guarded = listen(atrion_server::proxy_router(atrion, &config)).await;
    let plain = listen(atrion_server::forwarding_router(&config)).await;
    (sidecar, floor, upstream, guarded, plain)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("serve") => "serve",
        Some("drive") => "drive",
        _ => "both",
    };
    if mode != "both" {
        args.remove(0);
    }
    if mode == "serve" {
        let rt = runtime();
        let (a, b, c, d, e) = rt.block_on(servers());
        println!("{a} {b} {c} {d} {e}");
        rt.block_on(std::future::pending::<()>());
        return;
    }
    // Kept for the whole run when the servers live in this process.
    let mut _servers = None;
    let addrs = if mode == "drive" {
        let line = args.remove(0);
        let v: Vec<SocketAddr> = line.split_whitespace().map(|a| a.parse().expect("an address")).collect();
        (v[0], v[1], v[2], v[3], v[4])
    } else {
        // The servers on their own runtime, the load on another: both share the machine.
        let rt = runtime();
        let addrs = rt.block_on(servers());
        _servers = Some(rt);
        addrs
    };
    let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let (sidecar, floor, upstream, guarded, plain) = addrs;
    let load = runtime();
    load.block_on(async {
        let client = http_client();
        let floor_max = closed(&client, floor, connections, secs, pair).await;
        let max = closed(&client, sidecar, connections, secs, pair).await;
        let half = open(&client, sidecar, connections, secs, max.per_sec / 2.0, pair).await;
        let floor_half = open(&client, floor, connections, secs, max.per_sec / 2.0, pair).await;
        let batch = |i: u64| vec![Call::post("/v1/batch", batch_body(i))];
        let batched = closed(&client, sidecar, connections, secs, batch).await;
        let users = |i: u64| vec![Call::get(&format!("/users/{}", i % 1000))];
        let rate = 2_000.0;
        let direct = open(&client, upstream, 8, secs, rate, users).await;
        let via_atrion = open(&client, guarded, 8, secs, rate, users).await;
        let via_plain = open(&client, plain, 8, secs, rate, users).await;

        println!("| measure | figure |");
        println!("|---|---|");
        println!("| floor (constant JSON, same stack): pairs/s | {:.0} |", floor_max.per_sec);
        println!(
            "| sidecar decide+report: pairs/s at most | {:.0} ({:.0}% of the floor) |",
            max.per_sec,
            100.0 * max.per_sec / floor_max.per_sec
        );
        println!(
            "| sidecar at half that ({:.0} pairs/s): p50 / p99 / p99.9 per request | {:.0} / {:.0} / {:.0} µs |",
            half.per_sec,
            half.us(0.5),
            half.us(0.99),
            half.us(0.999)
        );
        println!(
            "| the floor at the same rate: p50 / p99 / p99.9 per request | {:.0} / {:.0} / {:.0} µs |",
            floor_half.us(0.5),
            floor_half.us(0.99),
            floor_half.us(0.999)
        );
        println!(
            "| /v1/batch, 100 decisions a batch: decisions/s | {:.0} |",
            batched.per_sec * atrion_bench::workload::BATCH as f64
        );
        for (name, run) in [
            ("direct to the upstream", &direct),
            ("through the plain proxy", &via_plain),
            ("through Atrion's proxy", &via_atrion),
        ] {
            println!("| {name} at {rate:.0} req/s: p50 / p99 | {:.0} / {:.0} µs |", run.us(0.5), run.us(0.99));
        }
        for (name, run) in [("plain proxy", &via_plain), ("Atrion's proxy", &via_atrion)] {
            println!(
                "| added by the {name}: p50 / p99 | {:.0} / {:.0} µs |",
                run.us(0.5) - direct.us(0.5),
                run.us(0.99) - direct.us(0.99)
            );
        }
        let errors: u64 = [&floor_max, &max, &half, &floor_half, &batched, &direct, &via_atrion, &via_plain]
            .iter()
            .map(|r| r.errors)
            .sum();
        println!("| failed requests (any run) | {errors} |");
        println!(
            "\n{connections} connections, {secs} s per run, on {} cores.",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    });
}
