//! The store model: one shared store as a fleet sees it, in tokio's (paused) time.
//!
//! - **Data**: keys and values in an [`InMemoryStore`]; shares kept apart, natively, the way
//!   the Redis adapter's scripts keep them (`atrion-redis`, `SHARE_PUT` / `SHARES_READ`): a
//!   read returns a key's two leaders plus the reader's own share; a write notifies the
//!   key's new two leaders only when either leader's rank moves by more than
//!   [`NOTIFY_RANK_STEP`] or the key gains one of its first three members.
//! - **One server**: each operation is served after the previous one finishes, for
//!   [`ModelConfig::share_write`] per share written and [`ModelConfig::key_op`] per other
//!   key read or written; each notice delivered to a subscriber costs the server
//!   [`ModelConfig::delivery`]. A fleet that asks more than that per pulse queues, as on a
//!   real server.
//! - **The network**: a call takes [`ModelConfig::latency`] (a round trip) on top of its
//!   wait and service; a notice reaches a subscriber [`ModelConfig::notice_delay`] after the
//!   write that made it.
//! - **Faults**: a partition cuts some nodes off (their calls fail with
//!   [`ErrorKind::Unavailable`], their notices are lost, and healed they get a
//!   [`Change::Resync`], as a reconnected Redis subscriber does); a restart loses every key
//!   and share and fails every call until the store is back, then every subscriber gets a
//!   [`Change::Resync`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use atrion_state::shares::{NOTIFY_RANK_STEP, Share, ShareWrite, Shares};
use atrion_state::{
    Capabilities, CasOutcome, Change, ChangeFeed, CleanupStats, Clock, Entry, ErrorKind, InMemoryStore, Op, StateStore,
    StoreError, StoreStats, check_share,
};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

const BACKEND: &str = "model";

/// The model's costs and delays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// A call's round trip, besides its wait and service at the server.
    pub latency: Duration,
    /// Server time per share written (13 µs: one Redis core, `INFO commandstats`, docs/SCALING.md).
    pub share_write: Duration,
    /// Server time per other key read or written (a share read, a heartbeat, a record).
    pub key_op: Duration,
    /// Server time per notice delivered to one subscriber.
    pub delivery: Duration,
    /// From a write's completion to its notice at a subscriber.
    pub notice_delay: Duration,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            latency: Duration::from_micros(100),
            share_write: Duration::from_micros(13),
            key_op: Duration::from_micros(5),
            delivery: Duration::from_micros(1),
            notice_delay: Duration::from_micros(50),
        }
    }
}

/// What the server did, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// Key operations served.
    pub ops: u64,
    /// Notices delivered (one per subscriber).
    pub deliveries: u64,
    /// Of those, notices of heartbeats (keys of the `node` family: `{namespace}/node/...`).
    pub heartbeat_deliveries: u64,
    /// Of those, notices of neither shares nor heartbeats (route records, `local`).
    pub other_deliveries: u64,
    /// Of those, notices of shares that moved the second leader only (the leader, its rank
    /// within the step and the member count as they were): only the leader needs them.
    pub second_only_deliveries: u64,
    /// Server time used, in ns.
    pub busy_ns: u64,
    /// Calls refused (partitioned, or the store down).
    pub refused: u64,
}

/// A rank as an integer of the same order (`f64::total_cmp`'s).
fn rank_key(r: f64) -> i64 {
    let b = r.to_bits() as i64;
    b ^ ((((b >> 63) as u64) >> 1) as i64)
}

/// One key's shares: by member, and in Redis's order (by rank, then member; iterated from
/// the highest).
#[derive(Debug, Default)]
struct KeyShares {
    version: u64,
    by_member: BTreeMap<String, Share>,
    order: BTreeSet<(i64, String)>,
    /// The last notice moved the second leader only (the same leader, its rank within the
    /// step, the same members): only the leader reads the second.
    second_only: bool,
}

impl KeyShares {
    fn ranked(&self) -> impl Iterator<Item = &Share> {
        self.order.iter().rev().map(|(_, m)| &self.by_member[m])
    }

