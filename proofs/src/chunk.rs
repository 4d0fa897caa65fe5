//! Proofs of single 1 KiB BLAKE3 chunks of a shard.
//!
//! A shard is named by its BLAKE3 hash, which is the root of a binary tree over its 1 KiB
//! chunks. To prove it still holds chunk `i`, a node sends the chunk's bytes and the chaining
//! values (CVs) of the siblings on the chunk's path to the root; the verifier, who knows only
//! the root and the shard's size, hashes its way back up.
//!
//! Nodes keep each shard with its pre-order outboard (bao-tree's `PreOrderOutboard` with
//! 16 KiB groups): the CV pairs of the tree's nodes above group level. So the prover reads only
//! the 16 KiB group holding the chunk, recomputes the siblings inside that group from its bytes,
//! and copies the siblings above it out of the outboard.
//!
//! The size fixes the tree's shape, so the verifier must take it from its own records (the
//! commitment), never from the prover. Each chunk's CV also binds its index (BLAKE3's chunk
//! counter), so a proof for one chunk does not pass for another.

use std::ops::Range;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::Hash32;

/// Bytes in one BLAKE3 chunk: the unit a storage proof challenges.
pub const CHUNK_BYTES: u64 = 1024;
/// Bytes in one outboard group (16 chunks).
pub const GROUP_BYTES: u64 = 16 * 1024;
/// Largest shard a chunk proof is made for (64 MiB, Cairn's MAX_SHARD_SIZE).
pub const MAX_SHARD: u64 = 64 << 20;

/// Bytes in one outboard entry: a node's left child CV, then its right child CV.
const PAIR_BYTES: u64 = 64;
/// Bytes in one chaining value.
const CV_BYTES: u64 = 32;

/// A challenged chunk and the chaining values of its siblings on the path to the shard's root,
/// bottom-up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkProof {
    /// The chunk's bytes: 1024, or fewer for the shard's last chunk.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The siblings' chaining values, bottom-up: the chunk's own sibling first, the root's
    /// other child last.
    pub siblings: Vec<Hash32>,
}

/// Why a chunk proof could not be made or does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The shard size is 0 or above [`MAX_SHARD`].
    #[error("shard size {size} is not in 1..={MAX_SHARD}")]
    BadSize {
        /// The size given.
        size: u64,
    },
    /// The chunk index is past the shard's end.
    #[error("chunk {index} is out of range: the shard has {chunks} chunks")]
    BadIndex {
        /// The index given.
        index: u64,
        /// The shard's number of chunks.
        chunks: u64,
    },
    /// The group bytes handed to [`prove`] are not the chunk's whole group.
    #[error("group of {got} bytes, the chunk's group has {expected}")]
    GroupLength {
        /// Bytes given.
        got: u64,
        /// Bytes in the chunk's group.
        expected: u64,
    },
    /// The outboard handed to [`prove`] is not as long as the shard's outboard.
    #[error("outboard of {got} bytes, the shard needs {expected}")]
    OutboardLength {
        /// Bytes given.
        got: u64,
        /// Bytes in the shard's outboard.
        expected: u64,
    },
    /// The proof's chunk is not as long as the challenged chunk.
    #[error("chunk of {got} bytes, the challenged chunk has {expected}")]
    ChunkLength {
        /// Bytes in the proof.
        got: u64,
        /// Bytes in the challenged chunk.
        expected: u64,
    },
    /// The proof has not exactly one sibling per level of the chunk's path.
    #[error("{got} siblings, the chunk's path has {expected} levels")]
    SiblingCount {
        /// Siblings in the proof.
        got: usize,
        /// Levels on the path.
        expected: usize,
    },
    /// The chunk and its siblings do not hash to the shard's root.
    #[error("the chunk and its siblings do not hash to the shard's root")]
    Mismatch,
}

/// Number of chunks in a shard of `size` bytes (size >= 1; 0 for size 0, which is no shard).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES)
}

/// Number of siblings on a chunk's path (the verifier insists on exactly this many).
pub fn depth(size: u64, index: u64) -> Result<usize, ChunkError> {
    Ok(path(size, index)?.len())
}

