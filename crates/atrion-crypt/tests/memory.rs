//! The conformance suite through the wrapper over the in-memory store, and what the wrapper
//! itself promises (names, keys, rotation, feed).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use atrion_crypt::{CryptError, CryptOptions, EncryptedStore, reencrypt};
use atrion_state::{Change, InMemoryStore, StateStore};
use bytes::Bytes;
use common::*;

atrion_state::conformance_tests!(async {
    let inner: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    (Arc::new(wrap(inner, &format!("k1:{K1}")).await) as Arc<dyn StateStore>, ())
});

/// The conformance suite again with compression of every value (threshold 0) and whole
/// names hashed (no readable head).
mod compressed_and_fully_hashed {
    use super::*;
    atrion_state::conformance_tests!(async {
        let inner: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
        let options = CryptOptions { compress_above: Some(0), clear_segments: 0 };
        let s = EncryptedStore::open(inner, ring(&format!("k1:{K1}")), options).await.unwrap();
        (Arc::new(s) as Arc<dyn StateStore>, ())
    });
}

async fn raw(inner: &InMemoryStore) -> Vec<u8> {
    let mut out = Vec::new();
    for k in inner.list_keys("").await.unwrap() {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&inner.get(&k).await.unwrap().unwrap().value);
    }
    out
}

#[tokio::test]
async fn nothing_stored_names_the_route_and_the_state_reads_back() {
    let inner = Arc::new(InMemoryStore::new());
    let s = wrap(inner.clone(), &format!("k1:{K1}")).await;
    traffic(&s).await;
    let bytes = raw(&inner).await;
    assert!(bytes.len() > 500, "something was stored");
    assert_clean("the in-memory store", &bytes);
    check_snapshot(&snapshot(&s).await);
    // Family listing returns real names, sorted, only under the prefix.
    assert_eq!(s.list_keys("atrion/route/GET /pat").await.unwrap(), [format!("atrion/route/{ROUTE}")]);
    assert!(s.list_keys("atrion/route/POST").await.unwrap().is_empty());
    refuses_wrong_and_missing_keys(inner).await;
}

#[tokio::test]
async fn a_store_with_plain_data_is_refused_not_mixed() {
    let inner = Arc::new(InMemoryStore::new());
    inner.set("atrion/route/x", Bytes::from_static(b"plain")).await.unwrap();
    let e = EncryptedStore::open(inner, ring(&format!("k1:{K1}")), CryptOptions::default()).await.unwrap_err();
    assert!(matches!(e, CryptError::NotEncrypted { keys: 1 }), "{e}");
}

#[tokio::test]
async fn a_value_under_an_unknown_key_id_is_an_error_naming_it() {
    let inner = Arc::new(InMemoryStore::new());
    let both = format!("k1:{K1}\nk2:{K2}");
    let s = wrap(inner.clone(), &both).await;
    s.set("atrion/route/a", Bytes::from_static(b"v")).await.unwrap();
    // k2 sealed it; a ring with k1 only opens the canary (sealed by k2 too): refused at start.
    let e = EncryptedStore::open(inner.clone(), ring(&format!("k1:{K1}")), CryptOptions::default()).await.unwrap_err();
    assert!(matches!(e, CryptError::MissingKey { ref id, .. } if id == "k2"), "{e}");
}

