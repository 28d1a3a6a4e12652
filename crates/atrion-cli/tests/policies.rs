//! Policies across a cluster of real `atrion serve` processes over a private Redis and a
//! private PostgreSQL: a policy written through one node is in force on all, concurrent
//! writers lose nothing, invalid changes are refused with paths, bans shed everywhere and
//! expire, shadow mode never sheds, a partitioned node is flagged and catches up, the
//! policy file is watched, and the audit trail outlives a restart.

mod common;

use std::time::Duration;

use atrion_postgres::testing::PgServer;
use atrion_redis::testing::{RedisServer, TcpProxy};
use common::{Serve, eventually, free_port};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "aaaaaaaaaaaaaaaa1";
const TOKENS: (&str, &str) = ("ATRION_ADMIN_TOKENS", "alice:aaaaaaaaaaaaaaaa1");

fn start(store: &str, id: &str, ns: &str, extra: &[&str]) -> Serve {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--store", store, "--node-id", id, "--namespace", ns, "--listen", &listen];
    args.extend_from_slice(extra);
    Serve::start(&args, &[TOKENS])
}

/// The version `node` runs, from its own dump.
async fn running(node: &Serve) -> Option<u64> {
    let r = reqwest::get(format!("{}/v1/state", node.url)).await.ok()?;
    let v: Value = r.json().await.ok()?;
    v["current"][0]["version"].as_u64()
}

async fn decide(node: &Serve, route: &str, client: Option<&str>) -> Value {
    node.post("/v1/decide", json!({"route": route, "client": client})).await
}

