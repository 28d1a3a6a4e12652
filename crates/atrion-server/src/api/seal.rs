//! The node's seals: the one way this node signs what it hands to clients and takes back
//! (decision tickets, task ids). A [`Seal`] is an HMAC-SHA256 under 32 random bytes made
//! when it is created, which never leave the process, cut to [`TAG_BYTES`] (128 bits). Each
//! use makes its own seal, so a tag made for one kind of token never verifies as another's.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Bytes of a tag (128 bits of HMAC-SHA256).
pub(crate) const TAG_BYTES: usize = 16;

/// Signs and verifies byte strings under a key of this node's life.
pub(crate) struct Seal {
    /// Keyed once: the pads are hashed at creation, so a tag costs two SHA-256 blocks for
    /// messages up to 55 bytes.
    mac: HmacSha256,
}

impl Seal {
    /// A seal under a fresh random key.
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        // The system's random source failing leaves no safe key to make: a fault of the host.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut key).expect("the system's random source");
        Self::with_key(&key)
    }

    /// A seal under `key` (tests).
    pub(crate) fn with_key(key: &[u8; 32]) -> Self {
        // HMAC takes a key of any length: 32 bytes cannot be refused.
        #[allow(clippy::expect_used)]
        let mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        Seal { mac }
    }

    /// The tag of the concatenation of `parts`.
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_BYTES] {
        let mut mac = self.mac.clone();
        parts.iter().for_each(|p| mac.update(p));
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// Whether `tag` is the tag of the concatenation of `parts` (compared in constant time).
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        parts.iter().for_each(|p| mac.update(p));
        tag.len() == TAG_BYTES && mac.verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_verifies_under_its_seal_only() {
        let (a, b) = (Seal::with_key(&[1; 32]), Seal::with_key(&[2; 32]));
        let tag = a.tag(&[b"head", b"route"]);
        assert!(a.verify(&[b"headroute"], &tag), "the parts are concatenated");
        assert!(!a.verify(&[b"head", b"rout"], &tag));
        assert!(!b.verify(&[b"head", b"route"], &tag));
        assert!(!a.verify(&[b"head", b"route"], &tag[..8]), "a cut tag is refused");
        assert_ne!(Seal::new().tag(&[b"x"]), Seal::new().tag(&[b"x"]), "a fresh key each time");
    }
}
