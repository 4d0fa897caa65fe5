//! Challenges: what an auditor asks, and the chunks both sides derive from it.
//!
//! An auditor first fetches the prover's [`Commitment`](crate::commitment::Commitment) for the
//! epoch, then sends a fresh nonce bound to that commitment's digest. From (nonce, epoch,
//! prover, commitment, named shards) both sides derive the same `c` byte positions, uniform
//! over all the committed bytes (a node cannot predict them before the nonce exists, and the
//! commitment was fixed before that), and for every shard the auditor names (a *targeted*
//! challenge, from the storage receipts it holds) a few chunk indices inside that shard.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::{Hash32, NodeKey};

const VERSION: u8 = 1;
const SEED: &str = "cairn-proofs challenge seed v1";
const NONCE: &str = "cairn-proofs auditor nonce v1";
/// Most uniformly sampled chunks a challenge may ask for.
pub const MAX_CHALLENGES: u32 = 256;
/// Most shards one challenge may name.
pub const MAX_TARGETS: usize = 64;
/// Largest encoded challenge.
pub const MAX_CHALLENGE_BYTES: usize = 512 + MAX_TARGETS * 36;

/// An auditor's question to a prover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Format version.
    pub version: u8,
    /// Who asks.
    pub auditor: NodeKey,
    /// Who must answer.
    pub prover: NodeKey,
    /// The epoch whose commitment is challenged.
    pub epoch: u64,
    /// Digest of that commitment, as the auditor fetched it.
    pub commitment: Hash32,
    /// The auditor's fresh, unpredictable nonce.
    pub nonce: Hash32,
    /// Shards challenged by name (sorted, distinct, at most [`MAX_TARGETS`]).
    pub targets: Vec<Hash32>,
}

/// An auditor's nonce for one question: a keyed hash of a secret only the auditor knows, so it
/// is unpredictable to the prover, and repeatable by the auditor (a restart does not need a
/// random source to be fresh: `counter` tells questions apart).
pub fn nonce(secret: &[u8; 32], epoch: u64, prover: &NodeKey, counter: u64) -> Hash32 {
    let mut h = blake3::Hasher::new_keyed(&blake3::derive_key(NONCE, secret));
    h.update(&epoch.to_le_bytes());
    h.update(&prover.0);
    h.update(&counter.to_le_bytes());
    Hash32(*h.finalize().as_bytes())
}

/// `u` scaled into `0..n` (Lemire's multiply-shift over 128 bits: bias below 2^-64).
fn below(u: u128, n: u64) -> u64 {
    let n = u128::from(n);
    let hi = (u >> 64) * n;
    let lo = (u & u128::from(u64::MAX)) * n;
    // (hi * 2^64 + lo) >> 128, without overflow: hi < 2^128 - 2^64, lo >> 64 < 2^64.
    ((hi + (lo >> 64)) >> 64) as u64
}

/// A stream of unbiased draws from a BLAKE3 XOF.
struct Draws(blake3::OutputReader);

impl Draws {
    fn new(seed: &Hash32, label: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_keyed(&seed.0);
        h.update(label);
        Draws(h.finalize_xof())
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut b = [0u8; 16];
        self.0.fill(&mut b);
        below(u128::from_le_bytes(b), n)
    }
}

impl Challenge {
    /// A challenge over `commitment` (its digest) for `epoch`.
    pub fn new(
        auditor: NodeKey,
        prover: NodeKey,
        epoch: u64,
        commitment: Hash32,
        nonce: Hash32,
        mut targets: Vec<Hash32>,
    ) -> Self {
        targets.sort_unstable();
        targets.dedup();
        targets.truncate(MAX_TARGETS);
        Challenge {
            version: VERSION,
            auditor,
            prover,
            epoch,
            commitment,
            nonce,
            targets,
        }
    }