#[tokio::test]
async fn rotation_reseals_with_the_newest_key_and_a_rerun_resumes() {
    let inner = Arc::new(InMemoryStore::new());
    let old = wrap(inner.clone(), &format!("k1:{K1}")).await;
    for i in 0..50 {
        old.set(&format!("atrion/route/r{i}"), Bytes::from(format!("v{i}"))).await.unwrap();
    }
    traffic(&old).await;
    let both = format!("k1:{K1}\nk2:{K2}");
    let s = wrap(inner.clone(), &both).await;
    // Old values read; new writes are under k2.
    assert_eq!(s.get("atrion/route/r3").await.unwrap().unwrap().value, Bytes::from_static(b"v3"));
    s.set("atrion/route/new", Bytes::from_static(b"n")).await.unwrap();
    let stored = s.stored_key("atrion/route/new");
    assert_eq!(atrion_crypt::envelope::key_id_of(&inner.get(&stored).await.unwrap().unwrap().value), Some(&b"k2"[..]));
    let before = snapshot(&s).await;
    let mut seen = Vec::new();
    let report = reencrypt(&s, 16, |done, total| seen.push((done, total))).await.unwrap();
    assert_eq!(report.resealed + report.current, report.scanned);
    assert!(report.resealed >= 55, "{report:?}");
    assert_eq!(seen.last().map(|(d, t)| d == t), Some(true), "progress ends at the total: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "progress advances");
    // A re-run has nothing left to do (resume is the same pass).
    let again = reencrypt(&s, 16, |_, _| ()).await.unwrap();
    assert_eq!(again.resealed, 0, "{again:?}");
    // Nothing is under k1 any more: a ring with k2 alone opens everything, names included
    // (k1 stays first to name keys: here the names key comes from the first line).
    for k in inner.list_keys("").await.unwrap() {
        let v = inner.get(&k).await.unwrap().unwrap().value;
        assert_eq!(atrion_crypt::envelope::key_id_of(&v), Some(&b"k2"[..]), "{k}");
    }
    assert_eq!(snapshot(&s).await, before, "the pass changes no value");
}

#[tokio::test]
async fn the_feed_carries_real_names_and_opened_values() {
    let inner = Arc::new(InMemoryStore::new());
    let s = wrap(inner.clone(), &format!("k1:{K1}")).await;
    let mut feed = s.subscribe("atrion/route/").await.unwrap().unwrap();
    let key = format!("atrion/route/{ROUTE}");
    let v = s.set(&key, Bytes::from_static(b"scar")).await.unwrap();
    s.set("atrion/other/x", Bytes::from_static(b"no")).await.unwrap();
    s.delete(&key).await.unwrap();
    assert_eq!(
        feed.recv().await.unwrap(),
        Change::Set { key: key.clone(), version: v, value: Some(Bytes::from_static(b"scar")) }
    );
    assert_eq!(feed.recv().await.unwrap(), Change::Deleted { key: key.clone() });
    // A delete of a key this process never named cannot be named: a resync, not a guess.
    let other = wrap(inner.clone(), &format!("k1:{K1}")).await;
    let mut feed = other.subscribe("atrion/route/").await.unwrap().unwrap();
    s.set(&key, Bytes::from_static(b"again")).await.unwrap();
    s.delete(&key).await.unwrap();
    assert!(matches!(feed.recv().await.unwrap(), Change::Set { key: k, .. } if k == key));
    assert_eq!(feed.recv().await.unwrap(), Change::Deleted { key }, "the set taught it the name");
}

/// A service over `inner` wrapped with `keys` (or plain when `None`).
async fn service(inner: Arc<dyn StateStore>, keys: Option<&str>) -> atrion_state::StateService {
    let store: Arc<dyn StateStore> = match keys {
        Some(k) => Arc::new(wrap(inner, k).await),
        None => inner,
    };
    atrion_state::StateService::builder().backend_arc("main", store).build().unwrap()
}

/// Backups of an encrypted store are sealed with its keys: the file names no route and no
/// operator; a fresh store with the key gets the state back; a wrong key, a missing key id
/// and a store without keys are refused naming the key id; a plain backup still restores
/// into an encrypted store; a backup cut off, or with a chunk dropped, is refused.
#[tokio::test]
async fn backups_are_sealed_and_restore_only_with_their_key() {
    use atrion_state::{BackupError, SealError, ServiceError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.jsonl");
    let keys = format!("k1:{K1}");
    let source = service(Arc::new(InMemoryStore::new()), Some(&keys)).await;
    traffic(&source).await;
    let before = snapshot(&source).await;
    check_snapshot(&before);
    let n = source.backup(&path).await.unwrap();
    assert!(n >= 6, "{n} entries");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 200, "the backup holds something");
    assert_clean("the sealed backup", &bytes);
    // The values of a plain backup are base64: look for the names in base64 too, at each
    // of the three alignments (the middle groups depend on the name's bytes only).
    use base64::Engine as _;
    for needle in [ROUTE, "patients"] {
        for pad in 0..3 {
            let mut raw = vec![0u8; pad];
            raw.extend_from_slice(needle.as_bytes());
            let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
            let middle = &b64.as_bytes()[4..b64.len() - 4];
            assert!(!bytes.windows(middle.len()).any(|w| w == middle), "base64 of {needle}");
        }
    }
    assert!(String::from_utf8_lossy(&bytes).contains("\"key_id\":\"k1\""), "the key id is recorded");

    // Into a fresh encrypted store with the key (and with a newer key beside it: older keys
    // read): the state is back.
    for ring in [keys.clone(), format!("k1:{K1}\nk2:{K2}")] {
        let fresh = service(Arc::new(InMemoryStore::new()), Some(&ring)).await;
        assert_eq!(fresh.restore(&path).await.unwrap(), n);
        assert_eq!(snapshot(&fresh).await, before, "restored with {ring:?}");
    }
    // A wrong key under the same id, a ring without the id, a store without keys: refused,
    // naming `k1`, and nothing written.
    for (ring, wanted) in [(Some(format!("k1:{K2}")), "wrong"), (Some(format!("k2:{K2}")), "missing"), (None, "none")] {
        let inner = Arc::new(InMemoryStore::new());
        let fresh = service(inner.clone(), ring.as_deref()).await;
        let keys_before = inner.list_keys("").await.unwrap();
        let e = fresh.restore(&path).await.unwrap_err();
        let ServiceError::Backup { source, .. } = &e else { panic!("{e}") };
        assert_eq!(source.key_id(), Some("k1"), "{e}");
        match (wanted, source) {
            ("wrong", BackupError::Key { source: SealError::WrongKey { .. }, .. })
            | ("missing", BackupError::Key { source: SealError::MissingKey { .. }, .. })
            | ("none", BackupError::NoKeys { .. }) => {}
            _ => panic!("{wanted}: {e}"),
        }
        assert!(e.to_string().contains("`k1`"), "{e}");
        assert_eq!(inner.list_keys("").await.unwrap(), keys_before, "nothing written");
    }
    // Cut off (the end line gone), or a chunk dropped: refused.
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2);
    let cut = lines[..lines.len() - 1].join("\n");
    let e = atrion_state::BackupLine::decode_backup(&cut, source.backup_seal().as_deref()).unwrap_err();
    assert!(matches!(e, BackupError::Incomplete(_)), "{e}");
    // A plain backup (as taken before encryption) restores into an encrypted store.
    let plain = service(Arc::new(InMemoryStore::new()), None).await;
    traffic(&plain).await;
    let plain_path = dir.path().join("plain.jsonl");
    plain.backup(&plain_path).await.unwrap();
    assert!(std::fs::read_to_string(&plain_path).unwrap().contains("\"key\":\"atrion/route/GET /patients/12345\""));
    let sealed_store = service(Arc::new(InMemoryStore::new()), Some(&keys)).await;
    sealed_store.restore(&plain_path).await.unwrap();
    assert_eq!(snapshot(&sealed_store).await, snapshot(&plain).await);
}

