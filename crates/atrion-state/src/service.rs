//! `StateService`: several configured backends, one active, switched at runtime without
//! losing a write; backup and restore; a background TTL cleanup that stops when told.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Mutex, RwLock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backup::{BACKUP_CHUNK, BackupError, BackupLine, BackupWriter};
use crate::error::StoreError;
use crate::group::{Group, GroupWrite};
use crate::shares::{ShareWrite, Shares};
use crate::store::{Capabilities, CasOutcome, ChangeFeed, CleanupStats, Entry, StateStore, StoreStats};

/// Keys copied per round trip while migrating.
const COPY_CHUNK: usize = 256;

/// A service operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No backend of this name was configured.
    #[error("unknown backend `{name}` (configured: {configured})")]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The names configured, comma-separated.
        configured: String,
    },
    /// The service was built without backends, or with an invalid name.
    #[error("invalid state service: {0}")]
    Config(String),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// After copying, the new backend did not hold what the old one did; nothing was
    /// switched.
    #[error("switch to `{to}` aborted: {missing} key(s) missing, {differing} differing, {extra} extra")]
    VerifyFailed {
        /// The backend that was to become active.
        to: String,
        /// Keys of the old backend absent from the new.
        missing: usize,
        /// Keys whose values differ.
        differing: usize,
        /// Keys only in the new backend that could not be removed.
        extra: usize,
    },
    /// Reading or writing a backup file failed.
    #[error("backup file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// A backup file cannot be read with the store's keys: sealed, and the store has no
    /// keys, or not the key it names; or a sealed backup cut off.
    #[error("backup file {path}: {source}")]
    Backup {
        /// The file.
        path: PathBuf,
        /// Why (the key id it needs, when that is why).
        #[source]
        source: BackupError,
    },
    /// A line of a backup file is not a valid entry.
    #[error("backup file {path}, line {line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its line (from 1).
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What a switch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchReport {
    /// The backend active before.
    pub from: String,
    /// The backend active now.
    pub to: String,
    /// Keys copied (the rest were written through during the switch).
    pub copied: u64,
    /// Keys verified equal before the flip.
    pub verified: u64,
}

/// While switching: writes go to the old backend and are mirrored to the new one, under a
/// lock that the copy also takes, and the keys they touch are not copied again.
struct Mirror {
    name: String,
    store: Arc<dyn StateStore>,
    touched: Arc<Mutex<HashSet<String>>>,
}

/// One write in progress (see [`StateService::begin_write`]).
struct Writing<'s> {
    _permit: tokio::sync::RwLockReadGuard<'s, ()>,
    active: Arc<Active>,
    touched: Option<tokio::sync::OwnedMutexGuard<HashSet<String>>>,
}

impl Writing<'_> {
    fn store(&self) -> &dyn StateStore {
        self.active.store.as_ref()
    }

    fn mirror(&self) -> Option<&dyn StateStore> {
        self.active.mirror.as_ref().map(|m| m.store.as_ref())
    }

    /// Marks keys as written through, so that the copy leaves them alone.
    fn touch<'k>(&mut self, keys: impl IntoIterator<Item = &'k str>) {
        if let Some(t) = &mut self.touched {
            t.extend(keys.into_iter().map(str::to_owned));
        }
    }
}

struct Active {
    name: String,
    store: Arc<dyn StateStore>,
    mirror: Option<Arc<Mirror>>,
}

/// Builds a [`StateService`].
#[derive(Default)]
pub struct StateServiceBuilder {
    backends: Vec<(String, Arc<dyn StateStore>)>,
    active: Option<String>,
}

impl StateServiceBuilder {
    /// Registers a backend, already built from its own validated config.
    pub fn backend(mut self, name: impl Into<String>, store: impl StateStore + 'static) -> Self {
        self.backends.push((name.into(), Arc::new(store)));
        self
    }

