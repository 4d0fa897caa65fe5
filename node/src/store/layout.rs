//! The on-disk layout: column families, key and value encodings, opening the database
//! (and converting older formats), flushing it.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use cairn_chunker::verified;
use rocksdb::{
    ColumnFamilyDescriptor, DB, DBCompressionType, IteratorMode, MergeOperands, Options,
    WriteBatch, WriteOptions,
};

use super::{Store, StoreConfig, StoreError, StoreMetrics};

pub(super) const CF_SHARDS: &str = "shards";
pub(super) const CF_OUTBOARDS: &str = "outboards";
pub(super) const CF_CORRUPT: &str = "corrupt";
pub(super) const CF_MANIFESTS: &str = "manifests";
pub(super) const CF_PROVENANCE: &str = "provenance";
pub(super) const CF_META: &str = "meta";
/// Manifests by signer: `signer (32) ‖ time_ms (u64 BE) ‖ manifest CID` -> kind (0 object,
/// 1 dataset), so a signer can find what it published (a gateway its latest catalog export).
pub(super) const CF_SIGNED: &str = "signed";
/// Leases of held shards: shard CID -> `start ‖ end ‖ size` (`u64 LE` each). Small rows, so the
/// once-per-epoch walk over every lease reads neither pieces nor outboards.
pub(super) const CF_LEASES: &str = "leases";
/// Storage receipts kept beside manifests: `manifest CID ‖ shard root (32) ‖ node key (32)` ->
/// the encoded receipt.
pub(super) const CF_RECEIPTS: &str = "receipts";
/// The same receipts by signer: `node key (32) ‖ manifest CID ‖ shard root (32)` -> the encoded
/// receipt (a copy: an auditor's question is answered by one prefix walk).
pub(super) const CF_RECEIPTS_BY_NODE: &str = "receipts-by-node";
/// Holds on held shards: `shard CID ‖ u8 object length ‖ object CID ‖ owner (32)` ->
/// `end ‖ signed_ms` (`u64 LE` each); the upload hold has an empty object and a zero owner.
pub(super) const CF_HOLDS: &str = "holds";
/// Owners' lease statements kept beside manifests: `object CID ‖ owner (32)` -> the encoded
/// statement (the latest per owner).
pub(super) const CF_OBJECT_LEASES: &str = "object-leases";
/// Every column family, in the order the store opens them.
pub(super) const ALL_CFS: [&str; 12] = [
    CF_SHARDS,
    CF_OUTBOARDS,
    CF_CORRUPT,
    CF_MANIFESTS,
    CF_PROVENANCE,
    CF_META,
    CF_SIGNED,
    CF_LEASES,
    CF_RECEIPTS,
    CF_RECEIPTS_BY_NODE,
    CF_HOLDS,
    CF_OBJECT_LEASES,
];
/// The oldest share of `shards` blob files whose live shards compactions move (blob garbage
/// collection); `Store::reclaim` raises it for a while and puts this back.
pub(super) const BLOB_GC_AGE_CUTOFF: f64 = 0.25;
pub(super) const KEY_USED: &[u8] = b"used";
pub(super) const KEY_COUNT: &[u8] = b"count";
/// Bytes of manifests and their provenance envelopes, counted against capacity beside shard
/// bytes. A store written before it existed counts them once on open.
pub(super) const KEY_MANIFEST_BYTES: &[u8] = b"manifest-bytes";
pub(super) const KEY_FORMAT: &[u8] = b"format";
/// Format 4: every held shard has a row in `leases` (shards taken from now on get theirs when
/// their receipt is signed). A format-3 store is given them on open: each shard it holds gets
/// the open-ended lease `(0, u64::MAX)`, promised to no one but honoured as if it were, and the
/// store is marked 4, which format-3 builds refuse (they would store shards without leases).
/// Format 3: `used` and `count` change by merge operands ([`add_deltas`]). Format 2 (shards in
/// pieces, counters written as totals) opens as format 3: a total is a base the deltas add to.
/// Format 1 (one value per shard) is converted to pieces on open, then on as format 3.
pub(super) const FORMAT: u64 = 4;
/// The format whose counters are merge operands and whose shards have no leases.
const FORMAT_WITHOUT_LEASES: u64 = 3;

