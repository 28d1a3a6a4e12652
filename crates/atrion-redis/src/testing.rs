//! A private `redis-server` for tests and benches (feature `testing`): on a free loopback
//! port, in a temporary folder, stopped (or killed, or restarted) at will; and a private
//! Redis Cluster of six of them.
#![allow(clippy::unwrap_used)] // test support: a failure must stop loudly

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    /// The loopback port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    password: Option<String>,
    tls: bool,
    cluster: bool,
    persistent: bool,
}

fn binary() -> Option<PathBuf> {
    on_path("redis-server")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

/// Whether tests that need Redis may be skipped (only when asked for by hand).
pub fn may_skip() -> bool {
    std::env::var("ATRION_SKIP_SERVICES").is_ok_and(|v| v == "1")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server, or returns `None` (printing why) when redis-server is missing and
    /// `ATRION_SKIP_SERVICES=1`. Without that variable a missing server fails the test.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_on(free_port(), false)
    }

    fn start_on(port: u16, cluster: bool) -> Option<RedisServer> {
        if binary().is_none() {
            if may_skip() {
                eprintln!("skipped: redis-server not found and ATRION_SKIP_SERVICES=1");
                return None;
            }
            panic!("redis-server not found on PATH: install it (scripts/test does) or set ATRION_SKIP_SERVICES=1");
        }
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            password: None,
            tls: false,
            cluster,
            persistent: false,
        };
        server.launch();
        Some(server)
    }

    /// As [`RedisServer::start`], keeping its data across a kill: an append-only file
    /// written and fsynced at every write (`--appendonly yes --appendfsync always`), read
    /// back at each restart.
    pub fn start_persistent() -> Option<RedisServer> {
        let mut server = RedisServer::start()?;
        server.persistent = true;
        server.restart();
        Some(server)
    }

    /// As [`RedisServer::start`], with AUTH required (`requirepass`).
    pub fn start_with_password(password: &str) -> Option<RedisServer> {
        let mut server = RedisServer::start()?;
        server.password = Some(password.to_owned());
        server.restart();
        Some(server)
    }

    /// As [`RedisServer::start`], speaking only TLS, with a certificate for `127.0.0.1`
    /// signed by a fresh private CA (see [`RedisServer::ca_cert`]). Needs `openssl`.
    pub fn start_tls() -> Option<RedisServer> {
        let mut server = RedisServer::start()?;
        let dir = server.dir.path().to_owned();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=atrion test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        server.tls = true;
        server.restart();
        Some(server)
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `redis://127.0.0.1:{port}` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        if self.tls {
            return format!("rediss://127.0.0.1:{}", self.port);
        }
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new(binary().unwrap())
            .args(if self.tls {
                let d = self.dir.path();
                vec![
                    "--port".to_owned(),
                    "0".to_owned(),
                    "--tls-port".to_owned(),
                    self.port.to_string(),
                    "--tls-cert-file".to_owned(),
                    d.join("server.crt").display().to_string(),
                    "--tls-key-file".to_owned(),
                    d.join("server.key").display().to_string(),
                    "--tls-ca-cert-file".to_owned(),
                    d.join("ca.crt").display().to_string(),
                    "--tls-auth-clients".to_owned(),
                    "no".to_owned(),
                ]
            } else {
                vec!["--port".to_owned(), self.port.to_string()]
            })
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .args(self.password.iter().flat_map(|p| ["--requirepass".to_owned(), p.clone()]))
            // A cluster node keeps its identity in `nodes.conf` in its folder, so that it
            // rejoins as itself after a restart; a dead primary is failed over after 2 s, by
            // a replica whatever the age of its data (the tests' data is disposable).
            .args(if self.cluster {
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-replica-validity-factor",
                    "0",
                ][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {} within 60 s", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL), losing everything it held (but what a persistent one,
    /// [`RedisServer::start_persistent`], wrote to its append-only file).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Redis Cluster: six `redis-server`s on free loopback ports (three primaries,
/// three replicas), created with `redis-cli --cluster create`, each killed or restarted at
/// will. Dropped, it stops them all.
pub struct RedisCluster {
    /// The nodes, in the order they were given to `--cluster create` (the first three are
    /// the primaries it chose at creation).
    pub nodes: Vec<RedisServer>,
}

/// A free loopback port whose cluster bus port (`port + 10000`) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= u16::MAX - 10_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// Starts and creates the cluster and waits until every node says `cluster_state:ok`;
    /// `None` (printing why) only when a binary is missing and `ATRION_SKIP_SERVICES=1`.
    pub fn start() -> Option<RedisCluster> {
        if on_path("redis-cli").is_none() {
            if may_skip() {
                eprintln!("skipped: redis-cli not found and ATRION_SKIP_SERVICES=1");
                return None;
            }
            panic!(
                "redis-cli not found on PATH: install redis-tools (scripts/test does) or set ATRION_SKIP_SERVICES=1"
            );
        }
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(RedisServer::start_on(free_cluster_port(), true)?);
        }
        let cluster = RedisCluster { nodes };
        let addrs = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port));
        let out = Command::new(on_path("redis-cli").unwrap())
            .args(["--cluster", "create"])
            .args(addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli --cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        cluster.wait_until_ok(Duration::from_secs(30));
        // Every replica in sync with its primary, so that a failover has data to promote.
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..cluster.nodes.len() {
            let syncing = || {
                let replication = cluster.cli(i, &["info", "replication"]);
                replication.contains("role:slave") && !replication.contains("master_link_status:up")
            };
            while syncing() {
                assert!(Instant::now() < deadline, "replica {i} did not sync with its primary within 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(cluster)
    }

    /// `redis://127.0.0.1:{port}` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Runs `redis-cli` against node `i` (`-c`: following the cluster's redirections) and
    /// returns what it printed.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new(on_path("redis-cli").unwrap())
            .args(["-c", "-p", &self.nodes[i].port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every running node reports `cluster_state:ok` (after a creation, a
    /// failover or a restart), at most `limit`.
    pub fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let running = self.running();
        while !running.iter().all(|&i| self.cli(i, &["cluster", "info"]).contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the node that is primary for the slot of `key` now.
    pub fn primary_of(&self, key: &str) -> usize {
        let running = self.running();
        let any = *running.first().expect("a node runs");
        let slot =
            self.cli(any, &["cluster", "keyslot", key]).trim().parse().expect("CLUSTER KEYSLOT answers a number");
        running.into_iter().find(|&i| self.owns_slot(i, slot)).expect("a running primary serves the slot")
    }

    /// The indices of the nodes that run now.
    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].child.is_some()).collect()
    }

    /// Whether node `i` is a primary serving `slot` (from its own `CLUSTER NODES` line,
    /// whose fields from the ninth on are its slot ranges).
    fn owns_slot(&self, i: usize, slot: u16) -> bool {
        let nodes = self.cli(i, &["cluster", "nodes"]);
        nodes.lines().filter(|l| l.contains("myself") && l.contains("master")).any(|l| {
            l.split_whitespace().skip(8).any(|range| {
                let mut ends = range.split('-').filter_map(|p| p.parse::<u16>().ok());
                match (ends.next(), ends.next()) {
                    (Some(a), Some(b)) => (a..=b).contains(&slot),
                    (Some(a), None) => a == slot,
                    _ => false,
                }
            })
        })
    }
}

/// A TCP proxy on loopback between a client and a server, that can cut the link (drop
/// every connection and refuse new ones) or stall it (accept, but pass no bytes), and heal:
/// a network partition between one node and its store.
pub struct TcpProxy {
    /// The port clients connect to.
    pub port: u16,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

const PASS: u8 = 0;
const DROP: u8 = 1;
const STALL: u8 = 2;

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:{port}` to `127.0.0.1:{target}`.
    pub async fn start(target: u16) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(PASS));
        let tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let (m, t) = (mode.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                if m.load(Ordering::Relaxed) == DROP {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let mut list = t.lock().unwrap();
                list.push(tokio::spawn(pipe(ri, wo, m.clone())));
                list.push(tokio::spawn(pipe(ro, wi, m.clone())));
            }
        });
        TcpProxy { port, mode, tasks, accept }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.store(DROP, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Keeps connections open but passes no bytes.
    pub fn stall(&self) {
        self.mode.store(STALL, std::sync::atomic::Ordering::Relaxed);
    }

    /// Passes bytes again (stalled connections resume; cut ones stay cut).
    pub fn heal(&self) {
        self.mode.store(PASS, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while mode.load(Ordering::Relaxed) == STALL {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if mode.load(Ordering::Relaxed) == DROP || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Every key and value the Redis at `url` holds, concatenated (each type read its own way;
/// a stream's entries as their debug text): what a test greps for bytes that must not be
/// stored, such as a route's name under encryption at rest.
pub async fn stored_bytes(url: &str) -> Vec<u8> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
    let mut out = Vec::new();
    for k in keys {
        out.extend_from_slice(&k);
        let kind: String = redis::cmd("TYPE").arg(&k).query_async(&mut c).await.unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap()],
            "hash" => redis::cmd("HGETALL").arg(&k).query_async(&mut c).await.unwrap(),
            "zset" => redis::cmd("ZRANGE").arg(&k).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut c).await.unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&k).query_async(&mut c).await.unwrap(),
            "list" => redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query_async(&mut c).await.unwrap(),
            "stream" => {
                let v: redis::Value = redis::cmd("XRANGE").arg(&k).arg("-").arg("+").query_async(&mut c).await.unwrap();
                vec![format!("{v:?}").into_bytes()]
            }
            other => panic!("a {other} under {}", String::from_utf8_lossy(&k)),
        };
        for v in values {
            out.extend_from_slice(&v);
        }
    }
    out
}
