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
//! | `signed` | signer (32 bytes) ‖ `time_ms` (u64 BE) ‖ manifest CID | kind: 0 object, 1 dataset (manifests by signer, newest last) |
//! | `leases` | shard CID | `start ‖ end ‖ size` (`u64 LE` each): the epochs the node holds the shard through |
//! | `receipts` | manifest CID ‖ shard root (32) ‖ node key (32) | an encoded storage receipt |
//! | `receipts-by-node` | node key (32) ‖ manifest CID ‖ shard root (32) | the same receipt |
//! | `holds` | shard CID ‖ u8 object length ‖ object CID ‖ owner (32) | `end ‖ signed_ms` (`u64 LE` each): who the shard is held for until when (`holds`) |
//! | `object-leases` | object CID ‖ owner (32) | the owner's latest encoded lease statement on a manifest this node keeps |
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
//!
//! [`ShardStore`] is the trait over what the node asks of a store; [`Store`] implements it on
//! RocksDB, and [`MemStore`] in memory, for tests and simulations. One suite of contract tests
//! (`store/contract/`) holds both to the same behaviour.
//!
//! The code, by concern: `layout` (column families, keys, opening and converting the
//! database), `space` (capacity, disk room and the free-space rule), `shards` (writes, deletes,
//! quarantine), `reads` (verified range and whole-shard reads, `has`, listings), `outgoing`
//! (whole shards sent a verified piece at a time), `manifests` (manifests, provenance, the
//! signed-by index), `leases` (leases, what an epoch commits to, the raw group reads and
//! quarantine storage proofs use), `receipts` (storage receipts beside manifests), `scrub`,
//! `config`, `error`, and `memory` ([`MemStore`]).

mod collect;
mod config;
#[cfg(test)]
mod contract;
mod error;
mod holds;
mod layout;
mod leases;
mod manifests;
mod memory;
mod outgoing;
mod reads;
mod receipts;
mod scrub;
mod shards;
mod space;
mod spare;
#[cfg(test)]
mod testing;

use std::collections::HashSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};

use bytes::Bytes;
use cairn_chunker::cids::Cid;
use rocksdb::DB;

use cairn_wire::protocol::{Holding, ManifestKind};

pub use collect::Collected;
pub use config::{DEFAULT_DISK_RESERVE, StoreConfig, StoreMetrics};
pub use error::StoreError;
pub use holds::{Applied, Hold, UPLOAD_OWNER};
pub use layout::PIECE_BYTES;
pub use leases::Committable;
pub use memory::MemStore;
pub use outgoing::OutgoingShard;
pub use reads::ListPage;
pub use receipts::{MAX_RECEIPTS_PER_SHARD, ReceiptCursor};
pub use scrub::ScrubReport;
pub use shards::{CheckedShard, PutOutcome};
pub use space::StoreStats;

/// The shard store's operations, as the rest of the node uses them. [`Store`] keeps shards in
/// RocksDB; the trait lets a caller hold an `Arc<dyn ShardStore>` instead, and so be given
/// another store with the same behaviour.
///
/// What every implementation promises: a shard is taken only if its bytes hash to its CID, and
/// served (whole, in pieces or as a range proof) only after its bytes were verified again; a
/// stored copy found corrupt is quarantined (never served, reported as corrupt by
/// [`ShardStore::has`]) until verified bytes are stored for it again; new shards are refused
/// beyond the capacity and the disk's room ([`StoreStats::free`]), and the used-space and shard
/// counters are exact, however calls interleave; manifests are verified against their CIDs,
/// and provenance envelopes against their signatures, kept one per signer, at most as many as
/// readers accept; a held shard has at most one lease, which only grows, and goes when the
/// shard does; storage receipts are kept only for a held manifest whose shards they name, at
/// most [`MAX_RECEIPTS_PER_SHARD`] per shard.
///
/// Methods may block (disk I/O, hashing): call them from a blocking thread.
pub trait ShardStore: Send + Sync + std::fmt::Debug {
    /// Current counts, and the disk's free space as of now.
    fn stats(&self) -> StoreStats;

    /// Fails fast, before any bytes arrive, if `len` more bytes would not fit.
    fn check_space(&self, len: u64) -> Result<(), StoreError>;

