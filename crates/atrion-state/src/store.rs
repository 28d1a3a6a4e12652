//! The `StateStore` port and the types that cross it.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::error::{ErrorKind, Op, StoreError};
use crate::group::Group;
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
    /// Multi-key transactions: [`StateStore::transact`] applies a [`Group`] all or none,
    /// isolated from every other write and read of the store (serializable), and a group
    /// acknowledged survives a crash where the store is `persistent`.
    pub transactions: bool,
    /// A [`Group`]'s keys must all name one slot group ([`crate::slot_group`]); a group that
    /// spans several is refused with [`ErrorKind::GroupSpansSlots`] (a Redis Cluster).
    pub one_slot_groups: bool,
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

impl Change {
    /// The change as borrowed parts ([`ChangeRef`]).
    pub fn view(&self) -> ChangeRef<'_> {
        match self {
            Change::Set { key, version, value } => {
                ChangeRef::Set { key, version: *version, value: value.as_ref().map(|v| &v[..]) }
            }
            Change::Deleted { key } => ChangeRef::Deleted { key },
            Change::Expired { key } => ChangeRef::Expired { key },
            Change::Resync => ChangeRef::Resync,
        }
    }
}

/// A [`Change`] read in place, its key and value borrowed from the notification that
/// carried them: what [`ChangeFeed::recv_each`] hands out, so that a reader allocates nothing
/// per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRef<'a> {
    /// A key was written ([`Change::Set`]).
    Set {
        /// The key.
        key: &'a str,
        /// Its new version.
        version: u64,
        /// The new value, where the backend carries it; `None`: read the key for it.
        value: Option<&'a [u8]>,
    },
    /// A key was deleted.
    Deleted {
        /// The key.
        key: &'a str,
    },
    /// A key expired.
    Expired {
        /// The key.
        key: &'a str,
    },
    /// Changes were lost: resynchronise fully.
    Resync,
}

impl ChangeRef<'_> {
    /// The key it is about (`None` for [`ChangeRef::Resync`]).
    pub fn key(&self) -> Option<&str> {
        match *self {
            ChangeRef::Set { key, .. } | ChangeRef::Deleted { key } | ChangeRef::Expired { key } => Some(key),
            ChangeRef::Resync => None,
        }
    }

    /// The owned [`Change`].
    pub fn to_change(&self) -> Change {
        match *self {
            ChangeRef::Set { key, version, value } => {
                Change::Set { key: key.to_owned(), version, value: value.map(Bytes::copy_from_slice) }
            }
            ChangeRef::Deleted { key } => Change::Deleted { key: key.to_owned() },
            ChangeRef::Expired { key } => Change::Expired { key: key.to_owned() },
            ChangeRef::Resync => Change::Resync,
        }
    }
}

/// Reads the next change of a notification's bytes in place, advancing them; `None` when
/// they do not start with one (the rest of the notification is then dropped).
pub type NoticeParser = for<'a> fn(&mut &'a [u8]) -> Option<ChangeRef<'a>>;

/// What an adapter's feed task sends down a channel ([`ChangeFeed::from_notices`]): one
/// change, or one notification as received, with the parser that reads its changes, so that
/// they are read in place by the reader and not copied out one by one.
#[derive(Debug, Clone)]
pub enum Notice {
    /// One change.
    Change(Change),
    /// A notification's bytes, holding any number of changes.
    Raw {
        /// The bytes.
        payload: Bytes,
        /// How to read them.
        parse: NoticeParser,
    },
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
    /// The rest of a notification [`ChangeFeed::recv`] has begun to hand out.
    pending: Option<(Bytes, usize, NoticeParser)>,
    /// The source is closed (after a last batch of [`ChangeFeed::recv_each`]).
    closed: bool,
}

#[derive(Debug)]
enum Source {
    Broadcast(broadcast::Receiver<Change>),
    Channel(mpsc::Receiver<Change>),
    Notices(mpsc::Receiver<Notice>),
}

/// What one receive from a source gave.
enum Got {
    Item(Notice),
    Empty,
    Closed,
}