    /// Checks the fields a prover must refuse.
    pub fn check(&self) -> Result<(), CodecError> {
        if self.version != VERSION {
            return Err(CodecError::Version {
                what: "challenge",
                version: self.version,
                known: VERSION,
            });
        }
        if self.targets.len() > MAX_TARGETS || self.targets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CodecError::Malformed {
                what: "challenge",
                reason: format!(
                    "its {} named shards are not sorted, distinct and at most {MAX_TARGETS}",
                    self.targets.len()
                ),
            });
        }
        Ok(())
    }

    /// The seed every derived position comes from.
    fn seed(&self) -> Hash32 {
        let mut targets = Vec::with_capacity(self.targets.len() * 32);
        for t in &self.targets {
            targets.extend_from_slice(&t.0);
        }
        codec::digest(
            SEED,
            &[
                &self.nonce.0,
                &self.epoch.to_le_bytes(),
                &self.prover.0,
                &self.auditor.0,
                &self.commitment.0,
                &targets,
            ],
        )
    }

    /// The `c` committed byte positions challenged, uniform over `0..total_bytes` and
    /// independent of each other (repeats are possible, as in any uniform sample). None when
    /// nothing is committed.
    pub fn positions(&self, total_bytes: u64, c: u32) -> Vec<u64> {
        if total_bytes == 0 {
            return Vec::new();
        }
        let mut draws = Draws::new(&self.seed(), b"uniform");
        (0..c).map(|_| draws.below(total_bytes)).collect()
    }

    /// The `n` chunk indices challenged inside the named shard `target` of `size` bytes.
    pub fn target_chunks(&self, target: &Hash32, size: u64, n: u32) -> Vec<u64> {
        let chunks = crate::chunk::chunk_count(size.max(1));
        let mut draws = Draws::new(&self.seed(), &target.0);
        (0..n).map(|_| draws.below(chunks)).collect()
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and checks a challenge.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let c: Self = codec::decode("challenge", bytes, MAX_CHALLENGE_BYTES)?;
        c.check()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(nonce: u8) -> Challenge {
        Challenge::new(
            NodeKey([1; 32]),
            NodeKey([2; 32]),
            9,
            Hash32([3; 32]),
            Hash32([nonce; 32]),
            vec![Hash32([5; 32]), Hash32([4; 32]), Hash32([5; 32])],
        )
    }

    #[test]
    fn lemire_reduction_covers_the_range_exactly() {
        assert_eq!(below(0, 10), 0);
        assert_eq!(below(u128::MAX, 10), 9);
        assert_eq!(below(u128::MAX, u64::MAX), u64::MAX - 1);
        assert_eq!(below(1u128 << 127, 10), 5);
        assert_eq!(below(u128::MAX, 1), 0);
    }

    #[test]
    fn positions_are_deterministic_and_bound_to_every_input() {
        let c = challenge(7);
        assert_eq!(c.targets.len(), 2, "targets are sorted and deduplicated");
        let p = c.positions(1 << 30, 32);
        assert_eq!(p.len(), 32);
        assert_eq!(p, c.positions(1 << 30, 32));
        assert!(p.iter().all(|&x| x < 1 << 30));
        let variants = [
            challenge(8),
            Challenge {
                epoch: 10,
                ..c.clone()
            },
            Challenge {
                prover: NodeKey([9; 32]),
                ..c.clone()
            },
            Challenge {
                auditor: NodeKey([9; 32]),
                ..c.clone()
            },
            Challenge {
                commitment: Hash32([9; 32]),
                ..c.clone()
            },
            Challenge {
                targets: vec![],
                ..c.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.positions(1 << 30, 32), p, "{v:?}");
        }
        assert!(c.positions(0, 32).is_empty());
    }

    #[test]
    fn positions_are_uniform() {
        // 64 buckets, 64 000 draws: every bucket within 5 sigma of 1000.
        let mut buckets = [0u32; 64];
        for n in 0..2000u32 {
            let mut c = challenge(0);
            c.nonce.0[..4].copy_from_slice(&n.to_le_bytes());
            for p in c.positions(64 * 1_000_003, 32) {
                buckets[(p / 1_000_003) as usize] += 1;
            }
        }
        for (i, &b) in buckets.iter().enumerate() {
            assert!((842..=1158).contains(&b), "bucket {i}: {b}");
        }
    }

    #[test]
    fn target_chunks_lie_inside_the_shard() {
        let c = challenge(1);
        for size in [1u64, 1024, 1025, 1 << 20] {
            let chunks = c.target_chunks(&Hash32([4; 32]), size, 8);
            assert_eq!(chunks.len(), 8);
            assert!(chunks.iter().all(|&i| i < size.div_ceil(1024)));
        }
        assert_ne!(
            c.target_chunks(&Hash32([4; 32]), 1 << 20, 8),
            c.target_chunks(&Hash32([5; 32]), 1 << 20, 8)
        );
    }

    #[test]
    fn nonces_are_keyed_and_distinct() {
        let a = nonce(&[1; 32], 5, &NodeKey([2; 32]), 0);
        assert_ne!(a, nonce(&[1; 32], 5, &NodeKey([2; 32]), 1));
        assert_ne!(a, nonce(&[3; 32], 5, &NodeKey([2; 32]), 0));
        assert_ne!(a, nonce(&[1; 32], 6, &NodeKey([2; 32]), 0));
        assert_eq!(a, nonce(&[1; 32], 5, &NodeKey([2; 32]), 0));
    }

    #[test]
    fn challenges_round_trip_and_refuse_bad_target_lists() {
        let c = challenge(3);
        assert_eq!(Challenge::from_bytes(&c.to_bytes()).unwrap(), c);
        let bad = Challenge {
            targets: vec![Hash32([5; 32]), Hash32([4; 32])],
            ..c
        };
        assert!(Challenge::from_bytes(&bad.to_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Challenge::from_bytes(&bytes);
        }
    }
}
