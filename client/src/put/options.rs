//! How to write: erasure code and chunking, metadata, manifest copies, bytes in flight.

use std::collections::BTreeMap;

use cairn_chunker::manifest::Source;
use cairn_chunker::pipeline::EncodeParams;

use super::PACK_TARGET;

/// How to write.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Erasure code, shard size, chunking, threads.
    pub params: EncodeParams,
    /// Content type of a single object.
    pub content_type: Option<String>,
    /// User metadata of a single object.
    pub metadata: BTreeMap<String, String>,
    /// Where the data came from (goes into the signed provenance envelope).
    pub source: Option<Source>,
    /// On how many nodes to store each manifest (default `m + 1`).
    pub manifest_copies: Option<usize>,
    /// Most shard bytes being uploaded at once.
    pub inflight_bytes: usize,
    /// Also compute each file's MD5, the ETag S3 clients expect, for files published over S3
    /// (`cairn put --bucket`). One more pass over the bytes, on the thread that reads them.
    pub md5: bool,
    /// [`put_dir`](super::put_dir) closes a pack of small files once it holds this many bytes.
    /// Part of the dataset's layout: a different value gives a different dataset CID.
    pub pack_target: usize,
}

impl Default for PutOptions {
    fn default() -> Self {
        Self {
            params: EncodeParams::with_shape(4, 2),
            content_type: None,
            metadata: BTreeMap::new(),
            source: None,
            manifest_copies: None,
            inflight_bytes: 256 << 20,
            md5: false,
            pack_target: PACK_TARGET,
        }
    }
}

impl PutOptions {
    /// Options for a network of `nodes`: 10+4 when there are 14 or more nodes, else 4+2.
    pub fn for_network(nodes: usize) -> Self {
        let mut o = Self::default();
        if nodes >= 14 {
            o.params.erasure.k = 10;
            o.params.erasure.m = 4;
        }
        o
    }

    pub(super) fn copies(&self) -> usize {
        self.manifest_copies
            .unwrap_or(usize::from(self.params.erasure.m) + 1)
            .max(1)
    }
}
