//! Byte strings of fixed length, canonical DAG-CBOR, and signatures under a context.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why bytes could not be read as a message, or a signature did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Longer than the message type allows.
    #[error("{what} of {len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The message type.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid encoding.
    #[error("{what} does not decode: {reason}")]
    Malformed {
        /// The message type.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Valid, but not the one canonical encoding of its value.
    #[error("{what} is not canonically encoded")]
    NotCanonical {
        /// The message type.
        what: &'static str,
    },
    /// A message version this code does not know.
    #[error("{what} has version {version}, this build knows {known}")]
    Version {
        /// The message type.
        what: &'static str,
        /// The version found.
        version: u8,
        /// The version known.
        known: u8,
    },
    /// The signature does not verify under the key the message names.
    #[error("{what} is not signed by the key it names ({signer})")]
    BadSignature {
        /// The message type.
        what: &'static str,
        /// The named key, in hex.
        signer: String,
    },
}

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $n:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(#[serde(with = "serde_bytes")] pub [u8; $n]);

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex(&self.0))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex(&self.0))
            }
        }

        impl From<[u8; $n]> for $name {
            fn from(b: [u8; $n]) -> Self {
                $name(b)
            }
        }
    };
}

fixed_bytes!(
    /// A 32-byte BLAKE3 hash: a shard's root (the digest in its CID), a digest, a nonce.
    Hash32,
    32
);
fixed_bytes!(
    /// A node's ed25519 public key: who signs receipts, commitments and proofs.
    NodeKey,
    32
);
fixed_bytes!(
    /// An ed25519 signature.
    Sig64,
    64
);

impl NodeKey {
    /// The public key of a signing key.
    pub fn of(key: &SigningKey) -> Self {
        NodeKey(key.verifying_key().to_bytes())
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Canonical DAG-CBOR of a value made of integers, byte strings, lists and structs.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding fails only for non-finite floats and non-string map keys; the message types in
    // this crate hold neither.
    serde_ipld_dagcbor::to_vec(value)
        .unwrap_or_else(|e| unreachable!("proof messages always encode: {e}"))
}

/// Decodes `bytes` as a `T` of at most `limit` bytes, insisting on the canonical encoding so
/// that one value has one byte string (and one digest).
pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            what,
            len: bytes.len(),
            limit,
        });
    }
    let value: T = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| CodecError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if encode(&value) != bytes {
        return Err(CodecError::NotCanonical { what });
    }
    Ok(value)
}

/// The bytes a signature covers: a context string naming the message type, then the body.
fn signed_message<T: Serialize>(context: &str, body: &T) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64 + context.len());
    msg.extend_from_slice(context.as_bytes());
    msg.push(0);
    msg.extend(encode(body));
    msg
}

/// Signs `body` under `context`.
pub(crate) fn sign<T: Serialize>(key: &SigningKey, context: &str, body: &T) -> Sig64 {
    Sig64(key.sign(&signed_message(context, body)).to_bytes())
}

/// Checks that `signer` signed `body` under `context`.
pub(crate) fn verify<T: Serialize>(
    what: &'static str,
    signer: &NodeKey,
    context: &str,
    body: &T,
    signature: &Sig64,
) -> Result<(), CodecError> {
    let bad = || CodecError::BadSignature {
        what,
        signer: hex(&signer.0),
    };
    let key = VerifyingKey::from_bytes(&signer.0).map_err(|_| bad())?;
    key.verify_strict(
        &signed_message(context, body),
        &Signature::from_bytes(&signature.0),
    )
    .map_err(|_| bad())
}

/// A 32-byte digest of `parts` under a BLAKE3 key-derivation context.
pub(crate) fn digest(context: &str, parts: &[&[u8]]) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(context);
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    Hash32(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        a: u64,
        k: Hash32,
    }

    #[test]
    fn fixed_bytes_encode_as_byte_strings_and_round_trip() {
        let m = Msg {
            a: 7,
            k: Hash32([9; 32]),
        };
        let b = encode(&m);
        // A map of two keys, "a" -> 7, "k" -> 32-byte string: 1 + 2 + 1 + 2 + 2 + 32.
        assert_eq!(b.len(), 40);
        assert_eq!(decode::<Msg>("msg", &b, 100).unwrap(), m);
        assert!(matches!(
            decode::<Msg>("msg", &b, 39),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            decode::<Msg>("msg", &b[..30], 100),
            Err(CodecError::Malformed { .. })
        ));
    }

    #[test]
    fn wrong_length_byte_strings_are_refused() {
        #[derive(Serialize)]
        struct Short {
            a: u64,
            #[serde(with = "serde_bytes")]
            k: Vec<u8>,
        }
        let b = encode(&Short {
            a: 7,
            k: vec![1; 31],
        });
        assert!(decode::<Msg>("msg", &b, 100).is_err());
    }

    #[test]
    fn signatures_bind_context_body_and_key() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let other = SigningKey::from_bytes(&[6; 32]);
        let m = Msg {
            a: 1,
            k: Hash32([0; 32]),
        };
        let sig = sign(&key, "ctx", &m);
        let me = NodeKey::of(&key);
        verify("msg", &me, "ctx", &m, &sig).unwrap();
        assert!(verify("msg", &me, "other ctx", &m, &sig).is_err());
        assert!(verify("msg", &NodeKey::of(&other), "ctx", &m, &sig).is_err());
        let m2 = Msg { a: 2, ..m };
        assert!(verify("msg", &me, "ctx", &m2, &sig).is_err());
        // Not a valid curve point.
        assert!(verify("msg", &NodeKey([0xff; 32]), "ctx", &m, &sig).is_err());
    }
}
