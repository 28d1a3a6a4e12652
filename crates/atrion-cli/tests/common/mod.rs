//! Running `atrion serve` as a process in tests: a free port, the start (waiting for the line
//! that says where it listens), a clean stop, and a kill on drop so that a failing assertion
//! leaves nothing behind.

#![allow(dead_code)] // each test crate uses a part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `atrion serve`; killed when dropped.
pub struct Serve {
    pub child: Option<Child>,
    /// `http://host:port`
    pub url: String,
    /// The line it printed on start.
    pub line: String,
    /// What it wrote on stderr (its log), line by line.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Serve {
    /// Starts `atrion serve ARGS` with `env` (the caller's own `ATRION_*` variables removed,
    /// so that only the given ones count) and waits for its listening line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        Serve::start_in(None, args, env)
    }

    /// As [`Serve::start`], in the folder `dir` (where the default store, `./atrion-data`,
    /// then lives) when given.
    pub fn start_in(dir: Option<&std::path::Path>, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrion"));
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ATRION_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("atrion serve starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let Some(url) = line.split("listening on ").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_owned)
        else {
            let _ = child.kill();
            let err =
                child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
            panic!("no listening line: {line:?} {err}")
        };
        // Keep reading both pipes so the process never blocks on a full one.
        std::thread::spawn(move || for _ in out.lines() {});
        let err = BufReader::new(child.stderr.take().unwrap());
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(l);
            }
        });
        Serve { child: Some(child), url, line, logs }
    }

    /// SIGTERM, and a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = child.wait().unwrap();
        assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    }

    /// SIGKILL: the process dies without a word.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let _ = child.wait();
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url)).await.unwrap().json().await.unwrap()
    }

    /// `POST path` with a JSON body; the answer must be a success.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = reqwest::Client::new().post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path} {body}: {}", r.status());
        r.json().await.unwrap()
    }
}

impl Serve {
    /// Whether a line of its log contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// A request with the admin bearer `token`: (status, JSON body).
    pub async fn admin(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = reqwest::Client::new().request(method, format!("{}{path}", self.url)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Polls `probe` until it returns `Some`, for at most a minute (the machine is shared: the
/// deadline is generous, and only the order of events is asserted).
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    for _ in 0..600 {
        if let Some(t) = probe().await {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within a minute");
}

/// Whether the program a test needs is installed (it answers `--version`). A missing one
/// fails the test, naming its Debian `package`, unless `ATRION_SKIP_SERVICES=1` is set by
/// hand: then the test is told to skip (`false`), and why is printed. No test skips
/// silently.
pub fn installed_or_skip(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("ATRION_SKIP_SERVICES").is_ok_and(|v| v == "1") {
        eprintln!("skipped: `{program}` is not installed and ATRION_SKIP_SERVICES=1");
        return false;
    }
    panic!(
        "`{program}` is not installed: install it (Debian package {package}; scripts/test does) \
         or set ATRION_SKIP_SERVICES=1 to skip"
    );
}