async fn steer_three_nodes(store: &str, ns: &str) {
    let nodes = [start(store, "a", ns, &[]), start(store, "b", ns, &[]), start(store, "c", ns, &[])];
    let [a, b, c] = &nodes;
    eventually("A hears all three reports", || async {
        let v = a.get("/v1/state").await;
        (v["current"].as_array()?.len() == 3).then_some(())
    })
    .await;

    // B learns a route, then it fails until it scars; the policy that follows must not
    // erase that.
    for _ in 0..20 {
        b.post("/v1/report", json!({"route": "GET /pay", "latency_ms": 20, "ok": true, "saturation": 0.9})).await;
    }
    eventually("B's route scars", || async {
        let failed = json!({"route": "GET /pay", "latency_ms": 900, "ok": false, "saturation": 0.9});
        (b.post("/v1/report", failed).await["scar"].as_f64()? > 0.0).then_some(())
    })
    .await;
    let before = b.get("/v1/routes/GET%20%2Fpay").await;
    assert!(before["scar"].as_f64().unwrap() > 0.0, "{before}");

    // A policy through A's API: in force on all three (how fast is the bench's claim).
    let (status, done) = a
        .admin(Method::POST, "/v1/policies", TOKEN, Some(json!({"route": "GET /*", "physics": {"tuner": {"k": 4.5}}})))
        .await;
    assert_eq!(status, 200, "{done}");
    let version = done["version"].as_u64().unwrap();
    for n in &nodes {
        eventually("the policy is in force on every node", || async { (running(n).await? >= version).then_some(()) })
            .await;
    }
    let after = b.get("/v1/routes/GET%20%2Fpay").await;
    assert_eq!(after["policy"], "GET /*", "the route's applicable policy");
    for k in ["scar", "mode", "updates", "tuner_mean", "tuner_sd"] {
        assert_eq!(before[k], after[k], "a hot patch keeps `{k}`");
    }
    let dump = b.get("/v1/state").await;
    assert_eq!(dump["applicable"][0]["physics"]["tuner"]["k"], 4.5, "{dump}");
    // Current state matches desired on every node: the diff is empty.
    eventually("every node runs desired state", || async {
        let d = a.get("/v1/state/diff").await;
        let all = d.as_array()?;
        (all.len() == 3 && all.iter().all(|n| n["in_sync"] == true)).then_some(())
    })
    .await;

    // Invalid: rejected with the path of every issue; desired state untouched.
    let (status, p) = c
        .admin(Method::POST, "/v1/policies", TOKEN, Some(json!({"route": "GET /x", "physics": {"tuner": {"k": -1}}})))
        .await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["issues"][0]["path"], "policies[0].physics.tuner.k", "{p}");
    let (status, p) = c
        .admin(
            Method::PUT,
            "/v1/policies",
            TOKEN,
            Some(json!({"policies": [{"route": "a*"}, {"route": "*a"}], "bans": [{"until_ms": 1}]})),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert!(p["issues"].as_array().unwrap().len() >= 2, "every issue: {p}");
    let (status, p) = c.admin(Method::DELETE, "/v1/policies?route=GET%20%2Fx&expected_version=soon", TOKEN, None).await;
    assert_eq!((status, &p["type"]), (400, &json!("tag:atrion,2026:problem/invalid-query")), "{p}");
    assert_eq!(a.get("/v1/policies").await["version"].as_u64(), Some(version), "nothing changed");

    // Many writers at once, through all three nodes: no change is lost.
    let writes: Vec<_> = (0..24)
        .map(|i| {
            let url = nodes[i % 3].url.clone();
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(format!("{url}/v1/policies"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"route": format!("POST /w{i}"), "state": "closed"}))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    for w in writes {
        assert_eq!(w.await.unwrap(), 200);
    }
    let desired = a.get("/v1/policies").await;
    assert_eq!(desired["api"]["policies"].as_array().unwrap().len(), 25, "{desired}");
    assert_eq!(desired["version"].as_u64(), Some(version + 24));

    // A ban on a client key sheds its requests on every node, and expires everywhere.
    let (status, _) = a.admin(Method::POST, "/v1/bans", TOKEN, Some(json!({"client": "bot", "for_ms": 3_000}))).await;
    assert_eq!(status, 200);
    for n in &nodes {
        eventually("the ban is in force", || async {
            (decide(n, "GET /z", Some("bot")).await["reason"] == "banned").then_some(())
        })
        .await;
        assert_eq!(decide(n, "GET /z", Some("alice")).await["verdict"], "admit");
    }
    for n in &nodes {
        eventually("the ban expires", || async {
            (decide(n, "GET /z", Some("bot")).await["verdict"] == "admit").then_some(())
        })
        .await;
    }

    // Shadow mode: a failing route is never shed, and what it would have shed is counted.
    let (status, _) =
        a.admin(Method::POST, "/v1/policies", TOKEN, Some(json!({"route": "GET /new", "state": "shadow"}))).await;
    assert_eq!(status, 200);
    eventually("C runs the shadow policy", || async {
        let v = c.get("/v1/state").await;
        v["applicable"].as_array()?.iter().any(|p| p["state"] == "shadow").then_some(())
    })
    .await;
    // It learns a healthy normal, then fails until its physics trips it.
    for i in 0..20 {
        c.post("/v1/report", json!({"route": "GET /new", "latency_ms": 20, "ok": true, "saturation": 0.3})).await;
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let view = eventually("the shadow route trips (in its physics)", || async {
        c.post("/v1/report", json!({"route": "GET /new", "latency_ms": 2000, "ok": false, "saturation": 1.0})).await;
        for _ in 0..5 {
            let d = decide(c, "GET /new", None).await;
            assert_eq!(d["verdict"], "admit", "{d}");
        }
        let v = c.get("/v1/routes/GET%20%2Fnew").await;
        (v["mode"] == "open" && v["shadowed"].as_u64()? > 0).then_some(v)
    })
    .await;
    assert!(view["shadowed"].as_u64().unwrap() > 0, "{view}");
    assert_eq!(view["held"], "shadow");

    // The audit trail, read on another node: every action, and the refused ones.
    let (status, _) = c.admin(Method::GET, "/v1/audit", "not-a-token-at-all-1", None).await;
    assert_eq!(status, 401);
    let trail = eventually("the refused token is in the trail", || async {
        let (_, v) = b.admin(Method::GET, "/v1/audit?limit=100", TOKEN, None).await;
        let e = v["entries"].as_array()?.clone();
        e.iter().any(|e| e["action"] == "auth" && e["ok"] == false).then_some(e)
    })
    .await;
    assert!(trail.iter().any(|e| e["action"] == "ban" && e["who"] == "alice" && e["ok"] == true));
    assert!(trail.iter().any(|e| e["action"] == "policy.set" && e["ok"] == false), "rejected changes too");
    let history = a.get("/v1/state/history?limit=5").await;
    assert!(!history["entries"].as_array().unwrap().is_empty(), "{history}");

    for n in nodes {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_redis_are_steered_from_one() {
    let Some(redis) = RedisServer::start() else { return };
    steer_three_nodes(&redis.url(), "steer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_postgres_are_steered_from_one() {
    let Some(pg) = PgServer::start() else { return };
    steer_three_nodes(&pg.url(), "steer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_is_flagged_and_catches_up_when_the_link_heals() {
    let Some(redis) = RedisServer::start() else { return };
    let proxy = TcpProxy::start(redis.port).await;
    let direct = redis.url();
    let through = direct.replace(&format!(":{}", redis.port), &format!(":{}", proxy.port));
    let extra = ["--divergence-pulses", "3"];
    let (a, b, c) = (
        start(&direct, "a", "part", &extra),
        start(&direct, "b", "part", &extra),
        start(&through, "c", "part", &extra),
    );
    eventually("A hears all three reports", || async {
        (a.get("/v1/state").await["current"].as_array()?.len() == 3).then_some(())
    })
    .await;
    proxy.cut();
    let (status, done) =
        a.admin(Method::POST, "/v1/policies", TOKEN, Some(json!({"route": "GET /p", "state": "open"}))).await;
    assert_eq!(status, 200, "{done}");
    let version = done["version"].as_u64().unwrap();
    for n in [&a, &b] {
        let alert = eventually("the others flag C as a network issue", || async {
            let v = n.get("/v1/state").await;
            v["alerts"].as_array()?.iter().find(|al| al["node"] == "c" && al["class"] == "network_issue").cloned()
        })
        .await;
        assert_eq!(alert["desired"].as_u64(), Some(version), "{alert}");
    }
    assert!(running(&c).await.unwrap() < version, "C cannot know yet");
    let own = eventually("C flags itself: it cannot read desired state", || async {
        let v = c.get("/v1/state").await;
        v["alerts"].as_array()?.iter().find(|al| al["node"] == "c").cloned().map(|al| (al, v["stale"].clone()))
    })
    .await;
    assert_eq!((&own.0["class"], &own.1), (&json!("network_issue"), &json!(true)), "{own:?}");
    assert_eq!(decide(&c, "GET /p", None).await["verdict"], "admit", "decisions go on, on local state");
    proxy.heal();
    eventually("C catches up", || async { (running(&c).await? == version).then_some(()) }).await;
    assert_eq!(decide(&c, "GET /p", None).await["reason"], "held");
    for n in [&a, &b] {
        eventually("the alert clears", || async {
            n.get("/v1/state").await["alerts"].as_array()?.is_empty().then_some(())
        })
        .await;
    }
    let diff = a.get("/v1/state/diff").await;
    assert!(diff.as_array().unwrap().iter().all(|n| n["in_sync"] == true), "{diff}");
    for n in [a, b, c] {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_file_is_watched_and_the_audit_trail_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.redb").display());
    let file = dir.path().join("policies.toml");
    std::fs::write(&file, "[[policies]]\nroute = \"GET /a\"\nstate = \"open\"\n").unwrap();
    let path = file.to_str().unwrap().to_owned();
    let a = start(&store, "a", "file", &["--policy-file", &path]);
    eventually("the file is applied", || async {
        (decide(&a, "GET /a", None).await["reason"] == "held").then_some(())
    })
    .await;
    // Edited while running: applied.
    std::fs::write(
        &file,
        "[[policies]]\nroute = \"GET /a\"\nstate = \"closed\"\n[[policies]]\nroute = \"GET /b*\"\nstate = \"open\"\n",
    )
    .unwrap();
    eventually("the edit is applied", || async {
        (decide(&a, "GET /b1", None).await["reason"] == "held").then_some(())
    })
    .await;
    let desired = a.get("/v1/policies").await;
    assert_eq!(desired["file"]["policies"].as_array().unwrap().len(), 2, "{desired}");
    let version = desired["version"].as_u64().unwrap();
    // An invalid edit: logged with its path, and the previous policies stay.
    std::fs::write(&file, "[[policies]]\nroute = \"GET /a\"\nstate = \"sideways\"\n").unwrap();
    eventually("the rejection is logged", || async { a.logged("policy file rejected").then_some(()) }).await;
    assert!(a.logged("policies[0].state"), "the path is in the log");
    assert_eq!(a.get("/v1/policies").await["version"].as_u64(), Some(version));
    assert_eq!(decide(&a, "GET /b1", None).await["reason"], "held");
    // The policy layer's metrics are in the sidecar's scrape.
    let text = reqwest::get(format!("{}/metrics", a.url)).await.unwrap().text().await.unwrap();
    for m in [
        "atrion_policy_version",
        "atrion_policy_desired_version",
        "atrion_policy_divergence_alerts",
        "atrion_policy_reconcile_seconds",
    ] {
        assert!(text.contains(m), "{m} in /metrics");
    }
    // An admin action, then a restart on the same store: the trail is still there.
    let (status, _) = a.admin(Method::POST, "/v1/admin/open", TOKEN, Some(json!({"route": "GET /c"}))).await;
    assert_eq!(status, 200);
    let trail = |v: &Value| -> Vec<(String, bool)> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["action"].as_str().unwrap().to_owned(), e["ok"] == true))
            .collect()
    };
    let (_, before) = a.admin(Method::GET, "/v1/audit", TOKEN, None).await;
    assert!(trail(&before).contains(&("route.open".to_owned(), true)), "{before}");
    let open = before["entries"].as_array().unwrap().iter().find(|e| e["action"] == "route.open").unwrap();
    assert_eq!(
        (&open["who"], &open["target"], &open["before"], &open["after"]),
        (&json!("alice"), &json!("GET /c"), &json!("released"), &json!("open"))
    );
    assert!(trail(&before).contains(&("policy.file".to_owned(), false)), "{before}");
    a.stop();
    let a = start(&store, "a", "file", &[]);
    let (_, after) = a.admin(Method::GET, "/v1/audit", TOKEN, None).await;
    assert_eq!(trail(&after), trail(&before), "the audit trail survives the restart");
    a.stop();
}

#[test]
fn policy_check_validates_a_file_offline_with_every_issue_and_its_path() {
    let bin = env!("CARGO_BIN_EXE_atrion");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies.toml");
    let ok = std::process::Command::new(bin).args(["policy", "check", example]).output().unwrap();
    assert!(ok.status.success(), "the README's example is valid: {}", String::from_utf8_lossy(&ok.stdout));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[policies]]\nroute = \"a*\"\n[[policies]]\nroute = \"*a\"\nphysics = { tuner = { k = -1 } }\n\
         [[bans]]\nclient = \"x\"\nuntil_ms = 5\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin).args(["policy", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for path in ["policies[1].physics.tuner.k: must be > 0, got -1", "policies[1].route", "bans[0].until_ms"] {
        assert!(text.contains(path), "{path} in {text}");
    }
    std::fs::write(&bad, "[[policies]]\nroute = \"a\"\nstat = \"open\"\n").unwrap();
    let out = std::process::Command::new(bin).args(["policy", "check"]).arg(&bad).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Schema: policies[0].stat"), "{out:?}");
}

/// `atrion …` with the given arguments: (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atrion"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ATRION_")) {
        cmd.env_remove(k);
    }
    let out = cmd.args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_steers_a_cluster_through_a_sidecar_or_straight_through_its_store() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let (a, b) = (start(&url, "a", "cli", &[]), start(&url, "b", "cli", &[]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "[[policies]]\nroute = \"GET /x*\"\nstate = \"open\"\n").unwrap();
    let file = file.to_str().unwrap();
    // Through A's API, with the token.
    let (code, out, err) = cli(&["policy", "apply", file, "--server", &a.url, "--token", TOKEN]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["version"], 1);
    let (code, _, err) = cli(&["policy", "apply", file, "--server", &a.url, "--token", "wrong-wrong-wrong-1"]);
    assert_ne!(code, 0);
    assert!(err.contains("401"), "{err}");
    eventually("B runs it", || async { (decide(&b, "GET /x1", None).await["reason"] == "held").then_some(()) }).await;
    // Straight through the store, as `bob`: the sidecars apply it.
    let (code, out, err) = cli(&["policy", "delete", "GET /x*", "--store", &url, "--namespace", "cli", "--as", "bob"]);
    assert_eq!(code, 0, "{out}{err}");
    for n in [&a, &b] {
        eventually("the delete is in force", || async {
            (decide(n, "GET /x1", None).await["verdict"] == "admit").then_some(())
        })
        .await;
    }
    let (code, out, _) =
        cli(&["policy", "ban", "--client", "bot", "--for", "60", "--store", &url, "--namespace", "cli"]);
    assert_eq!(code, 0, "{out}");
    eventually("the ban is in force", || async {
        (decide(&b, "GET /y", Some("bot")).await["reason"] == "banned").then_some(())
    })
    .await;
    // Inspection from either side.
    let diff = eventually("every node in sync, read from the store", || async {
        let (code, out, _) = cli(&["state", "diff", "--store", &url, "--namespace", "cli"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        (code == 0 && v.as_array()?.len() == 2 && v.as_array()?.iter().all(|n| n["in_sync"] == true)).then_some(v)
    })
    .await;
    assert!(diff.as_array().unwrap().iter().all(|n| n["version"] == 3), "{diff}");
    let (code, out, _) = cli(&["state", "dump", "--server", &b.url]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["desired"]["version"], 3);
    let (code, out, _) = cli(&["state", "history", "--server", &a.url, "--limit", "2"]);
    assert_eq!((code, serde_json::from_str::<Value>(&out).unwrap()["entries"].as_array().unwrap().len()), (0, 2));
    let (code, out, _) = cli(&["audit", "--export", "--server", &a.url, "--token", TOKEN]);
    assert_eq!(code, 0);
    let who: Vec<String> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["who"].as_str().unwrap().to_owned()).collect();
    assert!(
        who.contains(&"alice".to_owned()) && who.contains(&"bob".to_owned()) && who.contains(&"-".to_owned()),
        "{who:?}"
    );
    a.stop();
    b.stop();
}
