//! # atrion-crypt
//!
//! Encryption at rest for any Atrion store: [`EncryptedStore`] wraps a
//! [`StateStore`](atrion_state::StateStore)
//! (memory, file, Redis, PostgreSQL, the [`atrion_state::StateService`]) and implements the
//! same port, so everything above it (the cluster sync, the policy layer, the audit log,
//! the history of applied changes) reads and writes plain values while the backend holds
//! only sealed ones. A backup taken through it (`StateService::backup`, the sidecar's
//! `GET /v1/admin/backup`) is sealed with the same keys
//! ([`StateStore::backup_seal`](atrion_state::StateStore::backup_seal),
//! [`atrion_state::BackupWriter`]); a restore through it opens sealed backups and still
//! reads plain ones.
//!
//! - **Values** are sealed with XChaCha20-Poly1305 (random 24-byte nonce) in an envelope
//!   that carries a format byte, flags and the id of the key that sealed it
//!   ([`envelope`]); the stored key is authenticated with it (a value moved to another key
//!   does not open).
//! - **Key names** that carry data (route names, client ids) are replaced by their keyed
//!   hash (HMAC-SHA256 under a names key derived from the first key of the ring): stable,
//!   so the store can still address them; the real name is sealed inside the value, so a
//!   listing and the change feed return real names. The namespace and family
//!   (`atrion/route/`, up to [`CryptOptions::clear_segments`] plain segments) stay
//!   readable, so that a listing by family reads only that family. A key of a slot group
//!   (`{group}rest`) is stored as `{HMAC(group)}~HMAC(key)`: one group stays in one slot.
//! - **Keys** come from a key file or an environment variable ([`Keyring`]), never a flag.
//!   The newest seals, every key opens what it sealed, [`reencrypt`] moves old values to
//!   the newest (progress; idempotent, so a re-run resumes).
//! - **Start**: [`EncryptedStore::open`] checks the ring against a sealed canary and refuses
//!   with [`CryptError`] naming the key id when the key is missing or wrong; it refuses a
//!   store that holds unencrypted data. It never starts empty over data it cannot read.
//! - **Compression**: a value's body above [`CryptOptions::compress_above`] is compressed
//!   with zstd before sealing, flagged per value (values written without it still read).
//!
//! What is not protected: values in the process's memory, the process's own logs, the
//! readable head of key names (namespace and family), sizes and timing of values and
//! writes, ranks of shares kept natively by a backend, versions and TTLs.
//!
//! ```
//! use std::sync::Arc;
//! use atrion_crypt::{CryptOptions, EncryptedStore, Keyring};
//! use atrion_state::{InMemoryStore, StateStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let ring = Keyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "example")?;
//! let inner = Arc::new(InMemoryStore::new());
//! let store = EncryptedStore::open(inner.clone(), Arc::new(ring), CryptOptions::default()).await?;
//! store.set("atrion/route/GET /patients/12345", "scarred".into()).await?;
//! assert_eq!(store.list_keys("atrion/route/").await?, ["atrion/route/GET /patients/12345"]);
//! assert!(inner.list_keys("").await?.iter().all(|k| !k.contains("patients")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod envelope;
mod keys;
mod rotate;
mod store;

pub use keys::{KEYS_ENV, KeyError, Keyring, MAX_KEY_ID_LEN};
pub use rotate::{ReencryptReport, reencrypt};
pub use store::{CANARY_KEY, CryptError, CryptOptions, DEFAULT_COMPRESS_ABOVE, EncryptedStore};
