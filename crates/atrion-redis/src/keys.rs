//! How the store spells its Redis keys and script arguments: a user's key escaped as the
//! hash tag of its entry, version counter and shares (one slot each), the namespace's
//! channel, and ranks written on the stack as the scripts read them.

use atrion_state::split_slot_group;

use crate::RedisStore;

impl RedisStore {
    pub(crate) fn channel(&self) -> String {
        format!("{}:changes", self.cfg.namespace)
    }

    pub(crate) fn entries_prefix(&self) -> String {
        format!("{}:e:", self.cfg.namespace)
    }

    /// `{ns}:{a}:{key}` and `{ns}:{b}:{key}`, the key escaped as their hash tag: one slot.
    /// A key that names a slot group (`{group}rest`, [`atrion_state::slot_group`]) is
    /// spelled `{ns}:{a}:{group}rest`, both escaped: the group is the hash tag, so that
    /// every key of a group is in one slot (what a group, `transact`, needs on a cluster).
    pub(crate) fn slot_pair(&self, key: &str, a: &str, b: &str) -> (String, String) {
        // Built by hand: this runs twice per share of every pulse (`format!` cost a sixth of
        // a pulse's push).
        let mut tail = String::with_capacity(key.len() + 3);
        slot_tail(&mut tail, key);
        let ns = &self.cfg.namespace;
        let build = |family: &str| {
            let mut out = String::with_capacity(ns.len() + family.len() + tail.len() + 1);
            self.push_slot_key(&mut out, family, &tail);
            out
        };
        (build(a), build(b))
    }

    /// Appends `{ns}:{family}` and `tail` ([`slot_tail`]) to `out`: one of
    /// [`Self::slot_pair`]'s keys, built in a buffer the caller reuses.
    pub(crate) fn push_slot_key(&self, out: &mut String, family: &str, tail: &str) {
        out.push_str(&self.cfg.namespace);
        out.push(':');
        out.push_str(family);
        out.push_str(tail);
    }

    /// `key`'s entry and its version counter, in one slot.
    pub(crate) fn redis_keys(&self, key: &str) -> (String, String) {
        self.slot_pair(key, "e", "v")
    }

    pub(crate) fn redis_key(&self, key: &str) -> String {
        self.redis_keys(key).0
    }

    pub(crate) fn user_key(&self, rk: &str) -> Option<String> {
        user_key(&self.entries_prefix(), rk)
    }

    /// The hash of values and the sorted set of ranks of `key`'s shares, in one slot.
    pub(crate) fn share_keys(&self, key: &str) -> (String, String) {
        self.slot_pair(key, SHARE_VALUES, SHARE_RANKS)
    }
}

/// `key` with `%`, `{` and `}` escaped (`%25`, `%7B`, `%7D`), to be a hash tag: the keys
/// built around one tag share a slot. (The keys are built with [`push_escaped_tag`].)
#[cfg(test)]
pub(crate) fn escape_tag(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    push_escaped_tag(&mut out, key);
    out
}

/// The family of a key's hash of share values ([`RedisStore::share_keys`]).
pub(crate) const SHARE_VALUES: &str = "sv";
/// The family of a key's sorted set of share ranks ([`RedisStore::share_keys`]).
pub(crate) const SHARE_RANKS: &str = "sr";

/// Sets `out` to what follows the family in [`RedisStore::slot_pair`]'s keys of `key`:
/// `:{key}`, or `:{group}rest` for a key that names a slot group, escaped.
pub(crate) fn slot_tail(out: &mut String, key: &str) {
    let (tag, rest) = split_slot_group(key).unwrap_or((key, ""));
    out.clear();
    out.push_str(":{");
    push_escaped_tag(out, tag);
    out.push('}');
    push_escaped_tag(out, rest);
}

