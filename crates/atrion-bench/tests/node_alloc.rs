//! A node's heap use per change notice (issue 30, part 2), counted by a global allocator per
//! thread: the node runs on a current-thread runtime on the test's thread, so that every
//! allocation of its path from a received notification to the merge is counted, and nothing
//! of the other threads'.
//!
//! - The node's own path: notifications handed to its change feed as received (the Redis
//!   record format, read in place), for routes and members it knows: **no allocation**,
//!   whatever the number of notices.
//! - With the transport: the same on a real Redis, where redis-rs reads each pub/sub message
//!   into its own buffers (and the feed wraps it, without copying): a constant per
//!   *message* (a message carries up to 64 records), stated here, none per record.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atrion::{Engine, PhysicsConfig};
use atrion_redis::testing::RedisServer;
use atrion_redis::{RedisConfig, RedisStore};
use atrion_state::shares::{Share, ShareWrite, Shares, push_token};
use atrion_state::{
    Capabilities, CasOutcome, ChangeFeed, CleanupStats, Entry, InMemoryStore, Notice, StateStore, StoreError,
    StoreStats, TokioClock,
};
use atrion_sync::{ClusterKeys, Contribution, StateManager, SyncConfig};
use bytes::Bytes;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the allocator also runs while a thread's locals are being torn down.
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const NAMESPACE: &str = "alloc";
const ROUTES: usize = 200;
const OTHERS: [&str; 2] = ["node-a", "node-b"];
/// Rounds of notices that warm the node's path up before allocations are counted.
const WARM: u64 = 8;
/// Rounds counted after the warm-up: 10,000 notices.
const COUNTED: u64 = 25;

fn route(i: usize) -> String {
    format!("GET /api/items/{i}")
}

fn config() -> SyncConfig {
    let mut cfg = SyncConfig::for_node("node-0");
    cfg.namespace = NAMESPACE.to_owned();
    // Only the feed runs: no pulse, no full sync while counting.
    cfg.pulse = Duration::from_secs(3_600);
    cfg.full_sync = cfg.pulse;
    cfg.max_interval = cfg.pulse;
    cfg.node_ttl = 3 * cfg.pulse;
    cfg
}

/// The other nodes' shares of every route at round `k`: new ranks and values each round.
fn shares(k: u64, wall: u64) -> Vec<ShareWrite> {
    let keys = ClusterKeys::new(NAMESPACE, "writer");
    let mut out = Vec::new();
    for i in 0..ROUTES {
        for (j, member) in OTHERS.iter().enumerate() {
            out.push(ShareWrite {
                key: keys.route(&route(i)).unwrap(),
                share: Share {
                    member: (*member).to_owned(),
                    rank: 1e9 + (2 * k + j as u64) as f64,
                    value: Contribution { scar: 1.0 + j as f64, momentum: 0.0, at_ms: wall + k }.encode(),
                },
            });
        }
    }
    out
}

/// The other nodes' heartbeats, live for the test.
async fn beat(store: &dyn StateStore, wall: u64) {
    for member in OTHERS {
        let mut hb = wall.to_le_bytes().to_vec();
        hb.extend_from_slice(b"test");
        store.put(&ClusterKeys::new(NAMESPACE, member).heartbeat(), hb.into(), None).await.unwrap();
    }
}

/// Notifications in the Redis record format (`set <version> <key> <shares>`), 64 records
/// each, as Redis publishes them: for every route, each other node's share moved to lead.
fn notifications(k: u64, wall: u64) -> Vec<Notice> {
    let keys = ClusterKeys::new(NAMESPACE, "writer");
    let mut records = Vec::new();
    for i in 0..ROUTES {
        for lead in 0..OTHERS.len() {
            let top = (0..OTHERS.len())
                .map(|j| (j + lead) % OTHERS.len())
                .map(|j| Share {
                    member: OTHERS[j].to_owned(),
                    rank: 1e9 + (2 * k) as f64 + if j == lead { 1.0 } else { 0.0 },
                    value: Contribution { scar: 1.0 + j as f64, momentum: 0.0, at_ms: wall + k }.encode(),
                })
                .collect();
            let mut r = Vec::new();
            push_token(&mut r, b"set");
            push_token(&mut r, (k * 10 + lead as u64).to_string().as_bytes());
            push_token(&mut r, keys.route(&route(i)).unwrap().as_bytes());
            push_token(&mut r, &Shares { members: 3, top }.encode());
            records.push(r);
        }
    }
    records
        .chunks(64)
        .map(|c| Notice::Raw { payload: Bytes::from(c.concat()), parse: atrion_redis::parse_notice_record })
        .collect()
}

/// The in-memory store, with a change feed the test fills.
#[derive(Debug)]
struct Fed {
    inner: InMemoryStore,
    feed: Mutex<Option<ChangeFeed>>,
}

#[async_trait]
impl StateStore for Fed {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.inner.put(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_keys(prefix).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        self.inner.compare_and_swap(key, expected, value, ttl).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        self.inner.cleanup().await
    }
    async fn subscribe(&self, _prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        Ok(self.feed.lock().unwrap().take())
    }
    async fn transact(&self, group: atrion_state::Group) -> Result<Vec<Option<u64>>, StoreError> {
        self.inner.transact(group).await
    }
    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        self.inner.put_shares(items).await
    }
    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        self.inner.shares(keys, member).await
    }
    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        self.inner.all_shares(key).await
    }
    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_shares(prefix).await
    }
}

