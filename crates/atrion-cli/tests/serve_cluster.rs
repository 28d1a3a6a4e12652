//! Three `atrion serve` processes against one private Redis: a route failing behind one
//! raises resistance on the others (seen through `/v1/routes`); `/v1/nodes` on each lists all
//! three; one is killed, and the others mark it gone.

mod common;

use atrion_redis::testing::RedisServer;
use common::{Serve, eventually, free_port};
use serde_json::{Value, json};

fn statuses(nodes: &Value) -> Vec<(String, String)> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_owned(), n["status"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_share_scar_and_see_each_other_come_and_go() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let start = |id: &'static str| {
        let listen = format!("127.0.0.1:{}", free_port());
        Serve::start(&["--store", &url, "--node-id", id, "--namespace", "three", "--listen", &listen], &[])
    };
    let (a, b, c) = (start("a"), start("b"), start("c"));

    // Every node lists the three, healthy, itself first.
    for (me, s) in [("a", &a), ("b", &b), ("c", &c)] {
        let listed = eventually(&format!("{me} lists three healthy nodes"), || async {
            let v = statuses(&s.get("/v1/nodes").await);
            (v.len() == 3 && v.iter().all(|(_, st)| st == "healthy")).then_some(v)
        })
        .await;
        assert_eq!(listed[0].0, me);
        let mut ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    // A route fails behind A: its scar reaches B and C through the store.
    // It fails until its scar is well past the deadband (0.5 ohm), under which a node keeps
    // its scar to itself.
    eventually("A's route scars", || async {
        let failed = json!({"route": "GET /pay", "latency_ms": 900, "ok": false, "saturation": 0.9});
        (a.post("/v1/report", failed).await["scar"].as_f64()? > 2.0).then_some(())
    })
    .await;
    for s in [&b, &c] {
        let view = eventually("the others see A's scar on GET /pay", || async {
            let r = reqwest::get(format!("{}/v1/routes/GET%20%2Fpay", s.url)).await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["cluster_scar"].as_f64()? > 0.0).then_some(v)
        })
        .await;
        assert!(view["resistance"].as_f64().unwrap() >= 10.0, "{view}");
        let d = s.post("/v1/decide", json!({"route": "GET /pay"})).await;
        assert!(d["resistance"].as_f64().unwrap() > 10.0, "A's scar raises resistance here: {d} {view}");
        assert_eq!(view["nodes"][0]["node"], "a", "the per-node view names A: {view}");
    }

    // A dies without a word: the others mark it gone.
    a.kill();
    for s in [&b, &c] {
        eventually("A is marked gone", || async {
            let v = statuses(&s.get("/v1/nodes").await);
            v.iter().any(|(id, st)| id == "a" && st == "gone").then_some(())
        })
        .await;
    }
    b.stop();
    c.stop();
    drop(redis);
}

/// Decide and report on a few routes until `stop` says so; returns (requests, non-2xx answers).
async fn load(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (u64, Vec<u16>) {
    let client = reqwest::Client::new();
    let (mut n, mut bad) = (0, Vec::new());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let route = format!("GET /load/{}", n % 4);
        let r = client.post(format!("{url}/v1/decide")).json(&json!({"route": route})).send().await.unwrap();
        let status = r.status();
        let d: Value = r.json().await.unwrap();
        if !status.is_success() {
            bad.push(status.as_u16());
        }
        if let Some(ticket) = d["ticket"].as_str() {
            let r = client.post(format!("{url}/v1/report")).json(&json!({"ticket": ticket, "ok": true})).send().await;
            let status = r.unwrap().status();
            if !status.is_success() {
                bad.push(status.as_u16());
            }
        }
        n += 1;
    }
    (n, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_killed_under_load_costs_no_error_and_the_node_resyncs() {
    let Some(mut redis) = RedisServer::start() else { return };
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Serve::start(&["--store", &redis.url(), "--node-id", "solo", "--listen", &listen], &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = tokio::spawn(load(s.url.clone(), stop.clone()));
    let count =
        |v: &Value| v["decisions"]["admitted"].as_u64().unwrap_or(0) + v["decisions"]["shed"].as_u64().unwrap_or(0);
    let decided = || async { s.get("/v1/routes").await["routes"].as_array().unwrap().iter().map(count).sum::<u64>() };

    eventually("traffic flows", || async { (decided().await > 50).then_some(()) }).await;
    redis.kill();
    eventually("the node reports itself degraded", || async {
        (s.get("/readyz").await["degraded"] == json!(true)).then_some(())
    })
    .await;
    // Decisions keep flowing while the store is away.
    let before = decided().await;
    eventually("decisions go on without the store", || async { (decided().await > before + 50).then_some(()) }).await;
    assert_eq!(s.get("/readyz").await["ready"], json!(true), "degraded is still ready");
    redis.restart();
    eventually("the node resyncs when the store returns", || async {
        let ready = s.get("/readyz").await;
        let metrics = reqwest::get(format!("{}/metrics", s.url)).await.ok()?.text().await.ok()?;
        let resyncs: f64 =
            metrics.lines().find(|l| l.starts_with("atrion_sync_resyncs_total "))?.rsplit(' ').next()?.parse().ok()?;
        (ready["degraded"] == json!(false) && resyncs >= 1.0).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, bad) = worker.await.unwrap();
    assert!(n > 100, "{n} requests");
    assert!(bad.is_empty(), "no error answers while the store was away: {bad:?}");
    s.stop();
}
