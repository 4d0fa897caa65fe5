//! What can go wrong.

use std::path::PathBuf;

use cairn_chunker::cids::{Cid, CidError};
use cairn_chunker::manifest::{MAX_SHARD_SIZE, ManifestError};
use cairn_chunker::verified::ProofError;

/// `bytes` in MiB, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store.
    #[error(
        "data directory {path} is in use by another process: stop the other cairn-node or use a different --data-dir"
    )]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// RocksDB failed to open.
    #[error("opening the shard store at {path}: {source}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The store's directory or its lock file could not be made.
    #[error("preparing the shard store at {path}: {source}")]
    Prepare {
        /// The database directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A RocksDB operation failed.
    #[error("RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    /// The CID is not a Cairn shard CID.
    #[error(transparent)]
    Cid(#[from] CidError),
    /// Bytes offered for storage do not hash to their CID.
    #[error("shard bytes do not match {cid}: refused")]
    HashMismatch {
        /// The CID claimed.
        cid: Cid,
    },
    /// An empty or oversized shard.
    #[error("shard of {len} bytes refused: shards are 1..={MAX_SHARD_SIZE} bytes")]
    BadSize {
        /// Length offered.
        len: usize,
    },
    /// The capacity limit would be exceeded.
    #[error(
        "node is full: {used} of {capacity} bytes used and {needed} more needed; raise storage.capacity or add nodes"
    )]
    NoSpace {
        /// Bytes used.
        used: u64,
        /// Capacity.
        capacity: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The filesystem holding the store is (nearly) full, whatever the capacity allows.
    #[error(
        "the disk holding {path} is full: {} free, {} of it kept free (storage.disk_reserve), \
         {needed} more bytes needed; free disk space, lower storage.disk_reserve, or set \
         storage.capacity to what the disk can hold",
        mib(*.available),
        mib(*.reserve)
    )]
    DiskFull {
        /// The store's directory.
        path: PathBuf,
        /// Bytes free on its filesystem.
        available: u64,
        /// Bytes kept free.
        reserve: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// Not held.
    #[error("{cid} is not stored here")]
    NotFound {
        /// The CID asked for.
        cid: Cid,
    },
    /// The stored copy failed verification and was not served.
    #[error("stored copy of {cid} is corrupt (first bad byte near {offset}); it was not served")]
    Corrupt {
        /// The shard.
        cid: Cid,
        /// Offset of the first bad group found.
        offset: u64,
    },
    /// A range outside the shard.
    #[error(transparent)]
    Range(ProofError),
    /// A manifest or envelope was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest already carries as many provenance envelopes (one per signer) as readers
    /// accept.
    #[error(
        "{cid} already carries {max} provenance envelopes from other signers: no more are kept"
    )]
    TooManyEnvelopes {
        /// The manifest.
        cid: Cid,
        /// Most envelopes kept per manifest.
        max: usize,
    },
    /// A lease that ends before it starts.
    #[error("lease of {cid} from epoch {start} to epoch {end} ends before it starts")]
    BadLease {
        /// The shard.
        cid: Cid,
        /// First epoch asked for.
        start: u64,
        /// Last epoch asked for.
        end: u64,
    },
    /// A 16 KiB group past the end of the shard.
    #[error("{cid} has {groups} groups of 16 KiB: there is no group {group}")]
    NoSuchGroup {
        /// The shard.
        cid: Cid,
        /// The group asked for.
        group: u64,
        /// How many groups the shard has.
        groups: u64,
    },
    /// Storage receipts offered for a manifest were refused (none of them is kept).
    #[error("storage receipts for {manifest} refused: {reason}")]
    BadReceipts {
        /// The manifest.
        manifest: Cid,
        /// What is wrong, naming the receipt.
        reason: String,
    },
    /// Metadata the store wrote itself does not parse.
    #[error("store metadata is damaged: {0}")]
    Damaged(String),
}
