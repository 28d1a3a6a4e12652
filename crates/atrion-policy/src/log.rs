//! Bounded, append-only logs in the shared store: the history of applied policy changes
//! and the audit trail. One key per entry (`{prefix}{ms:013}-{node}-{seq:08}`), so that
//! nodes append without contending and keys sort in time order.
//!
//! **Invariant:** the writer enforces the [`Retention`] at every append: the entries it
//! knows of (every key under the prefix when it first appended, refreshed every
//! [`RELIST_EVERY`] appends, and its own since) are at most `max_entries`, at most
//! `max_bytes`, none older than `max_age`; what falls out is deleted in the same call,
//! oldest first. No sweeper runs behind it. With several nodes appending, the other nodes'
//! latest entries are counted at the next refresh.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use atrion_state::StateStore;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PolicyError;

/// Appends between two listings of the log (to count the other nodes' entries).
pub const RELIST_EVERY: u64 = 256;

/// How much of a log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// The most entries.
    pub max_entries: usize,
    /// The most bytes of entries (their encoded values); one entry may take at most an
    /// eighth of it.
    pub max_bytes: u64,
    /// The oldest entry kept.
    pub max_age: Duration,
}

impl Retention {
    /// At most `max_entries`, `max_bytes` and `max_age`.
    pub fn new(max_entries: usize, max_bytes: u64, max_age: Duration) -> Self {
        Retention { max_entries: max_entries.max(1), max_bytes: max_bytes.max(1024), max_age }
    }

    /// The largest entry: an eighth of the byte bound.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_bytes / 8
    }
}

impl Default for Retention {
    /// 10,000 entries, 64 MiB, 90 days.
    fn default() -> Self {
        Retention::new(10_000, 64 * 1024 * 1024, Duration::from_secs(90 * 24 * 3600))
    }
}

/// What the writer knows of the log: its keys, oldest first, with their sizes.
#[derive(Debug, Default)]
struct Index {
    keys: VecDeque<(String, u64)>,
    bytes: u64,
    /// Appends since the keys were last listed (`None`: never listed).
    since_listed: Option<u64>,
}

/// A bounded log under one prefix.
#[derive(Debug)]
pub struct Log {
    store: Arc<dyn StateStore>,
    prefix: String,
    node: String,
    retention: Retention,
    seq: AtomicU64,
    index: tokio::sync::Mutex<Index>,
}

/// One page of a log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The entries, newest first, each with its key (the cursor).
    pub entries: Vec<Logged<T>>,
    /// Pass as `before` for the next (older) page; `None` at the oldest.
    pub next: Option<String>,
}

/// An entry encoded and keyed by [`Log::prepare`], to be written by the caller.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Its key.
    pub(crate) key: String,
    /// Its encoded value.
    pub(crate) value: Bytes,
    /// When it was appended.
    at_ms: u64,
}

/// An entry and its key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Logged<T> {
    /// Its key (a cursor for paging).
    pub id: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: T,
}

impl Log {
    /// A log under `prefix` kept within `retention`, appended to as `node`.
    pub fn new(store: Arc<dyn StateStore>, prefix: String, node: &str, retention: Retention) -> Self {
        Log {
            store,
            prefix,
            node: node.to_owned(),
            retention,
            seq: AtomicU64::new(0),
            index: tokio::sync::Mutex::new(Index::default()),
        }
    }

