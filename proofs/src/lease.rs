//! Lease statements: an owner's signed word on how long an object is to be held.
//!
//! Whoever owns an object (the key that signs for it; anyone may sign for any object) signs a
//! [`LeaseStatement`]: "hold `object` for me through epoch `end`", or, with `end` 0, "I release
//! it". Nodes keep holds keyed by (object, owner), so a statement extends or releases only its
//! own owner's hold, never someone else's. Of two statements by one owner on one object the
//! later signed one stands ([`LeaseStatement::supersedes`]), so renewals and releases merge the
//! same way in whatever order they arrive.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::{NodeKey, Sig64};

const CONTEXT: &str = "cairn-proofs lease statement v1";
const VERSION: u8 = 1;
/// Longest object CID a statement may name (a manifest CID is 36 bytes).
pub const MAX_OBJECT_BYTES: usize = 64;
/// Largest encoded statement.
pub const MAX_LEASE_BYTES: usize = 256;

#[derive(Serialize)]
struct Body<'a> {
    #[serde(with = "serde_bytes")]
    object: &'a [u8],
    owner: &'a NodeKey,
    end: u64,
    signed_ms: u64,
}

/// An owner's signed statement that `object` is to be held through epoch `end` (0: released).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatement {
    /// Format version.
    pub version: u8,
    /// The object: its manifest CID's bytes.
    #[serde(with = "serde_bytes")]
    pub object: Vec<u8>,
    /// Whose hold it is: the key that signs.
    pub owner: NodeKey,
    /// The last epoch the object is to be held through; 0 releases it.
    pub end: u64,
    /// When the owner signed it (unix milliseconds): the later statement stands.
    pub signed_ms: u64,
    /// The owner's signature.
    pub signature: Sig64,
}

/// Why a lease statement is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// It does not decode, or its signature does not hold.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Its fields cannot be right.
    #[error("lease statement: {0}")]
    Invalid(String),
}

impl LeaseStatement {
    /// Signs a statement with the owner's key: hold `object` through epoch `end` (0 releases),
    /// as of `signed_ms`.
    pub fn sign(key: &SigningKey, object: &[u8], end: u64, signed_ms: u64) -> Self {
        let owner = NodeKey::of(key);
        let signature = codec::sign(
            key,
            CONTEXT,
            &Body {
                object,
                owner: &owner,
                end,
                signed_ms,
            },
        );
        LeaseStatement {
            version: VERSION,
            object: object.to_vec(),
            owner,
            end,
            signed_ms,
            signature,
        }
    }

    /// A release of `object` as of `signed_ms`.
    pub fn release(key: &SigningKey, object: &[u8], signed_ms: u64) -> Self {
        Self::sign(key, object, 0, signed_ms)
    }

    /// Whether it releases the owner's hold.
    pub fn is_release(&self) -> bool {
        self.end == 0
    }

    /// Whether this statement stands over `other`: the same object and owner, signed later, or
    /// at the same moment with a later end (so any two statements merge one way).
    pub fn supersedes(&self, other: &LeaseStatement) -> bool {
        self.object == other.object
            && self.owner == other.owner
            && (self.signed_ms, self.end) > (other.signed_ms, other.end)
    }

