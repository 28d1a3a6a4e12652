//! The `StateStore` port and the types that cross it.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::error::{ErrorKind, Op, StoreError};
use crate::shares::{ShareWrite, Shares};

/// The longest key a store accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The largest value a store accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 16 << 20;

/// A stored value with its version and remaining time to live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes.
    pub value: Bytes,
    /// The version of this write: larger than every version the key had before, across
    /// deletes, so that a deleted and recreated key never reuses one (no ABA for
    /// compare-and-swap). Versions of different keys need not be ordered (a backend that
    /// spreads keys over shards keeps one counter per key).
    pub version: u64,
    /// Time left before the entry expires, if it has a TTL.
    pub ttl: Option<Duration>,
}

/// The outcome of [`StateStore::compare_and_swap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was written, with this new version.
    Swapped {
        /// The new version.
        version: u64,
    },
    /// The key's version was not the expected one; nothing was written.
    Conflict {
        /// The version found (`None`: the key does not exist).
        current: Option<u64>,
    },
}

/// What a backend can do. A capability is advertised only when the conformance suite
/// proves it for that backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Capabilities {
    /// Entries can expire (`set_with_ttl`).
    pub ttl: bool,
    /// `compare_and_swap` is atomic.
    pub atomic: bool,
    /// Multi-key transactions.
    pub transactions: bool,
    /// `subscribe` returns a change feed.
    pub change_feed: bool,
    /// Data survives a restart of the process.
    pub persistent: bool,
    /// Several processes can share the data.
    pub shared: bool,
    /// Shares ([`StateStore::put_shares`]) are kept natively, apart from the keys (not
    /// listed by `list_keys`); without it they are ordinary values under their keys.
    pub native_shares: bool,
}

/// Counters of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StoreStats {
    /// Live keys.
    pub keys: u64,
    /// Bytes of live values (keys not counted).
    pub value_bytes: u64,
}

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CleanupStats {
    /// Expired entries removed.
    pub expired: u64,
}

/// One change seen on a change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key was written.
    Set {
        /// The key.
        key: String,
        /// Its new version.
        version: u64,
        /// The new value, where the backend carries it (values of the cluster's size, and
        /// always for shares: [`StateStore::put_shares`]); `None`: read the key for it.
        value: Option<Bytes>,
    },
    /// A key was deleted.
    Deleted {
        /// The key.
        key: String,
    },
    /// A key expired (seen by a cleanup).
    Expired {
        /// The key.
        key: String,
    },
    /// Changes were lost (the reader fell behind, or the connection dropped): the reader
    /// must resynchronise fully.
    Resync,
}

impl Change {
    /// The key it is about (`None` for [`Change::Resync`]).
    pub fn key(&self) -> Option<&str> {
        match self {
            Change::Set { key, .. } | Change::Deleted { key } | Change::Expired { key } => Some(key),
            Change::Resync => None,
        }
    }
}

/// The in-process change feed of a store that sees all of its own writes (memory, file):
/// writers `notify`, readers `subscribe`. A reader that falls more than 4,096 changes behind
/// gets [`Change::Resync`]. Cloning shares the bus.
#[derive(Debug, Clone)]
pub struct ChangeBus {
    tx: broadcast::Sender<Change>,
}

impl Default for ChangeBus {
    fn default() -> Self {
        ChangeBus { tx: broadcast::channel(4096).0 }
    }
}

impl ChangeBus {
    /// A bus with no subscriber yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes a change; no subscriber is not an error.
    pub fn notify(&self, change: Change) {
        let _ = self.tx.send(change);
    }

    /// The changes under `prefix` from now on.
    pub fn subscribe(&self, prefix: &str) -> ChangeFeed {
        ChangeFeed::from_broadcast(self.tx.subscribe(), prefix)
    }
}

/// A stream of changes under a prefix. Delivery is best effort: whenever changes may have
/// been lost, the feed yields [`Change::Resync`].
#[derive(Debug)]
pub struct ChangeFeed {
    source: Source,
    prefix: String,
}

#[derive(Debug)]
enum Source {
    Broadcast(broadcast::Receiver<Change>),
    Channel(mpsc::Receiver<Change>),
}

impl ChangeFeed {
    /// A feed over an in-process broadcast channel (lag becomes [`Change::Resync`]).
    pub fn from_broadcast(rx: broadcast::Receiver<Change>, prefix: &str) -> Self {
        ChangeFeed { source: Source::Broadcast(rx), prefix: prefix.to_owned() }
    }

