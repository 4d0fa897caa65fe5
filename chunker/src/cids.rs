//! Content identifiers.
//!
//! Every piece of data in Cairn is named by a CIDv1 whose multihash is BLAKE3-256 (code `0x1e`):
//!
//! | what | codec | example prefix |
//! |---|---|---|
//! | a shard (raw bytes) | `raw` (`0x55`) | `bafkr4i…` |
//! | a manifest or provenance envelope (DAG-CBOR) | `dag-cbor` (`0x71`) | `bafyr4i…` |
//!
//! The digest inside a shard CID is exactly what `b3sum` prints for the shard's bytes, and it is
//! also the root of the shard's BLAKE3 tree, so range proofs verify against the CID alone.

use std::fmt;

pub use cid::Cid;
use multihash::Multihash;

/// Multicodec code of raw bytes.
pub const CODEC_RAW: u64 = 0x55;
/// Multicodec code of DAG-CBOR.
pub const CODEC_DAG_CBOR: u64 = 0x71;
/// Multihash code of BLAKE3 with a 256-bit digest.
pub const MULTIHASH_BLAKE3: u64 = 0x1e;

/// The two kinds of content Cairn names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Raw bytes: shards and raw files (`cairn cid FILE`).
    Raw,
    /// DAG-CBOR: manifests and provenance envelopes.
    DagCbor,
}

impl Codec {
    /// The multicodec code.
    pub fn code(self) -> u64 {
        match self {
            Codec::Raw => CODEC_RAW,
            Codec::DagCbor => CODEC_DAG_CBOR,
        }
    }

    fn from_code(code: u64) -> Option<Self> {
        match code {
            CODEC_RAW => Some(Codec::Raw),
            CODEC_DAG_CBOR => Some(Codec::DagCbor),
            _ => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Raw => "raw",
            Codec::DagCbor => "dag-cbor",
        })
    }
}

/// Why a CID is not one Cairn can use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The text or bytes are not a CID at all.
    #[error("not a valid CID: {0}")]
    Malformed(String),
    /// A CIDv0 (sha2-256, `Qm…`); Cairn only uses CIDv1 with BLAKE3.
    #[error("CIDv0 is not supported: Cairn CIDs are CIDv1 with a BLAKE3 multihash (bafk…/bafy…)")]
    Version0,
    /// The multihash is not BLAKE3-256.
    #[error("unsupported multihash 0x{code:x} ({len} bytes): Cairn CIDs use BLAKE3-256 (0x1e)")]
    Multihash {
        /// Multihash code found.
        code: u64,
        /// Digest length found.
        len: usize,
    },
    /// The codec is neither raw nor DAG-CBOR.
    #[error("unsupported codec 0x{0:x}: Cairn CIDs are raw (0x55) or dag-cbor (0x71)")]
    Codec(u64),
    /// The codec is valid but not the one this place expects.
    #[error("expected a {expected} CID, got a {got} CID ({cid})")]
    WrongCodec {
        /// The codec required here.
        expected: Codec,
        /// The codec of the CID given.
        got: Codec,
        /// The CID given.
        cid: Box<Cid>,
    },
}

/// Builds the CID of a BLAKE3 digest with the given codec.
pub fn from_hash(codec: Codec, hash: &blake3::Hash) -> Cid {
    // `wrap` only fails when the digest is longer than the multihash's 64-byte capacity.
    let mh = Multihash::<64>::wrap(MULTIHASH_BLAKE3, hash.as_bytes())
        .unwrap_or_else(|_| unreachable!("a 32-byte digest fits a 64-byte multihash"));
    Cid::new_v1(codec.code(), mh)
}

/// The raw CID of some bytes: the same digest `b3sum` prints.
pub fn raw(bytes: &[u8]) -> Cid {
    from_hash(Codec::Raw, &blake3::hash(bytes))
}

/// The DAG-CBOR CID of encoded manifest bytes.
pub fn dag_cbor(bytes: &[u8]) -> Cid {
    from_hash(Codec::DagCbor, &blake3::hash(bytes))
}

/// Checks that `cid` is a Cairn CID and returns its codec and BLAKE3 digest.
pub fn inspect(cid: &Cid) -> Result<(Codec, blake3::Hash), CidError> {
    if cid.version() == cid::Version::V0 {
        return Err(CidError::Version0);
    }
    let mh = cid.hash();
    if mh.code() != MULTIHASH_BLAKE3 || mh.digest().len() != 32 {
        return Err(CidError::Multihash {
            code: mh.code(),
            len: mh.digest().len(),
        });
    }
    let codec = Codec::from_code(cid.codec()).ok_or(CidError::Codec(cid.codec()))?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(mh.digest());
    Ok((codec, blake3::Hash::from_bytes(digest)))
}

/// Returns the BLAKE3 digest of a CID that must have the given codec.
pub fn digest(cid: &Cid, expected: Codec) -> Result<blake3::Hash, CidError> {
    let (got, hash) = inspect(cid)?;
    if got != expected {
        return Err(CidError::WrongCodec {
            expected,
            got,
            cid: Box::new(*cid),
        });
    }
    Ok(hash)
}

/// Parses a CID from text (any multibase; Cairn prints base32 `b…`) and checks it is a Cairn CID.
pub fn parse(text: &str) -> Result<Cid, CidError> {
    let cid = Cid::try_from(text.trim()).map_err(|e| CidError::Malformed(e.to_string()))?;
    inspect(&cid)?;
    Ok(cid)
}

/// Parses a CID from its binary form and checks it is a Cairn CID.
pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
    let cid = Cid::try_from(bytes).map_err(|e| CidError::Malformed(e.to_string()))?;
    inspect(&cid)?;
    Ok(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_cid_is_cidv1_raw_blake3_and_round_trips_in_base32() {
        let cid = raw(b"hello world");
        assert_eq!(cid.version(), cid::Version::V1);
        assert_eq!(cid.codec(), CODEC_RAW);
        assert_eq!(cid.hash().code(), MULTIHASH_BLAKE3);
        let text = cid.to_string();
        assert!(text.starts_with("bafkr4i"), "{text}");
        assert_eq!(parse(&text).unwrap(), cid);
        assert_eq!(from_bytes(&cid.to_bytes()).unwrap(), cid);
        // b3sum of "hello world"
        assert_eq!(
            digest(&cid, Codec::Raw).unwrap().to_hex().as_str(),
            "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
        );
    }

    #[test]
    fn manifest_cid_uses_dag_cbor_prefix() {
        let cid = dag_cbor(b"\xa0");
        assert!(cid.to_string().starts_with("bafyr4i"), "{cid}");
        assert!(matches!(
            digest(&cid, Codec::Raw),
            Err(CidError::WrongCodec { .. })
        ));
    }

    #[test]
    fn rejects_foreign_cids() {
        // CIDv0 (sha2-256)
        assert!(matches!(
            parse("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"),
            Err(CidError::Version0)
        ));
        // CIDv1 raw sha2-256
        assert!(matches!(
            parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
            Err(CidError::Multihash { code: 0x12, .. })
        ));
        assert!(matches!(parse("not a cid"), Err(CidError::Malformed(_))));
        assert!(matches!(parse(""), Err(CidError::Malformed(_))));
    }
}
