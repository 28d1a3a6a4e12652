//! # atrion-redis
//!
//! A [`StateStore`] over Redis, so that the pods of a cluster share scar tissue.
//!
//! - One auto-reconnecting, multiplexed connection ([`redis::aio::ConnectionManager`]) shared
//!   by all callers; connect and command timeouts.
//! - Each entry is a hash (`v` = value, `ver` = version) under `{namespace}:{tag}rest`, where
//!   the hash tag is the route part of Atrion's keys (everything before the last `/node/`),
//!   so that one route's keys share a hash slot.
//! - Writes, compare-and-swap and deletes are Lua scripts: the version bump, the write, the
//!   TTL and the change notification happen atomically. Batches are pipelined.
//! - The change feed: hints over pub/sub, and a [`atrion_state::Change::Resync`] after every reconnect,
//!   since pub/sub loses what is sent while a client is away.
//! - `redis://` and `rediss://` (TLS, rustls with ring; a private CA through
//!   [`RedisConfig::ca_cert`]), with AUTH from the URL (`redis://user:password@host`).
//!
//! Redis Cluster: the version counter is one key, so the scripts touch two slots; this
//! adapter targets a single Redis (or a primary with replicas) today.
//!
//! ## Features
//! - `testing`: `testing::RedisServer`, a private `redis-server` for tests and benches.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::time::Duration;

use async_trait::async_trait;
use atrion_state::shares::{ShareWrite, Shares, format_rank};
use atrion_state::{
    Capabilities, CasOutcome, ChangeFeed, CleanupStats, Entry, ErrorKind, Op, StateStore, StoreError, StoreStats,
    check_key, check_share, check_value,
};
use bytes::Bytes;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

mod config;
mod feed;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::RedisConfig;
use scripts::{BATCH_CHUNK, CAS, DELETE, PUT, PUT_BATCH, REPAIRS, SHARE_PUT, SHARES_COMMON, SHARES_READ};

const BACKEND: &str = "redis";

/// The Redis store. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    cfg: RedisConfig,
    put: Script,
    put_batch: Script,
    cas: Script,
    delete: Script,
    share_put: Script,
    shares_read: Script,
    repairs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("namespace", &self.cfg.namespace).finish_non_exhaustive()
    }
}

fn err(op: Op, key: Option<&str>, e: redis::RedisError) -> StoreError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Backend
    };
    StoreError::new(BACKEND, op, key, kind).with_source(e)
}

