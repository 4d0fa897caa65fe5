//! Deterministic pseudo-random bytes for tests: the same seed gives the same bytes on every
//! run and machine, so a failure can be replayed. Not for anything that needs real randomness.

/// Spreads small seeds (0, 1, 2, ...) over the whole state space before they become the state,
/// so that neighbouring seeds give unrelated streams (`seed | 1` alone would make seeds 2k and
/// 2k + 1 give the same bytes). 2^64 / phi, odd: a bijection on `u64`.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// A xorshift64 generator (Marsaglia, 2003): fast, and random enough that content-defined
/// chunking, compression and erasure coding see incompressible data.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator from `seed` (any value). Distinct seeds give distinct streams.
    pub fn new(seed: u64) -> Self {
        Self::from_state(seed.wrapping_mul(SPREAD))
    }

    /// A generator whose state is `state` as given (its lowest bit set, as xorshift would stay
    /// at 0): for a test that must keep the exact sequence of a generator it used before.
    /// Unlike [`Xorshift::new`], states 2k and 2k + 1 are the same generator.
    pub fn from_state(state: u64) -> Self {
        Self(state | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fills `buf`, eight bytes (one [`Xorshift::next_u64`], little-endian) at a time.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }

    /// A number in `0..n` (`n` > 0; slightly biased for huge `n`, which tests do not mind).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `len` bytes from seed `seed`: [`Xorshift::new`]`(seed)`, eight bytes per step.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    Xorshift::new(seed).bytes(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(bytes(1000, 7), bytes(1000, 7));
        assert_ne!(bytes(1000, 7), bytes(1000, 8));
        // A prefix of a longer run is the shorter run: lengths do not reseed.
        assert_eq!(bytes(1000, 7)[..13], bytes(13, 7)[..]);
    }

    #[test]
    fn neighbouring_seeds_give_distinct_streams() {
        let mut firsts: Vec<u64> = (0..10_000).map(|s| Xorshift::new(s).next_u64()).collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 10_000);
    }

    /// The sequence is part of the interface: tests and benchmarks that moved here from their
    /// own copies rely on getting exactly the bytes they got before.
    #[test]
    fn known_answers() {
        let mut x = Xorshift::from_state(1);
        assert_eq!(x.next_u64(), 1_082_269_761);
        // `new` is `from_state` of the spread seed.
        let (mut a, mut b) = (
            Xorshift::new(5),
            Xorshift::from_state(5u64.wrapping_mul(SPREAD)),
        );
        assert_eq!(a.bytes(100), b.bytes(100));
        // Words go out little-endian, the last one cut short.
        let mut w = Xorshift::new(3);
        let (first, second) = (w.next_u64().to_le_bytes(), w.next_u64().to_le_bytes());
        assert_eq!(bytes(11, 3), [&first[..], &second[..3]].concat());
    }

    #[test]
    fn bytes_look_random() {
        let b = bytes(1 << 16, 1);
        let mut counts = [0u32; 256];
        for &x in &b {
            counts[x as usize] += 1;
        }
        // 256 expected per value; every value appears, none dominates.
        assert!(
            counts.iter().all(|&c| (150..400).contains(&c)),
            "{counts:?}"
        );
    }
}
