//! # atrion-redis
//!
//! A [`StateStore`] over Redis or a Redis Cluster, so that the pods of a cluster share scar
//! tissue.
//!
//! - One auto-reconnecting, multiplexed connection shared by all callers: a
//!   [`redis::aio::ConnectionManager`] for one server, the cluster-aware
//!   [`redis::cluster_async::ClusterConnection`] for a Redis Cluster (routing by hash slot,
//!   following failovers and resharding). [`RedisConfig::mode`] chooses, or the server says
//!   (`INFO cluster`). Connect and command timeouts.
//! - Each entry is a hash (`v` = value, `ver` = version) under `{namespace}:e:{key}`, its
//!   version counter under `{namespace}:v:{key}`: the key (`%`, `{`, `}` escaped as `%25`, `%7B`, `%7D`) is their
//!   hash tag, so every script touches one slot. Versions are per key: unique and increasing
//!   for that key across deletes, which is what compare-and-swap needs (the port's contract).
//! - Shares ([`atrion_state::shares`]) natively: a hash of values and a sorted set of ranks per
//!   key, in one slot; a script sets a member's share and notifies the key's new leaders
//!   only when a leader's rank moves by more than
//!   [`atrion_state::shares::NOTIFY_RANK_STEP`] or the key gains one of its first three
//!   members (beyond three, a reader's count says "more than the two listed" either way).
//! - A key written `{group}rest` ([`atrion_state::slot_group`]) is spelled
//!   `{namespace}:e:{group}rest` (both escaped): its group is the hash tag, so the keys of
//!   one group share a slot. A group of writes ([`StateStore::transact`]) is one Lua script
//!   that checks every precondition before it writes anything; on a cluster its keys must
//!   name one slot group (else [`atrion_state::ErrorKind::GroupSpansSlots`], nothing sent).
//! - Writes, compare-and-swap and deletes are Lua scripts: the version bump, the write, the
//!   TTL and the change notification happen atomically. Batches are pipelined on one server,
//!   sent concurrently (each to its slot's primary) on a cluster.
//! - The change feed: notices over pub/sub carrying values up to 1 KiB (`scripts.rs`), and a
//!   [`atrion_state::Change::Resync`] after every reconnect, since pub/sub loses what is sent
//!   while a client is away. On a cluster, any node's subscription hears every node's
//!   `PUBLISH`; a lost node's subscription moves to another.
//! - Where the code is: `routing.rs` (how commands reach the servers: pipelines, per-slot
//!   and per-primary batches with their `MOVED` fallback, `SCAN`), `keys.rs` (how keys,
//!   tags and ranks are spelled), `scripts.rs`, `feed.rs`,
//!   `connect.rs` and `config.rs`; the port's methods here.
//! - `redis://` and `rediss://` (TLS, rustls with ring; a private CA through
//!   [`RedisConfig::ca_cert`]), with AUTH from the URL (`redis://user:password@host`).
//!
//! ## Features
//! - `testing`: `testing::RedisServer`, a private `redis-server`, and `testing::RedisCluster`,
//!   a private six-node Redis Cluster, for tests and benches.
//!
//! ## Example
//!
//! The port's contract on a private `redis-server` (feature `testing`, which this crate's
//! own tests enable). Without `redis-server` installed, `start` fails loudly, or is `None`
//! when `ATRION_SKIP_SERVICES=1` asks to skip:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use atrion_redis::{RedisConfig, RedisStore};
//! use atrion_state::{CasOutcome, StateStore};
//!
//! let Some(server) = atrion_redis::testing::RedisServer::start() else { return Ok(()) };
//! // In production: `RedisConfig::new("redis://user:password@host:6379")`, or `rediss://`.
//! let store = RedisStore::connect(&RedisConfig::new(server.url())).await?;
//! assert!(store.capabilities().atomic && store.capabilities().shared);
//!
//! let v1 = store.put("atrion/example", "one".into(), None).await?;
//! // Compare-and-swap against the version read: the second writer at v1 loses.
//! let won = store.compare_and_swap("atrion/example", Some(v1), "two".into(), None).await?;
//! let CasOutcome::Swapped { version: v2 } = won else { panic!("{won:?}") };
//! assert!(v2 > v1);
//! let lost = store.compare_and_swap("atrion/example", Some(v1), "three".into(), None).await?;
//! assert_eq!(lost, CasOutcome::Conflict { current: Some(v2) });
//! assert_eq!(store.get("atrion/example").await?.unwrap().value, "two");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use atrion_state::shares::{NOTIFY_RANK_STEP, ShareWrite, Shares};
use atrion_state::{
    Capabilities, CasOutcome, ChangeFeed, CleanupStats, Entry, ErrorKind, Group, GroupWrite, Op, StateStore,
    StoreError, StoreStats, check_key, check_share, check_value,
};
use bytes::Bytes;
use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, ScriptInvocation, Value};
use tokio::sync::mpsc;

