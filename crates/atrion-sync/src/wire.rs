//! The bytes a node writes for the cluster: its [`Contribution`] to a route (a share's
//! value), its [`Heartbeat`], and the membership [`Digest`] its watchers write. The one owner
//! of these formats; a route record's bytes are [`crate::RouteRecord`]'s.

use bytes::Bytes;

/// One node's contribution to a route, as stored: version byte, scar, momentum, wall ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// The node's local scar (ohms).
    pub scar: f64,
    /// The node's local momentum.
    pub momentum: f64,
    /// When they were computed, in ms since the Unix epoch.
    pub at_ms: u64,
}

pub(crate) const CONTRIBUTION_VERSION: u8 = 1;
pub(crate) const CONTRIBUTION_LEN: usize = 25;

impl Contribution {
    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(CONTRIBUTION_LEN);
        out.push(CONTRIBUTION_VERSION);
        out.extend_from_slice(&self.scar.to_le_bytes());
        out.extend_from_slice(&self.momentum.to_le_bytes());
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        Bytes::from(out)
    }

    /// Decodes and validates; `None` for bytes of another version or length, or values that
    /// are not finite or negative (written by someone else, or damaged).
    pub fn decode(bytes: &[u8]) -> Option<Contribution> {
        if bytes.len() != CONTRIBUTION_LEN || bytes[0] != CONTRIBUTION_VERSION {
            return None;
        }
        let word = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        let c = Contribution { scar: f64::from_bits(word(1)?), momentum: f64::from_bits(word(9)?), at_ms: word(17)? };
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        (ok(c.scar) && ok(c.momentum)).then_some(c)
    }
}

/// A node's heartbeat as stored: its wall-clock milliseconds (8 bytes, little-endian), then
/// its software version (UTF-8, at most 32 bytes; absent from older nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) ms: u64,
    pub(crate) version: Option<String>,
}

/// This node's software version, as its heartbeat carries it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Heartbeat {
    pub(crate) fn encode(ms: u64, version: &str) -> Bytes {
        let mut out = Vec::with_capacity(8 + version.len());
        out.extend_from_slice(&ms.to_le_bytes());
        out.extend_from_slice(version.as_bytes());
        Bytes::from(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Heartbeat> {
        let (ms, version) = Heartbeat::decode_ref(bytes)?;
        Some(Heartbeat { ms, version: version.map(str::to_owned) })
    }

    /// The milliseconds and the version, read in place.
    pub(crate) fn decode_ref(bytes: &[u8]) -> Option<(u64, Option<&str>)> {
        let (ms, version) = bytes.split_first_chunk::<8>()?;
        if version.len() > 32 {
            return None;
        }
        let version = std::str::from_utf8(version).ok()?;
        Some((u64::from_le_bytes(*ms), (!version.is_empty()).then_some(version)))
    }
}

/// The cluster's live nodes as its watchers last found them (docs/DESIGN.md §4,
/// membership): when they looked, and each live node with its last heartbeat. Stored as a
/// format byte, `at_ms` (8 bytes), the count (4), then per node its id's length (1), the id
/// and its heartbeat's ms (8); all little-endian.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Digest {
    /// When the watcher read the heartbeats, wall ms.
    pub(crate) at_ms: u64,
    /// The live nodes, by id, with their heartbeats' ms.
    pub(crate) nodes: std::collections::BTreeMap<String, u64>,
}

const DIGEST_FORMAT: u8 = 1;

impl Digest {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(13 + self.nodes.keys().map(|n| n.len() + 9).sum::<usize>());
        out.push(DIGEST_FORMAT);
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        out.extend_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        for (node, ms) in &self.nodes {
            out.push(node.len() as u8);
            out.extend_from_slice(node.as_bytes());
            out.extend_from_slice(&ms.to_le_bytes());
        }
        Bytes::from(out)
    }

    /// Decodes and validates: `None` for another format, a truncated or padded value, or a
    /// node id that is empty, longer than 64 bytes or not UTF-8.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Digest> {
        let (&format, rest) = bytes.split_first()?;
        let (at, rest) = rest.split_first_chunk::<8>()?;
        let (count, mut rest) = rest.split_first_chunk::<4>()?;
        if format != DIGEST_FORMAT {
            return None;
        }
        let mut d = Digest { at_ms: u64::from_le_bytes(*at), nodes: Default::default() };
        for _ in 0..u32::from_le_bytes(*count) {
            let (&len, tail) = rest.split_first()?;
            let len = usize::from(len);
            if len == 0 || len > 64 || tail.len() < len + 8 {
                return None;
            }
            let node = std::str::from_utf8(&tail[..len]).ok()?;
            let ms = u64::from_le_bytes(tail[len..len + 8].try_into().ok()?);
            d.nodes.insert(node.to_owned(), ms);
            rest = &tail[len + 8..];
        }
        rest.is_empty().then_some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_roundtrip_and_garbage_is_refused() {
        let c = Contribution { scar: 12.5, momentum: 0.25, at_ms: 1_700_000_000_000 };
        assert_eq!(Contribution::decode(&c.encode()), Some(c));
        assert_eq!(Contribution::decode(b"hello"), None);
        let mut bad = c.encode().to_vec();
        bad[0] = 9;
        assert_eq!(Contribution::decode(&bad), None, "another version");
        let nan = Contribution { scar: f64::NAN, ..c };
        assert_eq!(Contribution::decode(&nan.encode()), None);
        let negative = Contribution { scar: -1.0, ..c };
        assert_eq!(Contribution::decode(&negative.encode()), None);
    }

    #[test]
    fn digests_roundtrip_and_garbage_is_refused() {
        let mut d = Digest { at_ms: 1_700_000_000_123, nodes: Default::default() };
        d.nodes.insert("node-a".into(), 7);
        d.nodes.insert("b".repeat(64), u64::MAX);
        let bytes = d.encode();
        assert_eq!(Digest::decode(&bytes), Some(d.clone()));
        assert_eq!(Digest::decode(&Digest::default().encode()), Some(Digest::default()));
        for cut in 0..bytes.len() {
            assert_eq!(Digest::decode(&bytes[..cut]), None, "truncated at {cut}");
        }
        let mut padded = bytes.to_vec();
        padded.push(0);
        assert_eq!(Digest::decode(&padded), None);
        let mut format = bytes.to_vec();
        format[0] = 2;
        assert_eq!(Digest::decode(&format), None);
        let mut empty_id = Digest::default().encode().to_vec();
        empty_id[9] = 1;
        empty_id.extend_from_slice(&[0; 9]);
        assert_eq!(Digest::decode(&empty_id), None);
    }
}
