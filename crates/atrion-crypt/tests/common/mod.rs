//! Traffic and checks shared by the backends' tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atrion_crypt::{CryptOptions, EncryptedStore, Keyring};
use atrion_state::shares::{Share, ShareWrite};
use atrion_state::{Group, StateStore};
use bytes::Bytes;

pub const ROUTE: &str = "GET /patients/12345";
pub const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

pub fn ring(text: &str) -> Arc<Keyring> {
    Arc::new(Keyring::parse(text, "test").unwrap())
}

pub async fn wrap(inner: Arc<dyn StateStore>, keys: &str) -> EncryptedStore {
    EncryptedStore::open(inner, ring(keys), CryptOptions::default()).await.unwrap()
}

/// What the cluster sync and the policy layer write about a route: its record, each node's
/// share, a node's local copy, desired state with its audit entry (one group), a heartbeat,
/// and a large value that gets compressed; names and values carry the route's name.
pub async fn traffic(s: &dyn StateStore) {
    let key = format!("atrion/route/{ROUTE}");
    let scar = Bytes::from(format!("{{\"route\":\"{ROUTE}\",\"scar\":3.5}}"));
    s.set(&key, scar.clone()).await.unwrap();
    s.put_shares(vec![ShareWrite {
        key: format!("atrion/route-shares/{ROUTE}"),
        share: Share { member: "node-1".into(), rank: 2.5, value: scar.clone() },
    }])
    .await
    .unwrap();
    s.batch_set(vec![(format!("atrion/local/node-1/{ROUTE}"), scar.clone(), None)]).await.unwrap();
    s.transact(
        Group::new()
            .check("atrion/policy/desired", None)
            .put("atrion/policy/desired", Bytes::from(format!("{{\"ban\":[\"{ROUTE}\"]}}")), None)
            .put("atrion/audit/0001", Bytes::from(format!("operator alice banned {ROUTE}")), None),
    )
    .await
    .unwrap();
    s.put_quiet("atrion/node/node-1", Bytes::from_static(b"alive"), Some(Duration::from_secs(3600))).await.unwrap();
    s.set(&format!("atrion/history/{ROUTE}"), Bytes::from(format!("{ROUTE} applied v1; ").repeat(200))).await.unwrap();
}

/// Every key and share the store holds, read through it.
pub async fn snapshot(s: &dyn StateStore) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let keys = s.list_keys("").await.unwrap();
    for (k, e) in keys.iter().zip(s.batch_get(&keys).await.unwrap()) {
        out.insert(k.clone(), e.unwrap().value.to_vec());
    }
    // Without native shares, every key lists as shares: read the shares' family only.
    let shares = if s.capabilities().native_shares { "" } else { "atrion/route-shares/" };
    for k in s.list_shares(shares).await.unwrap() {
        let shares = s.all_shares(&k).await.unwrap().unwrap();
        for sh in shares.top {
            out.insert(format!("share {k} {}", sh.member), sh.value.to_vec());
        }
    }
    out
}

/// Asserts that the traffic is all there.
pub fn check_snapshot(snap: &BTreeMap<String, Vec<u8>>) {
    for k in [
        format!("atrion/route/{ROUTE}"),
        format!("share atrion/route-shares/{ROUTE} node-1"),
        format!("atrion/local/node-1/{ROUTE}"),
        "atrion/policy/desired".to_owned(),
        "atrion/audit/0001".to_owned(),
        "atrion/node/node-1".to_owned(),
        format!("atrion/history/{ROUTE}"),
    ] {
        assert!(snap.contains_key(&k), "{k} missing from {:?}", snap.keys().collect::<Vec<_>>());
    }
}

/// Panics when `bytes` hold the route's name or the word `patients`, plain or in hex.
pub fn assert_clean(what: &str, bytes: &[u8]) {
    for needle in [ROUTE.as_bytes(), b"patients", b"12345", b"alice"] {
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{what} holds {:?}",
            String::from_utf8_lossy(needle)
        );
        assert!(
            !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
            "{what} holds the hex of {:?}",
            String::from_utf8_lossy(needle)
        );
    }
}

/// Checks that a store written through the wrapper holds something at all (the check is
/// not vacuous), then that a wrong key and a missing key are refused, naming the key id.
pub async fn refuses_wrong_and_missing_keys(inner: Arc<dyn StateStore>) {
    let wrong = format!("k1:{K2}");
    let e = EncryptedStore::open(inner.clone(), ring(&wrong), CryptOptions::default()).await.unwrap_err();
    assert!(matches!(e, atrion_crypt::CryptError::WrongKey { ref id } if id == "k1"), "{e}");
    assert!(e.to_string().contains("`k1`"), "{e}");
    let missing = format!("k9:{K1}");
    let e = EncryptedStore::open(inner.clone(), ring(&missing), CryptOptions::default()).await.unwrap_err();
    assert!(matches!(e, atrion_crypt::CryptError::MissingKey { ref id, .. } if id == "k1"), "{e}");
    assert!(e.to_string().contains("`k1`"), "{e}");
}
