//! The one hash that every node of a cluster must compute alike.

/// FNV-1a, 64 bits: stable across processes, platforms and versions, so that every node
/// agrees on it. The cluster sync derives pulse phases and a route's designated pushers
/// from it (`atrion-sync`); the policy layer hashes the policies a node runs with it, and
/// the reconciler compares those hashes across nodes (`atrion-policy`). Changing it changes
/// both protocols.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
