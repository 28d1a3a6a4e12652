//! [`EncryptedStore`]: the wrapper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;

use atrion_state::shares::{Share, ShareWrite, Shares};
use atrion_state::{
    BackupSeal, Capabilities, CasOutcome, Change, ChangeFeed, CleanupStats, Entry, ErrorKind, Group, GroupWrite, Op,
    Precondition, SealError, StateStore, StoreError, StoreStats, check_key, check_share, check_value, split_slot_group,
    update,
};

use crate::envelope::{self, OpenError};
use crate::keys::Keyring;

/// The stored key of the canary: a value sealed at first start, read at every start to
/// check the key file against the store.
pub const CANARY_KEY: &str = "atrion-crypt/canary";
const CANARY_TEXT: &[u8] = b"atrion-crypt canary v1";
/// Names kept in memory (stored key to real name) for the change feed's deletes.
const NAME_CACHE: usize = 1 << 20;
/// Values read per round trip by scans (listing, stats, re-encryption).
const SCAN_CHUNK: usize = 512;

/// How an [`EncryptedStore`] seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptOptions {
    /// Compress (zstd, before sealing) a value whose body is longer than this many bytes;
    /// `None`: never.
    pub compress_above: Option<usize>,
    /// How many leading `/`-separated segments of a key stay readable in the store when
    /// each is 1 to 32 of `[A-Za-z0-9._-]` (the namespace and the family: `atrion/route/`);
    /// the rest of the name is replaced by its keyed hash. 0 hashes whole names.
    pub clear_segments: usize,
}

impl Default for CryptOptions {
    fn default() -> Self {
        CryptOptions { compress_above: Some(DEFAULT_COMPRESS_ABOVE), clear_segments: 2 }
    }
}

/// The default compression threshold, in bytes of a value's body (see the crate's notes
/// for the measurement it comes from).
pub const DEFAULT_COMPRESS_ABOVE: usize = 512;