    /// Verifies `data` against `cid` and stores it with its outboard, atomically.
    fn put_shard(&self, cid: &Cid, data: &[u8]) -> Result<PutOutcome, StoreError>;

    /// The CPU half of [`ShardStore::put_shard`]: checks `data` against `cid` and computes its
    /// outboard, without touching the stored data.
    fn check_shard(&self, cid: &Cid, data: Bytes) -> Result<CheckedShard, StoreError>;

    /// The disk half of [`ShardStore::put_shard`]: stores a shard that
    /// [`ShardStore::check_shard`] accepted.
    fn commit_shard(&self, shard: CheckedShard) -> Result<PutOutcome, StoreError>;

    /// Removes a shard and gives its space back; `false` if it was not held.
    fn delete_shard(&self, cid: &Cid) -> Result<bool, StoreError>;

    /// A verified-streaming proof stream for `range` of a shard (whole shard if `None`), built
    /// from verified bytes only: the shard size and the proof stream.
    fn read_range(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<(u64, Vec<u8>), StoreError>;

    /// The whole shard, verified against its CID.
    fn read_shard(&self, cid: &Cid) -> Result<Vec<u8>, StoreError>;

    /// Opens a whole shard for sending: its outboard, checked against the CID. Its bytes are
    /// then taken with [`ShardStore::next_piece`].
    fn open_outgoing(&self, cid: &Cid) -> Result<OutgoingShard, StoreError>;

    /// The next verified piece of a shard this store opened: see
    /// [`OutgoingShard::next_piece`].
    fn next_piece(
        &self,
        shard: &mut OutgoingShard,
        max: usize,
    ) -> Result<Option<Bytes>, StoreError>;

    /// For each CID: held intact (and its length), held but quarantined, or absent. Manifest
    /// CIDs are answered from the manifests, re-hashed.
    fn has(&self, cids: &[Cid]) -> Result<Vec<Holding>, StoreError>;

    /// Held shards in CID byte order, after `after`, at most `limit`.
    fn list(&self, after: Option<&Cid>, limit: usize) -> Result<ListPage, StoreError>;

    /// Verifies shards from `cursor` on, until about `max_bytes` were read.
    fn scrub_step(&self, cursor: Option<&Cid>, max_bytes: u64) -> Result<ScrubReport, StoreError>;

    /// Checks and stores a manifest (object or dataset) and any provenance envelopes for it.
    fn put_manifest(
        &self,
        cid: &Cid,
        kind: ManifestKind,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> Result<(), StoreError>;

    /// A stored manifest and its provenance envelopes, re-verified.
    fn get_manifest(&self, cid: &Cid) -> Result<(Vec<u8>, Vec<Vec<u8>>), StoreError>;

    /// Manifests signed by `signer`, newest first (by the signer's clock), at most `limit`:
    /// `(manifest CID, time_ms, kind)`.
    fn signed_by(
        &self,
        signer: &[u8],
        limit: usize,
    ) -> Result<Vec<(Cid, u64, ManifestKind)>, StoreError>;

    /// Records a lease `(start, end)` (in epochs) on a held shard, or extends the one it has to
    /// the earliest start and the latest end; returns the lease now held, durably.
    /// [`StoreError::NotFound`] if the shard is not held, [`StoreError::BadLease`] if
    /// `end < start`.
    fn extend_lease(&self, cid: &Cid, start: u64, end: u64) -> Result<(u64, u64), StoreError>;

    /// Records the node's own upload hold `(start, end)` on a held shard (see
    /// [`Store::hold_upload`]) and returns the lease now held, durably. A store without holds
    /// ([`MemStore`]) extends the lease as [`ShardStore::extend_lease`] does.
    fn hold_upload(
        &self,
        cid: &Cid,
        start: u64,
        end: u64,
        epochs: cairn_proofs::epoch::Epochs,
    ) -> Result<(u64, u64), StoreError> {
        let _ = epochs;
        self.extend_lease(cid, start, end)
    }

    /// A shard's lease; `None` if it is not held, or held under no lease yet.
    fn lease(&self, cid: &Cid) -> Result<Option<(u64, u64)>, StoreError>;

    /// What the node commits to in `epoch`: every held shard whose lease has
    /// `start < epoch <= end`, intact ones as `(root, size)` sorted by root, quarantined ones
    /// by root. Reads the leases only (no piece, no outboard). Shards stored before leases
    /// existed were given the lease `(0, u64::MAX)` when the store was opened (format 4).
    fn committable(&self, epoch: u64) -> Result<Committable, StoreError>;

    /// `(size, group bytes, whole outboard)` for 16 KiB group `group` of a held shard (the last
    /// group may be short), read from the one stored piece holding it and not verified.
    /// Quarantined: [`StoreError::Corrupt`]; not held: [`StoreError::NotFound`]; past the end:
    /// [`StoreError::NoSuchGroup`].
    fn read_group(&self, cid: &Cid, group: u64) -> Result<(u64, Vec<u8>, Vec<u8>), StoreError>;

    /// Quarantines a held shard whose bytes the caller found bad at `offset`, as a corrupt read
    /// does (unless, read again under the shard's claim, it verifies: it was repaired
    /// meanwhile). [`StoreError::NotFound`] if it is not held.
    fn quarantine(&self, cid: &Cid, offset: u64) -> Result<(), StoreError>;

    /// Keeps encoded storage receipts beside a held manifest: see [`Store::put_receipts`].
    /// Returns how many were written.
    fn put_receipts(&self, manifest: &Cid, receipts: &[Vec<u8>]) -> Result<usize, StoreError>;

    /// Every receipt kept for a held manifest, by shard root and then node key.
    fn receipts_for(&self, manifest: &Cid) -> Result<Vec<Vec<u8>>, StoreError>;

    /// A page of [`ShardStore::receipts_for`]: at most `limit` after `after`, and whether more
    /// follow.
    fn receipts_page(
        &self,
        manifest: &Cid,
        after: Option<ReceiptCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError>;

    /// Receipts signed by `node` across every manifest, at most `limit`, by manifest CID and
    /// then shard root.
    fn receipts_of(&self, node: &[u8; 32], limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Makes everything stored so far durable (called on clean shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}

/// The RocksDB shard store.
pub struct Store {
    db: DB,
    path: PathBuf,
    /// Shards being written or deleted (keys): a second caller for the same shard waits on
    /// `settled` for the first one's outcome.
    busy: Mutex<HashSet<Vec<u8>>>,
    settled: Condvar,
    /// Capacity taken: shard bytes and manifest bytes (manifests and their envelopes take
    /// capacity too), counting space reserved by writes in progress. One counter, so that
    /// writes in flight together never exceed capacity.
    used: AtomicU64,
    /// Of `used`, the bytes of manifests and their envelopes.
    manifest_bytes: AtomicU64,
    /// Bytes of new shards whose batches are being written: not on the disk yet, so counted
    /// against its free space by the writes beside them.
    writing: AtomicU64,
    count: AtomicU64,
    config: StoreConfig,
    metrics: StoreMetrics,
    /// Whether the last look at the disk found it full (logged once per change).
    disk_full: std::sync::atomic::AtomicBool,
    /// Copies marked spare ([`Store::mark_spare`]), in memory only.
    spare: spare::Spares,
    /// Keeps other processes out of the directory; released after the database closes (fields
    /// drop in order).
    _lock: cairn_wire::daemon::DataLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The RocksDB store's own methods, documented where they are defined.
impl ShardStore for Store {
    fn stats(&self) -> StoreStats {
        Store::stats(self)
    }

    fn check_space(&self, len: u64) -> Result<(), StoreError> {
        Store::check_space(self, len)
    }

    fn put_shard(&self, cid: &Cid, data: &[u8]) -> Result<PutOutcome, StoreError> {
        Store::put_shard(self, cid, data)
    }

    fn check_shard(&self, cid: &Cid, data: Bytes) -> Result<CheckedShard, StoreError> {
        Store::check_shard(self, cid, data)
    }

    fn commit_shard(&self, shard: CheckedShard) -> Result<PutOutcome, StoreError> {
        Store::commit_shard(self, shard)
    }

    fn delete_shard(&self, cid: &Cid) -> Result<bool, StoreError> {
        Store::delete_shard(self, cid)
    }

    fn read_range(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        Store::read_range(self, cid, range)
    }

    fn read_shard(&self, cid: &Cid) -> Result<Vec<u8>, StoreError> {
        Store::read_shard(self, cid)
    }

    fn open_outgoing(&self, cid: &Cid) -> Result<OutgoingShard, StoreError> {
        Store::open_outgoing(self, cid)
    }

    fn next_piece(
        &self,
        shard: &mut OutgoingShard,
        max: usize,
    ) -> Result<Option<Bytes>, StoreError> {
        shard.next_piece(self, max)
    }

    fn has(&self, cids: &[Cid]) -> Result<Vec<Holding>, StoreError> {
        Store::has(self, cids)
    }

    fn list(&self, after: Option<&Cid>, limit: usize) -> Result<ListPage, StoreError> {
        Store::list(self, after, limit)
    }

    fn scrub_step(&self, cursor: Option<&Cid>, max_bytes: u64) -> Result<ScrubReport, StoreError> {
        Store::scrub_step(self, cursor, max_bytes)
    }

    fn put_manifest(
        &self,
        cid: &Cid,
        kind: ManifestKind,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        Store::put_manifest(self, cid, kind, bytes, envelopes)
    }

    fn get_manifest(&self, cid: &Cid) -> Result<(Vec<u8>, Vec<Vec<u8>>), StoreError> {
        Store::get_manifest(self, cid)
    }

    fn signed_by(
        &self,
        signer: &[u8],
        limit: usize,
    ) -> Result<Vec<(Cid, u64, ManifestKind)>, StoreError> {
        Store::signed_by(self, signer, limit)
    }

    fn extend_lease(&self, cid: &Cid, start: u64, end: u64) -> Result<(u64, u64), StoreError> {
        Store::extend_lease(self, cid, start, end)
    }

    fn hold_upload(
        &self,
        cid: &Cid,
        start: u64,
        end: u64,
        epochs: cairn_proofs::epoch::Epochs,
    ) -> Result<(u64, u64), StoreError> {
        Store::hold_upload(self, cid, start, end, epochs)
    }

    fn lease(&self, cid: &Cid) -> Result<Option<(u64, u64)>, StoreError> {
        Store::lease(self, cid)
    }

    fn committable(&self, epoch: u64) -> Result<Committable, StoreError> {
        Store::committable(self, epoch)
    }

    fn read_group(&self, cid: &Cid, group: u64) -> Result<(u64, Vec<u8>, Vec<u8>), StoreError> {
        Store::read_group(self, cid, group)
    }

    fn quarantine(&self, cid: &Cid, offset: u64) -> Result<(), StoreError> {
        Store::quarantine(self, cid, offset)
    }

    fn put_receipts(&self, manifest: &Cid, receipts: &[Vec<u8>]) -> Result<usize, StoreError> {
        Store::put_receipts(self, manifest, receipts)
    }

    fn receipts_for(&self, manifest: &Cid) -> Result<Vec<Vec<u8>>, StoreError> {
        Store::receipts_for(self, manifest)
    }

    fn receipts_page(
        &self,
        manifest: &Cid,
        after: Option<ReceiptCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        Store::receipts_page(self, manifest, after, limit)
    }

    fn receipts_of(&self, node: &[u8; 32], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Store::receipts_of(self, node, limit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Store::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn callers_can_hold_any_store_behind_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            capacity: 1 << 20,
            ..StoreConfig::default()
        };
        let stores: [Arc<dyn ShardStore>; 2] = [
            Arc::new(testing::open(dir.path(), 1 << 20)),
            Arc::new(MemStore::new(config, StoreMetrics::default())),
        ];
        for store in stores {
            let (cid, data) = testing::shard(300_000, 3);
            assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Stored);
            let mut outgoing = store.open_outgoing(&cid).unwrap();
            let mut sent = Vec::new();
            while let Some(piece) = store.next_piece(&mut outgoing, PIECE_BYTES).unwrap() {
                sent.extend_from_slice(&piece);
            }
            assert_eq!(sent, data);
            assert_eq!(store.stats().used, 300_000);
            store.flush().unwrap();
        }
    }
}
