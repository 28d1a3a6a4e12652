//! The backup format, in one place: one JSON object per line, `{"key", "value" (base64),
//! "ttl_ms"}`. [`crate::StateService::backup`] writes it to a file and the sidecar streams it
//! over HTTP; both read it back through [`BackupLine::decode`].
//!
//! A restore is checked against the namespace's [`KeyFamilies`] before anything is written:
//! each family of keys is declared by the owner of its format, with that owner's decoder,
//! so that a restore can neither bring a foreign key in nor a value its reader would choke
//! on. Each layer declares its own (`atrion_sync::cluster_families`: route shares,
//! heartbeats, route records; `atrion_policy::key_families`). [`BackupLine::write_all`] then writes all or nothing.
//!
//! **Sealed backups.** A store encrypted at rest ([`StateStore::backup_seal`] is `Some`)
//! writes its backups sealed with the same keys ([`BackupWriter`]): each chunk of lines is
//! one line `{"key_id", "sealed" (base64)}` whose sealed body is the chunk's plain lines,
//! bound to its position, and a last sealed line `{"key_id", "sealed", "end": true}` holds
//! the count of entries, so that a chunk moved, dropped or cut off is refused. The key id is
//! in clear on each line (the envelope authenticates it): the newest key seals, any key of
//! the ring opens. [`BackupLine::decode_backup`] reads both forms: a plain backup still
//! restores into an encrypted store, and a sealed one needs the keys ([`BackupError`] names
//! the key id when they are missing or wrong).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::{Group, GroupWrite, Op, StateStore, StoreError};

/// How many keys one read of a backup fetches at a time.
pub const BACKUP_CHUNK: usize = 256;

/// One entry of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLine {
    /// The key.
    pub key: String,
    /// The value's bytes.
    pub value: Bytes,
    /// The time the entry had left to live, if it expires.
    pub ttl: Option<Duration>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    value: String,
    ttl_ms: Option<u64>,
}

/// A line of a sealed backup.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedLine {
    /// The key id that sealed it (informative: the envelope carries and authenticates it).
    key_id: String,
    /// The sealed body, base64.
    sealed: String,
    /// The last line: its body is the count of entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    end: bool,
}

/// What the body of sealed line number `index` (from 0) is bound to.
fn chunk_context(index: u64) -> String {
    format!("atrion-backup/chunk/{index}")
}

/// What the end line after `chunks` chunks is bound to.
fn end_context(chunks: u64) -> String {
    format!("atrion-backup/end/{chunks}")
}

/// Seals and opens backups with the keys of a store encrypted at rest
/// ([`StateStore::backup_seal`]): the newest key seals, every key of the ring opens what it
/// sealed. Implemented by the encrypting wrapper (`atrion_crypt::EncryptedStore`).
pub trait BackupSeal: Send + Sync + std::fmt::Debug {
    /// The id of the key that seals (the newest).
    fn key_id(&self) -> &str;

    /// Seals `plain`, bound to `context` (it opens only with the same context).
    fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8>;

    /// Opens what [`BackupSeal::seal`] made with `context`.
    fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError>;
}

/// Why a sealed body does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Sealed under a key id the ring does not hold.
    #[error("sealed with the key id `{id}`, which the key file does not hold (it holds {have:?}): add that key")]
    MissingKey {
        /// The key id needed.
        id: String,
        /// The ids held.
        have: Vec<String>,
    },
    /// The key of that id does not authenticate it: a wrong key, or damaged or moved bytes.
    #[error(
        "the key `{id}` of the key file does not open it (authentication failed: a wrong key for this id, or a damaged or reordered backup)"
    )]
    WrongKey {
        /// The key id.
        id: String,
    },
    /// Not a sealed body, or one that opened and does not read.
    #[error("not a sealed body, or a damaged one")]
    Malformed,
}

/// Why a backup cannot be read. Nothing is written when reading fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A line is not a valid entry (plain) or sealed line.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The line's number, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The backup is sealed and the store has no keys (it is not encrypted at rest).
    #[error(
        "line {line}: the backup is sealed with the key id `{key_id}` and this store is not encrypted: restore it into a store opened with the key file holding `{key_id}`"
    )]
    NoKeys {
        /// The line's number, from 1.
        line: u64,
        /// The key id named by the line.
        key_id: String,
    },
    /// A sealed line does not open with the store's keys.
    #[error("line {line}: {source}")]
    Key {
        /// The line's number, from 1.
        line: u64,
        /// Why (the key id it needs).
        #[source]
        source: SealError,
    },
    /// A sealed backup whose end is missing or does not match what came before (cut off,
    /// or chunks dropped).
    #[error("the sealed backup is incomplete: {0}")]
    Incomplete(String),
}

