//! Outboards: a shard's BLAKE3 root and pre-order outboard in one pass (and, for the encoder,
//! the shard's chaining value as a subtree of its object).

use bao_tree::BaoTree;
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use super::{BLOCK_SIZE, GROUP_BYTES, PAIR_BYTES};

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

pub(super) fn group_cv(data: &[u8], offset: u64) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    hasher.finalize_non_root()
}

#[cfg(test)]
mod tests {
    use bao_tree::io::outboard::PreOrderMemOutboard;

    use super::*;
    use crate::verified::test_data::{SIZES, data};

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
}
