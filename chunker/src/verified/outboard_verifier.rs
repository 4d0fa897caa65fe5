//! A whole shard sent as `outboard ‖ data`: the outboard checked against the root first, then
//! every group as soon as it is complete.

use blake3::hazmat::{ChainingValue, Mode, merge_subtrees_non_root, merge_subtrees_root};

use super::outboard::group_cv;
use super::{GROUP_BYTES, PAIR_BYTES, ProofError, outboard_size};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verified::outboard;
    use crate::verified::test_data::{SIZES, data};

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
}
