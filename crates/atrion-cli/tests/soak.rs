//! The chaos soak: three `atrion node` processes and a private Redis, each node behind its
//! own TCP proxy, while traffic flows. For `ATRION_SOAK_SECS` (default 60) a seeded script
//! kills and restarts nodes, kills and restarts Redis (which loses everything: no
//! persistence), and cuts, stalls and heals links. Then everything is healed and a probe
//! node fails the shared route. Checked at the end: no panic in any log; every node
//! converges (sees the probe's scar); the heartbeats of the live nodes and the probe's
//! acknowledged contribution are in the store. Each node's slowest decision is printed,
//! not asserted (the machine is shared): that decisions never wait on the store is a claim
//! of the `redis_down_decide_report` benchmark and of the engine having no I/O at all.
//!
//! Ignored by the README's test command (it takes minutes); `.ci/run` runs one minute of
//! it: `cargo test --workspace -- --ignored --exact chaos_soak --nocapture`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrion_redis::testing::{RedisServer, TcpProxy};
use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::StateStore;

const NAMESPACE: &str = "soak";

struct Node {
    id: String,
    port: u16,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    stderr: Arc<Mutex<String>>,
    starts: u32,
}

impl Node {
    fn spawn(&mut self, fail: Option<&str>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrion"));
        let store = format!("redis://127.0.0.1:{}", self.port);
        cmd.args(["node", "--store", &store, "--node-id", &self.id, "--namespace", NAMESPACE, "--route", "r"]).args([
            "--duration",
            "100000",
            "--rate",
            "100",
            "--pulse-ms",
            "50",
            "--every-ms",
            "200",
        ]);
        if let Some(f) = fail {
            cmd.args(["--fail", f]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("atrion node starts");
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    lines.lock().unwrap().push(v);
                }
            }
        });
        let stderr = self.stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(err).read_to_string(&mut text);
            stderr.lock().unwrap().push_str(&text);
        });
        self.child = Some(child);
        self.starts += 1;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn last(&self) -> Option<serde_json::Value> {
        self.lines.lock().unwrap().last().cloned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// xorshift64: the chaos is seeded, so a failing run can be repeated.
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn eventually(what: &str, secs: u64, mut holds: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !holds() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: .ci/run runs one minute of it"]
async fn chaos_soak() {
    let secs: u64 = std::env::var("ATRION_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("ATRION_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let Some(mut redis) = RedisServer::start() else { return };
    let mut proxies = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let proxy = TcpProxy::start(redis.port).await;
        let mut node = Node {
            id: format!("n{i}"),
            port: proxy.port,
            child: None,
            lines: Arc::default(),
            stderr: Arc::default(),
            starts: 0,
        };
        node.spawn(None);
        proxies.push(proxy);
        nodes.push(node);
    }
    let mut dice = Dice(seed | 1);
    let (mut node_kills, mut redis_kills, mut cuts, mut stalls) = (0, 0, 0, 0);
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    eprintln!("chaos soak: {secs} s, seed {seed}");
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500 + dice.next(2_000))).await;
        let target = dice.next(3) as usize;
        match dice.next(4) {
            0 => {
                nodes[target].kill();
                tokio::time::sleep(Duration::from_millis(200 + dice.next(1_000))).await;
                nodes[target].spawn(None);
                node_kills += 1;
            }
            1 => {
                redis.kill();
                tokio::time::sleep(Duration::from_millis(200 + dice.next(1_500))).await;
                redis.restart();
                redis_kills += 1;
            }
            2 => {
                proxies[target].cut();
                tokio::time::sleep(Duration::from_millis(200 + dice.next(2_000))).await;
                proxies[target].heal();
                cuts += 1;
            }
            _ => {
                proxies[target].stall();
                tokio::time::sleep(Duration::from_millis(200 + dice.next(2_000))).await;
                proxies[target].heal();
                stalls += 1;
            }
        }
    }
    eprintln!("chaos: {node_kills} node kills, {redis_kills} Redis kills, {cuts} cuts, {stalls} stalls");

    // Everything healed and running: every node leaves degraded mode.
    for node in &mut nodes {
        if node.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
            node.spawn(None);
        }
    }
    for node in &nodes {
        eventually(&format!("{} reaches the store again", node.id), 60, || {
            node.last().is_some_and(|v| v["sync"]["degraded"] == false && v["t"].as_f64().unwrap_or(0.0) > 1.0)
        })
        .await;
    }
    // A probe node fails the shared route: every node converges on its scar.
    let probe_proxy = TcpProxy::start(redis.port).await;
    let mut probe = Node {
        id: "probe".into(),
        port: probe_proxy.port,
        child: None,
        lines: Arc::default(),
        stderr: Arc::default(),
        starts: 0,
    };
    probe.spawn(Some("0..1000"));
    for node in &nodes {
        eventually(&format!("{} sees the probe's scar", node.id), 60, || {
            node.last().is_some_and(|v| v["cluster_scar"].as_f64().is_some_and(|s| s > 0.5))
        })
        .await;
    }
    // No heartbeat and no acknowledged write lost.
    let mut cfg = RedisConfig::new(redis.url());
    cfg.namespace = NAMESPACE.into();
    let store = RedisStore::connect(&cfg).await.unwrap();
    for id in ["n0", "n1", "n2", "probe"] {
        let key = format!("{NAMESPACE}/node/{id}");
        assert!(store.get(&key).await.unwrap().is_some(), "the heartbeat of {id}");
    }
    let shares = store.all_shares(&format!("{NAMESPACE}/route/r")).await.unwrap();
    assert!(shares.is_some_and(|s| s.get("probe").is_some()), "the probe's contribution");

    probe.kill();
    for node in &mut nodes {
        node.kill();
    }
    let mut worst = 0;
    for node in nodes.iter().chain([&probe]) {
        let stderr = node.stderr.lock().unwrap().clone();
        assert!(!stderr.contains("panicked"), "{} panicked:\n{stderr}", node.id);
        let lines = node.lines.lock().unwrap();
        let slowest = lines.iter().filter_map(|v| v["decide_us_max"].as_u64()).max().unwrap_or(0);
        worst = worst.max(slowest);
        eprintln!("{}: {} starts, {} lines, slowest decision {slowest} us", node.id, node.starts, lines.len());
    }
    eprintln!("slowest decision of any node: {worst} us (a store command times out after 1 s)");
}
