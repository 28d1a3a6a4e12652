//! Key rotation: the re-encryption pass.

use atrion_state::{CasOutcome, StoreError};
use bytes::Bytes;

use crate::envelope;
use crate::store::{CANARY_KEY, EncryptedStore};

/// What a re-encryption pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReencryptReport {
    /// Values looked at.
    pub scanned: u64,
    /// Values sealed again under the newest key.
    pub resealed: u64,
    /// Values already under the newest key (left alone).
    pub current: u64,
    /// Values written by someone else while the pass ran (a writer seals with the newest
    /// key, so they need nothing more), or gone.
    pub raced: u64,
}

/// Moves every value sealed under an older key to the ring's newest key, `chunk` values
/// per round trip, calling `progress(done, total)` after each chunk; then seals the canary
/// under the newest key. Each value is rewritten by compare-and-swap on the version read
/// (a concurrent write wins and is already under the newest key), keeping its time to live.
///
/// Idempotent, so it resumes: a value already under the newest key is only read, and a
/// pass stopped half-way (crash, Ctrl-C) is finished by running it again. Shares kept
/// natively by the backend (Redis, PostgreSQL) are not rewritten: each member reseals its
/// own share under the newest key at its next write.
pub async fn reencrypt(
    store: &EncryptedStore,
    chunk: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReencryptReport, StoreError> {
    let inner = store.inner();
    let ring = store.keyring();
    let newest = ring.newest_id().as_bytes();
    let keys = inner.list_keys("").await?;
    let total = keys.len() as u64;
    let mut report = ReencryptReport::default();
    let mut done = 0u64;
    for part in keys.chunks(chunk.max(1)) {
        let entries = inner.batch_get(part).await?;
        for (stored, entry) in part.iter().zip(entries) {
            done += 1;
            if stored == CANARY_KEY {
                continue;
            }
            report.scanned += 1;
            let Some(entry) = entry else {
                report.raced += 1;
                continue;
            };
            if envelope::key_id_of(&entry.value) == Some(newest) {
                report.current += 1;
                continue;
            }
            let opened = envelope::open(ring, stored, &entry.value).map_err(|e| {
                StoreError::new(inner.backend(), atrion_state::Op::Get, Some(stored), atrion_state::ErrorKind::Corrupt)
                    .with_source(e)
            })?;
            let sealed =
                Bytes::from(envelope::seal(ring, stored, &opened.name, &opened.value, store.options().compress_above));
            match inner.compare_and_swap(stored, Some(entry.version), sealed, entry.ttl).await? {
                CasOutcome::Swapped { .. } => report.resealed += 1,
                CasOutcome::Conflict { .. } => report.raced += 1,
            }
        }
        progress(done, total);
    }
    // The canary last: a store whose canary is under the newest key has nothing older left
    // (but native shares, see above).
    if let Some(entry) = inner.get(CANARY_KEY).await? {
        if envelope::key_id_of(&entry.value) != Some(newest) {
            let canary = store.canary_bytes();
            inner.compare_and_swap(CANARY_KEY, Some(entry.version), canary, None).await?;
        }
    }
    Ok(report)
}
