//! A flood of one million distinct route ids, through the engine and through the tower
//! layer: the route table's limit and eviction hold, the process's peak memory stays under a
//! stated bound, and the routes that were known before keep their decisions. Its own test
//! binary, so that the peak resident size is this test's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use atrion::state::TokioClock;
use atrion::{Atrion, AtrionLayer, EngineLimits, Priority};
use axum::http::{Request, Response, StatusCode};
use tower::{Layer, ServiceExt};

/// The bound: the default table of 65,536 routes at well under 1 KiB each, the runtime and
/// the test harness. The figure measured is printed (docs/RELIABILITY.md has them).
const PEAK_RSS_BOUND_MB: u64 = 256;

const FLOOD: u64 = 1_000_000;

fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(start_paused = true)]
async fn a_million_route_ids_stay_within_the_table_and_known_routes_keep_their_decisions() {
    let mut limits = EngineLimits::default();
    limits.idle_timeout = Duration::from_secs(30);
    let atrion = Arc::new(Atrion::builder().limits(limits).clock(TokioClock::new()).build().unwrap());
    let known_ok = "GET /health";
    let known_bad = "GET /broken";
    // Decides on the broken route (reporting a failure when admitted) and on the healthy one;
    // true when the broken route's decision was a shed.
    let hurt = |a: &Atrion| {
        let admitted = a.decide(known_bad, Priority::Normal).is_admitted();
        if admitted {
            a.report(known_bad, Duration::from_millis(900), false, Some(0.9)).unwrap();
        }
        if a.decide(known_ok, Priority::Normal).is_admitted() {
            a.report(known_ok, Duration::from_millis(5), true, None).unwrap();
        }
        !admitted
    };
    for _ in 0..2_000 {
        hurt(&atrion);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!atrion.decide(known_bad, Priority::Normal).is_admitted(), "the broken route is shed before the flood");

    // Half the flood straight through the facade, half through the tower layer, 1 ms apart
    // on tokio's clock, the known routes kept busy throughout.
    let svc = AtrionLayer::new(atrion.clone())
        .route(|head, id| id.push_str(head.uri.path()))
        .layer(tower::service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) }));
    let (mut shed_bad, mut admitted_ok, mut checks) = (0u64, 0u64, 0u64);
    for i in 0..FLOOD {
        let id = format!("/tenant/{i}");
        if i % 2 == 0 {
            if atrion.decide(&id, Priority::Normal).is_admitted() {
                atrion.report(&id, Duration::from_millis(3), true, None).unwrap();
            }
        } else {
            let resp = svc.clone().oneshot(Request::get(id.as_str()).body(String::new()).unwrap()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "a new healthy route is admitted");
        }
        if i % 500 == 0 {
            // Two decisions on the broken route every half second or so: a quiet open route,
            // whose scouts and timer's probes go through after a few sheds (docs/DESIGN.md
            // §7.2), whichever of the two decisions they fall on.
            shed_bad += u64::from(hurt(&atrion));
            checks += 2;
            shed_bad += u64::from(!atrion.decide(known_bad, Priority::Normal).is_admitted());
            admitted_ok += u64::from(atrion.decide(known_ok, Priority::Normal).is_admitted());
        }
        if i % 64 == 0 {
            tokio::time::sleep(Duration::from_millis(64)).await;
        }
    }
    let stats = atrion.engine().stats();
    let peak = peak_rss_mb();
    eprintln!(
        "{FLOOD} route ids: {} tracked, {} untracked, {} evicted; peak RSS {peak} MB; the broken route shed {shed_bad} of {checks}",
        stats.routes, stats.untracked, stats.evicted
    );
    assert!(stats.routes <= EngineLimits::default().max_routes, "{stats:?}");
    assert!(stats.evicted > 0, "idle routes were evicted: {stats:?}");
    assert!(atrion.engine().status(known_ok).is_ok() && atrion.engine().status(known_bad).is_ok(), "known routes kept");
    assert_eq!(admitted_ok * 2, checks, "the healthy known route was never shed");
    assert!(shed_bad * 10 >= checks * 8, "the broken known route stayed shed: {shed_bad} of {checks}");
    assert!(peak > 0 && peak < PEAK_RSS_BOUND_MB, "peak RSS {peak} MB over the {PEAK_RSS_BOUND_MB} MB bound");
}

/// With nothing idle to evict, the table fills and every further id is decided on no state
/// (untracked): the table never grows past its limit, and known routes keep their own state.
#[test]
fn a_full_table_decides_new_ids_on_no_state() {
    let mut limits = EngineLimits::default();
    limits.max_routes = 10_000;
    limits.idle_timeout = Duration::from_secs(3_600);
    let atrion = Atrion::builder().limits(limits).build().unwrap();
    atrion.report("known", Duration::from_millis(5), true, None).unwrap();
    for i in 0..100_000u32 {
        let id = format!("/key/{i}");
        if atrion.decide(&id, Priority::Normal).is_admitted() {
            atrion.report(&id, Duration::from_millis(5), true, None).unwrap();
        }
    }
    let stats = atrion.engine().stats();
    assert_eq!(stats.routes, 10_000, "{stats:?}");
    assert!(stats.untracked >= 90_000 && stats.dropped_reports >= 90_000, "{stats:?}");
    assert!(atrion.engine().status("known").is_ok());
    assert!(atrion.decide("known", Priority::Normal).is_admitted());
}
