//! How the store spells its Redis keys and script arguments: a user's key escaped as the
//! hash tag of its entry, version counter and shares (one slot each), the namespace's
//! channel, and ranks written on the stack as the scripts read them.

use atrion_state::shares::format_rank;
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
        let ns = &self.cfg.namespace;
        let (tag, rest) = split_slot_group(key).unwrap_or((key, ""));
        let build = |family: &str| {
            let mut out = String::with_capacity(ns.len() + family.len() + key.len() + 4);
            out.push_str(ns);
            out.push(':');
            out.push_str(family);
            out.push_str(":{");
            push_escaped_tag(&mut out, tag);
            out.push('}');
            push_escaped_tag(&mut out, rest);
            out
        };
        (build(a), build(b))
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
        self.slot_pair(key, "sv", "sr")
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

/// Appends `key` with `%`, `{` and `}` escaped (`%25`, `%7B`, `%7D`) to `out`: a hash tag.
pub(crate) fn push_escaped_tag(out: &mut String, key: &str) {
    let mut rest = key;
    while let Some(i) = rest.find(['%', '{', '}']) {
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

/// A rank as [`format_rank`] writes it, on the stack (no allocation per share).
pub(crate) struct RankText {
    buf: [u8; 64],
    /// Where a rank that would not fit goes (none does: a f64's shortest form is at most
    /// 24 bytes).
    spill: String,
}

impl Default for RankText {
    fn default() -> Self {
        RankText { buf: [0; 64], spill: String::new() }
    }
}

impl RankText {
    pub(crate) fn of(&mut self, rank: f64) -> &[u8] {
        use std::io::Write;
        let mut at = &mut self.buf[..];
        let fits = if rank.is_infinite() {
            at.write_all(if rank > 0.0 { b"inf" } else { b"-inf" })
        } else {
            write!(at, "{rank:?}")
        };
        if fits.is_ok() {
            let n = 64 - at.len();
            &self.buf[..n]
        } else {
            self.spill = format_rank(rank);
            self.spill.as_bytes()
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

    #[test]
    fn ranks_are_written_on_the_stack_as_format_rank_writes_them() {
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
            assert_eq!(RankText::default().of(r), format_rank(r).as_bytes(), "{r}");
        }
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
