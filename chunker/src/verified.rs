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

use std::ops::Range;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::iter::{BaoChunk, ResponseIter};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

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

/// Length in bytes of the outboard of a shard of `size` bytes.
pub fn outboard_size(size: u64) -> u64 {
    BaoTree::new(size, BLOCK_SIZE).outboard_size()
}

/// Computes a shard's BLAKE3 root (the digest in its CID) and its pre-order outboard in one pass.
///
/// Every 16 KiB group is hashed once, with BLAKE3's full SIMD width, and the inner nodes are
/// merged from the groups' chaining values, so this runs at nearly the speed of a plain hash.
pub fn outboard(data: &[u8]) -> (blake3::Hash, Vec<u8>) {
    let (root, out, _) = outboard_impl(data, None);
    (root, out)
}

/// Like [`outboard`], and also the BLAKE3 chaining value of `data` as the subtree of a larger
/// object in which it starts at byte `object_offset`, computed group by group while each group
/// is still in the CPU cache. The encoder uses it to hash the whole object for free of a second
/// pass over memory.
///
/// `object_offset` must be a multiple of `data.len()` rounded up to a power of two (at least
/// 1 KiB), so that `data` is a subtree of the object's tree; the object must also be longer than
/// `data` (a one-subtree object's hash is the shard root itself).
pub fn outboard_with_object_cv(
    data: &[u8],
    object_offset: u64,
) -> (blake3::Hash, Vec<u8>, [u8; 32]) {
    debug_assert!(object_offset.is_multiple_of((data.len() as u64).next_power_of_two().max(1024)));
    let (root, out, cv) = outboard_impl(data, Some(object_offset));
    (root, out, cv.unwrap_or_else(|| unreachable!("requested")))
}

/// Chaining values of one subtree: over the shard, and over the object when asked.
type Cvs = (ChainingValue, Option<ChainingValue>);

fn merge(l: Cvs, r: Cvs) -> Cvs {
    (
        merge_subtrees_non_root(&l.0, &r.0, Mode::Hash),
        l.1.zip(r.1)
            .map(|(a, b)| merge_subtrees_non_root(&a, &b, Mode::Hash)),
    )
}

fn outboard_impl(
    data: &[u8],
    object: Option<u64>,
) -> (blake3::Hash, Vec<u8>, Option<ChainingValue>) {
    let size = data.len() as u64;
    // Both conversions are exact: an outboard is ~0.4 % of data already in memory.
    let mut out = vec![0u8; outboard_size(size) as usize];
    if data.len() <= GROUP_BYTES {
        return (blake3::hash(data), out, object.map(|o| group_cv(data, o)));
    }
    let mut pos = 0;
    let (left, right) = build(data, 0, object, &mut out, &mut pos);
    debug_assert_eq!(pos, out.len());
    let object_cv = merge(left, right).1;
    (
        merge_subtrees_root(&left.0, &right.0, Mode::Hash),
        out,
        object_cv,
    )
}

/// Hashes the subtree over `data` (which starts at byte `offset` of the shard and `object` of
/// the object, and is longer than one group), writes its inner pairs in pre-order at `pos`, and
/// returns its two children's chaining values.
fn build(
    data: &[u8],
    offset: u64,
    object: Option<u64>,
    out: &mut [u8],
    pos: &mut usize,
) -> (Cvs, Cvs) {
    let slot = *pos;
    *pos += PAIR_BYTES;
    // The left subtree is the largest power-of-two number of chunks that leaves a non-empty right
    // side; for inputs above one group it is a whole number of groups.
    let left_len = blake3::hazmat::left_subtree_len(data.len() as u64) as usize;
    let (l, r) = data.split_at(left_len);
    let left = subtree_cv(l, offset, object, out, pos);
    let right = subtree_cv(
        r,
        offset + left_len as u64,
        object.map(|o| o + left_len as u64),
        out,
        pos,
    );
    out[slot..slot + 32].copy_from_slice(&left.0);
    out[slot + 32..slot + PAIR_BYTES].copy_from_slice(&right.0);
    (left, right)
}

