//! Verified streaming: BLAKE3 outboards and range proofs that verify against a CID alone.
//!
//! A shard's CID holds the root of the shard's BLAKE3 tree. The *outboard* is the list of the
//! tree's inner hash pairs (64 bytes each) in pre-order, with 16 KiB chunk groups as leaves
//! (the layout of `bao-tree`'s `PreOrderOutboard` at `BlockSize::from_chunk_log(4)`): about
//! 0.4 % of the shard's size. With data and outboard, a holder can answer any byte range with
//! a *proof stream*: the hash pairs on the path to each requested group, interleaved with the
//! groups' bytes, in the order a reader needs them. The reader checks every pair and every
//! group against the root as the bytes arrive ([`RangeDecoder`]), so a single flipped bit in
//! data or proof is caught at the 16 KiB group it touches, before any of it is handed on.
//!
//! ```
//! use cairn_chunker::verified::{self, RangeDecoder};
//!
//! let shard = vec![7u8; 100_000];
//! let (root, outboard) = verified::outboard(&shard);
//! let mut proof = Vec::new();
//! verified::encode_range(&root, &shard, &outboard, 40_000..40_100, &mut proof).unwrap();
//!
//! let mut decoder = RangeDecoder::new(root, shard.len() as u64, 40_000..40_100).unwrap();
//! let mut got = Vec::new();
//! decoder.push(&proof, |_offset, bytes| got.extend_from_slice(bytes)).unwrap();
//! decoder.finish().unwrap();
//! assert_eq!(got, &shard[40_000..40_100]);
//! ```
//!
//! The code, by concern: `outboard` (a shard's root and outboard in one pass, and the object's
//! chaining value beside them), `ranges` (the chunks and bytes a range's proof covers, and the
//! proof's length), `encode` (a holder's proof stream for a range, from the whole shard or
//! from the pieces it keeps), `decode` (the reader's streaming check, [`RangeDecoder`]) and
//! `outboard_verifier` (a whole shard sent as outboard and data, [`OutboardVerifier`]).

use bao_tree::BlockSize;

mod decode;
mod encode;
mod outboard;
mod outboard_verifier;
mod ranges;

pub use decode::{RangeDecoder, verify_range};
pub use encode::{encode_range, encode_range_window};
pub use outboard::{outboard, outboard_size, outboard_with_object_cv};
pub use outboard_verifier::OutboardVerifier;
pub use ranges::{encoded_len, needed_bytes};

/// Chunk-group size of Cairn outboards, as a `bao-tree` block size: 2^4 BLAKE3 chunks = 16 KiB.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);
/// Chunk-group size in bytes: the unit in which range proofs deliver and verify data.
pub const GROUP_BYTES: usize = 16 * 1024;
const CHUNK_BYTES: u64 = 1024;
const PAIR_BYTES: usize = 64;

/// Why a range could not be encoded or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The requested range lies outside the shard, or is empty.
    #[error("range {start}..{end} is not a non-empty range inside a shard of {size} bytes")]
    BadRange {
        /// Start of the requested range.
        start: u64,
        /// End of the requested range.
        end: u64,
        /// Size of the shard.
        size: u64,
    },
    /// The outboard has the wrong length for the data.
    #[error("outboard is {got} bytes, a {size}-byte shard needs {expected}")]
    OutboardSize {
        /// Length given.
        got: usize,
        /// Length required.
        expected: u64,
        /// Shard size.
        size: u64,
    },
    /// The stored data or outboard no longer matches the root: the holder's copy is corrupt.
    #[error("stored data does not match its hash tree at byte {offset}: the local copy is corrupt")]
    CorruptSource {
        /// Byte offset of the first bad group (or parent) found.
        offset: u64,
    },
    /// A hash pair in the proof stream does not match.
    #[error("proof hash pair for bytes {start}..{end} does not verify")]
    BadParent {
        /// First byte covered by the bad node.
        start: u64,
        /// End of the bytes covered by the bad node.
        end: u64,
    },
    /// A data group in the proof stream does not match its hash.
    #[error("data at bytes {start}..{end} does not verify against the CID")]
    BadData {
        /// First byte of the bad group.
        start: u64,
        /// End of the bad group.
        end: u64,
    },
    /// More bytes arrived than the proof stream can contain.
    #[error("{0} unexpected bytes after the end of the proof stream")]
    TrailingBytes(usize),
    /// The stream ended before the proof was complete.
    #[error("proof stream ended early: {missing} more bytes were expected")]
    Truncated {
        /// Bytes still expected.
        missing: u64,
    },
    /// The bytes given to [`encode_range_window`] do not cover what the range's proof needs.
    #[error("bytes {have_start}..{have_end} were given, the proof needs {need_start}..{need_end}")]
    Uncovered {
        /// First byte given.
        have_start: u64,
        /// End of the bytes given.
        have_end: u64,
        /// First byte needed.
        need_start: u64,
        /// End of the bytes needed.
        need_end: u64,
    },
}

/// Shards for the tests of every part.
#[cfg(test)]
mod test_data {
    use super::GROUP_BYTES;

    pub(super) fn data(len: usize) -> Vec<u8> {
        cairn_testkit::data::bytes(len, 1)
    }

    pub(super) const SIZES: &[usize] = &[
        0,
        1,
        1023,
        1024,
        1025,
        GROUP_BYTES - 1,
        GROUP_BYTES,
        GROUP_BYTES + 1,
        3 * GROUP_BYTES + 17,
        64 * GROUP_BYTES,
        1 << 20,
        (1 << 20) + 1,
    ];
}
