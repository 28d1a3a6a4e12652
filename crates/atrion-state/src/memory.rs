//! `InMemoryStore`: the embedded default. No dependencies, no persistence, one process.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::clock::{Clock, TokioClock};
use crate::error::{Op, StoreError};
use crate::group::{Group, GroupWrite};
use crate::store::{
    Capabilities, CasOutcome, Change, ChangeBus, ChangeFeed, CleanupStats, Entry, StateStore, StoreStats, check_key,
    check_value,
};

const BACKEND: &str = "memory";

#[derive(Debug)]
struct Slot {
    value: Bytes,
    version: u64,
    /// On the store's clock ([`Clock::elapsed`]).
    expires: Option<Duration>,
}

impl Slot {
    fn live(&self, now: Duration) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    fn entry(&self, now: Duration) -> Entry {
        Entry { value: self.value.clone(), version: self.version, ttl: self.expires.map(|e| e.saturating_sub(now)) }
    }
}

#[derive(Debug, Default)]
struct Data {
    map: BTreeMap<String, Slot>,
    last_version: u64,
}

#[derive(Debug)]
struct Inner {
    data: RwLock<Data>,
    changes: ChangeBus,
    clock: Arc<dyn Clock>,
}

/// A store in this process's memory: a sorted map behind a read-write lock, with TTL,
/// atomic compare-and-swap and a broadcast change feed. Cloning shares the same data.
///
/// TTLs run on the store's [`Clock`]: tokio's by default ([`TokioClock`]), so tests can
/// pause and advance time.
#[derive(Debug, Clone)]
pub struct InMemoryStore {
    inner: Arc<Inner>,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    /// An empty store, its TTLs on tokio's clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(TokioClock::new()))
    }

    /// An empty store, its TTLs on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let inner = Inner { data: RwLock::new(Data::default()), changes: ChangeBus::new(), clock };
        InMemoryStore { inner: Arc::new(inner) }
    }

    /// Now, on the store's clock.
    fn now(&self) -> Duration {
        self.inner.clock.elapsed()
    }

    // No `.await` is ever reached while a guard is held, and the critical sections cannot
    // panic; a poisoned lock still holds consistent data.
    fn read(&self) -> RwLockReadGuard<'_, Data> {
        self.inner.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Data> {
        self.inner.data.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, change: Change) {
        self.inner.changes.notify(change);
    }

    fn insert(data: &mut Data, key: &str, value: Bytes, ttl: Option<Duration>, now: Duration) -> u64 {
        data.last_version += 1;
        let version = data.last_version;
        let expires = ttl.map(|t| now + t);
        data.map.insert(key.to_owned(), Slot { value, version, expires });
        version
    }
}

#[async_trait]
impl StateStore for InMemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            atomic: true,
            transactions: true,
            one_slot_groups: false,
            change_feed: true,
            persistent: false,
            shared: false,
            native_shares: false,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(BACKEND, Op::Get, key)?;
        let now = self.now();
        Ok(self.read().map.get(key).filter(|s| s.live(now)).map(|s| s.entry(now)))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        check_key(BACKEND, Op::Set, key)?;
        check_value(BACKEND, Op::Set, key, &value)?;
        let version = Self::insert(&mut self.write(), key, value.clone(), ttl, self.now());
        self.notify(Change::Set { key: key.to_owned(), version, value: Some(value) });
        Ok(version)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(BACKEND, Op::Delete, key)?;
        let now = self.now();
        let existed = self.write().map.remove(key).is_some_and(|s| s.live(now));
        if existed {
            self.notify(Change::Deleted { key: key.to_owned() });
        }
        Ok(existed)
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let now = self.now();
        let data = self.read();
        Ok(data
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, s)| s.live(now))
            .map(|(k, _)| k.clone())
            .collect())
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
        let now = self.now();
        let version = {
            let mut data = self.write();
            let current = data.map.get(key).filter(|s| s.live(now)).map(|s| s.version);
            if current != expected {
                return Ok(CasOutcome::Conflict { current });
            }
            Self::insert(&mut data, key, value.clone(), ttl, now)
        };
        self.notify(Change::Set { key: key.to_owned(), version, value: Some(value) });
        Ok(CasOutcome::Swapped { version })
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = self.now();
        let data = self.read();
        let live = data.map.values().filter(|s| s.live(now));
        let (keys, value_bytes) = live.fold((0, 0), |(k, b), s| (k + 1, b + s.value.len() as u64));
        Ok(StoreStats { keys, value_bytes })
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        let now = self.now();
        let mut expired = Vec::new();
        self.write().map.retain(|k, s| {
            let live = s.live(now);
            if !live {
                expired.push(k.clone());
            }
            live
        });
        let n = expired.len() as u64;
        for key in expired {
            self.notify(Change::Expired { key });
        }
        Ok(CleanupStats { expired: n })
    }

    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        Ok(Some(self.inner.changes.subscribe(prefix)))
    }

    /// Under the write lock: checked, then applied, as one step.
    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        group.validate(BACKEND)?;
        let now = self.now();
        let mut changes = Vec::with_capacity(group.writes.len());
        let versions = {
            let mut data = self.write();
            for check in &group.checks {
                let found = data.map.get(&check.key).filter(|s| s.live(now)).map(|s| s.version);
                if found != check.version {
                    return Err(Group::failed(BACKEND, check, found));
                }
            }
            let mut versions = Vec::with_capacity(group.writes.len());
            for w in group.writes {
                match w {
                    GroupWrite::Put { key, value, ttl } => {
                        let version = Self::insert(&mut data, &key, value.clone(), ttl, now);
                        changes.push(Change::Set { key, version, value: Some(value) });
                        versions.push(Some(version));
                    }
                    GroupWrite::Delete { key } => {
                        if data.map.remove(&key).is_some_and(|s| s.live(now)) {
                            changes.push(Change::Deleted { key });
                        }
                        versions.push(None);
                    }
                }
            }
            versions
        };
        for change in changes {
            self.notify(change);
        }
        Ok(versions)
    }

    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        for (k, v, _) in &items {
            check_key(BACKEND, Op::BatchSet, k)?;
            check_value(BACKEND, Op::BatchSet, k, v)?;
        }
        let now = self.now();
        let versions: Vec<u64> = {
            let mut data = self.write();
            items.iter().map(|(k, v, ttl)| Self::insert(&mut data, k, v.clone(), *ttl, now)).collect()
        };
        for ((key, value, _), version) in items.into_iter().zip(&versions) {
            self.notify(Change::Set { key, version: *version, value: Some(value) });
        }
        Ok(versions)
    }
}