/// A lease row: `start ‖ end ‖ size`, `u64 LE` each.
pub(super) fn lease_row(start: u64, end: u64, size: u64) -> [u8; 24] {
    let mut row = [0u8; 24];
    row[..8].copy_from_slice(&start.to_le_bytes());
    row[8..16].copy_from_slice(&end.to_le_bytes());
    row[16..].copy_from_slice(&size.to_le_bytes());
    row
}

/// A lease row read back: `(start, end, size)`.
pub(super) fn parse_lease_row(row: &[u8]) -> Result<(u64, u64, u64), StoreError> {
    if row.len() != 24 {
        return Err(StoreError::Damaged(format!(
            "a lease row of {} bytes, not 24",
            row.len()
        )));
    }
    Ok((
        u64_le(&row[..8])?,
        u64_le(&row[8..16])?,
        u64_le(&row[16..])?,
    ))
}

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
pub(super) fn delta(d: i64) -> [u8; 8] {
    d.to_le_bytes()
}

/// Shard bytes are stored in pieces of this many bytes (see the module docs): 8 verification
/// groups, the size the node hands to the network at a time.
pub const PIECE_BYTES: usize = 8 * verified::GROUP_BYTES;

/// The RocksDB key of piece `i` of the shard keyed `key`.
pub(super) fn piece_key(key: &[u8], i: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(key);
    // MAX_SHARD_SIZE / PIECE_BYTES = 512 pieces at most. Big-endian, so a shard's pieces
    // sort in order (`scan_pieces` walks them so).
    #[allow(clippy::big_endian_bytes)]
    k.extend_from_slice(&(i as u16).to_be_bytes());
    k
}

