//! Connection exhaustion (defect 3): slow heads, idle floods past the cap and per peer, and
//! the memory a flood leaves behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::common::{Serve, eventually, free_port};
use crate::wire::{self, closed_by_server, connect_from, get, port_of, post, rss_kb};

const ADMIN: &str = "ops:attack-admin-secret-0123";
const SECRET: &str = "attack-admin-secret-0123";

fn start(extra: &[&str]) -> Serve {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--store", "memory", "--listen", &listen, "--no-dashboard"];
    args.extend_from_slice(extra);
    Serve::start(&args, &[("ATRION_ADMIN_TOKENS", ADMIN)])
}

async fn healthz(port: u16) -> u16 {
    wire::send([127, 0, 0, 1], port, &get(port, "/healthz")).await.map_or(0, |a| a.status)
}

/// Slowloris: 200 connections drip a head one byte at a time, 100 send nothing. The header
/// timeout closes every one of them, and `/healthz` answers all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_heads_are_closed_while_healthz_answers() {
    let s = start(&["--header-timeout-ms", "1500"]);
    let port = port_of(&s.url);
    let closed = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for i in 0..300 {
        let closed = closed.clone();
        clients.spawn(async move {
            let stream = connect_from([127, 0, 0, 2], port).await;
            let (mut read, mut write) = stream.into_split();
            let drip = async move {
                if i < 200 {
                    let _ = write.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await;
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if write.write_all(b"a").await.is_err() {
                            break;
                        }
                    }
                }
                std::future::pending::<()>().await;
            };
            let mut buf = [0u8; 256];
            tokio::select! {
                () = drip => unreachable!(),
                n = read.read(&mut buf) => assert!(matches!(n, Ok(0) | Err(_)), "no answer to a head never sent"),
            }
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    // `/healthz` answers all along, until every slow or silent connection is closed.
    eventually("every slow or silent connection is closed", || {
        let closed = closed.clone();
        async move {
            assert_eq!(healthz(port).await, 200, "/healthz answers during the attack");
            (closed.load(Ordering::Relaxed) == 300).then_some(())
        }
    })
    .await;
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    assert_eq!(healthz(port).await, 200);
    s.stop();
}

/// An idle flood up to the cap: the per-peer cap closes a peer's extra connections at
/// once; past the cap, the reserve still serves `/healthz` and an admin call while a
/// decision gets `503`; past the reserve, connections are closed at once. When the flood
/// leaves, decisions are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_leaves_health_and_admin_their_reserve() {
    let s = start(&[
        "--max-connections",
        "100",
        "--reserved-connections",
        "4",
        "--max-connections-per-peer",
        "60",
        "--header-timeout-ms",
        "120000",
    ]);
    let port = port_of(&s.url);
    let host = format!("127.0.0.1:{port}");
    let decide = post(&host, "/v1/decide", "application/json", "", r#"{"route":"flooded"}"#);
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(connect_from([127, 0, 0, 2], port).await);
    }
    // The 61st connection of one peer is closed at once.
    let mut extra = connect_from([127, 0, 0, 2], port).await;
    assert!(closed_by_server(&mut extra).await, "a peer over its cap is refused");
    for _ in 0..40 {
        idle.push(connect_from([127, 0, 0, 3], port).await);
    }
    // The cap is reached: a new connection serves only health and administration.
    let busy = eventually("a decision past the cap gets 503", || {
        let decide = decide.clone();
        async move { wire::send([127, 0, 0, 4], port, &decide).await.filter(|a| a.status == 503) }
    })
    .await;
    assert_eq!(busy.header("retry-after"), Some("1"), "{busy:?}");
    assert_eq!(busy.header("content-type"), Some("application/problem+json"));
    assert_eq!(busy.header("connection"), Some("close"));
    assert_eq!(healthz(port).await, 200, "/healthz is served from the reserve");
    let auth = format!("Authorization: Bearer {SECRET}\r\n");
    let open = post(&host, "/v1/admin/open", "application/json", &auth, r#"{"route":"held-in-a-flood"}"#);
    let answer = wire::send([127, 0, 0, 5], port, &open).await.expect("an answer");
    assert_eq!(answer.status, 200, "an admin call is served from the reserve: {answer:?}");
    // Fill the reserve too: then a new connection is closed at once, without an answer.
    for _ in 0..4 {
        idle.push(connect_from([127, 0, 0, 6], port).await);
    }
    eventually("past the reserve, connections are closed at once", || async move {
        wire::send([127, 0, 0, 7], port, &get(port, "/healthz")).await.is_none().then_some(())
    })
    .await;
    // The flood leaves: decisions are served again, and the admin call held.
    drop(idle);
    let answer = eventually("decisions are served again", || {
        let decide = decide.clone();
        async move { wire::send([127, 0, 0, 1], port, &decide).await.filter(|a| a.status == 200) }
    })
    .await;
    assert!(answer.body.contains("\"verdict\":\"admit\""), "{answer:?}");
    let held = s.get("/v1/routes/held-in-a-flood").await;
    assert_eq!(held["held"], "open", "{held}");
    s.stop();
}

/// Two thousand keep-alive connections each make a request and stay: the memory they took
/// is given back when they leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_near_its_baseline_after_a_flood() {
    let s =
        start(&["--max-connections", "3000", "--max-connections-per-peer", "3000", "--header-timeout-ms", "120000"]);
    let port = port_of(&s.url);
    let pid = s.child.as_ref().unwrap().id();
    for _ in 0..20 {
        assert_eq!(healthz(port).await, 200);
    }
    let baseline = rss_kb(pid);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut flood = Vec::new();
    for i in 0..2_000u32 {
        let mut c = connect_from([127, 0, 0, 2 + (i % 4) as u8], port).await;
        c.write_all(request.as_bytes()).await.unwrap();
        flood.push(c);
    }
    for c in &mut flood {
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    let peak = rss_kb(pid);
    assert!(peak > baseline + 8_000, "the flood took memory: {baseline} kB, then {peak} kB");
    drop(flood);
    let grown = peak - baseline;
    let after = eventually("memory returns near its baseline", || async move {
        let now = rss_kb(pid);
        (now < baseline + grown / 4).then_some(now)
    })
    .await;
    assert_eq!(healthz(port).await, 200);
    eprintln!("RSS: {baseline} kB at rest, {peak} kB with 2,000 connections, {after} kB after they left");
    s.stop();
}
