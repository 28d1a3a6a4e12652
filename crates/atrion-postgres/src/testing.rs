//! A private PostgreSQL for tests and benches (feature `testing`): `initdb` into a temporary
//! folder, `pg_ctl` on a free loopback port, stopped (or crashed, or restarted) at will.
//!
//! PostgreSQL refuses to run as root; when the tests run as root, the server runs as the
//! `postgres` system user (through `runuser`), which owns the temporary folder.
#![allow(clippy::unwrap_used)] // test support: a failure must stop loudly

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL, stopped when dropped.
pub struct PgServer {
    /// The loopback port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // Debian keeps the server binaries off PATH.
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        dirs.extend(entries.flatten().map(|e| e.path().join("bin")));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs `program args` as the `postgres` user when we are root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PgServer {
    /// Starts a server, or returns `None` (printing why) when PostgreSQL is missing and
    /// `ATRION_SKIP_SERVICES=1`. Without that variable a missing server fails the test.
    pub fn start() -> Option<PgServer> {
        if find("initdb").is_none() || find("pg_ctl").is_none() {
            if std::env::var("ATRION_SKIP_SERVICES").is_ok_and(|v| v == "1") {
                eprintln!("skipped: PostgreSQL (initdb, pg_ctl) not found and ATRION_SKIP_SERVICES=1");
                return None;
            }
            panic!("initdb/pg_ctl not found: install postgresql (scripts/test does) or set ATRION_SKIP_SERVICES=1");
        }
        let dir = tempfile::Builder::new().prefix("atrion-pg-").tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status().unwrap();
            assert!(ok.success(), "chown the data folder to postgres");
        }
        let out = command(&find("initdb").unwrap())
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = PgServer { port, dir, running: false };
        server.launch();
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = command(&find("pg_ctl").unwrap())
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not listen on {} within 60 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill(&mut self) {
        if self.running {
            let _ = command(&find("pg_ctl").unwrap())
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }

    /// Starts it again on the same port, with its data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every row of every table of the PostgreSQL database at `url` outside its catalogs, as
/// text (bytea escaped: printable bytes stay as they are), each after its table's name: what
/// a test greps for bytes that must not be stored, such as a route's name under encryption
/// at rest.
pub async fn stored_bytes(url: &str) -> Vec<u8> {
    use sqlx::Row as _;
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(!tables.is_empty(), "no table in {url}");
    sqlx::query("SET bytea_output = 'escape'").execute(&mut *conn).await.unwrap();
    let mut out = Vec::new();
    for t in tables {
        out.extend_from_slice(t.as_bytes());
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT t::text AS row FROM {t} t")))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        for r in rows {
            out.extend_from_slice(r.get::<String, _>("row").as_bytes());
        }
    }
    out
}
