//! A node's signed commitment, at the start of an epoch, to the shards it holds.
//!
//! The commitment names the root of a [`CommitTree`] over the `(shard root, size)` entries the
//! node holds under live leases (taken before this epoch), their count and total bytes. It
//! also carries the node's *declared faults*: shards it knows it has lost (a corrupt copy the
//! scrub quarantined, a dead disk) and leaves out of the tree. Declaring costs less than being
//! caught, and because the commitment is fetched before the challenge's nonce exists, a
//! declaration provably came before the question. Shards that were declared lost and are held
//! again are listed as *recovered*: auditors challenge them by name.
//!
//! A node signs one commitment per epoch. Two different signed commitments for the same epoch
//! are proof of equivocation (see [`Commitment::equivocates`]).

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::tree::CommitTree;
use crate::{Hash32, NodeKey, Sig64};

const CONTEXT: &str = "cairn-proofs commitment v1";
const DIGEST: &str = "cairn-proofs commitment digest v1";
const VERSION: u8 = 1;
/// Most shards one commitment declares lost, and most it lists as recovered.
pub const MAX_DECLARED: usize = 1024;
/// Largest encoded commitment.
pub const MAX_COMMITMENT_BYTES: usize = 2 * MAX_DECLARED * 36 + 512;

#[derive(Serialize)]
struct Body<'a> {
    node: &'a NodeKey,
    epoch: u64,
    root: &'a Hash32,
    count: u64,
    bytes: u64,
    declared: &'a [Hash32],
    recovered: &'a [Hash32],
}

/// A node's signed statement of what it holds in an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// Format version.
    pub version: u8,
    /// The committing node.
    pub node: NodeKey,
    /// The epoch it commits for.
    pub epoch: u64,
    /// Root of the tree over the held shards.
    pub root: Hash32,
    /// Shards in the tree.
    pub count: u64,
    /// Bytes in the tree (the sum of the shards' sizes).
    pub bytes: u64,
    /// Shards the node declares lost (sorted, at most [`MAX_DECLARED`]); not in the tree.
    pub declared: Vec<Hash32>,
    /// Shards declared lost before and held again (sorted, at most [`MAX_DECLARED`]); in the
    /// tree, and challenged by name.
    pub recovered: Vec<Hash32>,
    /// The node's signature.
    pub signature: Sig64,
}

/// Why a commitment is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitmentError {
    /// It does not decode, or its signature does not hold.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Its fields cannot be right.
    #[error("commitment of epoch {epoch}: {reason}")]
    Invalid {
        /// Its epoch.
        epoch: u64,
        /// What is wrong.
        reason: String,
    },
}

fn sorted_bounded(list: &[Hash32], what: &str) -> Result<(), String> {
    if list.len() > MAX_DECLARED {
        return Err(format!(
            "{} {what} shards, at most {MAX_DECLARED}",
            list.len()
        ));
    }
    if list.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("the {what} shards are not sorted and distinct"));
    }
    Ok(())
}

impl Commitment {
    /// Signs a commitment to `tree` for `epoch`. `declared` and `recovered` are sorted and
    /// deduplicated here; a declared shard must not be in the tree and a recovered one must.
    pub fn sign(
        key: &SigningKey,
        epoch: u64,
        tree: &CommitTree,
        mut declared: Vec<Hash32>,
        mut recovered: Vec<Hash32>,
    ) -> Result<Self, CommitmentError> {
        declared.sort_unstable();
        declared.dedup();
        recovered.sort_unstable();
        recovered.dedup();
        let invalid = |reason: String| CommitmentError::Invalid { epoch, reason };
        if let Some(d) = declared.iter().find(|d| tree.find(&d.0).is_some()) {
            return Err(invalid(format!("{d} is declared lost and committed")));
        }
        if let Some(r) = recovered.iter().find(|r| tree.find(&r.0).is_none()) {
            return Err(invalid(format!("{r} is recovered but not committed")));
        }
        sorted_bounded(&declared, "declared").map_err(invalid)?;
        sorted_bounded(&recovered, "recovered").map_err(invalid)?;
        let node = NodeKey::of(key);
        let root = tree.root();
        let signature = codec::sign(
            key,
            CONTEXT,
            &Body {
                node: &node,
                epoch,
                root: &root,
                count: tree.len(),
                bytes: tree.total_bytes(),
                declared: &declared,
                recovered: &recovered,
            },
        );
        Ok(Commitment {
            version: VERSION,
            node,
            epoch,
            root,
            count: tree.len(),
            bytes: tree.total_bytes(),
            declared,
            recovered,
            signature,
        })
    }