fn subtree_cv(
    data: &[u8],
    offset: u64,
    object: Option<u64>,
    out: &mut [u8],
    pos: &mut usize,
) -> Cvs {
    if data.len() <= GROUP_BYTES {
        // The group is in L1 now: its second hash (at the object offset) reads no memory.
        (group_cv(data, offset), object.map(|o| group_cv(data, o)))
    } else {
        let (l, r) = build(data, offset, object, out, pos);
        merge(l, r)
    }
}

fn group_cv(data: &[u8], offset: u64) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    hasher.finalize_non_root()
}

fn check_range(size: u64, range: &Range<u64>) -> Result<(), ProofError> {
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
fn chunk_ranges(size: u64, range: &Range<u64>) -> ChunkRanges {
    let start = ChunkNum(range.start / CHUNK_BYTES);
    let end = range.end.div_ceil(CHUNK_BYTES).max(start.0 + 1);
    if end >= size.div_ceil(CHUNK_BYTES) {
        // The range includes the last chunk.
        return ChunkRanges::from(start..);
    }
    ChunkRanges::from(start..ChunkNum(end))
}

/// Writes the proof stream for `range` of a shard to `out`.
///
/// `root` is the digest from the shard's CID. Data and outboard are checked against it while
/// encoding; if they no longer match (bitrot, tampering), this fails with
/// [`ProofError::CorruptSource`] and the caller must not serve the shard.
///
/// For an empty shard the only range is `0..0`; its proof stream is empty.
pub fn encode_range(
    root: &blake3::Hash,
    data: &[u8],
    outboard: &[u8],
    range: Range<u64>,
    out: &mut Vec<u8>,
) -> Result<(), ProofError> {
    encode_range_window(root, data.len() as u64, 0, &[data], outboard, range, out)
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

/// [`encode_range`] for a store that keeps a shard in pieces: `window` holds consecutive
/// stretches of the shard's bytes (pieces, not joined), the first starting at byte `offset`,
/// and together they must cover [`needed_bytes`] of `range` (a shard of `size` bytes). Same
/// checks and errors as `encode_range`, plus [`ProofError::Uncovered`].
pub fn encode_range_window<P: AsRef<[u8]>>(
    root: &blake3::Hash,
    size: u64,
    offset: u64,
    window: &[P],
    outboard: &[u8],
    range: Range<u64>,
    out: &mut Vec<u8>,
) -> Result<(), ProofError> {
    check_range(size, &range)?;
    let expected = outboard_size(size);
    if outboard.len() as u64 != expected {
        return Err(ProofError::OutboardSize {
            got: outboard.len(),
            expected,
            size,
        });
    }
    let len: usize = window.iter().map(|p| p.as_ref().len()).sum();
    let have = offset..offset + len as u64;
    let need = needed_bytes(size, range.clone());
    if have.end > size || need.start < have.start || need.end > have.end {
        return Err(ProofError::Uncovered {
            have_start: have.start,
            have_end: have.end,
            need_start: need.start,
            need_end: need.end,
        });
    }
    if size == 0 {
        return if blake3::hash(b"") == *root {
            Ok(())
        } else {
            Err(ProofError::CorruptSource { offset: 0 })
        };
    }
    let ob = PreOrderMemOutboard {
        root: *root,
        tree: BaoTree::new(size, BLOCK_SIZE),
        data: outboard,
    };
    let ranges = chunk_ranges(size, &range);
    out.reserve(encoded_len(size, range) as usize);
    let data = Window {
        offset,
        pieces: window,
    };
    bao_tree::io::sync::encode_ranges_validated(data, &ob, &ranges, out).map_err(|e| {
        use bao_tree::io::EncodeError as E;
        match e {
            E::ParentHashMismatch(node) => ProofError::CorruptSource {
                offset: node.chunk_range().start.to_bytes(),
            },
            E::LeafHashMismatch(chunk) => ProofError::CorruptSource {
                offset: chunk.to_bytes(),
            },
            // A read outside the window: the coverage check above rules it out.
            E::Io(_) => ProofError::Uncovered {
                have_start: have.start,
                have_end: have.end,
                need_start: need.start,
                need_end: need.end,
            },
            _ => ProofError::CorruptSource { offset: 0 },
        }
    })
}

/// Consecutive stretches of a shard's bytes, the first starting at byte `offset` of the shard.
struct Window<'a, P> {
    offset: u64,
    pieces: &'a [P],
}

impl<P: AsRef<[u8]>> bao_tree::io::sync::ReadAt for Window<'_, P> {
    /// Reads from the piece holding `pos`, up to its end (`read_exact_at` calls again for
    /// the rest).
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let outside = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("byte {pos} is outside the window"),
            )
        };
        let mut at = pos.checked_sub(self.offset).ok_or_else(outside)?;
        for piece in self.pieces {
            let piece = piece.as_ref();
            if at < piece.len() as u64 {
                let at = at as usize;
                let n = buf.len().min(piece.len() - at);
                buf[..n].copy_from_slice(&piece[at..at + n]);
                return Ok(n);
            }
            at -= piece.len() as u64;
        }
        if at == 0 { Ok(0) } else { Err(outside()) }
    }
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