    /// Registers a shared backend.
    pub fn backend_arc(mut self, name: impl Into<String>, store: Arc<dyn StateStore>) -> Self {
        self.backends.push((name.into(), store));
        self
    }

    /// The backend active at start (default: the first registered).
    pub fn active(mut self, name: impl Into<String>) -> Self {
        self.active = Some(name.into());
        self
    }

    /// The service, or what is wrong with its configuration.
    pub fn build(self) -> Result<StateService, ServiceError> {
        let mut backends = BTreeMap::new();
        let first = self.backends.first().map(|(n, _)| n.clone());
        for (name, store) in self.backends {
            if name.is_empty() {
                return Err(ServiceError::Config("a backend name is empty".into()));
            }
            if backends.insert(name.clone(), store).is_some() {
                return Err(ServiceError::Config(format!("backend `{name}` is registered twice")));
            }
        }
        let name = self.active.or(first).ok_or_else(|| ServiceError::Config("no backend registered".into()))?;
        let store = lookup(&backends, &name)?;
        Ok(StateService {
            inner: Arc::new(Inner {
                backends: std::sync::RwLock::new(backends),
                active: ArcSwap::from_pointee(Active { name, store, mirror: None }),
                gate: RwLock::new(()),
                switching: Mutex::new(()),
                switched: tokio::sync::watch::Sender::new(0),
            }),
        })
    }
}

