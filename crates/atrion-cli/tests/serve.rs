//! `atrion serve` as a process: it says where it listens, answers over real TCP, stops
//! cleanly on SIGTERM, and what it knew survives a restart on the file store.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Serve, eventually, free_port};
use serde_json::{Value, json};

fn start(args: &[&str]) -> (Serve, String) {
    let s = Serve::start(args, &[]);
    let url = s.url.clone();
    (s, url)
}

fn stop(s: Serve) {
    s.stop();
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
    // A route that keeps failing scars (past the sync's deadband, so that the store sees it).
    let failure = json!({"route": "GET /pay", "latency_ms": 900, "ok": false, "saturation": 0.9});
    eventually("the route scars", || async {
        (post(&base, "/v1/report", failure.clone()).await["scar"].as_f64()? > 2.0).then_some(())
    })
    .await;
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
        (vec!["--listen", "127.0.0.1:0", "--store", "etcd://x"], "setting `store`: etcd://x"),
        (vec!["--listen", "127.0.0.1:0", "--store", "memory", "--node-id", "no spaces"], "node_id"),
        (
            vec!["--listen", "127.0.0.1:0", "--store", "memory", "--dashboard-routes", "0"],
            "setting `dashboard-routes`: 0: expected 1 to 1000000",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--store", "memory", "--dashboard-clients", "0"],
            "setting `dashboard-clients`: 0: expected 1 to 100000",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--store", "memory", "--dashboard-auth", "admin"],
            "setting `dashboard-auth`: `admin` needs admin tokens",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--store", "memory", "--dashboard-auth", "tokens"],
            "setting `dashboard-auth`: `tokens` needs --dashboard-tokens-file",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_atrion")).arg("serve").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Runs `atrion serve` expecting it to refuse to start; returns what it said.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrion"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ATRION_")) {
        cmd.env_remove(k);
    }
    let out = cmd.envs(env.iter().copied()).arg("serve").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?} should not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn settings_come_from_flags_over_env_over_the_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file_port = free_port();
    let flag_listen = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("atrion.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{file_port}\"\nstore = \"memory\"\nnode-id = \"from-file\"\nnamespace = \"ns-file\"\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    // The flag beats the file (listen); the environment beats the file (node id); the file
    // beats the default (store).
    let s = Serve::start(&["--config", &config, "--listen", &flag_listen], &[("ATRION_NODE_ID", "from-env")]);
    let (url, line) = (s.url.clone(), s.line.clone());
    s.stop();
    assert_eq!(url, format!("http://{flag_listen}"), "{line}");
    assert!(line.contains("node from-env") && line.contains("store memory"), "{line}");
    // The flag beats the environment too.
    let s = Serve::start(
        &["--config", &config, "--listen", &flag_listen, "--node-id", "from-flag"],
        &[("ATRION_NODE_ID", "from-env")],
    );
    let line = s.line.clone();
    s.stop();
    assert!(line.contains("node from-flag"), "{line}");
    // The environment alone, without a file.
    let s = Serve::start(&[], &[("ATRION_LISTEN", &flag_listen), ("ATRION_STORE", "memory")]);
    let url = s.url.clone();
    s.stop();
    assert_eq!(url, format!("http://{flag_listen}"));
}