/// Consecutive pieces as one buffer.
pub(super) fn join(pieces: &[rocksdb::DBPinnableSlice<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for p in pieces {
        out.extend_from_slice(p);
    }
    out
}

/// How many pieces a shard of `size` bytes is stored in.
pub(super) fn piece_count(size: u64) -> usize {
    size.div_ceil(PIECE_BYTES as u64) as usize
}

/// The byte range of piece `i` of a shard of `size` bytes.
pub(super) fn piece_bytes(size: u64, i: usize) -> Range<u64> {
    let start = (i * PIECE_BYTES) as u64;
    start..(start + PIECE_BYTES as u64).min(size)
}

pub(super) fn u64_le(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Damaged(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_le_bytes(arr))
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
        // Garbage collection deletes shards: compactions relocate the live blobs of the oldest
        // quarter of blob files, and a compaction is forced when those are half garbage, so a
        // blob file whose shards are gone is dropped (see `Store::reclaim`).
        shard_opts.set_blob_gc_age_cutoff(BLOB_GC_AGE_CUTOFF);
        shard_opts.set_blob_gc_force_threshold(0.5);
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
            ColumnFamilyDescriptor::new(CF_LEASES, plain()),
            ColumnFamilyDescriptor::new(CF_RECEIPTS, plain()),
            ColumnFamilyDescriptor::new(CF_RECEIPTS_BY_NODE, plain()),
            // Added by holds: created on open in a store written by an older build.
            ColumnFamilyDescriptor::new(CF_HOLDS, plain()),
            ColumnFamilyDescriptor::new(CF_OBJECT_LEASES, plain()),
        ];
        // Our own lock first, on a file RocksDB does not name (it leaves such files alone): a
        // second process gets a typed answer, not RocksDB's lock error to interpret.
        let open_failed = |source| StoreError::Prepare {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(path).map_err(open_failed)?;
        let lock = cairn_wire::daemon::lock_exclusive(&path.join("cairn.lock"))
            .map_err(open_failed)?
            .ok_or_else(|| StoreError::Locked {
                path: path.to_path_buf(),
            })?;
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Self {
            db,
            path: path.to_path_buf(),
            busy: Mutex::new(HashSet::new()),
            settled: Condvar::new(),
            used: AtomicU64::new(0),
            manifest_bytes: AtomicU64::new(0),
            writing: AtomicU64::new(0),
            count: AtomicU64::new(0),
            config,
            metrics,
            disk_full: std::sync::atomic::AtomicBool::new(false),
            spare: Default::default(),
            _lock: lock,
        };
        let meta = store.cf(CF_META)?;
        let mut format = match store.db.get_cf(meta, KEY_FORMAT)? {
            None => {
                store.db.put_cf(meta, KEY_FORMAT, FORMAT.to_le_bytes())?;
                FORMAT
            }
            Some(v) => u64_le(&v)?,
        };
        if format == 1 {
            store.convert_from_format_1()?;
            format = FORMAT_WITHOUT_LEASES;
        }
        if format == 2 {
            format = FORMAT_WITHOUT_LEASES;
        }
        if format == FORMAT_WITHOUT_LEASES {
            store.add_open_ended_leases()?;
            format = FORMAT;
        }
        if format != FORMAT {
            return Err(StoreError::Damaged(format!(
                "store format {format} is not supported by this build (format {FORMAT})"
            )));
        }
        // A counter below zero would be a bug in the deltas; it reads as 0, not as 2^64 - n.
        let read = |k: &[u8]| -> Result<u64, StoreError> {
            let v = store.db.get_cf(meta, k)?.map_or(Ok(0), |v| u64_le(&v))?;
            Ok(u64::try_from(v as i64).unwrap_or(0))
        };
        store.count.store(read(KEY_COUNT)?, Ordering::SeqCst);
        if store.db.get_cf(meta, KEY_MANIFEST_BYTES)?.is_none() {
            store.count_manifest_bytes()?;
        }
        let manifests = read(KEY_MANIFEST_BYTES)?;
        store.manifest_bytes.store(manifests, Ordering::SeqCst);
        store
            .used
            .store(read(KEY_USED)? + manifests, Ordering::SeqCst);
        Ok(store)
    }

    /// Counts the bytes of every stored manifest and envelope and writes the total as the base
    /// of [`KEY_MANIFEST_BYTES`] (for a store from a build that did not count them). Nothing
    /// else writes while the store opens.
    fn count_manifest_bytes(&self) -> Result<(), StoreError> {
        let mut total = 0u64;
        for cf in [CF_MANIFESTS, CF_PROVENANCE] {
            for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
                let (_, v) = item?;
                total += v.len() as u64;
            }
        }
        self.db.put_cf_opt(
            self.cf(CF_META)?,
            KEY_MANIFEST_BYTES,
            total.to_le_bytes(),
            &self.write_opts(),
        )?;
        if total > 0 {
            tracing::info!(
                bytes = total,
                "manifests now count against storage.capacity"
            );
        }
        Ok(())
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
        self.db.put_cf_opt(
            meta,
            KEY_FORMAT,
            FORMAT_WITHOUT_LEASES.to_le_bytes(),
            &self.write_opts(),
        )?;
        tracing::info!(converted, "shard store converted to shards in pieces");
        Ok(())
    }

    /// Gives every held shard that has no lease the open-ended lease `(0, u64::MAX)` and marks
    /// the store format 4. Shards stored before leases existed were promised to no one; this
    /// keeps them in the node's commitments (and so provable) rather than silently out of them.
    /// Rows are written 10,000 to a batch; an interrupted pass is resumed on the next open
    /// (rows already written are left as they are).
    fn add_open_ended_leases(&self) -> Result<(), StoreError> {
        let (outboards, leases, meta) = (
            self.cf(CF_OUTBOARDS)?,
            self.cf(CF_LEASES)?,
            self.cf(CF_META)?,
        );
        let mut batch = WriteBatch::default();
        let mut added = 0u64;
        for item in self.db.iterator_cf(outboards, IteratorMode::Start) {
            let (key, row) = item?;
            let Ok(size) = u64_le(&row) else {
                tracing::warn!(key = ?&key[..], "a damaged shard row gets no lease");
                continue;
            };
            if self.db.get_pinned_cf(leases, &key)?.is_some() {
                continue;
            }
            batch.put_cf(leases, &key, lease_row(0, u64::MAX, size));
            added += 1;
            if batch.len() >= 10_000 {
                self.db
                    .write_opt(std::mem::take(&mut batch), &self.write_opts())?;
                tracing::info!(added, "giving held shards open-ended leases");
            }
        }
        batch.put_cf(meta, KEY_FORMAT, FORMAT.to_le_bytes());
        self.db.write_opt(batch, &self.write_opts())?;
        if added > 0 {
            tracing::info!(
                shards = added,
                "shards stored before leases existed hold the open-ended lease (0, forever)"
            );
        }
        Ok(())
    }

    pub(super) fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Damaged(format!("column family {name} is missing")))
    }

    pub(super) fn write_opts(&self) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(self.config.sync_writes);
        w
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
            CF_SIGNED,
            CF_LEASES,
            CF_RECEIPTS,
            CF_RECEIPTS_BY_NODE,
            CF_HOLDS,
            CF_OBJECT_LEASES,
        ] {
            self.db.flush_cf(self.cf(cf)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::testing::*;
    use crate::store::*;
    use cairn_chunker::cids;

    /// Writes a `meta` value behind the store's back, as an older build would have.
    fn set_meta(store: &Store, key: &[u8], value: u64) {
        let meta = store.cf(CF_META).unwrap();
        store.db.put_cf(meta, key, value.to_le_bytes()).unwrap();
    }

    fn meta_value(store: &Store, key: &[u8]) -> u64 {
        let meta = store.cf(CF_META).unwrap();
        u64_le(&store.db.get_cf(meta, key).unwrap().unwrap()).unwrap()
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
        // Then on to format 4, as a format-3 store is.
        for (cid, _) in &held {
            assert_eq!(store.lease(cid).unwrap(), Some((0, u64::MAX)));
        }
        // Opening again leaves it alone.
        drop(store);
        let store = open(dir.path(), 10 << 20);
        assert_eq!(&store.read_shard(&held[3].0).unwrap(), &held[3].1);
    }

    #[test]
    fn a_format_3_store_gives_its_shards_open_ended_leases_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_data) = shard(30_000, 1);
        let (b, b_data) = shard(PIECE_BYTES + 5, 2);
        let (c, c_data) = shard(70_000, 3);
        {
            let store = open(dir.path(), 1 << 20);
            for (cid, data) in [(&a, &a_data), (&b, &b_data), (&c, &c_data)] {
                store.put_shard(cid, data).unwrap();
            }
            // One shard leased already (an interrupted earlier pass, say); the others not.
            store.extend_lease(&c, 5, 9).unwrap();
            set_meta(&store, KEY_FORMAT, 3);
        }
        let store = open(dir.path(), 1 << 20);
        assert_eq!(meta_value(&store, KEY_FORMAT), FORMAT);
        assert_eq!(store.lease(&a).unwrap(), Some((0, u64::MAX)));
        assert_eq!(store.lease(&b).unwrap(), Some((0, u64::MAX)));
        assert_eq!(store.lease(&c).unwrap(), Some((5, 9)), "kept as it was");
        // Committed from the first epoch on, for good.
        let due = store.committable(1).unwrap();
        let mut want = vec![
            (
                *cids::digest(&a, cids::Codec::Raw).unwrap().as_bytes(),
                30_000,
            ),
            (
                *cids::digest(&b, cids::Codec::Raw).unwrap().as_bytes(),
                PIECE_BYTES as u64 + 5,
            ),
        ];
        want.sort();
        assert_eq!(due.entries, want);
        assert_eq!(store.committable(u64::MAX).unwrap().entries, want);
        // Shards stored from now on are not leased until a receipt is signed for them.
        let (d, d_data) = shard(1_000, 4);
        store.put_shard(&d, &d_data).unwrap();
        drop(store);
        let store = open(dir.path(), 1 << 20);
        assert_eq!(store.lease(&d).unwrap(), None);
        assert_eq!(store.committable(1).unwrap().entries, want);
    }

    #[test]
    fn a_store_that_did_not_count_manifests_counts_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, bytes) = manifest(3);
        store
            .put_manifest(
                &cid,
                cairn_wire::protocol::ManifestKind::Object,
                &bytes,
                &[],
            )
            .unwrap();
        let (shard_cid, data) = shard(5_000, 1);
        store.put_shard(&shard_cid, &data).unwrap();
        let meta = store.cf(CF_META).unwrap();
        store.db.delete_cf(meta, KEY_MANIFEST_BYTES).unwrap();
        let store = store.reopen_for_test();
        let stats = store.stats();
        assert_eq!((stats.manifests, stats.used), (bytes.len() as u64, 5_000));
        assert_eq!(meta_value(&store, KEY_MANIFEST_BYTES), bytes.len() as u64);
        assert_eq!(stats.free(), (10 << 20) - 5_000 - bytes.len() as u64);
    }

    #[test]
    fn a_store_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        set_meta(&open(dir.path(), 1 << 20), KEY_FORMAT, FORMAT + 1);
        let err =
            Store::open(dir.path(), StoreConfig::default(), StoreMetrics::default()).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
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
