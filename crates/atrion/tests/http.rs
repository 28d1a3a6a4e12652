//! The tower layer in front of a real axum server on loopback, driven by a real HTTP
//! client: failures turn into 503s with Retry-After, and then recover.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atrion::state::TokioClock;
use tokio::time::Instant;

use atrion::{Atrion, AtrionLayer, PhysicsConfig, Priority};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Faster physics, so that the test recovers in seconds, not tens of seconds.
fn quick() -> PhysicsConfig {
    let mut c = PhysicsConfig::default().with_scar_half_life(Duration::from_millis(400));
    c.scar_rate = 60.0; // equilibrium scar sigma / lambda ~ 35 ohms: enough to trip
    c.half_open.open_base = Duration::from_millis(200);
    c.half_open.open_max = Duration::from_millis(400);
    c.half_open.probe_window = Duration::from_millis(50);
    c
}

async fn serve(atrion: Arc<Atrion>, failing: Arc<AtomicBool>) -> String {
    let app = Router::new()
        .route(
            "/orders/{id}",
            get(move || {
                let failing = failing.clone();
                async move {
                    if failing.load(Ordering::Relaxed) {
                        (StatusCode::INTERNAL_SERVER_ERROR, "down")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        )
        .layer(AtrionLayer::new(atrion));
    listen(app).await
}

/// Serves `app` on a free loopback port; its base URL.
async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Real TCP, tokio's paused time: the engine's clock is tokio's, so the physics sees the
/// test's sleeps, not the machine's speed.
#[tokio::test(start_paused = true)]
async fn failures_become_503s_and_then_recover() {
    let atrion = Arc::new(Atrion::builder().config(quick()).clock(TokioClock::new()).build().unwrap());
    let failing = Arc::new(AtomicBool::new(false));
    let base = serve(atrion.clone(), failing.clone()).await;
    let client = reqwest::Client::new();
    let get = |i: u32| client.get(format!("{base}/orders/{i}")).send();

    for i in 0..50 {
        assert_eq!(get(i).await.unwrap().status(), 200);
    }
    // All ids share one route: the matched path.
    let route = "GET /orders/{id}";
    assert!(atrion.engine().status(route).is_ok(), "{:?}", atrion.engine().route_ids());

    failing.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    let retry_after = loop {
        assert!(Instant::now() < deadline, "no 503 within 10 s of tokio's time");
        let r = get(1).await.unwrap();
        if r.status() == 503 {
            break r.headers().get("retry-after").expect("Retry-After").to_str().unwrap().parse::<u64>().unwrap();
        }
        assert_eq!(r.status(), 500);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(retry_after >= 1);

    failing.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 20 {
        assert!(Instant::now() < deadline, "did not recover within 20 s of tokio's time");
        let status = get(1).await.unwrap().status();
        ok_in_a_row = if status == 200 { ok_in_a_row + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(atrion.decide(route, Priority::Normal).is_admitted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_priorities_can_be_chosen() {
    let atrion = Arc::new(Atrion::builder().build().unwrap());
    let app = Router::new().route("/x", get(|| async { "x" })).layer(
        AtrionLayer::new(atrion.clone())
            .route(|head, id| {
                let tenant = head.headers.get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or("-");
                let _ = write!(id, "tenant:{tenant}");
            })
            .priority(|head| if head.headers.contains_key("x-vip") { Priority::Critical } else { Priority::Bulk })
            .failure(|status| status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS),
    );
    let base = listen(app).await;
    let r = reqwest::Client::new().get(format!("{base}/x")).header("x-tenant", "acme").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(atrion.engine().status("tenant:acme").is_ok());
}

#[tokio::test(start_paused = true)]
async fn other_services_get_a_typed_error_when_shed() {
    use atrion::{ShedError, ShedLayer};
    use tower::{Service, ServiceBuilder, ServiceExt};

    let atrion = Arc::new(Atrion::builder().config(quick()).clock(TokioClock::new()).build().unwrap());
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let mut svc = ServiceBuilder::new()
        .layer(ShedLayer::new(atrion.clone(), |job: &String, id: &mut String| {
            let _ = write!(id, "queue:{job}");
        }))
        .service_fn(move |job: String| {
            let f = f.clone();
            async move {
                if f.load(Ordering::Relaxed) { Err(std::io::Error::other(format!("{job} failed"))) } else { Ok(job) }
            }
        });
    let mut shed = None;
    for _ in 0..2_000 {
        match svc.ready().await.unwrap().call("resize".to_owned()).await {
            Err(ShedError::Shed(d)) => {
                shed = Some(d);
                break;
            }
            Err(ShedError::Inner(e)) => assert_eq!(e.to_string(), "resize failed"),
            Ok(_) => panic!("the job fails"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let d = shed.expect("failing jobs are eventually shed");
    assert!(d.retry_after.is_some());
    assert!(atrion.engine().status("queue:resize").is_ok());
}

/// The outcome is reported when the response body ends, not when its headers leave: a
/// streamed body's time counts, and a body that fails half-way is a failure.
#[tokio::test(start_paused = true)]
async fn the_outcome_is_reported_when_the_body_ends() {
    use axum::body::{Body, Bytes};
    let atrion = Arc::new(Atrion::builder().config(quick()).clock(TokioClock::new()).build().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = rx.clone();
                async move {
                    let rx = rx.lock().await.take().unwrap();
                    Body::from_stream(tokio_stream_from(rx))
                }
            }),
        )
        .route(
            "/broken",
            get(|| async {
                let parts: Vec<Result<Bytes, std::io::Error>> =
                    vec![Ok(Bytes::from_static(b"half")), Err(std::io::Error::other("upstream cut"))];
                Body::from_stream(futures_util::stream::iter(parts))
            }),
        )
        .layer(AtrionLayer::new(atrion.clone()));
    let base = listen(app).await;

    let updates = |route: &str| atrion.engine().snapshot(route).map_or(0, |v| v.updates);
    let mut response = reqwest::get(format!("{base}/stream")).await.unwrap();
    assert_eq!(response.status(), 200);
    tx.send(Ok(Bytes::from_static(b"first"))).await.unwrap();
    assert_eq!(response.chunk().await.unwrap().unwrap(), "first");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(updates("GET /stream"), 0, "headers and a first chunk have left: nothing reported yet");
    tx.send(Ok(Bytes::from_static(b"last"))).await.unwrap();
    drop(tx);
    assert_eq!(response.chunk().await.unwrap().unwrap(), "last");
    assert!(response.chunk().await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(updates("GET /stream"), 1, "reported at the body's end");

    // A 200 whose body fails half-way counts as a failure (by its status it would be a
    // success): enough of them, and the route sheds.
    let mut shed = false;
    for _ in 0..200 {
        // The client sees the message cut (before or after the headers, as hyper flushes).
        if let Ok(r) = reqwest::get(format!("{base}/broken")).await {
            if r.status() == 503 {
                shed = true;
                break;
            }
            assert!(r.bytes().await.is_err(), "the client sees the body cut");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(shed, "failed bodies are failures: {:?}", atrion.engine().snapshot("GET /broken"));
}

/// A receiver as a stream of body chunks.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A retry (`X-Retry-Attempt: 1`) is decided one priority tier lower: on a route loaded
/// enough to shed low-priority traffic, a first try goes through and its retry is shed; a
/// header that is not a number is a first try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_shed_before_first_tries() {
    use atrion::{Mode, Model, PhysicsVector};
    let atrion = Arc::new(Atrion::builder().build().unwrap());
    let app = Router::new().route("/x", get(|| async { "x" })).layer(AtrionLayer::new(atrion.clone()));
    let base = listen(app).await;
    // Thresholds on the way from R_base 10 to a break point of 30: bulk 16, low 20, normal 25.
    // Loaded again before each request (an admitted request's report moves the route).
    let load = || {
        let now = atrion.now();
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
            open_until: atrion::Timestamp::ZERO,
            timestamp: now,
            normal_samples: 0,
            normal_mean: 0.0,
            normal_var: 0.0,
        };
        atrion.engine().restore("GET /x", &v, now).unwrap();
    };
    load();
    // The keep-alive lets one shed request through per interval: take it first.
    atrion.engine().decide("GET /x", atrion.now(), Priority::Bulk);
    let client = reqwest::Client::new();
    let get = |attempt: Option<&'static str>| {
        let mut r = client.get(format!("{base}/x"));
        if let Some(a) = attempt {
            r = r.header(atrion::RETRY_ATTEMPT_HEADER, a);
        }
        r.send()
    };
    assert_eq!(get(Some("1")).await.unwrap().status(), 503, "a retry, decided as low");
    assert_eq!(get(Some("2")).await.unwrap().status(), 503, "a second retry, decided as bulk");
    assert_eq!(get(None).await.unwrap().status(), 200, "a first try");
    load();
    assert_eq!(get(Some("0")).await.unwrap().status(), 200, "attempt 0 is a first try");
    load();
    assert_eq!(get(Some("soon")).await.unwrap().status(), 200, "not a number: a first try");
}
