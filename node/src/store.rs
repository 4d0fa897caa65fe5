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

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, CidError, Codec};
use cairn_chunker::manifest::{
    DatasetManifest, MAX_SHARD_SIZE, ManifestError, ObjectManifest, Provenance,
};
use cairn_chunker::verified::{self, OutboardVerifier, ProofError};
use prometheus_client::metrics::counter::Counter;
use rocksdb::{
    ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, MergeOperands, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

use cairn_wire::protocol::{Holding, ManifestKind};

const CF_SHARDS: &str = "shards";
const CF_OUTBOARDS: &str = "outboards";
const CF_CORRUPT: &str = "corrupt";
/// Most provenance envelopes kept (and served) per manifest: what readers accept.
const MAX_ENVELOPES: usize = cairn_wire::protocol::MAX_ENVELOPES as usize;
const CF_MANIFESTS: &str = "manifests";
const CF_PROVENANCE: &str = "provenance";
const CF_META: &str = "meta";
/// Manifests by signer: `signer (32) ‖ time_ms (u64 BE) ‖ manifest CID` -> kind (0 object,
/// 1 dataset), so a signer can find what it published (a gateway its latest catalog export).
const CF_SIGNED: &str = "signed";
const KEY_USED: &[u8] = b"used";
const KEY_COUNT: &[u8] = b"count";
const KEY_FORMAT: &[u8] = b"format";
/// Format 3: `used` and `count` change by merge operands ([`add_deltas`]). Format 2 (shards in
/// pieces, counters written as totals) opens as it is: a total is a base the deltas add to. It
/// is marked 3 so that older builds, which lack the merge operator, refuse it clearly. Format 1
/// (one value per shard) is converted on open.
const FORMAT: u64 = 3;

/// The merge operator of the `meta` column family: values and operands are 8-byte
/// little-endian integers, a value the sum of the operands merged into it (a missing value
/// counts as 0). Associative, so RocksDB may also add operands to each other first.
fn add_deltas(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let int = |b: &[u8]| -> Option<i64> { Some(i64::from_le_bytes(b.try_into().ok()?)) };
    let mut sum = existing.map_or(Some(0), int)?;
    for op in operands {
        sum = sum.wrapping_add(int(op)?);
    }
    Some(sum.to_le_bytes().to_vec())
}

/// A counter's merge operand.
fn delta(d: i64) -> [u8; 8] {
    d.to_le_bytes()
}

/// Shard bytes are stored in pieces of this many bytes (see the module docs): 8 verification
/// groups, the size the node hands to the network at a time.
pub const PIECE_BYTES: usize = 8 * verified::GROUP_BYTES;

/// The RocksDB key of piece `i` of the shard keyed `key`.
fn piece_key(key: &[u8], i: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(key);
    // MAX_SHARD_SIZE / PIECE_BYTES = 512 pieces at most. Big-endian, so a shard's pieces
    // sort in order (`scan_pieces` walks them so).
    #[allow(clippy::big_endian_bytes)]
    k.extend_from_slice(&(i as u16).to_be_bytes());
    k
}

/// Consecutive pieces as one buffer.
fn join(pieces: &[rocksdb::DBPinnableSlice<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for p in pieces {
        out.extend_from_slice(p);
    }
    out
}

/// How many pieces a shard of `size` bytes is stored in.
fn piece_count(size: u64) -> usize {
    size.div_ceil(PIECE_BYTES as u64) as usize
}

/// The byte range of piece `i` of a shard of `size` bytes.
fn piece_bytes(size: u64, i: usize) -> Range<u64> {
    let start = (i * PIECE_BYTES) as u64;
    start..(start + PIECE_BYTES as u64).min(size)
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Most shard bytes the store accepts.
    pub capacity: u64,
    /// fsync the WAL on every write batch (durable against power loss, ~2x slower writes).
    pub sync_writes: bool,
    /// Let RocksDB also verify its own block/blob checksums on shard reads. Cairn re-verifies
    /// BLAKE3 on every read regardless; see docs/BENCHMARKS.md for the cost.
    pub rocksdb_checksums: bool,
    /// Bytes to leave free on the filesystem that holds the store, whatever the capacity says:
    /// a shard that would eat into them is refused. RocksDB needs room to flush and compact, and
    /// a disk filled to the last byte fails every write, metadata included.
    pub disk_reserve: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            capacity: 100 << 30,
            sync_writes: true,
            rocksdb_checksums: false,
            disk_reserve: DEFAULT_DISK_RESERVE,
        }
    }
}

/// `bytes` in MiB, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// Default of [`StoreConfig::disk_reserve`].
pub const DEFAULT_DISK_RESERVE: u64 = 1 << 30;

/// Counters the store updates; the node registers them with Prometheus.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// Shard reads served (full or range).
    pub reads: Counter,
    /// Shards written.
    pub writes: Counter,
    /// Stored shards that failed verification (bitrot, tampering).
    pub verification_failures: Counter,
    /// Incoming shards refused because they did not match their CID.
    pub rejected_writes: Counter,
    /// Bytes checked by the background scrub.
    pub scrubbed_bytes: Counter,
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the RocksDB lock.
    #[error(
        "data directory {path} is in use by another process (RocksDB lock held): stop the other cairn-node or use a different --data-dir"
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
    /// Metadata the store wrote itself does not parse.
    #[error("store metadata is damaged: {0}")]
    Damaged(String),
}

/// Space and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Shards stored.
    pub shards: u64,
    /// Shard bytes stored.
    pub used: u64,
    /// Capacity limit.
    pub capacity: u64,
    /// Bytes free on the filesystem holding the store (`None`: it could not be asked).
    pub disk_available: Option<u64>,
    /// Bytes kept free on that filesystem ([`StoreConfig::disk_reserve`]).
    pub disk_reserve: u64,
}

impl StoreStats {
    /// Room on the disk for shards: what is free beyond the reserve (`None`: unknown).
    pub fn disk_room(&self) -> Option<u64> {
        self.disk_available
            .map(|a| a.saturating_sub(self.disk_reserve))
    }

    /// Shard bytes the store can still take: the smaller of what the capacity leaves and what
    /// the disk has room for.
    pub fn free(&self) -> u64 {
        let by_capacity = self.capacity.saturating_sub(self.used);
        self.disk_room()
            .map_or(by_capacity, |room| by_capacity.min(room))
    }
}

/// A shard whose bytes [`Store::check_shard`] found to match its CID, with its outboard: all
/// [`Store::commit_shard`] needs. It can only be made by checking.
#[derive(Debug)]
pub struct CheckedShard {
    cid: Cid,
    data: Bytes,
    outboard: Vec<u8>,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Newly stored.
    Stored,
    /// Already held and intact; nothing written.
    AlreadyHeld,
    /// A copy known to be corrupt was replaced by these verified bytes.
    Repaired,
}

/// A page of [`Store::list`]: `(cid, length, corrupt)` entries and whether more follow.
pub type ListPage = (Vec<(Cid, u64, bool)>, bool);

/// Result of one scrub step.
#[derive(Debug, Default, Clone)]
pub struct ScrubReport {
    /// Shards checked.
    pub checked: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Shards found corrupt in this step.
    pub corrupt: Vec<Cid>,
    /// Shards that could not be checked (a read error other than corruption, such as an I/O
    /// error): logged and passed over, so one bad row does not stop the scrub for good.
    pub unreadable: Vec<(Cid, String)>,
    /// Where to continue; `None` when the pass reached the end.
    pub next: Option<Cid>,
}

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

/// A shard marked busy by [`Store::claim`]; dropping it lets the next caller for that shard in.
struct Claim<'a> {
    store: &'a Store,
    key: Vec<u8>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut busy = self.store.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.key);
        drop(busy);
        self.store.settled.notify_all();
    }
}

