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

/// The demo's settings are checked at start: its phases need `--demo` and must be positive,
/// and it cannot call an API that wants client tokens.
#[test]
fn serve_demo_refuses_what_it_cannot_do_with_the_setting_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("client-tokens");
    std::fs::write(&tokens, "app:0123456789abcdef0123\n").unwrap();
    let tokens = tokens.display().to_string();
    for (args, says) in [
        (vec!["--demo-healthy-secs", "5"], "setting `demo-healthy-secs`: it goes with --demo"),
        (vec!["--demo-failing-secs", "5"], "setting `demo-failing-secs`: it goes with --demo"),
        (vec!["--demo", "--demo-failing-secs", "0"], "setting `demo-failing-secs`: 0: expected a positive number"),
        (vec!["--demo", "--demo-healthy-secs", "NaN"], "setting `demo-healthy-secs`: NaN: expected a positive number"),
        (vec!["--demo", "--client-tokens-file", &tokens], "setting `demo`: the pretend service calls the API without"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atrion"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ATRION_")) {
            cmd.env_remove(k);
        }
        let out = cmd.args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
