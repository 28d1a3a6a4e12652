//! The sealed envelope of one stored value.
//!
//! ```text
//! byte 0       format: 0xA7 (version 1)
//! byte 1       flags: bit 0 = the body is zstd-compressed; other bits 0
//! byte 2       n = length of the key id (1..=32)
//! 3 .. 3+n     key id (ASCII)
//! next 24      nonce (random, XChaCha20)
//! rest         XChaCha20-Poly1305 ciphertext of the body, with its 16-byte tag
//! ```
//!
//! The associated data is the header (bytes 0 .. 3+n, so the flags and key id are
//! authenticated) followed by the stored key: a value moved to another key does not open.
//! The body (before compression) is `u16 big-endian length of the name || name || value`:
//! the real key name travels inside, so that a listing returns it though the store only
//! sees its keyed hash. Compression happens before sealing.

use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead as _, Payload};

use crate::keys::Keyring;

/// The format byte of version 1.
pub const FORMAT_V1: u8 = 0xA7;
const FLAG_ZSTD: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The zstd level (fast; values are small and on the sync path).
const ZSTD_LEVEL: i32 = 3;

/// Why a stored value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The bytes are not an envelope (written without encryption, or damaged).
    #[error("not a sealed value (written without encryption, or damaged)")]
    NotSealed,
    /// Sealed under a key id the ring does not hold.
    #[error("sealed under the key id `{id}`, which the key file does not hold (it holds {have:?})")]
    UnknownKey {
        /// The id needed.
        id: String,
        /// The ids held.
        have: Vec<String>,
    },
    /// The key of that id does not authenticate the value: a wrong key under the right id,
    /// or damaged or moved bytes.
    #[error(
        "the key `{id}` does not open this value (authentication failed: a wrong key for this id, or damaged data)"
    )]
    WrongKey {
        /// The id.
        id: String,
    },
    /// The body opened but does not read (a bad compression frame or name).
    #[error("the sealed body is malformed")]
    Malformed,
}

/// A value opened: its real key name and its bytes, and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The real key name.
    pub name: String,
    /// The value.
    pub value: Vec<u8>,
    /// The key id that sealed it.
    pub key_id: String,
}

/// The bytes an envelope adds to a value of a key named `name` under `key_id`, uncompressed.
pub fn overhead(key_id: &str, name: &str) -> usize {
    3 + key_id.len() + NONCE_LEN + TAG_LEN + 2 + name.len()
}