fn u64_le(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Damaged(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_le_bytes(arr))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(
        path: &Path,
        config: StoreConfig,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_compression_type(DBCompressionType::None);

        let mut shard_opts = Options::default();
        shard_opts.set_compression_type(DBCompressionType::None);
        shard_opts.set_enable_blob_files(true);
        shard_opts.set_min_blob_size(4096);
        shard_opts.set_blob_file_size(256 << 20);
        shard_opts.set_blob_compression_type(DBCompressionType::None);
        shard_opts.set_enable_blob_gc(true);
        shard_opts.set_write_buffer_size(64 << 20);

        let plain = || {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::None);
            o
        };
        let mut meta_opts = plain();
        meta_opts.set_merge_operator_associative("cairn-add-i64", add_deltas);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_SHARDS, shard_opts),
            ColumnFamilyDescriptor::new(CF_OUTBOARDS, plain()),
            ColumnFamilyDescriptor::new(CF_CORRUPT, plain()),
            ColumnFamilyDescriptor::new(CF_MANIFESTS, plain()),
            ColumnFamilyDescriptor::new(CF_PROVENANCE, plain()),
            ColumnFamilyDescriptor::new(CF_META, meta_opts),
            ColumnFamilyDescriptor::new(CF_SIGNED, plain()),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| {
            let msg = source.to_string();
            if msg.contains("lock")
                && (msg.contains("Resource temporarily unavailable")
                    || msg.contains("No locks available"))
            {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let store = Self {
            db,
            path: path.to_path_buf(),
            busy: Mutex::new(HashSet::new()),
            settled: Condvar::new(),
            used: AtomicU64::new(0),
            writing: AtomicU64::new(0),
            count: AtomicU64::new(0),
            config,
            metrics,
            disk_full: std::sync::atomic::AtomicBool::new(false),
        };
        let meta = store.cf(CF_META)?;
        match store.db.get_cf(meta, KEY_FORMAT)? {
            None => store.db.put_cf(meta, KEY_FORMAT, FORMAT.to_le_bytes())?,
            Some(v) if u64_le(&v)? == FORMAT => {}
            Some(v) if u64_le(&v)? == 2 => {
                store
                    .db
                    .put_cf_opt(meta, KEY_FORMAT, FORMAT.to_le_bytes(), &store.write_opts())?
            }
            Some(v) if u64_le(&v)? == 1 => store.convert_from_format_1()?,
            Some(v) => {
                return Err(StoreError::Damaged(format!(
                    "store format {} is not supported by this build (format {FORMAT})",
                    u64_le(&v)?
                )));
            }
        }
        // A counter below zero would be a bug in the deltas; it reads as 0, not as 2^64 - n.
        let read = |k: &[u8]| -> Result<u64, StoreError> {
            let v = store.db.get_cf(meta, k)?.map_or(Ok(0), |v| u64_le(&v))?;
            Ok(u64::try_from(v as i64).unwrap_or(0))
        };
        store.used.store(read(KEY_USED)?, Ordering::SeqCst);
        store.count.store(read(KEY_COUNT)?, Ordering::SeqCst);
        Ok(store)
    }

    /// Converts a format-1 store (one RocksDB value per shard) to pieces, one shard per
    /// write batch (its pieces written and its old value deleted together), so a crash part
    /// way leaves every shard readable and the next open carries on where this one stopped.
    fn convert_from_format_1(&self) -> Result<(), StoreError> {
        let (outboards, shards, meta) = (
            self.cf(CF_OUTBOARDS)?,
            self.cf(CF_SHARDS)?,
            self.cf(CF_META)?,
        );
        let total = self
            .db
            .get_cf(meta, KEY_COUNT)?
            .map_or(Ok(0), |v| u64_le(&v))?;
        tracing::info!(
            shards = total,
            "converting the shard store from format 1 to shards in pieces: every shard is rewritten \
             once, and the old copies are freed as blob garbage collection reaches them"
        );
        let mut converted = 0u64;
        for item in self.db.iterator_cf(outboards, IteratorMode::Start) {
            let (key, _) = item?;
            let old = match self.db.get_pinned_cf(shards, &key) {
                Ok(Some(old)) => old,
                // Converted before a crash, or lost: reads will tell (and quarantine).
                Ok(None) => continue,
                Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => {
                    tracing::warn!(
                        "a shard's value is unreadable; left for the scrub to report: {e}"
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut batch = WriteBatch::default();
            for (i, piece) in old.chunks(PIECE_BYTES).enumerate() {
                batch.put_cf(shards, piece_key(&key, i), piece);
            }
            batch.delete_cf(shards, &key);
            drop(old);
            self.db.write_opt(batch, &self.write_opts())?;
            converted += 1;
            if converted.is_multiple_of(10_000) {
                tracing::info!(converted, of = total, "converting the shard store");
            }
        }
        self.db
            .put_cf_opt(meta, KEY_FORMAT, FORMAT.to_le_bytes(), &self.write_opts())?;
        tracing::info!(converted, "shard store converted to shards in pieces");
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Damaged(format!("column family {name} is missing")))
    }

    fn write_opts(&self) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(self.config.sync_writes);
        w
    }

    /// The configured capacity.
    pub fn capacity(&self) -> u64 {
        self.config.capacity
    }

    /// Current counts, and the disk's free space as of now.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            shards: self.count.load(Ordering::SeqCst),
            used: self.used.load(Ordering::SeqCst),
            capacity: self.config.capacity,
            disk_available: self.disk_available(),
            disk_reserve: self.config.disk_reserve,
        }
    }

    /// Bytes free for unprivileged use on the filesystem holding the store (`statvfs`), or
    /// `None` if it cannot be asked.
    pub fn disk_available(&self) -> Option<u64> {
        match rustix::fs::statvfs(&self.path) {
            Ok(s) => Some(s.f_bavail.saturating_mul(s.f_frsize)),
            Err(e) => {
                tracing::debug!(path = %self.path.display(), "statvfs failed: {e}");
                None
            }
        }
    }

    /// Fails fast, before any bytes arrive, if `len` more bytes would not fit.
    pub fn check_space(&self, len: u64) -> Result<(), StoreError> {
        let used = self.used.load(Ordering::SeqCst);
        if used.saturating_add(len) > self.config.capacity {
            return Err(StoreError::NoSpace {
                used,
                capacity: self.config.capacity,
                needed: len,
            });
        }
        self.check_disk(len)
    }

    /// Refuses `len` more bytes if they would eat into the disk's reserve.
    fn check_disk(&self, len: u64) -> Result<(), StoreError> {
        let Some(available) = self.disk_available() else {
            return Ok(());
        };
        if available < len.saturating_add(self.config.disk_reserve) {
            return Err(self.disk_full(available, len));
        }
        if self.disk_full.swap(false, Ordering::SeqCst) {
            tracing::info!(
                available,
                "disk space is available again: taking new shards"
            );
        }
        Ok(())
    }

    /// Runs `write` (of about `len` bytes) if the disk has room for it beside the writes already
    /// in flight, counting it among them while it runs.
    fn with_disk_room<T>(
        &self,
        len: u64,
        write: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let beside = self.writing.fetch_add(len, Ordering::SeqCst);
        let result = self
            .check_disk(len.saturating_add(beside))
            .and_then(|()| write());
        self.writing.fetch_sub(len, Ordering::SeqCst);
        result
    }

    /// The error for a full disk, logged once until the disk has room again.
    fn disk_full(&self, available: u64, needed: u64) -> StoreError {
        let reserve = self.config.disk_reserve;
        if !self.disk_full.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                path = %self.path.display(),
                available,
                reserve,
                "the disk is full: refusing new shards until space is freed (free disk space, \
                 lower storage.disk_reserve, or set storage.capacity to what the disk can hold)"
            );
        }
        StoreError::DiskFull {
            path: self.path.clone(),
            available,
            reserve,
            needed,
        }
    }

    /// A failed write, with RocksDB's "no space left on device" turned into [`StoreError::DiskFull`]
    /// (the reserve check can lose a race with other users of the disk).
    fn write_failed(&self, e: rocksdb::Error, needed: u64) -> StoreError {
        if e.to_string().contains("No space left on device") {
            self.disk_full(self.disk_available().unwrap_or(0), needed)
        } else {
            StoreError::Db(e)
        }
    }

    /// Verifies `data` against `cid` and stores it with its outboard, atomically.
    pub fn put_shard(&self, cid: &Cid, data: &[u8]) -> Result<PutOutcome, StoreError> {
        let outboard = self.verify_new_shard(cid, data)?;
        self.commit(cid, data, &outboard)
    }

    /// The CPU half of [`Store::put_shard`]: checks `data` against `cid` and computes its
    /// outboard, without touching the database. Run it where CPU work is bounded, and
    /// [`Store::commit_shard`] (disk work, an fsync by default) where I/O is.
    pub fn check_shard(&self, cid: &Cid, data: Bytes) -> Result<CheckedShard, StoreError> {
        let outboard = self.verify_new_shard(cid, &data)?;
        Ok(CheckedShard {
            cid: *cid,
            data,
            outboard,
        })
    }

    /// The disk half of [`Store::put_shard`]: stores a shard [`Store::check_shard`] accepted.
    pub fn commit_shard(&self, shard: CheckedShard) -> Result<PutOutcome, StoreError> {
        self.commit(&shard.cid, &shard.data, &shard.outboard)
    }

    fn verify_new_shard(&self, cid: &Cid, data: &[u8]) -> Result<Vec<u8>, StoreError> {
        let expected = cids::digest(cid, Codec::Raw)?;
        if data.is_empty() || data.len() > MAX_SHARD_SIZE as usize {
            return Err(StoreError::BadSize { len: data.len() });
        }
        let (root, outboard) = verified::outboard(data);
        if root != expected {
            self.metrics.rejected_writes.inc();
            return Err(StoreError::HashMismatch { cid: *cid });
        }
        Ok(outboard)
    }

    /// Waits until no other caller is writing or deleting the shard keyed `key`, then marks it
    /// busy until the returned guard drops.
    fn claim(&self, key: &[u8]) -> Claim<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while busy.contains(key) {
            busy = self.settled.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(key.to_vec());
        Claim {
            store: self,
            key: key.to_vec(),
        }
    }

    fn commit(&self, cid: &Cid, data: &[u8], outboard: &[u8]) -> Result<PutOutcome, StoreError> {
        let key = cid.to_bytes();
        let (outboards, shards, corrupt, meta) = (
            self.cf(CF_OUTBOARDS)?,
            self.cf(CF_SHARDS)?,
            self.cf(CF_CORRUPT)?,
            self.cf(CF_META)?,
        );
        let _claim = self.claim(&key);
        let held = self.db.get_pinned_cf(outboards, &key)?.is_some();
        let was_corrupt = held && self.db.get_pinned_cf(corrupt, &key)?.is_some();
        if held && !was_corrupt {
            return Ok(PutOutcome::AlreadyHeld);
        }
        let len = data.len() as u64;
        if !held {
            // Reserve the space first, so that writes in flight together never exceed capacity.
            let capacity = self.config.capacity;
            self.used
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    (used.saturating_add(len) <= capacity).then_some(used + len)
                })
                .map_err(|used| StoreError::NoSpace {
                    used,
                    capacity,
                    needed: len,
                })?;
        }
        let mut ob_value = Vec::with_capacity(8 + outboard.len());
        ob_value.extend_from_slice(&len.to_le_bytes());
        ob_value.extend_from_slice(outboard);
        let mut batch = WriteBatch::default();
        for (i, piece) in data.chunks(PIECE_BYTES).enumerate() {
            batch.put_cf(shards, piece_key(&key, i), piece);
        }
        batch.put_cf(outboards, &key, &ob_value);
        batch.delete_cf(corrupt, &key);
        if !held {
            batch.merge_cf(meta, KEY_USED, delta(len as i64));
            batch.merge_cf(meta, KEY_COUNT, delta(1));
        }
        // A repair rewrites the whole shard too, so it needs the disk room a new shard does.
        let written = self.with_disk_room(len, || {
            self.db
                .write_opt(batch, &self.write_opts())
                .map_err(|e| self.write_failed(e, len))
        });
        if let Err(e) = written {
            if !held {
                self.used.fetch_sub(len, Ordering::SeqCst);
            }
            return Err(e);
        }
        if !held {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        self.metrics.writes.inc();
        Ok(if was_corrupt {
            PutOutcome::Repaired
        } else {
            PutOutcome::Stored
        })
    }

    /// Removes a shard and gives its space back.
    pub fn delete_shard(&self, cid: &Cid) -> Result<bool, StoreError> {
        let key = cid.to_bytes();
        let (outboards, shards, corrupt, meta) = (
            self.cf(CF_OUTBOARDS)?,
            self.cf(CF_SHARDS)?,
            self.cf(CF_CORRUPT)?,
            self.cf(CF_META)?,
        );
        let _claim = self.claim(&key);
        let Some(ob) = self.db.get_pinned_cf(outboards, &key)? else {
            return Ok(false);
        };
        let len = u64_le(&ob)?;
        if len == 0 || len > u64::from(MAX_SHARD_SIZE) {
            // A damaged size would throw the counters off for good: leave it to the operator.
            return Err(StoreError::Damaged(format!(
                "shard {cid} has an impossible size ({len} bytes) in its outboard entry"
            )));
        }
        let mut batch = WriteBatch::default();
        for i in 0..piece_count(len.min(u64::from(MAX_SHARD_SIZE))) {
            batch.delete_cf(shards, piece_key(&key, i));
        }
        batch.delete_cf(outboards, &key);
        batch.delete_cf(corrupt, &key);
        batch.merge_cf(meta, KEY_USED, delta(-(len as i64)));
        batch.merge_cf(meta, KEY_COUNT, delta(-1));
        self.db
            .write_opt(batch, &self.write_opts())
            .map_err(|e| self.write_failed(e, 0))?;
        let less = |by: u64| move |v: u64| Some(v.saturating_sub(by));
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less(len));
        let _ = self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less(1));
        Ok(true)
    }

    fn is_corrupt(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_CORRUPT)?, key)?.is_some())
    }

    /// A quarantined shard is refused on every read path until it is stored again.
    fn refuse_quarantined(&self, cid: &Cid, key: &[u8]) -> Result<(), StoreError> {
        if self.is_corrupt(key)? {
            return Err(StoreError::Corrupt {
                cid: *cid,
                offset: 0,
            });
        }
        Ok(())
    }

    /// Records a failed verification: never served again until repaired.
    fn mark_corrupt(&self, cid: &Cid, offset: u64) -> StoreError {
        self.metrics.verification_failures.inc();
        let key = cid.to_bytes();
        // Under the claim no write or delete of the shard is under way. A reader (the scrub,
        // say, hashing a large shard) that found bad bytes may have raced a repair or a delete
        // of them: look again before quarantining, or a repaired copy would be refused again.
        let _claim = self.claim(&key);
        if self.intact_or_gone(cid, &key) {
            tracing::warn!(%cid, "a failed read raced a rewrite or delete of the shard: not quarantined");
            return StoreError::Corrupt { cid: *cid, offset };
        }
        tracing::error!(target: "cairn::_events::corrupt", %cid, offset, "stored shard failed BLAKE3 verification; quarantined");
        let res = self.cf(CF_CORRUPT).and_then(|cf| {
            Ok(self.db.put_cf_opt(
                cf,
                cid.to_bytes(),
                now_ms().to_le_bytes(),
                &self.write_opts(),
            )?)
        });
        if let Err(e) = res {
            tracing::error!(%cid, "could not record corrupt shard: {e}");
        }
        StoreError::Corrupt { cid: *cid, offset }
    }

    /// Whether the shard is no longer held, or its stored bytes and outboard now both match its
    /// CID (read afresh, whatever a caller saw).
    fn intact_or_gone(&self, cid: &Cid, key: &[u8]) -> bool {
        let held = self
            .cf(CF_OUTBOARDS)
            .and_then(|cf| Ok(self.db.get_pinned_cf(cf, key)?.is_some()));
        match held {
            Ok(false) => return true,
            Err(_) => return false,
            Ok(true) => {}
        }
        let (Ok(root), Ok((size, stored))) =
            (cids::digest(cid, Codec::Raw), self.outboard(key, cid))
        else {
            return false;
        };
        match self.load_pieces(key, size, 0..piece_count(size)) {
            Ok(Ok(pieces)) => {
                let (actual, outboard) = verified::outboard(&join(&pieces));
                actual == root && outboard == stored
            }
            _ => false,
        }
    }

    /// Pieces `pieces` of a held shard of `size` bytes, not yet verified. `Ok(Err(offset))`:
    /// a piece is missing, of the wrong length or reported corrupt by RocksDB (`offset` is
    /// where it starts); the caller decides what that means.
    fn load_pieces(
        &self,
        key: &[u8],
        size: u64,
        pieces: Range<usize>,
    ) -> Result<Result<Vec<rocksdb::DBPinnableSlice<'_>>, u64>, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(self.config.rocksdb_checksums);
        let keys: Vec<Vec<u8>> = pieces.clone().map(|i| piece_key(key, i)).collect();
        let got = self
            .db
            .batched_multi_get_cf_opt(self.cf(CF_SHARDS)?, &keys, true, &ro);
        let mut out = Vec::with_capacity(keys.len());
        for (i, piece) in pieces.zip(got) {
            let want = piece_bytes(size, i);
            match piece {
                Ok(Some(p)) if p.len() as u64 == want.end - want.start => out.push(p),
                Ok(_) => return Ok(Err(want.start)),
                Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => return Ok(Err(want.start)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Ok(out))
    }

    /// [`Store::load_pieces`] for a read: a missing or damaged piece quarantines the shard,
    /// unless the shard was deleted since the reader found it (then it is simply not found).
    fn read_pieces(
        &self,
        cid: &Cid,
        key: &[u8],
        size: u64,
        pieces: Range<usize>,
    ) -> Result<Vec<rocksdb::DBPinnableSlice<'_>>, StoreError> {
        match self.load_pieces(key, size, pieces)? {
            Ok(loaded) => Ok(loaded),
            Err(_)
                if self
                    .db
                    .get_pinned_cf(self.cf(CF_OUTBOARDS)?, key)?
                    .is_none() =>
            {
                Err(StoreError::NotFound { cid: *cid })
            }
            Err(offset) => Err(self.mark_corrupt(cid, offset)),
        }
    }

    /// Every stored piece of a shard, in order, found by key rather than by the size in its
    /// outboard row (for when that row is damaged): the bytes, or `None` if a piece is missing
    /// or unreadable.
    fn scan_pieces(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(self.config.rocksdb_checksums);
        let first = piece_key(key, 0);
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_SHARDS)?,
            ro,
            IteratorMode::From(&first, Direction::Forward),
        );
        let mut data = Vec::new();
        for (n, item) in iter.enumerate() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if k.len() != key.len() + 2 || !k.starts_with(key) {
                break;
            }
            #[allow(clippy::big_endian_bytes)] // see piece_key
            let i = u16::from_be_bytes([k[key.len()], k[key.len() + 1]]) as usize;
            if i != n
                || data.len() != n * PIECE_BYTES
                || data.len() + v.len() > MAX_SHARD_SIZE as usize
            {
                return Ok(None);
            }
            data.extend_from_slice(&v);
        }
        Ok(Some(data))
    }

    /// Size and outboard of a held shard.
    fn outboard(&self, key: &[u8], cid: &Cid) -> Result<(u64, Vec<u8>), StoreError> {
        let ob = self
            .db
            .get_pinned_cf(self.cf(CF_OUTBOARDS)?, key)?
            .ok_or(StoreError::NotFound { cid: *cid })?;
        Ok((u64_le(&ob)?, ob[8..].to_vec()))
    }

    /// A verified-streaming proof stream for `range` of a shard (whole shard if `None`): the
    /// bytes are checked against the CID while the proof is built, so a corrupt copy is refused
    /// (and quarantined) instead of served. Only the pieces the proof needs are read. Returns
    /// the shard size and the proof stream.
    pub fn read_range(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let key = cid.to_bytes();
        self.refuse_quarantined(cid, &key)?;
        let (size, outboard) = self.outboard(&key, cid)?;
        let range = range.unwrap_or(0..size);
        // A bad range is the asker's mistake: refuse it before touching the pieces.
        if range.start >= range.end || range.end > size {
            return Err(StoreError::Range(ProofError::BadRange {
                start: range.start,
                end: range.end,
                size,
            }));
        }
        let need = verified::needed_bytes(size, range.clone());
        let pieces = (need.start / PIECE_BYTES as u64) as usize
            ..(need.end.div_ceil(PIECE_BYTES as u64) as usize).min(piece_count(size));
        let offset = piece_bytes(size, pieces.start).start;
        let loaded = self.read_pieces(cid, &key, size, pieces)?;
        let mut proof = Vec::new();
        match verified::encode_range_window(
            &root, size, offset, &loaded, &outboard, range, &mut proof,
        ) {
            Ok(()) => {
                self.metrics.reads.inc();
                Ok((size, proof))
            }
            Err(ProofError::CorruptSource { offset })
            | Err(ProofError::OutboardSize {
                expected: offset, ..
            }) => Err(self.mark_corrupt(cid, offset)),
            Err(e) => Err(StoreError::Range(e)),
        }
    }

    /// Opens a whole shard for sending: its stored outboard, checked against the CID. The
    /// bytes are read a piece at a time and hashed as they are taken from the
    /// [`OutgoingShard`], so a sender can start after the first piece, and a corrupt byte is
    /// still never handed out (it is quarantined when reached).
    ///
    /// A damaged outboard alone does not lose the shard: the outboard is recomputed from the
    /// bytes, and used if they match the CID.
    pub fn open_outgoing(&self, cid: &Cid) -> Result<OutgoingShard, StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let key = cid.to_bytes();
        self.refuse_quarantined(cid, &key)?;
        // The outboard row is how a held shard is found; a damaged one is rebuilt below.
        let stored = match self.outboard(&key, cid) {
            Ok(found) => Some(found),
            Err(e @ StoreError::NotFound { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(%cid, "stored outboard unreadable: {e}");
                None
            }
        };
        let checked = stored.and_then(|(size, ob)| {
            let verifier = OutboardVerifier::new(root, size, &ob).ok()?;
            Some((size, verifier, ob))
        });
        if let Some((size, verifier, outboard)) = checked {
            return Ok(OutgoingShard {
                cid: *cid,
                key,
                size,
                outboard: bytes::Bytes::from(outboard),
                verifier,
                pending: bytes::Bytes::new(),
                next: 0,
            });
        }
        // The CID decides: if the stored bytes hash to it, only the outboard was damaged.
        let data = self.scan_pieces(&key)?.unwrap_or_default();
        let (actual, rebuilt) = verified::outboard(&data);
        if data.is_empty() || actual != root {
            return Err(self.mark_corrupt(cid, 0));
        }
        tracing::warn!(%cid, "stored outboard is damaged; serving a recomputed one");
        let size = data.len() as u64;
        let verifier = OutboardVerifier::new(root, size, &rebuilt).map_err(StoreError::Range)?;
        Ok(OutgoingShard {
            cid: *cid,
            key,
            size,
            outboard: bytes::Bytes::from(rebuilt),
            verifier,
            pending: bytes::Bytes::from(data),
            next: piece_count(size),
        })
    }

    /// The whole shard, verified against its CID.
    pub fn read_shard(&self, cid: &Cid) -> Result<Vec<u8>, StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let key = cid.to_bytes();
        self.refuse_quarantined(cid, &key)?;
        let (size, _) = self.outboard(&key, cid)?;
        let data = join(&self.read_pieces(cid, &key, size, 0..piece_count(size))?);
        if blake3::hash(&data) != root {
            return Err(self.mark_corrupt(cid, 0));
        }
        self.metrics.reads.inc();
        Ok(data)
    }

    /// For each CID: held intact (and its length), held but quarantined, or absent.
    ///
    /// Shard CIDs (raw codec) are looked up among shards; manifest CIDs (DAG-CBOR) among
    /// manifests, whose bytes are re-hashed, so a damaged manifest answers `Corrupt`.
    pub fn has(&self, cids: &[Cid]) -> Result<Vec<Holding>, StoreError> {
        let (outboards, corrupt) = (self.cf(CF_OUTBOARDS)?, self.cf(CF_CORRUPT)?);
        let keys: Vec<Vec<u8>> = cids.iter().map(Cid::to_bytes).collect();
        let obs = self.db.batched_multi_get_cf(outboards, &keys, false);
        let bad = self.db.batched_multi_get_cf(corrupt, &keys, false);
        let mut out: Vec<Holding> = obs
            .into_iter()
            .zip(bad)
            .map(|(ob, bad)| match (ob?, bad?) {
                (Some(ob), None) => Ok(Holding::Intact(u64_le(&ob)?)),
                (Some(_), Some(_)) => Ok(Holding::Corrupt),
                (None, _) => Ok(Holding::Absent),
            })
            .collect::<Result<_, StoreError>>()?;
        // Each manifest is re-hashed once per call, however often it is asked for.
        let mut seen: HashMap<&Cid, Holding> = HashMap::new();
        for (i, cid) in cids.iter().enumerate() {
            if cid.codec() != cids::CODEC_DAG_CBOR {
                continue;
            }
            if let Some(known) = seen.get(cid) {
                out[i] = *known;
                continue;
            }
            if let Some(bytes) = self.db.get_pinned_cf(self.cf(CF_MANIFESTS)?, &keys[i])? {
                out[i] = if cids::dag_cbor(&bytes) == *cid {
                    Holding::Intact(bytes.len() as u64)
                } else {
                    Holding::Corrupt
                };
                seen.insert(cid, out[i]);
            }
        }
        Ok(out)
    }

    /// Held shards in CID byte order, after `after`: `(cid, length, corrupt)`.
    pub fn list(&self, after: Option<&Cid>, limit: usize) -> Result<ListPage, StoreError> {
        let start = after.map(Cid::to_bytes);
        let mode = match &start {
            Some(k) => IteratorMode::From(k, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_OUTBOARDS)?, mode) {
            let (key, value) = item?;
            if start.as_deref() == Some(&key[..]) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            // A damaged row is skipped (and logged), so it cannot stop listings or the scrub.
            let row = cids::from_bytes(&key)
                .map_err(|e| StoreError::Damaged(format!("bad key in outboards: {e}")))
                .and_then(|cid| Ok((cid, u64_le(&value)?)));
            let (cid, size) = match row {
                Ok(row) => row,
                Err(e) => {
                    tracing::error!(key = ?&key[..], "skipping a damaged shard row: {e}");
                    continue;
                }
            };
            let corrupt = self.is_corrupt(&key)?;
            out.push((cid, size, corrupt));
        }
        Ok((out, false))
    }

    /// Verifies shards from `cursor` on, until about `max_bytes` were read.
    pub fn scrub_step(
        &self,
        cursor: Option<&Cid>,
        max_bytes: u64,
    ) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let (batch, more) = self.list(cursor, 64)?;
        let mut last = None;
        for (cid, size, corrupt) in batch {
            last = Some(cid);
            if corrupt {
                continue;
            }
            let key = cid.to_bytes();
            let verdict = (|| {
                let root = cids::digest(&cid, Codec::Raw)?;
                Ok::<_, StoreError>(match self.load_pieces(&key, size, 0..piece_count(size))? {
                    Ok(pieces) => {
                        report.bytes += size;
                        let (actual, outboard) = verified::outboard(&join(&pieces));
                        actual == root && self.outboard(&key, &cid)?.1 == outboard
                    }
                    Err(_) => false,
                })
            })();
            report.checked += 1;
            match verdict {
                Ok(true) => {}
                Ok(false) => {
                    let _ = self.mark_corrupt(&cid, 0);
                    report.corrupt.push(cid);
                }
                Err(e) => {
                    // Not proof of corruption (an I/O error may pass), so not quarantined; the
                    // next pass tries again.
                    tracing::error!(%cid, "scrub could not check a shard: {e}");
                    report.unreadable.push((cid, e.to_string()));
                }
            }
            if report.bytes >= max_bytes {
                break;
            }
        }
        self.metrics.scrubbed_bytes.inc_by(report.bytes);
        let finished_batch = last.is_none() || (!more && report.bytes < max_bytes);
        report.next = if finished_batch { None } else { last };
        Ok(report)
    }

    /// Checks and stores a manifest (object or dataset) and any provenance envelopes for it.
    pub fn put_manifest(
        &self,
        cid: &Cid,
        kind: ManifestKind,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        match kind {
            ManifestKind::Object => {
                ObjectManifest::from_bytes_for(cid, bytes)?;
            }
            ManifestKind::Dataset => {
                DatasetManifest::from_bytes_for(cid, bytes)?;
            }
        }
        let mut parsed = Vec::with_capacity(envelopes.len());
        for env in envelopes {
            let p = Provenance::from_bytes(env)?;
            p.verify_for(cid)?;
            parsed.push((p, env));
        }
        let key = cid.to_bytes();
        // Anyone can sign any manifest, so envelopes are kept one per signer (the first), and
        // only as many as readers accept: more would make the manifest unreadable here. Writers
        // of one manifest take turns so that the count cannot be overrun.
        let _claim = self.claim(&key);
        let kept = self.envelopes(&key)?;
        let mut signers: HashSet<Vec<u8>> = kept
            .iter()
            .filter_map(|e| Provenance::from_bytes(e).ok())
            .map(|p| p.signer)
            .collect();
        parsed.retain(|(p, _)| signers.insert(p.signer.clone()));
        if kept.len() + parsed.len() > MAX_ENVELOPES {
            return Err(StoreError::TooManyEnvelopes {
                cid: *cid,
                max: MAX_ENVELOPES,
            });
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_MANIFESTS)?, &key, bytes);
        let mut len = bytes.len() as u64;
        for (p, env) in parsed {
            len += env.len() as u64;
            let mut k = key.clone();
            k.extend_from_slice(&p.cid().to_bytes());
            batch.put_cf(self.cf(CF_PROVENANCE)?, k, env);
            let mut by_signer = p.signer.clone();
            // Big-endian so keys sort by time (newest last) within a signer.
            #[allow(clippy::big_endian_bytes)]
            by_signer.extend_from_slice(&p.time_ms.to_be_bytes());
            by_signer.extend_from_slice(&key);
            let kind_byte = match kind {
                ManifestKind::Object => 0u8,
                ManifestKind::Dataset => 1,
            };
            batch.put_cf(self.cf(CF_SIGNED)?, by_signer, [kind_byte]);
        }
        self.with_disk_room(len, || {
            self.db
                .write_opt(batch, &self.write_opts())
                .map_err(|e| self.write_failed(e, len))
        })
    }

    /// The provenance envelopes stored for the manifest keyed `key`, at most
    /// [`MAX_ENVELOPES`].
    fn envelopes(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut envelopes = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_PROVENANCE)?, key) {
            let (k, v) = item?;
            if !k.starts_with(key) || envelopes.len() == MAX_ENVELOPES {
                break;
            }
            envelopes.push(v.to_vec());
        }
        Ok(envelopes)
    }

    /// Manifests signed by `signer` (an ed25519 public key), newest first (by the signer's
    /// clock), at most `limit`: `(manifest CID, time_ms, kind)`.
    pub fn signed_by(
        &self,
        signer: &[u8],
        limit: usize,
    ) -> Result<Vec<(Cid, u64, ManifestKind)>, StoreError> {
        let mut upper = signer.to_vec();
        upper.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_SIGNED)?,
            IteratorMode::From(&upper, Direction::Reverse),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(signer) || out.len() >= limit {
                break;
            }
            let rest = &k[signer.len()..];
            if rest.len() < 8 {
                continue;
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&rest[..8]);
            let Ok(cid) = Cid::try_from(&rest[8..]) else {
                continue;
            };
            let kind = if v.first() == Some(&1) {
                ManifestKind::Dataset
            } else {
                ManifestKind::Object
            };
            #[allow(clippy::big_endian_bytes)] // the key's sortable time, see put_manifest
            let time = u64::from_be_bytes(t);
            out.push((cid, time, kind));
        }
        Ok(out)
    }

    /// A stored manifest and its provenance envelopes, re-verified.
    pub fn get_manifest(&self, cid: &Cid) -> Result<(Vec<u8>, Vec<Vec<u8>>), StoreError> {
        let key = cid.to_bytes();
        let bytes = self
            .db
            .get_cf(self.cf(CF_MANIFESTS)?, &key)?
            .ok_or(StoreError::NotFound { cid: *cid })?;
        if cids::dag_cbor(&bytes) != *cid {
            self.metrics.verification_failures.inc();
            tracing::error!(%cid, "stored manifest failed verification");
            return Err(StoreError::Corrupt {
                cid: *cid,
                offset: 0,
            });
        }
        Ok((bytes, self.envelopes(&key)?))
    }

    /// Flushes memtables and the WAL to disk (called on clean shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        for cf in [
            CF_SHARDS,
            CF_OUTBOARDS,
            CF_CORRUPT,
            CF_MANIFESTS,
            CF_PROVENANCE,
            CF_META,
        ] {
            self.db.flush_cf(self.cf(cf)?)?;
        }
        Ok(())
    }
}

