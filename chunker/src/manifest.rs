//! Manifests: what an object, a dataset and a signature are, as canonical DAG-CBOR.
//!
//! * [`ObjectManifest`]: one object's size, BLAKE3, erasure parameters and every stripe's shard
//!   CIDs (or, for tiny objects, the bytes themselves).
//! * [`DatasetManifest`]: a directory tree, path -> object (or a slice of a packed object, or
//!   inline bytes for tiny files).
//! * [`Provenance`]: an ed25519 signature by an uploader over a manifest's CID, with a time and
//!   an optional statement about where the data came from.
//!
//! Encoding is canonical: a value has exactly one encoding, so the same manifest always has
//! the same CID. Decoding takes untrusted bytes: it rejects oversized input, non-canonical
//! encodings, unknown fields and versions, and inconsistent contents with an error, never a
//! panic. The byte layout is written down in `chunker/DESIGN.md`.

use std::collections::BTreeMap;
use std::ops::Range;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::chunking::Chunking;
use crate::cids::{self, Cid, Codec};
use crate::erasure::{self, ErasureCode};

/// The manifest format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Largest encoded manifest accepted (object, dataset or provenance).
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// Smallest shard size.
pub const MIN_SHARD_SIZE: u32 = 1024;
/// Largest shard size.
pub const MAX_SHARD_SIZE: u32 = 64 << 20;
/// Largest object stored inline in its manifest.
pub const MAX_INLINE: u64 = 64 * 1024;
/// Longest content type.
pub const MAX_CONTENT_TYPE: usize = 256;
/// Largest total size of user metadata keys and values.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Longest dataset path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why manifest bytes or contents were rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// More than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {0} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not valid DAG-CBOR for this manifest type.
    #[error("malformed manifest: {0}")]
    Decode(String),
    /// Valid DAG-CBOR, but not in its one canonical form.
    #[error("manifest is not canonically encoded (re-encoding gives different bytes)")]
    NotCanonical,
    /// A version this build does not know.
    #[error(
        "manifest version {0} is not supported (this build reads version {VERSION}); upgrade cairn"
    )]
    Version(u32),
    /// Contents that contradict each other or the limits.
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// The bytes do not hash to the CID they were fetched by.
    #[error("manifest bytes do not match CID {expected} (they hash to {actual})")]
    CidMismatch {
        /// CID asked for.
        expected: Box<Cid>,
        /// CID of the bytes received.
        actual: Box<Cid>,
    },
    /// A CID inside is not a Cairn CID.
    #[error(transparent)]
    Cid(#[from] cids::CidError),
    /// A provenance signature does not verify.
    #[error(
        "provenance signature by {signer} over {manifest} does not verify: the manifest or envelope was tampered with"
    )]
    BadSignature {
        /// Hex of the claimed signer key.
        signer: String,
        /// Manifest the envelope claims to sign.
        manifest: Box<Cid>,
    },
    /// A provenance envelope signs a different manifest than the one at hand.
    #[error("provenance envelope signs {signed}, not {expected}")]
    WrongManifest {
        /// Manifest signed.
        signed: Box<Cid>,
        /// Manifest expected.
        expected: Box<Cid>,
    },
}

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}

/// Encodes a value as DAG-CBOR.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding fails only for values DAG-CBOR cannot hold (non-finite floats, non-string map
    // keys); manifest types contain none.
    serde_ipld_dagcbor::to_vec(value)
        .unwrap_or_else(|e| unreachable!("manifest types always encode: {e}"))
}

/// Decodes DAG-CBOR and insists the bytes are the value's canonical encoding.
fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(bytes.len()));
    }
    let value: T =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
    if encode(&value) != bytes {
        return Err(ManifestError::NotCanonical);
    }
    Ok(value)
}

/// Checks that `bytes` hash to `cid` (a DAG-CBOR CID).
pub fn check_cid(cid: &Cid, bytes: &[u8]) -> Result<(), ManifestError> {
    cids::digest(cid, Codec::DagCbor)?;
    let actual = cids::dag_cbor(bytes);
    if actual != *cid {
        return Err(ManifestError::CidMismatch {
            expected: Box::new(*cid),
            actual: Box::new(actual),
        });
    }
    Ok(())
}