#[test]
fn a_bad_setting_stops_the_start_naming_the_key_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cases = [
        (write("unknown.toml", "lisen = \"127.0.0.1:1\"\n"), "lisen"),
        (write("type.toml", "max-batch = \"many\"\n"), "max-batch"),
        (write("zero.toml", "store = \"memory\"\nmax-batch = 0\n"), "setting `max-batch`: must be at least 1"),
        (write("routes.toml", "store = \"memory\"\nmax-routes = 0\n"), "setting `max-routes`: 0: expected 1 to"),
        (write("ttl.toml", "store = \"memory\"\nticket-ttl-ms = 0\n"), "setting `ticket-ttl-ms`"),
        (write("burst.toml", "store = \"memory\"\nroute-creation-burst = 0\n"), "setting `route-creation-burst`"),
        (write("addr.toml", "listen = \"not an address\"\n"), "listen"),
        (write("syntax.toml", "store = \n"), "syntax.toml"),
    ];
    for (path, says) in &cases {
        let err = refused(&["--config", path], &[]);
        assert!(err.contains(says), "{path}: {err}");
    }
    let err = refused(&["--config", &dir.path().join("absent.toml").display().to_string()], &[]);
    assert!(err.contains("absent.toml"), "{err}");
    // Tokens: a weak secret is refused by name, and no secret is ever echoed.
    let tokens = write("tokens", "ops:short\n");
    let err = refused(&["--store", "memory", "--admin-tokens-file", &tokens], &[]);
    assert!(err.contains("admin-tokens-file") && err.contains("ops") && !err.contains("short"), "{err}");
    let err = refused(&["--store", "memory"], &[("ATRION_ADMIN_TOKENS", "ci=nocolon-secret-secret")]);
    assert!(err.contains("ATRION_ADMIN_TOKENS") && !err.contains("nocolon-secret"), "{err}");
    // Beyond loopback: refused without a token, named.
    let err = refused(&["--store", "memory", "--listen", "0.0.0.0:0"], &[]);
    assert!(err.contains("setting `listen`") && err.contains("not a loopback address"), "{err}");
    let err = refused(&["--store", "memory", "--max-batch", "x"], &[]);
    assert!(err.contains("--max-batch"), "{err}");
}