impl RedisStore {
    /// Connects (within `connect_timeout`) and checks the server answers.
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, StoreError> {
        cfg.validate()?;
        let invalid = |e: redis::RedisError| {
            StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(format!("invalid url: {e}"))).with_source(e)
        };
        let client = if cfg.url.starts_with("rediss://") {
            // One crypto provider is compiled in (ring); make it the process default if
            // nothing else has been chosen.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let root_cert = match &cfg.ca_cert {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    let why = format!("cannot read `ca_cert` {}", path.display());
                    StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(why)).with_source(e)
                })?),
                None => None,
            };
            let certs = redis::TlsCertificates { client_tls: None, root_cert };
            redis::Client::build_with_tls(cfg.url.as_str(), certs).map_err(invalid)?
        } else {
            redis::Client::open(cfg.url.as_str()).map_err(invalid)?
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            .set_number_of_retries(2);
        let connect = client.get_connection_manager_with_config(config);
        let mut conn = tokio::time::timeout(cfg.connect_timeout, connect)
            .await
            .map_err(|_| StoreError::new(BACKEND, Op::Open, None, ErrorKind::Timeout))?
            .map_err(|e| err(Op::Open, None, e))?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| err(Op::Open, None, e))?;
        Ok(RedisStore {
            client,
            conn,
            cfg: cfg.clone(),
            put: Script::new(&format!("{REPAIRS}{PUT}")),
            put_batch: Script::new(&format!("{REPAIRS}{PUT_BATCH}")),
            cas: Script::new(&format!("{REPAIRS}{CAS}")),
            delete: Script::new(DELETE),
            share_put: Script::new(&format!("{SHARES_COMMON}{SHARE_PUT}")),
            shares_read: Script::new(&format!("{SHARES_COMMON}{SHARES_READ}")),
            repairs: Default::default(),
        })
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

    fn counter(&self) -> String {
        format!("{}:version", self.cfg.namespace)
    }

    fn channel(&self) -> String {
        format!("{}:changes", self.cfg.namespace)
    }

    fn entries_prefix(&self) -> String {
        format!("{}:e:", self.cfg.namespace)
    }

    fn redis_key(&self, key: &str) -> String {
        redis_key(&self.entries_prefix(), key)
    }

    fn user_key(&self, rk: &str) -> Option<String> {
        user_key(&self.entries_prefix(), rk)
    }

    /// The hash of values and the sorted set of ranks of `key`'s shares: `{ns}:sv:{key}` and
    /// `{ns}:sr:{key}`, the key escaped so that it is their hash tag (one slot).
    fn share_keys(&self, key: &str) -> (String, String) {
        let tag = escape_tag(key);
        (format!("{}:sv:{{{tag}}}", self.cfg.namespace), format!("{}:sr:{{{tag}}}", self.cfg.namespace))
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
        let mut pipe = redis::pipe();
        pipe.load_script(&self.shares_read).ignore();
        for k in keys {
            check_key(BACKEND, op, k)?;
            let (values, ranks) = self.share_keys(k);
            pipe.invoke_script(self.shares_read.key(values).key(ranks).arg(member).arg(last));
        }
        let mut conn = self.conn.clone();
        let raw: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(|e| err(op, None, e))?;
        keys.iter()
            .zip(raw)
            .map(|(k, reply)| match reply {
                redis::Value::Nil => Ok(None),
                // Something else than our hash and sorted set under the key (a script error,
                // WRONGTYPE), or bytes that do not decode.
                other => match redis::from_redis_value::<Vec<u8>>(other).ok().and_then(|b| Shares::decode(&b)) {
                    Some(shares) => Ok(Some(shares)),
                    None => Err(StoreError::new(BACKEND, op, Some(k), ErrorKind::Corrupt)),
                },
            })
            .collect()
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

    async fn scan(&self, op: Op) -> Result<Vec<String>, StoreError> {
        self.scan_match(op, &format!("{}*", self.entries_prefix())).await
    }

    async fn scan_match(&self, op: Op, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut conn)
                .await
                .map_err(|e| err(op, None, e))?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl StateStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { ttl: true, atomic: true, transactions: false, change_feed: true, persistent: true, shared: true }
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
        check_key(BACKEND, Op::Set, key)?;
        check_value(BACKEND, Op::Set, key, &value)?;
        let mut conn = self.conn.clone();
        let (version, fixed): (u64, u64) = self
            .put
            .key(self.redis_key(key))
            .key(self.counter())
            .arg(value.as_ref())
            .arg(Self::ttl_ms(ttl))
            .arg(self.channel())
            .arg(key)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| err(Op::Set, Some(key), e))?;
        self.repaired(fixed, Op::Set, Some(key));
        Ok(version)
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
        let (swapped, version, fixed): (u8, String, u64) = self
            .cas
            .key(self.redis_key(key))
            .key(self.counter())
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
        let keys = self.scan(Op::Stats).await?;
        let mut conn = self.conn.clone();
        let mut stats = StoreStats::default();
        for chunk in keys.chunks(500) {
            // One round trip per chunk: the value's length, and whether the key still lives
            // (one that expired since SCAN reads as 0 bytes; an empty value does too).
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("HSTRLEN").arg(k).arg("v").cmd("EXISTS").arg(k);
            }
            let replies: Vec<u64> = pipe.query_async(&mut conn).await.map_err(|e| err(Op::Stats, None, e))?;
            for pair in replies.chunks(2) {
                if let [len, 1] = pair {
                    stats.keys += 1;
                    stats.value_bytes += len;
                }
            }
        }
        Ok(stats)
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        // Redis expires entries itself.
        Ok(CleanupStats::default())
    }

    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        let (tx, rx) = mpsc::channel(4096);
        let client = self.client.clone();
        let channel = self.channel();
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| err(Op::Subscribe, None, e))?;
        pubsub.subscribe(&channel).await.map_err(|e| err(Op::Subscribe, None, e))?;
        tokio::spawn(feed::forward(client, channel, pubsub, tx));
        Ok(Some(ChangeFeed::from_channel(rx, prefix)))
    }

    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            check_key(BACKEND, Op::BatchGet, k)?;
            let rk = self.redis_key(k);
            pipe.cmd("HMGET").arg(&rk).arg("v").arg("ver").cmd("PTTL").arg(&rk);
        }
        let mut conn = self.conn.clone();
        let raw: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(|e| err(Op::BatchGet, None, e))?;
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
        let mut pipe = redis::pipe();
        pipe.load_script(&self.put_batch).ignore();
        let counter = self.counter();
        let channel = self.channel();
        for chunk in items.chunks(BATCH_CHUNK) {
            let mut inv = self.put_batch.prepare_invoke();
            inv.key(&counter);
            inv.arg(&channel);
            for (k, v, ttl) in chunk {
                inv.key(self.redis_key(k));
                inv.arg(v.as_ref()).arg(Self::ttl_ms(*ttl)).arg(k.as_str());
            }
            pipe.invoke_script(&inv);
        }
        let mut conn = self.conn.clone();
        let ranges: Vec<(u64, u64, u64)> = pipe.query_async(&mut conn).await.map_err(|e| err(Op::BatchSet, None, e))?;
        self.repaired(ranges.iter().map(|r| r.2).sum(), Op::BatchSet, None);
        Ok(ranges.into_iter().flat_map(|(first, last, _)| first..=last).collect())
    }

    /// One script per share, pipelined (each script stays in its key's slot); the scripts
    /// notify only when a key's two leaders or member count change.
    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        for w in &items {
            check_share(BACKEND, Op::PutShares, w)?;
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&self.share_put).ignore();
        let channel = self.channel();
        for w in &items {
            let (values, ranks) = self.share_keys(&w.key);
            let mut inv = self.share_put.prepare_invoke();
            inv.key(values).key(ranks);
            inv.arg(&w.share.member).arg(format_rank(w.share.rank)).arg(w.share.value.as_ref());
            inv.arg(&channel).arg(&w.key);
            pipe.invoke_script(&inv);
        }
        let mut conn = self.conn.clone();
        let fixed: Vec<u64> = pipe.query_async(&mut conn).await.map_err(|e| err(Op::PutShares, None, e))?;
        self.repaired(fixed.iter().sum(), Op::PutShares, None);
        Ok(())
    }

    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        self.read_shares(Op::GetShares, keys, member, 1).await
    }

    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        Ok(self.read_shares(Op::GetShares, std::slice::from_ref(&key.to_owned()), "", -1).await?.pop().flatten())
    }

    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let head = format!("{}:sr:{{", self.cfg.namespace);
        let mut keys: Vec<String> = self
            .scan_match(Op::ListShares, &format!("{head}*"))
            .await?
            .iter()
            .filter_map(|k| unescape_tag(k.strip_prefix(&head)?.strip_suffix('}')?))
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&self.delete).ignore();
        for k in keys {
            check_key(BACKEND, Op::BatchDelete, k)?;
            pipe.invoke_script(self.delete.key(self.redis_key(k)).arg(self.channel()).arg(k));
        }
        let mut conn = self.conn.clone();
        let deleted: Vec<u64> = pipe.query_async(&mut conn).await.map_err(|e| err(Op::BatchDelete, None, e))?;
        Ok(deleted.iter().sum())
    }
}