impl BackupError {
    /// The line's number (from 1), when one line is to blame.
    pub fn line(&self) -> Option<u64> {
        match self {
            BackupError::Malformed { line, .. } | BackupError::NoKeys { line, .. } | BackupError::Key { line, .. } => {
                Some(*line)
            }
            BackupError::Incomplete(_) => None,
        }
    }

    /// The key id named, when the keys are missing or wrong.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            BackupError::NoKeys { key_id, .. } => Some(key_id),
            BackupError::Key { source: SealError::MissingKey { id, .. } | SealError::WrongKey { id }, .. } => Some(id),
            _ => None,
        }
    }
}

/// Writes a backup a chunk at a time: plain JSON lines, or sealed ones with the store's
/// keys ([`StateStore::backup_seal`]); see the module's documentation.
///
/// ```
/// use atrion_state::{BackupLine, BackupWriter};
/// let mut w = BackupWriter::new(None);
/// let line = BackupLine { key: "ns/k".into(), value: "v".into(), ttl: None };
/// let mut text = w.chunk(std::slice::from_ref(&line));
/// text.push_str(&w.finish());
/// assert_eq!(BackupLine::decode_backup(&text, None).unwrap(), vec![(1, line)]);
/// ```
#[derive(Debug)]
pub struct BackupWriter {
    seal: Option<Arc<dyn BackupSeal>>,
    chunks: u64,
    entries: u64,
}

impl BackupWriter {
    /// A writer that seals with `seal` (`None`: plain lines).
    pub fn new(seal: Option<Arc<dyn BackupSeal>>) -> Self {
        BackupWriter { seal, chunks: 0, entries: 0 }
    }

    /// Whether it seals.
    pub fn sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// The text of the next chunk of `lines`, each line ending with a newline (one sealed
    /// line for the chunk when sealing; nothing for no line).
    pub fn chunk(&mut self, lines: &[BackupLine]) -> String {
        let mut text = String::new();
        for line in lines {
            text.push_str(&line.encode());
            text.push('\n');
        }
        self.entries += lines.len() as u64;
        let Some(seal) = &self.seal else { return text };
        if lines.is_empty() {
            return String::new();
        }
        let sealed = seal.seal(&chunk_context(self.chunks), text.as_bytes());
        self.chunks += 1;
        sealed_line(seal.key_id(), &sealed, false)
    }

    /// What ends the backup: nothing for a plain one; the sealed end line (the count of
    /// entries) for a sealed one.
    pub fn finish(self) -> String {
        match &self.seal {
            None => String::new(),
            Some(seal) => {
                let sealed = seal.seal(&end_context(self.chunks), self.entries.to_string().as_bytes());
                sealed_line(seal.key_id(), &sealed, true)
            }
        }
    }
}