/// A whole shard being sent: see [`Store::open_outgoing`]. Its bytes come out only through
/// [`OutgoingShard::next_piece`], each piece read from the store and verified against the CID
/// first.
#[derive(Debug)]
pub struct OutgoingShard {
    cid: Cid,
    key: Vec<u8>,
    size: u64,
    outboard: bytes::Bytes,
    verifier: OutboardVerifier,
    /// Read from the store, not yet verified nor handed out: the bytes from
    /// `verifier.verified()` on.
    pending: bytes::Bytes,
    /// The next stored piece to read.
    next: usize,
}

impl OutgoingShard {
    /// The shard's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The outboard, already checked against the CID.
    pub fn outboard(&self) -> &bytes::Bytes {
        &self.outboard
    }

    /// The next verified piece: whole 16 KiB groups, at most `max` bytes (at least one group)
    /// and never past the end of a stored piece, or `None` once everything was handed out. A
    /// piece that fails verification, or is missing from the store, quarantines the shard and
    /// returns [`StoreError::Corrupt`]; nothing after the last good piece is handed out.
    pub fn next_piece(
        &mut self,
        store: &Store,
        max: usize,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        if self.verifier.is_done() {
            return Ok(None);
        }
        if self.pending.is_empty() {
            let i = self.next;
            let piece = store.read_pieces(&self.cid, &self.key, self.size, i..i + 1)?;
            self.pending = bytes::Bytes::copy_from_slice(&piece[0]);
            self.next += 1;
        }
        let from = self.verifier.verified();
        let step = max.max(verified::GROUP_BYTES) / verified::GROUP_BYTES * verified::GROUP_BYTES;
        let take = step.min(self.pending.len());
        match self.verifier.check_tail(from, &self.pending[..take]) {
            Ok(ok) if ok > from => {
                if self.verifier.is_done() {
                    store.metrics.reads.inc();
                }
                Ok(Some(self.pending.split_to((ok - from) as usize)))
            }
            // Pieces are whole groups but for the shard's last, so this cannot happen; it must
            // not become a loop that hands out nothing forever.
            Ok(_) => Err(StoreError::Damaged(format!(
                "{}: piece {} did not advance verification",
                self.cid, self.next
            ))),
            Err(ProofError::BadData { start, .. }) => Err(store.mark_corrupt(&self.cid, start)),
            Err(e) => Err(StoreError::Range(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_chunker::manifest::Provenance;

    use super::*;

    fn open(dir: &Path, capacity: u64) -> Store {
        Store::open(
            dir,
            StoreConfig {
                capacity,
                sync_writes: false,
                rocksdb_checksums: false,
                disk_reserve: 0,
            },
            StoreMetrics::default(),
        )
        .unwrap()
    }

    /// Writes a `meta` value behind the store's back, as an older build would have.
    fn set_meta(store: &Store, key: &[u8], value: u64) {
        let meta = store.cf(CF_META).unwrap();
        store.db.put_cf(meta, key, value.to_le_bytes()).unwrap();
    }

    fn meta_value(store: &Store, key: &[u8]) -> u64 {
        let meta = store.cf(CF_META).unwrap();
        u64_le(&store.db.get_cf(meta, key).unwrap().unwrap()).unwrap()
    }

    fn shard(len: usize, seed: u8) -> (Cid, Vec<u8>) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect();
        (cids::raw(&data), data)
    }

    /// Replaces the stored bytes of `cid` behind the store's back, as bitrot would.
    fn overwrite_stored(store: &Store, cid: &Cid, bytes: &[u8]) {
        let shards = store.cf(CF_SHARDS).unwrap();
        for (i, piece) in bytes.chunks(PIECE_BYTES).enumerate() {
            store
                .db
                .put_cf(shards, piece_key(&cid.to_bytes(), i), piece)
                .unwrap();
        }
    }

    /// Takes every piece of an outgoing shard: the bytes handed out, and how it ended.
    fn drain(store: &Store, cid: &Cid) -> (Vec<u8>, Result<(), StoreError>) {
        let mut shard = match store.open_outgoing(cid) {
            Ok(s) => s,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut out = Vec::new();
        loop {
            // Not a multiple of a group: pieces round down to whole groups.
            match shard.next_piece(store, 100_000) {
                Ok(Some(p)) => {
                    assert!(p.len() <= 100_000);
                    out.extend_from_slice(&p);
                }
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn outgoing_shards_hand_out_verified_pieces_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        for len in [1usize, 16 * 1024, 16 * 1024 + 1, 1 << 20] {
            let (cid, data) = shard(len, 5);
            store.put_shard(&cid, &data).unwrap();
            let (got, end) = drain(&store, &cid);
            end.unwrap();
            assert_eq!(got, data, "{len} bytes");
            let outgoing = store.open_outgoing(&cid).unwrap();
            assert_eq!(outgoing.size(), len as u64);
            assert_eq!(outgoing.outboard().as_ref(), verified::outboard(&data).1);
        }
        assert_eq!(store.metrics.reads.get(), 4);

        // A byte flipped inside the stored shard: the groups before it come out, nothing after.
        let (cid, data) = shard(1 << 20, 7);
        store.put_shard(&cid, &data).unwrap();
        let mut bad = data.clone();
        bad[300_000] ^= 1;
        overwrite_stored(&store, &cid, &bad);
        let (got, end) = drain(&store, &cid);
        let group = 300_000 / verified::GROUP_BYTES * verified::GROUP_BYTES;
        assert!(
            matches!(end, Err(StoreError::Corrupt { offset, .. }) if offset == group as u64),
            "{end:?}"
        );
        assert!(
            !got.is_empty() && got.len() <= group,
            "{} bytes out",
            got.len()
        );
        assert_eq!(got, data[..got.len()]);
        assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
        assert_eq!(store.metrics.verification_failures.get(), 1);
        assert!(matches!(
            store.open_outgoing(&cid),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_damaged_outboard_is_rebuilt_from_intact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard(1 << 20, 9);
        store.put_shard(&cid, &data).unwrap();
        let outboards = store.cf(CF_OUTBOARDS).unwrap();
        let len = verified::outboard_size(1 << 20) as usize;
        // Right size, wrong hashes; a wrong size; a row too short to hold a size.
        let mut wrong_hashes = (1u64 << 20).to_le_bytes().to_vec();
        wrong_hashes.resize(8 + len, 0xee);
        let mut wrong_size = (1u64 << 19).to_le_bytes().to_vec();
        wrong_size.resize(8 + len, 0);
        for damaged in [wrong_hashes, wrong_size, vec![1, 2, 3]] {
            store
                .db
                .put_cf(outboards, cid.to_bytes(), &damaged)
                .unwrap();
            let (got, end) = drain(&store, &cid);
            end.unwrap();
            assert_eq!(got, data);
            let outgoing = store.open_outgoing(&cid).unwrap();
            assert_eq!(outgoing.outboard().as_ref(), verified::outboard(&data).1);
        }
        assert_eq!(store.metrics.verification_failures.get(), 0);
        // Damaged bytes as well: nothing to rebuild from, so the shard is quarantined.
        let mut bad = data.clone();
        bad[5] ^= 1;
        overwrite_stored(&store, &cid, &bad);
        let (got, end) = drain(&store, &cid);
        assert!(got.is_empty());
        assert!(matches!(end, Err(StoreError::Corrupt { .. })), "{end:?}");
        assert_eq!(store.metrics.verification_failures.get(), 1);
    }

    #[test]
    fn put_read_range_and_accounting() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard(1 << 20, 3);
        assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Stored);
        assert_eq!(
            store.put_shard(&cid, &data).unwrap(),
            PutOutcome::AlreadyHeld
        );
        assert_eq!(store.stats().used, 1 << 20);
        assert_eq!(store.stats().shards, 1);
        assert_eq!(store.read_shard(&cid).unwrap(), data);
        let (size, proof) = store.read_range(&cid, Some(1000..70_000)).unwrap();
        assert_eq!(size, 1 << 20);
        let got = verified::verify_range(
            &cids::digest(&cid, Codec::Raw).unwrap(),
            size,
            1000..70_000,
            &proof,
        )
        .unwrap();
        assert_eq!(got, &data[1000..70_000]);
        assert_eq!(
            store.has(&[cid, cids::raw(b"nope")]).unwrap(),
            vec![Holding::Intact(1 << 20), Holding::Absent]
        );
        drop(store);
        // Reopen: counts come back from the meta CF.
        let store = open(dir.path(), 10 << 20);
        assert_eq!(store.stats().used, 1 << 20);
        assert!(store.delete_shard(&cid).unwrap());
        assert_eq!(store.stats().used, 0);
        assert!(matches!(
            store.read_shard(&cid),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn a_range_read_loads_only_the_pieces_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard((1 << 20) + 5000, 11);
        store.put_shard(&cid, &data).unwrap();
        assert_eq!(piece_count(data.len() as u64), 9);
        // Lose piece 5 (bytes 640 KiB..768 KiB): reads elsewhere never notice...
        let shards = store.cf(CF_SHARDS).unwrap();
        store
            .db
            .delete_cf(shards, piece_key(&cid.to_bytes(), 5))
            .unwrap();
        let root = cids::digest(&cid, Codec::Raw).unwrap();
        let size = data.len() as u64;
        let p = PIECE_BYTES as u64;
        for range in [
            0..100,
            p - 10..p + 10,
            4 * p..5 * p,
            6 * p + 1..size,
            size - 1..size,
        ] {
            let (got_size, proof) = store.read_range(&cid, Some(range.clone())).unwrap();
            assert_eq!(got_size, size);
            let got = verified::verify_range(&root, size, range.clone(), &proof).unwrap();
            assert_eq!(
                got,
                &data[range.start as usize..range.end as usize],
                "{range:?}"
            );
        }
        assert_eq!(store.metrics.verification_failures.get(), 0);
        // ...a read that needs it finds it gone, and quarantines the shard.
        let err = store
            .read_range(&cid, Some(5 * p - 1..5 * p + 1))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { offset, .. } if offset == 5 * p),
            "{err}"
        );
        assert_eq!(store.metrics.verification_failures.get(), 1);
        assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
        // A bad range is refused as such, and does not quarantine anything.
        let (cid2, data2) = shard(40_000, 13);
        store.put_shard(&cid2, &data2).unwrap();
        #[allow(clippy::reversed_empty_ranges)] // bad on purpose
        let bad_ranges = [0..0, 10..5, 0..40_001, 40_000..40_001];
        for bad in bad_ranges {
            assert!(
                matches!(
                    store.read_range(&cid2, Some(bad.clone())),
                    Err(StoreError::Range(ProofError::BadRange { .. }))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(store.has(&[cid2]).unwrap(), vec![Holding::Intact(40_000)]);
    }

    #[test]
    fn a_piece_lost_mid_shard_cuts_the_outgoing_shard_off_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard(1 << 20, 17);
        store.put_shard(&cid, &data).unwrap();
        let shards = store.cf(CF_SHARDS).unwrap();
        store
            .db
            .delete_cf(shards, piece_key(&cid.to_bytes(), 3))
            .unwrap();
        let (got, end) = drain(&store, &cid);
        assert!(
            matches!(end, Err(StoreError::Corrupt { offset, .. }) if offset == 3 * PIECE_BYTES as u64),
            "{end:?}"
        );
        assert_eq!(got, data[..3 * PIECE_BYTES]);
        assert!(matches!(
            store.read_shard(&cid),
            Err(StoreError::Corrupt { .. })
        ));
        // Stored again, it is whole again.
        assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
        assert_eq!(store.read_shard(&cid).unwrap(), data);
    }

    #[test]
    fn a_shard_deleted_while_being_sent_is_not_found_not_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard(1 << 20, 19);
        store.put_shard(&cid, &data).unwrap();
        let mut outgoing = store.open_outgoing(&cid).unwrap();
        let first = outgoing.next_piece(&store, PIECE_BYTES).unwrap().unwrap();
        assert_eq!(first, data[..PIECE_BYTES]);
        assert!(store.delete_shard(&cid).unwrap());
        assert!(matches!(
            outgoing.next_piece(&store, PIECE_BYTES),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.metrics.verification_failures.get(), 0);
        assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Absent]);
    }

    #[test]
    fn a_format_1_store_is_converted_to_pieces_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = Vec::new();
        {
            let store = open(dir.path(), 10 << 20);
            for (len, seed) in [
                (1usize, 1u8),
                (PIECE_BYTES, 2),
                (PIECE_BYTES + 1, 3),
                (1 << 20, 4),
            ] {
                let (cid, data) = shard(len, seed);
                store.put_shard(&cid, &data).unwrap();
                held.push((cid, data));
            }
            // Rewrite it as format 1 kept it: one value per shard, format 1 in meta. The first
            // shard is left converted, as a conversion interrupted by a crash leaves it.
            let shards = store.cf(CF_SHARDS).unwrap();
            for (cid, data) in &held[1..] {
                let key = cid.to_bytes();
                for i in 0..piece_count(data.len() as u64) {
                    store.db.delete_cf(shards, piece_key(&key, i)).unwrap();
                }
                store.db.put_cf(shards, &key, data).unwrap();
            }
            set_meta(&store, KEY_FORMAT, 1);
        }
        let store = open(dir.path(), 10 << 20);
        assert_eq!(meta_value(&store, KEY_FORMAT), FORMAT);
        let shards = store.cf(CF_SHARDS).unwrap();
        for (cid, data) in &held {
            assert!(store.db.get_cf(shards, cid.to_bytes()).unwrap().is_none());
            assert_eq!(&store.read_shard(cid).unwrap(), data);
            assert_eq!(&drain(&store, cid).0, data);
        }
        assert_eq!(store.stats().shards, 4);
        assert_eq!(store.scrub_step(None, u64::MAX).unwrap().corrupt, vec![]);
        // Opening again leaves it alone.
        drop(store);
        let store = open(dir.path(), 10 << 20);
        assert_eq!(&store.read_shard(&held[3].0).unwrap(), &held[3].1);
    }

    #[test]
    fn refuses_mismatched_oversized_and_overfull() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 100_000);
        let (cid, mut data) = shard(60_000, 5);
        data[10] ^= 1;
        assert!(matches!(
            store.put_shard(&cid, &data),
            Err(StoreError::HashMismatch { .. })
        ));
        data[10] ^= 1;
        store.put_shard(&cid, &data).unwrap();
        let (cid2, data2) = shard(60_000, 7);
        match store.put_shard(&cid2, &data2) {
            Err(StoreError::NoSpace {
                used,
                capacity,
                needed,
            }) => assert_eq!((used, capacity, needed), (60_000, 100_000, 60_000)),
            other => panic!("expected NoSpace, got {other:?}"),
        }
        assert!(matches!(
            store.put_shard(&cids::raw(b""), b""),
            Err(StoreError::BadSize { len: 0 })
        ));
        assert!(matches!(
            store.put_shard(&cids::dag_cbor(b"x"), b"x"),
            Err(StoreError::Cid(_))
        ));
    }

    #[test]
    fn a_full_disk_refuses_new_shards_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 1 << 30);
        let (held, held_data) = shard(50_000, 3);
        store.put_shard(&held, &held_data).unwrap();
        let available = store.stats().disk_available.expect("statvfs works here");
        assert!(available > 0);
        assert_eq!(store.stats().free(), (1 << 30) - 50_000);

        // The disk has less room than the reserve asks for, as when a disk fills up.
        store.config.disk_reserve = available + (1 << 40);
        let (cid, data) = shard(60_000, 9);
        let err = store.put_shard(&cid, &data).unwrap_err();
        match &err {
            StoreError::DiskFull {
                reserve, needed, ..
            } => assert_eq!((*reserve, *needed), (available + (1 << 40), 60_000)),
            other => panic!("expected DiskFull, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("the disk holding") && message.contains("storage.disk_reserve"),
            "{message}"
        );
        assert!(matches!(
            store.check_space(1),
            Err(StoreError::DiskFull { .. })
        ));
        assert!(store.disk_full.load(Ordering::SeqCst));
        assert_eq!(
            store.stats().free(),
            0,
            "a full disk has no room, whatever the capacity"
        );
        assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Absent]);
        // What is held is still served, and storing it again costs nothing, so is not refused.
        assert_eq!(store.read_shard(&held).unwrap(), held_data);
        assert_eq!(
            store.put_shard(&held, &held_data).unwrap(),
            PutOutcome::AlreadyHeld
        );

        // A repair rewrites the whole shard, and a manifest is written too: both need room.
        overwrite_stored(&store, &held, &vec![0u8; held_data.len()]);
        assert!(matches!(
            store.read_shard(&held),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.put_shard(&held, &held_data),
            Err(StoreError::DiskFull { .. })
        ));
        let d = cairn_chunker::DatasetManifest::new();
        assert!(matches!(
            store.put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[]),
            Err(StoreError::DiskFull { .. })
        ));
        assert!(matches!(
            store.get_manifest(&d.cid()),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.writing.load(Ordering::SeqCst), 0);

        // Room again: shards are taken and repaired, manifests kept.
        store.config.disk_reserve = 0;
        assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Stored);
        assert!(!store.disk_full.load(Ordering::SeqCst));
        assert_eq!(store.read_shard(&cid).unwrap(), data);
        assert_eq!(
            store.put_shard(&held, &held_data).unwrap(),
            PutOutcome::Repaired
        );
        assert_eq!(store.read_shard(&held).unwrap(), held_data);
        store
            .put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[])
            .unwrap();
    }

    #[test]
    fn second_open_is_a_clear_lock_error() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(dir.path(), 1 << 20);
        let err =
            Store::open(dir.path(), StoreConfig::default(), StoreMetrics::default()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn list_pages_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let mut all: Vec<Cid> = (1..=25u8)
            .map(|i| {
                let (cid, data) = shard(5000 + i as usize, i);
                store.put_shard(&cid, &data).unwrap();
                cid
            })
            .collect();
        all.sort_by_key(|c| c.to_bytes());
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = store.list(after.as_ref(), 10).unwrap();
            seen.extend(page.iter().map(|(c, _, _)| *c));
            after = page.last().map(|(c, _, _)| *c);
            if !more {
                break;
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn manifests_and_provenance_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let d = cairn_chunker::DatasetManifest::new();
        let bytes = d.to_bytes();
        let cid = d.cid();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let env = Provenance::sign(cid, &key, 5, None).to_bytes();
        store
            .put_manifest(
                &cid,
                ManifestKind::Dataset,
                &bytes,
                std::slice::from_ref(&env),
            )
            .unwrap();
        let (got, envs) = store.get_manifest(&cid).unwrap();
        assert_eq!(got, bytes);
        assert_eq!(envs, vec![env.clone()]);
        // `has` answers for manifests too (and not for a manifest that was never stored).
        assert_eq!(
            store.has(&[cid, cids::dag_cbor(b"never")]).unwrap(),
            vec![Holding::Intact(bytes.len() as u64), Holding::Absent]
        );
        // Wrong CID, wrong kind, tampered envelope: refused.
        assert!(
            store
                .put_manifest(&cids::dag_cbor(b"x"), ManifestKind::Dataset, &bytes, &[])
                .is_err()
        );
        assert!(
            store
                .put_manifest(&cid, ManifestKind::Object, &bytes, &[])
                .is_err()
        );
        let mut bad = env;
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(
            store
                .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[bad])
                .is_err()
        );
    }

    #[test]
    fn envelopes_are_kept_one_per_signer_and_no_more_than_readers_take() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let d = cairn_chunker::DatasetManifest::new();
        let (cid, bytes) = (d.cid(), d.to_bytes());
        let signer = |i: u32| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            ed25519_dalek::SigningKey::from_bytes(&seed)
        };
        let author = Provenance::sign(cid, &signer(0), 1, None).to_bytes();
        store
            .put_manifest(
                &cid,
                ManifestKind::Dataset,
                &bytes,
                std::slice::from_ref(&author),
            )
            .unwrap();
        // The same signer again (a later time, so another envelope): the first one stays.
        let again = Provenance::sign(cid, &signer(0), 2, None).to_bytes();
        store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[again])
            .unwrap();
        assert_eq!(store.get_manifest(&cid).unwrap().1, vec![author.clone()]);
        // Strangers sign it too, up to what readers accept; one more is refused, clearly.
        let strangers: Vec<Vec<u8>> = (1..MAX_ENVELOPES as u32)
            .map(|i| Provenance::sign(cid, &signer(i), 3, None).to_bytes())
            .collect();
        store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &strangers)
            .unwrap();
        let one_more = Provenance::sign(cid, &signer(9999), 3, None).to_bytes();
        let err = store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[one_more])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::TooManyEnvelopes { max, .. } if max == MAX_ENVELOPES),
            "{err:?}"
        );
        assert!(err.to_string().contains("provenance envelopes"), "{err}");
        // Still readable, with the author's envelope among those served.
        let (got, envs) = store.get_manifest(&cid).unwrap();
        assert_eq!(got, bytes);
        assert_eq!(envs.len(), MAX_ENVELOPES);
        assert!(envs.contains(&author));
        // Re-publishing with an envelope already kept is not refused.
        store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[author])
            .unwrap();
    }

    #[test]
    fn a_copy_repaired_while_a_reader_held_its_bad_bytes_is_not_quarantined_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let (cid, data) = shard(300_000, 4);
        store.put_shard(&cid, &data).unwrap();
        overwrite_stored(&store, &cid, &vec![0u8; data.len()]);
        assert!(matches!(
            store.read_shard(&cid),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
        assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
        // A reader that loaded the bad bytes before the repair reports them only now.
        let _ = store.mark_corrupt(&cid, 0);
        assert_eq!(
            store.has(&[cid]).unwrap(),
            vec![Holding::Intact(data.len() as u64)]
        );
        assert_eq!(store.read_shard(&cid).unwrap(), data);
        // Nor is a shard deleted meanwhile marked (no stray quarantine row).
        let (gone, gone_data) = shard(50_000, 8);
        store.put_shard(&gone, &gone_data).unwrap();
        assert!(store.delete_shard(&gone).unwrap());
        let _ = store.mark_corrupt(&gone, 0);
        assert!(!store.is_corrupt(&gone.to_bytes()).unwrap());
        // A copy still bad, or whose outboard alone is bad, is quarantined as before.
        overwrite_stored(&store, &cid, &vec![1u8; data.len()]);
        let _ = store.mark_corrupt(&cid, 0);
        assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
        assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
        let mut row = (data.len() as u64).to_le_bytes().to_vec();
        row.extend_from_slice(&vec![
            7u8;
            verified::outboard_size(data.len() as u64) as usize
        ]);
        let outboards = store.cf(CF_OUTBOARDS).unwrap();
        store.db.put_cf(outboards, cid.to_bytes(), row).unwrap();
        let _ = store.mark_corrupt(&cid, 0);
        assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    }

    #[test]
    fn a_shard_that_cannot_be_checked_does_not_stop_the_scrub() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let mut held = Vec::new();
        for seed in 1..=3 {
            let (cid, data) = shard(300_000, seed);
            store.put_shard(&cid, &data).unwrap();
            held.push(cid);
        }
        // Two damaged rows: one whose key is no Cairn CID at all, sorted before every shard,
        // and one the scrub cannot check (a manifest CID among shards), as a row whose read
        // fails with an I/O error would be.
        let mut row = 10u64.to_le_bytes().to_vec();
        row.extend_from_slice(&[0; 64]);
        let outboards = store.cf(CF_OUTBOARDS).unwrap();
        let alien = Cid::new_v1(0x50, *cids::raw(b"alien").hash());
        assert!(alien.to_bytes() < held.iter().map(Cid::to_bytes).min().unwrap());
        let odd = cids::dag_cbor(b"odd");
        for key in [alien, odd] {
            store.db.put_cf(outboards, key.to_bytes(), &row).unwrap();
        }

        let report = store.scrub_step(None, u64::MAX).unwrap();
        assert_eq!(report.unreadable.len(), 1, "{report:?}");
        assert_eq!(report.unreadable[0].0, odd);
        assert_eq!(report.checked, 4);
        assert_eq!(report.bytes, 3 * 300_000, "every shard was checked");
        assert!(report.corrupt.is_empty());
        assert_eq!(report.next, None, "the pass reached the end");
        let (listed, more) = store.list(None, 100).unwrap();
        assert!(!more);
        assert_eq!(listed.len(), 4, "the alien row is skipped: {listed:?}");
    }

    #[test]
    fn manifests_are_found_by_signer_newest_first() {
        use cairn_chunker::manifest::{DatasetEntry, Location as EntryLocation};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let (alice, bob) = (
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
            ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
        );
        let mut published = Vec::new();
        for (i, time) in [30u64, 10, 20].into_iter().enumerate() {
            let mut d = cairn_chunker::DatasetManifest::new();
            d.entries.insert(
                format!("f{i}"),
                DatasetEntry {
                    size: 1,
                    blake3: blake3::hash(&[i as u8]),
                    location: EntryLocation::Inline(vec![i as u8]),
                    meta: Default::default(),
                },
            );
            let cid = d.cid();
            let env = Provenance::sign(cid, &alice, time, None).to_bytes();
            store
                .put_manifest(&cid, ManifestKind::Dataset, &d.to_bytes(), &[env])
                .unwrap();
            published.push((cid, time));
        }
        // Bob's manifest is not Alice's.
        let d = cairn_chunker::DatasetManifest::new();
        let env = Provenance::sign(d.cid(), &bob, 99, None).to_bytes();
        store
            .put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[env])
            .unwrap();
        let found = store
            .signed_by(alice.verifying_key().as_bytes(), 10)
            .unwrap();
        let got: Vec<(Cid, u64)> = found.iter().map(|(c, t, _)| (*c, *t)).collect();
        published.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        assert_eq!(got, published);
        assert!(found.iter().all(|(_, _, k)| *k == ManifestKind::Dataset));
        let newest = store
            .signed_by(alice.verifying_key().as_bytes(), 1)
            .unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].1, 30);
        let bobs = store.signed_by(bob.verifying_key().as_bytes(), 10).unwrap();
        assert_eq!(bobs.len(), 1);
        assert_eq!(bobs[0].0, d.cid());
        assert!(store.signed_by(&[7; 32], 10).unwrap().is_empty());
    }

    #[test]
    fn concurrent_writes_and_deletes_keep_the_counters_exact() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        // 8 threads; every shard is written by two of them at once (one stores it, the other
        // finds it held), and thread t deletes what thread t - 1 wrote first, while it writes.
        let shards: Vec<Vec<(Cid, Vec<u8>)>> = (0..8u8)
            .map(|t| {
                (0..24u8)
                    .map(|i| {
                        shard(
                            1000 + 997 * usize::from(i) + 31 * usize::from(t),
                            t * 24 + i + 1,
                        )
                    })
                    .collect()
            })
            .collect();
        let outcomes: Vec<Vec<PutOutcome>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (store, shards) = (&store, &shards);
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..24 {
                            let (cid, data) = &shards[t][i];
                            out.push(store.put_shard(cid, data).unwrap());
                            let (cid, data) = &shards[(t + 1) % 8][i];
                            out.push(store.put_shard(cid, data).unwrap());
                            if i >= 12 {
                                let (cid, _) = &shards[(t + 7) % 8][i - 12];
                                store.delete_shard(cid).unwrap();
                            }
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stored = outcomes
            .iter()
            .flatten()
            .filter(|o| **o == PutOutcome::Stored)
            .count();
        let held = outcomes
            .iter()
            .flatten()
            .filter(|o| **o == PutOutcome::AlreadyHeld)
            .count();
        // A shard deleted before its second writer came stored twice: never more than that.
        assert!(
            stored >= 8 * 24 && stored + held == 2 * 8 * 24,
            "{stored} + {held}"
        );
        let expect = |store: &Store| {
            let mut listed = 0u64;
            let mut count = 0u64;
            for (t, list) in shards.iter().enumerate() {
                for (i, (cid, data)) in list.iter().enumerate() {
                    // Deleted, unless a writer came after the delete.
                    let deleted = i < 12;
                    let present = store.read_shard(cid).is_ok();
                    if !deleted {
                        assert!(present, "shard {t}/{i} lost");
                    }
                    if present {
                        listed += data.len() as u64;
                        count += 1;
                    }
                }
            }
            let stats = store.stats();
            assert_eq!((stats.used, stats.shards), (listed, count));
        };
        expect(&store);
        // The counters on disk are the sum of the deltas of every batch, in any order.
        drop(store);
        let store = open(dir.path(), 1 << 30);
        expect(&store);
    }

    #[test]
    fn concurrent_writes_never_exceed_the_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 * 50_000);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|t| {
                    let store = &store;
                    s.spawn(move || {
                        (0..5u8)
                            .map(|i| {
                                let (cid, data) = shard(50_000, t * 5 + i + 1);
                                store.put_shard(&cid, &data)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let stored = results
            .iter()
            .filter(|r| matches!(r, Ok(PutOutcome::Stored)))
            .count();
        let full = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::NoSpace { .. })))
            .count();
        assert_eq!((stored, full), (10, 30));
        assert_eq!(store.stats().used, 10 * 50_000);
        drop(store);
        assert_eq!(open(dir.path(), 10 * 50_000).stats().used, 10 * 50_000);
    }

    #[test]
    fn a_format_2_store_keeps_its_totals_and_counts_on_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_data) = shard(30_000, 1);
        {
            // What a format-2 build left: totals written as plain values.
            let store = open(dir.path(), 1 << 20);
            store.put_shard(&a, &a_data).unwrap();
            set_meta(&store, KEY_USED, 30_000);
            set_meta(&store, KEY_COUNT, 1);
            set_meta(&store, KEY_FORMAT, 2);
        }
        let store = open(dir.path(), 1 << 20);
        assert_eq!(meta_value(&store, KEY_FORMAT), FORMAT);
        assert_eq!((store.stats().used, store.stats().shards), (30_000, 1));
        let (b, b_data) = shard(20_000, 2);
        store.put_shard(&b, &b_data).unwrap();
        store.delete_shard(&a).unwrap();
        drop(store);
        let store = open(dir.path(), 1 << 20);
        assert_eq!((store.stats().used, store.stats().shards), (20_000, 1));
    }
}