/// `{prefix}{tag}rest`: the tag is the key up to its last `/node/` (one route, one slot), or
/// the whole key; `{}` (no tag) when the tag itself has braces.
fn redis_key(prefix: &str, key: &str) -> String {
    let tag_len = key.rfind("/node/").unwrap_or(key.len());
    let (tag, rest) = key.split_at(tag_len);
    if tag.is_empty() || tag.contains(['{', '}']) {
        format!("{prefix}{{}}{key}")
    } else {
        format!("{prefix}{{{tag}}}{rest}")
    }
}

/// `key` with `%`, `{` and `}` escaped (`%25`, `%7B`, `%7D`), to be a hash tag.
fn escape_tag(key: &str) -> String {
    key.replace('%', "%25").replace('{', "%7B").replace('}', "%7D")
}

/// The inverse of [`escape_tag`]; `None` for a tag it cannot have built.
fn unescape_tag(tag: &str) -> Option<String> {
    if tag.contains(['{', '}']) {
        return None;
    }
    let mut out = String::with_capacity(tag.len());
    let mut rest = tag;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        out.push(match rest.get(i + 1..i + 3)? {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The inverse of [`redis_key`].
fn user_key(prefix: &str, redis_key: &str) -> Option<String> {
    let rest = redis_key.strip_prefix(prefix)?.strip_prefix('{')?;
    let close = rest.find('}')?;
    Some(format!("{}{}", &rest[..close], &rest[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_one_slot_per_route_and_back() {
        let p = "ns:e:";
        assert_eq!(redis_key(p, "ns/route/GET /a/node/n1"), "ns:e:{ns/route/GET /a}/node/n1");
        assert_eq!(redis_key(p, "plain"), "ns:e:{plain}");
        assert_eq!(redis_key(p, "with{brace}/node/x"), "ns:e:{}with{brace}/node/x");
        for key in ["ns/route/GET /a/node/n1", "plain", "with{brace}/node/x", "a}b", "/node/x", "k/node/a/node/b"] {
            assert_eq!(user_key(p, &redis_key(p, key)).as_deref(), Some(key), "{key}");
        }
        assert_eq!(user_key(p, "other:e:{x}"), None);
    }

    #[test]
    fn share_tags_escape_braces_and_come_back() {
        for key in ["ns/route/GET /a", "a{b}c", "100%", "%7B", "{}", ""] {
            let tag = escape_tag(key);
            assert!(!tag.contains(['{', '}']), "{tag}");
            assert_eq!(unescape_tag(&tag).as_deref(), Some(key));
        }
        assert_eq!(unescape_tag("%zz"), None);
        assert_eq!(unescape_tag("%7"), None);
    }
}
