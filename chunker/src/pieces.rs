//! An object's BLAKE3 from pieces hashed apart.
//!
//! BLAKE3 is a tree over 1 KiB chunks, and a chunk's hash depends on its position, so a piece
//! of an object hashed on its own (`b3sum` of the piece) says nothing about the object's hash.
//! But hashed *at its offset in the object* ([`PieceHasher`]), a piece yields the chaining
//! values of the tree nodes it covers ([`Subtree`]s), and the nodes of all pieces merge into
//! the object's hash ([`combine`]) without reading any byte again. The S3 gateway uses this for
//! multipart uploads: each part is hashed at the offset it will have, and Complete combines.
//!
//! A piece is cut into the largest power-of-two runs of chunks that start at a multiple of
//! their own length (every such run inside an object is a node of its tree), plus, at the end
//! of the object, a final partial chunk. Pieces must start on a chunk boundary (1 KiB).
//!
//! ```
//! use cairn_chunker::pieces::{PieceHasher, combine};
//!
//! let object: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
//! let cut = 1 << 20; // any multiple of 1024
//! let mut nodes = Vec::new();
//! for (offset, piece) in [(0, &object[..cut]), (cut, &object[cut..])] {
//!     let mut h = PieceHasher::new(offset as u64, piece.len() as u64).unwrap();
//!     h.update(piece);
//!     nodes.extend(h.finish().unwrap());
//! }
//! assert_eq!(combine(&nodes, object.len() as u64), Some(blake3::hash(&object)));
//! ```

use std::collections::BTreeMap;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use serde::{Deserialize, Serialize};

/// BLAKE3's chunk: the smallest node of its tree.
pub const CHUNK: u64 = 1024;

/// One node of an object's BLAKE3 tree: `len` bytes from `start`, and its chaining value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subtree {
    /// Offset in the object.
    pub start: u64,
    /// Length in bytes: a power of two number of chunks, or the object's final partial chunk.
    pub len: u64,
    /// The node's chaining value (never a root hash).
    pub cv: ChainingValue,
}

/// Why a piece cannot be hashed at its offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PieceError {
    /// The offset is not a multiple of 1 KiB.
    #[error("a piece at offset {0} does not start on a 1 KiB chunk boundary")]
    Unaligned(u64),
    /// The piece is empty.
    #[error("an empty piece has no subtrees")]
    Empty,
    /// The piece would end past 2^64 bytes.
    #[error("a piece may not end past 2^64 bytes")]
    Overflow,
    /// More or fewer bytes arrived than announced.
    #[error("the piece was announced as {expected} bytes but {got} arrived")]
    Length {
        /// Announced.
        expected: u64,
        /// Fed to the hasher.
        got: u64,
    },
}

/// Hashes `len` bytes that sit at `offset` in a larger object, fed in any slices.
#[derive(Debug)]
pub struct PieceHasher {
    end: u64,
    /// Bytes hashed so far end here; the node being hashed spans `node_start..node_end`.
    at: u64,
    node_start: u64,
    node_end: u64,
    hasher: blake3::Hasher,
    done: Vec<Subtree>,
    fed: u64,
    expected: u64,
}

impl PieceHasher {
    /// A hasher for the `len` bytes at `offset`.
    pub fn new(offset: u64, len: u64) -> Result<Self, PieceError> {
        if !offset.is_multiple_of(CHUNK) {
            return Err(PieceError::Unaligned(offset));
        }
        if len == 0 {
            return Err(PieceError::Empty);
        }
        let end = offset.checked_add(len).ok_or(PieceError::Overflow)?;
        let mut h = Self {
            end,
            at: offset,
            node_start: offset,
            node_end: offset,
            hasher: blake3::Hasher::new(),
            done: Vec::new(),
            fed: 0,
            expected: len,
        };
        h.start_node();
        Ok(h)
    }

    /// Begins the node at `self.at`: the largest aligned power of two that fits.
    fn start_node(&mut self) {
        let left = self.end - self.at;
        let len = if left <= CHUNK {
            left
        } else {
            // Largest power of two (in bytes, at least a chunk) not over what is left...
            let fits = 1u64 << (63 - left.leading_zeros());
            // ...and dividing the offset (offset 0 allows any length).
            let aligned = if self.at == 0 {
                u64::MAX
            } else {
                1u64 << self.at.trailing_zeros()
            };
            fits.min(aligned)
        };
        self.node_start = self.at;
        self.node_end = self.at + len;
        self.hasher = blake3::Hasher::new();
        self.hasher.set_input_offset(self.at);
    }

    /// Feeds the next bytes of the piece.
    pub fn update(&mut self, mut data: &[u8]) {
        self.fed += data.len() as u64;
        while !data.is_empty() && self.at < self.end {
            let room = (self.node_end - self.at).min(data.len() as u64) as usize;
            self.hasher.update(&data[..room]);
            self.at += room as u64;
            data = &data[room..];
            if self.at == self.node_end {
                self.done.push(Subtree {
                    start: self.node_start,
                    len: self.node_end - self.node_start,
                    cv: self.hasher.finalize_non_root(),
                });
                if self.at < self.end {
                    self.start_node();
                }
            }
        }
    }

