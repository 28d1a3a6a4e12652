//! Decision tickets: authenticated, expiring, single-use.
//!
//! A ticket is `v2.<issuer>.<seq>.<at>.<route>.<mac>`: the issuing node's random id (8 hex
//! digits), a sequence number, the decision's engine time (nanoseconds), the route
//! (base64url) and an HMAC-SHA256 of everything before it, cut to 128 bits (base64url). The
//! key is 32 random bytes made when the node starts and never leaves it: a ticket is good on
//! the node that issued it, in the life it was issued in.
//!
//! A report by ticket is taken once. Each node keeps a ring of [`REPLAY_BITS`] bits (1 MiB),
//! one per sequence number modulo its size; issuing clears the ticket's bit and taking it
//! sets it (one atomic operation each, no lock, no allocation). A ticket whose sequence
//! number is more than [`REPLAY_WINDOW`] behind the newest counts as expired, as does one
//! older than the time to live, so that the ring's bits are never shared by two live
//! tickets: single use holds for every ticket accepted. At 22,000 admitted decisions a
//! second, the window covers about three minutes.
//!
//! A refused ticket changes nothing and creates no route: [`TicketError`] says why.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use atrion::Timestamp;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

use crate::problem::{Problem, ProblemKind, check_route};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Bits of the replay ring (2^23: 1 MiB).
pub const REPLAY_BITS: u64 = 1 << 23;

/// How far behind the newest ticket a ticket may be and still be taken (half the ring).
pub const REPLAY_WINDOW: u64 = REPLAY_BITS / 2;

/// Bytes of the MAC a ticket carries (128 bits of HMAC-SHA256).
const MAC_BYTES: usize = 16;

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not a ticket at all.
    #[error("not a ticket")]
    Malformed,
    /// Issued by another node, or by this node before a restart.
    #[error("the ticket was issued by another node, or before this node restarted")]
    Foreign,
    /// The MAC does not match: made or changed by someone else.
    #[error("the ticket's signature does not match")]
    Forged,
    /// Older than the time to live, or than the replay window.
    #[error("the ticket has expired")]
    Expired,
    /// Already reported.
    #[error("the ticket was already reported")]
    Replayed,
}

impl TicketError {
    /// The problem a report answers with.
    pub(crate) fn problem(self) -> Problem {
        let kind = match self {
            TicketError::Malformed => ProblemKind::TicketMalformed,
            TicketError::Foreign => ProblemKind::TicketForeign,
            TicketError::Forged => ProblemKind::TicketForged,
            TicketError::Expired => ProblemKind::TicketExpired,
            TicketError::Replayed => ProblemKind::TicketReplayed,
        };
        Problem::new(kind, self.to_string()).at("ticket")
    }
}

/// A ticket the book took: the decision's time and route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The decision's engine time.
    pub at: Timestamp,
    /// The route decided on.
    pub route: String,
}

/// Issues and takes this node's tickets.
pub struct TicketBook {
    mac: HmacSha256,
    issuer: u32,
    /// `v2.<issuer>.`, the start of every ticket.
    prefix: String,
    ttl: Duration,
    /// The next sequence number (from 1).
    next: AtomicU64,
    /// One bit per sequence number modulo [`REPLAY_BITS`]: set once taken.
    taken: Box<[AtomicU64]>,
}

