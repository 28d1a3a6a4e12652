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
    for _ in 0..40 {
        a.post("/v1/report", json!({"route": "GET /pay", "latency_ms": 900, "ok": false, "saturation": 0.9})).await;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let scar = a.get("/v1/routes/GET%20%2Fpay").await["scar"].as_f64().unwrap();
    assert!(scar > 0.0, "A scarred: {scar}");
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
