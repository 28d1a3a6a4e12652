//! The conformance suite: every adapter runs it against a real backend, with
//! [`crate::InMemoryStore`] as the reference. Each check panics with a message on failure.
//!
//! ```text
//! atrion_state::conformance_tests!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = FileStore::open(FileConfig::new(dir.path().join("state.redb"))).await.unwrap();
//!     (std::sync::Arc::new(store) as std::sync::Arc<dyn atrion_state::StateStore>, dir)
//! });
//! ```
//!
//! The macro takes a future that yields `(store, guard)`; the guard (a temporary folder, a
//! server process) lives as long as the test. Each check writes under its own prefix, so a
//! shared backend can run them side by side.
#![allow(clippy::unwrap_used, missing_docs)] // a test suite: a failure must stop loudly

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::shares::{Best, Share, ShareWrite, Shares};
use crate::{CasOutcome, Change, ChangeFeed, ErrorKind, Group, MAX_KEY_LEN, StateStore, update};

/// The store a check runs against.
pub type Store = Arc<dyn StateStore>;

/// Generates one `#[tokio::test]` per conformance check. The list of checks is written
/// here once; [`all`] runs the same list on one store.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@with each $make);
    };
    (@with $how:ident $arg:expr) => {
        $crate::conformance_tests!(@ $how $arg;
            get_set_delete, versions_are_unique_and_increase, ttl_expires, prefix_listing, batches,
            binary_and_large_values, invalid_keys_are_rejected, compare_and_swap,
            cas_under_contention, change_feed, stats_and_cleanup, shares_rank_and_replace,
            shares_are_validated, shares_under_contention, share_changes_carry_the_leaders,
            share_notices_follow_the_leaders, group_applies_every_write, group_with_a_failed_precondition_changes_nothing,
            groups_on_overlapping_keys_serialize);
    };
    (@each $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let (store, _guard) = $make.await;
                $crate::conformance::$check(store).await;
            }
        )*
    };
    (@all $store:expr; $($check:ident),*) => {
        $( $crate::conformance::$check($store.clone()).await; )*
    };
}