/// Builds the proof for chunk `index` of a shard of `size` bytes from `group` (the bytes of the
/// 16 KiB group holding the chunk: `size` clipped to `[g*16K, (g+1)*16K)`, `g = index / 16`)
/// and the shard's full pre-order `outboard`.
///
/// It does not check the result against a root (the caller may, with [`verify`], to catch its
/// own corrupt copy).
pub fn prove(
    size: u64,
    index: u64,
    group: &[u8],
    outboard: &[u8],
) -> Result<ChunkProof, ChunkError> {
    let levels = path(size, index)?;
    let group_start = index / (GROUP_BYTES / CHUNK_BYTES) * GROUP_BYTES;
    let group_len = size.min(group_start + GROUP_BYTES) - group_start;
    let outboard_len = pairs(size) * PAIR_BYTES;
    let bad_group = || ChunkError::GroupLength {
        got: group.len() as u64,
        expected: group_len,
    };
    let bad_outboard = || ChunkError::OutboardLength {
        got: outboard.len() as u64,
        expected: outboard_len,
    };
    if group.len() as u64 != group_len {
        return Err(bad_group());
    }
    if outboard.len() as u64 != outboard_len {
        return Err(bad_outboard());
    }
    // Every slice below lies inside the group or the outboard whose lengths were just checked;
    // the `get`s still fail with an error rather than a panic should that ever be wrong.
    let mut siblings = Vec::with_capacity(levels.len());
    for level in levels.iter().rev() {
        let cv = match level.cv_at() {
            // Above the group: the sibling's CV is stored.
            Some(at) => slice(outboard, at, CV_BYTES)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad_outboard)?,
            // Inside the group: hash the sibling's bytes.
            None => {
                let Range { start, end } = level.sibling;
                let bytes = start
                    .checked_sub(group_start)
                    .and_then(|at| slice(group, at, end - start))
                    .ok_or_else(bad_group)?;
                subtree_cv(bytes, start)
            }
        };
        siblings.push(Hash32(cv));
    }
    let at = index * CHUNK_BYTES - group_start;
    let data = slice(group, at, chunk_len(size, index))
        .ok_or_else(bad_group)?
        .to_vec();
    Ok(ChunkProof { data, siblings })
}

/// Checks `proof` for chunk `index` of a shard of `size` bytes against the shard's `root`.
///
/// `size` must come from the verifier's own records: it fixes the tree's shape.
pub fn verify(
    root: &[u8; 32],
    size: u64,
    index: u64,
    proof: &ChunkProof,
) -> Result<(), ChunkError> {
    let levels = path(size, index)?;
    let expected = chunk_len(size, index);
    if proof.data.len() as u64 != expected {
        return Err(ChunkError::ChunkLength {
            got: proof.data.len() as u64,
            expected,
        });
    }
    if proof.siblings.len() != levels.len() {
        return Err(ChunkError::SiblingCount {
            got: proof.siblings.len(),
            expected: levels.len(),
        });
    }
    // `levels` runs top-down and `siblings` bottom-up: the root's level pairs with the last
    // sibling, and only that merge is a root merge.
    let computed = match (levels.split_first(), proof.siblings.split_last()) {
        (Some((top, below)), Some((top_sibling, below_siblings))) => {
            let mut cv = subtree_cv(&proof.data, index * CHUNK_BYTES);
            for (level, sibling) in below.iter().rev().zip(below_siblings) {
                let (l, r) = children(level.left, &cv, &sibling.0);
                cv = merge_subtrees_non_root(l, r, Mode::Hash);
            }
            let (l, r) = children(top.left, &cv, &top_sibling.0);
            merge_subtrees_root(l, r, Mode::Hash)
        }
        // A one-chunk shard: the chunk is the root.
        _ => blake3::hash(&proof.data),
    };
    // blake3::Hash compares in constant time.
    if computed == blake3::Hash::from_bytes(*root) {
        Ok(())
    } else {
        Err(ChunkError::Mismatch)
    }
}

/// Outboard byte ranges [`prove`] reads for chunk `index` of a shard of `size` bytes, one
/// 32-byte CV each, in ascending order (top-down on the path: the first range holds the last
/// sibling), so that a prover can read only those.
pub fn outboard_ranges(size: u64, index: u64) -> Result<Vec<Range<u64>>, ChunkError> {
    Ok(path(size, index)?
        .iter()
        .filter_map(Level::cv_at)
        .map(|at| at..at + CV_BYTES)
        .collect())
}

/// One level of a chunk's path, at a tree node above the chunk.
#[derive(Debug, Clone)]
struct Level {
    /// The chunk lies in the node's left child (so the sibling is its right child).
    left: bool,
    /// The sibling subtree's bytes in the shard.
    sibling: Range<u64>,
    /// The node's pair index in the outboard, when the node lies above group level.
    pair: Option<u64>,
}