mod hash_bytes {
    //! A BLAKE3 hash as a 32-byte CBOR byte string.
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(hash: &blake3::Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(hash.as_bytes())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<blake3::Hash, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"32 bytes"))?;
        Ok(blake3::Hash::from_bytes(array))
    }
}

/// Erasure parameters of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureParams {
    /// The Reed-Solomon code (and so the engine) the parity was computed with.
    pub code: ErasureCode,
    /// Data shards per stripe.
    pub k: u16,
    /// Parity shards per stripe.
    pub m: u16,
    /// Maximum data shard size in bytes.
    pub shard_size: u32,
}

impl ErasureParams {
    /// Checks the shape against the code's and Cairn's limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.code
            .check(self.k.into(), self.m.into())
            .map_err(|e| invalid(e.to_string()))?;
        if !(MIN_SHARD_SIZE..=MAX_SHARD_SIZE).contains(&self.shard_size)
            || !(self.shard_size as usize).is_multiple_of(erasure::SHARD_ALIGN)
        {
            return Err(invalid(format!(
                "shard size {} must be within {MIN_SHARD_SIZE}..={MAX_SHARD_SIZE} and a multiple of {}",
                self.shard_size,
                erasure::SHARD_ALIGN
            )));
        }
        Ok(())
    }

    /// Bytes of object data in a full stripe.
    pub fn stripe_bytes(&self) -> u64 {
        u64::from(self.k) * u64::from(self.shard_size)
    }
}

/// A data shard of a stripe: its CID and length. A zero-length data shard (only in a short last
/// stripe) is never stored: it reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRef {
    /// CID of the shard's bytes (raw codec).
    pub cid: Cid,
    /// Length in bytes.
    pub len: u32,
}

/// One stripe: `k` data shards, in object order, and `m` parity shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stripe {
    /// The data shards, whose bytes concatenated are this stripe's part of the object.
    pub data: Vec<ShardRef>,
    /// The parity shards' CIDs.
    pub parity: Vec<Cid>,
    /// Length of every parity shard: the longest data shard, rounded up to 64 bytes. Shorter data
    /// shards are zero-padded to this length for coding.
    pub parity_len: u32,
}

impl Stripe {
    /// Bytes of object data in this stripe.
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|s| u64::from(s.len)).sum()
    }

    /// CID and length of shard `index` (`0..k` data, `k..k+m` parity).
    pub fn shard(&self, index: usize) -> Option<ShardRef> {
        if index < self.data.len() {
            Some(self.data[index])
        } else {
            self.parity
                .get(index - self.data.len())
                .map(|cid| ShardRef {
                    cid: *cid,
                    len: self.parity_len,
                })
        }
    }

    /// All shards, data then parity, as `(index, shard)`; zero-length data shards are skipped
    /// because nothing is stored for them.
    pub fn stored_shards(&self) -> impl Iterator<Item = (usize, ShardRef)> + '_ {
        (0..self.data.len() + self.parity.len())
            .filter_map(|i| self.shard(i).map(|s| (i, s)))
            .filter(|(_, s)| s.len > 0)
    }
}