impl ChangeFeed {
    /// A feed over an in-process broadcast channel (lag becomes [`Change::Resync`]).
    pub fn from_broadcast(rx: broadcast::Receiver<Change>, prefix: &str) -> Self {
        ChangeFeed::with_source(Source::Broadcast(rx), prefix)
    }

    /// A feed over a channel filled by an adapter's background task.
    pub fn from_channel(rx: mpsc::Receiver<Change>, prefix: &str) -> Self {
        ChangeFeed::with_source(Source::Channel(rx), prefix)
    }

    /// A feed over a channel of whole notifications filled by an adapter's background task:
    /// their changes are read in place ([`ChangeFeed::recv_each`]), not copied out.
    pub fn from_notices(rx: mpsc::Receiver<Notice>, prefix: &str) -> Self {
        ChangeFeed::with_source(Source::Notices(rx), prefix)
    }

    fn with_source(source: Source, prefix: &str) -> Self {
        ChangeFeed { source, prefix: prefix.to_owned(), pending: None, closed: false }
    }

    /// The next item of the source: awaited when `wait`, else only what is ready now.
    async fn next_item(&mut self, wait: bool) -> Got {
        let resync = Got::Item(Notice::Change(Change::Resync));
        match &mut self.source {
            Source::Broadcast(rx) if wait => match rx.recv().await {
                Ok(c) => Got::Item(Notice::Change(c)),
                Err(broadcast::error::RecvError::Lagged(_)) => resync,
                Err(broadcast::error::RecvError::Closed) => Got::Closed,
            },
            Source::Broadcast(rx) => match rx.try_recv() {
                Ok(c) => Got::Item(Notice::Change(c)),
                Err(broadcast::error::TryRecvError::Lagged(_)) => resync,
                Err(broadcast::error::TryRecvError::Empty) => Got::Empty,
                Err(broadcast::error::TryRecvError::Closed) => Got::Closed,
            },
            Source::Channel(rx) if wait => rx.recv().await.map_or(Got::Closed, |c| Got::Item(Notice::Change(c))),
            Source::Channel(rx) => match rx.try_recv() {
                Ok(c) => Got::Item(Notice::Change(c)),
                Err(mpsc::error::TryRecvError::Empty) => Got::Empty,
                Err(mpsc::error::TryRecvError::Disconnected) => Got::Closed,
            },
            Source::Notices(rx) if wait => rx.recv().await.map_or(Got::Closed, Got::Item),
            Source::Notices(rx) => match rx.try_recv() {
                Ok(n) => Got::Item(n),
                Err(mpsc::error::TryRecvError::Empty) => Got::Empty,
                Err(mpsc::error::TryRecvError::Disconnected) => Got::Closed,
            },
        }
    }