impl Level {
    /// Offset in the outboard of the sibling's CV: the pair's right half when the chunk goes
    /// left, its left half when it goes right.
    fn cv_at(&self) -> Option<u64> {
        self.pair
            .map(|p| p * PAIR_BYTES + if self.left { CV_BYTES } else { 0 })
    }
}

/// The path from the root down to chunk `index`, top-down, after checking `size` and `index`.
fn path(size: u64, index: u64) -> Result<Vec<Level>, ChunkError> {
    if size == 0 || size > MAX_SHARD {
        return Err(ChunkError::BadSize { size });
    }
    let chunks = chunk_count(size);
    if index >= chunks {
        return Err(ChunkError::BadIndex { index, chunks });
    }
    let pos = index * CHUNK_BYTES;
    // The current node covers [start, start + len); `pair` is its pre-order pair index, which
    // is meaningful only while the node is above group level.
    let (mut start, mut len, mut pair) = (0u64, size, 0u64);
    let mut levels = Vec::new();
    while len > CHUNK_BYTES {
        let left_len = left_subtree_len(len);
        let here = (len > GROUP_BYTES).then_some(pair);
        let mid = start + left_len;
        let left = pos < mid;
        let sibling = if left { mid..start + len } else { start..mid };
        levels.push(Level {
            left,
            sibling,
            pair: here,
        });
        if left {
            // Pre-order: the left child's pair follows its parent's.
            (len, pair) = (left_len, pair + 1);
        } else {
            // The right child's pair follows the whole left subtree's.
            (start, len, pair) = (mid, len - left_len, pair + 1 + pairs(left_len));
        }
    }
    Ok(levels)
}

/// Pairs in the outboard of a subtree of `len` bytes: one per node above group level, i.e.
/// one fewer than its groups (none for a single group).
fn pairs(len: u64) -> u64 {
    len.div_ceil(GROUP_BYTES).saturating_sub(1)
}

/// Bytes in chunk `index` of a shard of `size` bytes (`index` in range).
fn chunk_len(size: u64, index: u64) -> u64 {
    (size - index * CHUNK_BYTES).min(CHUNK_BYTES)
}

/// The non-root chaining value of the subtree over `data`, which starts at byte `offset` of the
/// shard (a multiple of 1 KiB; `data` non-empty and a valid subtree there).
fn subtree_cv(data: &[u8], offset: u64) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// A node's (left, right) children, from the CV on the chunk's side and its sibling's.
fn children<'a>(
    chunk_left: bool,
    cv: &'a ChainingValue,
    sibling: &'a ChainingValue,
) -> (&'a ChainingValue, &'a ChainingValue) {
    if chunk_left {
        (cv, sibling)
    } else {
        (sibling, cv)
    }
}

