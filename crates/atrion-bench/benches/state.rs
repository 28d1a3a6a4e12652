//! The state layer, in one run:
//!
//! - `decide` on a bare engine against the same engine with a `StateManager` attached
//!   (pulsing every 10 ms, merging another node's contribution for the route);
//! - one pulse pushing 10,000 dirty routes to the file store (and to the memory store);
//! - get and set on the memory and file stores, beside a plain `HashMap` behind an
//!   `RwLock` as the floor.
//!
//! Run: `cargo bench -p atrion-bench --bench state`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use atrion::{Engine, PhysicsConfig, Priority, Telemetry, Timestamp};
use atrion_file::{FileConfig, FileStore};
use atrion_state::{Clock, InMemoryStore, StateStore, TokioClock};
use atrion_sync::{EngineClock, StateManager, SyncConfig};
use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

mod common;

use common::{bench_pulse, runtime};

/// The defaults of a bench node, in the namespace `atrion-bench`.
fn sync(node: &str, pulse: Duration) -> SyncConfig {
    common::sync("atrion-bench", node, pulse)
}

fn decide_with_manager(c: &mut Criterion) {
    let rt = runtime();
    let ok = Telemetry::new(20.0, 0.0, 0.3).unwrap();
    let clock = Arc::new(TokioClock::new());
    let bare = Engine::new(PhysicsConfig::default()).unwrap();
    let synced = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let (_manager, _other) = rt.block_on(async {
        let dyn_clock = clock.clone() as Arc<dyn Clock>;
        let m =
            StateManager::start(synced.clone(), store.clone(), sync("a", Duration::from_millis(10)), dyn_clock.clone())
                .await
                .unwrap();
        // Another node that keeps reporting trouble on the same route.
        let other = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        for k in 0..200u64 {
            other.report("GET /checkout", Telemetry::new(900.0, 1.0, 0.9).unwrap(), Timestamp::from_millis(k * 10));
        }
        let o =
            StateManager::start(other, store.clone(), sync("b", Duration::from_millis(10)), dyn_clock).await.unwrap();
        (m, o)
    });
    for _ in 0..1_000u64 {
        bare.report("GET /checkout", ok, clock.now());
        synced.report("GET /checkout", ok, clock.now());
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(synced.cluster_scar("GET /checkout", clock.now()).is_some(), "the merge reached the engine");

    let mut g = c.benchmark_group("decide_with_state_manager");
    g.throughput(Throughput::Elements(1));
    // Time as production sees it: the shared clock, read once every 256 decisions so that
    // reading it is not what is measured.
    let mut n = 0u32;
    let mut now = clock.now();
    let mut tick = |clock: &TokioClock| {
        n = n.wrapping_add(1);
        if n % 256 == 0 {
            now = clock.now();
        }
        now
    };
    g.bench_function("bare_engine", |b| {
        b.iter(|| black_box(bare.decide(black_box("GET /checkout"), tick(&clock), Priority::Critical)))
    });
    // The same blending work without a manager: the cluster value is set by hand, refreshed
    // every 256 decisions as a pulse would.
    let blended = Engine::new(PhysicsConfig::default()).unwrap();
    for _ in 0..1_000u64 {
        blended.report("GET /checkout", ok, clock.now());
    }
    let scar = synced.cluster_scar("GET /checkout", clock.now()).unwrap();
    let mut m = 0u32;
    g.bench_function("bare_engine_with_cluster_value", |b| {
        b.iter(|| {
            m = m.wrapping_add(1);
            if m % 256 == 0 {
                blended.set_cluster("GET /checkout", Some(scar), clock.now()).unwrap();
            }
            black_box(blended.decide(black_box("GET /checkout"), tick(&clock), Priority::Critical))
        })
    });
    g.bench_function("with_manager", |b| {
        b.iter(|| black_box(synced.decide(black_box("GET /checkout"), tick(&clock), Priority::Critical)))
    });
    g.finish();
}

fn pulse_10k(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("pulse_10k_dirty_routes");
    g.throughput(Throughput::Elements(common::PULSE_ROUTES));
    g.sample_size(10);
    bench_pulse(&mut g, "memory", &rt, Arc::new(InMemoryStore::new()));
    let file = rt.block_on(FileStore::open(&FileConfig::new(dir.path().join("pulse.redb")))).unwrap();
    bench_pulse(&mut g, "file", &rt, Arc::new(file));
    g.finish();
}

/// The pulse of 10,000 dirty routes through the encrypting wrapper (`atrion-crypt`) over
/// the file store: not encrypted, sealed without compression, sealed with zstd above the
/// default threshold (and above 0: everything); prints the bytes each leaves in the store.
fn pulse_10k_crypt(c: &mut Criterion) {
    use atrion_crypt::{CryptOptions, EncryptedStore, Keyring};
    let rt = runtime();
    let mut g = c.benchmark_group("pulse_10k_crypt");
    g.throughput(Throughput::Elements(common::PULSE_ROUTES));
    g.sample_size(10);
    let ring = Arc::new(Keyring::parse("bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "bench").unwrap());
    let variants: [(&str, Option<CryptOptions>); 4] = [
        ("file_plain", None),
        ("file_sealed", Some(CryptOptions { compress_above: None, ..CryptOptions::default() })),
        ("file_sealed_zstd_default", Some(CryptOptions::default())),
        ("file_sealed_zstd_all", Some(CryptOptions { compress_above: Some(0), ..CryptOptions::default() })),
    ];
    for (name, options) in variants {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.redb");
        let file: Arc<dyn StateStore> = Arc::new(rt.block_on(FileStore::open(&FileConfig::new(&path))).unwrap());
        let store: Arc<dyn StateStore> = match options {
            None => file.clone(),
            Some(o) => Arc::new(rt.block_on(EncryptedStore::open(file.clone(), ring.clone(), o)).unwrap()),
        };
        bench_pulse(&mut g, name, &rt, store);
        let stats = rt.block_on(file.stats()).unwrap();
        let on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("{name}: {} keys, {} value bytes in the store, file {on_disk} bytes", stats.keys, stats.value_bytes);
    }
    g.finish();
}

fn store_ops(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let value = Bytes::from(vec![7u8; 64]);
    let keys: Vec<String> = (0..1_000).map(|i| format!("atrion/route/r{i}/node/a")).collect();
    let memory = InMemoryStore::new();
    let file = rt.block_on(FileStore::open(&FileConfig::new(dir.path().join("ops.redb")))).unwrap();
    let floor: RwLock<HashMap<String, Bytes>> = RwLock::new(HashMap::new());
    rt.block_on(async {
        for k in &keys {
            memory.set(k, value.clone()).await.unwrap();
            file.set(k, value.clone()).await.unwrap();
        }
    });
    for k in &keys {
        floor.write().unwrap().insert(k.clone(), value.clone());
    }
    let mut g = c.benchmark_group("store_ops");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("hashmap_rwlock/get", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(floor.read().unwrap().get(&keys[i]).cloned())
        })
    });
    g.bench_function("hashmap_rwlock/set", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            floor.write().unwrap().insert(keys[i].clone(), value.clone())
        })
    });
    g.bench_function("memory/get", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let k = &keys[i];
            let memory = &memory;
            async move { black_box(memory.get(k).await.unwrap()) }
        })
    });
    g.bench_function("memory/set", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (k, v, memory) = (&keys[i], value.clone(), &memory);
            async move { black_box(memory.set(k, v).await.unwrap()) }
        })
    });
    g.bench_function("file/get", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % keys.len();
            let (k, file) = (&keys[i], &file);
            async move { black_box(file.get(k).await.unwrap()) }
        })
    });
    g.sample_size(20);
    g.bench_function("file/set", |b| {
        b.to_async(&rt).iter_batched(
            || {
                i = (i + 1) % keys.len();
                keys[i].clone()
            },
            |k| {
                let (v, file) = (value.clone(), &file);
                async move { black_box(file.set(&k, v).await.unwrap()) }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = decide_with_manager, pulse_10k, pulse_10k_crypt, store_ops }
criterion_main!(benches);
