//! Groups: several writes to several keys, with preconditions on versions, applied all or
//! none ([`crate::StateStore::transact`]).
//!
//! ```
//! use atrion_state::{ErrorKind, Group, InMemoryStore, StateStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let v = store.set("{acct}/a", "10".into()).await?;
//! // Move 5 from a to b, only if a is still at the version read.
//! let moved = Group::new().check("{acct}/a", Some(v)).put("{acct}/a", "5".into(), None).put("{acct}/b", "5".into(), None);
//! let versions = store.transact(moved.clone()).await?;
//! assert_eq!(versions.len(), 2);
//! // The same group again: `a` has moved on, so nothing is written.
//! let e = store.transact(moved).await.unwrap_err();
//! assert!(matches!(e.kind, ErrorKind::PreconditionFailed { expected: Some(_), found: Some(_) }));
//! assert_eq!(e.key.as_deref(), Some("{acct}/a"));
//! # Ok::<(), atrion_state::StoreError>(())
//! # }).unwrap();
//! ```

use std::time::Duration;

use bytes::Bytes;

use crate::error::{ErrorKind, Op, StoreError};
use crate::store::{check_key, check_value};

/// One write of a [`Group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupWrite {
    /// Writes `value` under `key`, expiring after `ttl` if given.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Its time to live.
        ttl: Option<Duration>,
    },
    /// Deletes `key` (nothing to delete is not an error).
    Delete {
        /// The key.
        key: String,
    },
}

impl GroupWrite {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            GroupWrite::Put { key, .. } | GroupWrite::Delete { key } => key,
        }
    }
}

/// A precondition of a [`Group`]: `key`'s live version is `version` (`None`: the key is
/// absent), as [`crate::StateStore::compare_and_swap`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precondition {
    /// The key.
    pub key: String,
    /// The version it must have (`None`: it must not exist).
    pub version: Option<u64>,
}

/// An atomic group of writes with preconditions: [`crate::StateStore::transact`] checks
/// every precondition and applies every write, in order, as one step that no other write
/// and no reader sees half of; or, when a precondition fails, writes nothing.
///
/// On a backend that shards by key (a Redis Cluster, [`crate::Capabilities::one_slot_groups`])
/// every key of a group (checked or written) must name the same slot group: keys written
/// `{group}rest` ([`slot_group`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The preconditions, all checked before anything is written.
    pub checks: Vec<Precondition>,
    /// The writes, applied in order (a key written twice keeps the last).
    pub writes: Vec<GroupWrite>,
}

impl Group {
    /// An empty group.
    pub fn new() -> Self {
        Group::default()
    }

    /// Adds a precondition: `key` at `version` (`None`: absent).
    pub fn check(mut self, key: impl Into<String>, version: Option<u64>) -> Self {
        self.checks.push(Precondition { key: key.into(), version });
        self
    }

    /// Adds a write of `value` under `key`.
    pub fn put(mut self, key: impl Into<String>, value: Bytes, ttl: Option<Duration>) -> Self {
        self.writes.push(GroupWrite::Put { key: key.into(), value, ttl });
        self
    }

    /// Adds a delete of `key`.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.writes.push(GroupWrite::Delete { key: key.into() });
        self
    }

    /// Whether the group has neither preconditions nor writes.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty() && self.writes.is_empty()
    }

    /// Every key of the group, checked ones first, then written ones (repeats included).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().map(|c| c.key.as_str()).chain(self.writes.iter().map(GroupWrite::key))
    }

    /// Checks every key and value against the port's rules, for adapters: before anything
    /// is written, so that a refused group writes nothing.
    pub fn validate(&self, backend: &'static str) -> Result<(), StoreError> {
        for key in self.keys() {
            check_key(backend, Op::Transact, key)?;
        }
        for w in &self.writes {
            if let GroupWrite::Put { key, value, .. } = w {
                check_value(backend, Op::Transact, key, value)?;
            }
        }
        Ok(())
    }

    /// For a backend whose groups must stay in one slot group ([`slot_group`]): the error
    /// naming two keys' differing slot groups, if any.
    pub fn check_one_slot(&self, backend: &'static str) -> Result<(), StoreError> {
        let mut keys = self.keys();
        let Some(first) = keys.next() else { return Ok(()) };
        let tag = slot_group(first);
        match keys.find(|k| slot_group(k) != tag) {
            None => Ok(()),
            Some(other) => Err(StoreError::new(
                backend,
                Op::Transact,
                Some(other),
                ErrorKind::GroupSpansSlots {
                    first: slot_group(first).to_owned(),
                    second: slot_group(other).to_owned(),
                },
            )),
        }
    }

    /// The error of a failed precondition.
    pub fn failed(backend: &'static str, check: &Precondition, found: Option<u64>) -> StoreError {
        StoreError::new(
            backend,
            Op::Transact,
            Some(&check.key),
            ErrorKind::PreconditionFailed { expected: check.version, found },
        )
    }
}

/// The slot group a key names: the text between a leading `{` and the first `}`, when both
/// it and the rest after the `}` are not empty (`{policy}/desired` → `policy`); otherwise
/// the whole key (a key that names no group is a group of its own). A backend that shards by
/// key keeps the keys of one slot group together, so that a [`Group`] over them is one
/// atomic step there. No key of a namespace ([`crate::family_prefix`]) starts with `{`: a
/// namespace cannot contain one.
pub fn slot_group(key: &str) -> &str {
    split_slot_group(key).map_or(key, |(group, _)| group)
}

/// `(group, rest)` of a key that names a slot group ([`slot_group`]), else `None`.
pub fn split_slot_group(key: &str) -> Option<(&str, &str)> {
    let inner = key.strip_prefix('{')?;
    let end = inner.find('}')?;
    let (group, rest) = (&inner[..end], &inner[end + 1..]);
    (!group.is_empty() && !rest.is_empty()).then_some((group, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_groups_are_the_leading_braces_with_something_after() {
        assert_eq!(split_slot_group("{policy}/desired"), Some(("policy", "/desired")));
        assert_eq!(slot_group("{a{b}c"), "a{b");
        for whole in ["plain/key", "{}x", "{g}", "{open", "x{g}y", "atrion/route/GET /u/{id}"] {
            assert_eq!(slot_group(whole), whole, "{whole}");
        }
        let g = Group::new().check("{g}/a", None).put("{g}/b", Bytes::new(), None).delete("{g}/c");
        assert!(g.check_one_slot("test").is_ok());
        let e = g.clone().put("{h}/d", Bytes::new(), None).check_one_slot("test").unwrap_err();
        assert_eq!(e.kind, ErrorKind::GroupSpansSlots { first: "g".into(), second: "h".into() });
        assert_eq!(e.key.as_deref(), Some("{h}/d"));
        assert!(e.to_string().contains("`g` and `h` differ"), "{e}");
        let e = Group::failed("memory", &Precondition { key: "k".into(), version: Some(3) }, None);
        assert_eq!(e.to_string(), "memory store: transact `k`: precondition failed: expected version 3, found absent");
    }
}