    /// A feed over a channel filled by an adapter's background task.
    pub fn from_channel(rx: mpsc::Receiver<Change>, prefix: &str) -> Self {
        ChangeFeed { source: Source::Channel(rx), prefix: prefix.to_owned() }
    }

    /// The next change of `feed`, or never when there is no feed (for a `select!` beside
    /// other events).
    pub async fn next_or_pending(feed: &mut Option<ChangeFeed>) -> Option<Change> {
        match feed {
            Some(f) => f.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The next change under the prefix; `None` once the store is gone.
    pub async fn recv(&mut self) -> Option<Change> {
        loop {
            let change = match &mut self.source {
                Source::Broadcast(rx) => match rx.recv().await {
                    Ok(c) => c,
                    Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                Source::Channel(rx) => rx.recv().await?,
            };
            if change.key().is_none_or(|k| k.starts_with(&self.prefix)) {
                return Some(change);
            }
        }
    }
}

/// A key-value store that Atrion keeps its state in.
///
/// Contract for implementers:
/// - **Keys** are 1 to [`MAX_KEY_LEN`] bytes of UTF-8; anything else is refused with
///   [`ErrorKind::InvalidKey`] (see [`check_key`]). Values are any bytes up to
///   [`MAX_VALUE_LEN`].
/// - **Versions**: every successful write of a key returns a version larger than every
///   version that key had before, including before it was deleted. That is what
///   compare-and-swap needs; versions of different keys need not be ordered, so that a
///   sharded backend (Redis Cluster) keeps each key's counter in the key's own shard.
/// - **Atomicity**: each method is atomic on its own; `compare_and_swap` writes only if the
///   key's current version is the expected one (`None`: the key must not exist), atomically
///   with that check, when [`Capabilities::atomic`] is advertised.
/// - **TTL**: an expired entry is never returned, listed or counted, whether or not a
///   cleanup has removed it yet.
/// - **Cancellation**: a future dropped before it completes may or may not have applied its
///   write, but never applies half of it.
/// - **Concurrency**: all methods may be called from many tasks at once.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The backend's name, for errors and metrics (`memory`, `file`, ...).
    fn backend(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The entry under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Writes `value` under `key`, expiring after `ttl` if given; returns the new version.
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError>;

    /// As [`StateStore::put`], but a backend need not announce the write on its change feed:
    /// for a value that its readers read when they want it (a heartbeat refreshed for the
    /// few that check it), so that a write is not delivered to every subscriber. The default
    /// is [`StateStore::put`] (announced: only costlier); a backend that skips the notice
    /// overrides it.
    async fn put_quiet(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.put(key, value, ttl).await
    }

    /// Deletes `key`; true if it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// The live keys starting with `prefix` (all keys for `""`), sorted.
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Writes `value` only if the key's version is `expected` (`None`: only if absent).
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError>;

    /// Counters.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Removes expired entries now.
    async fn cleanup(&self) -> Result<CleanupStats, StoreError>;

    /// Changes under `prefix` from now on, or `None` where the backend has no feed.
    async fn subscribe(&self, _prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        Ok(None)
    }

    /// Writes `value` under `key` without expiry.
    async fn set(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.put(key, value, None).await
    }

    /// Writes `value` under `key`, expiring after `ttl`.
    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<u64, StoreError> {
        self.put(key, value, Some(ttl)).await
    }

    /// Whether `key` holds a live entry.
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(key).await?.is_some())
    }

    /// The entries of `keys`, in order. Adapters override this to use one round trip.
    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Writes every item; returns their versions in order. Adapters override this to use
    /// one round trip (and, where they can, one transaction).
    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for (k, v, ttl) in items {
            out.push(self.put(&k, v, ttl).await?);
        }
        Ok(out)
    }

