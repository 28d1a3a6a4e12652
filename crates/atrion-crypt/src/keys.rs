//! Keys: where they come from (a key file, an environment variable) and the key ring built
//! from them.
//!
//! # Key file format
//!
//! ```text
//! # comments and blank lines are ignored
//! 2026-01:q0Yx3bq7m9bC1sJ8fSx1r2fQ9m6w2Q5y0H0t7mYzJ2o=
//! 2026-06:Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=
//! ```
//!
//! One key a line, `id:key`: the id is 1 to 32 of `[A-Za-z0-9._-]` (it is stored beside
//! every value, so that a reader knows which key sealed it); the key is 32 bytes in standard
//! base64 (`openssl rand -base64 32`). **Newest last**: the last key seals every new write;
//! every key of the file opens what it sealed (rotation). The **first** key also names the
//! keys (keyed hashes of key names, [`crate::EncryptedStore`]): keep it in the file as long
//! as the store holds data written with it (see the crate's notes on rotation). To retire
//! it, add the new key last, take a backup (sealed with the newest key), and restore it
//! into a new store whose key file holds the new key only.
//!
//! The environment variable (by convention `ATRION_ENCRYPTION_KEYS`) holds the same lines,
//! separated by newlines or `;`. Keys are never given as a flag's value (they would show in
//! the process list and the shell's history).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The environment variable [`Keyring::from_env`] reads by convention.
pub const KEYS_ENV: &str = "ATRION_ENCRYPTION_KEYS";

/// The longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 32;

/// A key file or key variable that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read the key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set (or not Unicode).
    #[error("the environment variable {0} is not set")]
    NoVariable(String),
    /// A line is not `id:base64key` with a valid id and a 32-byte key.
    #[error("{origin}, line {line}: {problem}")]
    Line {
        /// The file or variable.
        origin: String,
        /// 1-based.
        line: usize,
        /// What is wrong (never the key itself).
        problem: String,
    },
    /// Two lines give the same id.
    #[error("{origin}: the key id `{id}` appears twice")]
    DuplicateId {
        /// The file or variable.
        origin: String,
        /// The id.
        id: String,
    },
    /// No key at all.
    #[error("{0}: no key (expected lines `id:base64key`, newest last)")]
    Empty(String),
}

/// One key of a [`Keyring`].
pub(crate) struct Key {
    pub(crate) id: String,
    pub(crate) cipher: XChaCha20Poly1305,
}

/// The keys a store is sealed with: every key opens what it sealed, the newest seals new
/// writes, the first names keys. Never printed (its `Debug` shows the ids only).
pub struct Keyring {
    /// Oldest first.
    pub(crate) keys: Vec<Key>,
    /// HMAC-SHA256 keyed with the names key (derived from the first key), ready to clone.
    pub(crate) names: Hmac<Sha256>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Keyring {
    /// A ring of `(id, key)` pairs, oldest first (the last seals new writes).
    pub fn new(keys: Vec<(String, [u8; 32])>) -> Result<Self, KeyError> {
        Self::build(keys, "keys")
    }

    fn build(keys: Vec<(String, [u8; 32])>, origin: &str) -> Result<Self, KeyError> {
        let Some((_, first)) = keys.first() else { return Err(KeyError::Empty(origin.to_owned())) };
        // The names key: HMAC of a fixed label under the first key (apart from the AEAD's use
        // of the same bytes).
        let mut derive = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(first).expect("HMAC takes any key length");
        derive.update(b"atrion-crypt names v1");
        let names_key = derive.finalize().into_bytes();
        let names = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&names_key).expect("HMAC takes any key length");
        let mut out: Vec<Key> = Vec::with_capacity(keys.len());
        for (i, (id, key)) in keys.into_iter().enumerate() {
            if !valid_id(&id) {
                return Err(KeyError::Line {
                    origin: origin.to_owned(),
                    line: i + 1,
                    problem: format!("a key id is 1 to {MAX_KEY_ID_LEN} of [A-Za-z0-9._-], got {id:?}"),
                });
            }
            if out.iter().any(|k| k.id == id) {
                return Err(KeyError::DuplicateId { origin: origin.to_owned(), id });
            }
            out.push(Key { id, cipher: XChaCha20Poly1305::new(&key.into()) });
        }
        Ok(Keyring { keys: out, names })
    }