    /// The retention.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Appends `entry` at `at_ms`, and deletes what falls out of the retention; returns
    /// its key. An entry over [`Retention::max_entry_bytes`] is refused
    /// ([`PolicyError::TooLarge`]).
    pub async fn append(&self, at_ms: u64, entry: &impl Serialize) -> Result<String, PolicyError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| PolicyError::Encode(e.to_string()))?;
        let size = bytes.len() as u64;
        if size > self.retention.max_entry_bytes() {
            return Err(PolicyError::TooLarge { bytes: size, limit: self.retention.max_entry_bytes() });
        }
        let mut index = self.index.lock().await;
        if index.since_listed.is_none_or(|n| n >= RELIST_EVERY) {
            self.relist(&mut index).await?;
        }
        let seq = self.seq.fetch_add(1, Relaxed);
        let key = format!("{}{at_ms:013}-{}-{seq:08}", self.prefix, self.node);
        self.store.put(&key, Bytes::from(bytes), None).await?;
        index.since_listed = index.since_listed.map(|n| n + 1);
        // Keys sort by time: a clock that stepped back puts this one among the older ones.
        let at = index.keys.partition_point(|(k, _)| k.as_str() < key.as_str());
        index.keys.insert(at, (key.clone(), size));
        index.bytes += size;
        self.enforce(&mut index, at_ms).await?;
        Ok(key)
    }

    /// Encodes `entry` and gives it its key, without writing it: for a caller that writes
    /// it together with other writes (one group, [`atrion_state::StateStore::transact`]),
    /// then tells the log ([`Log::written`]). Refused as [`Log::append`] refuses.
    pub(crate) fn prepare(&self, at_ms: u64, entry: &impl Serialize) -> Result<Prepared, PolicyError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| PolicyError::Encode(e.to_string()))?;
        let size = bytes.len() as u64;
        if size > self.retention.max_entry_bytes() {
            return Err(PolicyError::TooLarge { bytes: size, limit: self.retention.max_entry_bytes() });
        }
        let seq = self.seq.fetch_add(1, Relaxed);
        let key = format!("{}{at_ms:013}-{}-{seq:08}", self.prefix, self.node);
        Ok(Prepared { key, value: Bytes::from(bytes), at_ms })
    }

    /// Counts an entry of [`Log::prepare`] that the caller wrote, and deletes what falls out
    /// of the retention (as [`Log::append`] does after its write).
    pub(crate) async fn written(&self, entry: &Prepared) -> Result<(), PolicyError> {
        let mut index = self.index.lock().await;
        if index.since_listed.is_none_or(|n| n >= RELIST_EVERY) {
            // The listing may hold the entry already: it is then not counted twice.
            self.relist(&mut index).await?;
        }
        index.since_listed = index.since_listed.map(|n| n + 1);
        if let Err(at) = index.keys.binary_search_by(|(k, _)| k.as_str().cmp(entry.key.as_str())) {
            let size = entry.value.len() as u64;
            index.keys.insert(at, (entry.key.clone(), size));
            index.bytes += size;
        }
        self.enforce(&mut index, entry.at_ms).await?;
        Ok(())
    }

    /// Rewrites the entry at `key` (one this log appended): a count that grew. Past the
    /// retention, or gone, it stays gone.
    pub async fn rewrite(&self, key: &str, entry: &impl Serialize) -> Result<(), PolicyError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| PolicyError::Encode(e.to_string()))?;
        let size = bytes.len() as u64;
        if size > self.retention.max_entry_bytes() {
            return Err(PolicyError::TooLarge { bytes: size, limit: self.retention.max_entry_bytes() });
        }
        let mut index = self.index.lock().await;
        let Ok(at) = index.keys.binary_search_by(|(k, _)| k.as_str().cmp(key)) else { return Ok(()) };
        self.store.put(key, Bytes::from(bytes), None).await?;
        let old = std::mem::replace(&mut index.keys[at].1, size);
        index.bytes = index.bytes - old + size;
        let now = self.written_ms(key).unwrap_or(0);
        self.enforce(&mut index, now).await?;
        Ok(())
    }

    /// Lists the log's keys, keeping the sizes known and reading the others'.
    async fn relist(&self, index: &mut Index) -> Result<(), PolicyError> {
        let keys = self.store.list_keys(&self.prefix).await?;
        let known: std::collections::HashMap<&str, u64> = index.keys.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        let unknown: Vec<String> = keys.iter().filter(|k| !known.contains_key(k.as_str())).cloned().collect();
        let mut sizes = std::collections::HashMap::with_capacity(unknown.len());
        for chunk in unknown.chunks(256) {
            for (k, v) in chunk.iter().zip(self.store.batch_get(chunk).await?) {
                sizes.insert(k.clone(), v.map_or(0, |v| v.value.len() as u64));
            }
        }
        let listed: VecDeque<(String, u64)> = keys
            .into_iter()
            .map(|k| {
                let n = known.get(k.as_str()).copied().or_else(|| sizes.get(&k).copied()).unwrap_or(0);
                (k, n)
            })
            .collect();
        index.bytes = listed.iter().map(|(_, n)| n).sum();
        index.keys = listed;
        index.since_listed = Some(0);
        Ok(())
    }

    /// Deletes the oldest entries until the log is within its retention at `now_ms`.
    async fn enforce(&self, index: &mut Index, now_ms: u64) -> Result<u64, PolicyError> {
        let r = &self.retention;
        let oldest_kept = now_ms.saturating_sub(r.max_age.as_millis() as u64);
        let mut out = Vec::new();
        while let Some((key, size)) = index.keys.front() {
            let too_old = self.written_ms(key).is_some_and(|at| at < oldest_kept);
            if index.keys.len() <= r.max_entries && index.bytes <= r.max_bytes && !too_old {
                break;
            }
            index.bytes -= size;
            out.extend(index.keys.pop_front().map(|(k, _)| k));
        }
        if out.is_empty() {
            return Ok(0);
        }
        Ok(self.store.batch_delete(&out).await?)
    }

    /// When an entry was appended, from its key.
    fn written_ms(&self, key: &str) -> Option<u64> {
        key.strip_prefix(&self.prefix)?.get(..13)?.parse().ok()
    }

    /// Lists the log and deletes what is past its retention at `now_ms` (what every append
    /// does; for a log no one appends to).
    pub async fn trim(&self, now_ms: u64) -> Result<u64, PolicyError> {
        let mut index = self.index.lock().await;
        self.relist(&mut index).await?;
        self.enforce(&mut index, now_ms).await
    }

    /// Up to `limit` entries older than the key `before` (the newest when `None`), newest
    /// first. Entries that do not decode are skipped (and logged).
    pub async fn page<T: DeserializeOwned>(&self, before: Option<&str>, limit: usize) -> Result<Page<T>, PolicyError> {
        let keys = self.store.list_keys(&self.prefix).await?;
        let end = before.map_or(keys.len(), |b| keys.partition_point(|k| k.as_str() < b));
        let start = end.saturating_sub(limit.max(1));
        let chosen: Vec<String> = keys[start..end].iter().rev().cloned().collect();
        let entries = self.read(chosen).await?;
        let next = (start > 0).then(|| keys[start].clone());
        Ok(Page { entries, next })
    }

    /// Every entry, oldest first.
    pub async fn all<T: DeserializeOwned>(&self) -> Result<Vec<Logged<T>>, PolicyError> {
        let keys = self.store.list_keys(&self.prefix).await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(256) {
            out.extend(self.read(chunk.to_vec()).await?);
        }
        Ok(out)
    }

    async fn read<T: DeserializeOwned>(&self, keys: Vec<String>) -> Result<Vec<Logged<T>>, PolicyError> {
        let values = self.store.batch_get(&keys).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (id, v) in keys.into_iter().zip(values) {
            let Some(v) = v else { continue };
            match serde_json::from_slice(&v.value) {
                Ok(entry) => out.push(Logged { id, entry }),
                Err(e) => tracing::warn!(key = %id, error = %e, "a log entry does not decode: skipped"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrion_state::InMemoryStore;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn log(store: &Arc<dyn StateStore>, node: &str, r: Retention) -> Log {
        Log::new(store.clone(), "log/".into(), node, r)
    }

    async fn count(store: &Arc<dyn StateStore>) -> usize {
        store.list_keys("log/").await.unwrap().len()
    }

    #[tokio::test]
    async fn the_bound_holds_at_every_append() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let l = log(&store, "a", Retention::new(5, 1 << 20, Duration::from_secs(3600)));
        for i in 0..40u64 {
            l.append(1_000 + i, &i).await.unwrap();
            assert!(count(&store).await <= 5, "after append {i}");
        }
        let kept: Vec<Logged<u64>> = l.all().await.unwrap();
        assert_eq!(kept.iter().map(|e| e.entry).collect::<Vec<_>>(), [35, 36, 37, 38, 39], "the newest stay");
    }

    #[tokio::test]
    async fn old_and_large_entries_fall_out() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let l = log(&store, "a", Retention::new(1_000, 4096, Duration::from_millis(DAY_MS)));
        l.append(DAY_MS, &"old").await.unwrap();
        l.append(3 * DAY_MS, &"new").await.unwrap();
        assert_eq!(count(&store).await, 1, "a day past the age bound");
        // 4096 bytes: at most 512 per entry, and the bytes bound the log.
        let big = "x".repeat(400);
        for i in 0..20 {
            l.append(3 * DAY_MS + i, &big).await.unwrap();
        }
        assert!(count(&store).await * 402 <= 4096, "{} entries", count(&store).await);
        let err = l.append(3 * DAY_MS, &"y".repeat(600)).await.unwrap_err();
        assert!(matches!(err, PolicyError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn other_writers_entries_are_counted_at_the_next_listing() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let r = Retention::new(10, 1 << 20, Duration::from_secs(3600));
        let (a, b) = (log(&store, "a", r.clone()), log(&store, "b", r));
        for i in 0..30u64 {
            b.append(1_000 + i, &i).await.unwrap();
        }
        a.append(2_000, &0u64).await.unwrap();
        assert_eq!(count(&store).await, 10, "the first append lists the log");
    }
    #[tokio::test]
    async fn pages_go_newest_first_from_a_cursor_to_the_oldest() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let l = log(&store, "a", Retention::new(100, 1 << 20, Duration::from_secs(3600)));
        for i in 0..5u64 {
            l.append(1_000 + i, &i).await.unwrap();
        }
        let first: Page<u64> = l.page(None, 2).await.unwrap();
        assert_eq!(first.entries.iter().map(|e| e.entry).collect::<Vec<_>>(), [4, 3]);
        let second: Page<u64> = l.page(first.next.as_deref(), 2).await.unwrap();
        assert_eq!(second.entries.iter().map(|e| e.entry).collect::<Vec<_>>(), [2, 1]);
        let last: Page<u64> = l.page(second.next.as_deref(), 2).await.unwrap();
        assert_eq!((last.entries.iter().map(|e| e.entry).collect::<Vec<_>>(), last.next), (vec![0], None));
        let all: Vec<Logged<u64>> = l.all().await.unwrap();
        assert_eq!(all.iter().map(|e| e.entry).collect::<Vec<_>>(), [0, 1, 2, 3, 4], "oldest first");
    }

    #[tokio::test]
    async fn a_rewrite_replaces_an_entry_in_place_and_a_gone_one_stays_gone() {
        let store: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let l = log(&store, "a", Retention::new(1, 1 << 20, Duration::from_secs(3600)));
        let old = l.append(1_000, &1u64).await.unwrap();
        let key = l.append(1_001, &2u64).await.unwrap();
        l.rewrite(&key, &3u64).await.unwrap();
        l.rewrite(&old, &4u64).await.unwrap();
        let all: Vec<Logged<u64>> = l.all().await.unwrap();
        assert_eq!(all.iter().map(|e| (e.id.as_str(), e.entry)).collect::<Vec<_>>(), [(key.as_str(), 3)]);
    }
}
