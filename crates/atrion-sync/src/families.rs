//! The cluster sync's families of keys, each with the check of its values, for a restore
//! ([`atrion_state::KeyFamilies`]).

use std::sync::Arc;

use atrion_state::shares::Shares;
use atrion_state::{KeyFamily, ValueCheck};

use crate::keys::ClusterKeys;
use crate::record::RouteRecord;
use crate::wire::{Contribution, Digest, Heartbeat};

/// The cluster sync's families in the namespace of `keys`: every route's shares (each share a
/// node's [`Contribution`]), every node's heartbeat, the membership digest, and every node's
/// route records ([`crate::RouteRecord`]: holds and open intervals, which a backup carries
/// across).
pub fn cluster_families(keys: &ClusterKeys) -> Vec<KeyFamily> {
    let shares: ValueCheck = Arc::new(|v: &[u8]| {
        let shares = Shares::decode(v).ok_or("not route shares")?;
        match shares.top.iter().find(|s| Contribution::decode(&s.value).is_none() || s.rank.is_nan()) {
            Some(s) => Err(format!("the share of `{}` is not a contribution", s.member)),
            None => Ok(()),
        }
    });
    let heartbeat: ValueCheck =
        Arc::new(|v: &[u8]| Heartbeat::decode(v).map(drop).ok_or_else(|| "not a heartbeat".to_owned()));
    let digest: ValueCheck =
        Arc::new(|v: &[u8]| Digest::decode(v).map(drop).ok_or_else(|| "not a membership digest".to_owned()));
    let record: ValueCheck =
        Arc::new(|v: &[u8]| RouteRecord::decode(v).map(drop).ok_or_else(|| "not a route record".to_owned()));
    vec![
        KeyFamily::under("route shares", keys.routes_prefix().to_owned(), shares),
        KeyFamily::under("node heartbeats", keys.nodes_prefix().to_owned(), heartbeat),
        KeyFamily::exact("membership digest", keys.digest(), digest),
        KeyFamily::under("route records", keys.locals_prefix().to_owned(), record),
    ]
}

#[cfg(test)]
mod tests {
    use atrion_state::{BackupLine, KeyFamilies};
    use bytes::Bytes;

    use super::*;

    #[test]
    fn route_records_are_a_family_of_the_namespace() {
        let keys = ClusterKeys::new("ns", "n1");
        let families = KeyFamilies::new().with(cluster_families(&keys));
        let record = RouteRecord { hold: atrion_core::Hold::Open, mode: atrion_core::Mode::Open, open_until_ms: 9 };
        let line = |key: &str, value: Bytes| BackupLine { key: key.into(), value, ttl: None };
        // Another node's records too: a backup of a cluster restores every node's.
        for key in [keys.local("GET /a").unwrap(), "ns/local/n2/GET /b".into()] {
            assert_eq!(families.check(&line(&key, record.encode())), Ok(()), "{key}");
        }
        let bad = families.check(&line("ns/local/n1/r", Bytes::from_static(b"junk"))).unwrap_err();
        assert!(bad.contains("route records"), "{bad}");
        assert!(families.check(&line("ns/local/", record.encode())).is_err(), "no node, no route");
    }

    #[test]
    fn every_line_is_checked_by_its_family_and_foreign_keys_are_refused() {
        let keys = ClusterKeys::new("ns", "n1");
        let families = KeyFamilies::new().with(cluster_families(&keys));
        let share = atrion_state::shares::Share {
            member: "n2".into(),
            rank: 1.0,
            value: Contribution { scar: 1.0, momentum: 0.0, at_ms: 5 }.encode(),
        };
        let shares = Shares { members: 1, top: vec![share] }.encode();
        let line =
            |key: &str, value: &[u8]| BackupLine { key: key.into(), value: Bytes::copy_from_slice(value), ttl: None };
        let digest = Digest { at_ms: 9, nodes: [("n2".to_owned(), 7)].into() }.encode();
        let good = vec![
            (1, line("ns/route/GET /a", &shares)),
            (3, line("ns/node/n2", &7u64.to_le_bytes())),
            (4, line("ns/members", &digest)),
        ];
        assert_eq!(BackupLine::check_all(&good, &families), Ok(()));
        let mut bad = good.clone();
        bad.push((5, line("ns/route/GET /b", b"abcdef")));
        let refused = BackupLine::check_all(&bad, &families).unwrap_err();
        assert_eq!((refused.line, refused.key.as_str()), (5, "ns/route/GET /b"));
        assert!(families.check(&line("ns/members", b"x")).unwrap_err().contains("membership digest"));
        assert!(refused.reason.contains("route shares"), "{refused}");
        let junk = Shares {
            members: 1,
            top: vec![atrion_state::shares::Share { member: "x".into(), rank: 0.0, value: Bytes::from_static(b"1") }],
        };
        assert!(families.check(&line("ns/route/r", &junk.encode())).unwrap_err().contains("not a contribution"));
        assert!(families.check(&line("ns/local/n2/GET /a", b"x")).unwrap_err().contains("route records"));
        for foreign in ["evil/key", "ns/route/", "ns/other", "nsx/route/a"] {
            assert!(families.check(&line(foreign, b"")).unwrap_err().contains("no family"), "{foreign}");
        }
    }
}