/// Verifies a whole shard sent as `outboard ‖ data` (the cheapest verified transfer of a whole
/// shard: both halves travel as they are stored, and the reader copies data once).
///
/// The outboard is checked against the root before any data is accepted; then every 16 KiB
/// group is checked as soon as it is complete, so a bad byte is caught within 16 KiB of arriving.
#[derive(Debug)]
pub struct OutboardVerifier {
    root: blake3::Hash,
    size: u64,
    /// Expected chaining value of each group (empty when the shard is a single group).
    groups: Vec<ChainingValue>,
    /// Groups verified so far.
    done: usize,
}

impl OutboardVerifier {
    /// Checks `outboard` against `root` for a shard of `size` bytes.
    pub fn new(root: blake3::Hash, size: u64, outboard: &[u8]) -> Result<Self, ProofError> {
        let expected = outboard_size(size);
        if outboard.len() as u64 != expected {
            return Err(ProofError::OutboardSize {
                got: outboard.len(),
                expected,
                size,
            });
        }
        let mut groups = Vec::new();
        if size > GROUP_BYTES as u64 {
            let mut pos = 0;
            let root_cv = *root.as_bytes();
            Self::walk(root_cv, true, 0, size, outboard, &mut pos, &mut groups)?;
        }
        Ok(Self {
            root,
            size,
            groups,
            done: 0,
        })
    }

    fn walk(
        expected: ChainingValue,
        is_root: bool,
        at: u64,
        len: u64,
        ob: &[u8],
        pos: &mut usize,
        groups: &mut Vec<ChainingValue>,
    ) -> Result<(), ProofError> {
        if len <= GROUP_BYTES as u64 {
            groups.push(expected);
            return Ok(());
        }
        let mut l = [0u8; 32];
        let mut r = [0u8; 32];
        l.copy_from_slice(&ob[*pos..*pos + 32]);
        r.copy_from_slice(&ob[*pos + 32..*pos + PAIR_BYTES]);
        *pos += PAIR_BYTES;
        let actual = if is_root {
            *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
        } else {
            merge_subtrees_non_root(&l, &r, Mode::Hash)
        };
        if actual != expected {
            return Err(ProofError::BadParent {
                start: at,
                end: at + len,
            });
        }
        let left = blake3::hazmat::left_subtree_len(len);
        Self::walk(l, false, at, left, ob, pos, groups)?;
        Self::walk(r, false, at + left, len - left, ob, pos, groups)
    }