/// An object: its bytes' size and BLAKE3, and where every byte lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectManifest {
    /// Format version ([`VERSION`]).
    #[serde(rename = "v")]
    pub version: u32,
    /// Object size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole object: what `b3sum` prints for the original file.
    #[serde(with = "hash_bytes")]
    pub blake3: blake3::Hash,
    /// Erasure code and shape.
    pub erasure: ErasureParams,
    /// How the object was cut into data shards.
    pub chunking: Chunking,
    /// The stripes, in object order. Empty for inline objects.
    pub stripes: Vec<Stripe>,
    /// The whole object, for objects of at most [`MAX_INLINE`] bytes stored in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub inline: Option<Vec<u8>>,
    /// MIME type, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// User metadata (S3 `x-amz-meta-*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl ObjectManifest {
    /// Canonical DAG-CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// The manifest's CID (DAG-CBOR codec).
    pub fn cid(&self) -> Cid {
        cids::dag_cbor(&self.to_bytes())
    }

    /// Decodes and validates untrusted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Self = decode(bytes)?;
        m.validate()?;
        Ok(m)
    }

    /// Decodes bytes fetched by `cid`, checking they hash to it.
    pub fn from_bytes_for(cid: &Cid, bytes: &[u8]) -> Result<Self, ManifestError> {
        check_cid(cid, bytes)?;
        Self::from_bytes(bytes)
    }

    /// Checks that the manifest is self-consistent and within limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != VERSION {
            return Err(ManifestError::Version(self.version));
        }
        self.erasure.validate()?;
        self.chunking
            .validate(self.erasure.shard_size)
            .map_err(|e| invalid(e.to_string()))?;
        if self
            .content_type
            .as_ref()
            .is_some_and(|ct| ct.len() > MAX_CONTENT_TYPE)
        {
            return Err(invalid("content type is too long"));
        }
        let meta: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if meta > MAX_METADATA_BYTES {
            return Err(invalid(format!(
                "user metadata is {meta} bytes, over {MAX_METADATA_BYTES}"
            )));
        }
        if let Some(inline) = &self.inline {
            if !self.stripes.is_empty()
                || inline.len() as u64 != self.size
                || self.size > MAX_INLINE
            {
                return Err(invalid(
                    "inline objects hold exactly their bytes (at most 64 KiB) and no stripes",
                ));
            }
            // Readers hand inline bytes straight on, so they must be what `blake3` names.
            if blake3::hash(inline) != self.blake3 {
                return Err(invalid("inline bytes do not match the object's BLAKE3"));
            }
            return Ok(());
        }
        if self.size == 0 || self.stripes.is_empty() {
            return Err(invalid("an object without stripes must be inline"));
        }
        let (k, m) = (usize::from(self.erasure.k), usize::from(self.erasure.m));
        let empty = cids::raw(b"");
        let mut total: u64 = 0;
        for (i, stripe) in self.stripes.iter().enumerate() {
            if stripe.data.len() != k || stripe.parity.len() != m {
                return Err(invalid(format!(
                    "stripe {i} does not have {k} data and {m} parity shards"
                )));
            }
            let longest = stripe.data.iter().map(|s| s.len).max().unwrap_or(0);
            if longest == 0 || longest > self.erasure.shard_size {
                return Err(invalid(format!(
                    "stripe {i} has data shards of a bad length"
                )));
            }
            if stripe.parity_len as usize != erasure::parity_len(longest as usize) {
                return Err(invalid(format!(
                    "stripe {i} parity length does not match its data"
                )));
            }
            for s in &stripe.data {
                cids::digest(&s.cid, Codec::Raw)?;
                if s.len == 0 && s.cid != empty {
                    return Err(invalid(format!(
                        "stripe {i} has an empty data shard with a non-empty CID"
                    )));
                }
            }
            for p in &stripe.parity {
                cids::digest(p, Codec::Raw)?;
            }
            total = total
                .checked_add(stripe.data_len())
                .ok_or_else(|| invalid("stripe sizes overflow"))?;
        }
        if total != self.size {
            return Err(invalid(format!(
                "stripes hold {total} bytes but the object is {} bytes",
                self.size
            )));
        }
        Ok(())
    }

    /// Where each byte of the object lives, for range reads.
    pub fn layout(&self) -> Layout {
        let mut starts = Vec::with_capacity(self.stripes.len());
        let mut off = 0;
        for s in &self.stripes {
            starts.push(off);
            off += s.data_len();
        }
        Layout {
            starts,
            size: self.size,
        }
    }

    /// Every stored shard of the object, with its stripe and index.
    pub fn stored_shards(&self) -> impl Iterator<Item = (usize, usize, ShardRef)> + '_ {
        self.stripes
            .iter()
            .enumerate()
            .flat_map(|(si, s)| s.stored_shards().map(move |(i, r)| (si, i, r)))
    }
}