/// Seals `value` for the stored key `stored` (real name `name`) under the ring's newest key,
/// compressing the body first when it is longer than `compress_above`.
pub fn seal(ring: &Keyring, stored: &str, name: &str, value: &[u8], compress_above: Option<usize>) -> Vec<u8> {
    let key = ring.newest();
    let mut body = Vec::with_capacity(2 + name.len() + value.len());
    let name_len = u16::try_from(name.len()).expect("keys are at most 1024 bytes");
    body.extend_from_slice(&name_len.to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(value);
    let mut flags = 0;
    if compress_above.is_some_and(|t| body.len() > t) {
        // Kept only when it saves something (random bytes do not shrink).
        if let Ok(packed) = zstd::bulk::compress(&body, ZSTD_LEVEL) {
            if packed.len() < body.len() {
                body = packed;
                flags |= FLAG_ZSTD;
            }
        }
    }
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the system's random source");
    let mut out = Vec::with_capacity(3 + key.id.len() + NONCE_LEN + body.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.push(flags);
    out.push(key.id.len() as u8);
    out.extend_from_slice(key.id.as_bytes());
    let header_len = out.len();
    let mut aad = Vec::with_capacity(header_len + stored.len());
    aad.extend_from_slice(&out);
    aad.extend_from_slice(stored.as_bytes());
    let sealed = key
        .cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: &body, aad: &aad })
        .expect("XChaCha20-Poly1305 seals any length the store accepts");
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// The key id a sealed value names, without opening it.
pub fn key_id_of(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 3 || bytes[0] != FORMAT_V1 {
        return None;
    }
    let n = usize::from(bytes[2]);
    bytes.get(3..3 + n)
}

/// Opens a value stored under `stored`.
pub fn open(ring: &Keyring, stored: &str, bytes: &[u8]) -> Result<Opened, OpenError> {
    let id = key_id_of(bytes).ok_or(OpenError::NotSealed)?;
    let flags = bytes[1];
    let header_len = 3 + id.len();
    if flags & !FLAG_ZSTD != 0 || bytes.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(OpenError::NotSealed);
    }
    let id_text = String::from_utf8_lossy(id).into_owned();
    let Some(key) = ring.find(id) else {
        return Err(OpenError::UnknownKey { id: id_text, have: ring.ids().iter().map(|s| (*s).to_owned()).collect() });
    };
    let nonce = XNonce::from_slice(&bytes[header_len..header_len + NONCE_LEN]);
    let mut aad = Vec::with_capacity(header_len + stored.len());
    aad.extend_from_slice(&bytes[..header_len]);
    aad.extend_from_slice(stored.as_bytes());
    let body = key
        .cipher
        .decrypt(nonce, Payload { msg: &bytes[header_len + NONCE_LEN..], aad: &aad })
        .map_err(|_| OpenError::WrongKey { id: id_text.clone() })?;
    let body = if flags & FLAG_ZSTD != 0 {
        zstd::stream::decode_all(&body[..]).map_err(|_| OpenError::Malformed)?
    } else {
        body
    };
    if body.len() < 2 {
        return Err(OpenError::Malformed);
    }
    let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let name = body.get(2..2 + n).ok_or(OpenError::Malformed)?;
    let name = std::str::from_utf8(name).map_err(|_| OpenError::Malformed)?.to_owned();
    let value = body[2 + n..].to_vec();
    Ok(Opened { name, value, key_id: id_text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[(&str, u8)]) -> Keyring {
        Keyring::new(keys.iter().map(|(id, b)| ((*id).to_owned(), [*b; 32])).collect()).unwrap()
    }

    #[test]
    fn a_value_opens_with_its_key_only_and_names_the_key_it_needs() {
        let r = ring(&[("k1", 1)]);
        let sealed = seal(&r, "s/~x", "ns/route/GET /patients/12345", b"value", None);
        assert!(!sealed.windows(8).any(|w| w == b"patients"), "the name is sealed");
        let o = open(&r, "s/~x", &sealed).unwrap();
        assert_eq!(
            (o.name.as_str(), &o.value[..], o.key_id.as_str()),
            ("ns/route/GET /patients/12345", &b"value"[..], "k1")
        );
        // Moved to another stored key: does not open.
        assert_eq!(open(&r, "s/~y", &sealed), Err(OpenError::WrongKey { id: "k1".into() }));
        // A wrong key under the same id.
        assert_eq!(open(&ring(&[("k1", 2)]), "s/~x", &sealed), Err(OpenError::WrongKey { id: "k1".into() }));
        // An unknown id is named.
        let e = open(&ring(&[("k2", 1)]), "s/~x", &sealed).unwrap_err();
        assert!(matches!(&e, OpenError::UnknownKey { id, .. } if id == "k1"), "{e}");
        assert!(e.to_string().contains("`k1`"));
        // Flipped bytes anywhere fail.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(open(&r, "s/~x", &bad).is_err(), "byte {i}");
        }
        assert_eq!(open(&r, "s/~x", b"plain"), Err(OpenError::NotSealed));
    }

    #[test]
    fn large_values_are_compressed_inside_and_old_ones_still_read() {
        let r = ring(&[("old", 1), ("new", 2)]);
        let value = b"scar ".repeat(400);
        let packed = seal(&r, "k", "name", &value, Some(64));
        let plain = seal(&r, "k", "name", &value, None);
        assert!(packed.len() < plain.len() / 4, "{} vs {}", packed.len(), plain.len());
        assert_eq!(packed[1], FLAG_ZSTD);
        assert_eq!(plain[1], 0);
        for s in [&packed, &plain] {
            assert_eq!(open(&r, "k", s).unwrap().value, value);
        }
        // Random bytes do not shrink: stored uncompressed.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(seal(&r, "k", "n", &noise, Some(64))[1] & FLAG_ZSTD, 0);
        assert_eq!(key_id_of(&packed), Some(&b"new"[..]));
        assert_eq!(plain.len(), value.len() + overhead("new", "name"));
    }
}
