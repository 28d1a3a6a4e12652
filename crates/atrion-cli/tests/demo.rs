//! `atrion serve --demo`, the README's first command: on the default store (in a fresh
//! folder), the pretend service drives the sidecar's own API in the same process, and its
//! failing route is seen, through the API, to trip open and then recover. Only the order of
//! events is asserted, never how long they took.

mod common;

use common::{Serve, eventually, free_port};

/// `GET /search`, the pretend service's failing route, percent-encoded.
const FAILING: &str = "/v1/routes/GET%20%2Fsearch";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_shows_a_route_trip_open_and_recover_on_the_default_store() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // Shorter phases than the default 30 s and 20 s: healthy long enough to learn the normal
    // and to recover, failing long enough to trip.
    let s = Serve::start_in(
        Some(dir.path()),
        &["--demo", "--listen", &listen, "--demo-healthy-secs", "6", "--demo-failing-secs", "3"],
        &[],
    );
    assert!(s.line.contains("store file:./atrion-data/state.redb"), "the default store: {}", s.line);

    // It trips: open (or half-open, probing) and shedding.
    let tripped = eventually("GET /search trips open", || async {
        let v = s.get(FAILING).await;
        matches!(v["mode"].as_str(), Some("open" | "half_open")).then_some(v)
    })
    .await;
    // Then, after the failure ends, it recovers; it shed while it was open.
    let recovered = eventually("GET /search recovers", || async {
        let v = s.get(FAILING).await;
        (v["mode"] == "operational").then_some(v)
    })
    .await;
    assert!(recovered["decisions"]["shed"].as_u64().unwrap() > 0, "it shed while open: {tripped} {recovered}");
    // The other routes of the pretend service are there, healthy and driven through the API.
    let users = s.get("/v1/routes/GET%20%2Fusers").await;
    assert!(users["decisions"]["admitted"].as_u64().unwrap() > 0, "{users}");
    assert!(dir.path().join("atrion-data/state.redb").is_file(), "the default store is a file in ./atrion-data");
    // SIGTERM stops the pretend service and the sidecar cleanly.
    s.stop();
}