impl std::fmt::Debug for TicketBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketBook").field("issuer", &self.issuer).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TicketBook {
    /// A book with a fresh random key and issuer id; tickets live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        let mut issuer = [0u8; 4];
        // The system's random source failing leaves no safe key to make: a fault of the host.
        #[allow(clippy::expect_used)]
        {
            getrandom::fill(&mut key).expect("the system's random source");
            getrandom::fill(&mut issuer).expect("the system's random source");
        }
        Self::with_key(&key, u32::from_le_bytes(issuer), ttl)
    }

    fn with_key(key: &[u8; 32], issuer: u32, ttl: Duration) -> Self {
        // HMAC takes a key of any length: 32 bytes cannot be refused.
        #[allow(clippy::expect_used)]
        let mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        let words = (REPLAY_BITS / 64) as usize;
        TicketBook {
            mac,
            issuer,
            prefix: format!("v2.{issuer:08x}."),
            ttl,
            next: AtomicU64::new(1),
            taken: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A ticket for a decision on `route` at `at`.
    pub fn issue(&self, route: &str, at: Timestamp) -> String {
        use std::fmt::Write as _;
        let seq = self.next.fetch_add(1, Relaxed);
        let (word, bit) = slot(seq);
        self.taken[word].fetch_and(!bit, Relaxed);
        let mut text = String::with_capacity(64 + route.len().div_ceil(3) * 4);
        text.push_str(&self.prefix);
        let _ = write!(text, "{seq}.{}.", at.as_nanos());
        URL_SAFE_NO_PAD.encode_string(route, &mut text);
        let tag = self.sign(text.as_bytes());
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(&tag[..MAC_BYTES], &mut text);
        text
    }

    /// Takes a ticket at `now`: its decision's time and route, once. A refused ticket
    /// changes nothing.
    pub fn take(&self, text: &str, now: Timestamp) -> Result<Taken, TicketError> {
        let (signed, tag) = text.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let mut parts = signed.split('.');
        let (Some("v2"), Some(issuer), Some(seq), Some(at), Some(route), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Malformed);
        };
        let issuer = u32::from_str_radix(issuer, 16).map_err(|_| TicketError::Malformed)?;
        let seq: u64 = seq.parse().map_err(|_| TicketError::Malformed)?;
        let at = Timestamp::from_nanos(at.parse().map_err(|_| TicketError::Malformed)?);
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TicketError::Malformed)?;
        if tag.len() != MAC_BYTES {
            return Err(TicketError::Malformed);
        }
        if issuer != self.issuer {
            return Err(TicketError::Foreign);
        }
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_truncated_left(&tag).map_err(|_| TicketError::Forged)?;
        // Signed by this node: what follows was written by it.
        let route = URL_SAFE_NO_PAD
            .decode(route)
            .ok()
            .and_then(|r| String::from_utf8(r).ok())
            .filter(|r| check_route("ticket", r).is_ok())
            .ok_or(TicketError::Malformed)?;
        let newest = self.next.load(Relaxed);
        if seq == 0 || seq >= newest {
            return Err(TicketError::Forged);
        }
        if newest - seq > REPLAY_WINDOW || now.saturating_since(at) > self.ttl {
            return Err(TicketError::Expired);
        }
        let (word, bit) = slot(seq);
        if self.taken[word].fetch_or(bit, Relaxed) & bit != 0 {
            return Err(TicketError::Replayed);
        }
        Ok(Taken { at, route })
    }

    fn sign(&self, text: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(text);
        mac.finalize().into_bytes().into()
    }
}

/// The ring's word and bit of a sequence number.
#[inline]
fn slot(seq: u64) -> (usize, u64) {
    let i = seq % REPLAY_BITS;
    ((i / 64) as usize, 1 << (i % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> TicketBook {
        TicketBook::with_key(&[7; 32], 0xabcd, Duration::from_secs(300))
    }

    fn ms(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn a_ticket_is_taken_once() {
        let b = book();
        let t = b.issue("GET /a.b/{id}", ms(1));
        assert_eq!(b.take(&t, ms(2)), Ok(Taken { at: ms(1), route: "GET /a.b/{id}".into() }));
        assert_eq!(b.take(&t, ms(3)), Err(TicketError::Replayed));
    }

    #[test]
    fn forged_foreign_expired_and_garbage_are_refused() {
        let b = book();
        let t = b.issue("r", ms(1));
        // Another route under the same MAC.
        let parts: Vec<&str> = t.split('.').collect();
        let other = format!("{}.{}.{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[3], "b3RoZXI", parts[5]);
        assert_eq!(b.take(&other, ms(2)), Err(TicketError::Forged));
        let foreign = TicketBook::with_key(&[7; 32], 0x1234, Duration::from_secs(300)).issue("r", ms(1));
        assert_eq!(b.take(&foreign, ms(2)), Err(TicketError::Foreign));
        let rekeyed = TicketBook::with_key(&[8; 32], 0xabcd, Duration::from_secs(300)).issue("r", ms(1));
        assert_eq!(b.take(&rekeyed, ms(2)), Err(TicketError::Forged));
        assert_eq!(b.take(&t, ms(1 + 300_001)), Err(TicketError::Expired));
        for bad in ["", "v1.0.Zm9yZ2VkLXJvdXRl", "v2.", "v2.x.1.1.YQ.AAAA", "v2.abcd.1.1.YQ.!!", "a.b.c.d.e.f.g"] {
            assert_eq!(b.take(bad, ms(2)), Err(TicketError::Malformed), "{bad}");
        }
        // None of them used the ticket up.
        assert!(b.take(&t, ms(2)).is_ok());
    }

    #[test]
    fn a_ticket_behind_the_replay_window_has_expired() {
        let b = book();
        let t = b.issue("r", ms(1));
        b.next.fetch_add(REPLAY_WINDOW, Relaxed);
        assert_eq!(b.take(&t, ms(2)), Err(TicketError::Expired));
    }
}