mod config;
mod connect;
mod feed;
mod keys;
use keys::RankText;
mod routing;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{RedisConfig, RedisMode};
use scripts::{CAS, DELETE, GROUP, PUT, REPAIRS, SHARE_PUT, SHARES_CHUNK, SHARES_COMMON, SHARES_READ};

const BACKEND: &str = "redis";

/// The connection: to one server, or to a Redis Cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis store. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// Where the change feed subscribes: the server, or every known node of the cluster
    /// (tried in turn).
    subscribe_via: Vec<redis::Client>,
    cfg: RedisConfig,
    put: Script,
    cas: Script,
    group: Script,
    delete: Script,
    share_put: Script,
    shares_read: Script,
    repairs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.cfg.namespace)
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

/// The changes one notification on this store's channel carries (records of length-prefixed
/// tokens: `set <version> <key> <value>`, `ref <version> <key>`, `del 0 <key>`); parsing stops
/// at the first record that does not read, so garbage yields nothing. Public for tools that
/// listen on the channel themselves, and for the fuzz targets.
pub fn parse_notice(payload: &[u8]) -> Vec<atrion_state::Change> {
    feed::parse(payload)
}

/// The next change of a notification on this store's channel, read in place (borrowed from
/// the payload) and advancing it: the [`atrion_state::NoticeParser`] this store's change feed
/// hands its readers with each notification. Public for tools that replay notifications.
pub fn parse_notice_record<'a>(rest: &mut &'a [u8]) -> Option<atrion_state::ChangeRef<'a>> {
    feed::record_ref(rest)
}

fn err(op: Op, key: Option<&str>, e: redis::RedisError) -> StoreError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
            )
        )
    {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Backend
    };
    StoreError::new(BACKEND, op, key, kind).with_source(e)
}

impl RedisStore {
    /// Whether the store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Damaged values repaired by writes since this store connected: something else than
    /// one of our entries under one of our keys (replaced), or a version counter that was
    /// not an integer (restarted above every version handed out). Each is also logged.
    pub fn repairs(&self) -> u64 {
        self.repairs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn repaired(&self, n: u64, op: Op, key: Option<&str>) {
        if n > 0 {
            self.repairs.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                namespace = %self.cfg.namespace,
                %op,
                key = key.unwrap_or("(batch)"),
                repaired = n,
                "replaced damaged values under the store's keys (a foreign value or a non-integer version counter)"
            );
        }
    }

    fn ttl_ms(ttl: Option<Duration>) -> u64 {
        ttl.map_or(0, |t| (t.as_millis() as u64).max(1))
    }

    fn entry(op: Op, key: &str, v: Option<Vec<u8>>, ver: Option<u64>, pttl: i64) -> Result<Option<Entry>, StoreError> {
        match (v, ver) {
            (Some(v), Some(version)) => Ok(Some(Entry {
                value: Bytes::from(v),
                version,
                ttl: (pttl >= 0).then(|| Duration::from_millis(pttl as u64)),
            })),
            (None, None) => Ok(None),
            _ => Err(StoreError::new(BACKEND, op, Some(key), ErrorKind::Corrupt)),
        }
    }