#[test]
fn logs_are_json_lines_off_a_terminal_and_name_tokens_not_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# ops team\nops:0123456789abcdef-secret\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_atrion"))
        .args(["serve", "--store", "memory", "--listen", &listen])
        .arg("--admin-tokens-file")
        .arg(&tokens)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = child.wait();
    let log: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    assert_eq!(log["message"], "atrion serve started", "{log}");
    assert_eq!(log["level"], "INFO");
    assert!(line.contains("ops") && !line.contains("0123456789abcdef"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_forwards_to_the_upstream_under_its_path_templates() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    let app = axum::Router::new().route("/users/{id}", axum::routing::get(|| async { "user" }));
    tokio::spawn(async move { axum::serve(upstream, app).await.unwrap() });
    let (listen, proxy) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let s = Serve::start(
        &["--store", "memory", "--listen", &listen, "--upstream", &upstream_url, "--proxy-listen", &proxy],
        &[("ATRION_PATH_TEMPLATES", "/users/{id},/orders/{id}")],
    );
    for i in 0..5 {
        let body = reqwest::get(format!("http://{proxy}/users/{i}")).await.unwrap().text().await.unwrap();
        assert_eq!(body, "user");
    }
    let view = s.get("/v1/routes/GET%20%2Fusers%2F%7Bid%7D").await;
    assert_eq!(view["decisions"]["admitted"], 5, "{view}");
    s.stop();

    let err = refused(&["--store", "memory", "--path-templates", "/a/{b}"], &[]);
    assert!(err.contains("setting `path-templates`: they need an upstream"), "{err}");
    let err = refused(&["--store", "memory", "--upstream", "https://x"], &[]);
    assert!(err.contains("setting `upstream`"), "{err}");
    let err = refused(&["--store", "memory", "--upstream", "http://127.0.0.1:1", "--path-templates", "users"], &[]);
    assert!(err.contains("setting `path-templates`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_moves_the_state_to_another_store_and_a_restart_there_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.redb"), dir.path().join("new.redb"));
    let (old, new) = (format!("file:{}", old.display()), format!("file:{}", new.display()));
    let listen = format!("127.0.0.1:{}", free_port());
    let secret = "0123456789abcdef-switch";
    let tokens = [("ATRION_ADMIN_TOKENS", &*format!("ops:{secret}"))];
    let s = Serve::start(&["--store", &old, "--listen", &listen, "--node-id", "mover"], &tokens);
    let failure = json!({"route": "GET /pay", "latency_ms": 900, "ok": false, "saturation": 0.9});
    eventually("the route scars", || async {
        (s.post("/v1/report", failure.clone()).await["scar"].as_f64()? > 2.0).then_some(())
    })
    .await;
    // A pulse has carried the scar to the store (the node's own count of pushed routes).
    eventually("a pulse pushes the route", || async {
        let text = reqwest::get(format!("{}/metrics", s.url)).await.ok()?.text().await.ok()?;
        let pushed = text.lines().find_map(|l| l.strip_prefix("atrion_sync_pushed_total "))?;
        (pushed.trim().parse::<f64>().ok()? >= 1.0).then_some(())
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/store", s.url))
        .bearer_auth(secret)
        .json(&json!({"url": new}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["to"], json!(new), "{report}");
    assert!(report["copied"].as_u64().unwrap() >= 1, "{report}");
    s.stop();
    // Started on the new store alone: the scar learned on the old one is there.
    let s = Serve::start(&["--store", &new, "--listen", &listen, "--node-id", "mover"], &[]);
    let r = s.post("/v1/report", json!({"route": "GET /pay", "latency_ms": 5, "ok": true})).await;
    assert!(r["scar"].as_f64().unwrap() > 0.0, "the state moved with the switch: {r}");
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_task_is_aborted_by_the_sweeper_and_counted_in_metrics() {
    let listen = format!("127.0.0.1:{}", free_port());
    let (s, base) = start(&["--store", "memory", "--listen", &listen, "--max-tasks-per-client", "1"]);
    // One that completes: its client's only slot is free again after.
    let t = post(&base, "/v1/tasks", json!({"route": "jobs", "profile": "light"})).await;
    let id = t["id"].as_str().unwrap().to_owned();
    let c = post(&base, &format!("/v1/tasks/{id}/complete"), json!({"ok": true})).await;
    assert_eq!(c["outcome"], "completed", "{c}");
    // One whose holder vanished: nobody calls, the sweeper aborts it at its deadline.
    let t = post(&base, "/v1/tasks", json!({"route": "jobs", "max_duration_ms": 200})).await;
    let id = t["id"].as_str().unwrap().to_owned();
    let line = |text: &str, prefix: &str| {
        text.lines().find(|l| l.starts_with(prefix) && l.contains("route=\"jobs\"")).map(str::to_owned)
    };
    let text = eventually("the expiry is counted", || async {
        let text = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
        line(&text, "atrion_lease_expirations_total").filter(|l| l.ends_with(" 1")).map(|_| text)
    })
    .await;
    let expired = line(&text, "atrion_lease_expirations_total").unwrap();
    assert!(expired.contains("reason=\"max_duration\""), "{expired}");
    assert!(line(&text, "atrion_lease_aborts_total").is_some_and(|l| l.ends_with(" 1")), "{text}");
    assert!(line(&text, "atrion_route_leases_active").is_some_and(|l| l.ends_with(" 0")), "{text}");
    let r = reqwest::Client::new().post(format!("{base}/v1/tasks/{id}/heartbeat")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    // The aborted lease gave its client's slot back.
    let t = post(&base, "/v1/tasks", json!({"route": "jobs"})).await;
    assert_eq!(t["verdict"], "admit", "{t}");
    stop(s);
}

/// `--encryption-key-file`: the file store holds no route name; a restart with the key
/// finds the state; a wrong key or a missing key id stops the start naming the id; `atrion
/// state reencrypt` moves the values to a new key and a sidecar starts on the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_store_names_no_route_and_starts_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let store = format!("file:{}", db.display());
    let write_keys = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let k1 = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let k2 = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let good = write_keys("keys", &format!("{k1}\n"));
    let listen = format!("127.0.0.1:{}", free_port());
    let args = |keys: &str| {
        ["--listen", listen.as_str(), "--store", store.as_str(), "--node-id", "t1", "--encryption-key-file"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([keys.to_owned()])
            .collect::<Vec<String>>()
    };
    let start_with = |keys: &str| {
        let a = args(keys);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        start(&a)
    };
    let (child, base) = start_with(&good);
    let failure = json!({"route": "GET /patients/12345", "latency_ms": 900, "ok": false, "saturation": 0.9});
    eventually("the route scars", || async {
        (post(&base, "/v1/report", failure.clone()).await["scar"].as_f64()? > 2.0).then_some(())
    })
    .await;
    stop(child);
    let bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 4096);
    for needle in [&b"patients"[..], b"12345"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the file names {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // A wrong key under the same id, and a key file without the id: refused, naming `k1`.
    for (keys, says) in [
        (write_keys("wrong", "k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n"), "wrong key"),
        (write_keys("other", &format!("{k2}\n")), "does not hold"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_atrion")).arg("serve").args(args(&keys)).output().unwrap();
        assert!(!out.status.success(), "{keys} should not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("`k1`") && err.contains(says), "{err}");
    }
    // Rotation: k2 newest; the pass reseals, a re-run has nothing left.
    let both = write_keys("both", &format!("{k1}\n{k2}\n"));
    let reencrypt = || {
        let out = Command::new(env!("CARGO_BIN_EXE_atrion"))
            .args(["state", "reencrypt", "--store", store.as_str(), "--encryption-key-file", both.as_str()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = reencrypt();
    assert!(first["resealed"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(reencrypt()["resealed"], 0);
    // Restarted with the keys: the scar is still there.
    let (child, base) = start_with(&both);
    let r = post(&base, "/v1/report", json!({"route": "GET /patients/12345", "latency_ms": 5, "ok": true})).await;
    assert!(r["scar"].as_f64().unwrap() > 0.0, "warm start from the encrypted file store: {r}");
    stop(child);
}

/// Panics when `bytes` hold a route's name, a part of it or the operator's name, plain or
/// in hex.
fn assert_names_nothing(what: &str, bytes: &[u8]) {
    for needle in [&b"patients"[..], b"12345", b"99999", b"alice"] {
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{what} holds {:?}",
            String::from_utf8_lossy(needle)
        );
        assert!(!bytes.windows(hex.len()).any(|w| w == hex.as_bytes()), "{what} holds the hex of {needle:?}");
    }
}

const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K1_WRONG: &str = "k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const ALICE: &str = "secret-of-alice-the-operator";

/// A sidecar on `store` with the keys of `keys` and the admin token of `alice`.
fn start_encrypted(store: &str, keys: &std::path::Path) -> Serve {
    let listen = format!("127.0.0.1:{}", free_port());
    let keys = keys.display().to_string();
    let args = ["--listen", &listen, "--store", store, "--node-id", "t1", "--encryption-key-file", &keys];
    Serve::start(&args, &[("ATRION_ADMIN_TOKENS", &format!("alice:{ALICE}"))])
}

/// What `atrion serve` says when it refuses to start on `store` with `keys`.
fn refused_with(store: &str, keys: &std::path::Path) -> String {
    let listen = format!("127.0.0.1:{}", free_port());
    let keys = keys.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_atrion"))
        .args(["serve", "--listen", &listen, "--store", store, "--node-id", "t1", "--encryption-key-file", &keys])
        .env_remove("ATRION_ENCRYPTION_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{store} with {} should not start", keys);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The sidecar over TCP on an encrypted `store` (Redis or PostgreSQL): after traffic on
/// `GET /patients/12345`, a policy and an audited admin action by `alice`, no byte of the
/// store (read by `stored`) nor of the backup names them; a restart with the key has the
/// state back; a wrong key or a key file without the id is refused naming `k1`. The backup
/// restores into a fresh store with the key, and is refused (`backup-key`, naming `k1`)
/// by a store with a wrong key or without keys.
async fn encrypted_sidecar_on<F: std::future::Future<Output = Vec<u8>>>(store: &str, stored: impl Fn() -> F) {
    let dir = tempfile::tempdir().unwrap();
    let write_keys = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path
    };
    let (good, wrong, other) = (write_keys("good", K1), write_keys("wrong", K1_WRONG), write_keys("other", K2));
    let s = start_encrypted(store, &good);
    let failure = json!({"route": "GET /patients/12345", "latency_ms": 900, "ok": false, "saturation": 0.9});
    eventually("the route scars", || async {
        (post(&s.url, "/v1/report", failure.clone()).await["scar"].as_f64()? > 2.0).then_some(())
    })
    .await;
    let policy = json!({"route": "POST /patients/99999", "state": "closed"});
    assert_eq!(s.admin(reqwest::Method::POST, "/v1/policies", ALICE, Some(policy)).await.0, 200);
    let (status, trail) = s.admin(reqwest::Method::GET, "/v1/audit", ALICE, None).await;
    assert_eq!(status, 200);
    assert!(trail.to_string().contains("alice") && trail.to_string().contains("99999"), "audited: {trail}");
    let r = reqwest::Client::new().get(format!("{}/v1/admin/backup", s.url)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let backup = r.text().await.unwrap();
    assert!(backup.contains("\"key_id\":\"k1\""), "sealed, naming its key: {backup}");
    assert_names_nothing("the backup", backup.as_bytes());
    s.stop();

    let bytes = stored().await;
    assert!(bytes.len() > 1000, "the store holds something");
    assert_names_nothing(store, &bytes);
    for (keys, says) in [(&wrong, "wrong key"), (&other, "does not hold")] {
        let err = refused_with(store, keys);
        assert!(err.contains("`k1`") && err.contains(says), "{err}");
    }
    let s = start_encrypted(store, &good);
    let r = post(&s.url, "/v1/report", json!({"route": "GET /patients/12345", "latency_ms": 5, "ok": true})).await;
    assert!(r["scar"].as_f64().unwrap() > 0.0, "warm start from the encrypted store: {r}");
    let (status, trail) = s.admin(reqwest::Method::GET, "/v1/audit", ALICE, None).await;
    assert!(status == 200 && trail.to_string().contains("99999"), "the audit trail is back: {trail}");
    s.stop();

    // The backup into fresh memory stores: with the key, restored; with a wrong key or no
    // key, refused naming the key id.
    let restore = |s: &Serve| {
        reqwest::Client::new()
            .post(format!("{}/v1/admin/restore", s.url))
            .bearer_auth(ALICE)
            .header("content-type", "application/x-ndjson")
            .body(backup.clone())
            .send()
    };
    let fresh = start_encrypted("memory", &good);
    let r = restore(&fresh).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["restored"].as_u64().unwrap() > 3);
    fresh.stop();
    let listen = format!("127.0.0.1:{}", free_port());
    let plain = Serve::start(
        &["--listen", &listen, "--store", "memory", "--node-id", "t1"],
        &[("ATRION_ADMIN_TOKENS", &format!("alice:{ALICE}"))],
    );
    for s in [start_encrypted("memory", &wrong), plain] {
        let r = restore(&s).await.unwrap();
        assert_eq!(r.status(), 422);
        let problem: Value = r.json().await.unwrap();
        assert!(problem["type"].as_str().unwrap().ends_with("/backup-key"), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("`k1`"), "{problem}");
        s.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_sidecar_on_redis_names_no_route_and_starts_only_with_its_key() {
    if !common::installed_or_skip("redis-server", "redis-server") {
        return;
    }
    let redis = atrion_redis::testing::RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    encrypted_sidecar_on(&url, || atrion_redis::testing::stored_bytes(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_sidecar_on_postgres_names_no_route_and_starts_only_with_its_key() {
    let Some(pg) = atrion_postgres::testing::PgServer::start() else {
        assert!(std::env::var("ATRION_SKIP_SERVICES").is_ok_and(|v| v == "1"), "PostgreSQL is not installed");
        return;
    };
    let url = pg.url();
    encrypted_sidecar_on(&url, || atrion_postgres::testing::stored_bytes(&url)).await;
}