    /// Verifies every group of `data` (the shard's first `data.len()` bytes) that is complete
    /// and not yet verified. Call it as bytes arrive; once `data` is the whole shard, every byte
    /// has been checked.
    pub fn check(&mut self, data: &[u8]) -> Result<(), ProofError> {
        self.check_tail(0, data).map(|_| ())
    }

    /// Like [`OutboardVerifier::check`], for a reader that keeps only the bytes it has not yet
    /// handed on: `tail` holds the shard's bytes from offset `base` (at most
    /// [`OutboardVerifier::verified`]). Returns how many bytes of the shard are now verified.
    pub fn check_tail(&mut self, base: u64, tail: &[u8]) -> Result<u64, ProofError> {
        let have = base + tail.len() as u64;
        if have > self.size {
            return Err(ProofError::TrailingBytes((have - self.size) as usize));
        }
        if base > self.verified() {
            return Err(ProofError::Truncated {
                missing: base - self.verified(),
            });
        }
        if self.groups.is_empty() {
            if have == self.size && self.done == 0 {
                if base != 0 || blake3::hash(tail) != self.root {
                    return Err(ProofError::BadData {
                        start: 0,
                        end: have,
                    });
                }
                self.done = 1;
            }
            return Ok(self.verified());
        }
        while self.done < self.groups.len() {
            let start = (self.done * GROUP_BYTES) as u64;
            let end = (start + GROUP_BYTES as u64).min(self.size);
            if have < end {
                break;
            }
            let group = &tail[(start - base) as usize..(end - base) as usize];
            if group_cv(group, start) != self.groups[self.done] {
                return Err(ProofError::BadData { start, end });
            }
            self.done += 1;
        }
        Ok(self.verified())
    }

    /// Bytes of the shard, from its start, verified so far.
    pub fn verified(&self) -> u64 {
        if self.groups.is_empty() {
            if self.done == 1 { self.size } else { 0 }
        } else {
            ((self.done * GROUP_BYTES) as u64).min(self.size)
        }
    }

    /// True once every byte has been verified.
    pub fn is_done(&self) -> bool {
        self.done == self.groups.len().max(1)
    }
}

/// A push-based verifier for a proof stream (sans-IO: feed it whatever bytes arrive).
///
/// Each 16 KiB group is checked before any of its bytes reach the sink, and only the bytes
/// inside the requested range are handed on, with their offset in the shard.
#[derive(Debug)]
pub struct RangeDecoder {
    iter: ResponseIter,
    stack: Vec<blake3::Hash>,
    item: Option<BaoChunk>,
    buf: Vec<u8>,
    range: Range<u64>,
    remaining: u64,
    empty_root: Option<blake3::Hash>,
}

impl RangeDecoder {
    /// Starts verifying a proof stream for `range` of a shard of `size` bytes whose BLAKE3 root
    /// (the digest in its CID) is `root`.
    pub fn new(root: blake3::Hash, size: u64, range: Range<u64>) -> Result<Self, ProofError> {
        check_range(size, &range)?;
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let remaining = encoded_len(size, range.clone());
        Ok(Self {
            iter: ResponseIter::new(tree, chunk_ranges(size, &range)),
            stack: vec![root],
            item: None,
            buf: Vec::with_capacity(GROUP_BYTES),
            range,
            remaining,
            empty_root: (size == 0).then_some(root),
        })
    }

    /// Bytes of proof stream still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// True once the whole proof stream has been received and verified.
    pub fn is_done(&self) -> bool {
        self.remaining == 0 && self.empty_root.is_none()
    }