fn lookup(backends: &BTreeMap<String, Arc<dyn StateStore>>, name: &str) -> Result<Arc<dyn StateStore>, ServiceError> {
    backends.get(name).cloned().ok_or_else(|| ServiceError::UnknownBackend {
        name: name.to_owned(),
        configured: backends.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

struct Inner {
    /// Read at a switch and by [`StateService::backend_names`]; written by
    /// [`StateService::add_backend`]. Never on a read or write of keys.
    backends: std::sync::RwLock<BTreeMap<String, Arc<dyn StateStore>>>,
    active: ArcSwap<Active>,
    /// Writers hold it shared for the length of one write; a switch holds it exclusively
    /// only to change mode and to verify. Reads never touch it.
    gate: RwLock<()>,
    /// One switch at a time.
    switching: Mutex<()>,
    /// Bumped by each completed switch: change feeds move to the new backend.
    switched: tokio::sync::watch::Sender<u64>,
}

/// A registry of configured backends with one active, itself a [`StateStore`].
///
/// - Reads go to the active backend through an atomic pointer ([`ArcSwap`]): no lock.
/// - [`StateService::switch_backend`] copies every key (with its remaining TTL) to the new
///   backend while writes keep flowing (mirrored to both), verifies that both hold the same
///   keys and values, and only then flips; a write made during the switch is never lost.
/// - [`StateService::backup`] / [`StateService::restore`] use a portable JSON-lines file.
/// - [`StateService::start_cleanup`] runs TTL cleanup in the background, owned by a handle.
#[derive(Clone)]
pub struct StateService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StateService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateService")
            .field("active", &self.active_name())
            .field("backends", &self.backend_names())
            .finish()
    }
}

impl StateService {
    /// A builder.
    pub fn builder() -> StateServiceBuilder {
        StateServiceBuilder::default()
    }

    /// The name of the active backend.
    pub fn active_name(&self) -> String {
        self.inner.active.load().name.clone()
    }

    /// The active backend.
    pub fn active_store(&self) -> Arc<dyn StateStore> {
        self.inner.active.load().store.clone()
    }

    /// The configured backends' names.
    pub fn backend_names(&self) -> Vec<String> {
        self.backends().keys().cloned().collect()
    }

    fn backends(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<dyn StateStore>>> {
        self.inner.backends.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers another backend at run time (to switch to it with
    /// [`StateService::switch_backend`]). Its name must be new and not empty.
    pub fn add_backend(&self, name: impl Into<String>, store: Arc<dyn StateStore>) -> Result<(), ServiceError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ServiceError::Config("a backend name is empty".into()));
        }
        let mut backends = self.inner.backends.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if backends.contains_key(&name) {
            return Err(ServiceError::Config(format!("backend `{name}` is registered twice")));
        }
        backends.insert(name, store);
        Ok(())
    }

    /// Starts one write. The mode is read under the write gate, so a switch cannot begin
    /// between choosing the stores and writing; while a switch is under way, the mirror's
    /// lock is held until the write (to both backends) is done.
    async fn begin_write(&self) -> Writing<'_> {
        let permit = self.inner.gate.read().await;
        let active = self.inner.active.load_full();
        let touched = match &active.mirror {
            Some(m) => Some(m.touched.clone().lock_owned().await),
            None => None,
        };
        Writing { _permit: permit, active, touched }
    }

    /// Makes `name` the active backend: copies every key with its remaining TTL, verifies,
    /// then flips. Writes made meanwhile reach both backends. Fails, leaving the old backend
    /// active, if the copy cannot be verified.
    pub async fn switch_backend(&self, name: &str) -> Result<SwitchReport, ServiceError> {
        let _one_at_a_time = self.inner.switching.lock().await;
        let target = lookup(&self.backends(), name)?;
        let current = self.inner.active.load_full();
        if current.name == name {
            return Ok(SwitchReport { from: name.into(), to: name.into(), copied: 0, verified: 0 });
        }
        let mirror = Arc::new(Mirror {
            name: name.to_owned(),
            store: target.clone(),
            touched: Arc::new(Mutex::new(HashSet::new())),
        });
        {
            let _exclusive = self.inner.gate.write().await;
            self.inner.active.store(Arc::new(Active {
                name: current.name.clone(),
                store: current.store.clone(),
                mirror: Some(mirror.clone()),
            }));
        }
        let result = self.migrate(&current, &mirror).await;
        let _exclusive = self.inner.gate.write().await;
        let outcome = match result {
            Ok(copied) => self.verify(&current, &mirror).await.map(|verified| (copied, verified)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((copied, verified)) => {
                self.inner.active.store(Arc::new(Active { name: name.to_owned(), store: target, mirror: None }));
                self.inner.switched.send_modify(|n| *n += 1);
                Ok(SwitchReport { from: current.name.clone(), to: name.to_owned(), copied, verified })
            }
            Err(e) => {
                self.inner.active.store(Arc::new(Active {
                    name: current.name.clone(),
                    store: current.store.clone(),
                    mirror: None,
                }));
                Err(e)
            }
        }
    }

    /// Copies the shares a backend keeps apart from its keys (natively) through the shares
    /// API, then every key not written through since the switch began. (Shares kept under
    /// ordinary keys, the port's default, are copied as keys: a backend that keeps them
    /// natively then does not list them, and each node pushes its own again at its next
    /// full sync.)
    async fn migrate(&self, from: &Active, to: &Mirror) -> Result<u64, ServiceError> {
        let (keys, shared) = keys_and_shares(from.store.as_ref()).await?;
        let mut copied = 0;
        for key in &shared {
            // Under the mirror lock, read and written at once: a member's write through the
            // service happened before (and is read) or happens after (and overwrites).
            let _touched = to.touched.lock().await;
            if let Some(shares) = from.store.all_shares(key).await? {
                let items = shares.top.into_iter().map(|share| ShareWrite { key: key.clone(), share }).collect();
                to.store.put_shares(items).await?;
                copied += 1;
            }
        }
        for chunk in keys.chunks(COPY_CHUNK) {
            let entries = from.store.batch_get(chunk).await?;
            // Under the mirror lock: a write to one of these keys either happened before
            // (and touched it, so it is skipped) or happens after (and overwrites the copy).
            let touched = to.touched.lock().await;
            let items: Vec<_> = chunk
                .iter()
                .zip(entries)
                .filter(|(k, _)| !touched.contains(*k))
                .filter_map(|(k, e)| e.map(|e| (k.clone(), e.value, e.ttl)))
                .collect();
            copied += items.len() as u64;
            if !items.is_empty() {
                to.store.batch_set(items).await?;
            }
        }
        Ok(copied)
    }

    /// With writers held off: the new backend must hold exactly the old one's keys and values,
    /// and the same shares.
    async fn verify(&self, from: &Active, to: &Mirror) -> Result<u64, ServiceError> {
        let (source_keys, shared) = keys_and_shares(from.store.as_ref()).await?;
        let (mut missing, mut differing) = (0, 0);
        for key in &shared {
            let sorted = |s: Option<crate::shares::Shares>| {
                s.map(|mut s| {
                    s.top.sort_by(|a, b| a.member.cmp(&b.member));
                    s
                })
            };
            match (sorted(from.store.all_shares(key).await?), sorted(to.store.all_shares(key).await?)) {
                (Some(x), Some(y)) if x != y => differing += 1,
                (Some(_), None) => missing += 1,
                _ => {}
            }
        }
        let (target_keys, target_shared) = keys_and_shares(to.store.as_ref()).await?;
        let source: BTreeSet<String> = source_keys.into_iter().collect();
        let extra: Vec<String> = target_keys.into_iter().filter(|k| !source.contains(k)).collect();
        to.store.batch_delete(&extra).await?;
        let keys: Vec<String> = source.into_iter().collect();
        for chunk in keys.chunks(COPY_CHUNK) {
            let (a, b) = (from.store.batch_get(chunk).await?, to.store.batch_get(chunk).await?);
            for (x, y) in a.iter().zip(&b) {
                match (x, y) {
                    (Some(x), Some(y)) if x.value != y.value => differing += 1,
                    (Some(_), None) => missing += 1,
                    _ => {}
                }
            }
        }
        let extra =
            to.store.list_keys("").await?.len().saturating_sub(keys.len()) + target_shared.difference(&shared).count();
        if missing + differing + extra > 0 {
            return Err(ServiceError::VerifyFailed { to: to.name.clone(), missing, differing, extra });
        }
        Ok((keys.len() + shared.len()) as u64)
    }

    /// Writes every live entry of the active backend to `path` as JSON lines
    /// (`{"key", "value" (base64), "ttl_ms"}`), atomically (a temporary file, then a rename).
    /// Sealed with the backend's keys when it is encrypted at rest
    /// ([`StateStore::backup_seal`], [`BackupWriter`]).
    pub async fn backup(&self, path: impl AsRef<Path>) -> Result<u64, ServiceError> {
        let path = path.as_ref();
        let io = |source| ServiceError::Io { path: path.to_owned(), source };
        let store = self.active_store();
        let keys = store.list_keys("").await?;
        let tmp = path.with_extension("partial");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut n = 0;
        let mut writer = BackupWriter::new(store.backup_seal());
        for chunk in keys.chunks(BACKUP_CHUNK) {
            let lines = BackupLine::read(store.as_ref(), chunk).await?;
            n += lines.len() as u64;
            out.write_all(writer.chunk(&lines).as_bytes()).map_err(io)?;
        }
        out.write_all(writer.finish().as_bytes()).map_err(io)?;
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(n)
    }

    /// Loads a backup into the active backend (existing keys are overwritten). The whole
    /// file is checked before anything is written. A sealed backup opens with the backend's
    /// keys ([`ServiceError::Backup`] naming the key id when they are missing or wrong); a
    /// plain one reads into any backend.
    pub async fn restore(&self, path: impl AsRef<Path>) -> Result<u64, ServiceError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ServiceError::Io { path: path.to_owned(), source })?;
        let seal = self.backup_seal();
        let lines = BackupLine::decode_backup(&text, seal.as_deref()).map_err(|e| match e {
            BackupError::Malformed { line, reason } => ServiceError::Malformed { path: path.to_owned(), line, reason },
            other => ServiceError::Backup { path: path.to_owned(), source: other },
        })?;
        Ok(BackupLine::write_all(self, lines.into_iter().map(|(_, l)| l).collect()).await?)
    }

    /// Starts a background task that removes expired entries of the active backend every
    /// `every`. It runs until [`CleanupTask::shutdown`] (or until the handle is dropped).
    pub fn start_cleanup(&self, every: Duration) -> CleanupTask {
        let token = CancellationToken::new();
        let counters = Arc::new(CleanupCounters::default());
        let (service, stop, c) = (self.clone(), token.clone(), counters.clone());
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => match service.cleanup().await {
                        Ok(stats) => {
                            c.runs.fetch_add(1, Ordering::Relaxed);
                            c.expired.fetch_add(stats.expired, Ordering::Relaxed);
                        }
                        Err(_) => {
                            c.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                }
            }
        });
        CleanupTask { token, handle: Some(handle), counters }
    }
}