/// A part of a byte range that one data shard serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Stripe index.
    pub stripe: usize,
    /// Data shard index within the stripe.
    pub shard: usize,
    /// Byte range within the shard.
    pub range: Range<u64>,
    /// Offset of `range.start` within the object.
    pub object_offset: u64,
}

/// Stripe offsets of an object, for mapping byte ranges to shards.
#[derive(Debug, Clone)]
pub struct Layout {
    starts: Vec<u64>,
    size: u64,
}

impl Layout {
    /// Object offset where stripe `i` begins.
    pub fn stripe_start(&self, i: usize) -> u64 {
        self.starts[i]
    }

    /// Indices of the stripes that hold bytes of `range`.
    pub fn stripes_for(&self, range: Range<u64>) -> Range<usize> {
        let end = range.end.min(self.size);
        if range.start >= end {
            return 0..0;
        }
        let first = self.starts.partition_point(|&s| s <= range.start) - 1;
        let last = self.starts.partition_point(|&s| s < end);
        first..last
    }

    /// The data-shard pieces that hold `range` (clipped to the object), in object order.
    pub fn pieces(&self, manifest: &ObjectManifest, range: Range<u64>) -> Vec<Piece> {
        let end = range.end.min(self.size);
        let mut out = Vec::new();
        for si in self.stripes_for(range.start..end) {
            let mut off = self.starts[si];
            for (di, shard) in manifest.stripes[si].data.iter().enumerate() {
                let len = u64::from(shard.len);
                let (from, to) = (range.start.max(off), end.min(off + len));
                if from < to {
                    out.push(Piece {
                        stripe: si,
                        shard: di,
                        range: from - off..to - off,
                        object_offset: from,
                    });
                }
                off += len;
            }
        }
        out
    }
}

/// Where a dataset file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Location {
    /// A whole object of its own: the CID of its [`ObjectManifest`].
    Object(Cid),
    /// A slice of a pack object (many small files concatenated), starting at `offset`.
    Packed {
        /// CID of the pack's [`ObjectManifest`].
        pack: Cid,
        /// Byte offset of the file within the pack.
        offset: u64,
    },
    /// The bytes themselves (tiny files).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// File size in bytes.
    pub size: u64,
    /// BLAKE3 of the file's bytes.
    #[serde(with = "hash_bytes")]
    pub blake3: blake3::Hash,
    /// Where the bytes are.
    pub location: Location,
    /// Attributes kept with the file (for example an S3 gateway's ETag, content type and user
    /// metadata when it exports its catalog). Omitted when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// A directory tree: relative path -> file. Its CID names an immutable snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// Format version ([`VERSION`]).
    #[serde(rename = "v")]
    pub version: u32,
    /// Files by `/`-separated relative path.
    pub entries: BTreeMap<String, DatasetEntry>,
}

/// Checks a dataset path: relative, `/`-separated, no empty, `.` or `..` components, no control
/// characters.
pub fn check_path(path: &str) -> Result<(), ManifestError> {
    let ok = !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && !path.contains('\\')
        // No control characters (NUL among them): they cannot name a file everywhere, and
        // printed in a listing they could fake lines or drive the terminal.
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "bad dataset path {path:?}: paths are relative, '/'-separated, without '.', '..', empty parts or control characters"
        )))
    }
}

impl DatasetManifest {
    /// An empty dataset.
    pub fn new() -> Self {
        Self {
            version: VERSION,
            entries: BTreeMap::new(),
        }
    }

    /// Canonical DAG-CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// The dataset's CID.
    pub fn cid(&self) -> Cid {
        cids::dag_cbor(&self.to_bytes())
    }

