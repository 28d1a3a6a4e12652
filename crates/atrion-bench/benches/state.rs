//! The state layer, in one run:
//!
//! - `decide` on a bare engine against the same engine with a `StateManager` attached
//!   (pulsing every 10 ms, merging another node's contribution for the route);
//! - one pulse pushing 10,000 dirty routes to the file store (and to the memory store);
//!   and through the encrypting wrapper over the file store, Redis and PostgreSQL
//!   (`pulse_10k_crypt`: plain, sealed, sealed and compressed);
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

/// How a pulse bench seals: not at all, sealed without compression, sealed with zstd
/// above the default threshold, sealed with zstd on everything.
fn crypt_variants() -> [(&'static str, Option<atrion_crypt::CryptOptions>); 4] {
    use atrion_crypt::CryptOptions;
    [
        ("plain", None),
        ("sealed", Some(CryptOptions { compress_above: None, ..CryptOptions::default() })),
        ("sealed_zstd_default", Some(CryptOptions::default())),
        ("sealed_zstd_all", Some(CryptOptions { compress_above: Some(0), ..CryptOptions::default() })),
    ]
}

/// `inner` as the bench writes to it: itself, or wrapped by the encrypting store.
fn crypt_store(
    rt: &tokio::runtime::Runtime,
    inner: &Arc<dyn StateStore>,
    options: Option<atrion_crypt::CryptOptions>,
) -> Arc<dyn StateStore> {
    use atrion_crypt::{EncryptedStore, Keyring};
    let ring = Arc::new(Keyring::parse("bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "bench").unwrap());
    match options {
        None => inner.clone(),
        Some(o) => Arc::new(rt.block_on(EncryptedStore::open(inner.clone(), ring, o)).unwrap()),
    }
}

/// The pulse of 10,000 dirty routes through the encrypting wrapper (`atrion-crypt`) over
/// the file store, a real `redis-server` and a real PostgreSQL (each started by the bench on
/// a free loopback port, a fresh one per variant: the wrapper refuses a store holding plain
/// data): not encrypted, sealed without compression, sealed with zstd above the default
/// threshold (and above 0: everything); prints the bytes each leaves in the store.
fn pulse_10k_crypt(c: &mut Criterion) {
    use atrion_postgres::testing::PgServer;
    use atrion_postgres::{PostgresConfig, PostgresStore};
    use atrion_redis::testing::RedisServer;
    use atrion_redis::{RedisConfig, RedisStore};
    let rt = runtime();
    let mut g = c.benchmark_group("pulse_10k_crypt");
    g.throughput(Throughput::Elements(common::PULSE_ROUTES));
    g.sample_size(10);
    for (variant, options) in crypt_variants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.redb");
        let file: Arc<dyn StateStore> = Arc::new(rt.block_on(FileStore::open(&FileConfig::new(&path))).unwrap());
        let name = format!("file_{variant}");
        bench_pulse(&mut g, &name, &rt, crypt_store(&rt, &file, options));
        let stats = rt.block_on(file.stats()).unwrap();
        let on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("{name}: {} keys, {} value bytes in the store, file {on_disk} bytes", stats.keys, stats.value_bytes);
    }
    for (variant, options) in crypt_variants() {
        let Some(server) = RedisServer::start() else { break };
        let redis: Arc<dyn StateStore> =
            Arc::new(rt.block_on(RedisStore::connect(&RedisConfig::new(server.url()))).unwrap());
        let name = format!("redis_{variant}");
        bench_pulse(&mut g, &name, &rt, crypt_store(&rt, &redis, options));
        let used = rt.block_on(async {
            let client = redis::Client::open(server.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap();
            info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap_or("?").trim().to_owned()
        });
        eprintln!("{name}: redis used_memory {used} bytes");
    }
    for (variant, options) in crypt_variants() {
        let Some(server) = PgServer::start() else { break };
        let pg: Arc<dyn StateStore> =
            Arc::new(rt.block_on(PostgresStore::connect(&PostgresConfig::new(server.url()))).unwrap());
        let name = format!("postgres_{variant}");
        bench_pulse(&mut g, &name, &rt, crypt_store(&rt, &pg, options));
        let size: i64 = rt.block_on(async {
            let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
            sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&pool).await.unwrap()
        });
        eprintln!("{name}: database {size} bytes");
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