#[derive(Debug, Default)]
struct CleanupCounters {
    runs: AtomicU64,
    expired: AtomicU64,
    errors: AtomicU64,
}

/// The background cleanup, owned: [`CleanupTask::shutdown`] stops it and waits for it;
/// dropping the handle stops it without waiting.
#[derive(Debug)]
pub struct CleanupTask {
    token: CancellationToken,
    handle: Option<JoinHandle<()>>,
    counters: Arc<CleanupCounters>,
}

impl CleanupTask {
    /// Cleanups run so far.
    pub fn runs(&self) -> u64 {
        self.counters.runs.load(Ordering::Relaxed)
    }

    /// Entries expired by this task so far.
    pub fn expired(&self) -> u64 {
        self.counters.expired.load(Ordering::Relaxed)
    }

    /// Cleanups that failed (the task goes on).
    pub fn errors(&self) -> u64 {
        self.counters.errors.load(Ordering::Relaxed)
    }

    /// Stops the task and waits until it has finished.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            // A panic inside the task has nothing left to clean up.
            let _ = h.await;
        }
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// All keys of `store`, and the keys whose shares it keeps natively, apart from them.
async fn keys_and_shares(store: &dyn StateStore) -> Result<(Vec<String>, BTreeSet<String>), StoreError> {
    let apart = if store.capabilities().native_shares {
        store.list_shares("").await?.into_iter().collect()
    } else {
        BTreeSet::new()
    };
    Ok((store.list_keys("").await?, apart))
}