    /// Writes `key`, announced on `channel` (none when it is empty).
    async fn write(&self, key: &str, value: Bytes, ttl: Option<Duration>, channel: &str) -> Result<u64, StoreError> {
        check_key(BACKEND, Op::Set, key)?;
        check_value(BACKEND, Op::Set, key, &value)?;
        let mut conn = self.conn.clone();
        let (entry, counter) = self.redis_keys(key);
        let (version, fixed): (u64, u64) = self
            .put
            .key(entry)
            .key(counter)
            .arg(value.as_ref())
            .arg(Self::ttl_ms(ttl))
            .arg(channel)
            .arg(key)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err(Op::Set, Some(key), e))?;
        self.repaired(fixed, Op::Set, Some(key));
        Ok(version)
    }

    /// Reads the shares of `keys` (the top `last + 1` of each, all for -1, and `member`'s).
    async fn read_shares(
        &self,
        op: Op,
        keys: &[String],
        member: &str,
        last: i64,
    ) -> Result<Vec<Option<Shares>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut invs = Vec::with_capacity(keys.len());
        for k in keys {
            check_key(BACKEND, op, k)?;
            let (values, ranks) = self.share_keys(k);
            let mut inv = self.shares_read.prepare_invoke();
            inv.key(values).key(ranks).arg(member).arg(last);
            invs.push(inv);
        }
        let raw = match self.invoke_all(&self.shares_read, &invs).await {
            Ok(raw) => raw,
            // One key holding something else than our hash and sorted set fails the batch;
            // read key by key to say which.
            Err(e) if keys.len() > 1 && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    out.extend(Box::pin(self.read_shares(op, std::slice::from_ref(k), member, last)).await?);
                }
                return Ok(out);
            }
            Err(e) => return Err(err(op, (keys.len() == 1).then(|| keys[0].as_str()), e)),
        };
        keys.iter()
            .zip(raw)
            .map(|(k, reply)| match reply {
                Value::Nil => Ok(None),
                // Something else than our hash and sorted set under the key (a script error,
                // WRONGTYPE), or bytes that do not decode.
                other => match redis::from_redis_value::<Vec<u8>>(other).ok().and_then(|b| Shares::decode(&b)) {
                    Some(shares) => Ok(Some(shares)),
                    None => Err(StoreError::new(BACKEND, op, Some(k), ErrorKind::Corrupt)),
                },
            })
            .collect()
    }
}

