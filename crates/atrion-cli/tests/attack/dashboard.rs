//! The dashboard's feed under attack (defect 4 of issue 25): many feed clients past the
//! cap and readers that connect and never read, with hundreds of routes followed; and a
//! client without the token when the dashboard is behind one.

use serde_json::{Value, json};

use crate::common::{Serve, eventually, free_port};

/// Resident memory of the process, in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(s: &Serve) -> u64 {
    let pid = s.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` routes, decided on in batches.
async fn fill(s: &Serve, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let decide: Vec<Value> = chunk.iter().map(|i| json!({"route": format!("GET /items/{i:04}")})).collect();
        s.post("/v1/batch", json!({ "decide": decide })).await;
    }
}

/// Reads server-sent events until `n` `update` events have come; returns their data.
async fn updates(res: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = res.chunk().await.unwrap().expect("the feed stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: update") {
                let data: String = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                out.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    out
}

/// A feed client that reads its answer's head, then never reads again, with a small
/// receive window: the server can write to it only what its socket buffers take.
async fn stuck_reader(addr: std::net::SocketAddr) -> (tokio::net::TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let request = format!("GET /v1/dashboard/stream HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    tcp.writable().await.unwrap();
    assert_eq!(tcp.try_write(request.as_bytes()).unwrap(), request.len());
    let mut head = [0u8; 256];
    let n = loop {
        tcp.readable().await.unwrap();
        match tcp.try_read(&mut head) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    };
    (tcp, String::from_utf8_lossy(&head[..n]).into_owned())
}

/// Reads updates until one says the node tracks at least `n` routes (the sampler runs
/// once a second).
async fn following(res: &mut reqwest::Response, n: u64) {
    for _ in 0..600 {
        let u = updates(res, 1).await.remove(0);
        if u["routes_total"].as_u64() >= Some(n) {
            return;
        }
    }
    panic!("the feed never counted {n} routes");
}

async fn healthz(s: &Serve) {
    let r = reqwest::get(format!("{}/healthz", s.url)).await.unwrap();
    assert_eq!(r.status(), 200, "/healthz answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_clients_past_the_cap_and_readers_that_never_read_leave_the_server_standing() {
    const CAP: usize = 16;
    let listen = format!("127.0.0.1:{}", free_port());
    let cap = CAP.to_string();
    let s = Serve::start(&["--store", "memory", "--listen", &listen, "--dashboard-clients", &cap], &[]);
    fill(&s, 400).await;
    let mut good = reqwest::get(format!("{}/v1/dashboard/stream", s.url)).await.unwrap();
    assert_eq!(good.status(), 200);
    following(&mut good, 400).await;
    let baseline = rss_kib(&s);

    // Readers that never read take every other place.
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let mut stuck = Vec::new();
    for _ in 1..CAP {
        let (tcp, head) = stuck_reader(addr).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        stuck.push(tcp);
    }
    // A crowd past the cap: each is refused at once, and told when to come back.
    let crowd: Vec<_> = (0..100)
        .map(|_| {
            let url = format!("{}/v1/dashboard/stream", s.url);
            tokio::spawn(async move {
                let r = reqwest::get(url).await.unwrap();
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let status = r.status().as_u16();
                // A feed never ends: only a refusal is read to its end.
                let body = if status == 200 { String::new() } else { r.text().await.unwrap() };
                (status, retry, body)
            })
        })
        .collect();
    for _ in 0..20 {
        healthz(&s).await;
    }
    for c in crowd {
        let (status, retry, body) = c.await.unwrap();
        assert_eq!(status, 503, "past the cap: {body}");
        assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|r| r >= 1)), "with Retry-After");
        assert!(body.contains("dashboard-busy") && !body.contains("GET /items"), "a problem, no data: {body}");
    }
    // Updates keep coming to the page that reads, while the others sit.
    for _ in 0..3 {
        updates(&mut good, 1).await;
        healthz(&s).await;
    }
    let during = rss_kib(&s);
    assert!(
        during < baseline + 64 * 1024,
        "memory held for readers that never read is bounded: {baseline} KiB, then {during} KiB"
    );

    // They leave: their places and their memory come back.
    drop(stuck);
    let mut again = eventually("a place comes back", || async {
        let r = reqwest::get(format!("{}/v1/dashboard/stream", s.url)).await.unwrap();
        (r.status() == 200).then_some(r)
    })
    .await;
    assert_eq!(updates(&mut again, 1).await[0]["full"], true);
    drop(again);
    eventually("memory returns near its baseline", || async { (rss_kib(&s) < baseline + 16 * 1024).then_some(()) })
        .await;
    healthz(&s).await;
    s.stop();
}

const ADMIN: &str = "ops:ops-secret-0123456789";
const READER: &str = "wall:wall-secret-0123456789";

/// `GET path` with an optional bearer token: status and body.
async fn get(s: &Serve, path: &str, token: Option<&str>) -> (u16, String) {
    let mut r = reqwest::Client::new().get(format!("{}{path}", s.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_token_the_feed_refuses_a_client_without_it_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let readers = dir.path().join("dashboard-tokens");
    std::fs::write(&readers, format!("{READER}\n")).unwrap();
    let readers = readers.display().to_string();
    for auth in [vec!["--dashboard-auth", "admin"], vec!["--dashboard-tokens-file", readers.as_str()]] {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--store", "memory", "--listen", &listen];
        args.extend(&auth);
        let s = Serve::start(&args, &[("ATRION_ADMIN_TOKENS", ADMIN)]);
        fill(&s, 50).await;
        let admin = ADMIN.split_once(':').unwrap().1;
        let reader = READER.split_once(':').unwrap().1;
        for token in [None, Some("guess-guess-guess-0123"), (auth[0] == "--dashboard-auth").then_some(reader)] {
            let (status, body) = get(&s, "/v1/dashboard/stream", token).await;
            assert_eq!(status, 401, "{auth:?} {token:?}: {body}");
            assert!(!body.contains("event:") && !body.contains("GET /items"), "nothing of the feed: {body}");
            let (status, _) = get(&s, "/v1/dashboard/routes/GET%20%2Fitems%2F0001", token).await;
            assert_eq!(status, 401, "a route's page too");
        }
        // The page itself loads: it asks for the token.
        assert_eq!(get(&s, "/", None).await.0, 200);
        let token = if auth[0] == "--dashboard-auth" { admin } else { reader };
        let mut feed = reqwest::Client::new()
            .get(format!("{}/v1/dashboard/stream", s.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(feed.status(), 200, "{auth:?}");
        following(&mut feed, 50).await;
        if auth[0] != "--dashboard-auth" {
            // A read-only token opens the dashboard, and nothing else.
            let (status, _) = s
                .admin(reqwest::Method::POST, "/v1/admin/open", reader, Some(json!({"route": "GET /items/0001"})))
                .await;
            assert_eq!(status, 401);
            let r = reqwest::Client::new()
                .get(format!("{}/v1/dashboard/stream", s.url))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "an admin token opens it too");
        }
        drop(feed);
        // Decisions go on.
        let d = s.post("/v1/decide", json!({"route": "GET /items/0001"})).await;
        assert_eq!(d["verdict"], "admit");
        s.stop();
    }
}