fn sealed_line(key_id: &str, sealed: &[u8], end: bool) -> String {
    let line = SealedLine { key_id: key_id.to_owned(), sealed: BASE64.encode(sealed), end };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

impl BackupLine {
    /// The line's JSON, without the newline.
    pub fn encode(&self) -> String {
        let line = Line {
            key: self.key.clone(),
            value: BASE64.encode(&self.value),
            ttl_ms: self.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Reads one line; the error says what is wrong with it. The key is checked as a store
    /// would check it.
    pub fn decode(line: &str) -> Result<BackupLine, String> {
        let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let value = BASE64.decode(&l.value).map_err(|e| format!("value is not base64: {e}"))?;
        crate::check_key("backup", Op::BatchSet, &l.key).map_err(|e| e.to_string())?;
        Ok(BackupLine { key: l.key, value: Bytes::from(value), ttl: l.ttl_ms.map(Duration::from_millis) })
    }

    /// A whole backup, one line each (blank lines skipped); the error is the first bad
    /// line's number (from 1) and what is wrong with it. Nothing is written by reading.
    pub fn decode_all(text: &str) -> Result<Vec<BackupLine>, (u64, String)> {
        Ok(BackupLine::decode_numbered(text)?.into_iter().map(|(_, l)| l).collect())
    }

    /// [`BackupLine::decode_all`], each line with its number (from 1).
    pub fn decode_numbered(text: &str) -> Result<Vec<(u64, BackupLine)>, (u64, String)> {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                let n = i as u64 + 1;
                BackupLine::decode(line).map(|l| (n, l)).map_err(|reason| (n, reason))
            })
            .collect()
    }

    /// A whole backup, plain or sealed (see the module's documentation), each entry with the
    /// number (from 1) of the line that held it (for a sealed backup, the sealed line).
    /// A sealed backup is opened with `seal` (the store's, [`StateStore::backup_seal`]); a
    /// plain one reads with or without it. Nothing is written by reading.
    pub fn decode_backup(text: &str, seal: Option<&dyn BackupSeal>) -> Result<Vec<(u64, BackupLine)>, BackupError> {
        let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()).peekable();
        let sealed_first = lines.peek().is_some_and(|(_, line)| serde_json::from_str::<SealedLine>(line).is_ok());
        if !sealed_first {
            return BackupLine::decode_numbered(text).map_err(|(line, reason)| BackupError::Malformed { line, reason });
        }
        let mut out = Vec::new();
        let (mut chunks, mut ended) = (0u64, false);
        for (i, text) in lines {
            let n = i as u64 + 1;
            let malformed = |reason: String| BackupError::Malformed { line: n, reason };
            if ended {
                return Err(malformed("a line after the end of a sealed backup".into()));
            }
            let line: SealedLine = serde_json::from_str(text)
                .map_err(|e| malformed(format!("a sealed backup holds sealed lines only: {e}")))?;
            let Some(seal) = seal else { return Err(BackupError::NoKeys { line: n, key_id: line.key_id }) };
            let bytes = BASE64.decode(&line.sealed).map_err(|e| malformed(format!("sealed is not base64: {e}")))?;
            let context = if line.end { end_context(chunks) } else { chunk_context(chunks) };
            let body = seal.open(&context, &bytes).map_err(|source| BackupError::Key { line: n, source })?;
            let body =
                String::from_utf8(body).map_err(|_| BackupError::Key { line: n, source: SealError::Malformed })?;
            if line.end {
                let count: u64 = body.parse().map_err(|_| malformed("the end line's count does not read".into()))?;
                if count != out.len() as u64 {
                    return Err(BackupError::Incomplete(format!(
                        "the end says {count} entries, the chunks hold {}",
                        out.len()
                    )));
                }
                ended = true;
                continue;
            }
            chunks += 1;
            for inner in body.lines().filter(|l| !l.trim().is_empty()) {
                let entry = BackupLine::decode(inner)
                    .map_err(|reason| malformed(format!("an entry sealed in it: {reason}")))?;
                out.push((n, entry));
            }
        }
        if !ended {
            return Err(BackupError::Incomplete("its end line is missing (cut off)".into()));
        }
        Ok(out)
    }

    /// Checks every numbered line against `families` ([`KeyFamilies::check`]); the error
    /// names the first refused line, its key and what is wrong. Nothing is written.
    pub fn check_all(lines: &[(u64, BackupLine)], families: &KeyFamilies) -> Result<(), RestoreRefusal> {
        for (n, line) in lines {
            families.check(line).map_err(|reason| RestoreRefusal { line: *n, key: line.key.clone(), reason })?;
        }
        Ok(())
    }

    /// Writes `lines` into `store` (existing keys are overwritten); returns how many. All or
    /// nothing:
    /// - on a store with [`crate::Capabilities::transactions`] (whose slot rule, if any, the
    ///   keys obey), as one [`Group`] ([`StateStore::transact`]): no reader ever sees part of
    ///   the restore, and a crash leaves all of it or none;
    /// - elsewhere [`BACKUP_CHUNK`] at a time: what the keys held before is read first, and
    ///   when a write fails half-way it is put back (keys that did not exist are deleted
    ///   again) before the error is returned. Readers may see the restore half-done
    ///   meanwhile, a crash may leave it so, and a writer racing the restore on the same
    ///   keys may see its write undone by that rollback.
    pub async fn write_all(store: &dyn StateStore, lines: Vec<BackupLine>) -> Result<u64, StoreError> {
        let n = lines.len() as u64;
        let caps = store.capabilities();
        if caps.transactions && n > 0 {
            let group = Group {
                checks: Vec::new(),
                writes: lines
                    .iter()
                    .map(|l| GroupWrite::Put { key: l.key.clone(), value: l.value.clone(), ttl: l.ttl })
                    .collect(),
            };
            if !caps.one_slot_groups || group.check_one_slot(store.backend()).is_ok() {
                store.transact(group).await?;
                return Ok(n);
            }
        }
        let items: Vec<(String, Bytes, Option<Duration>)> =
            lines.into_iter().map(|l| (l.key, l.value, l.ttl)).collect();
        let keys: Vec<String> = items.iter().map(|(k, _, _)| k.clone()).collect();
        let mut before = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BACKUP_CHUNK) {
            before.extend(store.batch_get(chunk).await?);
        }
        for (done, chunk) in items.chunks(BACKUP_CHUNK).enumerate() {
            if let Err(e) = store.batch_set(chunk.to_vec()).await {
                // The failed chunk may have been applied in part: it is put back too.
                let touched = ((done + 1) * BACKUP_CHUNK).min(keys.len());
                put_back(store, &keys[..touched], &before[..touched]).await;
                return Err(e);
            }
        }
        Ok(n)
    }

    /// The live entries of `keys` in `store`, as lines (a key gone meanwhile is skipped).
    pub async fn read(store: &dyn StateStore, keys: &[String]) -> Result<Vec<BackupLine>, StoreError> {
        let entries = store.batch_get(keys).await?;
        Ok(keys
            .iter()
            .zip(entries)
            .filter_map(|(k, e)| e.map(|e| BackupLine { key: k.clone(), value: e.value, ttl: e.ttl }))
            .collect())
    }
}