/// Every check of [`conformance_tests!`], one after the other, on one store: for a backend
/// whose server is too costly to start once per check (a Redis Cluster of six servers).
pub async fn all(s: Store) {
    crate::conformance_tests!(@with all s);
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub async fn get_set_delete(s: Store) {
    let k = "conf/basic/a";
    assert!(s.get(k).await.unwrap().is_none());
    assert!(!s.exists(k).await.unwrap());
    let v = s.set(k, b("one")).await.unwrap();
    let e = s.get(k).await.unwrap().expect("written");
    assert_eq!((e.value, e.version, e.ttl), (b("one"), v, None));
    assert!(s.exists(k).await.unwrap());
    s.set(k, b("two")).await.unwrap();
    assert_eq!(s.get(k).await.unwrap().unwrap().value, b("two"));
    assert!(s.delete(k).await.unwrap(), "delete reports the key existed");
    assert!(!s.delete(k).await.unwrap(), "a second delete finds nothing");
    assert!(s.get(k).await.unwrap().is_none());
    assert!(!s.exists(k).await.unwrap());
    // A quiet write is a write: read back, with a newer version.
    let loud = s.put(k, b("three"), None).await.unwrap();
    let quiet = s.put_quiet(k, b("four"), Some(Duration::from_secs(60))).await.unwrap();
    let e = s.get(k).await.unwrap().expect("written quietly");
    assert_eq!((&e.value, e.version), (&b("four"), quiet));
    assert!(quiet > loud && e.ttl.is_some_and(|t| t <= Duration::from_secs(60)), "{e:?}");
    s.delete(k).await.unwrap();
}

/// Versions are per key: each write of a key gets a version above all of that key's
/// earlier ones (what compare-and-swap needs; a backend may also order them across keys).
pub async fn versions_are_unique_and_increase(s: Store) {
    let mut last = [0; 3];
    for i in 0..20 {
        let key = format!("conf/versions/{}", i % 3);
        let v = s.set(&key, b("x")).await.unwrap();
        assert!(v > last[i % 3], "{key}: version {v} after {}", last[i % 3]);
        last[i % 3] = v;
    }
    // A deleted and recreated key gets a fresh version, never an old one.
    let k = "conf/versions/recreated";
    let first = s.set(k, b("a")).await.unwrap();
    s.delete(k).await.unwrap();
    let second = s.set(k, b("a")).await.unwrap();
    assert!(second > first);
}

pub async fn ttl_expires(s: Store) {
    if !s.capabilities().ttl {
        return;
    }
    let k = "conf/ttl/short";
    // Long enough to be read back live on a loaded machine; expiry is then awaited, not
    // assumed after a fixed sleep.
    let short = Duration::from_secs(3);
    s.set_with_ttl(k, b("soon gone"), short).await.unwrap();
    s.set("conf/ttl/forever", b("stays")).await.unwrap();
    let e = s.get(k).await.unwrap().expect("live before expiry");
    let ttl = e.ttl.expect("an entry with a TTL reports it");
    assert!(ttl <= short && ttl > Duration::ZERO, "{ttl:?}");
    tokio::time::sleep(short).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while s.get(k).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "an entry never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!s.exists(k).await.unwrap());
    assert_eq!(s.list_keys("conf/ttl/").await.unwrap(), vec!["conf/ttl/forever".to_owned()]);
    let cleaned = s.cleanup().await.unwrap();
    assert!(cleaned.expired <= 1);
    assert!(s.get("conf/ttl/forever").await.unwrap().is_some());
    // Re-setting without a TTL clears it.
    s.set_with_ttl(k, b("again"), Duration::from_secs(60)).await.unwrap();
    s.set(k, b("again")).await.unwrap();
    assert_eq!(s.get(k).await.unwrap().unwrap().ttl, None);
}

pub async fn prefix_listing(s: Store) {
    for k in ["conf/list/a/1", "conf/list/a/2", "conf/list/a/10", "conf/list/ab", "conf/list/b/1", "conf/lisu"] {
        s.set(k, b("v")).await.unwrap();
    }
    assert_eq!(
        s.list_keys("conf/list/a/").await.unwrap(),
        vec!["conf/list/a/1", "conf/list/a/10", "conf/list/a/2"],
        "sorted, and only under the prefix"
    );
    assert_eq!(s.list_keys("conf/list/a").await.unwrap().len(), 4);
    assert!(s.list_keys("conf/list/zzz").await.unwrap().is_empty());
    assert!(s.list_keys("").await.unwrap().len() >= 6);
    // Characters that are special to some backends' pattern languages are plain here.
    s.set("conf/list/*[?]%_", b("v")).await.unwrap();
    assert_eq!(s.list_keys("conf/list/*").await.unwrap(), vec!["conf/list/*[?]%_"]);
    assert_eq!(s.list_keys("conf/list/%").await.unwrap(), Vec::<String>::new());
}

pub async fn batches(s: Store) {
    let items: Vec<_> = (0..100).map(|i| (format!("conf/batch/{i:03}"), b(&i.to_string()), None)).collect();
    let versions = s.batch_set(items).await.unwrap();
    assert_eq!(versions.len(), 100);
    let mut keys: Vec<String> = (0..100).map(|i| format!("conf/batch/{i:03}")).collect();
    keys.insert(50, "conf/batch/missing".into());
    let got = s.batch_get(&keys).await.unwrap();
    assert_eq!(got.len(), 101);
    assert!(got[50].is_none());
    assert_eq!(got[0].as_ref().unwrap().value, b("0"));
    assert_eq!(got[100].as_ref().unwrap().value, b("99"));
    assert_eq!(got[0].as_ref().unwrap().version, versions[0]);
    assert_eq!(s.batch_delete(&keys).await.unwrap(), 100);
    assert!(s.list_keys("conf/batch/").await.unwrap().is_empty());
    assert!(s.batch_get(&[]).await.unwrap().is_empty());
}

pub async fn binary_and_large_values(s: Store) {
    let all: Vec<u8> = (0..=255u8).cycle().take(4_096).collect();
    s.set("conf/bin/all", Bytes::from(all.clone())).await.unwrap();
    assert_eq!(s.get("conf/bin/all").await.unwrap().unwrap().value.as_ref(), &all[..]);
    let mut x: u32 = 1;
    let large: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    s.set("conf/bin/large", Bytes::from(large.clone())).await.unwrap();
    assert_eq!(s.get("conf/bin/large").await.unwrap().unwrap().value.as_ref(), &large[..]);
    s.set("conf/bin/empty", Bytes::new()).await.unwrap();
    assert_eq!(s.get("conf/bin/empty").await.unwrap().unwrap().value.len(), 0);
    let unicode = "conf/bin/ключ/鍵/🔑";
    s.set(unicode, b("v")).await.unwrap();
    assert!(s.exists(unicode).await.unwrap());
    let too_big = Bytes::from(vec![0u8; crate::MAX_VALUE_LEN + 1]);
    let e = s.set("conf/bin/too-big", too_big).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::ValueTooLarge { .. }), "{e}");
    assert!(!s.exists("conf/bin/too-big").await.unwrap());
}