    /// Decodes and validates untrusted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Self = decode(bytes)?;
        m.validate()?;
        Ok(m)
    }

    /// Decodes bytes fetched by `cid`, checking they hash to it.
    pub fn from_bytes_for(cid: &Cid, bytes: &[u8]) -> Result<Self, ManifestError> {
        check_cid(cid, bytes)?;
        Self::from_bytes(bytes)
    }

    /// Checks version, paths and locations.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != VERSION {
            return Err(ManifestError::Version(self.version));
        }
        for (path, entry) in &self.entries {
            check_path(path)?;
            match &entry.location {
                Location::Object(cid) | Location::Packed { pack: cid, .. } => {
                    cids::digest(cid, Codec::DagCbor)?;
                }
                Location::Inline(bytes) => {
                    if bytes.len() as u64 != entry.size || entry.size > MAX_INLINE {
                        return Err(invalid(format!("inline entry {path:?} has the wrong size")));
                    }
                }
            }
            // A path may not be both a file and a directory.
            let dir = format!("{path}/");
            if self
                .entries
                .range(dir.clone()..)
                .next()
                .is_some_and(|(p, _)| p.starts_with(&dir))
            {
                return Err(invalid(format!("{path:?} is both a file and a directory")));
            }
        }
        Ok(())
    }
}

/// Where a dataset or object came from, as its uploader states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Where the data was obtained (URL, DOI, internal path).
    pub uri: String,
    /// Licence identifier (SPDX where possible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// A digest of the upstream artefact as published (e.g. `sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a [`Provenance`] signature covers.
#[derive(Serialize)]
struct Signed<'a> {
    #[serde(rename = "v")]
    version: u32,
    manifest: &'a Cid,
    #[serde(with = "serde_bytes")]
    signer: &'a [u8],
    time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: &'a Option<Source>,
}

const SIGNING_CONTEXT: &[u8] = b"cairn provenance v1\n";