    /// Deletes every key; returns how many existed.
    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in keys {
            n += u64::from(self.delete(k).await?);
        }
        Ok(n)
    }

    /// Sets each member's share of its key ([`crate::shares`]), replacing that member's
    /// earlier share; other members' shares are never touched. Each key changes atomically,
    /// and a change feed carries the key's new leaders ([`Shares`], encoded) as the value of
    /// a [`Change::Set`] — a backend with a native aggregate only when they changed by more
    /// than [`crate::shares::NOTIFY_RANK_STEP`] or the member count changed.
    ///
    /// The default keeps all of a key's shares in one value under the key, changed by
    /// compare-and-swap ([`update`]); it needs [`Capabilities::atomic`]. Something under the
    /// key that is not shares is replaced.
    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        for w in &items {
            check_share(self.backend(), Op::PutShares, w)?;
        }
        for w in items {
            update(self, &w.key, 64, |current| {
                let mut shares = current.and_then(|v| Shares::decode(v)).unwrap_or_default();
                shares.upsert(w.share.clone());
                shares.encode()
            })
            .await?;
        }
        Ok(())
    }

    /// The leaders of each key's shares, in order (`None`: no shares): at least the top two
    /// by rank, plus `member`'s own share wherever it ranks.
    /// [`ErrorKind::Corrupt`] when a key holds something that is not shares.
    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        let _ = member; // the default returns every share
        let entries = self.batch_get(keys).await?;
        keys.iter()
            .zip(entries)
            .map(|(key, entry)| match entry {
                None => Ok(None),
                Some(e) => Shares::decode(&e.value)
                    .map(Some)
                    .ok_or_else(|| StoreError::new(self.backend(), Op::GetShares, Some(key), ErrorKind::Corrupt)),
            })
            .collect()
    }

    /// Every share of `key` (`None`: none), highest rank first.
    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        Ok(self.shares(std::slice::from_ref(&key.to_owned()), "").await?.pop().flatten())
    }

    /// The keys holding shares, starting with `prefix`, sorted.
    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list_keys(prefix).await
    }
}

/// Checks a share write against the port's rules, for adapters: a valid key, a non-empty
/// member of at most 255 bytes, a rank that is not NaN, a value within [`MAX_VALUE_LEN`].
pub fn check_share(backend: &'static str, op: Op, w: &ShareWrite) -> Result<(), StoreError> {
    check_key(backend, op, &w.key)?;
    check_value(backend, op, &w.key, &w.share.value)?;
    let problem = if w.share.member.is_empty() || w.share.member.len() > 255 {
        "a member must be 1 to 255 bytes"
    } else if w.share.rank.is_nan() {
        "a rank must not be NaN"
    } else {
        return Ok(());
    };
    Err(StoreError::new(backend, op, Some(&w.key), ErrorKind::InvalidShare(problem)))
}

/// Checks a key against the port's rules, for adapters.
pub fn check_key(backend: &'static str, op: Op, key: &str) -> Result<(), StoreError> {
    let problem = if key.is_empty() {
        "empty"
    } else if key.len() > MAX_KEY_LEN {
        "longer than 1024 bytes"
    } else {
        return Ok(());
    };
    Err(StoreError::new(backend, op, Some(key), ErrorKind::InvalidKey(problem)))
}

/// Checks a value's size against the port's rules, for adapters.
pub fn check_value(backend: &'static str, op: Op, key: &str, value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::new(
            backend,
            op,
            Some(key),
            ErrorKind::ValueTooLarge { len: value.len(), max: MAX_VALUE_LEN },
        ));
    }
    Ok(())
}

/// Reads, transforms and writes back `key` with compare-and-swap, retrying on conflict:
/// the way to change a value safely when several writers share a store. `f` sees the current
/// value (`None` if absent) and returns the new one; it may run several times.
///
/// Gives up with [`ErrorKind::Contended`] after `max_attempts` conflicts.
pub async fn update<S, F>(store: &S, key: &str, max_attempts: u32, mut f: F) -> Result<(Bytes, u64), StoreError>
where
    S: StateStore + ?Sized,
    F: FnMut(Option<&Bytes>) -> Bytes + Send,
{
    for _ in 0..max_attempts {
        let current = store.get(key).await?;
        let next = f(current.as_ref().map(|e| &e.value));
        let ttl = current.as_ref().and_then(|e| e.ttl);
        match store.compare_and_swap(key, current.map(|e| e.version), next.clone(), ttl).await? {
            CasOutcome::Swapped { version } => return Ok((next, version)),
            CasOutcome::Conflict { .. } => tokio::task::yield_now().await,
        }
    }
    Err(StoreError::new(store.backend(), Op::CompareAndSwap, Some(key), ErrorKind::Contended(max_attempts)))
}