pub async fn invalid_keys_are_rejected(s: Store) {
    let long = "k".repeat(MAX_KEY_LEN + 1);
    // Multi-byte characters across every cut an error message might make.
    let wide = "é".repeat(MAX_KEY_LEN / 2 + 1);
    let wider = format!("k{}", "🔑".repeat(MAX_KEY_LEN / 4 + 1));
    for key in ["", long.as_str(), wide.as_str(), wider.as_str()] {
        for e in [
            s.get(key).await.err(),
            s.set(key, b("v")).await.err(),
            s.delete(key).await.err(),
            s.compare_and_swap(key, None, b("v"), None).await.err(),
            s.batch_set(vec![(key.to_owned(), b("v"), None)]).await.err(),
        ] {
            let e = e.expect("refused");
            assert!(matches!(e.kind, ErrorKind::InvalidKey(_)), "{e}");
            assert_eq!(e.backend, s.backend());
        }
    }
    let longest = "k".repeat(MAX_KEY_LEN);
    s.set(&longest, b("v")).await.unwrap();
    assert!(s.exists(&longest).await.unwrap());
    // The longest key in multi-byte characters: 1,024 bytes exactly.
    let longest_wide = format!("{}{}", "k".repeat(MAX_KEY_LEN % 3), "鍵".repeat(MAX_KEY_LEN / 3));
    assert_eq!(longest_wide.len(), MAX_KEY_LEN);
    s.set(&longest_wide, b("wide")).await.unwrap();
    assert_eq!(s.get(&longest_wide).await.unwrap().unwrap().value, b("wide"));
    assert!(s.list_keys("").await.unwrap().contains(&longest_wide));
}

pub async fn compare_and_swap(s: Store) {
    if !s.capabilities().atomic {
        return;
    }
    let k = "conf/cas/k";
    let v1 = match s.compare_and_swap(k, None, b("1"), None).await.unwrap() {
        CasOutcome::Swapped { version } => version,
        other => panic!("create if absent: {other:?}"),
    };
    assert_eq!(s.compare_and_swap(k, None, b("x"), None).await.unwrap(), CasOutcome::Conflict { current: Some(v1) });
    let v2 = match s.compare_and_swap(k, Some(v1), b("2"), None).await.unwrap() {
        CasOutcome::Swapped { version } => version,
        other => panic!("swap on the right version: {other:?}"),
    };
    assert!(v2 > v1);
    assert_eq!(
        s.compare_and_swap(k, Some(v1), b("stale"), None).await.unwrap(),
        CasOutcome::Conflict { current: Some(v2) }
    );
    assert_eq!(s.get(k).await.unwrap().unwrap().value, b("2"));
    s.delete(k).await.unwrap();
    assert_eq!(s.compare_and_swap(k, Some(v2), b("gone"), None).await.unwrap(), CasOutcome::Conflict { current: None });
    assert!(s.get(k).await.unwrap().is_none());
}

