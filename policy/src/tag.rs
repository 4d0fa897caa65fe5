//! The hashing rendezvous rankings share: a 64-bit tag of a key or a node (the first bytes of
//! a BLAKE3 derived key), and a mix of two tags into a score. A node's tag is computed once
//! for a view of many keys, so ranking ten thousand nodes for a key is ten thousand mixes, not
//! ten thousand hashes.

/// The first 8 bytes of BLAKE3 in derive-key mode `context` over `bytes` (length-prefixed).
pub fn tag(context: &str, bytes: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// A bijective 64-bit mix with full avalanche (every input bit flips each output bit with
/// probability one half), so the scores of two nodes for one key, or of one node for two keys,
/// are as good as independent.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_depend_on_context_and_bytes_and_mixing_avalanches() {
        assert_ne!(tag("a", b"x"), tag("b", b"x"));
        assert_ne!(tag("a", b"x"), tag("a", b"y"));
        assert_eq!(tag("a", b"x"), tag("a", b"x"));
        // One flipped input bit flips about half the output bits.
        let flips: u32 = (0..64)
            .map(|b| (mix(12345) ^ mix(12345 ^ (1 << b))).count_ones())
            .sum();
        let mean = flips as f64 / 64.0;
        assert!((28.0..36.0).contains(&mean), "{mean}");
    }
}