/// Why an encrypted store does not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    /// The store's data was sealed under a key id the key file does not hold.
    #[error(
        "the store was sealed with the key id `{id}`, which the key file does not hold (it holds {have:?}): add that key"
    )]
    MissingKey {
        /// The key id needed.
        id: String,
        /// The ids held.
        have: Vec<String>,
    },
    /// The key of the right id is not the key the store was sealed with.
    #[error(
        "the key `{id}` of the key file is not the key the store was sealed with (authentication failed): wrong key"
    )]
    WrongKey {
        /// The key id.
        id: String,
    },
    /// The first key of the file (the one that names keys) is not the one the store's names
    /// were made with.
    #[error(
        "the first key of the key file (`{id}`) names keys, and the store's names were made with another first key (`{canary_id}` opened the canary): put the original first key first"
    )]
    NamesKey {
        /// The first id of the file.
        id: String,
        /// The id that sealed the canary.
        canary_id: String,
    },
    /// The store holds data but no canary: it was written without encryption.
    #[error(
        "the store holds {keys} keys written without encryption; refusing to mix (migrate with a backup and a restore into an encrypted store)"
    )]
    NotEncrypted {
        /// Keys found.
        keys: usize,
    },
    /// The canary does not read.
    #[error("the encryption canary `{CANARY_KEY}` is damaged: {0}")]
    Canary(OpenError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shared by the store and its feeds' tasks.
#[derive(Debug)]
struct Core {
    ring: Arc<Keyring>,
    options: CryptOptions,
    /// Stored key → real name, for the feed's deletes (which carry no value).
    names: Mutex<HashMap<String, String>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn plain_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Core {
    /// The readable head of a key (or a prefix): up to `clear_segments` complete plain
    /// segments, each with its `/`.
    fn clear_part<'a>(&self, key: &'a str) -> &'a str {
        if key.starts_with('{') {
            return "";
        }
        let mut end = 0;
        for _ in 0..self.options.clear_segments {
            match key[end..].find('/') {
                Some(i) if plain_segment(&key[end..end + i]) => end += i + 1,
                _ => break,
            }
        }
        &key[..end]
    }

    fn group_tag(&self, group: &str) -> String {
        b64(&self.ring.name_mac(b"group", group.as_bytes())[..16])
    }

    /// Where `key` is stored: `{clear head}~{HMAC of the whole name}`, or for a key of a slot
    /// group (`{group}rest`): `{HMAC of the group}~{HMAC of the whole name}`, so that keys
    /// of one group stay in one slot.
    fn stored(&self, key: &str) -> String {
        let hash = b64(&self.ring.name_mac(b"key", key.as_bytes()));
        match split_slot_group(key) {
            Some((group, _)) => format!("{{{}}}~{hash}", self.group_tag(group)),
            None => format!("{}~{hash}", self.clear_part(key)),
        }
    }

    /// The prefix of the stored keys of every key starting with `prefix`.
    fn stored_prefix(&self, prefix: &str) -> String {
        if let Some(rest) = prefix.strip_prefix('{') {
            return match rest.find('}') {
                Some(end) if end > 0 => format!("{{{}}}", self.group_tag(&rest[..end])),
                _ => "{".to_owned(),
            };
        }
        self.clear_part(prefix).to_owned()
    }

    fn remember(&self, stored: &str, name: &str) {
        let mut names = self.names.lock().expect("not poisoned");
        if names.len() >= NAME_CACHE {
            names.clear();
        }
        if !names.contains_key(stored) {
            names.insert(stored.to_owned(), name.to_owned());
        }
    }

    fn recall(&self, stored: &str) -> Option<String> {
        self.names.lock().expect("not poisoned").get(stored).cloned()
    }

    fn seal(&self, stored: &str, name: &str, value: &[u8]) -> Bytes {
        Bytes::from(envelope::seal(&self.ring, stored, name, value, self.options.compress_above))
    }

    /// Opens the value of `stored`, checking it carries `name` when given.
    fn open(
        &self,
        backend: &'static str,
        op: Op,
        stored: &str,
        name: Option<&str>,
        bytes: &[u8],
    ) -> Result<envelope::Opened, StoreError> {
        let shown = name.unwrap_or(stored);
        let opened = envelope::open(&self.ring, stored, bytes)
            .map_err(|e| StoreError::new(backend, op, Some(shown), ErrorKind::Corrupt).with_source(e))?;
        if name.is_some_and(|n| n != opened.name) || (name.is_none() && self.stored(&opened.name) != stored) {
            return Err(StoreError::new(backend, op, Some(shown), ErrorKind::Corrupt));
        }
        self.remember(stored, &opened.name);
        Ok(opened)
    }

    /// A share's value sealed with the key's real name inside.
    fn seal_share(&self, stored: &str, name: &str, share: Share) -> Share {
        Share { value: self.seal(stored, name, &share.value), ..share }
    }

    fn open_shares(
        &self,
        backend: &'static str,
        op: Op,
        stored: &str,
        name: Option<&str>,
        mut shares: Shares,
    ) -> Result<(String, Shares), StoreError> {
        let mut real = name.map(str::to_owned);
        for s in &mut shares.top {
            let opened = self.open(backend, op, stored, real.as_deref(), &s.value)?;
            s.value = Bytes::from(opened.value);
            real = Some(opened.name);
        }
        let real = real.or_else(|| self.recall(stored)).unwrap_or_default();
        Ok((real, shares))
    }
}

/// A [`StateStore`] over any other that seals every value (XChaCha20-Poly1305, the key id
/// stored with it, zstd above a threshold) and replaces key names by keyed hashes
/// (HMAC-SHA256), the real name sealed inside the value. See the crate's documentation.
#[derive(Debug, Clone)]
pub struct EncryptedStore {
    inner: Arc<dyn StateStore>,
    core: Arc<Core>,
}

impl EncryptedStore {
    /// Wraps `inner`, after checking the key ring against what it holds: the canary must
    /// open with the ring (else [`CryptError::MissingKey`] or [`CryptError::WrongKey`]
    /// naming the key id); an empty store gets a canary; a store with data and no canary
    /// is refused ([`CryptError::NotEncrypted`]). It never starts empty over data it cannot
    /// read.
    pub async fn open(
        inner: Arc<dyn StateStore>,
        ring: Arc<Keyring>,
        options: CryptOptions,
    ) -> Result<Self, CryptError> {
        let store = EncryptedStore { inner, core: Arc::new(Core { ring, options, names: Mutex::new(HashMap::new()) }) };
        loop {
            match store.inner.get(CANARY_KEY).await? {
                Some(entry) => {
                    store.check_canary(&entry.value)?;
                    return Ok(store);
                }
                None => {
                    let mut keys = store.inner.list_keys("").await?.len();
                    if store.inner.capabilities().native_shares {
                        keys += store.inner.list_shares("").await?.len();
                    }
                    if keys > 0 {
                        return Err(CryptError::NotEncrypted { keys });
                    }
                    let canary = store.canary();
                    match store.inner.compare_and_swap(CANARY_KEY, None, canary, None).await? {
                        CasOutcome::Swapped { .. } => return Ok(store),
                        // Another process wrote one first: check it.
                        CasOutcome::Conflict { .. } => continue,
                    }
                }
            }
        }
    }

