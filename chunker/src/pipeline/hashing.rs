//! The whole-object BLAKE3, computed in blocks: who hashes (reader or workers), the blocks'
//! chaining values, and their merge into the object hash.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use super::{EncodeParams, EncodedShard};
use crate::chunking::Chunking;
use crate::cids::{self, Codec};
use crate::verified;

/// Size of the object-hash blocks workers hash in parallel when shards are not a power of two
/// but stripes are whole multiples of it: a power of two, so every aligned block is a subtree
/// of the object's BLAKE3 tree.
const HASH_BLOCK: usize = 1 << 20;

/// Who computes the whole-object BLAKE3, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObjectHashing {
    /// The reader thread, sequentially (content-defined chunking, odd sizes).
    Reader,
    /// Workers hash aligned blocks of this size in a separate pass over their stripe.
    Blocks(usize),
    /// Workers hash each data shard (a power-of-two size) as an object subtree in the same pass
    /// as its outboard; only a short last stripe takes the `Blocks` path.
    Fused(usize),
}

impl ObjectHashing {
    pub(super) fn choose(p: &EncodeParams) -> Self {
        let shard = p.erasure.shard_size as usize;
        match p.chunking {
            Chunking::Fixed if shard.is_power_of_two() && shard >= verified::GROUP_BYTES => {
                ObjectHashing::Fused(shard)
            }
            Chunking::Fixed if (shard * usize::from(p.erasure.k)).is_multiple_of(HASH_BLOCK) => {
                ObjectHashing::Blocks(HASH_BLOCK)
            }
            _ => ObjectHashing::Reader,
        }
    }
}

/// Merges chaining values of consecutive [`HASH_BLOCK`]s into the object's BLAKE3 hash, exactly
/// as BLAKE3's own hasher merges chunks (lazily, so the last block is never merged early).
#[derive(Debug, Default)]
pub(super) struct CvStack {
    stack: Vec<ChainingValue>,
    count: u64,
    pub(super) first_root: Option<blake3::Hash>,
}

impl CvStack {
    pub(super) fn push(&mut self, cv: ChainingValue) {
        while self.stack.len() > self.count.count_ones() as usize {
            let (Some(r), Some(l)) = (self.stack.pop(), self.stack.pop()) else {
                break;
            };
            self.stack.push(merge_subtrees_non_root(&l, &r, Mode::Hash));
        }
        self.stack.push(cv);
        self.count += 1;
    }

    /// The object hash: the root hash of block 0 when it is the only block, else the merge.
    pub(super) fn finalize(mut self) -> Option<blake3::Hash> {
        if self.count <= 1 {
            return self.first_root;
        }
        let mut right = self.stack.pop()?;
        while let Some(left) = self.stack.pop() {
            if self.stack.is_empty() {
                return Some(merge_subtrees_root(&left, &right, Mode::Hash));
            }
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
        None
    }
}

/// The object-hash work a worker did for its stripe.
#[derive(Debug, Clone, Default)]
pub(super) struct BlockHashes {
    /// Chaining values of the stripe's hash blocks, in order.
    pub(super) cvs: Vec<ChainingValue>,
    /// The root hash of block 0, when block 0 may be the whole object.
    pub(super) first_root: Option<blake3::Hash>,
}

/// The BLAKE3 root of data shard 0 of a stripe (from its CID).
pub(super) fn stripe_first_root(shards: &[EncodedShard]) -> Option<blake3::Hash> {
    let first = shards.iter().find(|s| s.index == 0)?;
    cids::digest(&first.cid, Codec::Raw).ok()
}

/// Chaining values of the `block`-sized pieces of a stripe that starts at `offset` (a multiple of
/// the block size), plus the root hash of block 0 when it may be the whole object.
pub(super) fn hash_blocks(
    stripe: &[u8],
    offset: u64,
    last: bool,
    block_size: usize,
) -> BlockHashes {
    let mut out = BlockHashes::default();
    for (i, block) in stripe.chunks(block_size).enumerate() {
        let at = offset + (i * block_size) as u64;
        let only_block = at == 0 && stripe.len() <= block_size;
        if only_block {
            out.first_root = Some(blake3::hash(block));
            if last {
                // Nothing follows: block 0 is the object and its CV is never needed.
                continue;
            }
        }
        let mut h = blake3::Hasher::new();
        h.set_input_offset(at);
        h.update(block);
        out.cvs.push(h.finalize_non_root());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hashes_merge_to_blake3() {
        // Around the one-block edge and several blocks, in stripes of one or two blocks.
        let data: Vec<u8> = (0..(5 * HASH_BLOCK + 3)).map(|i| (i % 251) as u8).collect();
        for len in [
            1,
            1000,
            HASH_BLOCK - 1,
            HASH_BLOCK,
            HASH_BLOCK + 1,
            2 * HASH_BLOCK,
            3 * HASH_BLOCK + 7,
            5 * HASH_BLOCK + 3,
        ] {
            for stripe in [HASH_BLOCK, 2 * HASH_BLOCK] {
                let input = &data[..len];
                let mut cvs = CvStack::default();
                let pieces: Vec<&[u8]> = input.chunks(stripe).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    let last = i + 1 == pieces.len() && piece.len() < stripe;
                    let h = hash_blocks(piece, (i * stripe) as u64, last, HASH_BLOCK);
                    if i == 0 {
                        cvs.first_root = h.first_root;
                    }
                    for cv in h.cvs {
                        cvs.push(cv);
                    }
                }
                assert_eq!(
                    cvs.finalize(),
                    Some(blake3::hash(input)),
                    "len {len} stripe {stripe}"
                );
            }
        }
    }
}