/// A group's writes on a switch's new backend: one group where it has them (and the keys
/// share a slot group where it needs that), else one write after the other.
async fn mirror_writes(m: &dyn StateStore, writes: Vec<GroupWrite>) -> Result<(), StoreError> {
    let group = Group { checks: Vec::new(), writes };
    let caps = m.capabilities();
    if caps.transactions && (!caps.one_slot_groups || group.check_one_slot(m.backend()).is_ok()) {
        m.transact(group).await?;
        return Ok(());
    }
    for w in group.writes {
        match w {
            GroupWrite::Put { key, value, ttl } => {
                m.put(&key, value, ttl).await?;
            }
            GroupWrite::Delete { key } => {
                m.delete(&key).await?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl StateStore for StateService {
    fn backend(&self) -> &'static str {
        self.inner.active.load().store.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.active.load().store.capabilities()
    }

    fn backup_seal(&self) -> Option<Arc<dyn crate::BackupSeal>> {
        self.inner.active.load().store.backup_seal()
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.active.load().store.get(key).await
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        let mut w = self.begin_write().await;
        let version = w.store().put(key, value.clone(), ttl).await?;
        if let Some(m) = w.mirror() {
            m.put(key, value, ttl).await?;
        }
        w.touch([key]);
        Ok(version)
    }

    async fn put_quiet(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        let mut w = self.begin_write().await;
        let version = w.store().put_quiet(key, value.clone(), ttl).await?;
        if let Some(m) = w.mirror() {
            m.put_quiet(key, value, ttl).await?;
        }
        w.touch([key]);
        Ok(version)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await;
        let existed = w.store().delete(key).await?;
        if let Some(m) = w.mirror() {
            m.delete(key).await?;
        }
        w.touch([key]);
        Ok(existed)
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.active.load().store.list_keys(prefix).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        let mut w = self.begin_write().await;
        let outcome = w.store().compare_and_swap(key, expected, value.clone(), ttl).await?;
        if let (CasOutcome::Swapped { .. }, Some(m)) = (outcome, w.mirror()) {
            m.put(key, value, ttl).await?;
            w.touch([key]);
        }
        Ok(outcome)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.active.load().store.stats().await
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        let active = self.inner.active.load_full();
        let stats = active.store.cleanup().await?;
        if let Some(m) = &active.mirror {
            m.store.cleanup().await?;
        }
        Ok(stats)
    }

    /// The active backend's changes; after a switch, the new backend's, preceded by a
    /// [`crate::Change::Resync`] (what changed during the switch was seen on neither feed).
    /// `None` when no configured backend has a feed.
    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        if !self.backends().values().any(|b| b.capabilities().change_feed) {
            return Ok(None);
        }
        let mut switched = self.inner.switched.subscribe();
        let mut feed = self.inner.active.load().store.subscribe(prefix).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let inner = Arc::downgrade(&self.inner);
        let owned_prefix = prefix.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    changed = switched.changed() => {
                        // The service is gone when the sender is.
                        let Ok(()) = changed else { break };
                        let Some(store) = inner.upgrade().map(|i| i.active.load().store.clone()) else { break };
                        feed = store.subscribe(&owned_prefix).await.ok().flatten();
                        if tx.send(crate::Change::Resync).await.is_err() {
                            break;
                        }
                    }
                    change = ChangeFeed::next_or_pending(&mut feed) => match change {
                        Some(change) => {
                            if tx.send(change).await.is_err() {
                                break;
                            }
                        }
                        None => feed = None,
                    },
                }
            }
        });
        Ok(Some(ChangeFeed::from_channel(rx, prefix)))
    }

    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        self.inner.active.load().store.batch_get(keys).await
    }

    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        let mut w = self.begin_write().await;
        let versions = w.store().batch_set(items.clone()).await?;
        if let Some(m) = w.mirror() {
            m.batch_set(items.clone()).await?;
        }
        w.touch(items.iter().map(|(k, _, _)| k.as_str()));
        Ok(versions)
    }

    /// On the active backend; while a switch is under way, the group's writes (its
    /// preconditions held on the active one) are mirrored to the new backend, as one group
    /// where it has them.
    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        let mut w = self.begin_write().await;
        let mirror = w.active.mirror.clone();
        let writes = mirror.is_some().then(|| group.writes.clone());
        let versions = w.store().transact(group).await?;
        if let (Some(m), Some(writes)) = (mirror, writes) {
            let keys: Vec<String> = writes.iter().map(|x| x.key().to_owned()).collect();
            mirror_writes(m.store.as_ref(), writes).await?;
            w.touch(keys.iter().map(String::as_str));
        }
        Ok(versions)
    }

    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let mut w = self.begin_write().await;
        let n = w.store().batch_delete(keys).await?;
        if let Some(m) = w.mirror() {
            m.batch_delete(keys).await?;
        }
        w.touch(keys.iter().map(String::as_str));
        Ok(n)
    }

    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        let w = self.begin_write().await;
        w.store().put_shares(items.clone()).await?;
        if let Some(m) = w.mirror() {
            m.put_shares(items).await?;
        }
        Ok(())
    }

    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        self.inner.active.load().store.shares(keys, member).await
    }

    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        self.inner.active.load().store.all_shares(key).await
    }

    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.active.load().store.list_shares(prefix).await
    }
}