    /// The options it seals with.
    pub fn options(&self) -> CryptOptions {
        self.core.options
    }

    /// A fresh canary under the newest key.
    pub(crate) fn canary_bytes(&self) -> Bytes {
        self.canary()
    }

    fn canary(&self) -> Bytes {
        let tag = self.core.ring.name_mac(b"canary", CANARY_TEXT);
        let mut body = CANARY_TEXT.to_vec();
        body.extend_from_slice(&tag[..16]);
        Bytes::from(envelope::seal(&self.core.ring, CANARY_KEY, "", &body, None))
    }

    fn check_canary(&self, bytes: &[u8]) -> Result<(), CryptError> {
        let opened = envelope::open(&self.core.ring, CANARY_KEY, bytes).map_err(|e| match e {
            OpenError::UnknownKey { id, have } => CryptError::MissingKey { id, have },
            OpenError::WrongKey { id } => CryptError::WrongKey { id },
            other => CryptError::Canary(other),
        })?;
        let tag = self.core.ring.name_mac(b"canary", CANARY_TEXT);
        let mut expected = CANARY_TEXT.to_vec();
        expected.extend_from_slice(&tag[..16]);
        if opened.value != expected {
            return Err(CryptError::NamesKey { id: self.core.ring.names_id().to_owned(), canary_id: opened.key_id });
        }
        Ok(())
    }

    /// The store it wraps.
    pub fn inner(&self) -> &Arc<dyn StateStore> {
        &self.inner
    }

    /// The key ring.
    pub fn keyring(&self) -> &Keyring {
        &self.core.ring
    }

    /// Where `key` is stored in the inner store (for tests and tools).
    pub fn stored_key(&self, key: &str) -> String {
        self.core.stored(key)
    }

    fn err(&self, op: Op, key: Option<&str>, kind: ErrorKind) -> StoreError {
        StoreError::new(self.inner.backend(), op, key, kind)
    }

    /// Every stored key under `stored_prefix` with its opened value (name, value), in chunks.
    async fn scan(&self, stored_prefix: &str, op: Op) -> Result<Vec<(String, Entry, envelope::Opened)>, StoreError> {
        let keys: Vec<String> =
            self.inner.list_keys(stored_prefix).await?.into_iter().filter(|k| k != CANARY_KEY).collect();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_CHUNK) {
            let entries = self.inner.batch_get(chunk).await?;
            for (stored, entry) in chunk.iter().zip(entries) {
                let Some(entry) = entry else { continue };
                let opened = self.core.open(self.inner.backend(), op, stored, None, &entry.value)?;
                out.push((stored.clone(), entry, opened));
            }
        }
        Ok(out)
    }

    /// Renames an inner error's stored key to the real one.
    fn rename(&self, mut e: StoreError, names: &[(&str, &str)]) -> StoreError {
        if let Some(k) = &e.key {
            if let Some((_, real)) = names.iter().find(|(stored, _)| stored == k) {
                e.key = Some((*real).to_owned());
            }
        }
        e
    }
}

