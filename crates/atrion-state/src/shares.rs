//! Shared aggregates: many members (the nodes of a cluster) each own one *share* of a key
//! (a route), and a reader gets the key's leaders in one read instead of one read per member.
//!
//! A share carries a rank, computed by the writer, and opaque bytes. A store keeps every
//! share (for a dump and for rebuilding) and serves the highest-ranked ones: a store with a
//! native aggregate (Redis) keeps the ranking itself and returns its top two, plus the
//! reader's own share; the port's default keeps every share of a key in one value under that
//! key and returns all of them. Either way a [`Shares`] is a prefix of the ranking, highest
//! first, and says how many members there are in all, so a reader knows when the prefix is
//! not enough ([`Shares::best`]).
//!
//! The encoding below is the one place that builds and reads these bytes: stored by the
//! default implementation, and carried as the value of a [`crate::Change::Set`] on a change
//! feed by every backend (a Redis script builds the same tokens).

use bytes::Bytes;

/// One member's share of a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// The member (a node id).
    pub member: String,
    /// Its rank: higher leads. Never NaN.
    pub rank: f64,
    /// Its value.
    pub value: Bytes,
}

/// A write of one member's share of one key, for [`crate::StateStore::put_shares`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShareWrite {
    /// The key (a route's key).
    pub key: String,
    /// The member's share.
    pub share: Share,
}

/// The leaders of a key's shares, highest rank first (ties: by member, descending), and how
/// many members the key has.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shares {
    /// Members holding a share of the key.
    pub members: u32,
    /// A prefix of the ranking (the whole of it when `top.len() == members`), possibly
    /// followed by the reader's own share.
    pub top: Vec<Share>,
}

/// What [`Shares::best`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Best<'a> {
    /// The highest-ranked share that counts.
    Found(&'a Share),
    /// No share counts.
    None,
    /// Every share listed is excluded but the key has more: read all of them
    /// ([`crate::StateStore::all_shares`]).
    Incomplete,
}

const TAG: &[u8] = b"s1";

/// A store may leave unnotified a change of a key's shares that moves neither of its two
/// leaders' ranks by more than this, unless it gives the key one of its first three members
/// (a member joining below the leaders of a key of three or more is not news: a reader
/// holding the two leaders knows there are more either way, so a notice's member count may
/// lag behind the store's, never across the line between two listed and more). Ranks of healed scar are
/// logarithms (`atrion_core::heal_rank`), so this is about 1% of a leader's value: what a
/// reader's merged view can lag behind, on top of the writers' deadband. A leader that only
/// changed places with another of nearly the same rank is not news either.
pub const NOTIFY_RANK_STEP: f64 = 0.01;

impl Shares {
    /// Whether every member's share is listed.
    pub fn complete(&self) -> bool {
        self.top.len() as u64 >= u64::from(self.members)
    }