pub async fn cas_under_contention(s: Store) {
    if !s.capabilities().atomic {
        return;
    }
    let k = "conf/cas/counter";
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..1_000 {
                    update(s.as_ref(), k, 100_000, |cur| {
                        let n = cur.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap()));
                        Bytes::copy_from_slice(&(n + 1).to_be_bytes())
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let v = s.get(k).await.unwrap().unwrap().value;
    assert_eq!(u64::from_be_bytes(v.as_ref().try_into().unwrap()), 8_000, "no increment lost");
}

pub async fn change_feed(s: Store) {
    let feed = s.subscribe("conf/feed/").await.unwrap();
    let Some(mut feed) = feed else {
        assert!(!s.capabilities().change_feed, "a backend that advertises a feed must return one");
        return;
    };
    assert!(s.capabilities().change_feed);
    let v = s.set("conf/feed/a", b("1")).await.unwrap();
    s.set("conf/other/x", b("1")).await.unwrap();
    s.delete("conf/feed/a").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.expect("an event").unwrap();
    match first {
        Change::Set { key, version, value } => {
            assert_eq!((key.as_str(), version), ("conf/feed/a", v));
            assert!(value.as_ref().is_none_or(|x| *x == b("1")), "a carried value is the written one: {value:?}");
        }
        other => panic!("expected a set, got {other:?}"),
    }
    let second = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.expect("an event").unwrap();
    assert_eq!(second, Change::Deleted { key: "conf/feed/a".into() }, "nothing from outside the prefix");
}

pub async fn stats_and_cleanup(s: Store) {
    let before = s.stats().await.unwrap();
    for i in 0..10 {
        s.set(&format!("conf/stats/{i}"), Bytes::from(vec![7u8; 100])).await.unwrap();
    }
    let after = s.stats().await.unwrap();
    assert_eq!(after.keys, before.keys + 10);
    assert_eq!(after.value_bytes, before.value_bytes + 1_000);
    if s.capabilities().ttl {
        s.set_with_ttl("conf/stats/ttl", b("v"), Duration::from_millis(50)).await.unwrap();
        // Expired entries are not counted (once expired: awaited, not assumed).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while s.stats().await.unwrap().keys != after.keys {
            assert!(tokio::time::Instant::now() < deadline, "an expired entry is still counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Backends that expire entries themselves (Redis) have nothing left to clean.
        let cleaned = s.cleanup().await.unwrap();
        assert!(cleaned.expired <= 1, "{cleaned:?}");
        assert_eq!(s.cleanup().await.unwrap().expired, 0);
        assert!(!s.exists("conf/stats/ttl").await.unwrap());
    }
}

fn share(key: &str, member: &str, rank: f64, value: &str) -> ShareWrite {
    ShareWrite { key: key.into(), share: Share { member: member.into(), rank, value: b(value) } }
}

fn members(s: &Shares) -> Vec<&str> {
    s.top.iter().map(|x| x.member.as_str()).collect()
}

/// Shares are ranked, a member's write replaces only its own share, and a reader gets at
/// least the two leaders and its own share, wherever it ranks.
pub async fn shares_rank_and_replace(s: Store) {
    let k = "conf/shares/a".to_owned();
    assert_eq!(s.shares(std::slice::from_ref(&k), "n1").await.unwrap(), vec![None]);
    assert_eq!(s.all_shares(&k).await.unwrap(), None);
    s.put_shares(vec![share(&k, "n1", 1.0, "one"), share(&k, "n2", 5.5, "two")]).await.unwrap();
    s.put_shares(vec![share(&k, "n3", 3.25, "three"), share(&k, "n4", f64::NEG_INFINITY, "four")]).await.unwrap();
    let got = s.shares(std::slice::from_ref(&k), "n1").await.unwrap().pop().unwrap().unwrap();
    assert_eq!(got.members, 4);
    assert_eq!(&members(&got)[..2], ["n2", "n3"], "the two leaders first, by rank");
    let own = got.get("n1").expect("the reader's own share is listed");
    assert_eq!((own.rank, own.value.as_ref()), (1.0, &b"one"[..]));
    assert!(matches!(got.best(|m| m != "n2"), Best::Found(x) if x.member == "n3"));
    let all = s.all_shares(&k).await.unwrap().unwrap();
    assert!(all.complete());
    assert_eq!(members(&all), ["n2", "n3", "n1", "n4"]);
    assert_eq!(all.get("n4").unwrap().rank, f64::NEG_INFINITY);
    // n2 falls behind: its share is replaced, the others are untouched.
    s.put_shares(vec![share(&k, "n2", 0.5, "two again")]).await.unwrap();
    let all = s.all_shares(&k).await.unwrap().unwrap();
    assert_eq!((all.members, members(&all)), (4, vec!["n3", "n1", "n2", "n4"]));
    assert_eq!(all.get("n2").unwrap().value.as_ref(), b"two again");
    assert_eq!(all.get("n3").unwrap().value.as_ref(), b"three");
    s.put_shares(vec![share("conf/shares/b", "n1", 0.0, "")]).await.unwrap();
    let listed = s.list_shares("conf/shares/").await.unwrap();
    assert_eq!(listed, ["conf/shares/a", "conf/shares/b"]);
    let as_keys = s.list_keys("conf/shares/").await.unwrap();
    assert_eq!(
        as_keys.is_empty(),
        s.capabilities().native_shares,
        "native shares are apart from the keys: {as_keys:?}"
    );
    assert!(s.list_shares("conf/nothing/").await.unwrap().is_empty());
}

/// Bad shares are refused with a typed error, and refused batches write nothing.
pub async fn shares_are_validated(s: Store) {
    let k = "conf/shares-bad/a";
    for (bad, what) in [
        (share(k, "n1", f64::NAN, "v"), "NaN rank"),
        (share(k, "", 1.0, "v"), "empty member"),
        (share(k, &"m".repeat(256), 1.0, "v"), "long member"),
    ] {
        let e = s.put_shares(vec![share(k, "ok", 1.0, "v"), bad]).await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::InvalidShare(_)), "{what}: {e}");
    }
    let e = s.put_shares(vec![share("", "n1", 1.0, "v")]).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::InvalidKey(_)), "{e}");
    assert_eq!(s.all_shares(k).await.unwrap(), None, "a refused batch writes nothing");
    // Something that is not shares under a key reads as corrupt, and a write repairs it.
    s.set(k, b("not shares")).await.unwrap();
    if let Ok(got) = s.shares(&[k.to_owned()], "n1").await {
        // A backend that keeps shares apart from its keys does not see the value at all.
        assert_eq!(got, vec![None]);
    } else {
        let e = s.shares(&[k.to_owned()], "n1").await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Corrupt), "{e}");
    }
    s.put_shares(vec![share(k, "n1", 2.0, "v")]).await.unwrap();
    assert_eq!(members(&s.all_shares(k).await.unwrap().unwrap()), ["n1"]);
}