    /// Reads lines `id:base64key` (see the module's doc); `origin` names them in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.split(['\n', ';']).enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: String| KeyError::Line { origin: origin.to_owned(), line: i + 1, problem };
            let Some((id, b64)) = line.split_once(':') else {
                return Err(bad("expected `id:base64key`".into()));
            };
            let (id, b64) = (id.trim(), b64.trim());
            if !valid_id(id) {
                return Err(bad(format!("a key id is 1 to {MAX_KEY_ID_LEN} of [A-Za-z0-9._-], got {id:?}")));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad(format!("the key of `{id}` is not standard base64")))?;
            let key: [u8; 32] = raw
                .try_into()
                .map_err(|raw: Vec<u8>| bad(format!("the key of `{id}` is {} bytes, not 32", raw.len())))?;
            keys.push((id.to_owned(), key));
        }
        Self::build(keys, origin)
    }

    /// Reads a key file (see the module's doc). Warns when others than its owner may read it.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the encryption key file can be read by others than its owner (chmod 600)");
            }
        }
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads the keys from the environment variable `var` (lines separated by newlines or
    /// `;`); [`KEYS_ENV`] by convention.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let text = std::env::var(var).map_err(|_| KeyError::NoVariable(var.to_owned()))?;
        Self::parse(&text, &format!("${var}"))
    }

    /// The key ids, oldest first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key that seals new writes (the last).
    pub fn newest_id(&self) -> &str {
        &self.keys.last().expect("a ring has a key").id
    }

    /// The id of the key that names keys (the first).
    pub fn names_id(&self) -> &str {
        &self.keys[0].id
    }

    pub(crate) fn newest(&self) -> &Key {
        self.keys.last().expect("a ring has a key")
    }

    pub(crate) fn find(&self, id: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.id.as_bytes() == id)
    }

    /// HMAC-SHA256 of `label` and `data` under the names key.
    pub(crate) fn name_mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = self.names.clone();
        mac.update(&[label.len() as u8]);
        mac.update(label);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn key_lines_are_read_newest_last_and_bad_ones_are_named() {
        let ring = Keyring::parse(&format!("# keys\n\nold:{K1}\nnew : {K1}\n"), "f").unwrap();
        assert_eq!((ring.ids(), ring.newest_id(), ring.names_id()), (vec!["old", "new"], "new", "old"));
        assert!(!format!("{ring:?}").contains(K1), "a ring never prints its keys");
        let ring = Keyring::parse(&format!("a:{K1};b:{K1}"), "$V").unwrap();
        assert_eq!(ring.ids(), ["a", "b"]);
        for (text, needle) in [
            ("", "no key"),
            ("justakey", "line 1: expected `id:base64key`"),
            ("a b:AAAA", "key id"),
            ("a:%%%", "not standard base64"),
            ("a:AAAA", "3 bytes, not 32"),
        ] {
            let e = Keyring::parse(text, "f").unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let e = Keyring::parse(&format!("a:{K1}\na:{K1}"), "f").unwrap_err();
        assert!(matches!(e, KeyError::DuplicateId { ref id, .. } if id == "a"), "{e}");
        let e = Keyring::from_env("ATRION_TEST_NO_SUCH_VARIABLE").unwrap_err();
        assert!(matches!(e, KeyError::NoVariable(_)), "{e}");
        let e = Keyring::from_file(Path::new("/nonexistent/keys")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/keys"), "{e}");
    }
}
