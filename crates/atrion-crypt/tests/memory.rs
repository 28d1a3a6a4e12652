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
