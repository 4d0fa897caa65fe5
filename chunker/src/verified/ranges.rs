//! Sizes: which chunks a byte range's proof covers, which bytes of the shard it reads, and how
//! long its proof stream is.

use std::ops::Range;

use bao_tree::iter::{BaoChunk, ResponseIter};
use bao_tree::{BaoTree, ChunkNum, ChunkRanges};

use super::{BLOCK_SIZE, CHUNK_BYTES, GROUP_BYTES, PAIR_BYTES, ProofError};

pub(super) fn check_range(size: u64, range: &Range<u64>) -> Result<(), ProofError> {
    let ok = if size == 0 {
        range.start == 0 && range.end == 0
    } else {
        range.start < range.end && range.end <= size
    };
    if ok {
        Ok(())
    } else {
        Err(ProofError::BadRange {
            start: range.start,
            end: range.end,
            size,
        })
    }
}

/// The chunk ranges covering a byte range. A range that reaches the end of the shard is open
/// ended, as `bao-tree` normalises it, so encoder and decoder walk the same tree nodes.
pub(super) fn chunk_ranges(size: u64, range: &Range<u64>) -> ChunkRanges {
    let start = ChunkNum(range.start / CHUNK_BYTES);
    let end = range.end.div_ceil(CHUNK_BYTES).max(start.0 + 1);
    if end >= size.div_ceil(CHUNK_BYTES) {
        // The range includes the last chunk.
        return ChunkRanges::from(start..);
    }
    ChunkRanges::from(start..ChunkNum(end))
}

/// The bytes of a shard that the proof for `range` reads: the 16 KiB groups it touches (to
/// the end of the shard when it reaches the last chunk, as `chunk_ranges` normalises it).
pub fn needed_bytes(size: u64, range: Range<u64>) -> Range<u64> {
    let group = GROUP_BYTES as u64;
    let start = range.start / group * group;
    let end = if range.end.div_ceil(CHUNK_BYTES) >= size.div_ceil(CHUNK_BYTES) {
        size
    } else {
        range.end.div_ceil(group).saturating_mul(group).min(size)
    };
    start.min(size)..end
}

/// Exact length of the proof stream for `range` of a shard of `size` bytes.
///
/// Network code uses it to know how many bytes a response may carry.
pub fn encoded_len(size: u64, range: Range<u64>) -> u64 {
    if check_range(size, &range).is_err() || size == 0 {
        return 0;
    }
    ResponseIter::new(BaoTree::new(size, BLOCK_SIZE), chunk_ranges(size, &range))
        .map(|item| match item {
            BaoChunk::Parent { .. } => PAIR_BYTES as u64,
            BaoChunk::Leaf { size, .. } => size as u64,
        })
        .sum()
}
