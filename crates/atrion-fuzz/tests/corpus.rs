//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/`) through its target, on
//! stable: inputs that once found something, or widened coverage, stay tested.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        // A fuzzer running beside the tests may remove an input between listing and reading.
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        run(&data);
        n += 1;
    }
    assert!(n > 0, "the corpus of {target} is empty");
    eprintln!("{target}: {n} inputs replayed");
}

#[test]
fn trace() {
    replay("trace", atrion_fuzz::trace);
}

#[test]
fn config() {
    replay("config", atrion_fuzz::config);
}

#[test]
fn codecs() {
    replay("codecs", atrion_fuzz::codecs);
}

#[test]
fn notices() {
    replay("notices", atrion_fuzz::notices);
}

#[test]
fn store_values() {
    replay("store_values", atrion_fuzz::store_values);
}

#[test]
fn engine() {
    replay("engine", atrion_fuzz::engine);
}

#[test]
fn api() {
    replay("api", atrion_fuzz::api);
}

#[test]
fn policies() {
    replay("policies", atrion_fuzz::policies);
}

#[test]
fn policy_api() {
    replay("policy_api", atrion_fuzz::policy_api);
}

#[test]
fn proxy_path() {
    replay("proxy_path", atrion_fuzz::proxy_path);
}

#[test]
fn tasks() {
    replay("tasks", atrion_fuzz::tasks);
}
