//! Decision tickets: authenticated, expiring, single-use.
//!
//! A ticket is `v3.<route>.<tail>`: the route in base64url, then 48 base64url characters
//! holding a 20-byte head (the issuing node's random id, 4 bytes; a sequence number, 8; the
//! decision's engine time in nanoseconds, 8; each little-endian) and an HMAC-SHA256 of the
//! head and the route's text, cut to 128 bits, under the book's own [`Seal`] (a random key
//! made when the node starts, which never leaves it): a ticket is good on the node that
//! issued it, in the life it was issued in. Clients treat a ticket as opaque text.
//!
//! The layout is chosen for the cost of the decision that issues it: fixed-width binary
//! fields need no decimal formatting or parsing, the head decodes onto the stack, and for
//! routes up to 26 bytes the signed text fits one SHA-256 block (two compressions per MAC
//! with the keyed pads computed once).
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

use super::seal::{Seal, TAG_BYTES};
use crate::problem::{Problem, ProblemKind, check_route};

/// Bits of the replay ring (2^23: 1 MiB).
pub const REPLAY_BITS: u64 = 1 << 23;

/// How far behind the newest ticket a ticket may be and still be taken (half the ring).
pub const REPLAY_WINDOW: u64 = REPLAY_BITS / 2;

/// The start of every ticket.
const PREFIX: &str = "v3.";

/// Bytes of the signed head: issuer (4), sequence number (8), decision time (8).
const HEAD: usize = 20;

/// Characters of the tail: the head and the MAC in base64url (36 bytes, no padding).
const TAIL_CHARS: usize = (HEAD + TAG_BYTES) / 3 * 4;

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
    seal: Seal,
    issuer: u32,
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
        let mut issuer = [0u8; 4];
        // The system's random source failing leaves no safe id to make: a fault of the host.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut issuer).expect("the system's random source");
        Self::with_seal(Seal::new(), u32::from_le_bytes(issuer), ttl)
    }

    fn with_seal(seal: Seal, issuer: u32, ttl: Duration) -> Self {
        let words = (REPLAY_BITS / 64) as usize;
        TicketBook {
            seal,
            issuer,
            ttl,
            next: AtomicU64::new(1),
            taken: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A ticket for a decision on `route` at `at`.
    pub fn issue(&self, route: &str, at: Timestamp) -> String {
        let seq = self.next.fetch_add(1, Relaxed);
        let (word, bit) = slot(seq);
        self.taken[word].fetch_and(!bit, Relaxed);
        let mut tail = [0u8; HEAD + TAG_BYTES];
        tail[..4].copy_from_slice(&self.issuer.to_le_bytes());
        tail[4..12].copy_from_slice(&seq.to_le_bytes());
        tail[12..HEAD].copy_from_slice(&at.as_nanos().to_le_bytes());
        let mut text = String::with_capacity(PREFIX.len() + route.len().div_ceil(3) * 4 + 1 + TAIL_CHARS);
        text.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(route, &mut text);
        let tag = self.seal.tag(&[&tail[..HEAD], &text.as_bytes()[PREFIX.len()..]]);
        tail[HEAD..].copy_from_slice(&tag);
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(tail, &mut text);
        text
    }

    /// Takes a ticket at `now`: its decision's time and route, once. A refused ticket
    /// changes nothing.
    pub fn take(&self, text: &str, now: Timestamp) -> Result<Taken, TicketError> {
        let (route, tail) = text.strip_prefix(PREFIX).and_then(|t| t.rsplit_once('.')).ok_or(TicketError::Malformed)?;
        let mut bytes = [0u8; HEAD + TAG_BYTES];
        if tail.len() != TAIL_CHARS || URL_SAFE_NO_PAD.decode_slice(tail, &mut bytes) != Ok(bytes.len()) {
            return Err(TicketError::Malformed);
        }
        let (head, tag) = bytes.split_at(HEAD);
        let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
        let (issuer, seq, at) = (&head[..4], word(4), Timestamp::from_nanos(word(12)));
        if issuer != self.issuer.to_le_bytes() {
            return Err(TicketError::Foreign);
        }
        if !self.seal.verify(&[head, route.as_bytes()], tag) {
            return Err(TicketError::Forged);
        }
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
        TicketBook::with_seal(Seal::with_key(&[7; 32]), 0xabcd, Duration::from_secs(300))
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
        let (_, tail) = t.rsplit_once('.').unwrap();
        let other = format!("v3.b3RoZXI.{tail}");
        assert_eq!(b.take(&other, ms(2)), Err(TicketError::Forged));
        // Another time under the same MAC.
        let mut bytes = URL_SAFE_NO_PAD.decode(tail).unwrap();
        bytes[12] ^= 1;
        let later = format!("v3.cg.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(b.take(&later, ms(2)), Err(TicketError::Forged));
        let foreign =
            TicketBook::with_seal(Seal::with_key(&[7; 32]), 0x1234, Duration::from_secs(300)).issue("r", ms(1));
        assert_eq!(b.take(&foreign, ms(2)), Err(TicketError::Foreign));
        let rekeyed =
            TicketBook::with_seal(Seal::with_key(&[8; 32]), 0xabcd, Duration::from_secs(300)).issue("r", ms(1));
        assert_eq!(b.take(&rekeyed, ms(2)), Err(TicketError::Forged));
        assert_eq!(b.take(&t, ms(1 + 300_001)), Err(TicketError::Expired));
        let tail = "A".repeat(TAIL_CHARS);
        let bad_tails = [format!("v3.cg.{}", &tail[1..]), format!("v3.cg.{tail}A"), format!("v3.cg.!{}", &tail[1..])];
        for bad in ["", "v1.0.Zm9yZ2VkLXJvdXRl", "v3.", "v3.cg", "v2.abcd.1.1.YQ.AAAA", "a.b.c.d.e.f.g"]
            .into_iter()
            .chain(bad_tails.iter().map(String::as_str))
        {
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