#[async_trait]
impl StateStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            atomic: true,
            transactions: true,
            // On a cluster a group is one script, on one primary: its keys share a slot.
            one_slot_groups: self.is_cluster(),
            change_feed: true,
            persistent: true,
            shared: true,
            native_shares: true,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(BACKEND, Op::Get, key)?;
        let rk = self.redis_key(key);
        let mut conn = self.conn.clone();
        let ((v, ver), pttl): ((Option<Vec<u8>>, Option<u64>), i64) = redis::pipe()
            .cmd("HMGET")
            .arg(&rk)
            .arg("v")
            .arg("ver")
            .cmd("PTTL")
            .arg(&rk)
            .query_async(&mut conn)
            .await
            .map_err(|e| err(Op::Get, Some(key), e))?;
        Self::entry(Op::Get, key, v, ver, pttl)
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.write(key, value, ttl, &self.channel()).await
    }

    async fn put_quiet(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.write(key, value, ttl, "").await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(BACKEND, Op::Delete, key)?;
        let mut conn = self.conn.clone();
        let n: u64 = self
            .delete
            .key(self.redis_key(key))
            .arg(self.channel())
            .arg(key)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err(Op::Delete, Some(key), e))?;
        Ok(n == 1)
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> = self
            .scan(Op::ListKeys)
            .await?
            .iter()
            .filter_map(|k| self.user_key(k))
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        check_key(BACKEND, Op::CompareAndSwap, key)?;
        check_value(BACKEND, Op::CompareAndSwap, key, &value)?;
        let mut conn = self.conn.clone();
        let (entry, counter) = self.redis_keys(key);
        let (swapped, version, fixed): (u8, String, u64) = self
            .cas
            .key(entry)
            .key(counter)
            .arg(value.as_ref())
            .arg(Self::ttl_ms(ttl))
            .arg(self.channel())
            .arg(key)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err(Op::CompareAndSwap, Some(key), e))?;
        self.repaired(fixed, Op::CompareAndSwap, Some(key));
        let corrupt = || StoreError::new(BACKEND, Op::CompareAndSwap, Some(key), ErrorKind::Corrupt);
        let parsed = if version.is_empty() { None } else { Some(version.parse::<u64>().map_err(|_| corrupt())?) };
        Ok(match (swapped, parsed) {
            (1, Some(version)) => CasOutcome::Swapped { version },
            (1, None) => return Err(corrupt()),
            (_, current) => CasOutcome::Conflict { current },
        })
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let pattern = format!("{}*", self.entries_prefix());
        // One pipeline per primary and chunk (on a cluster, the primaries at once), not one
        // per key.
        let per_node = self.scan_by_node(Op::Stats, &pattern).await?.into_iter().map(|(node, keys)| async move {
            let mut stats = StoreStats::default();
            for chunk in keys.chunks(500) {
                // The value's length, and whether the key still lives (one that expired since
                // SCAN reads as 0 bytes; an empty value does too).
                let groups = chunk
                    .iter()
                    .map(|k| {
                        let mut len = redis::cmd("HSTRLEN");
                        len.arg(k).arg("v");
                        let mut exists = redis::cmd("EXISTS");
                        exists.arg(k);
                        vec![len, exists]
                    })
                    .collect();
                let replies = match &node {
                    Some(node) => self.run_on_node(node, groups).await,
                    None => self.run_groups(groups).await,
                };
                for pair in replies.map_err(|e| err(Op::Stats, None, e))?.chunks(2) {
                    let n = |v: &Value| redis::from_redis_value_ref::<u64>(v).unwrap_or(0);
                    if let [len, live] = pair
                        && n(live) == 1
                    {
                        stats.keys += 1;
                        stats.value_bytes += n(len);
                    }
                }
            }
            Ok::<_, StoreError>(stats)
        });
        let mut stats = StoreStats::default();
        for node in try_join_all(per_node).await? {
            stats.keys += node.keys;
            stats.value_bytes += node.value_bytes;
        }
        Ok(stats)
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        // Redis expires entries itself.
        Ok(CleanupStats::default())
    }

    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        let (tx, rx) = mpsc::channel(4096);
        let channel = self.channel();
        let mut last = None;
        for (i, client) in self.subscribe_via.iter().enumerate() {
            let attempt = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(self.cfg.connect_timeout, attempt).await {
                Ok(Ok(pubsub)) => {
                    tokio::spawn(feed::forward(self.subscribe_via.clone(), i, channel, pubsub, tx));
                    return Ok(Some(ChangeFeed::from_notices(rx, prefix)));
                }
                Ok(Err(e)) => last = Some(err(Op::Subscribe, None, e)),
                Err(_) => last = Some(StoreError::new(BACKEND, Op::Subscribe, None, ErrorKind::Timeout)),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::new(BACKEND, Op::Subscribe, None, ErrorKind::Unavailable)))
    }

    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut groups = Vec::with_capacity(keys.len());
        for k in keys {
            check_key(BACKEND, Op::BatchGet, k)?;
            let rk = self.redis_key(k);
            let mut fields = redis::cmd("HMGET");
            fields.arg(&rk).arg("v").arg("ver");
            let mut pttl = redis::cmd("PTTL");
            pttl.arg(&rk);
            groups.push(vec![fields, pttl]);
        }
        let raw = self.run_groups(groups).await.map_err(|e| err(Op::BatchGet, None, e))?;
        let mut out = Vec::with_capacity(keys.len());
        for (k, pair) in keys.iter().zip(raw.chunks(2)) {
            let (fields, pttl) = match pair {
                [fields, pttl] => (fields, pttl),
                _ => return Err(StoreError::new(BACKEND, Op::BatchGet, Some(k), ErrorKind::Corrupt)),
            };
            let (v, ver): (Option<Vec<u8>>, Option<u64>) =
                redis::from_redis_value_ref(fields).map_err(|e| err(Op::BatchGet, Some(k), e.into()))?;
            let pttl: i64 = redis::from_redis_value_ref(pttl).map_err(|e| err(Op::BatchGet, Some(k), e.into()))?;
            out.push(Self::entry(Op::BatchGet, k, v, ver, pttl)?);
        }
        Ok(out)
    }

    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for (k, v, _) in &items {
            check_key(BACKEND, Op::BatchSet, k)?;
            check_value(BACKEND, Op::BatchSet, k, v)?;
        }
        let channel = self.channel();
        let invs: Vec<ScriptInvocation<'_>> = items
            .iter()
            .map(|(k, v, ttl)| {
                let (entry, counter) = self.redis_keys(k);
                let mut inv = self.put.prepare_invoke();
                inv.key(entry).key(counter).arg(v.as_ref()).arg(Self::ttl_ms(*ttl)).arg(&channel).arg(k.as_str());
                inv
            })
            .collect();
        let replies = self.invoke_all(&self.put, &invs).await.map_err(|e| err(Op::BatchSet, None, e))?;
        let mut versions = Vec::with_capacity(items.len());
        let mut fixed = 0;
        for reply in replies {
            let (version, f): (u64, u64) =
                redis::from_redis_value(reply).map_err(|e| err(Op::BatchSet, None, e.into()))?;
            versions.push(version);
            fixed += f;
        }
        self.repaired(fixed, Op::BatchSet, None);
        Ok(versions)
    }

    /// Scripts of up to 256 shares, pipelined, on one server; one script per
    /// share (each in its key's slot), sent concurrently, on a cluster. A key is notified
    /// only when a leader's rank moves by more than [`NOTIFY_RANK_STEP`] or the key gains
    /// one of its first three members.
    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        for w in &items {
            check_share(BACKEND, Op::PutShares, w)?;
        }
        let channel = self.channel();
        let replies = match &self.conn {
            // One pipeline of `EVALSHA` commands built directly (a `ScriptInvocation` copies
            // every argument into a buffer of its own, then again into its command: a seventh
            // of a pulse's push), after the script's `SCRIPT LOAD`.
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                pipe.load_script(&self.share_put).ignore();
                let mut rank = RankText::default();
                // The keys are built in two buffers reused for every share (the command copies
                // each argument): no allocation per share, the route escaped once.
                let (mut tail, mut name) = (String::new(), String::new());
                for chunk in items.chunks(SHARES_CHUNK) {
                    let mut cmd = Cmd::with_capacity(4 + 6 * chunk.len(), 64 + 256 * chunk.len());
                    cmd.arg("EVALSHA").arg(self.share_put.get_hash()).arg(2 * chunk.len());
                    for w in chunk {
                        keys::slot_tail(&mut tail, &w.key);
                        for family in [keys::SHARE_VALUES, keys::SHARE_RANKS] {
                            name.clear();
                            self.push_slot_key(&mut name, family, &tail);
                            cmd.arg(name.as_bytes());
                        }
                    }
                    cmd.arg(&channel).arg(NOTIFY_RANK_STEP);
                    for w in chunk {
                        cmd.arg(&w.share.member).arg(rank.of(w.share.rank)).arg(w.share.value.as_ref()).arg(&w.key);
                    }
                    pipe.add_command(cmd);
                }
                pipe.query_async::<Vec<Value>>(&mut c.clone()).await
            }
            Conn::Cluster(_) => {
                let invs: Vec<ScriptInvocation<'_>> = items
                    .iter()
                    .map(|w| {
                        let mut inv = self.share_put.prepare_invoke();
                        inv.arg(&channel).arg(NOTIFY_RANK_STEP);
                        let (values, ranks) = self.share_keys(&w.key);
                        inv.key(values).key(ranks);
                        let mut rank = RankText::default();
                        inv.arg(&w.share.member).arg(rank.of(w.share.rank)).arg(w.share.value.as_ref()).arg(&w.key);
                        inv
                    })
                    .collect();
                self.invoke_all(&self.share_put, &invs).await
            }
        }
        .map_err(|e| err(Op::PutShares, None, e))?;
        let fixed = replies.iter().map(|r| redis::from_redis_value_ref::<u64>(r).unwrap_or(0)).sum();
        self.repaired(fixed, Op::PutShares, None);
        Ok(())
    }

    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        self.read_shares(Op::GetShares, keys, member, 1).await
    }

    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        Ok(self.read_shares(Op::GetShares, std::slice::from_ref(&key.to_owned()), "", -1).await?.pop().flatten())
    }

    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let head = format!("{}:sr:", self.cfg.namespace);
        let mut keys: Vec<String> = self
            .scan_match(Op::ListShares, &format!("{head}{{*"))
            .await?
            .iter()
            .filter_map(|k| keys::user_key(&head, k))
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// One Lua script (`scripts::GROUP`); on a cluster, the group's keys must share a slot
    /// group, which puts them in one slot ([`atrion_state::slot_group`]).
    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        group.validate(BACKEND)?;
        if self.is_cluster() {
            group.check_one_slot(BACKEND)?;
        }
        if group.is_empty() {
            return Ok(Vec::new());
        }
        let op = Op::Transact;
        let first = group.keys().next().map(str::to_owned);
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut inv = self.group.prepare_invoke();
        for key in group.keys() {
            if !index.contains_key(key) {
                index.insert(key, index.len() + 1);
                let (entry, counter) = self.redis_keys(key);
                inv.key(entry).key(counter);
            }
        }
        inv.arg(self.channel()).arg(group.checks.len());
        for c in &group.checks {
            inv.arg(index[c.key.as_str()]).arg(c.version.map(|v| v.to_string()).unwrap_or_default());
        }
        inv.arg(group.writes.len());
        for w in &group.writes {
            match w {
                GroupWrite::Put { key, value, ttl } => {
                    inv.arg("p").arg(index[key.as_str()]).arg(value.as_ref()).arg(Self::ttl_ms(*ttl)).arg(key.as_str());
                }
                GroupWrite::Delete { key } => {
                    inv.arg("d").arg(index[key.as_str()]).arg(key.as_str());
                }
            }
        }
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(|e| err(op, first.as_deref(), e))?;
        let corrupt = || StoreError::new(BACKEND, op, first.as_deref(), ErrorKind::Corrupt);
        let version = |s: &str| if s.is_empty() { Ok(None) } else { s.parse::<u64>().map(Some).map_err(|_| corrupt()) };
        match reply.as_slice() {
            [ok, out, fixed] if redis::from_redis_value_ref::<u8>(ok).ok() == Some(1) => {
                let out: Vec<String> = redis::from_redis_value_ref(out).map_err(|_| corrupt())?;
                let fixed: u64 = redis::from_redis_value_ref(fixed).map_err(|_| corrupt())?;
                self.repaired(fixed, op, first.as_deref());
                out.iter().map(|s| version(s)).collect()
            }
            [_, i, found] => {
                let i: usize = redis::from_redis_value_ref(i).map_err(|_| corrupt())?;
                let found: String = redis::from_redis_value_ref(found).map_err(|_| corrupt())?;
                let check = group.checks.get(i.wrapping_sub(1)).ok_or_else(corrupt)?;
                Err(Group::failed(BACKEND, check, version(&found)?))
            }
            _ => Err(corrupt()),
        }
    }

    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let channel = self.channel();
        let mut invs = Vec::with_capacity(keys.len());
        for k in keys {
            check_key(BACKEND, Op::BatchDelete, k)?;
            let mut inv = self.delete.prepare_invoke();
            inv.key(self.redis_key(k)).arg(&channel).arg(k.as_str());
            invs.push(inv);
        }
        let replies = self.invoke_all(&self.delete, &invs).await.map_err(|e| err(Op::BatchDelete, None, e))?;
        Ok(replies.iter().map(|r| redis::from_redis_value_ref::<u64>(r).unwrap_or(0)).sum())
    }
}

#[cfg(test)]
mod tests {
    use crate::connect::{node_url, parse_cluster_nodes};

    #[test]
    fn cluster_nodes_parse_into_addresses() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7001@17001,host2 master - 0 0 2 connected 5461-10922
a3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected
a4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
a5 :0@0 master,noaddr - 0 0 4 disconnected
a6 [::1]:7005@17005 slave a2 0 0 2 connected
";
        assert_eq!(parse_cluster_nodes(text, true), [("127.0.0.1".into(), 7000), ("127.0.0.1".into(), 7001)]);
        assert_eq!(parse_cluster_nodes(text, false).len(), 4);
        assert_eq!(parse_cluster_nodes(text, false)[3], ("::1".into(), 7005));
    }

    #[test]
    fn node_urls_keep_scheme_credentials_and_database() {
        assert_eq!(node_url("redis://u:p@h:1/2", "10.0.0.9", 7000), "redis://u:p@10.0.0.9:7000/2");
        assert_eq!(node_url("rediss://h", "x", 1), "rediss://x:1");
        assert_eq!(node_url("redis://h:1", "::1", 2), "redis://[::1]:2");
    }
}