    fn body(&self) -> Body<'_> {
        Body {
            node: &self.node,
            epoch: self.epoch,
            root: &self.root,
            count: self.count,
            bytes: self.bytes,
            declared: &self.declared,
            recovered: &self.recovered,
        }
    }

    /// Checks the fields and the signature.
    pub fn verify(&self) -> Result<(), CommitmentError> {
        if self.version != VERSION {
            return Err(CodecError::Version {
                what: "commitment",
                version: self.version,
                known: VERSION,
            }
            .into());
        }
        let invalid = |reason: String| CommitmentError::Invalid {
            epoch: self.epoch,
            reason,
        };
        sorted_bounded(&self.declared, "declared").map_err(invalid)?;
        sorted_bounded(&self.recovered, "recovered").map_err(invalid)?;
        if (self.count == 0) != (self.bytes == 0) || self.bytes < self.count {
            return Err(invalid(format!(
                "{} shards cannot hold {} bytes",
                self.count, self.bytes
            )));
        }
        codec::verify(
            "commitment",
            &self.node,
            CONTEXT,
            &self.body(),
            &self.signature,
        )?;
        Ok(())
    }

    /// The commitment's digest: what challenges are derived from and audit receipts name.
    pub fn digest(&self) -> Hash32 {
        codec::digest(DIGEST, &[&codec::encode(&self.body())])
    }

    /// Whether `self` and `other` are two different commitments signed by one node for one
    /// epoch: proof that the node answers different auditors with different sets. Both must
    /// verify for this to mean anything.
    pub fn equivocates(&self, other: &Commitment) -> bool {
        self.node == other.node && self.epoch == other.epoch && self.digest() != other.digest()
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and verifies a commitment.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CommitmentError> {
        let c: Self = codec::decode("commitment", bytes, MAX_COMMITMENT_BYTES)?;
        c.verify()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Entry;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn tree(roots: &[u8]) -> CommitTree {
        let entries = roots
            .iter()
            .map(|&r| Entry {
                root: [r; 32],
                size: 1000 + u64::from(r),
            })
            .collect();
        CommitTree::build(entries).unwrap()
    }

    #[test]
    fn commitments_round_trip_and_bind_their_fields() {
        let t = tree(&[1, 2, 3]);
        let c =
            Commitment::sign(&key(1), 7, &t, vec![Hash32([9; 32])], vec![Hash32([2; 32])]).unwrap();
        assert_eq!(c.count, 3);
        assert_eq!(c.bytes, 3006);
        assert_eq!(Commitment::from_bytes(&c.to_bytes()).unwrap(), c);
        let forged = [
            Commitment {
                epoch: 8,
                ..c.clone()
            },
            Commitment {
                bytes: 3007,
                ..c.clone()
            },
            Commitment {
                root: Hash32([0; 32]),
                ..c.clone()
            },
            Commitment {
                declared: vec![],
                ..c.clone()
            },
            Commitment {
                node: NodeKey::of(&key(2)),
                ..c.clone()
            },
        ];
        for f in forged {
            assert!(f.verify().is_err(), "{f:?}");
            assert_ne!(f.digest(), c.digest());
        }
    }

    #[test]
    fn declared_shards_are_outside_the_tree_and_recovered_ones_inside() {
        let t = tree(&[1, 2]);
        assert!(Commitment::sign(&key(1), 1, &t, vec![Hash32([1; 32])], vec![]).is_err());
        assert!(Commitment::sign(&key(1), 1, &t, vec![], vec![Hash32([5; 32])]).is_err());
        let many: Vec<Hash32> = (0..=MAX_DECLARED as u32)
            .map(|i| {
                let mut h = [0xee; 32];
                h[..4].copy_from_slice(&i.to_le_bytes());
                Hash32(h)
            })
            .collect();
        assert!(Commitment::sign(&key(1), 1, &t, many, vec![]).is_err());
    }

    #[test]
    fn two_sets_for_one_epoch_are_equivocation() {
        let a = Commitment::sign(&key(1), 5, &tree(&[1, 2]), vec![], vec![]).unwrap();
        let b = Commitment::sign(&key(1), 5, &tree(&[1]), vec![], vec![]).unwrap();
        let c = Commitment::sign(&key(1), 6, &tree(&[1]), vec![], vec![]).unwrap();
        assert!(a.equivocates(&b));
        assert!(!a.equivocates(&a.clone()));
        assert!(!b.equivocates(&c));
    }

    #[test]
    fn an_empty_node_commits_to_nothing() {
        let c = Commitment::sign(&key(1), 5, &tree(&[]), vec![], vec![]).unwrap();
        assert_eq!((c.count, c.bytes), (0, 0));
        c.verify().unwrap();
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Commitment::from_bytes(&bytes);
        }
    }
}
