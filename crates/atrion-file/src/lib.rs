//! # atrion-file
//!
//! An embedded, crash-safe, ACID [`StateStore`] in one file, on
//! [redb](https://docs.rs/redb): copy-on-write B-trees, every commit durable before it is
//! acknowledged. State survives a restart of the process (and a `kill -9` in the middle of a
//! write: a test proves it). One process owns the file at a time.
//!
//! Each entry is stored as `version (u64 LE) ++ expiry in ms since the Unix epoch (u64 LE,
//! 0 = none) ++ value`; a counter of the last version lives in a second table, written in
//! the same transaction, so versions never repeat across restarts. A group of writes
//! ([`StateStore::transact`]) is one write transaction: one commit, or nothing (a `kill -9`
//! mid-group included: a test proves it). TTLs use the wall clock,
//! since they must survive a restart.
//!
//! ```
//! use atrion_file::{FileConfig, FileStore};
//! use atrion_state::StateStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = FileStore::open(&FileConfig::new(dir.path().join("atrion.redb"))).await?;
//! store.set("ns/route/checkout", "scarred".into()).await?;
//! drop(store);
//! let again = FileStore::open(&FileConfig::new(dir.path().join("atrion.redb"))).await?;
//! assert!(again.exists("ns/route/checkout").await?);
//! # Ok::<(), atrion_state::StoreError>(())
//! # }).unwrap();
//! ```
//!
//! This crate has no cargo features.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atrion_state::shares::{ShareWrite, Shares};
use atrion_state::{
    Capabilities, CasOutcome, Change, ChangeBus, ChangeFeed, CleanupStats, Clock, Entry, ErrorKind, Group, GroupWrite,
    Op, StateStore, StoreError, StoreStats, SystemClock, check_key, check_share, check_value,
};
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;

const BACKEND: &str = "file";
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_VERSION: &str = "last_version";
const HEADER: usize = 16;

/// Configuration of a [`FileStore`], readable from a config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileConfig {
    /// The database file; created (with its folder) if missing.
    pub path: PathBuf,
    /// redb's page cache, in bytes (default: redb's own).
    #[serde(default)]
    pub cache_bytes: Option<usize>,
}

impl FileConfig {
    /// A config for the file at `path`, with defaults otherwise.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileConfig { path: path.into(), cache_bytes: None }
    }

    /// Checks the config.
    pub fn validate(&self) -> Result<(), StoreError> {
        let fail = |why: &str| StoreError::new(BACKEND, Op::Open, None, ErrorKind::Config(why.to_owned()));
        if self.path.as_os_str().is_empty() {
            return Err(fail("`path` is empty"));
        }
        if self.path.is_dir() {
            return Err(fail(&format!("`path` {} is a folder, not a file", self.path.display())));
        }
        if self.cache_bytes == Some(0) {
            return Err(fail("`cache_bytes` must be > 0"));
        }
        Ok(())
    }
}

/// The file store. Cheap to clone: clones share the database.
#[derive(Debug, Clone)]
pub struct FileStore {
    db: Arc<Database>,
    changes: ChangeBus,
    path: PathBuf,
    /// TTLs are kept as wall-clock deadlines (they outlive the process), on this clock.
    clock: Arc<dyn Clock>,
}

fn err(op: Op, key: Option<&str>, e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    let kind = match &e {
        redb::Error::Corrupted(_) => ErrorKind::Corrupt,
        redb::Error::DatabaseAlreadyOpen => ErrorKind::Unavailable,
        redb::Error::DatabaseClosed => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    };
    StoreError::new(BACKEND, op, key, kind).with_source(e)
}

/// An entry as stored: header and value.
struct Record<'a> {
    version: u64,
    expires_ms: u64,
    value: &'a [u8],
}

impl<'a> Record<'a> {
    fn decode(op: Op, key: &str, bytes: &'a [u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::new(BACKEND, op, Some(key), ErrorKind::Corrupt);
        let (head, value) = bytes.split_at_checked(HEADER).ok_or_else(corrupt)?;
        let word = |i: usize| head[i..i + 8].try_into().map(u64::from_le_bytes).map_err(|_| corrupt());
        Ok(Record { version: word(0)?, expires_ms: word(8)?, value })
    }

    fn encode(version: u64, expires_ms: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + value.len());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&expires_ms.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn live(&self, now_ms: u64) -> bool {
        self.expires_ms == 0 || self.expires_ms > now_ms
    }

