//! What one Redis spends to deliver a notice to each subscriber. The store model of `vfleet`
//! charges the server a cost per notice delivered to one subscriber (`--delivery-us`, 1 µs
//! assumed); this measures it on a private `redis-server`: N subscribers, each on a
//! connection of its own (as N nodes are), M messages published in pipelines; the server's
//! CPU time (`INFO cpu`, user + sys) over the deliveries. CPU time, not wall time: the
//! subscribers run in this process on the same cores, and what they cost is not the
//! server's.
//!
//! Run: `cargo run --release -p atrion-bench --bin fanout -- [--subscribers 0,10,100,300,1000]
//! [--messages 2000] [--bytes 120]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, bail};
use atrion_redis::testing::RedisServer;
use futures_util::StreamExt;

const CHANNEL: &str = "atrion-fanout";

/// The server's CPU time so far, in seconds (user + sys, of the main thread and children).
async fn server_cpu(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = info.lines().find_map(|l| l.strip_prefix(name)).with_context(|| format!("no {name} in INFO"))?;
        Ok(line.trim_start_matches(':').trim().parse()?)
    };
    Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// One row: N subscribers, M messages of `bytes` each. Returns the server's µs per message
/// and per delivery (`None` with no subscribers).
async fn row(client: &redis::Client, n: usize, m: usize, bytes: usize) -> anyhow::Result<(f64, Option<f64>)> {
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sub = client.get_async_pubsub().await?;
        sub.subscribe(CHANNEL).await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = sub.into_on_message();
            while stream.next().await.is_some() {
                received.fetch_add(1, Relaxed);
            }
        }));
    }
    let mut conn = client.get_multiplexed_async_connection().await?;
    let payload = vec![b'x'; bytes];
    let before = server_cpu(&mut conn).await?;
    for chunk in (0..m).collect::<Vec<_>>().chunks(100) {
        let mut pipe = redis::pipe();
        for _ in chunk {
            pipe.cmd("PUBLISH").arg(CHANNEL).arg(&payload).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    let want = (n * m) as u64;
    let mut waited = 0;
    while received.load(Relaxed) < want {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        if waited > 30_000 {
            bail!("{} of {want} deliveries arrived", received.load(Relaxed));
        }
    }
    let after = server_cpu(&mut conn).await?;
    for t in tasks {
        t.abort();
    }
    let us = (after - before) * 1e6;
    Ok((us / m as f64, (n > 0).then(|| us / want as f64)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut subscribers = vec![0, 10, 100, 300, 1_000];
    let (mut messages, mut bytes) = (2_000usize, 120usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--subscribers" => subscribers = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--messages" => messages = value.parse()?,
            "--bytes" => bytes = value.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    let server = RedisServer::start().context("redis-server could not be started")?;
    let client = redis::Client::open(server.url())?;
    println!("{messages} messages of {bytes} bytes, published in pipelines of 100; server CPU (INFO cpu, user + sys)");
    println!("| subscribers | server µs per message | server µs per delivery |");
    println!("|---:|---:|---:|");
    for n in subscribers {
        let (per_message, per_delivery) = row(&client, n, messages, bytes).await?;
        let per_delivery = per_delivery.map_or("-".to_owned(), |d| format!("{d:.3}"));
        println!("| {n} | {per_message:.1} | {per_delivery} |");
    }
    Ok(())
}