/// Appends `key` with `%`, `{` and `}` escaped (`%25`, `%7B`, `%7D`) to `out`: a hash tag.
pub(crate) fn push_escaped_tag(out: &mut String, key: &str) {
    let mut rest = key;
    // A byte search (the three are ASCII, never inside a multi-byte character): `str::find`
    // with a set of chars decoded every character, a tenth of a pulse's push.
    while let Some(i) = rest.bytes().position(|b| matches!(b, b'%' | b'{' | b'}')) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'%' => "%25",
            b'{' => "%7B",
            _ => "%7D",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// A rank as text Redis (and [`atrion_state::shares::parse_rank`]) reads back exactly: its
/// shortest round-trip form (`0.1`, `1e300`; `inf`, `-inf`), on the stack (no allocation per
/// share). The same number as [`atrion_state::shares::format_rank`]'s, not always the same text.
#[derive(Default)]
pub(crate) struct RankText {
    buf: ryu::Buffer,
}

impl RankText {
    pub(crate) fn of(&mut self, rank: f64) -> &[u8] {
        if rank.is_finite() {
            self.buf.format_finite(rank).as_bytes()
        } else if rank > 0.0 {
            b"inf"
        } else if rank < 0.0 {
            b"-inf"
        } else {
            b"nan" // never a rank (a share's is checked before it is written)
        }
    }
}

/// The inverse of [`escape_tag`]; `None` for a tag it cannot have built.
pub(crate) fn unescape_tag(tag: &str) -> Option<String> {
    if tag.contains(['{', '}']) {
        return None;
    }
    let mut out = String::with_capacity(tag.len());
    let mut rest = tag;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        out.push(match rest.get(i + 1..i + 3)? {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The user's key of an entry's Redis key: `{prefix}{escaped key}`, or
/// `{prefix}{escaped group}escaped rest` for a key `{group}rest` that names a slot group.
pub(crate) fn user_key(prefix: &str, redis_key: &str) -> Option<String> {
    let tagged = redis_key.strip_prefix(prefix)?.strip_prefix('{')?;
    let end = tagged.find('}')?;
    let (tag, rest) = (&tagged[..end], &tagged[end + 1..]);
    if rest.is_empty() {
        return unescape_tag(tag);
    }
    let (group, rest) = (unescape_tag(tag)?, unescape_tag(rest)?);
    let key = format!("{{{group}}}{rest}");
    // Only what `slot_pair` can have built: the same group read back.
    (split_slot_group(&key) == Some((group.as_str(), rest.as_str()))).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrion_state::shares::format_rank;

    #[test]
    fn ranks_are_written_on_the_stack_as_the_numbers_format_rank_writes() {
        for r in [
            0.0,
            -0.0,
            0.1,
            -3.5e-300,
            1.7e12 + 0.123,
            1e15 + 8.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
        ] {
            let text = RankText::default().of(r).to_vec();
            let back = atrion_state::shares::parse_rank(&text).unwrap();
            assert_eq!(back.to_bits(), r.to_bits(), "{r}: {:?}", String::from_utf8_lossy(&text));
            assert_eq!(Some(back), atrion_state::shares::parse_rank(format_rank(r).as_bytes()));
        }
        // The shortest form, as Redis reads a score.
        assert_eq!(RankText::default().of(0.1), b"0.1");
        assert_eq!(RankText::default().of(f64::NEG_INFINITY), b"-inf");
    }

    #[test]
    fn tags_escape_braces_and_come_back() {
        for key in ["ns/route/GET /a", "a{b}c", "100%", "%7B", "{}", "", "ns/node/n1", "é{ü}%ß"] {
            let tag = escape_tag(key);
            assert_eq!(tag, key.replace('%', "%25").replace('{', "%7B").replace('}', "%7D"));
            assert!(!tag.contains(['{', '}']), "{tag}");
            assert_eq!(unescape_tag(&tag).as_deref(), Some(key));
            assert_eq!(user_key("ns:e:", &format!("ns:e:{{{tag}}}")).as_deref(), Some(key));
        }
        assert_eq!(unescape_tag("%zz"), None);
        assert_eq!(unescape_tag("%7"), None);
        assert_eq!(user_key("ns:e:", "other:e:{x}"), None);
        assert_eq!(user_key("ns:e:", "ns:e:{x}rest").as_deref(), Some("{x}rest"));
        assert_eq!(user_key("ns:e:", "ns:e:{x}re}st"), None);
        assert_eq!(user_key("ns:e:", "ns:e:{}rest"), None, "an empty group is never built");
    }
}