/// Writes back what `keys` held (`before`, in order), deleting those that held nothing;
/// best effort: a failure is logged, the restore's own error is what the caller reports.
async fn put_back(store: &dyn StateStore, keys: &[String], before: &[Option<crate::Entry>]) {
    let (mut restore, mut delete) = (Vec::new(), Vec::new());
    for (key, entry) in keys.iter().zip(before) {
        match entry {
            Some(e) => restore.push((key.clone(), e.value.clone(), e.ttl)),
            None => delete.push(key.clone()),
        }
    }
    for chunk in restore.chunks(BACKUP_CHUNK) {
        if let Err(e) = store.batch_set(chunk.to_vec()).await {
            tracing::warn!(error = %e, "a failed restore could not put every key back");
        }
    }
    if let Err(e) = store.batch_delete(&delete).await {
        tracing::warn!(error = %e, "a failed restore could not remove every key it wrote");
    }
}

/// Why a restore refuses a line: its number (from 1), its key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, key `{key}`: {reason}")]
pub struct RestoreRefusal {
    /// The line's number, from 1.
    pub line: u64,
    /// Its key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks the bytes of a value: what is wrong with them.
pub type ValueCheck = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// One family of keys of a namespace (one exact key, or every key under a prefix), and the
/// check of its values, declared by the owner of the format.
#[derive(Clone)]
pub struct KeyFamily {
    name: &'static str,
    key: String,
    prefix: bool,
    check: ValueCheck,
}

impl std::fmt::Debug for KeyFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFamily")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl KeyFamily {
    /// The family of one key.
    pub fn exact(name: &'static str, key: String, check: ValueCheck) -> Self {
        KeyFamily { name, key, prefix: false, check }
    }

    /// The family of every key that continues `prefix` (with at least one byte more).
    pub fn under(name: &'static str, prefix: String, check: ValueCheck) -> Self {
        KeyFamily { name, key: prefix, prefix: true, check }
    }

    /// The family's name (`route shares`, `desired policies`…).
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn matches(&self, key: &str) -> bool {
        if self.prefix { key.len() > self.key.len() && key.starts_with(&self.key) } else { key == self.key }
    }
}

/// Every family of keys a namespace holds: what a restore accepts.
#[derive(Debug, Clone, Default)]
pub struct KeyFamilies {
    families: Vec<KeyFamily>,
}

impl KeyFamilies {
    /// No family: every key is foreign.
    pub fn new() -> Self {
        KeyFamilies::default()
    }

    /// With these families too.
    pub fn with(mut self, families: impl IntoIterator<Item = KeyFamily>) -> Self {
        self.families.extend(families);
        self
    }

    /// The family of `key`: the most specific one that matches (an exact key before a
    /// prefix, a longer prefix before a shorter one).
    pub fn family(&self, key: &str) -> Option<&KeyFamily> {
        self.families.iter().filter(|f| f.matches(key)).max_by_key(|f| (!f.prefix, f.key.len()))
    }

