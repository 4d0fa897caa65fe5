//! Storage receipts: a node's signed promise to hold a shard for a span of epochs.
//!
//! A node answers every store with a receipt over (its key, the shard's root, its size, the
//! lease's first and last epoch). The uploader keeps the receipts beside the manifest, so
//! whoever holds the manifest knows who promised what until when, and an auditor holding a
//! receipt can name that shard in a targeted challenge: a node that signed for a shard and
//! cannot prove it is provably at fault.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::{Hash32, NodeKey, Sig64};

const CONTEXT: &str = "cairn-proofs storage receipt v1";
const VERSION: u8 = 1;
/// Largest encoded receipt.
pub const MAX_RECEIPT_BYTES: usize = 256;
/// Largest shard a receipt may name (Cairn's largest shard, 64 MiB).
pub const MAX_SHARD: u64 = 64 << 20;

#[derive(Serialize)]
struct Body<'a> {
    node: &'a NodeKey,
    shard: &'a Hash32,
    size: u64,
    start: u64,
    end: u64,
}

/// A node's signed promise to hold `shard` (`size` bytes) from epoch `start` through `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageReceipt {
    /// Format version.
    pub version: u8,
    /// The node that promises.
    pub node: NodeKey,
    /// The shard's root (the BLAKE3 digest in its CID).
    pub shard: Hash32,
    /// The shard's size in bytes.
    pub size: u64,
    /// The epoch in which the node took the shard. It is challengeable from the next one.
    pub start: u64,
    /// The last epoch the node promises to hold it through.
    pub end: u64,
    /// The node's signature.
    pub signature: Sig64,
}

/// Why a receipt is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// It does not decode, or its signature does not hold.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Its fields cannot be right.
    #[error("storage receipt for {shard}: {reason}")]
    Invalid {
        /// The shard it names.
        shard: Hash32,
        /// What is wrong.
        reason: String,
    },
}

impl StorageReceipt {
    /// Signs a receipt with the node's key.
    pub fn sign(key: &SigningKey, shard: Hash32, size: u64, start: u64, end: u64) -> Self {
        let node = NodeKey::of(key);
        let signature = codec::sign(
            key,
            CONTEXT,
            &Body {
                node: &node,
                shard: &shard,
                size,
                start,
                end,
            },
        );
        StorageReceipt {
            version: VERSION,
            node,
            shard,
            size,
            start,
            end,
            signature,
        }
    }

    /// Checks the fields and the signature.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        if self.version != VERSION {
            return Err(CodecError::Version {
                what: "storage receipt",
                version: self.version,
                known: VERSION,
            }
            .into());
        }
        let invalid = |reason: String| ReceiptError::Invalid {
            shard: self.shard,
            reason,
        };
        if self.size == 0 || self.size > MAX_SHARD {
            return Err(invalid(format!(
                "size {} is outside 1..={MAX_SHARD}",
                self.size
            )));
        }
        if self.end < self.start {
            return Err(invalid(format!(
                "lease ends (epoch {}) before it starts (epoch {})",
                self.end, self.start
            )));
        }
        codec::verify(
            "storage receipt",
            &self.node,
            CONTEXT,
            &Body {
                node: &self.node,
                shard: &self.shard,
                size: self.size,
                start: self.start,
                end: self.end,
            },
            &self.signature,
        )?;
        Ok(())
    }

    /// Whether the shard may be demanded in `epoch`: the lease runs, and the shard was taken
    /// in an earlier epoch (data stored during an epoch is not demanded until the next).
    pub fn due_in(&self, epoch: u64) -> bool {
        self.start < epoch && epoch <= self.end
    }

    /// Whether an auditor names the shard in a targeted challenge in `epoch`: from the second
    /// epoch after it was taken. A store at an epoch's last moment may record its lease just
    /// after the node built the next epoch's commitment; naming it one epoch later never
    /// demands a shard an honest node could not have committed.
    pub fn named_in(&self, epoch: u64) -> bool {
        self.start.saturating_add(1) < epoch && epoch <= self.end
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and verifies a receipt.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let r: Self = codec::decode("storage receipt", bytes, MAX_RECEIPT_BYTES)?;
        r.verify()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn receipts_round_trip_and_bind_every_field() {
        let r = StorageReceipt::sign(&key(1), Hash32([7; 32]), 1 << 20, 10, 20);
        let bytes = r.to_bytes();
        assert!(bytes.len() <= MAX_RECEIPT_BYTES, "{}", bytes.len());
        assert_eq!(StorageReceipt::from_bytes(&bytes).unwrap(), r);
        let forged = [
            StorageReceipt {
                size: 2 << 20,
                ..r.clone()
            },
            StorageReceipt {
                start: 9,
                ..r.clone()
            },
            StorageReceipt {
                end: 21,
                ..r.clone()
            },
            StorageReceipt {
                shard: Hash32([8; 32]),
                ..r.clone()
            },
            StorageReceipt {
                node: NodeKey::of(&key(2)),
                ..r.clone()
            },
        ];
        for f in forged {
            assert!(f.verify().is_err(), "{f:?}");
            assert!(StorageReceipt::from_bytes(&f.to_bytes()).is_err());
        }
        // A different key signing the same fields names itself, not the first node.
        let other = StorageReceipt::sign(&key(2), Hash32([7; 32]), 1 << 20, 10, 20);
        assert_ne!(other.node, r.node);
        other.verify().unwrap();
    }

    #[test]
    fn impossible_receipts_are_refused_even_when_signed() {
        for (size, start, end) in [(0, 1, 2), (MAX_SHARD + 1, 1, 2), (5, 3, 2)] {
            let r = StorageReceipt::sign(&key(1), Hash32([7; 32]), size, start, end);
            assert!(matches!(r.verify(), Err(ReceiptError::Invalid { .. })));
        }
    }

    #[test]
    fn a_shard_is_due_from_the_epoch_after_it_was_taken_until_its_lease_ends() {
        let r = StorageReceipt::sign(&key(1), Hash32([7; 32]), 5, 10, 12);
        assert!(!r.due_in(10));
        assert!(r.due_in(11));
        assert!(r.due_in(12));
        assert!(!r.due_in(13));
        assert!(!r.named_in(11), "named one epoch later than due");
        assert!(r.named_in(12));
        assert!(!r.named_in(13));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = StorageReceipt::from_bytes(&bytes);
        }
    }
}