/// Many members writing one key at once: no member's share is lost.
pub async fn shares_under_contention(s: Store) {
    let k = "conf/shares-race/a";
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                for round in 0..5 {
                    let rank = f64::from(i * 10 + round);
                    s.put_shares(vec![share(k, &format!("m{i:02}"), rank, &round.to_string())]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let all = s.all_shares(k).await.unwrap().unwrap();
    assert_eq!(all.members, 16);
    assert_eq!(all.top.len(), 16);
    for x in &all.top {
        assert_eq!(x.value.as_ref(), b"4", "{}: its last write", x.member);
    }
    assert_eq!(all.top[0].member, "m15");
}

/// A change of a key's leaders reaches the feed with the new leaders as its value.
pub async fn share_changes_carry_the_leaders(s: Store) {
    let Some(mut feed) = s.subscribe("conf/shares-feed/").await.unwrap() else { return };
    let k = "conf/shares-feed/a";
    s.put_shares(vec![share(k, "n1", 1.0, "low")]).await.unwrap();
    s.put_shares(vec![share(k, "n2", 2.0, "high")]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let change = tokio::time::timeout(left, feed.recv()).await.expect("the new leader is notified").unwrap();
        let Change::Set { key, value, .. } = change else { continue };
        assert_eq!(key, k);
        let shares = Shares::decode(&value.expect("a share change carries its value")).expect("it decodes");
        if shares.members == 2 {
            assert!(matches!(shares.best(|_| true), Best::Found(x) if x.member == "n2" && x.value == b("high")));
            assert!(matches!(shares.best(|m| m != "n2"), Best::Found(x) if x.member == "n1"));
            break;
        }
    }
}

/// Whatever a store leaves unnotified, the notices end on the key's true leaders: a leader
/// that falls to last place gives way to the next two (which the store must find beyond
/// the old top two), a newcomer that leads is announced, a share written with no change is
/// no news that contradicts them, and ranks may be infinite.
pub async fn share_notices_follow_the_leaders(s: Store) {
    let Some(mut feed) = s.subscribe("conf/shares-follow/").await.unwrap() else { return };
    let k = "conf/shares-follow/a";
    for (m, r) in [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)] {
        s.put_shares(vec![share(k, m, r, m)]).await.unwrap();
    }
    // The leader drops below everyone, in a batch with an unchanged share.
    s.put_shares(vec![share(k, "a", 0.5, "a"), share(k, "d", 1.0, "d")]).await.unwrap();
    expect_leaders(&mut feed, k, 4, "b", 2.0).await;
    // A newcomer at +inf leads; back at -inf, it leaves the lead to b and c again.
    s.put_shares(vec![share(k, "e", f64::INFINITY, "e")]).await.unwrap();
    expect_leaders(&mut feed, k, 5, "e", 3.0).await;
    s.put_shares(vec![share(k, "e", f64::NEG_INFINITY, "e")]).await.unwrap();
    expect_leaders(&mut feed, k, 5, "b", 2.0).await;
}

/// Waits (a minute at most) for a notice of `key` with `members` members, led by `leader`
/// (carrying its value) and a second leader at `second_rank`.
async fn expect_leaders(feed: &mut ChangeFeed, key: &str, members: u32, leader: &str, second_rank: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let change = tokio::time::timeout(left, feed.recv())
            .await
            .unwrap_or_else(|_| panic!("no notice shows {leader} leading {members} members"))
            .unwrap();
        let Change::Set { key: k, value: Some(value), .. } = change else { continue };
        assert_eq!(k, key);
        let shares = Shares::decode(&value).expect("a notice decodes");
        let ranked = shares.ranked();
        if shares.members == members && ranked.first().is_some_and(|x| x.member == leader) {
            assert_eq!(ranked[0].value, b(leader), "a leader's value travels with it");
            assert_eq!(ranked.get(1).map(|x| x.rank), Some(second_rank), "the second leader: {ranked:?}");
            return;
        }
    }
}

