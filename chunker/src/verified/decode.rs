//! Decoding: a proof stream checked as it arrives, pair by pair and group by group, and only
//! verified bytes of the requested range handed on.

use std::ops::Range;

use bao_tree::BaoTree;
use bao_tree::iter::{BaoChunk, ResponseIter};
use blake3::hazmat::{Mode, merge_subtrees_non_root, merge_subtrees_root};

use super::outboard::group_cv;
use super::ranges::{check_range, chunk_ranges};
use super::{BLOCK_SIZE, GROUP_BYTES, PAIR_BYTES, ProofError, encoded_len};

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
    use crate::verified::test_data::{SIZES, data};
    use crate::verified::{encode_range, outboard};

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
    }
}