    /// Feeds the next bytes of the stream. `sink(offset, bytes)` receives every verified piece
    /// of the requested range, in order. On error, nothing unverified has reached the sink and
    /// the decoder must be dropped.
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(u64, &[u8]),
    ) -> Result<(), ProofError> {
        if let Some(root) = self.empty_root.take()
            && root != blake3::hash(b"")
        {
            return Err(ProofError::BadData { start: 0, end: 0 });
        }
        while !input.is_empty() {
            if self.item.is_none() {
                self.item = self.iter.next();
            }
            let Some(item) = self.item.as_ref() else {
                return Err(ProofError::TrailingBytes(input.len()));
            };
            let need = match item {
                BaoChunk::Parent { .. } => PAIR_BYTES,
                BaoChunk::Leaf { size, .. } => *size,
            };
            let bytes: &[u8] = if self.buf.is_empty() && input.len() >= need {
                let (now, rest) = input.split_at(need);
                input = rest;
                self.remaining -= need as u64;
                now
            } else {
                let take = (need - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..take]);
                input = &input[take..];
                self.remaining -= take as u64;
                if self.buf.len() < need {
                    continue;
                }
                &self.buf
            };
            // `item` is Some here; take it so the next iteration fetches a new one.
            let item = self
                .item
                .take()
                .unwrap_or_else(|| unreachable!("item was checked above"));
            Self::verify_item(&mut self.stack, &self.range, item, bytes, &mut sink)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn verify_item(
        stack: &mut Vec<blake3::Hash>,
        range: &Range<u64>,
        item: BaoChunk,
        bytes: &[u8],
        sink: &mut impl FnMut(u64, &[u8]),
    ) -> Result<(), ProofError> {
        let expected = stack
            .pop()
            .unwrap_or_else(|| unreachable!("the response iterator pairs every item with a hash"));
        match item {
            BaoChunk::Parent {
                node,
                is_root,
                left,
                right,
                ..
            } => {
                let mut l = [0u8; 32];
                let mut r = [0u8; 32];
                l.copy_from_slice(&bytes[..32]);
                r.copy_from_slice(&bytes[32..64]);
                let actual = if is_root {
                    merge_subtrees_root(&l, &r, Mode::Hash)
                } else {
                    blake3::Hash::from(merge_subtrees_non_root(&l, &r, Mode::Hash))
                };
                if actual != expected {
                    let chunks = node.chunk_range();
                    return Err(ProofError::BadParent {
                        start: chunks.start.to_bytes(),
                        end: chunks.end.to_bytes(),
                    });
                }
                if right {
                    stack.push(blake3::Hash::from_bytes(r));
                }
                if left {
                    stack.push(blake3::Hash::from_bytes(l));
                }
            }
            BaoChunk::Leaf {
                start_chunk,
                is_root,
                ..
            } => {
                let start = start_chunk.to_bytes();
                let actual = if is_root {
                    blake3::hash(bytes)
                } else {
                    blake3::Hash::from(group_cv(bytes, start))
                };
                if actual != expected {
                    return Err(ProofError::BadData {
                        start,
                        end: start + bytes.len() as u64,
                    });
                }
                let end = start + bytes.len() as u64;
                let from = range.start.max(start);
                let to = range.end.min(end);
                if from < to {
                    sink(from, &bytes[(from - start) as usize..(to - start) as usize]);
                }
            }
        }
        Ok(())
    }

    /// Checks that the whole stream arrived.
    pub fn finish(mut self) -> Result<(), ProofError> {
        if self.empty_root.is_some() {
            self.push(&[], |_, _| {})?;
        }
        if self.remaining > 0 {
            return Err(ProofError::Truncated {
                missing: self.remaining,
            });
        }
        Ok(())
    }
}

