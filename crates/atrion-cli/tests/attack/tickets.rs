//! Tickets (defect 6): a ticket is good once, on the node that signed it, within its time to
//! live; a refused ticket changes nothing and creates no route.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::common::{Serve, free_port};

async fn post(s: &Serve, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{}{path}", s.url)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn ticket(s: &Serve, route: &str) -> String {
    let (status, d) = post(s, "/v1/decide", json!({"route": route})).await;
    assert_eq!(status, 200, "{d}");
    d["ticket"].as_str().expect("an admitted decision carries a ticket").to_owned()
}

async fn updates(s: &Serve, route: &str) -> Option<u64> {
    let r =
        reqwest::get(format!("{}/v1/routes/{}", s.url, route.replace(' ', "%20").replace('/', "%2F"))).await.unwrap();
    if r.status().as_u16() == 404 {
        return None;
    }
    r.json::<Value>().await.unwrap()["updates"].as_u64()
}

fn start(ttl_ms: &str) -> Serve {
    let listen = format!("127.0.0.1:{}", free_port());
    Serve::start(&["--store", "memory", "--listen", &listen, "--ticket-ttl-ms", ttl_ms], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_counts_once_and_a_forged_one_creates_nothing() {
    let s = start("300000");
    let t = ticket(&s, "GET /pay").await;
    let (status, r) = post(&s, "/v1/report", json!({"ticket": t, "ok": false})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(updates(&s, "GET /pay").await, Some(1));
    for _ in 0..20 {
        let (status, p) = post(&s, "/v1/report", json!({"ticket": t, "ok": false})).await;
        assert_eq!((status, p["type"].as_str()), (409, Some("tag:atrion,2026:problem/ticket-replayed")), "{p}");
    }
    assert_eq!(updates(&s, "GET /pay").await, Some(1), "the replays counted nothing");

    // The old unsigned form, and a signed ticket with its route swapped.
    let (status, p) = post(&s, "/v1/report", json!({"ticket": "v1.0.Zm9yZ2VkLXJvdXRl", "ok": false})).await;
    assert_eq!((status, p["type"].as_str()), (422, Some("tag:atrion,2026:problem/ticket-malformed")), "{p}");
    let good = ticket(&s, "GET /pay").await;
    // `v3.<route>.<head and MAC>`: the route is the middle part.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    assert_eq!(parts.len(), 3, "{good}");
    parts[1] = URL_SAFE_NO_PAD.encode("forged-route");
    let (status, p) = post(&s, "/v1/report", json!({"ticket": parts.join("."), "ok": false})).await;
    assert_eq!((status, p["type"].as_str()), (422, Some("tag:atrion,2026:problem/ticket-forged")), "{p}");
    assert_eq!(updates(&s, "forged-route").await, None, "no route was created");
    assert_eq!(updates(&s, "GET /pay").await, Some(1));
    // The genuine ticket is still good: the forgeries did not use it up.
    let (status, _) = post(&s, "/v1/report", json!({"ticket": good, "ok": true})).await;
    assert_eq!(status, 200);
    assert_eq!(updates(&s, "GET /pay").await, Some(2));

    // Another node's ticket is refused.
    let other = start("300000");
    let foreign = ticket(&other, "GET /pay").await;
    let (status, p) = post(&s, "/v1/report", json!({"ticket": foreign, "ok": false})).await;
    assert_eq!((status, p["type"].as_str()), (422, Some("tag:atrion,2026:problem/ticket-foreign")), "{p}");
    assert_eq!(updates(&s, "GET /pay").await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_refused() {
    let s = start("1");
    let t = ticket(&s, "GET /slow").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, p) = post(&s, "/v1/report", json!({"ticket": t, "ok": false})).await;
    assert_eq!((status, p["type"].as_str()), (410, Some("tag:atrion,2026:problem/ticket-expired")), "{p}");
    assert_eq!(updates(&s, "GET /slow").await, Some(0), "the route counted nothing");
}
