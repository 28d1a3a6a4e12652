//! `RouteRecord`: what a node keeps of one route for its own restart, and its encoding (the
//! one owner of these bytes).
//!
//! A route's shares carry only its scar, which is what the cluster merges. Two things more
//! must outlive a restart of the node, and neither is the cluster's business: an operator's
//! hold (a decision about this node, as [`atrion_core::Engine::hold`] is today; a hold for
//! every node is a policy), and an open interval (a route that tripped must not come back in
//! bootstrap, admitting everything onto a dependency that may still be failing). They live
//! under `{namespace}/local/{node}/{route}` ([`crate::ClusterKeys::local`]), written when they
//! change, removed when there is nothing left to keep, read back only by the same node.
//!
//! ```text
//! [RECORD_VERSION = 1] [hold: u8] [mode: u8] [open_until: u64 LE, ms since the Unix epoch]
//! ```
//! The end of the open interval is stored as a wall-clock deadline, not as the engine's
//! timestamp (which restarts with the process): the time a node was down counts against
//! the interval, and a deadline already past brings the route back half-open.

use std::time::Duration;

use atrion_core::{Hold, LocalContribution, Mode, Timestamp};
use bytes::Bytes;

const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 11;

/// Deadlines closer than this are the same record: a deadline is recomputed from the
/// engine's clock at each pulse, and rewriting it for a millisecond would be a write per
/// pulse for nothing.
const DEADLINE_SLACK_MS: u64 = 1_000;

/// What a node keeps of one route for its own restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRecord {
    /// The operator's hold.
    pub hold: Hold,
    /// The route's mode: open or half-open are brought back; others are kept only beside a
    /// hold.
    pub mode: Mode,
    /// While open: when the interval ends, in ms since the Unix epoch.
    pub open_until_ms: u64,
}

impl RouteRecord {
    /// The record of a route from its local contribution, taken at engine time `now` and
    /// wall time `wall_ms`; `None` when there is nothing to keep (no hold, neither open nor
    /// half-open).
    pub fn of(c: &LocalContribution, now: Timestamp, wall_ms: u64) -> Option<RouteRecord> {
        let opened = matches!(c.mode, Mode::Open | Mode::HalfOpen);
        if c.hold == Hold::Released && !opened {
            return None;
        }
        let open_until_ms = if c.mode == Mode::Open {
            let left = c.open_until.saturating_since(now);
            wall_ms.saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        } else {
            0
        };
        Some(RouteRecord { hold: c.hold, mode: c.mode, open_until_ms })
    }

    /// Whether `other` says the same (deadlines within a second of each other).
    pub fn same(&self, other: &RouteRecord) -> bool {
        self.hold == other.hold
            && self.mode == other.mode
            && self.open_until_ms.abs_diff(other.open_until_ms) < DEADLINE_SLACK_MS
    }

    /// What is left of the open interval at wall time `wall_ms` (zero once it has ended: the
    /// route comes back half-open), or `None` when the route was neither open nor half-open.
    pub fn open_left(&self, wall_ms: u64) -> Option<Duration> {
        match self.mode {
            Mode::Open => Some(Duration::from_millis(self.open_until_ms.saturating_sub(wall_ms))),
            Mode::HalfOpen => Some(Duration::ZERO),
            Mode::Bootstrap | Mode::Operational => None,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(RECORD_LEN);
        out.push(RECORD_VERSION);
        out.push(self.hold as u8);
        out.push(self.mode as u8);
        out.extend_from_slice(&self.open_until_ms.to_le_bytes());
        Bytes::from(out)
    }

    /// Decodes [`RouteRecord::encode`]'s bytes; `None` for another version or length, or an
    /// unknown hold or mode.
    pub fn decode(bytes: &[u8]) -> Option<RouteRecord> {
        if bytes.len() != RECORD_LEN || bytes[0] != RECORD_VERSION {
            return None;
        }
        let hold = match bytes[1] {
            0 => Hold::Released,
            1 => Hold::Open,
            2 => Hold::Closed,
            3 => Hold::Shadow,
            _ => return None,
        };
        let mode = match bytes[2] {
            0 => Mode::Bootstrap,
            1 => Mode::Operational,
            2 => Mode::Open,
            3 => Mode::HalfOpen,
            _ => return None,
        };
        let open_until_ms = u64::from_le_bytes(bytes[3..RECORD_LEN].try_into().ok()?);
        Some(RouteRecord { hold, mode, open_until_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contribution(mode: Mode, hold: Hold, open_until: Timestamp) -> LocalContribution {
        LocalContribution { scar: 0.0, momentum: 0.0, at: Timestamp::ZERO, scar_decay: 0.1, mode, open_until, hold }
    }

    #[test]
    fn a_record_is_kept_for_a_hold_or_an_open_route_only() {
        let now = Timestamp::from_millis(10_000);
        let none = contribution(Mode::Operational, Hold::Released, Timestamp::ZERO);
        assert_eq!(RouteRecord::of(&none, now, 1_000_000), None);
        let open = contribution(Mode::Open, Hold::Released, Timestamp::from_millis(14_000));
        let r = RouteRecord::of(&open, now, 1_000_000).unwrap();
        assert_eq!(r, RouteRecord { hold: Hold::Released, mode: Mode::Open, open_until_ms: 1_004_000 });
        assert_eq!(r.open_left(1_001_000), Some(Duration::from_secs(3)));
        assert_eq!(r.open_left(1_005_000), Some(Duration::ZERO), "over while the node was down");
        let held = RouteRecord::of(&contribution(Mode::Bootstrap, Hold::Open, Timestamp::ZERO), now, 5).unwrap();
        assert_eq!((held.hold, held.open_left(5)), (Hold::Open, None));
        let half = RouteRecord::of(&contribution(Mode::HalfOpen, Hold::Released, Timestamp::ZERO), now, 5).unwrap();
        assert_eq!(half.open_left(5), Some(Duration::ZERO));
        // A deadline recomputed a few ms later is the same record; another second is not.
        assert!(r.same(&RouteRecord { open_until_ms: 1_004_020, ..r }));
        assert!(!r.same(&RouteRecord { open_until_ms: 1_005_000, ..r }));
        assert!(!r.same(&RouteRecord { hold: Hold::Closed, ..r }));
    }

    #[test]
    fn records_roundtrip_and_the_format_is_fixed() {
        for hold in [Hold::Released, Hold::Open, Hold::Closed, Hold::Shadow] {
            for mode in [Mode::Bootstrap, Mode::Operational, Mode::Open, Mode::HalfOpen] {
                let r = RouteRecord { hold, mode, open_until_ms: 1_765_000_000_123 };
                assert_eq!(RouteRecord::decode(&r.encode()), Some(r));
            }
        }
        // The bytes of version 1, as written by this version: later versions must read them.
        let stored = [1, 1, 2, 0x7b, 0xb2, 0x32, 0xf2, 0x9a, 0x01, 0, 0];
        assert_eq!(
            RouteRecord::decode(&stored),
            Some(RouteRecord { hold: Hold::Open, mode: Mode::Open, open_until_ms: 1_765_000_000_123 })
        );
        assert_eq!(RouteRecord::decode(&stored[..10]), None);
        for (i, bad) in [(0, 2), (1, 4), (2, 4)] {
            let mut b = stored;
            b[i] = bad;
            assert_eq!(RouteRecord::decode(&b), None, "byte {i} = {bad}");
        }
    }
}