    /// Waits for the next notification, then hands `f` its changes under the prefix, and
    /// those of the notifications that are ready now, in order, without waiting again: at
    /// least one notification, and more until at least `max` changes were handed out (a
    /// notification is never split). Keys and values are borrowed from the notification
    /// ([`ChangeRef`]): nothing is allocated per change. Returns how many changes `f` got
    /// (possibly 0: none was under the prefix), or `None` once the store is gone.
    pub async fn recv_each(&mut self, max: usize, mut f: impl FnMut(ChangeRef<'_>)) -> Option<usize> {
        if self.closed && self.pending.is_none() {
            return None;
        }
        let mut handed = 0;
        if let Some((payload, at, parse)) = self.pending.take() {
            handed += each_in(&payload[at..], parse, &self.prefix, &mut f);
        }
        let mut wait = handed == 0;
        while handed < max.max(1) {
            let notice = match self.next_item(wait).await {
                Got::Item(n) => n,
                Got::Empty => break,
                Got::Closed if wait => {
                    self.closed = true;
                    return None;
                }
                Got::Closed => {
                    self.closed = true;
                    break;
                }
            };
            wait = false;
            handed += match notice {
                Notice::Change(c) if under(&self.prefix, c.key()) => {
                    f(c.view());
                    1
                }
                Notice::Change(_) => 0,
                Notice::Raw { payload, parse } => each_in(&payload, parse, &self.prefix, &mut f),
            };
        }
        Some(handed)
    }

    /// [`ChangeFeed::recv_each`] on `feed`, or never when there is no feed (for a `select!`
    /// beside other events).
    pub async fn each_or_pending(
        feed: &mut Option<ChangeFeed>,
        max: usize,
        f: impl FnMut(ChangeRef<'_>),
    ) -> Option<usize> {
        match feed {
            Some(feed) => feed.recv_each(max, f).await,
            None => std::future::pending().await,
        }
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
            if let Some((payload, at, parse)) = self.pending.take() {
                let mut rest = &payload[at..];
                if let Some(change) = parse(&mut rest) {
                    let change_owned = change.to_change();
                    if !rest.is_empty() {
                        let at = payload.len() - rest.len();
                        self.pending = Some((payload, at, parse));
                    }
                    if under(&self.prefix, change_owned.key()) {
                        return Some(change_owned);
                    }
                }
                continue;
            }
            if self.closed {
                return None;
            }
            match self.next_item(true).await {
                Got::Item(Notice::Change(change)) if under(&self.prefix, change.key()) => return Some(change),
                Got::Item(Notice::Change(_)) | Got::Empty => {}
                Got::Item(Notice::Raw { payload, parse }) => self.pending = Some((payload, 0, parse)),
                Got::Closed => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }
}

/// Whether a change about `key` is under `prefix` (a resync always is).
fn under(prefix: &str, key: Option<&str>) -> bool {
    key.is_none_or(|k| k.starts_with(prefix))
}

/// Hands `f` the changes of a notification's bytes under `prefix`, up to the first that does
/// not read; how many.
fn each_in(mut rest: &[u8], parse: NoticeParser, prefix: &str, f: &mut impl FnMut(ChangeRef<'_>)) -> usize {
    let mut n = 0;
    while !rest.is_empty() {
        let Some(change) = parse(&mut rest) else { break };
        if under(prefix, change.key()) {
            f(change);
            n += 1;
        }
    }
    n
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

    /// Applies `group` as one atomic step: every precondition is checked and every write
    /// applied, in order, with no other write in between and no reader seeing half of it;
    /// or, when a precondition fails, nothing is written and the error is
    /// [`ErrorKind::PreconditionFailed`], naming the key (the first failed precondition).
    /// Returns each write's outcome in order: a put's new version, `None` for a delete.
    /// Keys and values are checked before anything is written. A dropped future, or a crash,
    /// leaves the whole group applied or none of it. Each write reaches the change feed as
    /// its single-key counterpart would.
    ///
    /// Where [`Capabilities::one_slot_groups`] is advertised, every key must name one slot
    /// group ([`crate::slot_group`]), else [`ErrorKind::GroupSpansSlots`]. The default,
    /// for a backend without [`Capabilities::transactions`], refuses every group with
    /// [`ErrorKind::Unsupported`].
    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        let key = group.keys().next().map(str::to_owned);
        Err(StoreError::new(self.backend(), Op::Transact, key.as_deref(), ErrorKind::Unsupported))
    }

    /// Sets each member's share of its key ([`crate::shares`]), replacing that member's
    /// earlier share; other members' shares are never touched. Each key changes atomically,
    /// and a change feed carries the key's new leaders ([`Shares`], encoded) as the value of
    /// a [`Change::Set`] — a backend with a native aggregate only when they changed by more
    /// than [`crate::shares::NOTIFY_RANK_STEP`] or the key gained one of its first three
    /// members.
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

    /// The keys that seal this store's backups, when the store is encrypted at rest (an
    /// encrypting wrapper returns its key ring; a store that forwards to another, such as
    /// [`crate::StateService`], returns that one's). `None` by default: backups are plain.
    /// See [`crate::BackupWriter`] and [`BackupLine::decode_backup`](crate::BackupLine::decode_backup).
    fn backup_seal(&self) -> Option<std::sync::Arc<dyn crate::BackupSeal>> {
        None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shares::{next_token, push_token};

    /// A record as `set <key> <value>` tokens, or `del <key>`.
    fn record<'a>(rest: &mut &'a [u8]) -> Option<ChangeRef<'a>> {
        let kind = next_token(rest)?;
        let key = std::str::from_utf8(next_token(rest)?).ok()?;
        match kind {
            b"set" => Some(ChangeRef::Set { key, version: 1, value: Some(next_token(rest)?) }),
            b"del" => Some(ChangeRef::Deleted { key }),
            _ => None,
        }
    }

    fn raw(records: &[(&str, &str)]) -> Notice {
        let mut out = Vec::new();
        for (key, value) in records {
            push_token(&mut out, if value.is_empty() { b"del" } else { b"set" });
            push_token(&mut out, key.as_bytes());
            if !value.is_empty() {
                push_token(&mut out, value.as_bytes());
            }
        }
        Notice::Raw { payload: Bytes::from(out), parse: record }
    }

    fn set(key: &str, value: &str) -> Change {
        Change::Set { key: key.into(), version: 1, value: Some(Bytes::from(value.to_owned())) }
    }

    #[tokio::test]
    async fn notifications_are_read_in_place_in_batches_or_one_by_one() {
        let (tx, rx) = mpsc::channel(16);
        let mut feed = ChangeFeed::from_notices(rx, "p/");
        tx.send(raw(&[("p/a", "1"), ("q/x", "2"), ("p/b", "3")])).await.unwrap();
        tx.send(Notice::Change(Change::Resync)).await.unwrap();
        tx.send(raw(&[("p/c", ""), ("p/d", "4")])).await.unwrap();
        // Everything ready comes in one batch, in order, under the prefix only.
        let mut got = Vec::new();
        assert_eq!(feed.recv_each(100, |c| got.push(c.to_change())).await, Some(4 + 1));
        assert_eq!(
            got,
            [set("p/a", "1"), set("p/b", "3"), Change::Resync, Change::Deleted { key: "p/c".into() }, set("p/d", "4")]
        );
        // One change at a time, a notification split across calls; then the rest in a batch.
        tx.send(raw(&[("p/e", "5"), ("p/f", "6"), ("p/g", "7")])).await.unwrap();
        assert_eq!(feed.recv().await, Some(set("p/e", "5")));
        let mut got = Vec::new();
        assert_eq!(feed.recv_each(1, |c| got.push(c.to_change())).await, Some(2));
        assert_eq!(got, [set("p/f", "6"), set("p/g", "7")]);
        // A record that does not read drops the rest of its notification.
        tx.send(raw(&[("p/h", "8")])).await.unwrap();
        tx.send(Notice::Raw { payload: Bytes::from_static(b"3:zzz1:k"), parse: record }).await.unwrap();
        tx.send(Notice::Change(set("p/i", "9"))).await.unwrap();
        let mut got = Vec::new();
        assert_eq!(feed.recv_each(100, |c| got.push(c.to_change())).await, Some(2));
        assert_eq!(got, [set("p/h", "8"), set("p/i", "9")]);
        // Gone: the rest first, then `None`, for either way of reading.
        tx.send(raw(&[("p/j", "10")])).await.unwrap();
        drop(tx);
        assert_eq!(feed.recv().await, Some(set("p/j", "10")));
        assert_eq!(feed.recv_each(100, |_| ()).await, None);
        assert_eq!(feed.recv().await, None);
    }

    #[tokio::test]
    async fn a_broadcast_feed_is_drained_in_batches_and_lag_is_a_resync() {
        let (tx, rx) = broadcast::channel(2);
        let mut feed = ChangeFeed::from_broadcast(rx, "");
        for i in 0..3 {
            tx.send(set(&format!("k{i}"), "v")).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(feed.recv_each(100, |c| got.push(c.to_change())).await, Some(3));
        assert_eq!(got, [Change::Resync, set("k1", "v"), set("k2", "v")]);
        assert_eq!(set("k", "v").view().to_change(), set("k", "v"));
        assert_eq!(ChangeRef::Expired { key: "k" }.key(), Some("k"));
    }
}