/// Lets the node's task run until it has applied `target` notices in all. (Within one
/// `block_on` for all rounds: each `block_on` allocates its list of deferred wakers anew.)
async fn until_pulled(node: &StateManager<atrion::SilentObserver>, target: u64) {
    while node.stats().pulled < target {
        tokio::task::yield_now().await;
    }
}

#[test]
fn notices_for_known_routes_and_members_allocate_nothing_on_the_nodes_path() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let wall = atrion_state::Clock::wall_ms(&TokioClock::new());
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let store = Arc::new(Fed {
        inner: InMemoryStore::new(),
        feed: Mutex::new(Some(ChangeFeed::from_notices(rx, ClusterKeys::new(NAMESPACE, "x").cluster_prefix()))),
    });
    let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let node = rt.block_on(async {
        beat(store.as_ref(), wall).await;
        store.put_shares(shares(0, wall)).await.unwrap();
        let clock = Arc::new(TokioClock::new());
        StateManager::start(engine.clone(), store.clone(), config(), clock).await.unwrap()
    });
    assert_eq!(node.route_nodes(&route(7)).len(), 2, "the full sync knows every route and member");
    // Rounds of one notice per route and other node; the first ones warm up (the view's
    // buffers; the feed channel's blocks of 32 messages, reused once there are enough).
    let per_round = (ROUTES * OTHERS.len()) as u64;
    let rounds: Vec<Vec<Notice>> = (1..=WARM + COUNTED).map(|k| notifications(k, wall)).collect();
    let mut pulled = node.stats().pulled;
    let mut counted = Vec::new();
    rt.block_on(async {
        for round in rounds {
            let messages = round.len();
            let merges = node.stats().merges;
            let before = allocations();
            for n in round {
                tx.try_send(n).unwrap();
            }
            pulled += per_round;
            until_pulled(&node, pulled).await;
            counted.push((allocations() - before, messages));
            // Every notice moves its route's leader; the two of a route applied in one batch
            // are merged once.
            let merged = node.stats().merges - merges;
            assert!((ROUTES as u64..=per_round).contains(&merged), "{merged} merges for {per_round} notices");
        }
    });
    println!("allocations per round of {per_round} notices (messages): {counted:?}");
    let after: u64 = counted[WARM as usize..].iter().map(|&(n, _)| n).sum();
    assert_eq!(
        after,
        0,
        "allocations on the node's path for {} notices, after warming up: {counted:?}",
        COUNTED * per_round
    );
    assert_eq!(node.stats().decode_errors, 0);
    assert_eq!(node.route_nodes(&route(7))[0].1.at_ms, wall + WARM + COUNTED, "the last notice is the view");
    rt.block_on(node.shutdown());
}

#[test]
fn on_redis_the_transport_allocates_per_message_not_per_record() {
    let Some(server) = RedisServer::start() else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let wall = atrion_state::Clock::wall_ms(&TokioClock::new());
    let url = server.url();
    let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let node = rt.block_on(async {
        let store: Arc<dyn StateStore> = Arc::new(RedisStore::connect(&RedisConfig::new(url.clone())).await.unwrap());
        beat(store.as_ref(), wall).await;
        store.put_shares(shares(0, wall)).await.unwrap();
        StateManager::start(engine.clone(), store, config(), Arc::new(TokioClock::new())).await.unwrap()
    });
    assert_eq!(node.route_nodes(&route(7)).len(), 2);
    // Another node writes on its own thread and connection; Redis publishes one message per
    // 64 shares (its script's chunk), each of which moves a leader: one record per share.
    let per_round = (ROUTES * OTHERS.len()) as u64;
    let messages = per_round.div_ceil(64);
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = rt.block_on(RedisStore::connect(&RedisConfig::new(url))).unwrap();
        (1..=6).map(|k| rt.block_on(store.put_shares(shares(k, wall))).map(|_| k)).collect::<Vec<_>>()
    });
    let mut pulled = node.stats().pulled;
    let mut counted = Vec::new();
    rt.block_on(async {
        for _ in 1..=6 {
            let before = allocations();
            pulled += per_round;
            until_pulled(&node, pulled).await;
            counted.push(allocations() - before);
        }
    });
    assert!(writer.join().unwrap().iter().all(Result::is_ok));
    // Rounds end where the count of notices applied says, which may fall inside a message:
    // the five after the first are summed.
    let (total, records, msgs) = (counted[1..].iter().sum::<u64>(), 5 * per_round, 5 * messages);
    println!(
        "on Redis, allocations per round of {per_round} notices in {messages} messages (transport and node): \
         {counted:?}; after the first round {total} for {records} records in {msgs} messages: {:.1} per message, \
         {:.2} per record",
        total as f64 / msgs as f64,
        total as f64 / records as f64
    );
    assert!(total < records / 4, "fewer than one allocation per four records: {total} for {records}: {counted:?}");
    rt.block_on(node.shutdown());
}