/// A backup of many chunks: each chunk is bound to its place, so that dropping or swapping
/// one is refused; the whole restores.
#[tokio::test]
async fn a_sealed_backup_of_many_chunks_refuses_a_chunk_dropped_or_moved() {
    use atrion_state::{BackupError, BackupLine};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.jsonl");
    let keys = format!("k1:{K1}");
    let source = service(Arc::new(InMemoryStore::new()), Some(&keys)).await;
    for i in 0..(atrion_state::BACKUP_CHUNK * 2 + 5) {
        source.set(&format!("atrion/route/GET /patients/{i}"), Bytes::from(format!("scar {i}"))).await.unwrap();
    }
    source.backup(&path).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "three chunks and the end");
    let seal = source.backup_seal();
    assert_eq!(BackupLine::decode_backup(&text, seal.as_deref()).unwrap().len(), atrion_state::BACKUP_CHUNK * 2 + 5);
    let dropped = [lines[0], lines[2], lines[3]].join("\n");
    let e = BackupLine::decode_backup(&dropped, seal.as_deref()).unwrap_err();
    assert!(matches!(e, BackupError::Key { line: 2, .. }), "{e}");
    let swapped = [lines[1], lines[0], lines[2], lines[3]].join("\n");
    assert!(BackupLine::decode_backup(&swapped, seal.as_deref()).is_err());
    let mixed =
        format!("{}\n{}", lines[0], BackupLine { key: "atrion/x".into(), value: Bytes::new(), ttl: None }.encode());
    let e = BackupLine::decode_backup(&mixed, seal.as_deref()).unwrap_err();
    assert!(matches!(e, BackupError::Malformed { line: 2, .. }), "{e}");
}

/// Retiring the first key (the one that names keys): add the new key last, back up (sealed
/// with the newest, the new key), restore into a new store whose key file holds the new key
/// only. The new store names and seals with it, and a file of the old key opens nothing there.
#[tokio::test]
async fn the_first_key_retires_by_a_sealed_backup_and_a_restore() {
    use atrion_state::ServiceError;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.jsonl");
    let inner: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    traffic(&wrap(inner.clone(), &format!("k1:{K1}")).await).await;
    let rotating = service(inner.clone(), Some(&format!("k1:{K1}\nk2:{K2}"))).await;
    let before = snapshot(&rotating).await;
    rotating.backup(&path).await.unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"key_id\":\"k2\""), "sealed with the newest");
    let fresh_inner: Arc<dyn StateStore> = Arc::new(InMemoryStore::new());
    let fresh = service(fresh_inner.clone(), Some(&format!("k2:{K2}"))).await;
    fresh.restore(&path).await.unwrap();
    assert_eq!(snapshot(&fresh).await, before, "the state, under names made by k2");
    // The stored names are made by k2 now: none is the old store's.
    let old_names = inner.list_keys("atrion/route/").await.unwrap();
    let new_names = fresh_inner.list_keys("atrion/route/").await.unwrap();
    assert!(!new_names.is_empty() && new_names.iter().all(|n| !old_names.contains(n)), "{new_names:?}");
    let e = EncryptedStore::open(fresh_inner, ring(&format!("k1:{K1}")), CryptOptions::default()).await.unwrap_err();
    assert!(matches!(e, CryptError::MissingKey { ref id, .. } if id == "k2"), "{e}");
    let e = service(Arc::new(InMemoryStore::new()), Some(&format!("k1:{K1}"))).await.restore(&path).await.unwrap_err();
    assert!(matches!(e, ServiceError::Backup { .. }) && e.to_string().contains("`k2`"), "{e}");
}
