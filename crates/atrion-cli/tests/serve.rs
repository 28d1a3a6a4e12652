//! `atrion serve` as a process: it says where it listens, answers over real TCP, stops
//! cleanly on SIGTERM, and what it knew survives a restart on the file store.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `atrion serve` and waits for the line that says where it listens.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atrion"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("atrion serve starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let Some(url) = line.split("listening on ").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_owned)
    else {
        let _ = child.kill();
        let err = child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
        panic!("no listening line: {line:?} {err}")
    };
    // Keep reading stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    (child, url)
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path} {body}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_stops_on_sigterm_and_keeps_what_it_knew_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.redb").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--listen", listen.as_str(), "--store", store.as_str(), "--node-id", "t1"];

    let (child, base) = start(&args);
    let health: Value = reqwest::get(format!("{base}/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let d = post(&base, "/v1/decide", json!({"route": "GET /orders"})).await;
    assert_eq!(d["verdict"], "admit");
    let r = post(&base, "/v1/report", json!({"ticket": d["ticket"], "ok": true})).await;
    assert_eq!(r["route"], "GET /orders");
    // A route that fails for a while scars.
    let mut scar = 0.0;
    for _ in 0..40 {
        let r =
            post(&base, "/v1/report", json!({"route": "GET /pay", "latency_ms": 900, "ok": false, "saturation": 0.9}))
                .await;
        scar = r["scar"].as_f64().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(scar > 0.0, "{scar}");
    stop(child);

    // Restarted on the same file: the scar is still there (healed a little), before any
    // new failure. A healthy report returns it.
    let (child, base) = start(&args);
    let r = post(&base, "/v1/report", json!({"route": "GET /pay", "latency_ms": 5, "ok": true})).await;
    assert!(r["scar"].as_f64().unwrap() > 0.0, "warm start from the file store: {r}");
    stop(child);
}

#[test]
fn a_non_loopback_address_or_a_bad_store_stops_the_start_with_the_reason() {
    for (args, says) in [
        (vec!["--listen", "0.0.0.0:0", "--store", "memory"], "not a loopback address"),
        (vec!["--listen", "127.0.0.1:0", "--store", "etcd://x"], "--store etcd://x"),
        (vec!["--listen", "127.0.0.1:0", "--store", "memory", "--node-id", "no spaces"], "node_id"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_atrion")).arg("serve").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
