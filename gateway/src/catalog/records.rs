//! What the catalog stores: buckets, objects (and where their bytes are), multipart uploads and
//! their parts; and the condition a conditional write asks of a key's current object.

use std::collections::BTreeMap;

use cairn_chunker::Cid;
use serde::{Deserialize, Serialize};

/// Where an object's bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Location {
    /// A whole Cairn object (its manifest CID).
    Object(Cid),
    /// The object's bytes at `offset` of a Cairn object (a file inside a dataset's pack).
    Slice {
        /// The pack object's manifest CID.
        object: Cid,
        /// Offset within it.
        offset: u64,
    },
    /// The bytes themselves (tiny files of an imported dataset).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Location {
    /// The manifest CID holding the bytes (none for inline bytes).
    pub fn cid(&self) -> Option<&Cid> {
        match self {
            Location::Object(c) | Location::Slice { object: c, .. } => Some(c),
            Location::Inline(_) => None,
        }
    }
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
}

/// An object as S3 sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Where the bytes are.
    pub location: Location,
    /// Size in bytes.
    pub size: u64,
    /// ETag value without quotes (hex MD5, or `md5-of-md5s-N` for multipart).
    pub etag: String,
    /// Content type.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: BTreeMap<String, String>,
    /// Last modification, ms since the epoch.
    pub modified_ms: u64,
    /// Checksums the client sent (algorithm -> base64 value), returned on whole-object reads.
    pub checksums: BTreeMap<String, String>,
    /// Hex public key of the manifest's signer.
    pub signer: String,
    /// Hex BLAKE3 of the object's bytes.
    pub blake3: String,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Target bucket.
    pub bucket: String,
    /// Target key.
    pub key: String,
    /// Start time, ms since the epoch.
    pub created_ms: u64,
    /// Content type of the final object.
    pub content_type: Option<String>,
    /// User metadata of the final object.
    pub metadata: BTreeMap<String, String>,
    /// Erasure parameters of every part, fixed when the upload is created: the gateway's
    /// may change across a restart, and Complete can only join parts that share them.
    /// (`None` in records written before this field: parts take the gateway's current ones.)
    #[serde(default)]
    pub erasure: Option<cairn_chunker::manifest::ErasureParams>,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The part's own Cairn object.
    pub cid: Cid,
    /// Size in bytes.
    pub size: u64,
    /// Hex MD5 of the part.
    pub etag: String,
    /// Upload time, ms since the epoch.
    pub modified_ms: u64,
    /// The offset in the final object the part was hashed at (as if every part before it were
    /// as long as it), when it was.
    #[serde(default)]
    pub hashed_at: Option<u64>,
    /// The part's BLAKE3 tree nodes at `hashed_at`: Complete merges them into the object's
    /// hash when the offset turns out right.
    #[serde(default)]
    pub nodes: Vec<cairn_chunker::pieces::Subtree>,
}

/// What a key's current object must be for a write to it to land: S3's conditional writes
/// (`If-None-Match: *`, `If-Match`). The default asks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteCondition {
    /// `If-None-Match: *`: the key holds no object.
    pub absent: bool,
    /// `If-Match`: the key holds an object, with this ETag.
    pub if_match: Option<ETagMatch>,
}

/// The ETag an `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ETagMatch {
    /// `*`: any.
    Any,
    /// This one (unquoted; strong comparison).
    Strong(String),
    /// A weak ETag, which the strong comparison `If-Match` uses never matches.
    Weak,
}

impl WriteCondition {
    /// Whether this asks anything of the key.
    pub fn is_none(&self) -> bool {
        !self.absent && self.if_match.is_none()
    }

    /// Whether a key whose object is `current` meets this; why not if it does not.
    pub fn check(&self, current: Option<&ObjectRecord>) -> Result<(), String> {
        match (current, &self.if_match) {
            (Some(_), _) if self.absent => Err("object already exists".into()),
            (None, Some(_)) => Err("object does not exist".into()),
            (Some(r), Some(m)) => match m {
                ETagMatch::Any => Ok(()),
                ETagMatch::Strong(e) if *e == r.etag => Ok(()),
                ETagMatch::Strong(_) | ETagMatch::Weak => Err("ETag does not match".into()),
            },
            _ => Ok(()),
        }
    }
}