    fn entry(&self, now_ms: u64) -> Entry {
        Entry {
            value: Bytes::copy_from_slice(self.value),
            version: self.version,
            ttl: (self.expires_ms != 0).then(|| Duration::from_millis(self.expires_ms.saturating_sub(now_ms))),
        }
    }
}

fn expiry(ttl: Option<Duration>, now_ms: u64) -> u64 {
    // At least 1 ms in the future: 0 means "no expiry".
    ttl.map_or(0, |t| now_ms.saturating_add((t.as_millis() as u64).max(1)))
}

impl FileStore {
    /// Opens (or creates) the database file, recovering it if the last process died
    /// mid-write.
    pub async fn open(config: &FileConfig) -> Result<Self, StoreError> {
        Self::open_with_clock(config, Arc::new(SystemClock::new())).await
    }

    /// [`FileStore::open`], its TTLs on `clock` (the process's one clock).
    pub async fn open_with_clock(config: &FileConfig, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        config.validate()?;
        let config = config.clone();
        let path = config.path.clone();
        let db = tokio::task::spawn_blocking(move || -> Result<Database, StoreError> {
            if let Some(parent) = config.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::new(
                        BACKEND,
                        Op::Open,
                        None,
                        ErrorKind::Config(format!("cannot create {}", parent.display())),
                    )
                    .with_source(e)
                })?;
            }
            let mut builder = Database::builder();
            if let Some(bytes) = config.cache_bytes {
                builder.set_cache_size(bytes);
            }
            let db = builder.create(&config.path).map_err(|e| err(Op::Open, None, e))?;
            let txn = db.begin_write().map_err(|e| err(Op::Open, None, e))?;
            txn.open_table(ENTRIES).map_err(|e| err(Op::Open, None, e))?;
            txn.open_table(META).map_err(|e| err(Op::Open, None, e))?;
            txn.commit().map_err(|e| err(Op::Open, None, e))?;
            Ok(db)
        })
        .await
        .map_err(|e| StoreError::new(BACKEND, Op::Open, None, ErrorKind::Backend).with_source(e))??;
        Ok(FileStore { db: Arc::new(db), changes: ChangeBus::new(), path, clock })
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs blocking database work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        op: Op,
        key: Option<&str>,
        f: impl FnOnce(&Database, &dyn Clock) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (db, clock) = (self.db.clone(), self.clock.clone());
        tokio::task::spawn_blocking(move || f(&db, clock.as_ref()))
            .await
            .map_err(|e| StoreError::new(BACKEND, op, key, ErrorKind::Backend).with_source(e))?
    }

    fn notify(&self, change: Change) {
        self.changes.notify(change);
    }

    /// Writes many entries in one transaction (one commit, one fsync).
    fn write_all(
        db: &Database,
        clock: &dyn Clock,
        op: Op,
        items: &[(String, Bytes, Option<Duration>)],
    ) -> Result<Vec<u64>, StoreError> {
        let txn = db.begin_write().map_err(|e| err(op, None, e))?;
        let now = clock.wall_ms();
        let mut versions = Vec::with_capacity(items.len());
        {
            let mut meta = txn.open_table(META).map_err(|e| err(op, None, e))?;
            let mut entries = txn.open_table(ENTRIES).map_err(|e| err(op, None, e))?;
            let mut last = meta.get(LAST_VERSION).map_err(|e| err(op, None, e))?.map_or(0, |g| g.value());
            for (key, value, ttl) in items {
                last += 1;
                let record = Record::encode(last, expiry(*ttl, now), value);
                entries.insert(key.as_str(), record.as_slice()).map_err(|e| err(op, Some(key), e))?;
                versions.push(last);
            }
            meta.insert(LAST_VERSION, last).map_err(|e| err(op, None, e))?;
        }
        txn.commit().map_err(|e| err(op, None, e))?;
        Ok(versions)
    }

    /// A group in one write transaction: its preconditions read and its writes made inside
    /// it, committed once (one fsync), or dropped (rolled back) when a precondition fails.
    /// redb has one writer at a time, so groups are serialized; a crash before the commit
    /// is durable leaves none of the group. Returns each write's version and the changes to
    /// announce.
    fn write_group(
        db: &Database,
        clock: &dyn Clock,
        group: Group,
    ) -> Result<(Vec<Option<u64>>, Vec<Change>), StoreError> {
        let op = Op::Transact;
        let txn = db.begin_write().map_err(|e| err(op, None, e))?;
        let now = clock.wall_ms();
        let mut versions = Vec::with_capacity(group.writes.len());
        let mut changes = Vec::with_capacity(group.writes.len());
        {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| err(op, None, e))?;
            for check in &group.checks {
                let k = check.key.as_str();
                let found = match entries.get(k).map_err(|e| err(op, Some(k), e))? {
                    Some(guard) => {
                        let r = Record::decode(op, k, guard.value())?;
                        r.live(now).then_some(r.version)
                    }
                    None => None,
                };
                if found != check.version {
                    // Dropping the transaction aborts it: nothing was written.
                    return Err(Group::failed(BACKEND, check, found));
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| err(op, None, e))?;
            let mut last = meta.get(LAST_VERSION).map_err(|e| err(op, None, e))?.map_or(0, |g| g.value());
            for w in group.writes {
                match w {
                    GroupWrite::Put { key, value, ttl } => {
                        last += 1;
                        let record = Record::encode(last, expiry(ttl, now), &value);
                        entries.insert(key.as_str(), record.as_slice()).map_err(|e| err(op, Some(&key), e))?;
                        versions.push(Some(last));
                        changes.push(Change::Set { key, version: last, value: Some(value) });
                    }
                    GroupWrite::Delete { key } => {
                        let live = match entries.remove(key.as_str()).map_err(|e| err(op, Some(&key), e))? {
                            Some(guard) => Record::decode(op, &key, guard.value())?.live(now),
                            None => false,
                        };
                        versions.push(None);
                        if live {
                            changes.push(Change::Deleted { key });
                        }
                    }
                }
            }
            meta.insert(LAST_VERSION, last).map_err(|e| err(op, None, e))?;
        }
        txn.commit().map_err(|e| err(op, None, e))?;
        Ok((versions, changes))
    }

    /// Sets every member's share in one transaction (one commit, one fsync, however many
    /// routes a pulse carries), each key's shares read and rewritten inside it; returns
    /// each key's new value and version, in order, for the change feed. One commit per key,
    /// as the port's default does it, made a pulse with a few hundred changed routes take
    /// longer than the sync's store timeout: the pulse failed, kept everything pending, and
    /// failed again, and a healthy file read as degraded.
    fn write_shares(
        db: &Database,
        clock: &dyn Clock,
        items: &[ShareWrite],
    ) -> Result<Vec<(String, Bytes, u64)>, StoreError> {
        let op = Op::PutShares;
        let txn = db.begin_write().map_err(|e| err(op, None, e))?;
        let now = clock.wall_ms();
        let mut written = Vec::with_capacity(items.len());
        {
            let mut meta = txn.open_table(META).map_err(|e| err(op, None, e))?;
            let mut entries = txn.open_table(ENTRIES).map_err(|e| err(op, None, e))?;
            let mut last = meta.get(LAST_VERSION).map_err(|e| err(op, None, e))?.map_or(0, |g| g.value());
            for w in items {
                let key = w.key.as_str();
                // As the port's default: something under the key that is not shares is
                // replaced, and a key's expiry is kept.
                let (mut shares, expires_ms) = match entries.get(key).map_err(|e| err(op, Some(key), e))? {
                    Some(guard) => {
                        let r = Record::decode(op, key, guard.value())?;
                        let shares = r.live(now).then(|| Shares::decode(r.value)).flatten();
                        (shares.unwrap_or_default(), if r.live(now) { r.expires_ms } else { 0 })
                    }
                    None => (Shares::default(), 0),
                };
                shares.upsert(w.share.clone());
                let value = shares.encode();
                check_value(BACKEND, op, key, &value)?;
                last += 1;
                let record = Record::encode(last, expires_ms, &value);
                entries.insert(key, record.as_slice()).map_err(|e| err(op, Some(key), e))?;
                written.push((w.key.clone(), value, last));
            }
            meta.insert(LAST_VERSION, last).map_err(|e| err(op, None, e))?;
        }
        txn.commit().map_err(|e| err(op, None, e))?;
        Ok(written)
    }
}

