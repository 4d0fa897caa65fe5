//! Deterministic pseudo-random bytes for tests: the same seed gives the same bytes on every
//! run and machine, so a failure can be replayed. Not for anything that needs real randomness.

/// A xorshift64 generator (Marsaglia, 2003): fast, and random enough that content-defined
/// chunking, compression and erasure coding see incompressible data.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator from `seed` (any value; zero is mapped away, as xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
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

    /// Fills `buf`.
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

/// `len` bytes from seed `seed`.
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