    fn top2_ranks(&self) -> [Option<f64>; 2] {
        let mut it = self.ranked().map(|s| s.rank);
        [it.next(), it.next()]
    }

    /// Writes `share`; the change to notify, when it is news (as `SHARE_PUT` decides).
    fn put(&mut self, key: &str, share: Share) -> Option<Change> {
        let before = self.top2_ranks();
        let leader = self.ranked().next().map(|s| s.member.clone());
        let added = match self.by_member.insert(share.member.clone(), share.clone()) {
            Some(old) => {
                self.order.remove(&(rank_key(old.rank), old.member));
                false
            }
            None => true,
        };
        self.order.insert((rank_key(share.rank), share.member));
        let after = self.top2_ranks();
        let moved = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => x != y && (x - y).abs() > NOTIFY_RANK_STEP,
            (None, None) => false,
            _ => true,
        };
        // As the script: a member joining a key of three or more below its leaders is no news.
        let added = added && self.by_member.len() <= 3;
        if !(added || moved(before[0], after[0]) || moved(before[1], after[1])) {
            return None;
        }
        self.second_only =
            !added && !moved(before[0], after[0]) && leader == self.ranked().next().map(|s| s.member.clone());
        self.version += 1;
        let leaders = Shares { members: self.by_member.len() as u32, top: self.ranked().take(2).cloned().collect() };
        Some(Change::Set { key: key.to_owned(), version: self.version, value: Some(leaders.encode()) })
    }

    /// The two leaders, plus `member`'s own share wherever it ranks.
    fn read(&self, member: &str) -> Shares {
        let mut top: Vec<Share> = self.ranked().take(2).cloned().collect();
        if let Some(own) = self.by_member.get(member).filter(|_| !top.iter().any(|s| s.member == member)) {
            top.push(own.clone());
        }
        Shares { members: self.by_member.len() as u32, top }
    }
}

/// A subscriber: one node's change feed.
struct Sub {
    node: usize,
    prefix: String,
    /// Notices on their way, each shared by every subscriber it goes to (a fleet's queues
    /// hold millions while a fleet of hundreds joins).
    tx: mpsc::UnboundedSender<(Instant, Arc<Change>)>,
    /// Notices were lost (partitioned, or the store restarted): a resync is owed.
    cut: bool,
}

struct State {
    kv: InMemoryStore,
    shares: BTreeMap<String, KeyShares>,
    /// When the server finishes what it has been given.
    busy_until: Instant,
    down: bool,
    partitioned: Vec<bool>,
    subs: Vec<Sub>,
    counts: ServerCounts,
}

/// The shared store of a virtual fleet: [`StoreModel::node`] gives each node its handle.
pub struct StoreModel {
    cfg: ModelConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl std::fmt::Debug for StoreModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreModel").field("cfg", &self.cfg).finish()
    }
}

impl StoreModel {
    /// An empty store for `nodes` nodes, its TTLs on `clock`.
    pub fn new(cfg: ModelConfig, clock: Arc<dyn Clock>, nodes: usize) -> Arc<Self> {
        let state = State {
            kv: InMemoryStore::with_clock(clock.clone()),
            shares: BTreeMap::new(),
            busy_until: Instant::now(),
            down: false,
            partitioned: vec![false; nodes],
            subs: Vec::new(),
            counts: ServerCounts::default(),
        };
        Arc::new(StoreModel { cfg, clock, state: Mutex::new(state) })
    }

