//! Bounded, append-only logs in the shared store: the history of applied policy changes
//! and the audit trail. One key per entry (`{prefix}{ms:013}-{node}-{seq:08}`), so that
//! nodes append without contending and keys sort in time order; the oldest entries past
//! the bound are deleted as the log grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use atrion_state::StateStore;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PolicyError;

/// How many appends pass between two trims.
const TRIM_EVERY: u64 = 32;

/// A bounded log under one prefix.
#[derive(Debug)]
pub struct Log {
    store: Arc<dyn StateStore>,
    prefix: String,
    node: String,
    limit: usize,
    seq: AtomicU64,
}

/// One page of a log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The entries, newest first, each with its key (the cursor).
    pub entries: Vec<Logged<T>>,
    /// Pass as `before` for the next (older) page; `None` at the oldest.
    pub next: Option<String>,
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
    /// A log of at most about `limit` entries under `prefix`, appended to as `node`.
    pub fn new(store: Arc<dyn StateStore>, prefix: String, node: &str, limit: usize) -> Self {
        Log { store, prefix, node: node.to_owned(), limit: limit.max(1), seq: AtomicU64::new(0) }
    }

    /// Appends `entry` at `at_ms`; returns its key.
    pub async fn append(&self, at_ms: u64, entry: &impl Serialize) -> Result<String, PolicyError> {
        let seq = self.seq.fetch_add(1, Relaxed);
        let key = format!("{}{at_ms:013}-{}-{seq:08}", self.prefix, self.node);
        let bytes = serde_json::to_vec(entry).map_err(|e| PolicyError::Encode(e.to_string()))?;
        self.store.put(&key, Bytes::from(bytes), None).await?;
        if seq % TRIM_EVERY == 0 {
            self.trim().await?;
        }
        Ok(key)
    }

    /// Deletes the oldest entries past the bound.
    pub async fn trim(&self) -> Result<u64, PolicyError> {
        let keys = self.store.list_keys(&self.prefix).await?;
        if keys.len() <= self.limit {
            return Ok(0);
        }
        Ok(self.store.batch_delete(&keys[..keys.len() - self.limit]).await?)
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
