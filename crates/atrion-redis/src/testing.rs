//! A private `redis-server` for tests and benches (feature `testing`): on a free loopback
//! port, in a temporary folder, stopped (or killed, or restarted) at will.
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
}

fn binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join("redis-server")).find(|p| p.is_file())
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
        if binary().is_none() {
            if may_skip() {
                eprintln!("skipped: redis-server not found and ATRION_SKIP_SERVICES=1");
                return None;
            }
            panic!("redis-server not found on PATH: install it (.ci/run does) or set ATRION_SKIP_SERVICES=1");
        }
        let mut server =
            RedisServer { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, password: None };
        server.launch();
        Some(server)
    }

    /// As [`RedisServer::start`], with AUTH required (`requirepass`).
    pub fn start_with_password(password: &str) -> Option<RedisServer> {
        let mut server = RedisServer::start()?;
        server.password = Some(password.to_owned());
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new(binary().unwrap())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(self.password.iter().flat_map(|p| ["--requirepass".to_owned(), p.clone()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL), losing everything it held.
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