// ---- groups (`StateStore::transact`) ----
//
// The keys of each check name one slot group (`{…}rest`), so that they also run on a Redis
// Cluster.

fn u(v: &Bytes) -> u64 {
    u64::from_be_bytes(v.as_ref().try_into().expect("a counter"))
}

fn n(x: u64) -> Bytes {
    Bytes::copy_from_slice(&x.to_be_bytes())
}

/// A group's puts and deletes land together, with new versions, on the change feed; an empty
/// group is fine; a bad key or value refuses the whole group.
pub async fn group_applies_every_write(s: Store) {
    if !s.capabilities().transactions {
        let e = s.transact(Group::new().put("{conf/grp}/a", b("1"), None)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
        return;
    }
    let (a, b_, c) = ("{conf/grp}/a", "{conf/grp}/b", "{conf/grp}/c");
    let va = s.set(a, b("a0")).await.unwrap();
    let vc = s.set(c, b("c0")).await.unwrap();
    let feed = s.subscribe("{conf/grp}/").await.unwrap();
    let group = Group::new()
        .check(a, Some(va))
        .check(b_, None)
        .put(a, b("a1"), None)
        .put(b_, b("b1"), Some(Duration::from_secs(600)))
        .delete(c);
    let versions = s.transact(group).await.unwrap();
    assert_eq!(versions.len(), 3);
    assert!(versions[0].is_some_and(|v| v > va), "{versions:?}");
    assert!(versions[1].is_some() && versions[2].is_none(), "{versions:?}");
    let ea = s.get(a).await.unwrap().unwrap();
    let eb = s.get(b_).await.unwrap().unwrap();
    assert_eq!((ea.value, Some(ea.version)), (b("a1"), versions[0]));
    assert_eq!((eb.value, Some(eb.version)), (b("b1"), versions[1]));
    assert!(eb.ttl.is_some_and(|t| t <= Duration::from_secs(600)), "{:?}", eb.ttl);
    assert!(s.get(c).await.unwrap().is_none());
    assert_eq!(s.list_keys("{conf/grp}/").await.unwrap(), [a, b_], "keys of a slot group list as written");
    // A recreated key gets a fresh version.
    let again = s.transact(Group::new().check(c, None).put(c, b("c1"), None)).await.unwrap();
    assert!(again[0].is_some_and(|v| v > vc), "{again:?}");
    if let Some(mut feed) = feed {
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let change = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.expect("a change").unwrap();
            // The writes made before the subscription may still arrive (a Redis Cluster
            // forwards a notice to the other nodes over its bus, after the write returned).
            let before = matches!(&change, Change::Set { key, version, .. }
                if (key == a && *version == va) || (key == c && *version == vc));
            if change != Change::Resync && !before {
                seen.push(change);
            }
        }
        assert!(matches!(&seen[0], Change::Set { key, .. } if key == a), "{seen:?}");
        assert!(matches!(&seen[1], Change::Set { key, .. } if key == b_), "{seen:?}");
        assert_eq!(seen[2], Change::Deleted { key: c.into() });
        assert!(matches!(&seen[3], Change::Set { key, .. } if key == c), "{seen:?}");
    }
    assert!(s.transact(Group::new()).await.unwrap().is_empty(), "an empty group");
    // Refused as a whole: nothing written before the bad write.
    let d = "{conf/grp}/d";
    let bad_key = s.transact(Group::new().put(d, b("x"), None).put("", b("x"), None)).await.unwrap_err();
    assert!(matches!(bad_key.kind, ErrorKind::InvalidKey(_)), "{bad_key}");
    let too_big = Bytes::from(vec![0u8; crate::MAX_VALUE_LEN + 1]);
    let bad_value = s.transact(Group::new().put(d, b("x"), None).put(d, too_big, None)).await.unwrap_err();
    assert!(matches!(bad_value.kind, ErrorKind::ValueTooLarge { .. }), "{bad_value}");
    assert!(s.get(d).await.unwrap().is_none());
    assert_eq!(bad_key.backend, s.backend());
}