    /// The piece's nodes, in order; an error if its length was not as announced.
    pub fn finish(self) -> Result<Vec<Subtree>, PieceError> {
        if self.fed != self.expected {
            return Err(PieceError::Length {
                expected: self.expected,
                got: self.fed,
            });
        }
        Ok(self.done)
    }
}

/// The BLAKE3 hash of a `total`-byte object from the nodes of its pieces (in any order), or
/// `None` if they do not cover it exactly with nodes of its tree. An object of one chunk or
/// less, or one covered by a single node, has no mergeable nodes: hash it directly.
pub fn combine(nodes: &[Subtree], total: u64) -> Option<blake3::Hash> {
    if total <= CHUNK {
        return None;
    }
    let by_start: BTreeMap<u64, &Subtree> = nodes.iter().map(|n| (n.start, n)).collect();
    let left = left_subtree_len(total);
    let l = node(&by_start, 0, left)?;
    let r = node(&by_start, left, total - left)?;
    Some(merge_subtrees_root(&l, &r, Mode::Hash))
}

/// The chaining value of the tree node covering `len` bytes from `start`.
fn node(nodes: &BTreeMap<u64, &Subtree>, start: u64, len: u64) -> Option<ChainingValue> {
    if let Some(n) = nodes.get(&start)
        && n.len == len
    {
        return Some(n.cv);
    }
    if len <= CHUNK {
        return None;
    }
    let left = left_subtree_len(len);
    let l = node(nodes, start, left)?;
    let r = node(nodes, start + left, len - left)?;
    Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        cairn_testkit::data::bytes(len, seed.into())
    }

    /// Hashes `object` as pieces cut at `cuts` (chunk multiples), each fed in `slice` bytes.
    fn nodes(object: &[u8], cuts: &[usize], slice: usize) -> Vec<Subtree> {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < object.len()));
        bounds.push(object.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut out = Vec::new();
        for w in bounds.windows(2) {
            let mut h = PieceHasher::new(w[0] as u64, (w[1] - w[0]) as u64).unwrap();
            for s in object[w[0]..w[1]].chunks(slice) {
                h.update(s);
            }
            out.extend(h.finish().unwrap());
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn pieces_combine_to_the_objects_hash(
            len in 1025usize..600_000,
            cuts in proptest::collection::vec(1usize..600, 0..6),
            slice in 1usize..70_000,
            seed: u8,
        ) {
            let object = data(len, seed);
            let cuts: Vec<usize> = cuts.iter().map(|c| c * 1024).collect();
            let nodes = nodes(&object, &cuts, slice);
            prop_assert_eq!(combine(&nodes, len as u64), Some(blake3::hash(&object)));
        }
    }

    #[test]
    fn multipart_shapes_combine() {
        // S3 multipart uploads: equal parts and a short last one, from 5 MiB parts (not a power
        // of two) to 8 MiB ones; and an object ending exactly on a part boundary.
        for (part, total) in [
            (5 << 20, (17 << 20) + 12_345),
            (8 << 20, 20 << 20),
            (5 << 20, 15 << 20),
        ] {
            let object = data(total, 3);
            let cuts: Vec<usize> = (1..).map(|i| i * part).take_while(|&c| c < total).collect();
            let nodes = nodes(&object, &cuts, 65_536);
            assert_eq!(combine(&nodes, total as u64), Some(blake3::hash(&object)));
        }
    }

    #[test]
    fn anything_but_an_exact_cover_is_refused() {
        let object = data(10_000, 1);
        let all = nodes(&object, &[4096], 1000);
        assert_eq!(combine(&all, 10_000), Some(blake3::hash(&object)));
        // A node missing, the wrong total, one byte changed.
        assert_eq!(combine(&all[1..], 10_000), None);
        assert_eq!(combine(&all[..all.len() - 1], 10_000), None);
        assert_eq!(combine(&all, 10_001), None);
        let mut other = object.clone();
        other[5000] ^= 1;
        assert_ne!(
            combine(&nodes(&other, &[4096], 1000), 10_000),
            Some(blake3::hash(&object))
        );
        // Pieces hashed at the wrong offsets cover the wrong ranges.
        let mut h = PieceHasher::new(2048, 4096).unwrap();
        h.update(&object[..4096]);
        let mut shifted = h.finish().unwrap();
        shifted.extend(nodes(&object[4096..], &[], 1000));
        assert_eq!(combine(&shifted, 10_000), None);
        // One chunk or less, or a single node: hash directly.
        assert_eq!(combine(&nodes(&object[..1024], &[], 7), 1024), None);
        assert_eq!(combine(&nodes(&object[..8192], &[], 7), 8192), None);
    }

    #[test]
    fn bad_pieces_are_errors() {
        assert_eq!(
            PieceHasher::new(1000, 10).unwrap_err(),
            PieceError::Unaligned(1000)
        );
        assert_eq!(PieceHasher::new(0, 0).unwrap_err(), PieceError::Empty);
        let mut h = PieceHasher::new(0, 10).unwrap();
        h.update(&[0; 11]);
        assert_eq!(
            h.finish().unwrap_err(),
            PieceError::Length {
                expected: 10,
                got: 11
            }
        );
        assert_eq!(
            PieceHasher::new(u64::MAX - 1023, 1024).unwrap_err(),
            PieceError::Overflow
        );
    }
}
