//! The example clients (`examples/clients/python`, standard library only, and
//! `examples/clients/node`, built-in fetch) guard a call against a live sidecar: each decision
//! and report lands on the route. A missing `python3` or `node` fails the test, unless
//! `ATRION_SKIP_SERVICES=1` is set by hand: then that client is skipped, with the reason
//! printed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Serve, free_port, installed_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_node_clients_guard_a_call() {
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Serve::start(&["--store", "memory", "--listen", &listen], &[]);
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clients");
    for (binary, package, script, route) in [
        ("python3", "python3", "python/guard.py", "GET /from-python"),
        ("node", "nodejs", "node/guard.mjs", "GET /from-node"),
    ] {
        if !installed_or_skip(binary, package) {
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