    /// Node `node`'s connection.
    pub fn node(self: &Arc<Self>, node: usize) -> ModelStore {
        ModelStore { model: self.clone(), node }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the server did so far.
    pub fn counts(&self) -> ServerCounts {
        self.lock().counts
    }

    /// Whether the store holds a share of `key`.
    pub fn holds_shares(&self, key: &str) -> bool {
        self.lock().shares.get(key).is_some_and(|k| !k.by_member.is_empty())
    }

    /// Cuts `nodes` off the store until [`StoreModel::heal`].
    pub fn partition(&self, nodes: &[usize]) {
        let mut st = self.lock();
        for &n in nodes {
            st.partitioned[n] = true;
        }
        let cut: Vec<bool> = st.partitioned.clone();
        for s in &mut st.subs {
            s.cut |= cut[s.node];
        }
    }

    /// Ends a partition: the nodes cut off reconnect, their feeds resynchronise.
    pub fn heal(&self) {
        let mut st = self.lock();
        st.partitioned.iter_mut().for_each(|p| *p = false);
        self.resync_cut(&mut st);
    }

    /// The store restarts: every key and share is lost, and every call fails until
    /// [`StoreModel::back`].
    pub fn restart(&self) {
        let mut st = self.lock();
        st.down = true;
        st.kv = InMemoryStore::with_clock(self.clock.clone());
        st.shares.clear();
        st.subs.iter_mut().for_each(|s| s.cut = true);
    }

    /// The restarted store serves again, empty; every feed resynchronises.
    pub fn back(&self) {
        let mut st = self.lock();
        st.down = false;
        self.resync_cut(&mut st);
    }

    fn resync_cut(&self, st: &mut State) {
        let at = Instant::now() + self.cfg.notice_delay;
        let partitioned = st.partitioned.clone();
        for s in st.subs.iter_mut().filter(|s| s.cut && !partitioned[s.node]) {
            s.cut = false;
            let _ = s.tx.send((at, Arc::new(Change::Resync)));
        }
    }

    fn refused(&self, st: &mut State, node: usize) -> bool {
        let refused = st.down || st.partitioned[node];
        st.counts.refused += u64::from(refused);
        refused
    }

    /// Queues `ops` operations of `node` at the server: when they are done; `None` when the
    /// node cannot reach the store.
    fn admit(&self, node: usize, ops: usize, cost: Duration) -> Option<Instant> {
        let mut st = self.lock();
        if self.refused(&mut st, node) {
            return None;
        }
        let service = cost * ops as u32;
        let start = st.busy_until.max(Instant::now());
        st.busy_until = start + service;
        st.counts.ops += ops as u64;
        st.counts.busy_ns += service.as_nanos() as u64;
        Some(st.busy_until)
    }

    /// The data, as `node` reaches it now; `None` when it cannot.
    fn data(&self, node: usize) -> Option<InMemoryStore> {
        let mut st = self.lock();
        (!self.refused(&mut st, node)).then(|| st.kv.clone())
    }

    /// One call of `node`: `ops` key operations of `cost` each, served in turn after what
    /// the server was given before; `f` runs at the end of the service (on the data as it
    /// is then) and returns the result and the changes to notify.
    async fn serve<T, F, Fut>(&self, node: usize, op: Op, ops: usize, cost: Duration, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(InMemoryStore) -> Fut,
        Fut: Future<Output = Result<(T, Vec<Change>), StoreError>>,
    {
        let half = self.cfg.latency / 2;
        let unavailable = || StoreError::new(BACKEND, op, None, ErrorKind::Unavailable);
        tokio::time::sleep(half).await;
        let Some(done) = self.admit(node, ops, cost) else {
            tokio::time::sleep(half).await;
            return Err(unavailable());
        };
        tokio::time::sleep_until(done).await;
        let Some(kv) = self.data(node) else {
            tokio::time::sleep(half).await;
            return Err(unavailable());
        };
        // The in-memory store never waits: the call applies at once, between two tasks.
        let (out, changes) = f(kv).await?;
        if !changes.is_empty() {
            self.publish(changes);
        }
        tokio::time::sleep(half).await;
        Ok(out)
    }

    /// Sends `changes` to every subscriber of their keys (not cut off), after the notice
    /// delay; the deliveries take the server's time.
    fn publish(&self, changes: Vec<Change>) {
        let mut st = self.lock();
        let at = Instant::now() + self.cfg.notice_delay;
        let partitioned = st.partitioned.clone();
        let mut delivered = 0u64;
        for change in changes {
            let change = Arc::new(change);
            let key = change.key().unwrap_or_default();
            let mut to = 0;
            for s in st.subs.iter().filter(|s| !s.cut && !partitioned[s.node] && key.starts_with(&s.prefix)) {
                if s.tx.send((at, change.clone())).is_ok() {
                    to += 1;
                }
            }
            delivered += to;
            match key.split('/').nth(1) {
                Some("node") => st.counts.heartbeat_deliveries += to,
                Some("route") => {}
                _ => st.counts.other_deliveries += to,
            }
        }
        let cost = self.cfg.delivery * delivered as u32;
        st.busy_until = st.busy_until.max(Instant::now()) + cost;
        st.counts.deliveries += delivered;
        st.counts.busy_ns += cost.as_nanos() as u64;
    }

    /// Writes the shares: the changes to notify, and how many of them moved the second
    /// leader only.
    /// Counts the deliveries that `n` second-leader-only notices will take (one per
    /// subscriber that would get them).
    fn count_second_only(&self, n: usize) {
        let mut st = self.lock();
        let subs = st.subs.iter().filter(|s| !s.cut && !st.partitioned[s.node]).count() as u64;
        st.counts.second_only_deliveries += n as u64 * subs;
    }

    fn put_shares(&self, items: Vec<ShareWrite>) -> (Vec<Change>, usize) {
        let mut st = self.lock();
        let mut second_only = 0;
        let changes = items
            .into_iter()
            .filter_map(|w| {
                let k = st.shares.entry(w.key.clone()).or_default();
                let change = k.put(&w.key, w.share)?;
                second_only += usize::from(k.second_only);
                Some(change)
            })
            .collect();
        (changes, second_only)
    }
}

/// One node's connection to a [`StoreModel`].
#[derive(Debug, Clone)]
pub struct ModelStore {
    model: Arc<StoreModel>,
    node: usize,
}

fn set(key: String, version: u64, value: Bytes) -> Change {
    Change::Set { key, version, value: Some(value) }
}

#[async_trait]
impl StateStore for ModelStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            atomic: true,
            transactions: false,
            one_slot_groups: false,
            change_feed: true,
            persistent: false,
            shared: true,
            native_shares: true,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::Get, 1, m.cfg.key_op, |kv| async move { Ok((kv.get(key).await?, vec![])) }).await
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::Set, 1, m.cfg.key_op, |kv| async move {
            let v = kv.put(key, value.clone(), ttl).await?;
            Ok((v, vec![set(key.to_owned(), v, value)]))
        })
        .await
    }

    async fn put_quiet(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::Set, 1, m.cfg.key_op, |kv| async move { Ok((kv.put(key, value, ttl).await?, vec![])) })
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::Delete, 1, m.cfg.key_op, |kv| async move {
            let existed = kv.delete(key).await?;
            let changes = if existed { vec![Change::Deleted { key: key.to_owned() }] } else { vec![] };
            Ok((existed, changes))
        })
        .await
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::ListKeys, 1, m.cfg.key_op, |kv| async move { Ok((kv.list_keys(prefix).await?, vec![])) })
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::CompareAndSwap, 1, m.cfg.key_op, |kv| async move {
            let out = kv.compare_and_swap(key, expected, value.clone(), ttl).await?;
            let changes = match out {
                CasOutcome::Swapped { version } => vec![set(key.to_owned(), version, value)],
                CasOutcome::Conflict { .. } => vec![],
            };
            Ok((out, changes))
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let kv = self.model.lock().kv.clone();
        kv.stats().await
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        let kv = self.model.lock().kv.clone();
        kv.cleanup().await
    }

    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        let (utx, mut urx) = mpsc::unbounded_channel::<(Instant, Arc<Change>)>();
        let (tx, rx) = mpsc::channel(4096);
        {
            let mut st = self.model.lock();
            if self.model.refused(&mut st, self.node) {
                return Err(StoreError::new(BACKEND, Op::Subscribe, None, ErrorKind::Unavailable));
            }
            st.subs.push(Sub { node: self.node, prefix: prefix.to_owned(), tx: utx, cut: false });
        }
        tokio::spawn(async move {
            while let Some((at, change)) = urx.recv().await {
                tokio::time::sleep_until(at).await;
                if tx.send(Arc::unwrap_or_clone(change)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Some(ChangeFeed::from_channel(rx, prefix)))
    }

    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::BatchGet, keys.len(), m.cfg.key_op, |kv| async move {
            Ok((kv.batch_get(keys).await?, vec![]))
        })
        .await
    }

    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::BatchSet, items.len(), m.cfg.key_op, |kv| async move {
            let versions = kv.batch_set(items.clone()).await?;
            let changes = items.into_iter().zip(&versions).map(|((k, v, _), ver)| set(k, *ver, v)).collect();
            Ok((versions, changes))
        })
        .await
    }

    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::BatchDelete, keys.len(), m.cfg.key_op, |kv| async move {
            let mut n = 0;
            let mut changes = Vec::new();
            for key in keys {
                if kv.delete(key).await? {
                    n += 1;
                    changes.push(Change::Deleted { key: key.clone() });
                }
            }
            Ok((n, changes))
        })
        .await
    }

    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        for w in &items {
            check_share(BACKEND, Op::PutShares, w)?;
        }
        let m = &self.model;
        m.serve(self.node, Op::PutShares, items.len(), m.cfg.share_write, |_| {
            let (changes, second_only) = m.put_shares(items);
            m.count_second_only(second_only);
            async move { Ok(((), changes)) }
        })
        .await
    }

    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::GetShares, keys.len(), m.cfg.key_op, |_| {
            let st = m.lock();
            let got: Vec<Option<Shares>> = keys
                .iter()
                .map(|k| st.shares.get(k).filter(|s| !s.by_member.is_empty()).map(|s| s.read(member)))
                .collect();
            async move { Ok((got, vec![])) }
        })
        .await
    }

    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::GetShares, 1, m.cfg.key_op, |_| {
            let st = m.lock();
            let all = st
                .shares
                .get(key)
                .filter(|s| !s.by_member.is_empty())
                .map(|s| Shares { members: s.by_member.len() as u32, top: s.ranked().cloned().collect() });
            async move { Ok((all, vec![])) }
        })
        .await
    }

    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let m = &self.model;
        m.serve(self.node, Op::ListShares, 1, m.cfg.key_op, |_| {
            let st = m.lock();
            let keys: Vec<String> = st
                .shares
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, s)| !s.by_member.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            async move { Ok((keys, vec![])) }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(member: &str, rank: f64) -> Share {
        Share { member: member.into(), rank, value: Bytes::from_static(b"v") }
    }

    #[test]
    fn shares_are_ranked_and_notified_as_the_redis_script_does() {
        let mut k = KeyShares::default();
        assert!(k.put("r", share("a", 1.0)).is_some(), "a new member is news");
        assert!(k.put("r", share("b", 2.0)).is_some());
        assert!(k.put("r", share("b", 2.005)).is_none(), "a leader moved by less than the step");
        assert!(k.put("r", share("c", 0.5)).is_some(), "a third member");
        assert!(k.put("r", share("c", 0.7)).is_none(), "a third moved: no leader moved");
        assert!(k.put("r", share("d", 0.1)).is_none(), "a fourth member below the leaders");
        let Some(Change::Set { value: Some(v), .. }) = k.put("r", share("c", 3.0)) else { panic!("c leads") };
        let leaders = Shares::decode(&v).unwrap();
        assert_eq!(leaders.members, 4, "the count as it is, though the fourth was not noticed");
        assert_eq!(leaders.top.iter().map(|s| s.member.as_str()).collect::<Vec<_>>(), ["c", "b"]);
        let read = k.read("a");
        assert_eq!(read.top.iter().map(|s| s.member.as_str()).collect::<Vec<_>>(), ["c", "b", "a"]);
        assert!(rank_key(-1.0) < rank_key(-0.5) && rank_key(-0.5) < rank_key(0.0) && rank_key(0.0) < rank_key(2.0));
        assert!(rank_key(f64::NEG_INFINITY) < rank_key(-1e300));
    }
}