    /// The highest-ranked share whose member `counts`.
    pub fn best(&self, counts: impl Fn(&str) -> bool) -> Best<'_> {
        // The listed shares are a prefix of the ranking (plus, perhaps, the reader's own, which
        // never counts for it): the first that counts leads all the unlisted ones too.
        // The first in ranking order that counts, without sorting (`min_by` keeps the first
        // of equals, as the stable sort of `ranked` does).
        match self.top.iter().filter(|s| counts(&s.member)).min_by(|a, b| by_rank(a, b)) {
            Some(s) => Best::Found(s),
            None if self.complete() => Best::None,
            None => Best::Incomplete,
        }
    }

    /// Sets `share` in a complete list (replacing the member's earlier one, or counting a
    /// new member); keeps `top` sorted.
    pub fn upsert(&mut self, share: Share) {
        match self.top.iter_mut().find(|s| s.member == share.member) {
            Some(s) => *s = share,
            None => {
                self.top.push(share);
                self.members = self.members.saturating_add(1);
            }
        }
        self.top.sort_by(by_rank);
    }

    /// The listed shares in ranking order, highest first (the reader's own share, listed
    /// last by a store, in its place).
    pub fn ranked(&self) -> Vec<&Share> {
        let mut ranked: Vec<&Share> = self.top.iter().collect();
        ranked.sort_by(|a, b| by_rank(a, b));
        ranked
    }

    /// The first two of [`Shares::ranked`], without sorting or allocating.
    pub fn top_two(&self) -> (Option<&Share>, Option<&Share>) {
        let (mut first, mut second): (Option<&Share>, Option<&Share>) = (None, None);
        for s in &self.top {
            // Strictly before: of equals, the earlier stays ahead (as the stable sort keeps it).
            let before = |x: Option<&Share>| x.is_none_or(|x| by_rank(s, x).is_lt());
            if before(first) {
                second = first;
                first = Some(s);
            } else if before(second) {
                second = Some(s);
            }
        }
        (first, second)
    }

    /// The share of `member`, if listed.
    pub fn get(&self, member: &str) -> Option<&Share> {
        self.top.iter().find(|s| s.member == member)
    }

    /// The stored and notified form: length-prefixed tokens (`<len>:<bytes>`): `s1`, the
    /// member count, then member, rank (decimal text; `-inf` for nothing) and value per share.
    pub fn encode(&self) -> Bytes {
        let mut out =
            Vec::with_capacity(16 + self.top.iter().map(|s| s.member.len() + s.value.len() + 32).sum::<usize>());
        push_token(&mut out, TAG);
        push_token(&mut out, self.members.to_string().as_bytes());
        for s in &self.top {
            push_token(&mut out, s.member.as_bytes());
            push_token(&mut out, format_rank(s.rank).as_bytes());
            push_token(&mut out, &s.value);
        }
        Bytes::from(out)
    }

    /// Decodes; `None` for anything that is not the encoding above (a foreign or damaged
    /// value).
    pub fn decode(bytes: &[u8]) -> Option<Shares> {
        let mut rest = bytes;
        if next_token(&mut rest)? != TAG {
            return None;
        }
        let members = std::str::from_utf8(next_token(&mut rest)?).ok()?.parse().ok()?;
        let mut top = Vec::new();
        while !rest.is_empty() {
            let member = std::str::from_utf8(next_token(&mut rest)?).ok()?.to_owned();
            let rank = parse_rank(next_token(&mut rest)?)?;
            let value = Bytes::copy_from_slice(next_token(&mut rest)?);
            if member.is_empty() {
                return None;
            }
            top.push(Share { member, rank, value });
        }
        Some(Shares { members, top })
    }

    /// Decodes `bytes` into `self`, as [`Shares::decode`] would, reusing what `self` holds:
    /// the list's capacity, the members' strings, and each value's buffer when `self` is its
    /// only holder and the new value has the same length. A change notice that names members
    /// already listed (in any order) with values of the same length as before allocates
    /// nothing. Returns `false` for anything `decode` refuses; `self` is then valid but its
    /// content unspecified.
    pub fn decode_into(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        if next_token(&mut rest) != Some(TAG) {
            return false;
        }
        let Some(members) = next_token(&mut rest).and_then(|t| std::str::from_utf8(t).ok()?.parse().ok()) else {
            return false;
        };
        self.members = members;
        let mut n = 0;
        while !rest.is_empty() {
            let Some(member) = next_token(&mut rest) else { return false };
            let Some(rank) = next_token(&mut rest).and_then(parse_rank) else { return false };
            let Some(value) = next_token(&mut rest) else { return false };
            if member.is_empty() {
                return false;
            }
            // The same bytes as the member already in place are UTF-8: checked only when
            // they differ.
            let same = self.top.get(n).is_some_and(|s| s.member.as_bytes() == member);
            let member = if same {
                ""
            } else {
                let Ok(member) = std::str::from_utf8(member) else { return false };
                member
            };
            match self.top.get_mut(n) {
                Some(s) => {
                    if !same {
                        s.member.clear();
                        s.member.push_str(member);
                    }
                    s.rank = rank;
                    refill(&mut s.value, value);
                }
                None => self.top.push(Share { member: member.to_owned(), rank, value: Bytes::copy_from_slice(value) }),
            }
            n += 1;
        }
        self.top.truncate(n);
        true
    }
}

/// Sets `slot` to a copy of `new`, in `slot`'s own buffer when it is its only holder and has
/// the same length (then nothing is allocated).
fn refill(slot: &mut Bytes, new: &[u8]) {
    if slot.as_ref() == new {
        return;
    }
    *slot = match std::mem::take(slot).try_into_mut() {
        // A buffer exactly as long as the value freezes back without allocating.
        Ok(mut buf) if buf.capacity() == new.len() => {
            buf.clear();
            buf.extend_from_slice(new);
            buf.freeze()
        }
        _ => Bytes::copy_from_slice(new),
    };
}

