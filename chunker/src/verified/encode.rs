//! Encoding: a holder's proof stream for a byte range, from the whole shard or from a window of
//! the pieces it keeps, data and outboard checked against the root on the way.

use std::ops::Range;

use bao_tree::BaoTree;
use bao_tree::io::outboard::PreOrderMemOutboard;

use super::ranges::{check_range, chunk_ranges};
use super::{BLOCK_SIZE, ProofError, encoded_len, needed_bytes, outboard_size};

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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::verified::test_data::data;
    use crate::verified::{GROUP_BYTES, RangeDecoder, outboard};

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
