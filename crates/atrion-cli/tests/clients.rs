//! The example clients (`examples/clients/python`, standard library only, and
//! `examples/clients/node`, built-in fetch) guard a call against a live sidecar: each decision
//! and report lands on the route. Skipped, with the reason printed, only when `python3` or
//! `node` is not installed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Serve, free_port};

fn have(binary: &str) -> bool {
    let found = Command::new(binary).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped the {binary} client: `{binary}` is not installed");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_node_clients_guard_a_call() {
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Serve::start(&["--store", "memory", "--listen", &listen], &[]);
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clients");
    for (binary, script, route) in
        [("python3", "python/guard.py", "GET /from-python"), ("node", "node/guard.mjs", "GET /from-node")]
    {
        if !have(binary) {
            continue;
        }
        for _ in 0..3 {
            let out =
                Command::new(binary).arg(clients.join(script)).arg(route).env("ATRION_URL", &s.url).output().unwrap();
            assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
            let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(said, serde_json::json!(["done", "called"]), "{script}");
        }
        let view = s.get(&format!("/v1/routes/{}", route.replace(' ', "%20").replace('/', "%2F"))).await;
        assert_eq!(view["decisions"]["admitted"], 3, "{script}: {view}");
        assert_eq!(view["updates"], 3, "{script}: each call reported by ticket: {view}");
    }
    s.stop();
}
