//! What a node asks of its store, counted: the wrapper the fleet harnesses (`fleet` over a
//! real store, `vfleet` over the store model in virtual time) put around each node's store.
//!
//! One operation is one key read or written (one Redis command or script each); a call is
//! one round trip; bytes are keys and values, change notices included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use atrion_state::shares::{ShareWrite, Shares};
use atrion_state::{
    Capabilities, CasOutcome, Change, ChangeFeed, CleanupStats, Entry, Group, GroupWrite, StateStore, StoreError,
    StoreStats,
};
use bytes::Bytes;

/// What one node's store connection did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Calls of the port (round trips).
    pub calls: AtomicU64,
    /// Keys read or written (one Redis command or script each).
    pub ops: AtomicU64,
    /// Bytes of keys and values written.
    pub bytes_out: AtomicU64,
    /// Bytes of keys and values read, change notices included.
    pub bytes_in: AtomicU64,
    /// Change notices received.
    pub notices: AtomicU64,
}

/// A [`Tally`] read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls (round trips).
    pub calls: u64,
    /// Key operations.
    pub ops: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Bytes received, notices included.
    pub bytes_in: u64,
    /// Notices received.
    pub notices: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, b: Counts) -> Counts {
        Counts {
            calls: self.calls - b.calls,
            ops: self.ops - b.ops,
            bytes_out: self.bytes_out - b.bytes_out,
            bytes_in: self.bytes_in - b.bytes_in,
            notices: self.notices - b.notices,
        }
    }
}

impl Tally {
    fn call(&self, ops: usize, out: usize, inn: usize) {
        self.calls.fetch_add(1, Relaxed);
        self.ops.fetch_add(ops as u64, Relaxed);
        self.bytes_out.fetch_add(out as u64, Relaxed);
        self.bytes_in.fetch_add(inn as u64, Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            calls: self.calls.load(Relaxed),
            ops: self.ops.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            notices: self.notices.load(Relaxed),
        }
    }
}

/// A store that counts what its node asks of it into a [`Tally`].
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn StateStore>,
    tally: Arc<Tally>,
}

impl Counting {
    /// `inner`, counted into `tally`.
    pub fn new(inner: Arc<dyn StateStore>, tally: Arc<Tally>) -> Self {
        Counting { inner, tally }
    }
}

fn entry_len(e: &Option<Entry>) -> usize {
    e.as_ref().map_or(0, |e| e.value.len())
}

fn shares_len(s: &Option<Shares>) -> usize {
    s.as_ref().map_or(0, |s| s.top.iter().map(|x| x.member.len() + x.value.len() + 8).sum())
}

#[async_trait]
impl StateStore for Counting {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let got = self.inner.get(key).await?;
        self.tally.call(1, key.len(), entry_len(&got));
        Ok(got)
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.tally.call(1, key.len() + value.len(), 0);
        self.inner.put(key, value, ttl).await
    }
    async fn put_quiet(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.tally.call(1, key.len() + value.len(), 0);
        self.inner.put_quiet(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.tally.call(1, key.len(), 0);
        self.inner.delete(key).await
    }
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = self.inner.list_keys(prefix).await?;
        self.tally.call(1, prefix.len(), keys.iter().map(String::len).sum());
        Ok(keys)
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome, StoreError> {
        self.tally.call(1, key.len() + value.len(), 0);
        self.inner.compare_and_swap(key, expected, value, ttl).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn cleanup(&self) -> Result<CleanupStats, StoreError> {
        self.inner.cleanup().await
    }
    async fn subscribe(&self, prefix: &str) -> Result<Option<ChangeFeed>, StoreError> {
        let Some(mut feed) = self.inner.subscribe(prefix).await? else { return Ok(None) };
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let tally = self.tally.clone();
        tokio::spawn(async move {
            while let Some(change) = feed.recv().await {
                let len = match &change {
                    Change::Set { key, value, .. } => key.len() + value.as_ref().map_or(0, Bytes::len),
                    Change::Deleted { key } | Change::Expired { key } => key.len(),
                    _ => 0,
                };
                tally.bytes_in.fetch_add(len as u64, Relaxed);
                tally.notices.fetch_add(1, Relaxed);
                if tx.send(change).await.is_err() {
                    break;
                }
            }
        });
        Ok(Some(ChangeFeed::from_channel(rx, prefix)))
    }
    async fn batch_get(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, StoreError> {
        let got = self.inner.batch_get(keys).await?;
        self.tally.call(keys.len(), keys.iter().map(String::len).sum(), got.iter().map(entry_len).sum());
        Ok(got)
    }
    async fn batch_set(&self, items: Vec<(String, Bytes, Option<Duration>)>) -> Result<Vec<u64>, StoreError> {
        self.tally.call(items.len(), items.iter().map(|(k, v, _)| k.len() + v.len()).sum(), 0);
        self.inner.batch_set(items).await
    }
    async fn batch_delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        self.tally.call(keys.len(), keys.iter().map(String::len).sum(), 0);
        self.inner.batch_delete(keys).await
    }
    async fn transact(&self, group: Group) -> Result<Vec<Option<u64>>, StoreError> {
        let out = group.keys().map(str::len).sum::<usize>()
            + group
                .writes
                .iter()
                .map(|w| if let GroupWrite::Put { value, .. } = w { value.len() } else { 0 })
                .sum::<usize>();
        self.tally.call(1, out, 0);
        self.inner.transact(group).await
    }
    async fn put_shares(&self, items: Vec<ShareWrite>) -> Result<(), StoreError> {
        let out = items.iter().map(|w| w.key.len() + w.share.member.len() + w.share.value.len() + 8).sum();
        self.tally.call(items.len(), out, 0);
        self.inner.put_shares(items).await
    }
    async fn shares(&self, keys: &[String], member: &str) -> Result<Vec<Option<Shares>>, StoreError> {
        let got = self.inner.shares(keys, member).await?;
        self.tally.call(keys.len(), keys.iter().map(String::len).sum(), got.iter().map(shares_len).sum());
        Ok(got)
    }
    async fn all_shares(&self, key: &str) -> Result<Option<Shares>, StoreError> {
        let got = self.inner.all_shares(key).await?;
        self.tally.call(1, key.len(), shares_len(&got));
        Ok(got)
    }
    async fn list_shares(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = self.inner.list_shares(prefix).await?;
        self.tally.call(1, prefix.len(), keys.iter().map(String::len).sum());
        Ok(keys)
    }
}