/// A signed statement "`signer` published `manifest` at `time_ms`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Format version ([`VERSION`]).
    #[serde(rename = "v")]
    pub version: u32,
    /// The manifest (object or dataset) this envelope vouches for.
    pub manifest: Cid,
    /// The signer's ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub signer: Vec<u8>,
    /// Milliseconds since the Unix epoch, as the signer's clock said.
    pub time_ms: u64,
    /// Optional statement of origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// ed25519 signature over the fields above.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Provenance {
    fn message(manifest: &Cid, signer: &[u8], time_ms: u64, source: &Option<Source>) -> Vec<u8> {
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend(encode(&Signed {
            version: VERSION,
            manifest,
            signer,
            time_ms,
            source,
        }));
        msg
    }

    /// Signs `manifest` with `key`. The caller passes the time (this crate reads no clock).
    pub fn sign(manifest: Cid, key: &SigningKey, time_ms: u64, source: Option<Source>) -> Self {
        let signer = key.verifying_key().to_bytes().to_vec();
        let signature = key.sign(&Self::message(&manifest, &signer, time_ms, &source));
        Self {
            version: VERSION,
            manifest,
            signer,
            time_ms,
            source,
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// Verifies the signature and returns the signer's key.
    pub fn verify(&self) -> Result<VerifyingKey, ManifestError> {
        let bad = || ManifestError::BadSignature {
            signer: hex(&self.signer),
            manifest: Box::new(self.manifest),
        };
        if self.version != VERSION {
            return Err(ManifestError::Version(self.version));
        }
        let key: [u8; 32] = self.signer.as_slice().try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
        let sig: [u8; 64] = self.signature.as_slice().try_into().map_err(|_| bad())?;
        let sig = Signature::from_bytes(&sig);
        key.verify_strict(
            &Self::message(&self.manifest, &self.signer, self.time_ms, &self.source),
            &sig,
        )
        .map_err(|_| bad())?;
        Ok(key)
    }

    /// Verifies the signature and that it covers `manifest`.
    pub fn verify_for(&self, manifest: &Cid) -> Result<VerifyingKey, ManifestError> {
        if self.manifest != *manifest {
            return Err(ManifestError::WrongManifest {
                signed: Box::new(self.manifest),
                expected: Box::new(*manifest),
            });
        }
        self.verify()
    }

    /// Hex of the signer key, as shown to people.
    pub fn signer_hex(&self) -> String {
        hex(&self.signer)
    }

    /// Canonical DAG-CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// The envelope's CID.
    pub fn cid(&self) -> Cid {
        cids::dag_cbor(&self.to_bytes())
    }

    /// Decodes untrusted bytes and verifies the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let p: Self = decode(bytes)?;
        cids::digest(&p.manifest, Codec::DagCbor)?;
        p.verify()?;
        Ok(p)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample_object() -> ObjectManifest {
        let shard = |b: &[u8]| ShardRef {
            cid: cids::raw(b),
            len: b.len() as u32,
        };
        ObjectManifest {
            version: VERSION,
            size: 7,
            blake3: blake3::hash(b"abcdefg"),
            erasure: ErasureParams {
                code: ErasureCode::ReedSolomonGf8,
                k: 2,
                m: 1,
                shard_size: 1024,
            },
            chunking: Chunking::Fixed,
            stripes: vec![Stripe {
                data: vec![shard(b"abcd"), shard(b"efg")],
                parity: vec![cids::raw(b"parity")],
                parity_len: 64,
            }],
            inline: None,
            content_type: Some("text/plain".into()),
            metadata: [("owner".to_string(), "ml-team".to_string())].into(),
        }
    }

    #[test]
    fn object_manifest_round_trips_with_stable_cid() {
        let m = sample_object();
        m.validate().unwrap();
        let bytes = m.to_bytes();
        let back = ObjectManifest::from_bytes_for(&m.cid(), &bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_bytes(), bytes);
        assert!(m.cid().to_string().starts_with("bafyr4i"));
        let layout = m.layout();
        let pieces = layout.pieces(&m, 2..6);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].range, 2..4);
        assert_eq!(pieces[1].range, 0..2);
        assert_eq!(pieces[1].object_offset, 4);
    }

    #[test]
    fn inline_bytes_must_match_the_object_hash() {
        let mut m = sample_object();
        m.stripes.clear();
        m.inline = Some(b"abcdefg".to_vec());
        m.validate().unwrap();
        // Same length, other bytes: a reader would hand them on as the object named by `blake3`.
        m.inline = Some(b"evil!!!".to_vec());
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
        assert!(ObjectManifest::from_bytes(&m.to_bytes()).is_err());
    }

    #[test]
    fn inconsistent_object_manifests_are_rejected() {
        let mut m = sample_object();
        m.size = 8;
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
        let mut m = sample_object();
        m.stripes[0].parity_len = 128;
        assert!(m.validate().is_err());
        let mut m = sample_object();
        m.version = 2;
        assert!(matches!(
            ObjectManifest::from_bytes(&m.to_bytes()),
            Err(ManifestError::Version(2))
        ));
        let mut m = sample_object();
        m.stripes[0].parity.clear();
        assert!(m.validate().is_err());
        let mut m = sample_object();
        m.stripes[0].data[0].cid = cids::dag_cbor(b"abcd");
        assert!(matches!(m.validate(), Err(ManifestError::Cid(_))));
        let m = sample_object();
        let other = cids::dag_cbor(b"something else");
        assert!(matches!(
            ObjectManifest::from_bytes_for(&other, &m.to_bytes()),
            Err(ManifestError::CidMismatch { .. })
        ));
    }

    #[test]
    fn non_canonical_encoding_is_rejected() {
        // The same map with keys out of DAG-CBOR order decodes nowhere: build one by hand.
        // {"v":1,"entries":{}} with "v" sorted after "entries" (wrong: shorter keys first).
        let mut bytes = vec![0xa2];
        bytes.extend([0x67]);
        bytes.extend(b"entries");
        bytes.push(0xa0);
        bytes.push(0x61);
        bytes.extend(b"v");
        bytes.push(0x01);
        assert!(DatasetManifest::from_bytes(&bytes).is_err());
        // And the canonical one is fine.
        let good = DatasetManifest::new().to_bytes();
        assert_eq!(
            DatasetManifest::from_bytes(&good).unwrap(),
            DatasetManifest::new()
        );
        // A non-minimal integer (1 encoded in two bytes) is refused.
        let mut long_int = good.clone();
        let pos = long_int.iter().rposition(|b| *b == 0x01).unwrap();
        long_int.splice(pos..=pos, [0x18, 0x01]);
        assert!(DatasetManifest::from_bytes(&long_int).is_err());
    }

    #[test]
    fn dataset_paths_are_checked() {
        let entry = |data: &[u8]| DatasetEntry {
            size: data.len() as u64,
            blake3: blake3::hash(data),
            location: Location::Inline(data.to_vec()),
            meta: BTreeMap::new(),
        };
        let mut d = DatasetManifest::new();
        d.entries.insert("train/0001.tar".into(), entry(b"x"));
        d.entries.insert("README".into(), entry(b"hello"));
        let back = DatasetManifest::from_bytes(&d.to_bytes()).unwrap();
        assert_eq!(back, d);
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "./a",
            "a/",
            "a\\b",
            "a\0b",
            "a\nb",
            "x\u{1b}[2J",
            "tab\there",
            "c1\u{9b}",
        ] {
            let mut d = DatasetManifest::new();
            d.entries.insert(bad.into(), entry(b"x"));
            assert!(d.validate().is_err(), "{bad:?} accepted");
        }
        let mut d = DatasetManifest::new();
        d.entries.insert("a".into(), entry(b"x"));
        d.entries.insert("a/b".into(), entry(b"y"));
        assert!(d.validate().is_err());
    }

    #[test]
    fn provenance_signs_and_detects_tampering() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let manifest = sample_object().cid();
        let source = Some(Source {
            uri: "https://example.org/data.tar".into(),
            license: Some("CC-BY-4.0".into()),
            digest: None,
            note: None,
        });
        let p = Provenance::sign(manifest, &key, 1_764_000_000_000, source);
        assert_eq!(p.verify().unwrap(), key.verifying_key());
        let bytes = p.to_bytes();
        assert_eq!(Provenance::from_bytes(&bytes).unwrap(), p);
        p.verify_for(&manifest).unwrap();
        assert!(matches!(
            p.verify_for(&cids::dag_cbor(b"other")),
            Err(ManifestError::WrongManifest { .. })
        ));

        let mut t = p.clone();
        t.time_ms += 1;
        assert!(matches!(
            t.verify(),
            Err(ManifestError::BadSignature { .. })
        ));
        let mut t = p.clone();
        t.manifest = cids::dag_cbor(b"other");
        assert!(t.verify().is_err());
        let mut t = p.clone();
        t.source = None;
        assert!(t.verify().is_err());
        let mut t = p.clone();
        t.signature[10] ^= 1;
        assert!(Provenance::from_bytes(&t.to_bytes()).is_err());
        let mut t = p;
        t.signer = SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes()
            .to_vec();
        assert!(t.verify().is_err());
    }

    #[test]
    fn hostile_inputs_are_errors() {
        // Deep nesting, huge declared lengths, truncated input, wrong types.
        let mut deep = vec![0x81u8; 100_000];
        deep.push(0x00);
        let huge_bytes = [
            0xa1, 0x61, b'v', 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let huge_array = [0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let too_big = vec![0u8; MAX_MANIFEST_BYTES + 1];
        for input in [
            &deep[..],
            &huge_bytes,
            &huge_array,
            &[],
            &[0xff],
            &too_big[..],
        ] {
            assert!(ObjectManifest::from_bytes(input).is_err());
            assert!(DatasetManifest::from_bytes(input).is_err());
            assert!(Provenance::from_bytes(input).is_err());
        }
        let good = sample_object().to_bytes();
        for cut in 0..good.len() {
            assert!(ObjectManifest::from_bytes(&good[..cut]).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ObjectManifest::from_bytes(&bytes);
            let _ = DatasetManifest::from_bytes(&bytes);
            let _ = Provenance::from_bytes(&bytes);
        }

        #[test]
        fn mutated_manifests_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let good = sample_object().to_bytes();
            let mut bad = good.clone();
            bad[pos.index(good.len())] = byte;
            bad.truncate(cut.index(good.len() + 1).max(1));
            let _ = ObjectManifest::from_bytes(&bad);
        }
    }
}