/// A group whose precondition fails writes nothing, and its error names the failed key with
/// the version expected and the one found.
pub async fn group_with_a_failed_precondition_changes_nothing(s: Store) {
    if !s.capabilities().transactions {
        return;
    }
    let (a, b_, c, d) = ("{conf/grp-fail}/a", "{conf/grp-fail}/b", "{conf/grp-fail}/c", "{conf/grp-fail}/d");
    let va = s.set(a, b("a0")).await.unwrap();
    let vb = s.set(b_, b("b0")).await.unwrap();
    let vc = s.set(c, b("c0")).await.unwrap();
    let before = s.batch_get(&[a.into(), b_.into(), c.into(), d.into()]).await.unwrap();
    let writes = |g: Group| g.put(a, b("a1"), None).put(b_, b("b1"), None).delete(c).put(d, b("d1"), None);
    for (group, key, expected, found) in [
        (writes(Group::new().check(a, Some(va)).check(b_, Some(vb + 1_000))), b_, Some(vb + 1_000), Some(vb)),
        (writes(Group::new().check(a, Some(va)).check(d, Some(1))), d, Some(1), None),
        (writes(Group::new().check(c, None)), c, None, Some(vc)),
        // A precondition on a key the group also writes, checked against the stored version.
        (writes(Group::new().check(a, Some(va)).check(a, None)), a, None, Some(va)),
    ] {
        let e = s.transact(group).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::PreconditionFailed { expected, found }, "{e}");
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.backend, s.backend());
        let after = s.batch_get(&[a.into(), b_.into(), c.into(), d.into()]).await.unwrap();
        assert_eq!(after, before, "a failed group changed nothing");
    }
    // The same writes with the right versions go through.
    s.transact(writes(Group::new().check(a, Some(va)).check(b_, Some(vb)).check(d, None))).await.unwrap();
    let after = s.batch_get(&[a.into(), b_.into(), c.into(), d.into()]).await.unwrap();
    let values: Vec<Option<Bytes>> = after.into_iter().map(|e| e.map(|e| e.value)).collect();
    assert_eq!(values, [Some(b("a1")), Some(b("b1")), None, Some(b("d1"))]);
}

