//! The bytes a node writes for the cluster: its [`Contribution`] to a route (a share's
//! value) and its [`Heartbeat`]. The one owner of both formats; a route record's bytes are
//! [`crate::RouteRecord`]'s.

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
        let (ms, version) = bytes.split_first_chunk::<8>()?;
        if version.len() > 32 {
            return None;
        }
        let version = std::str::from_utf8(version).ok()?;
        Some(Heartbeat { ms: u64::from_le_bytes(*ms), version: (!version.is_empty()).then(|| version.to_owned()) })
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
}