#[async_trait]
impl StateStore for EncryptedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        check_key(self.backend(), Op::Get, key)?;
        let stored = self.core.stored(key);
        let Some(e) = self.inner.get(&stored).await.map_err(|e| self.rename(e, &[(&stored, key)]))? else {
            return Ok(None);
        };
        let opened = self.core.open(self.backend(), Op::Get, &stored, Some(key), &e.value)?;
        Ok(Some(Entry { value: Bytes::from(opened.value), version: e.version, ttl: e.ttl }))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        check_key(self.backend(), Op::Set, key)?;
        check_value(self.backend(), Op::Set, key, &value)?;
        let stored = self.core.stored(key);
        self.core.remember(&stored, key);
        let sealed = self.core.seal(&stored, key, &value);
        self.inner.put(&stored, sealed, ttl).await.map_err(|e| self.rename(e, &[(&stored, key)]))
    }

    async fn put_quiet(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        check_key(self.backend(), Op::Set, key)?;
        check_value(self.backend(), Op::Set, key, &value)?;
        let stored = self.core.stored(key);
        self.core.remember(&stored, key);
        let sealed = self.core.seal(&stored, key, &value);
        self.inner.put_quiet(&stored, sealed, ttl).await.map_err(|e| self.rename(e, &[(&stored, key)]))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(self.backend(), Op::Delete, key)?;
        let stored = self.core.stored(key);
        self.core.remember(&stored, key);
        self.inner.delete(&stored).await.map_err(|e| self.rename(e, &[(&stored, key)]))
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        check_key(self.backend(), Op::Exists, key)?;
        let stored = self.core.stored(key);
        self.inner.exists(&stored).await.map_err(|e| self.rename(e, &[(&stored, key)]))
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let stored_prefix = self.core.stored_prefix(prefix);
        let mut keys: Vec<String> = self
            .scan(&stored_prefix, Op::ListKeys)
            .await?
            .into_iter()
            .map(|(_, _, o)| o.name)
            .filter(|name| name.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        Ok(keys)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        check_key(self.backend(), Op::CompareAndSwap, key)?;
        check_value(self.backend(), Op::CompareAndSwap, key, &value)?;
        let stored = self.core.stored(key);
        self.core.remember(&stored, key);
        let sealed = self.core.seal(&stored, key, &value);
        self.inner.compare_and_swap(&stored, expected, sealed, ttl).await.map_err(|e| self.rename(e, &[(&stored, key)]))
    }

    /// Keys and bytes of the real (opened) values: reads every value (a scan).
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let all = self.scan("", Op::Stats).await?;
        let mut stats = StoreStats { keys: all.len() as u64, value_bytes: 0 };
        for (_, _, o) in &all {
            stats.value_bytes += o.value.len() as u64;
        }
        Ok(stats)
    }

    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        self.inner.cleanup().await
    }

    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        let Some(inner_feed) = self.inner.subscribe(&self.core.stored_prefix(prefix)).await? else {
            return Ok(None);
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let (inner, core, wanted) = (self.inner.clone(), self.core.clone(), prefix.to_owned());
        tokio::spawn(feed_task(inner_feed, inner, core, wanted, tx));
        Ok(Some(ChangeFeed::from_channel(rx, prefix)))
    }

    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        for k in keys {
            check_key(self.backend(), Op::BatchGet, k)?;
        }
        let stored: Vec<String> = keys.iter().map(|k| self.core.stored(k)).collect();
        let entries = self.inner.batch_get(&stored).await?;
        keys.iter()
            .zip(&stored)
            .zip(entries)
            .map(|((key, s), e)| {
                e.map(|e| {
                    let o = self.core.open(self.backend(), Op::BatchGet, s, Some(key), &e.value)?;
                    Ok(Entry { value: Bytes::from(o.value), version: e.version, ttl: e.ttl })
                })
                .transpose()
            })
            .collect()
    }

    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        for (k, v, _) in &items {
            check_key(self.backend(), Op::BatchSet, k)?;
            check_value(self.backend(), Op::BatchSet, k, v)?;
        }
        let mut names = Vec::with_capacity(items.len());
        let sealed: Vec<_> = items
            .into_iter()
            .map(|(k, v, ttl)| {
                let s = self.core.stored(&k);
                self.core.remember(&s, &k);
                let sealed = self.core.seal(&s, &k, &v);
                names.push((s.clone(), k));
                (s, sealed, ttl)
            })
            .collect();
        self.inner.batch_set(sealed).await.map_err(|e| {
            let pairs: Vec<(&str, &str)> = names.iter().map(|(s, k)| (s.as_str(), k.as_str())).collect();
            self.rename(e, &pairs)
        })
    }

    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        for k in keys {
            check_key(self.backend(), Op::BatchDelete, k)?;
        }
        let stored: Vec<String> = keys
            .iter()
            .map(|k| {
                let s = self.core.stored(k);
                self.core.remember(&s, k);
                s
            })
            .collect();
        self.inner.batch_delete(&stored).await
    }

    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        group.validate(self.backend())?;
        if self.capabilities().one_slot_groups {
            group.check_one_slot(self.backend())?;
        }
        let mut names: Vec<(String, String)> = Vec::new();
        let mut name = |k: &str| {
            let s = self.core.stored(k);
            self.core.remember(&s, k);
            names.push((s.clone(), k.to_owned()));
            s
        };
        let checks = group.checks.iter().map(|c| Precondition { key: name(&c.key), version: c.version }).collect();
        let writes = group
            .writes
            .iter()
            .map(|w| match w {
                GroupWrite::Put { key, value, ttl } => {
                    let s = name(key);
                    let sealed = self.core.seal(&s, key, value);
                    GroupWrite::Put { key: s, value: sealed, ttl: *ttl }
                }
                GroupWrite::Delete { key } => GroupWrite::Delete { key: name(key) },
            })
            .collect();
        self.inner.transact(Group { checks, writes }).await.map_err(|e| {
            let pairs: Vec<(&str, &str)> = names.iter().map(|(s, k)| (s.as_str(), k.as_str())).collect();
            self.rename(e, &pairs)
        })
    }

    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        for w in &items {
            check_share(self.backend(), Op::PutShares, w)?;
        }
        if !self.inner.capabilities().native_shares {
            if self.inner.capabilities().transactions {
                return self.put_shares_grouped(&items).await;
            }
            // As the port's default, over this store (so that the value is sealed whole).
            for w in items {
                update(self, &w.key, 64, |current| {
                    let mut shares = current.and_then(|v| Shares::decode(v)).unwrap_or_default();
                    shares.upsert(w.share.clone());
                    shares.encode()
                })
                .await?;
            }
            return Ok(());
        }
        let mut names = Vec::with_capacity(items.len());
        let sealed = items
            .into_iter()
            .map(|w| {
                let s = self.core.stored(&w.key);
                self.core.remember(&s, &w.key);
                let share = self.core.seal_share(&s, &w.key, w.share);
                names.push((s.clone(), w.key));
                ShareWrite { key: s, share }
            })
            .collect();
        self.inner.put_shares(sealed).await.map_err(|e| {
            let pairs: Vec<(&str, &str)> = names.iter().map(|(s, k)| (s.as_str(), k.as_str())).collect();
            self.rename(e, &pairs)
        })
    }

    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        if !self.inner.capabilities().native_shares {
            let entries = self.batch_get(keys).await?;
            return keys
                .iter()
                .zip(entries)
                .map(|(key, entry)| match entry {
                    None => Ok(None),
                    Some(e) => Shares::decode(&e.value)
                        .map(Some)
                        .ok_or_else(|| self.err(Op::GetShares, Some(key), ErrorKind::Corrupt)),
                })
                .collect();
        }
        for k in keys {
            check_key(self.backend(), Op::GetShares, k)?;
        }
        let stored: Vec<String> = keys.iter().map(|k| self.core.stored(k)).collect();
        let got = self.inner.shares(&stored, member).await?;
        keys.iter()
            .zip(&stored)
            .zip(got)
            .map(|((key, s), shares)| {
                shares
                    .map(|sh| self.core.open_shares(self.backend(), Op::GetShares, s, Some(key), sh).map(|(_, sh)| sh))
                    .transpose()
            })
            .collect()
    }

    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        if !self.inner.capabilities().native_shares {
            return Ok(self.shares(std::slice::from_ref(&key.to_owned()), "").await?.pop().flatten());
        }
        check_key(self.backend(), Op::GetShares, key)?;
        let stored = self.core.stored(key);
        match self.inner.all_shares(&stored).await.map_err(|e| self.rename(e, &[(&stored, key)]))? {
            None => Ok(None),
            Some(sh) => Ok(Some(self.core.open_shares(self.backend(), Op::GetShares, &stored, Some(key), sh)?.1)),
        }
    }

    /// The key ring, to seal backups with (the newest key seals, every key opens).
    fn backup_seal(&self) -> Option<Arc<dyn BackupSeal>> {
        Some(Arc::new(RingSeal { ring: self.core.ring.clone(), compress_above: self.core.options.compress_above }))
    }

    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        if !self.inner.capabilities().native_shares {
            return self.list_keys(prefix).await;
        }
        let mut out = Vec::new();
        for s in self.inner.list_shares(&self.core.stored_prefix(prefix)).await? {
            let name = match self.core.recall(&s) {
                Some(name) => name,
                None => match self.inner.all_shares(&s).await? {
                    Some(sh) => self.core.open_shares(self.backend(), Op::ListShares, &s, None, sh)?.0,
                    None => continue,
                },
            };
            if name.starts_with(prefix) {
                out.push(name);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// Seals backups with a store's key ring: the envelope of values, bound to the backup's
/// context (the chunk's position) in place of a stored key, with an empty name.
#[derive(Debug)]
struct RingSeal {
    ring: Arc<Keyring>,
    compress_above: Option<usize>,
}

impl BackupSeal for RingSeal {
    fn key_id(&self) -> &str {
        self.ring.newest_id()
    }

    fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        envelope::seal(&self.ring, context, "", plain, self.compress_above)
    }

    fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        match envelope::open(&self.ring, context, sealed) {
            Ok(o) if o.name.is_empty() => Ok(o.value),
            Ok(_) | Err(OpenError::NotSealed | OpenError::Malformed) => Err(SealError::Malformed),
            Err(OpenError::UnknownKey { id, have }) => Err(SealError::MissingKey { id, have }),
            Err(OpenError::WrongKey { id }) => Err(SealError::WrongKey { id }),
        }
    }
}

