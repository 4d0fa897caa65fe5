//! The shard store: RocksDB, verified on every read.
//!
//! Column families (layout in `node/DESIGN.md`):
//!
//! | CF | key | value |
//! |---|---|---|
//! | `shards` | shard CID (36 bytes) ‖ piece number (u16 BE) | the shard's bytes in pieces of [`PIECE_BYTES`] (the last may be shorter) — in RocksDB blob files, out of compactions |
//! | `outboards` | shard CID | `size: u64 LE ‖ BLAKE3 outboard` |
//! | `corrupt` | shard CID | `detected_ms: u64 LE`: shards that failed verification |
//! | `manifests` | manifest CID | manifest bytes |
//! | `provenance` | manifest CID ‖ envelope CID | envelope bytes |
//! | `meta` | `used`, `count`, `format` | `u64 LE` (`used` and `count` change by merge operands: `i64 LE` deltas) |
//!
//! Shards are kept in pieces so that a range read loads only the pieces it touches (a 16 KiB
//! read of a 1 MiB shard reads 128 KiB, not 1 MiB) and a whole-shard send starts once its first
//! piece is read and verified, not after the whole shard. Each piece is a whole number of 16 KiB
//! verification groups, so it is checked on its own against the outboard. Stores written by
//! older builds (format 1: one value per shard) are converted when opened.
//!
//! A shard's pieces, its outboard and the change to the used-space and shard counters are written
//! in one `WriteBatch` (WAL on, fsync per batch unless configured off), so a crash at any moment
//! leaves either all of them or none, and used space is never learned by walking the disk. The
//! counters change by merge operands (deltas RocksDB adds up), not by writing totals, so
//! batches need no order among themselves: shard writes run concurrently and RocksDB commits
//! concurrent batches together, one WAL write and one fsync for the group. Capacity is reserved
//! in memory before a batch is written (and given back if it fails), and a shard is written or
//! deleted by one caller at a time (others wait for the outcome), so the counters stay exact.
//! Every read re-verifies the bytes against the CID (range reads verify the served groups and
//! their proof path); a mismatch is never served: it is counted, logged, recorded in `corrupt`
//! and reported. Reads run concurrently with everything.
//!
//! All methods block: call them from a blocking thread (`tokio::task::spawn_blocking`).

mod config;
mod error;
mod layout;
mod manifests;
mod outgoing;
mod reads;
mod scrub;
mod shards;
mod space;
#[cfg(test)]
mod testing;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};

use rocksdb::DB;

pub use config::{DEFAULT_DISK_RESERVE, StoreConfig, StoreMetrics};
pub use error::StoreError;
pub use layout::PIECE_BYTES;
pub use outgoing::OutgoingShard;
pub use reads::ListPage;
pub use scrub::ScrubReport;
pub use shards::{CheckedShard, PutOutcome};
pub use space::{StoreStats, free_space};

/// The RocksDB shard store.
pub struct Store {
    db: DB,
    path: PathBuf,
    /// Shards being written or deleted (keys): a second caller for the same shard waits on
    /// `settled` for the first one's outcome.
    busy: Mutex<HashSet<Vec<u8>>>,
    settled: Condvar,
    /// Bytes used, counting space reserved by writes in progress.
    used: AtomicU64,
    /// Bytes of new shards whose batches are being written: not on the disk yet, so counted
    /// against its free space by the writes beside them.
    writing: AtomicU64,
    count: AtomicU64,
    config: StoreConfig,
    metrics: StoreMetrics,
    /// Whether the last look at the disk found it full (logged once per change).
    disk_full: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