/// The ranking order, highest first; ties by member, descending (as Redis's `ZREVRANGE`).
fn by_rank(a: &Share, b: &Share) -> std::cmp::Ordering {
    b.rank.total_cmp(&a.rank).then_with(|| b.member.cmp(&a.member))
}

/// A rank as text both Rust and Redis read back exactly (`-inf` and `inf` included).
pub fn format_rank(rank: f64) -> String {
    if rank.is_infinite() { if rank > 0.0 { "inf".into() } else { "-inf".into() } } else { format!("{rank:?}") }
}

/// The inverse of [`format_rank`] (also reads Redis's `%.17g` and PostgreSQL's
/// `-Infinity`); NaN is refused.
pub fn parse_rank(text: &[u8]) -> Option<f64> {
    let r: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    (!r.is_nan()).then_some(r)
}

/// Appends `bytes` to `out` as a `<len>:<bytes>` token, the inverse of [`next_token`]. For
/// tools that write these tokens (a store's notifications).
pub fn push_token(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// The next `<len>:<bytes>` token of `rest`, advancing it; `None` when `rest` does not
/// start with one. For adapters that read these tokens from a server's notifications.
pub fn next_token<'b>(rest: &mut &'b [u8]) -> Option<&'b [u8]> {
    // The length and its colon (within the first 12 bytes) in one pass: this runs for every
    // token of every notice (a twelfth of applying one, with a search and a parse apart).
    let bytes: &'b [u8] = rest;
    let head = &bytes[..bytes.len().min(12)];
    let mut at = usize::from(head.first() == Some(&b'+'));
    let mut len = 0usize;
    loop {
        let b = *head.get(at)?;
        if b == b':' {
            break;
        }
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        len = len.checked_mul(10)?.checked_add(usize::from(d))?;
        at += 1;
    }
    if at == usize::from(head[0] == b'+') {
        return None; // no digits
    }
    let body = bytes.get(at + 1..(at + 1).checked_add(len)?)?;
    *rest = &bytes[at + 1 + len..];
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(member: &str, rank: f64) -> Share {
        Share { member: member.into(), rank, value: Bytes::from(vec![0, 255, b':', 7]) }
    }

    #[test]
    fn shares_roundtrip_and_garbage_is_refused() {
        let s = Shares { members: 5, top: vec![share("b", 3.25), share("a", f64::NEG_INFINITY), share("c", 1e300)] };
        assert_eq!(Shares::decode(&s.encode()), Some(s));
        assert_eq!(Shares::decode(b""), None);
        assert_eq!(Shares::decode(b"2:s1"), None, "no count");
        assert_eq!(Shares::decode(b"2:s11:3"), Some(Shares { members: 3, top: vec![] }));
        assert_eq!(Shares::decode(b"2:s11:31:a3:NaN0:"), None, "NaN rank");
        assert_eq!(Shares::decode(b"2:s11:31:a1:1"), None, "cut short");
        assert_eq!(Shares::decode(b"2:x11:3"), None);
        assert_eq!(Shares::decode(b"99999999999999999999:s1"), None);
    }

    #[test]
    fn decoding_in_place_reads_what_decode_reads() {
        let a = Shares { members: 5, top: vec![share("b", 3.25), share("a", f64::NEG_INFINITY), share("c", 1e300)] };
        let b = Shares {
            members: 2,
            top: vec![
                share("a", 1.0),
                Share { member: "longer-member".into(), rank: 0.5, value: Bytes::from_static(b"other value") },
            ],
        };
        let mut into = Shares::default();
        for want in [&a, &b, &a, &Shares { members: 3, top: vec![] }, &b] {
            assert!(into.decode_into(&want.encode()));
            assert_eq!(&into, want);
        }
        for bad in [&b""[..], b"2:s1", b"2:s11:31:a3:NaN0:", b"2:s11:31:a1:1", b"2:x11:3", b"2:s11:30:1:10:"] {
            assert_eq!(Shares::decode(bad), None);
            assert!(!into.decode_into(bad), "{bad:?}");
        }
        // A value shared with someone else is never written over.
        assert!(into.decode_into(&a.encode()));
        let held = into.top[0].value.clone();
        let mut c = a.clone();
        c.top[0].value = Bytes::from(vec![9, 9, 9, 9]);
        assert!(into.decode_into(&c.encode()));
        assert_eq!((held, &into), (share("b", 0.0).value, &c));
    }

    #[test]
    fn the_best_share_skips_excluded_members_and_knows_when_the_prefix_is_not_enough() {
        let mut s = Shares { members: 3, top: vec![share("a", 9.0), share("b", 5.0)] };
        assert!(matches!(s.best(|_| true), Best::Found(x) if x.member == "a"));
        assert!(matches!(s.best(|m| m != "a"), Best::Found(x) if x.member == "b"));
        assert_eq!(s.best(|m| m == "c"), Best::Incomplete, "c is the unlisted third");
        s.members = 2;
        s.upsert(share("c", 7.0));
        assert!(s.complete());
        assert!(matches!(s.best(|m| m == "c"), Best::Found(x) if x.member == "c"));
        assert_eq!(s.best(|_| false), Best::None);
        s.upsert(share("a", 1.0));
        assert_eq!(s.members, 3);
        assert_eq!(s.top.iter().map(|x| x.member.as_str()).collect::<Vec<_>>(), ["c", "b", "a"]);
    }

    #[test]
    fn the_top_two_are_the_first_two_ranked() {
        let lists: [&[(&str, f64)]; 6] = [
            &[],
            &[("a", 1.0)],
            &[("a", 1.0), ("b", 2.0)],
            &[("a", 3.0), ("c", 3.0), ("b", 3.0), ("d", 9.0)],
            &[("x", f64::NEG_INFINITY), ("y", 0.5), ("z", 0.5), ("w", 0.25)],
            &[("a", 1.0), ("a", 1.0), ("b", 0.0)],
        ];
        for list in lists {
            let s = Shares { members: 9, top: list.iter().map(|&(m, r)| share(m, r)).collect() };
            let ranked = s.ranked();
            let (a, b) = s.top_two();
            assert!(a.map(std::ptr::from_ref) == ranked.first().map(|x| std::ptr::from_ref(*x)), "{list:?}");
            assert!(b.map(std::ptr::from_ref) == ranked.get(1).map(|x| std::ptr::from_ref(*x)), "{list:?}");
        }
    }

    #[test]
    fn token_lengths_read_as_usize_from_str_reads_them() {
        for text in ["0", "7", "42", "+5", "-5", "+", "", "1a", " 1", "99999999999", "00012", "٣", "0000000009"] {
            // A token of that many bytes (when few) reads whole; any other length is refused
            // (the longest is cut short).
            let want = text.parse::<usize>().ok().filter(|&n| n < 100);
            let mut token = format!("{text}:").into_bytes();
            token.extend(std::iter::repeat_n(b'x', want.unwrap_or(0)));
            let got = next_token(&mut &token[..]).map(<[u8]>::len);
            assert_eq!(got, want, "{text:?}");
        }
        // The length and its colon are within the first 12 bytes.
        assert_eq!(next_token(&mut &b"00000000003:abc"[..]), Some(&b"abc"[..]));
        assert_eq!(next_token(&mut &b"000000000003:abc"[..]), None);
        let mut rest = &b"3:abc0:2:xy"[..];
        assert_eq!(
            (next_token(&mut rest), next_token(&mut rest), next_token(&mut rest), next_token(&mut rest)),
            (Some(&b"abc"[..]), Some(&b""[..]), Some(&b"xy"[..]), None)
        );
        assert_eq!(next_token(&mut &b"5:abc"[..]), None, "cut short");
    }

    #[test]
    fn ranks_read_back_exactly() {
        for r in [0.1, -3.5e-300, 1.7e12 + 0.123, f64::INFINITY, f64::NEG_INFINITY, f64::MAX] {
            assert_eq!(parse_rank(format_rank(r).as_bytes()), Some(r));
        }
        assert_eq!(parse_rank(b"nan"), None);
        // PostgreSQL's `float8::text`.
        assert_eq!(parse_rank(b"-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_rank(b"1.7000000000000001e+18"), Some(1.7e18));
    }
}