impl EncryptedStore {
    /// Shares without a native aggregate, on a store with groups: every key's shares read,
    /// changed and written back as one group with the versions read as preconditions (one
    /// transaction for a pulse's thousands of shares, as the stores' own `put_shares`),
    /// read again when a precondition failed.
    async fn put_shares_grouped(&self, items: &[ShareWrite]) -> Result<(), StoreError> {
        let mut keys: Vec<String> = Vec::new();
        let mut by_key: HashMap<&str, Vec<&Share>> = HashMap::new();
        for w in items {
            let list = by_key.entry(w.key.as_str()).or_default();
            if list.is_empty() {
                keys.push(w.key.clone());
            }
            list.push(&w.share);
        }
        const ATTEMPTS: u32 = 64;
        for _ in 0..ATTEMPTS {
            let entries = self.batch_get(&keys).await?;
            let mut group = Group::new();
            for (key, entry) in keys.iter().zip(entries) {
                let mut shares = entry.as_ref().and_then(|e| Shares::decode(&e.value)).unwrap_or_default();
                for share in &by_key[key.as_str()] {
                    shares.upsert((*share).clone());
                }
                let ttl = entry.as_ref().and_then(|e| e.ttl);
                group = group.check(key.clone(), entry.map(|e| e.version)).put(key.clone(), shares.encode(), ttl);
            }
            match self.transact(group).await {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.kind, ErrorKind::PreconditionFailed { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(self.err(Op::PutShares, keys.first().map(String::as_str), ErrorKind::Contended(ATTEMPTS)))
    }
}

/// Reads the inner feed and hands on its changes with real names and opened values; a
/// change it cannot name (a delete of a key never seen here, a value that does not open)
/// becomes [`Change::Resync`].
async fn feed_task(
    mut feed: ChangeFeed,
    inner: Arc<dyn StateStore>,
    core: Arc<Core>,
    prefix: String,
    tx: tokio::sync::mpsc::Sender<Change>,
) {
    let backend = inner.backend();
    while let Some(change) = feed.recv().await {
        let out = match change {
            Change::Resync => Change::Resync,
            Change::Set { key, .. } if key == CANARY_KEY => continue,
            Change::Set { key, version, value: Some(v) } => {
                let opened = if v.first() == Some(&envelope::FORMAT_V1) {
                    core.open(backend, Op::Subscribe, &key, None, &v).map(|o| (o.name, Bytes::from(o.value)))
                } else if let Some(shares) = Shares::decode(&v) {
                    core.open_shares(backend, Op::Subscribe, &key, None, shares).map(|(n, s)| (n, s.encode()))
                } else {
                    Err(StoreError::new(backend, Op::Subscribe, Some(&key), ErrorKind::Corrupt))
                };
                match opened {
                    Ok((name, value)) => Change::Set { key: name, version, value: Some(value) },
                    Err(e) => {
                        tracing::warn!(error = %e, "a change on the feed does not open; resynchronising");
                        Change::Resync
                    }
                }
            }
            Change::Set { key, version, value: None } => {
                let name = match core.recall(&key) {
                    Some(name) => Some(name),
                    None => match inner.get(&key).await {
                        Ok(Some(e)) => core.open(backend, Op::Subscribe, &key, None, &e.value).ok().map(|o| o.name),
                        _ => None,
                    },
                };
                match name {
                    Some(name) => Change::Set { key: name, version, value: None },
                    None => Change::Resync,
                }
            }
            Change::Deleted { key } => core.recall(&key).map_or(Change::Resync, |key| Change::Deleted { key }),
            Change::Expired { key } => core.recall(&key).map_or(Change::Resync, |key| Change::Expired { key }),
        };
        if out.key().is_some_and(|k| !k.starts_with(&prefix)) {
            continue;
        }
        if tx.send(out).await.is_err() {
            return;
        }
    }
}