/// `len` bytes of `bytes` from `start`, if they are all there.
fn slice(bytes: &[u8], start: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A shard of `size` deterministic bytes, its root and its outboard.
    fn shard(size: u64, seed: u64) -> (Vec<u8>, [u8; 32], Vec<u8>) {
        let data = cairn_testkit::data::bytes(size as usize, seed);
        let (root, outboard) = cairn_chunker::verified::outboard(&data);
        (data, *root.as_bytes(), outboard)
    }

    /// The piece of `data` holding chunk `index`, `piece` bytes long (clipped to the data).
    fn part(data: &[u8], index: u64, piece: u64) -> &[u8] {
        let start = (index * CHUNK_BYTES / piece * piece) as usize;
        &data[start..data.len().min(start + piece as usize)]
    }

    fn prove_in(data: &[u8], outboard: &[u8], index: u64) -> ChunkProof {
        let group = part(data, index, GROUP_BYTES);
        prove(data.len() as u64, index, group, outboard).unwrap()
    }

    /// First, last, middle and group-boundary chunks of a shard of `size` bytes.
    fn indices(size: u64) -> Vec<u64> {
        let n = chunk_count(size);
        let mut v = vec![0, 1, 15, 16, 17, 31, 32, n / 2, n - 2, n - 1];
        v.retain(|&i| i < n);
        v.sort_unstable();
        v.dedup();
        v
    }

    #[rustfmt::skip]
    const SIZES: &[u64] = &[
        1, 1023, 1024, 1025, 16383, 16384, 16385, 32768, 40000, 65536 + 17,
        1 << 20, (1 << 20) + 5, (3 << 20) + 1000,
    ];

    #[test]
    fn proofs_verify_for_many_sizes_and_chunks() {
        for (seed, &size) in SIZES.iter().enumerate() {
            let (data, root, outboard) = shard(size, seed as u64);
            let want = cairn_chunker::verified::outboard_size(size);
            assert_eq!(outboard.len() as u64, want);
            for index in indices(size) {
                let proof = prove_in(&data, &outboard, index);
                assert_eq!(proof.siblings.len(), depth(size, index).unwrap());
                assert_eq!(proof.data, part(&data, index, CHUNK_BYTES));
                let res = verify(&root, size, index, &proof);
                assert_eq!(res, Ok(()), "size {size} chunk {index}");
                // The top siblings are the outboard's bytes at `outboard_ranges`, top-down.
                let ranges = outboard_ranges(size, index).unwrap();
                for (r, sibling) in ranges.iter().zip(proof.siblings.iter().rev()) {
                    assert_eq!(outboard[r.start as usize..r.end as usize], sibling.0);
                }
            }
        }
    }

    #[test]
    fn every_bit_flip_fails() {
        for size in [1000, 3000, 40000, 65536 + 17] {
            let (data, root, outboard) = shard(size, 7);
            let index = chunk_count(size) / 2;
            let proof = prove_in(&data, &outboard, index);
            let fails =
                |bad: &ChunkProof| verify(&root, size, index, bad) == Err(ChunkError::Mismatch);
            for bit in 0..proof.data.len() * 8 {
                let mut bad = proof.clone();
                bad.data[bit / 8] ^= 1 << (bit % 8);
                assert!(fails(&bad), "size {size} data bit {bit}");
            }
            for (s, bit) in (0..proof.siblings.len()).flat_map(|s| (0..256).map(move |b| (s, b))) {
                let mut bad = proof.clone();
                bad.siblings[s].0[bit / 8] ^= 1 << (bit % 8);
                assert!(fails(&bad), "size {size} sibling {s} bit {bit}");
            }
            let mut other = root;
            other[31] ^= 1;
            assert_eq!(
                verify(&other, size, index, &proof),
                Err(ChunkError::Mismatch)
            );
        }
    }

    #[test]
    fn a_proof_holds_only_for_its_own_chunk() {
        for size in [3000, 40000, 65536 + 17] {
            let (data, root, outboard) = shard(size, 11);
            for i in 0..chunk_count(size) {
                let proof = prove_in(&data, &outboard, i);
                for j in 0..chunk_count(size) {
                    assert_eq!(verify(&root, size, j, &proof).is_ok(), i == j, "{i} as {j}");
                }
            }
        }
    }

    #[test]
    fn wrong_size_index_or_sibling_count_fails() {
        let size = 40000;
        let (data, root, outboard) = shard(size, 3);
        for index in indices(size) {
            let proof = prove_in(&data, &outboard, index);
            // Sizes that change the chunk's path or its length.
            for wrong in [size / 2, 2 * size, 20 * size] {
                assert!(
                    verify(&root, wrong, index, &proof).is_err(),
                    "{wrong} {index}"
                );
            }
            let n = proof.siblings.len();
            let (mut short, mut long, mut no_bottom) = (proof.clone(), proof.clone(), proof);
            short.siblings.pop();
            long.siblings.push(Hash32([0; 32]));
            no_bottom.siblings.remove(0);
            for (bad, got) in [(short, n - 1), (long, n + 1), (no_bottom, n - 1)] {
                let want = Err(ChunkError::SiblingCount { got, expected: n });
                assert_eq!(verify(&root, size, index, &bad), want);
            }
        }
        // The last chunk is 64 bytes: any other size changes its length.
        let p = &prove_in(&data, &outboard, 39);
        for wrong in [size - 1, size + 1, size + 960] {
            assert!(verify(&root, wrong, 39, p).is_err(), "{wrong}");
        }
        let bad_size = |size| Err(ChunkError::BadSize { size });
        assert_eq!(verify(&root, 0, 0, p), bad_size(0));
        assert_eq!(verify(&root, MAX_SHARD + 1, 0, p), bad_size(MAX_SHARD + 1));
        let bad_index = |index| ChunkError::BadIndex { index, chunks: 40 };
        assert_eq!(verify(&root, size, 40, p), Err(bad_index(40)));
        assert_eq!(depth(size, u64::MAX), Err(bad_index(u64::MAX)));
        assert_eq!(depth(MAX_SHARD, chunk_count(MAX_SHARD) - 1), Ok(16));
        assert_eq!(depth(1024, 0), Ok(0));
    }

    #[test]
    fn corrupt_outboard_pairs_give_failing_proofs() {
        let size = 200_000;
        let (data, root, outboard) = shard(size, 5);
        for at in (0..outboard.len()).step_by(16) {
            let mut bad = outboard.clone();
            bad[at] ^= 0x80;
            for index in 0..chunk_count(size) {
                // A prover with a corrupt copy still makes a proof, which fails exactly when it
                // used the corrupt bytes.
                let proof = prove_in(&data, &bad, index);
                let ranges = outboard_ranges(size, index).unwrap();
                let used = ranges.iter().any(|r| r.contains(&(at as u64)));
                let ok = verify(&root, size, index, &proof).is_ok();
                assert_eq!(ok, !used, "{at} {index}");
            }
        }
    }

    #[test]
    fn wrong_group_or_outboard_lengths_are_errors() {
        let size = 40000;
        let (data, _, outboard) = shard(size, 9);
        let (g, ob) = (part(&data, 20, GROUP_BYTES), &outboard[..]);
        let group = |got: usize, expected| {
            Err(ChunkError::GroupLength {
                got: got as u64,
                expected,
            })
        };
        for bad in [&g[..g.len() - 1], &data[16384..32769], &[][..]] {
            assert_eq!(prove(size, 20, bad, ob), group(bad.len(), 16384));
        }
        // The last group is short: 40000 - 32768 bytes.
        assert_eq!(prove(size, 39, g, ob), group(16384, 7232));
        let outb = |got: usize, expected| {
            Err(ChunkError::OutboardLength {
                got: got as u64,
                expected,
            })
        };
        let longer = [ob, &[0; 64]].concat();
        for bad in [&ob[..ob.len() - 1], &ob[..64], &longer[..], &[][..]] {
            assert_eq!(prove(size, 20, g, bad), outb(bad.len(), 128));
        }
        // A shard of one group has no outboard.
        assert_eq!(prove(3000, 0, &data[..3000], ob), outb(128, 0));
        assert_eq!(prove(0, 0, &[], &[]), Err(ChunkError::BadSize { size: 0 }));
    }

    #[test]
    fn proofs_encode_as_cbor_byte_strings() {
        let (data, root, outboard) = shard(40000, 1);
        let proof = prove_in(&data, &outboard, 21);
        let bytes = serde_ipld_dagcbor::to_vec(&proof).unwrap();
        // The data as one 1024-byte string (0x59: a byte string with a 2-byte length), and each
        // sibling as a 32-byte string (0x58 0x20), not as arrays of integers.
        assert!(bytes.windows(3).any(|w| w == [0x59, 0x04, 0x00]));
        assert!(bytes.windows(2).filter(|w| w == &[0x58, 0x20]).count() >= proof.siblings.len());
        assert!(bytes.len() < 1024 + 34 * proof.siblings.len() + 32);
        let back: ChunkProof = serde_ipld_dagcbor::from_slice(&bytes).unwrap();
        assert_eq!(back, proof);
        verify(&root, 40000, 21, &back).unwrap();
    }

    proptest! {
        #[test]
        fn verify_never_panics(
            root: [u8; 32],
            size in prop_oneof![any::<u64>(), 0..=300_000u64, Just(MAX_SHARD + 1)],
            index in prop_oneof![any::<u64>(), 0..400u64],
            data in proptest::collection::vec(any::<u8>(), 0..1100),
            siblings in proptest::collection::vec(any::<[u8; 32]>().prop_map(Hash32), 0..20),
        ) {
            let _ = verify(&root, size, index, &ChunkProof { data, siblings });
            let _ = (depth(size, index), outboard_ranges(size, index));
        }

        #[test]
        fn prove_then_verify_round_trips(size in 1..=300_000u64, at: u64, seed: u64) {
            let (data, root, outboard) = shard(size, seed);
            let index = at % chunk_count(size);
            let proof = prove_in(&data, &outboard, index);
            prop_assert_eq!(proof.siblings.len(), depth(size, index).unwrap());
            prop_assert_eq!(verify(&root, size, index, &proof), Ok(()));
            // From garbage of the right lengths, a proof that does not verify (and no panic).
            let group = vec![7; part(&data, index, GROUP_BYTES).len()];
            let junk = prove(size, index, &group, &vec![9; outboard.len()]).unwrap();
            prop_assert_eq!(verify(&root, size, index, &junk), Err(ChunkError::Mismatch));
        }
    }
}
