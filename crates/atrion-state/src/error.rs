//! Errors of the state port: they name the backend, the operation and the key, and keep
//! their source.

use std::fmt;

/// A boxed error from a driver or the file system.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The store operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is the method of the same name
pub enum Op {
    Open,
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    BatchGet,
    BatchSet,
    BatchDelete,
    CompareAndSwap,
    Stats,
    Cleanup,
    Subscribe,
    PutShares,
    GetShares,
    ListShares,
    Transact,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::ListKeys => "list_keys",
            Op::BatchGet => "batch_get",
            Op::BatchSet => "batch_set",
            Op::BatchDelete => "batch_delete",
            Op::CompareAndSwap => "compare_and_swap",
            Op::Stats => "stats",
            Op::Cleanup => "cleanup",
            Op::Subscribe => "subscribe",
            Op::PutShares => "put_shares",
            Op::GetShares => "shares",
            Op::ListShares => "list_shares",
            Op::Transact => "transact",
        })
    }
}

/// What went wrong, independent of the backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key is empty, too long, or otherwise unusable.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A share's member or rank is unusable ([`crate::check_share`]).
    #[error("invalid share: {0}")]
    InvalidShare(&'static str),
    /// The value is larger than the store accepts.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Bytes given.
        len: usize,
        /// Largest accepted.
        max: usize,
    },
    /// The backend cannot be reached (connection refused, closed, ...).
    #[error("backend unavailable")]
    Unavailable,
    /// The backend did not answer in time.
    #[error("timed out")]
    Timeout,
    /// Stored bytes or metadata are damaged.
    #[error("corrupt data")]
    Corrupt,
    /// The backend does not support this operation (see `Capabilities`).
    #[error("not supported by this backend")]
    Unsupported,
    /// Compare-and-swap kept losing to concurrent writers.
    #[error("gave up after {0} conflicting attempts")]
    Contended(u32),
    /// Invalid configuration of the backend.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A precondition of a group ([`crate::StateStore::transact`]) did not hold: the key
    /// (the error's key) was not at the expected version, and nothing was written.
    #[error("precondition failed: expected {}, found {}", version_text(*.expected), version_text(*.found))]
    PreconditionFailed {
        /// The version the group expected (`None`: the key absent).
        expected: Option<u64>,
        /// The version found (`None`: the key absent).
        found: Option<u64>,
    },
    /// A group's keys name different slot groups on a backend that shards by key (a Redis
    /// Cluster): a group's keys must share one, written `{group}rest`
    /// ([`crate::slot_group`]). Nothing was written.
    #[error(
        "a group's keys must share one slot group (`{{group}}rest`) on this backend: `{first}` and `{second}` differ"
    )]
    GroupSpansSlots {
        /// The slot group of the group's first key.
        first: String,
        /// A slot group that differs from it.
        second: String,
    },
    /// Any other failure of the backend.
    #[error("backend error")]
    Backend,
}

fn version_text(v: Option<u64>) -> String {
    v.map_or_else(|| "absent".to_owned(), |v| format!("version {v}"))
}

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[error("{backend} store: {op}{}: {kind}", key.as_deref().map(|k| format!(" `{k}`")).unwrap_or_default())]
pub struct StoreError {
    /// The backend (`memory`, `file`, `redis`, ...).
    pub backend: &'static str,
    /// The operation.
    pub op: Op,
    /// The key, where the operation had one.
    pub key: Option<String>,
    /// What went wrong.
    pub kind: ErrorKind,
    /// The driver's own error.
    #[source]
    pub source: Option<BoxError>,
}

impl StoreError {
    /// An error without a source. A key longer than [`StoreError::KEY_EXCERPT`] bytes is
    /// kept as its first characters and `…`, cut on a character boundary.
    pub fn new(backend: &'static str, op: Op, key: Option<&str>, kind: ErrorKind) -> Self {
        StoreError { backend, op, key: key.map(excerpt), kind, source: None }
    }

    /// The most bytes of a key an error keeps.
    pub const KEY_EXCERPT: usize = 128;

    /// Attaches the driver's error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }
}

fn excerpt(key: &str) -> String {
    if key.len() <= StoreError::KEY_EXCERPT {
        return key.to_owned();
    }
    // (`str::floor_char_boundary` is newer than the workspace's MSRV.)
    let end = (0..=StoreError::KEY_EXCERPT).rev().find(|&i| key.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", &key[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_cut_on_a_character_boundary() {
        let key = "é".repeat(600);
        let e = StoreError::new("memory", Op::Get, Some(&key), ErrorKind::InvalidKey("longer than 1024 bytes"));
        let kept = e.key.unwrap();
        assert!(kept.ends_with('…') && kept.len() <= StoreError::KEY_EXCERPT + '…'.len_utf8(), "{kept}");
        assert_eq!(StoreError::new("memory", Op::Get, Some("short"), ErrorKind::Corrupt).key.as_deref(), Some("short"));
    }

    #[test]
    fn message_names_backend_op_key_and_keeps_source() {
        let io = std::io::Error::other("disk on fire");
        let e = StoreError::new("file", Op::Set, Some("ns/route/a"), ErrorKind::Backend).with_source(io);
        assert_eq!(e.to_string(), "file store: set `ns/route/a`: backend error");
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "disk on fire");
        let e = StoreError::new("memory", Op::Stats, None, ErrorKind::Unavailable);
        assert_eq!(e.to_string(), "memory store: stats: backend unavailable");
    }
}
