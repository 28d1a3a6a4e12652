//! Several nodes in one process sharing one store: convergence, no echo, warm start,
//! dropping silent nodes, and a store that fails. Time is tokio's, paused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use atrion_core::{Engine, PhysicsConfig, Priority, Telemetry, Timestamp};
use atrion_state::{
    Capabilities, CasOutcome, ChangeFeed, CleanupStats, Clock, Entry, ErrorKind, InMemoryStore, Op, StateStore,
    StoreError, StoreStats, TokioClock,
};
use atrion_sync::{EngineClock, NodeStatus, StateManager, SyncConfig};
use bytes::Bytes;

const PULSE: Duration = Duration::from_millis(100);

struct Node {
    engine: Arc<Engine>,
    manager: StateManager<atrion_core::SilentObserver>,
    clock: Arc<TokioClock>,
}

impl Node {
    async fn start(id: &str, store: Arc<dyn StateStore>, clock: Arc<TokioClock>) -> Node {
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let mut cfg = SyncConfig::for_node(id);
        cfg.pulse = PULSE;
        let manager = StateManager::start(engine.clone(), store, cfg, clock.clone() as Arc<dyn Clock>).await.unwrap();
        Node { engine, manager, clock }
    }

    /// Requests on `route` for `secs` at 100/s, failing or not.
    async fn traffic(&self, route: &str, secs: f64, failing: bool) {
        for _ in 0..(secs * 100.0) as u64 {
            let now = self.clock.now();
            if self.engine.decide(route, now, Priority::Critical).is_admitted() {
                let t = if failing { Telemetry::new(1_000.0, 1.0, 0.9) } else { Telemetry::new(20.0, 0.0, 0.3) };
                self.engine.report(route, t.unwrap(), now);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn resistance(&self, route: &str) -> f64 {
        self.engine.decide(route, self.clock.now(), Priority::Critical).resistance
    }
}

#[tokio::test(start_paused = true)]
async fn a_route_scarred_on_one_node_raises_resistance_on_the_others_within_two_pulses() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let clock = Arc::new(TokioClock::new());
    let nodes = [
        Node::start("a", store.clone(), clock.clone()).await,
        Node::start("b", store.clone(), clock.clone()).await,
        Node::start("c", store.clone(), clock.clone()).await,
    ];
    for n in &nodes {
        n.traffic("pay", 2.0, false).await;
    }
    assert_eq!(nodes[1].resistance("pay"), 10.0);
    nodes[0].traffic("pay", 1.0, true).await;
    let hurt = nodes[0].engine.snapshot("pay").unwrap().scar;
    assert!(hurt > 5.0, "{hurt}");
    tokio::time::sleep(2 * PULSE).await;
    let gamma = nodes[0].engine.config().gamma;
    for other in &nodes[1..] {
        let r = other.resistance("pay");
        assert!(r > 10.0 + 0.5 * gamma * hurt, "resistance {r} after two pulses (A's scar {hurt})");
    }
    // A route the other nodes never served is known to them too.
    nodes[0].traffic("refund", 1.0, true).await;
    tokio::time::sleep(2 * PULSE).await;
    assert!(nodes[2].resistance("refund") > 10.0);
    assert!(nodes[1].manager.stats().pulled > 0);
    for n in nodes {
        n.manager.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn no_echo_every_node_heals_at_the_single_node_rate() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    a.traffic("db", 2.0, false).await;
    b.traffic("db", 2.0, false).await;
    a.traffic("db", 1.0, true).await;
    // A recovers (open, half-open, closed) while B serves healthy traffic throughout.
    for _ in 0..8 {
        a.traffic("db", 0.5, false).await;
        b.traffic("db", 0.5, false).await;
    }
    // From here both only heal. A single node's scar shrinks by e^(-lambda t); so must A's
    // own scar and the cluster scar B sees. An echo (B publishing the merged value back)
    // would keep scar alive longer than that.
    let lambda = a.engine.config().scar_decay;
    let measure = |a: &Node, b: &Node| {
        let now = clock.now();
        (a.engine.snapshot("db").unwrap().scar, b.engine.cluster_scar("db", now).unwrap_or(0.0))
    };
    let (a0, b0) = measure(&a, &b);
    assert!(a0 > 1.0 && b0 > 1.0, "still healing: {a0} {b0}");
    for _ in 0..5 {
        a.traffic("db", 0.5, false).await;
        b.traffic("db", 0.5, false).await;
    }
    let (a1, b1) = measure(&a, &b);
    let single = (-lambda * 5.0).exp();
    assert!((a1 / a0 / single - 1.0).abs() < 0.05, "A heals at {} of the single-node rate", a1 / a0 / single);
    assert!((b1 / b0 / single - 1.0).abs() < 0.05, "B heals at {} of the single-node rate", b1 / b0 / single);
    // A's own cluster view is B's local scar, which never rose: nothing echoed back.
    assert!(a.engine.cluster_scar("db", clock.now()).unwrap_or(0.0) < 1e-9);
    // B's scar stayed within the deadband: it never published anything for db.
    let shares = store.all_shares("atrion/route/db").await.unwrap().expect("a's share");
    let own = shares.get("b").map(|s| atrion_sync::Contribution::decode(&s.value).unwrap().scar);
    assert!(own.is_none_or(|scar| scar <= SyncConfig::default().deadband), "{own:?}");
    a.manager.shutdown().await;
    b.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_warm_starts_and_a_stopped_node_drops_out() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    a.traffic("search", 1.0, false).await;
    a.traffic("search", 1.0, true).await;
    tokio::time::sleep(2 * PULSE).await;
    assert!(b.resistance("search") > 10.0);
    let before = a.engine.snapshot("search").unwrap().scar;
    a.manager.shutdown().await;
    tokio::time::sleep(2 * PULSE).await;
    assert_eq!(b.resistance("search"), 10.0, "a stopped node leaves the aggregate");

    // The same node restarts with an empty engine: it knows what it knew, healed.
    let a2 = Node::start("a", store.clone(), clock.clone()).await;
    let after = a2.engine.snapshot("search").unwrap().scar;
    let healed = before * (-a2.engine.config().scar_decay * 0.4).exp();
    assert!((after - healed).abs() < 0.05 * before, "warm start: {after} vs {healed}");
    assert!(a2.resistance("search") > 10.0);
    a2.manager.shutdown().await;
    b.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_drops_out_after_its_ttl() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    a.traffic("x", 1.0, false).await;
    a.traffic("x", 1.0, true).await;
    tokio::time::sleep(2 * PULSE).await;
    assert!(b.resistance("x") > 10.0);
    // A dies without a word (no shutdown): its heartbeat stops.
    drop(a.manager);
    tokio::time::sleep(SyncConfig::default().node_ttl + 3 * PULSE).await;
    assert_eq!(b.resistance("x"), 10.0);
    b.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn every_node_lists_the_cluster_healthy_then_suspect_then_gone() {
    let mem = InMemoryStore::new();
    let cut = Flaky { inner: mem.clone(), ..Flaky::default() };
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", Arc::new(cut.clone()), clock.clone()).await;
    let b = Node::start("b", Arc::new(mem.clone()), clock.clone()).await;
    a.traffic("x", 1.0, true).await;
    tokio::time::sleep(2 * PULSE).await;
    let status = |n: &Node| -> Vec<(String, NodeStatus, bool)> {
        n.manager.nodes().into_iter().map(|i| (i.id, i.status, i.this_node)).collect()
    };
    assert_eq!(status(&b), [("b".into(), NodeStatus::Healthy, true), ("a".into(), NodeStatus::Healthy, false)]);
    let seen = b.manager.nodes()[1].clone();
    assert_eq!(seen.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(seen.sync_lag_ms.unwrap() <= 3 * PULSE.as_millis() as u64, "{seen:?}");
    let (node, c) = b.manager.route_nodes("x").pop().expect("a's contribution to x");
    assert!(node == "a" && c.scar > 0.0, "{node} {c:?}");
    // A's store goes away: A goes silent for B, late first, then gone; A sees itself
    // degraded (suspect).
    cut.down.store(true, Ordering::Relaxed);
    let ttl = SyncConfig::default().node_ttl;
    tokio::time::sleep(ttl / 2).await;
    assert_eq!(status(&b)[1].1, NodeStatus::Suspect);
    assert_eq!(status(&a)[0], ("a".into(), NodeStatus::Suspect, true));
    tokio::time::sleep(ttl / 2 + 3 * PULSE).await;
    assert_eq!(status(&b)[1].1, NodeStatus::Gone);
    // Back: healthy again, on both sides.
    cut.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(3 * PULSE).await;
    assert_eq!(status(&b)[1].1, NodeStatus::Healthy);
    assert_eq!(status(&a)[0].1, NodeStatus::Healthy);
    // A node that leaves cleanly is listed as gone.
    a.manager.shutdown().await;
    tokio::time::sleep(2 * PULSE).await;
    assert_eq!(status(&b)[1], ("a".into(), NodeStatus::Gone, false));
    b.manager.shutdown().await;
}

/// A real in-memory store whose every operation can be made to fail, like a store that
/// went away; whose writes can be slowed; and that refuses chosen keys, for themselves
/// (`poison`) or once as if it were away (`fail_once`).
#[derive(Debug, Clone, Default)]
struct Flaky {
    inner: InMemoryStore,
    down: Arc<AtomicBool>,
    faults: Arc<Faults>,
}

#[derive(Debug, Default)]
struct Faults {
    slow_writes: Option<Duration>,
    poison: Option<&'static str>,
    fail_once: std::sync::Mutex<Option<&'static str>>,
    /// Change notices arrive this late (a loaded store).
    feed_delay: Option<Duration>,
    /// While set, change notices are lost without a word (no resync).
    mute: AtomicBool,
    /// The keys of each `shares` read, in order.
    reads: std::sync::Mutex<Vec<usize>>,
}

impl Flaky {
    fn check(&self, op: Op) -> Result<(), StoreError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::new("flaky", op, None, ErrorKind::Unavailable));
        }
        Ok(())
    }

    async fn check_write(&self, key: &str) -> Result<(), StoreError> {
        self.check(Op::Set)?;
        if self.faults.poison.is_some_and(|p| key.contains(p)) {
            return Err(StoreError::new("flaky", Op::Set, Some(key), ErrorKind::Backend));
        }
        let failed_once = {
            let mut once = self.faults.fail_once.lock().unwrap();
            once.is_some_and(|p| key.contains(p)) && once.take().is_some()
        };
        if failed_once {
            return Err(StoreError::new("flaky", Op::Set, Some(key), ErrorKind::Unavailable));
        }
        if let Some(d) = self.faults.slow_writes {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.check(Op::Get)?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.check_write(key).await?;
        self.inner.put(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.check(Op::Delete)?;
        self.inner.delete(key).await
    }
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.check(Op::ListKeys)?;
        self.inner.list_keys(prefix).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        self.check_write(key).await?;
        self.inner.compare_and_swap(key, expected, value, ttl).await
    }
    async fn transact(&self, group: atrion_state::Group) -> Result<Vec<Option<u64>>, StoreError> {
        for w in &group.writes {
            self.check_write(w.key()).await?;
        }
        self.inner.transact(group).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.check(Op::Stats)?;
        self.inner.stats().await
    }
    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        self.check(Op::Cleanup)?;
        self.inner.cleanup().await
    }
    async fn shares(
        &self,
        keys: &[String],
        member: &str,
    ) -> Result<Vec<Option<atrion_state::shares::Shares>>, StoreError> {
        self.check(Op::GetShares)?;
        self.faults.reads.lock().unwrap().push(keys.len());
        self.inner.shares(keys, member).await
    }
    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        let Some(mut feed) = self.inner.subscribe(prefix).await? else { return Ok(None) };
        let faults = self.faults.clone();
        let delay = faults.feed_delay.unwrap_or_default();
        // Stamped on arrival, handed on `delay` later, in order.
        let (stamped, mut later) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(change) = feed.recv().await {
                if faults.mute.load(Ordering::Relaxed) {
                    continue;
                }
                if stamped.send((tokio::time::Instant::now() + delay, change)).is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some((at, change)) = later.recv().await {
                tokio::time::sleep_until(at).await;
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(ChangeFeed::from_channel(rx, prefix)))
    }
}

/// Eight nodes of a load-balanced fleet see the same routes fail at once, over a store whose
/// notices take 20 ms to arrive. Returns the shares pushed per changed route, and whether
/// every node's merged view holds every route's scar.
async fn same_failures_everywhere(second_look: f64) -> (f64, bool) {
    let faults = Faults { feed_delay: Some(Duration::from_millis(20)), ..Faults::default() };
    let store: Arc<dyn StateStore> = Arc::new(Flaky { faults: Arc::new(faults), ..Flaky::default() });
    let clock = Arc::new(TokioClock::new());
    let mut nodes = Vec::new();
    for i in 0..8 {
        let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
        let mut cfg = SyncConfig::for_node(format!("node-{i}"));
        cfg.pulse = PULSE;
        cfg.second_look = second_look;
        let m = StateManager::start(engine.clone(), store.clone(), cfg, clock.clone() as Arc<dyn Clock>).await.unwrap();
        nodes.push((engine, m));
    }
    // Every node's heartbeat heard.
    tokio::time::sleep(5 * PULSE).await;
    let before: u64 = nodes.iter().map(|(_, m)| m.stats().pushed).sum();
    let bad = Telemetry::new(1_000.0, 1.0, 0.9).unwrap();
    let routes: Vec<String> = (0..100).map(|r| format!("GET /r/{r}")).collect();
    // Each round, 20 routes fail on every node for a pulse.
    for round in routes.chunks(20) {
        for _ in 0..10 {
            let now = clock.now();
            for (engine, _) in &nodes {
                for route in round {
                    engine.report(route, bad, now);
                }
            }
            tokio::time::sleep(PULSE / 10).await;
        }
    }
    tokio::time::sleep(5 * PULSE).await;
    let pushed: u64 = nodes.iter().map(|(_, m)| m.stats().pushed).sum::<u64>() - before;
    let now = clock.now();
    let seen = nodes.iter().all(|(e, _)| routes.iter().all(|r| e.cluster_scar(r, now).is_some_and(|s| s > 0.0)));
    for (_, m) in nodes {
        m.shutdown().await;
    }
    (pushed as f64 / routes.len() as f64, seen)
}

#[tokio::test(start_paused = true)]
async fn a_fleet_seeing_the_same_failures_writes_about_two_shares_per_changed_route() {
    let (with, seen) = same_failures_everywhere(SyncConfig::default().second_look).await;
    assert!(seen, "every node sees every route's scar");
    let (without, seen_without) = same_failures_everywhere(0.0).await;
    assert!(seen_without);
    eprintln!("shares per changed route: {with} with the second look, {without} without");
    assert!(with <= 3.0, "{with} shares per changed route with the second look");
    assert!(without > with, "{without} without the second look vs {with}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_degrades_then_resyncs_without_touching_decisions() {
    let down = Arc::new(AtomicBool::new(false));
    let store: Arc<dyn StateStore> = Arc::new(Flaky { down: down.clone(), ..Flaky::default() });
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    a.traffic("q", 1.0, false).await;

    down.store(true, Ordering::Relaxed);
    // Decisions go on, on local state, while every push fails.
    a.traffic("q", 2.0, true).await;
    for i in 0..50 {
        a.traffic(&format!("other/{i}"), 0.01, true).await;
    }
    let stats = a.manager.stats();
    assert!(stats.degraded && stats.store_errors > 0, "{stats:?}");
    assert!(stats.buffered >= 1 && stats.buffered <= 51, "bounded by the routes: {stats:?}");
    assert!(a.engine.snapshot("q").unwrap().scar > 5.0, "local state went on");
    assert_eq!(b.resistance("q"), 10.0, "nothing reached B");

    down.store(false, Ordering::Relaxed);
    tokio::time::sleep(3 * PULSE).await;
    let stats = a.manager.stats();
    assert!(!stats.degraded && stats.buffered == 0, "{stats:?}");
    assert!(stats.resyncs >= 1, "{stats:?}");
    assert!(b.resistance("q") > 10.0, "the buffered contribution arrived");
    a.manager.shutdown().await;
    b.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn garbage_under_our_keys_is_skipped() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    store.set("atrion/route/x/node/evil", Bytes::from_static(b"not a contribution")).await.unwrap();
    store.set("atrion/node/evil", Bytes::from_static(b"??")).await.unwrap();
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    assert_eq!(a.manager.stats().decode_errors, 2);
    store.set("atrion/route/y/node/evil", Bytes::from_static(b"garbage")).await.unwrap();
    tokio::time::sleep(PULSE).await;
    assert_eq!(a.manager.stats().decode_errors, 3);
    a.traffic("x", 0.2, false).await;
    assert_eq!(a.resistance("x"), 10.0);
    a.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_route_too_long_for_a_key_stays_local_and_never_blocks_sync() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    // Accepted by the engine (up to 1,024 bytes), too long once the key adds its parts.
    let long = format!("GET /{}", "x".repeat(1_015));
    let max = SyncConfig::for_node("a").keys().max_route_len();
    assert!(long.len() > max && long.len() <= 1_024);
    a.traffic(&long, 2.0, true).await;
    a.traffic("q", 2.0, true).await;
    tokio::time::sleep(3 * PULSE).await;
    let stats = a.manager.stats();
    assert!(stats.kept_local >= 1 && !stats.degraded && stats.buffered == 0, "{stats:?}");
    assert_eq!(stats.store_errors, 0, "{stats:?}");
    assert!(a.engine.snapshot(&long).unwrap().scar > 5.0, "decided on local state");
    assert!(b.resistance("q") > 10.0, "the other routes are shared");
    assert_eq!(b.resistance(&long), 10.0, "the long one is not");
    assert!(store.get("atrion/node/a").await.unwrap().is_some(), "the heartbeat goes on");
    a.manager.shutdown().await;
    b.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_refused_item_never_blocks_a_batch() {
    let faults = Faults { poison: Some("poison"), ..Faults::default() };
    let store: Arc<dyn StateStore> = Arc::new(Flaky { faults: Arc::new(faults), ..Flaky::default() });
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    a.traffic("poison", 2.0, true).await;
    a.traffic("q", 2.0, true).await;
    tokio::time::sleep(3 * PULSE).await;
    let stats = a.manager.stats();
    assert!(stats.rejected >= 1 && !stats.degraded && stats.buffered == 0, "{stats:?}");
    assert!(b.resistance("q") > 10.0, "the rest of the batch went through");
    a.manager.shutdown().await;
    b.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_pulses_lose_no_update() {
    let faults = Faults {
        slow_writes: Some(Duration::from_millis(50)),
        fail_once: std::sync::Mutex::new(Some("/route/r2")),
        ..Faults::default()
    };
    let store: Arc<dyn StateStore> = Arc::new(Flaky { faults: Arc::new(faults), ..Flaky::default() });
    let clock = Arc::new(TokioClock::new());
    let engine = Arc::new(Engine::new(PhysicsConfig::default()).unwrap());
    let mut cfg = SyncConfig::for_node("a");
    // The background pulse stays out of the way: the test pulses by hand.
    cfg.pulse = Duration::from_secs(600);
    cfg.full_sync = Duration::from_secs(600);
    cfg.node_ttl = Duration::from_secs(1_200);
    cfg.max_interval = Duration::from_secs(600);
    let manager = Arc::new(
        StateManager::start(engine.clone(), store.clone(), cfg, clock.clone() as Arc<dyn Clock>).await.unwrap(),
    );
    let scar = |route: &str| {
        for i in 0..200 {
            let now = clock.now() + Duration::from_millis(i);
            engine.report(route, Telemetry::new(1_000.0, 1.0, 0.9).unwrap(), now);
        }
    };
    scar("r1");
    // A slow pulse is under way with r1 when r2 changes and a second pulse, whose write
    // fails once, starts beside it.
    let first = tokio::spawn({
        let m = manager.clone();
        async move { m.pulse_now().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    scar("r2");
    let second = tokio::spawn({
        let m = manager.clone();
        async move { m.pulse_now().await }
    });
    first.await.unwrap();
    second.await.unwrap();
    manager.pulse_now().await;
    for route in ["r1", "r2"] {
        let shares = store.all_shares(&format!("atrion/route/{route}")).await.unwrap();
        assert!(shares.is_some_and(|s| s.get("a").is_some()), "{route} was never written: {:?}", manager.stats());
    }
    assert_eq!(manager.stats().buffered, 0);
}

/// The periodic full sync reads the routes a slice per pulse (at least 256 keys, enough
/// slices to end within its period), not all in one burst, and repairs what the change feed
/// lost without a word.
#[tokio::test(start_paused = true)]
async fn the_periodic_full_sync_reads_a_slice_per_pulse_and_repairs_a_silent_loss() {
    let faults = Arc::new(Faults::default());
    let store: Arc<dyn StateStore> = Arc::new(Flaky { faults: faults.clone(), ..Flaky::default() });
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    faults.mute.store(true, Ordering::Relaxed);
    let routes: Vec<String> = (0..600).map(|i| format!("swept/{i}")).collect();
    let bad = Telemetry::new(1_000.0, 1.0, 0.9).unwrap();
    for _ in 0..5 {
        let now = clock.now();
        for r in &routes {
            a.engine.report(r, bad, now);
        }
        tokio::time::sleep(PULSE).await;
    }
    tokio::time::sleep(5 * PULSE).await;
    faults.mute.store(false, Ordering::Relaxed);
    let sees = |r: &String| b.engine.cluster_scar(r, clock.now()).is_some_and(|s| s > 0.0);
    assert!(!routes.iter().any(sees), "the notices were lost");
    let syncs = b.manager.stats().full_syncs;
    faults.reads.lock().unwrap().clear();
    tokio::time::sleep(SyncConfig::default().full_sync + 10 * PULSE).await;
    assert!(routes.iter().all(sees), "the sweep found every route");
    assert!(b.manager.stats().full_syncs > syncs, "{:?}", b.manager.stats());
    let reads = faults.reads.lock().unwrap().clone();
    assert!(reads.iter().all(|&n| n <= 256) && reads.iter().sum::<usize>() >= 2 * 600, "{reads:?}");
    a.manager.shutdown().await;
    b.manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn contributions_a_store_lost_are_pushed_again() {
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    a.traffic("q", 1.5, true).await;
    tokio::time::sleep(2 * PULSE).await;
    let key = "atrion/route/q";
    let has_a = async || store.all_shares(key).await.unwrap().is_some_and(|s| s.get("a").is_some());
    assert!(has_a().await);
    // The store loses everything (a restart without persistence), after acknowledging it.
    for k in store.list_keys("").await.unwrap() {
        store.delete(&k).await.unwrap();
    }
    // The next full sync finds the loss and pushes the contribution again.
    tokio::time::sleep(SyncConfig::default().full_sync + 3 * PULSE).await;
    let stats = a.manager.stats();
    assert!(stats.republished >= 1, "{stats:?}");
    assert!(has_a().await, "the acknowledged write is back");
    assert!(b.resistance("q") > 10.0, "and the other node sees it again");
    a.manager.shutdown().await;
    b.manager.shutdown().await;
}

/// Issue 25, defect 5: an operator's holds and a tripped route survive a restart of the
/// node (on a store that keeps its data); a hold stays this node's own.
#[tokio::test(start_paused = true)]
async fn holds_and_open_routes_come_back_after_a_restart_and_stay_this_nodes_own() {
    use atrion_core::{Hold, Mode, Reason};
    let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let clock = Arc::new(TokioClock::new());
    let a = Node::start("a", store.clone(), clock.clone()).await;
    let b = Node::start("b", store.clone(), clock.clone()).await;
    a.traffic("pay", 1.0, false).await;
    for _ in 0..1_000 {
        a.engine.report("pay", Telemetry::new(1_000.0, 1.0, 0.9).unwrap(), clock.now());
        if a.engine.status("pay").unwrap().mode == Mode::Open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tripped = a.engine.status("pay").unwrap();
    assert_eq!(tripped.mode, Mode::Open, "{tripped:?}");
    let now = clock.now();
    for (route, hold) in [("held", Hold::Open), ("closed", Hold::Closed), ("let-go", Hold::Open)] {
        a.engine.hold(route, hold, now).unwrap();
    }
    a.engine.hold("let-go", Hold::Released, now).unwrap();
    // Written at once, before the next pulse would have.
    let records = a.manager.stats().records;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(a.manager.stats().records > records, "the hold reached the store without waiting for a pulse");
    tokio::time::sleep(2 * PULSE).await;
    // Another node reads the cluster's keys, and keeps its own verdicts.
    assert!(b.engine.decide("held", clock.now(), Priority::Normal).is_admitted());
    assert_eq!(b.engine.held("held").unwrap_or_default(), Hold::Released);
    a.manager.shutdown().await;

    let a2 = Node::start("a", store.clone(), clock.clone()).await;
    let now = clock.now();
    let d = a2.engine.decide("held", now, Priority::Critical);
    assert_eq!((d.is_admitted(), d.reason), (false, Reason::Held));
    assert_eq!(a2.engine.held("closed").unwrap(), Hold::Closed);
    assert_eq!(a2.engine.held("let-go").unwrap_or_default(), Hold::Released, "a released hold stays released");
    let back = a2.engine.status("pay").unwrap();
    assert_eq!(back.mode, Mode::Open, "open for the rest of its interval, not bootstrap: {back:?}");
    let d = a2.engine.decide("pay", now, Priority::Normal);
    assert_eq!((d.is_admitted(), d.reason), (false, Reason::Open));
    let left = back.open_until.saturating_since(now);
    assert!(left > Duration::ZERO && left <= tripped.open_until.saturating_since(Timestamp::ZERO), "{left:?}");
    a2.manager.shutdown().await;

    // Down for longer than the interval: back half-open, probing.
    tokio::time::sleep(a2.engine.config().half_open.open_max).await;
    let a3 = Node::start("a", store.clone(), clock.clone()).await;
    assert_eq!(a3.engine.status("pay").unwrap().mode, Mode::HalfOpen);
    let d = a3.engine.decide("pay", clock.now(), Priority::Normal);
    assert_eq!((d.is_admitted(), d.reason), (true, Reason::Probe));
    a3.manager.shutdown().await;
    b.manager.shutdown().await;
}