    /// Whether `line` may be restored: its key belongs to a family, and that family's owner
    /// decodes its value. The error says which of the two failed.
    pub fn check(&self, line: &BackupLine) -> Result<(), String> {
        let family =
            self.family(&line.key).ok_or_else(|| "the key belongs to no family of this namespace".to_owned())?;
        (family.check)(&line.value).map_err(|why| format!("not a valid value of {}: {why}", family.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_roundtrip_and_garbage_is_named() {
        let l = BackupLine {
            key: "ns/route/a".into(),
            value: Bytes::from_static(b"\x00\xff"),
            ttl: Some(Duration::from_millis(1500)),
        };
        assert_eq!(BackupLine::decode(&l.encode()), Ok(l));
        assert!(BackupLine::decode(r#"{"key":"k","value":"!!","ttl_ms":null}"#).unwrap_err().contains("base64"));
        assert!(BackupLine::decode(r#"{"key":"k","value":"","extra":1}"#).unwrap_err().contains("extra"));
        assert!(BackupLine::decode(r#"{"key":"","value":"","ttl_ms":null}"#).is_err());
        let two = format!("{}\n\n{}\n", l2().encode(), l2().encode());
        assert_eq!(BackupLine::decode_all(&two).map(|v| v.len()), Ok(2));
        let bad = format!("{}\n\nnot json\n", l2().encode());
        assert_eq!(BackupLine::decode_all(&bad).map_err(|(line, _)| line), Err(3));
    }

    /// An in-memory store whose writes of a key containing `poison` fail, after the rest of
    /// a batch before it was written.
    #[derive(Debug, Default)]
    struct Poisoned(crate::InMemoryStore);

    #[async_trait::async_trait]
    impl StateStore for Poisoned {
        fn backend(&self) -> &'static str {
            "poisoned"
        }
        fn capabilities(&self) -> crate::Capabilities {
            // Without groups: the restore's chunked path, with its rollback.
            crate::Capabilities { transactions: false, ..self.0.capabilities() }
        }
        async fn get(&self, key: &str) -> Result<Option<crate::Entry>, StoreError> {
            self.0.get(key).await
        }
        async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
            if key.contains("poison") {
                return Err(StoreError::new("poisoned", Op::Set, Some(key), crate::ErrorKind::Unavailable));
            }
            self.0.put(key, value, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<bool, StoreError> {
            self.0.delete(key).await
        }
        async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.0.list_keys(prefix).await
        }
        async fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<u64>,
            value: Bytes,
            ttl: Option<Duration>,
        ) -> Result<crate::CasOutcome, StoreError> {
            self.0.compare_and_swap(key, expected, value, ttl).await
        }
        async fn stats(&self) -> Result<crate::StoreStats, StoreError> {
            self.0.stats().await
        }
        async fn cleanup(&self) -> Result<crate::CleanupStats, StoreError> {
            self.0.cleanup().await
        }
    }

    #[tokio::test]
    async fn a_write_that_fails_half_way_puts_back_what_was_there() {
        let store = Poisoned::default();
        store.put("ns/kept", Bytes::from_static(b"old"), Some(Duration::from_secs(60))).await.unwrap();
        let mut lines: Vec<BackupLine> = (0..BACKUP_CHUNK + 10)
            .map(|i| BackupLine { key: format!("ns/new{i:04}"), value: Bytes::from_static(b"new"), ttl: None })
            .collect();
        lines.insert(3, BackupLine { key: "ns/kept".into(), value: Bytes::from_static(b"new"), ttl: None });
        lines.push(BackupLine { key: "ns/poison".into(), value: Bytes::from_static(b"x"), ttl: None });
        assert!(BackupLine::write_all(&store, lines.clone()).await.is_err());
        assert_eq!(store.list_keys("").await.unwrap(), ["ns/kept"], "the keys written before the failure are gone");
        let kept = store.get("ns/kept").await.unwrap().unwrap();
        assert_eq!((kept.value.as_ref(), kept.ttl.is_some()), (&b"old"[..], true), "the old value is back");
        lines.pop();
        assert_eq!(BackupLine::write_all(&store, lines).await.unwrap(), BACKUP_CHUNK as u64 + 11);
        assert_eq!(store.get("ns/kept").await.unwrap().unwrap().value.as_ref(), b"new");
    }

    /// On a store with groups, a restore that fails is never seen half-written: nothing
    /// reaches the change feed (the chunked path writes, then puts back), nothing is left.
    #[tokio::test]
    async fn a_failing_restore_on_a_store_with_groups_is_never_seen_half_written() {
        let store = crate::InMemoryStore::new();
        assert!(store.capabilities().transactions);
        store.put("ns/kept", Bytes::from_static(b"old"), None).await.unwrap();
        let mut feed = store.subscribe("").await.unwrap().unwrap();
        let mut lines: Vec<BackupLine> = (0..BACKUP_CHUNK * 3)
            .map(|i| BackupLine { key: format!("ns/new{i:04}"), value: Bytes::from_static(b"new"), ttl: None })
            .collect();
        lines.insert(0, BackupLine { key: "ns/kept".into(), value: Bytes::from_static(b"new"), ttl: None });
        let too_large = Bytes::from(vec![0u8; crate::MAX_VALUE_LEN + 1]);
        lines.push(BackupLine { key: "ns/too-large".into(), value: too_large, ttl: None });
        let e = BackupLine::write_all(&store, lines.clone()).await.unwrap_err();
        assert!(matches!(e.kind, crate::ErrorKind::ValueTooLarge { .. }), "{e}");
        assert_eq!(store.list_keys("").await.unwrap(), ["ns/kept"]);
        assert_eq!(store.get("ns/kept").await.unwrap().unwrap().value.as_ref(), b"old");
        // A marker written after: the first thing on the feed, so nothing came before it.
        store.put("marker", Bytes::new(), None).await.unwrap();
        assert_eq!(feed.recv().await.unwrap().key(), Some("marker"), "the failed restore reached no reader");
        lines.pop();
        assert_eq!(BackupLine::write_all(&store, lines).await.unwrap(), BACKUP_CHUNK as u64 * 3 + 1);
        assert_eq!(store.list_keys("ns/").await.unwrap().len(), BACKUP_CHUNK * 3 + 1);
    }

    /// A stand-in seal: its key id, the context and the body, reversed (enough to check the format's
    /// framing; the real seal is `atrion-crypt`'s, tested there).
    #[derive(Debug)]
    struct Reversed(&'static str);

    impl BackupSeal for Reversed {
        fn key_id(&self) -> &str {
            self.0
        }
        fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
            let mut out = format!("{}|{context}|", self.0).into_bytes();
            out.extend(plain.iter().rev());
            out
        }
        fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
            let body = sealed
                .strip_prefix(format!("{}|{context}|", self.0).as_bytes())
                .ok_or_else(|| SealError::WrongKey { id: self.0.to_owned() })?;
            Ok(body.iter().rev().copied().collect())
        }
    }

    #[test]
    fn a_sealed_backup_reads_back_only_with_a_seal_and_whole() {
        let seal: Arc<dyn BackupSeal> = Arc::new(Reversed("k1"));
        let mut w = BackupWriter::new(Some(seal.clone()));
        assert!(w.sealed());
        let mut text = w.chunk(&[l2(), l2()]);
        assert_eq!(w.chunk(&[]), "", "no line, no chunk");
        text.push_str(&w.chunk(&[l2()]));
        text.push_str(&w.finish());
        assert_eq!(text.lines().count(), 3);
        assert!(!text.contains("ns/k"), "{text}");
        let read = BackupLine::decode_backup(&text, Some(seal.as_ref())).unwrap();
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 1, 2]);
        // Indented, with blank lines: still sealed.
        let spaced = text.lines().map(|l| format!("  {l}\n\n")).collect::<String>();
        assert_eq!(BackupLine::decode_backup(&spaced, Some(seal.as_ref())).unwrap().len(), 3);
        let e = BackupLine::decode_backup(&text, None).unwrap_err();
        assert_eq!((e.line(), e.key_id()), (Some(1), Some("k1")), "{e}");
        let e = BackupLine::decode_backup(&text, Some(&Reversed("k2"))).unwrap_err();
        assert!(matches!(e, BackupError::Key { line: 1, .. }), "{e}");
        let two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert!(matches!(BackupLine::decode_backup(&two, Some(seal.as_ref())), Err(BackupError::Incomplete(_))));
        let after = format!("{text}{}\n", l2().encode());
        let e = BackupLine::decode_backup(&after, Some(seal.as_ref())).unwrap_err();
        assert!(matches!(e, BackupError::Malformed { line: 4, .. }), "{e}");
        // A plain backup reads with or without a seal.
        let plain = format!("{}\n", l2().encode());
        assert_eq!(BackupLine::decode_backup(&plain, Some(seal.as_ref())).unwrap(), vec![(1, l2())]);
    }

    fn l2() -> BackupLine {
        BackupLine { key: "ns/k".into(), value: Bytes::from_static(b"v"), ttl: None }
    }
}