/// Verifies a complete proof stream and returns exactly the bytes of `range`.
pub fn verify_range(
    root: &blake3::Hash,
    size: u64,
    range: Range<u64>,
    proof: &[u8],
) -> Result<Vec<u8>, ProofError> {
    let mut decoder = RangeDecoder::new(*root, size, range.clone())?;
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    decoder.push(proof, |_, bytes| out.extend_from_slice(bytes))?;
    decoder.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        cairn_testkit::data::bytes(len, 1)
    }

    const SIZES: &[usize] = &[
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

    #[test]
    fn root_equals_blake3_and_outboard_matches_bao_tree() {
        for &len in SIZES {
            let d = data(len);
            let (root, ob) = outboard(&d);
            assert_eq!(root, blake3::hash(&d), "len {len}");
            let reference = PreOrderMemOutboard::<Vec<u8>>::create(&d, BLOCK_SIZE);
            assert_eq!(reference.root, root, "len {len}");
            assert_eq!(reference.data, ob, "outboard layout differs at len {len}");
            assert_eq!(ob.len() as u64, outboard_size(len as u64));
        }
    }

    #[test]
    fn object_cv_is_the_subtree_of_the_object() {
        // Shards of a power-of-two size at aligned offsets: their object CVs merge to the
        // object's BLAKE3.
        for shard in [16 * 1024usize, 64 * 1024] {
            for len in [2 * shard, 3 * shard + 5000, 4 * shard] {
                let d = data(len);
                let mut cvs: Vec<ChainingValue> = Vec::new();
                for (i, piece) in d.chunks(shard).enumerate() {
                    let (root, ob, cv) = outboard_with_object_cv(piece, (i * shard) as u64);
                    assert_eq!((root, ob), outboard(piece));
                    cvs.push(cv);
                }
                // Merge like BLAKE3 does for equal-size leaves: left-balanced.
                fn merge_all(cvs: &[ChainingValue], root: bool) -> ChainingValue {
                    if cvs.len() == 1 {
                        return cvs[0];
                    }
                    // The left subtree holds the largest power of two of leaves below the total.
                    let n = cvs.len();
                    let split = if n.is_power_of_two() {
                        n / 2
                    } else {
                        n.next_power_of_two() / 2
                    };
                    let (l, r) = (
                        merge_all(&cvs[..split], false),
                        merge_all(&cvs[split..], false),
                    );
                    if root {
                        *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
                    } else {
                        merge_subtrees_non_root(&l, &r, Mode::Hash)
                    }
                }
                assert_eq!(
                    merge_all(&cvs, true),
                    *blake3::hash(&d).as_bytes(),
                    "shard {shard} len {len}"
                );
            }
        }
    }

    #[test]
    fn full_and_partial_ranges_round_trip() {
        for &len in SIZES {
            let d = data(len);
            let (root, ob) = outboard(&d);
            let size = len as u64;
            let mut ranges = Vec::new();
            ranges.push(0..size);
            if size > 2 {
                ranges.push(1..size - 1);
                ranges.push(size / 2..size / 2 + 1);
                ranges.push(size - 1..size);
            }
            for range in ranges {
                let mut proof = Vec::new();
                encode_range(&root, &d, &ob, range.clone(), &mut proof).unwrap();
                assert_eq!(proof.len() as u64, encoded_len(size, range.clone()));
                let got = verify_range(&root, size, range.clone(), &proof).unwrap();
                assert_eq!(got, &d[range.start as usize..range.end as usize]);
            }
        }
    }

    #[test]
    fn outboard_verifier_accepts_good_and_catches_every_bad_group() {
        for &len in SIZES {
            let d = data(len);
            let (root, ob) = outboard(&d);
            let mut v = OutboardVerifier::new(root, len as u64, &ob).unwrap();
            // Fed in odd-sized steps, as a network would.
            let mut fed = 0;
            while fed < len {
                fed = (fed + 7777).min(len);
                v.check(&d[..fed]).unwrap();
            }
            assert!(v.is_done() || len == 0, "len {len}");
            // The same, keeping only the bytes not yet verified, as a streaming reader does.
            let mut v = OutboardVerifier::new(root, len as u64, &ob).unwrap();
            let (mut base, mut fed) = (0usize, 0usize);
            while fed < len {
                fed = (fed + 5000).min(len);
                base = v.check_tail(base as u64, &d[base..fed]).unwrap() as usize;
            }
            assert_eq!(v.verified(), len as u64);
            assert!(v.is_done() || len == 0, "len {len}");
            if len > 0 {
                // A flipped data byte anywhere, or a flipped outboard byte, is caught.
                for at in [0, len / 2, len - 1] {
                    let mut bad = d.clone();
                    bad[at] ^= 1;
                    let mut v = OutboardVerifier::new(root, len as u64, &ob).unwrap();
                    assert!(v.check(&bad).is_err(), "data flip at {at} of {len}");
                    // Streaming: the group holding the flip is never reported verified.
                    let mut v = OutboardVerifier::new(root, len as u64, &ob).unwrap();
                    let (mut base, mut fed) = (0usize, 0usize);
                    let mut failed = false;
                    while fed < len && !failed {
                        fed = (fed + 5000).min(len);
                        match v.check_tail(base as u64, &bad[base..fed]) {
                            Ok(n) => base = n as usize,
                            Err(_) => failed = true,
                        }
                    }
                    assert!(failed, "streamed data flip at {at} of {len}");
                    assert!(v.verified() <= at as u64, "flip at {at} reported verified");
                }
            }
            if !ob.is_empty() {
                let mut bad = ob.clone();
                bad[ob.len() / 2] ^= 1;
                assert!(OutboardVerifier::new(root, len as u64, &bad).is_err());
            }
        }
    }

    #[test]
    fn every_flipped_bit_in_proof_is_rejected() {
        // A shard of a few groups, so the proof has parents and leaves; flip each bit in turn.
        let d = data(3 * GROUP_BYTES + 100);
        let (root, ob) = outboard(&d);
        let mut proof = Vec::new();
        encode_range(&root, &d, &ob, 0..d.len() as u64, &mut proof).unwrap();
        // Every bit of the parents and a sample of bits across every data byte.
        for byte in (0..proof.len()).filter(|i| *i < 256 || i % 97 == 0) {
            for bit in 0..8 {
                let mut bad = proof.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    verify_range(&root, d.len() as u64, 0..d.len() as u64, &bad).is_err(),
                    "flip of byte {byte} bit {bit} was accepted"
                );
            }
        }
    }

    #[test]
    fn corrupt_source_is_refused_by_encoder() {
        let mut d = data(5 * GROUP_BYTES);
        let (root, ob) = outboard(&d);
        d[4 * GROUP_BYTES + 3] ^= 0x10;
        let mut proof = Vec::new();
        let err = encode_range(&root, &d, &ob, 0..d.len() as u64, &mut proof).unwrap_err();
        assert!(
            matches!(err, ProofError::CorruptSource { offset } if offset == 4 * GROUP_BYTES as u64),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_trailing_streams_fail() {
        let d = data(2 * GROUP_BYTES + 5);
        let (root, ob) = outboard(&d);
        let size = d.len() as u64;
        let mut proof = Vec::new();
        encode_range(&root, &d, &ob, 0..size, &mut proof).unwrap();
        let short = &proof[..proof.len() - 1];
        assert!(matches!(
            verify_range(&root, size, 0..size, short),
            Err(ProofError::Truncated { missing: 1 })
        ));
        let mut long = proof.clone();
        long.push(0);
        assert!(matches!(
            verify_range(&root, size, 0..size, &long),
            Err(ProofError::TrailingBytes(1))
        ));
        // The wrong size changes the tree shape: nothing verifies.
        assert!(verify_range(&root, size + 1, 0..size, &proof).is_err());
    }

    #[test]
    fn bad_ranges_are_errors() {
        let d = data(100);
        let (root, ob) = outboard(&d);
        let mut out = Vec::new();
        #[allow(clippy::reversed_empty_ranges)]
        let bad = [0..0, 50..40, 0..101, 100..101];
        for range in bad {
            assert!(matches!(
                encode_range(&root, &d, &ob, range.clone(), &mut out),
                Err(ProofError::BadRange { .. })
            ));
            assert!(RangeDecoder::new(root, 100, range).is_err());
        }
        assert!(matches!(
            encode_range(&root, &d, &ob[..0], 0..1, &mut out),
            Ok(()) // 100 bytes: one group, no outboard at all
        ));
        let big = data(GROUP_BYTES * 2);
        let (root, ob) = outboard(&big);
        assert!(matches!(
            encode_range(&root, &big, &ob[1..], 0..1, &mut out),
            Err(ProofError::OutboardSize { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_range_any_split_verifies(
            len in 1usize..200_000,
            a in any::<u64>(),
            b in any::<u64>(),
            split in 1usize..5000,
        ) {
            let d = data(len);
            let (root, ob) = outboard(&d);
            let size = len as u64;
            let (x, y) = (a % size, b % size);
            let range = x.min(y)..x.max(y) + 1;
            let mut proof = Vec::new();
            encode_range(&root, &d, &ob, range.clone(), &mut proof).unwrap();
            let mut decoder = RangeDecoder::new(root, size, range.clone()).unwrap();
            let mut got = Vec::new();
            let mut next = range.start;
            for piece in proof.chunks(split) {
                decoder.push(piece, |off, bytes| {
                    assert_eq!(off, next);
                    next += bytes.len() as u64;
                    got.extend_from_slice(bytes);
                }).unwrap();
            }
            prop_assert!(decoder.is_done());
            decoder.finish().unwrap();
            prop_assert_eq!(&got[..], &d[range.start as usize..range.end as usize]);
        }

        /// A store holding only the bytes a range's proof needs builds the same proof as one
        /// holding the whole shard, and one holding a byte less on either side is refused.
        #[test]
        fn a_window_of_the_needed_bytes_gives_the_same_proof(
            len in 1usize..300_000,
            a in any::<u64>(),
            b in any::<u64>(),
        ) {
            let d = data(len);
            let (root, ob) = outboard(&d);
            let size = len as u64;
            let (x, y) = (a % size, b % size);
            let range = x.min(y)..x.max(y) + 1;
            let mut whole = Vec::new();
            encode_range(&root, &d, &ob, range.clone(), &mut whole).unwrap();
            let need = needed_bytes(size, range.clone());
            prop_assert!(need.start <= range.start && range.end <= need.end);
            let window = &d[need.start as usize..need.end as usize];
            let mut windowed = Vec::new();
            encode_range_window(&root, size, need.start, &[window], &ob, range.clone(), &mut windowed)
                .unwrap();
            prop_assert_eq!(&windowed, &whole);
            // The same bytes as pieces of any size, not joined.
            let piece = 1 + (a as usize % window.len().max(1));
            let pieces: Vec<&[u8]> = window.chunks(piece).collect();
            let mut from_pieces = Vec::new();
            encode_range_window(&root, size, need.start, &pieces, &ob, range.clone(), &mut from_pieces)
                .unwrap();
            prop_assert_eq!(&from_pieces, &whole);
            let short_end = &window[..window.len() - 1];
            let err = encode_range_window(&root, size, need.start, &[short_end], &ob, range.clone(), &mut Vec::new());
            prop_assert!(matches!(err, Err(ProofError::Uncovered { .. })), "{:?}", err);
            if need.start > 0 {
                let late = &d[need.start as usize + 1..need.end as usize];
                let err = encode_range_window(&root, size, need.start + 1, &[late], &ob, range.clone(), &mut Vec::new());
                prop_assert!(matches!(err, Err(ProofError::Uncovered { .. })), "{:?}", err);
            }
            // A flipped byte inside the window is still caught.
            let mut bad = window.to_vec();
            let at = (range.start - need.start) as usize;
            bad[at] ^= 1;
            let err = encode_range_window(&root, size, need.start, &[&bad[..]], &ob, range, &mut Vec::new());
            prop_assert!(matches!(err, Err(ProofError::CorruptSource { .. })), "{:?}", err);
        }
    }
}