    /// Checks the fields and the signature.
    pub fn verify(&self) -> Result<(), LeaseError> {
        if self.version != VERSION {
            return Err(CodecError::Version {
                what: "lease statement",
                version: self.version,
                known: VERSION,
            }
            .into());
        }
        if self.object.is_empty() || self.object.len() > MAX_OBJECT_BYTES {
            return Err(LeaseError::Invalid(format!(
                "an object name of {} bytes (1..={MAX_OBJECT_BYTES} allowed)",
                self.object.len()
            )));
        }
        codec::verify(
            "lease statement",
            &self.owner,
            CONTEXT,
            &Body {
                object: &self.object,
                owner: &self.owner,
                end: self.end,
                signed_ms: self.signed_ms,
            },
            &self.signature,
        )?;
        Ok(())
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and verifies a statement.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LeaseError> {
        let s: Self = codec::decode("lease statement", bytes, MAX_LEASE_BYTES)?;
        s.verify()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn statements_round_trip_and_bind_every_field() {
        let s = LeaseStatement::sign(&key(1), &[7; 36], 500, 1_700_000_000_000);
        let bytes = s.to_bytes();
        assert!(bytes.len() <= MAX_LEASE_BYTES, "{}", bytes.len());
        assert_eq!(LeaseStatement::from_bytes(&bytes).unwrap(), s);
        assert!(!s.is_release());
        let forged = [
            LeaseStatement {
                object: vec![8; 36],
                ..s.clone()
            },
            LeaseStatement {
                end: 501,
                ..s.clone()
            },
            LeaseStatement {
                end: 0,
                ..s.clone()
            },
            LeaseStatement {
                signed_ms: s.signed_ms + 1,
                ..s.clone()
            },
            LeaseStatement {
                owner: NodeKey::of(&key(2)),
                ..s.clone()
            },
        ];
        for f in forged {
            assert!(f.verify().is_err(), "{f:?}");
            let err = LeaseStatement::from_bytes(&f.to_bytes()).unwrap_err();
            assert!(
                matches!(err, LeaseError::Codec(CodecError::BadSignature { .. })),
                "{err}"
            );
        }
    }

    #[test]
    fn a_statement_signed_by_another_key_does_not_verify_as_the_owners() {
        let s = LeaseStatement::sign(&key(1), &[7; 36], 500, 10);
        let mut by_other = LeaseStatement::sign(&key(2), &[7; 36], 500, 10);
        by_other.owner = s.owner;
        assert!(by_other.verify().is_err());
        // Signed with the key it names, it is valid: it speaks for that key's hold only.
        LeaseStatement::sign(&key(2), &[7; 36], 500, 10)
            .verify()
            .unwrap();
    }

    #[test]
    fn impossible_statements_are_refused_even_when_signed() {
        for object in [vec![], vec![1; MAX_OBJECT_BYTES + 1]] {
            let s = LeaseStatement::sign(&key(1), &object, 5, 1);
            assert!(matches!(s.verify(), Err(LeaseError::Invalid(_))), "{s:?}");
        }
        let too_big = vec![0u8; MAX_LEASE_BYTES + 1];
        assert!(matches!(
            LeaseStatement::from_bytes(&too_big),
            Err(LeaseError::Codec(CodecError::TooLarge { .. }))
        ));
    }

    #[test]
    fn the_later_statement_supersedes_and_ties_go_to_the_later_end() {
        let k = key(1);
        let early = LeaseStatement::sign(&k, &[7; 36], 900, 10);
        let release = LeaseStatement::release(&k, &[7; 36], 11);
        assert!(release.is_release());
        assert!(release.supersedes(&early));
        assert!(!early.supersedes(&release));
        let renewed = LeaseStatement::sign(&k, &[7; 36], 100, 12);
        assert!(renewed.supersedes(&release), "a renewal after a release");
        // Same moment: the larger end wins, whichever arrives first.
        let tie_low = LeaseStatement::sign(&k, &[7; 36], 50, 12);
        assert!(renewed.supersedes(&tie_low));
        assert!(!tie_low.supersedes(&renewed));
        // Identical statements do not supersede each other (nothing to write).
        assert!(!renewed.supersedes(&renewed.clone()));
        // Another owner or object: never.
        let other_owner = LeaseStatement::sign(&key(2), &[7; 36], 999, 99);
        let other_object = LeaseStatement::sign(&k, &[8; 36], 999, 99);
        assert!(!other_owner.supersedes(&early));
        assert!(!other_object.supersedes(&early));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = LeaseStatement::from_bytes(&bytes);
        }
    }
}