/// How many groups each of the 8 tasks of [`groups_on_overlapping_keys_serialize`] commits:
/// `ATRION_GROUPS_PER_TASK` if set, else 1,000, but 250 on PostgreSQL (each commit there
/// is some seven round trips, and the 8 tasks' compare-and-set retries make ~8 attempts per
/// commit: 8 × 1,000 took 85 s of a test run, 8 × 250 about a quarter of it).
pub fn groups_per_task(s: &dyn StateStore) -> u64 {
    let default = if s.backend() == "postgres" { 250 } else { 1_000 };
    std::env::var("ATRION_GROUPS_PER_TASK").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Reads two counters and, in one group checked on both versions read, increments both,
/// retrying when another group got there first; returns the values read by the group that
/// committed. Panics after `max_attempts`.
async fn increment_both(s: &Store, a: &str, b_: &str, max_attempts: u32) -> (u64, u64) {
    for _ in 0..max_attempts {
        let got = s.batch_get(&[a.to_owned(), b_.to_owned()]).await.unwrap();
        let read = |e: &Option<crate::Entry>| e.as_ref().map_or((0, None), |e| (u(&e.value), Some(e.version)));
        let ((x, vx), (y, vy)) = (read(&got[0]), read(&got[1]));
        let group = Group::new().check(a, vx).check(b_, vy).put(a, n(x + 1), None).put(b_, n(y + 1), None);
        match s.transact(group).await {
            Ok(_) => return (x, y),
            Err(e) if matches!(e.kind, ErrorKind::PreconditionFailed { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("a group failed: {e}"),
        }
    }
    panic!("a group lost {max_attempts} times in a row");
}

/// 8 tasks each commit [`groups_per_task`] groups that increment two counters together
/// (compare-and-set on both, retried), while a reader validates its reads with groups of
/// preconditions alone: no increment is lost, and no committed group (or validated read)
/// ever saw the counters differ (no torn read).
pub async fn groups_on_overlapping_keys_serialize(s: Store) {
    if !s.capabilities().transactions {
        return;
    }
    let (a, b_) = ("{conf/grp-race}/a", "{conf/grp-race}/b");
    let per_task = groups_per_task(s.as_ref());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let mut validated = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let got = s.batch_get(&[a.to_owned(), b_.to_owned()]).await.unwrap();
                let (Some(x), Some(y)) = (&got[0], &got[1]) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let check = Group::new().check(a, Some(x.version)).check(b_, Some(y.version));
                if s.transact(check).await.is_ok() {
                    assert_eq!(u(&x.value), u(&y.value), "a validated read saw the counters differ");
                    validated += 1;
                }
                tokio::task::yield_now().await;
            }
            validated
        })
    };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let (x, y) = increment_both(&s, a, b_, 1_000_000).await;
                    assert_eq!(x, y, "a committed group read the counters apart (a torn read)");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.unwrap();
    let got = s.batch_get(&[a.to_owned(), b_.to_owned()]).await.unwrap();
    let values: Vec<u64> = got.iter().map(|e| u(&e.as_ref().unwrap().value)).collect();
    assert_eq!(values, [8 * per_task, 8 * per_task], "no group lost, none half-applied");
    // With the writers gone, a read validates at once.
    let (x, y) = (got[0].as_ref().unwrap(), got[1].as_ref().unwrap());
    s.transact(Group::new().check(a, Some(x.version)).check(b_, Some(y.version))).await.unwrap();
}

/// The group a kill test writes as its `i`th: three keys of slot group `{conf/kill/i}`, all
/// holding `i`, created only if the first is absent.
pub fn kill_group(i: u64) -> Group {
    let key = |k: &str| format!("{{conf/kill/{i}}}/{k}");
    let g = Group::new().check(key("a"), None);
    ["a", "b", "c"].iter().fold(g, |g, k| g.put(key(k), n(i), None))
}

/// After a store was killed while writing [`kill_group`]s `0..upto`: each group is all there
/// (its three keys, holding its number) or not at all. Returns how many are there.
pub async fn check_kill_groups(s: &dyn StateStore, upto: u64) -> u64 {
    let mut whole = 0;
    for i in 0..upto {
        let keys: Vec<String> = ["a", "b", "c"].iter().map(|k| format!("{{conf/kill/{i}}}/{k}")).collect();
        let got = s.batch_get(&keys).await.unwrap();
        let present = got.iter().filter(|e| e.is_some()).count();
        assert!(present == 0 || present == 3, "group {i} is torn: {present} of its 3 keys: {got:?}");
        if present == 3 {
            assert!(got.iter().all(|e| u(&e.as_ref().unwrap().value) == i), "group {i}: {got:?}");
            whole += 1;
        }
    }
    whole
}

// ---- checks of a shared (cluster) store, beyond the port itself ----

/// The store's server restarts (by `restart`): writes work again on the same handle, and
/// the change feed says that events may have been lost.
pub async fn feed_resyncs_after_a_restart(s: Store, restart: impl FnOnce()) {
    let Some(mut feed) = s.subscribe("").await.unwrap() else { return };
    s.set("conf/restart/k1", b("v")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await.unwrap();
    assert!(matches!(first, Some(Change::Set { .. })), "{first:?}");
    restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while s.set("conf/restart/k2", b("v")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "writes do not work again after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut saw_resync = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(60), feed.recv()).await {
            Ok(Some(Change::Resync)) => {
                saw_resync = true;
                break;
            }
            Ok(Some(_)) => continue,
            _ => break,
        }
    }
    assert!(saw_resync, "the feed asks for a resync after a reconnect");
}