#[async_trait]
impl StateStore for FileStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // The change feed covers writes made through this process, which owns the file.
        Capabilities {
            ttl: true,
            atomic: true,
            transactions: true,
            one_slot_groups: false,
            change_feed: true,
            persistent: true,
            shared: false,
            native_shares: false,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(BACKEND, Op::Get, key)?;
        // One B-tree lookup in a read transaction, mostly from redb's page cache: a few
        // microseconds, less than handing it to the blocking pool would cost.
        let txn = self.db.begin_read().map_err(|e| err(Op::Get, Some(key), e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| err(Op::Get, Some(key), e))?;
        let Some(guard) = table.get(key).map_err(|e| err(Op::Get, Some(key), e))? else {
            return Ok(None);
        };
        let record = Record::decode(Op::Get, key, guard.value())?;
        let now = self.clock.wall_ms();
        Ok(record.live(now).then(|| record.entry(now)))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        check_key(BACKEND, Op::Set, key)?;
        check_value(BACKEND, Op::Set, key, &value)?;
        let items = vec![(key.to_owned(), value.clone(), ttl)];
        let versions =
            self.blocking(Op::Set, Some(key), move |db, clock| Self::write_all(db, clock, Op::Set, &items)).await?;
        let version = versions.first().copied().unwrap_or_default();
        self.notify(Change::Set { key: key.to_owned(), version, value: Some(value) });
        Ok(version)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(BACKEND, Op::Delete, key)?;
        let k = key.to_owned();
        let existed = self
            .blocking(Op::Delete, Some(key), move |db, clock| {
                let txn = db.begin_write().map_err(|e| err(Op::Delete, Some(&k), e))?;
                let existed = {
                    let mut table = txn.open_table(ENTRIES).map_err(|e| err(Op::Delete, Some(&k), e))?;
                    let removed = table.remove(k.as_str()).map_err(|e| err(Op::Delete, Some(&k), e))?;
                    match removed {
                        Some(guard) => Record::decode(Op::Delete, &k, guard.value())?.live(clock.wall_ms()),
                        None => false,
                    }
                };
                txn.commit().map_err(|e| err(Op::Delete, Some(&k), e))?;
                Ok(existed)
            })
            .await?;
        if existed {
            self.notify(Change::Deleted { key: key.to_owned() });
        }
        Ok(existed)
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(Op::ListKeys, None, move |db, clock| {
            let txn = db.begin_read().map_err(|e| err(Op::ListKeys, None, e))?;
            let table = txn.open_table(ENTRIES).map_err(|e| err(Op::ListKeys, None, e))?;
            let now = clock.wall_ms();
            let mut keys = Vec::new();
            for item in table.range(prefix.as_str()..).map_err(|e| err(Op::ListKeys, None, e))? {
                let (k, v) = item.map_err(|e| err(Op::ListKeys, None, e))?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                if Record::decode(Op::ListKeys, key, v.value())?.live(now) {
                    keys.push(key.to_owned());
                }
            }
            Ok(keys)
        })
        .await
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
        let k = key.to_owned();
        let written = value.clone();
        let outcome = self
            .blocking(Op::CompareAndSwap, Some(key), move |db, clock| {
                let op = Op::CompareAndSwap;
                let txn = db.begin_write().map_err(|e| err(op, Some(&k), e))?;
                let now = clock.wall_ms();
                let version = {
                    let mut entries = txn.open_table(ENTRIES).map_err(|e| err(op, Some(&k), e))?;
                    let current = match entries.get(k.as_str()).map_err(|e| err(op, Some(&k), e))? {
                        Some(guard) => {
                            let r = Record::decode(op, &k, guard.value())?;
                            r.live(now).then_some(r.version)
                        }
                        None => None,
                    };
                    if current != expected {
                        return Ok(CasOutcome::Conflict { current });
                    }
                    let mut meta = txn.open_table(META).map_err(|e| err(op, None, e))?;
                    let last = meta.get(LAST_VERSION).map_err(|e| err(op, None, e))?.map_or(0, |g| g.value()) + 1;
                    meta.insert(LAST_VERSION, last).map_err(|e| err(op, None, e))?;
                    let record = Record::encode(last, expiry(ttl, now), &value);
                    entries.insert(k.as_str(), record.as_slice()).map_err(|e| err(op, Some(&k), e))?;
                    last
                };
                txn.commit().map_err(|e| err(op, Some(&k), e))?;
                Ok(CasOutcome::Swapped { version })
            })
            .await?;
        if let CasOutcome::Swapped { version } = outcome {
            self.notify(Change::Set { key: key.to_owned(), version, value: Some(written) });
        }
        Ok(outcome)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.blocking(Op::Stats, None, |db, clock| {
            let txn = db.begin_read().map_err(|e| err(Op::Stats, None, e))?;
            let table = txn.open_table(ENTRIES).map_err(|e| err(Op::Stats, None, e))?;
            let now = clock.wall_ms();
            let mut stats = StoreStats::default();
            for item in table.iter().map_err(|e| err(Op::Stats, None, e))? {
                let (k, v) = item.map_err(|e| err(Op::Stats, None, e))?;
                let record = Record::decode(Op::Stats, k.value(), v.value())?;
                if record.live(now) {
                    stats.keys += 1;
                    stats.value_bytes += record.value.len() as u64;
                }
            }
            Ok(stats)
        })
        .await
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        let expired = self
            .blocking(Op::Cleanup, None, |db, clock| {
                let txn = db.begin_write().map_err(|e| err(Op::Cleanup, None, e))?;
                let now = clock.wall_ms();
                let mut expired = Vec::new();
                {
                    let mut table = txn.open_table(ENTRIES).map_err(|e| err(Op::Cleanup, None, e))?;
                    table
                        .retain(|k, v| {
                            // A record too short to decode is kept, for a human to look at.
                            let live = Record::decode(Op::Cleanup, k, v).map_or(true, |r| r.live(now));
                            if !live {
                                expired.push(k.to_owned());
                            }
                            live
                        })
                        .map_err(|e| err(Op::Cleanup, None, e))?;
                }
                txn.commit().map_err(|e| err(Op::Cleanup, None, e))?;
                Ok(expired)
            })
            .await?;
        let n = expired.len() as u64;
        for key in expired {
            self.notify(Change::Expired { key });
        }
        Ok(CleanupStats { expired: n })
    }

    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        Ok(Some(self.changes.subscribe(prefix)))
    }

    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        for k in keys {
            check_key(BACKEND, Op::BatchGet, k)?;
        }
        let keys = keys.to_vec();
        self.blocking(Op::BatchGet, None, move |db, clock| {
            let txn = db.begin_read().map_err(|e| err(Op::BatchGet, None, e))?;
            let table = txn.open_table(ENTRIES).map_err(|e| err(Op::BatchGet, None, e))?;
            let now = clock.wall_ms();
            keys.iter()
                .map(|k| match table.get(k.as_str()).map_err(|e| err(Op::BatchGet, Some(k), e))? {
                    Some(guard) => {
                        let r = Record::decode(Op::BatchGet, k, guard.value())?;
                        Ok(r.live(now).then(|| r.entry(now)))
                    }
                    None => Ok(None),
                })
                .collect()
        })
        .await
    }

    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        for (k, v, _) in &items {
            check_key(BACKEND, Op::BatchSet, k)?;
            check_value(BACKEND, Op::BatchSet, k, v)?;
        }
        let written: Vec<(String, Bytes)> = items.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
        let versions = self
            .blocking(Op::BatchSet, None, move |db, clock| Self::write_all(db, clock, Op::BatchSet, &items))
            .await?;
        for ((key, value), version) in written.into_iter().zip(&versions) {
            self.notify(Change::Set { key, version: *version, value: Some(value) });
        }
        Ok(versions)
    }

    /// One redb write transaction ([`FileStore`]'s `write_group`).
    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        group.validate(BACKEND)?;
        if group.is_empty() {
            return Ok(Vec::new());
        }
        let (versions, changes) =
            self.blocking(Op::Transact, None, move |db, clock| Self::write_group(db, clock, group)).await?;
        for change in changes {
            self.notify(change);
        }
        Ok(versions)
    }

    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        for w in &items {
            check_share(BACKEND, Op::PutShares, w)?;
        }
        if items.is_empty() {
            return Ok(());
        }
        let written =
            self.blocking(Op::PutShares, None, move |db, clock| Self::write_shares(db, clock, &items)).await?;
        for (key, value, version) in written {
            self.notify(Change::Set { key, version, value: Some(value) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_short_ones_are_corrupt() {
        let bytes = Record::encode(7, 1234, b"value");
        let r = Record::decode(Op::Get, "k", &bytes).unwrap();
        assert_eq!((r.version, r.expires_ms, r.value), (7, 1234, &b"value"[..]));
        let e = Record::decode(Op::Get, "k", &bytes[..10]).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(r.live(1233) && !r.live(1234));
    }

    #[test]
    fn config_is_validated() {
        assert!(FileConfig::new("").validate().is_err());
        assert!(FileConfig::new(std::env::temp_dir()).validate().is_err(), "a folder");
        let mut c = FileConfig::new("/tmp/x.redb");
        c.cache_bytes = Some(0);
        assert!(c.validate().is_err());
        let parsed = serde_json::from_str::<FileConfig>(r#"{"path": "a.redb", "nope": 1}"#);
        assert!(parsed.unwrap_err().to_string().contains("unknown field `nope`"));
        let parsed = serde_json::from_str::<FileConfig>(r#"{"path": "a.redb"}"#).unwrap();
        assert_eq!(parsed, FileConfig::new("a.redb"));
    }
}
