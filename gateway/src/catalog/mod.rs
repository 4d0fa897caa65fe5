//! The bucket catalog: bucket/key -> where the object's bytes are on the network, and what S3
//! says about it. Kept in the gateway's own RocksDB (the gateway never touches a node's).
//!
//! | column family | key | value (DAG-CBOR) |
//! |---|---|---|
//! | `buckets` | bucket name | [`BucketRecord`] |
//! | `objects` | bucket ‖ 0x00 ‖ key | [`ObjectRecord`] |
//! | `uploads` | upload id | [`UploadRecord`] |
//! | `parts` | upload id ‖ 0x00 ‖ part number (5 decimal digits) | [`PartRecord`] |
//! | `unreferenced` | CID ‖ sequence number (`u64` LE) | ms when a record stopped referencing it (`u64` LE) |
//!
//! Keys sort as S3 lists them (UTF-8 byte order), so listing is a range scan. Every method
//! blocks: call from a blocking thread.
//!
//! The code is split by concern: `records` (what is stored, and the condition a conditional
//! write asks), `keys` (column families, key layout, record encoding), `buckets`, `objects`
//! (one key, and many at once for import, export and restore), `listing`, and `uploads`
//! (multipart uploads and their parts), `unreferenced` (CIDs a change stopped referencing, for
//! the gateway to release). Here: opening the database, and the locks writes take.

mod buckets;
mod keys;
mod listing;
mod objects;
mod records;
mod unreferenced;
mod uploads;

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteOptions};

use keys::{CF_BUCKETS, CF_OBJECTS, CF_PARTS, CF_UNREFERENCED, CF_UPLOADS, dec};
pub use listing::Listing;
pub use records::{
    BucketRecord, ETagMatch, Location, ObjectRecord, PartRecord, UploadRecord, WriteCondition,
};
pub use unreferenced::Note;

/// Free bytes below which a write that failed with an I/O error is taken for a full disk
/// (RocksDB needs room for its log, memtable flushes and compactions, and fails them first).
pub const DISK_FULL_BELOW: u64 = 256 << 20;

/// Catalog errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// RocksDB failed.
    #[error("catalog database: {0}")]
    Db(#[from] rocksdb::Error),
    /// The disk holding the catalog is full: a write failed with an I/O error while the
    /// filesystem had less than [`DISK_FULL_BELOW`] free.
    #[error("the disk holding the catalog is full ({0}): free disk space")]
    DiskFull(rocksdb::Error),
    /// A file beside the database failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the catalog.
    #[error("catalog {0} is in use by another cairn-gateway: stop it or use another --data-dir")]
    Locked(String),
    /// A stored record does not decode.
    #[error("catalog record is damaged: {0}")]
    Damaged(String),
    /// The bucket does not exist (or was deleted while the request ran).
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    /// The bucket still holds objects or uploads.
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    /// A conditional write's condition does not hold (any more): nothing was written.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The multipart upload was completed or aborted (by another request, meanwhile).
    #[error("upload {0} does not exist (it was completed or aborted)")]
    NoSuchUpload(String),
}

/// How many locks keys share (by a hash of the key): enough that writes of different keys
/// seldom wait for each other.
const KEY_LOCKS: usize = 1024;

/// The catalog.
pub struct Catalog {
    db: DB,
    /// Held while a bucket's existence is checked and acted on (a key lands only in a bucket
    /// that exists; a bucket is deleted only while empty), so DeleteBucket and a racing
    /// PutObject cannot leave a key in a deleted bucket. Writes of keys share it, so their
    /// synced writes overlap and RocksDB commits them together (one fsync for many); creating
    /// and deleting buckets hold it alone.
    buckets_lock: RwLock<()>,
    /// Held while a key is written, by a hash of the key ([`Catalog::lock_key`]), after
    /// `buckets_lock`: a conditional write holds its key's across re-reading the key's record,
    /// checking its condition and writing, so that no other write of the key lands in between.
    key_locks: Box<[Mutex<()>]>,
    /// Hashes keys to their lock.
    key_hasher: std::collections::hash_map::RandomState,
    /// Bumped by every change to buckets or objects (what an export holds).
    generation: AtomicU64,
    /// The next note's sequence number (`unreferenced`), from the clock at open so that it
    /// grows across restarts.
    note_seq: AtomicU64,
    /// Where the database is.
    path: PathBuf,
    /// Keeps other gateways out; released after the database closes (fields drop in order).
    _lock: cairn_wire::daemon::DataLock,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens (or creates) the catalog in `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [
            CF_BUCKETS,
            CF_OBJECTS,
            CF_UPLOADS,
            CF_PARTS,
            CF_UNREFERENCED,
        ]
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let locked = || CatalogError::Locked(path.display().to_string());
        // Our own lock file in the database's directory (RocksDB leaves files it does not
        // name alone).
        let lock_path = path.join("cairn.lock");
        let io = |what: String| move |source| CatalogError::Io { what, source };
        std::fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))?;
        let lock = cairn_wire::daemon::lock_exclusive(&lock_path)
            .map_err(io(format!("locking {}", lock_path.display())))?
            .ok_or_else(locked)?;
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self {
            db,

            buckets_lock: RwLock::new(()),
            key_locks: (0..KEY_LOCKS).map(|_| Mutex::new(())).collect(),
            key_hasher: Default::default(),
            generation: AtomicU64::new(0),
            note_seq: AtomicU64::new(crate::s3::now_ms().saturating_mul(1000)),
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// A failed write: a full disk when the filesystem is nearly out of room (RocksDB's errors do
    /// not say ENOSPC in a type), else the database's error.
    fn write_failed(&self, e: rocksdb::Error) -> CatalogError {
        let nearly_full = cairn_wire::daemon::disk_available(&self.path)
            .is_some_and(|free| free < DISK_FULL_BELOW);
        if e.kind() == rocksdb::ErrorKind::IOError && nearly_full {
            CatalogError::DiskFull(e)
        } else {
            CatalogError::Db(e)
        }
    }

    /// A number that changes whenever buckets or objects change (not persisted).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// For creating or deleting a bucket: no key is being written meanwhile.
    fn lock_buckets(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.buckets_lock.write().unwrap_or_else(|p| p.into_inner())
    }

    /// For writing keys: their buckets cannot be deleted meanwhile.
    fn share_buckets(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.buckets_lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Which of `key_locks` an object key (from [`object_key`]) takes.
    fn key_lock_index(&self, object_key: &[u8]) -> usize {
        (self.key_hasher.hash_one(object_key) % KEY_LOCKS as u64) as usize
    }

    /// For writing a key (after [`Catalog::share_buckets`], if that is held too): no other write
    /// of it lands meanwhile. Uncontended unless the same key (or one sharing its lock) is
    /// being written.
    fn lock_key(&self, object_key: &[u8]) -> MutexGuard<'_, ()> {
        self.key_locks[self.key_lock_index(object_key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The locks of several keys (object keys, or upload ids), each taken once and in one order,
    /// so that two callers never wait for each other's.
    fn lock_keys(&self, keys: &[&[u8]]) -> Vec<MutexGuard<'_, ()>> {
        let mut locks: Vec<usize> = keys.iter().map(|k| self.key_lock_index(k)).collect();
        locks.sort_unstable();
        locks.dedup();
        locks
            .into_iter()
            .map(|i| self.key_locks[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    /// Checks `cond` against the key's current record (with its key lock held).
    fn check_condition(
        &self,
        object_key: &[u8],
        cond: &WriteCondition,
    ) -> Result<(), CatalogError> {
        if cond.is_none() {
            return Ok(());
        }
        let current: Option<ObjectRecord> = self
            .db
            .get_pinned_cf(self.cf(CF_OBJECTS)?, object_key)?
            .map(|b| dec(&b))
            .transpose()?;
        cond.check(current.as_ref())
            .map_err(CatalogError::PreconditionFailed)
    }

    fn require_bucket(&self, name: &str) -> Result<(), CatalogError> {
        match self.db.get_pinned_cf(self.cf(CF_BUCKETS)?, name)? {
            Some(_) => Ok(()),
            None => Err(CatalogError::NoSuchBucket(name.to_string())),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, CatalogError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| CatalogError::Damaged(format!("column family {name} missing")))
    }

    fn wo() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }
}

/// Records the tests write.
#[cfg(test)]
mod testing {
    use std::collections::BTreeMap;

    use super::*;

    /// A multipart upload of `key` in bucket `b`.
    pub(super) fn upload_of(key: &str) -> UploadRecord {
        UploadRecord {
            bucket: "b".into(),
            key: key.into(),
            created_ms: 1,
            content_type: None,
            metadata: BTreeMap::new(),
            erasure: None,
        }
    }

    pub(super) fn rec(n: u8) -> ObjectRecord {
        ObjectRecord {
            location: Location::Object(cairn_chunker::cids::dag_cbor(&[n])),
            size: u64::from(n),
            etag: format!("{n}"),
            content_type: None,
            metadata: BTreeMap::new(),
            modified_ms: 0,
            checksums: BTreeMap::new(),
            signer: String::new(),
            blake3: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::rec;
    use super::*;

    #[test]
    fn a_catalog_is_opened_by_one_gateway_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Catalog::open(dir.path()).unwrap();
        match Catalog::open(dir.path()) {
            Err(CatalogError::Locked(p)) => assert_eq!(p, dir.path().display().to_string()),
            other => panic!("opened twice: {other:?}"),
        }
        drop(first);
        Catalog::open(dir.path()).expect("free once the first is closed");
    }

    /// Object writes share the bucket lock (so their fsyncs can be committed together), but a
    /// DeleteBucket racing a PutObject must still never leave a key in a deleted bucket.
    #[test]
    fn a_racing_put_and_delete_bucket_never_orphan_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Catalog::open(dir.path()).unwrap());
        let (mut deleted, mut stored) = (0, 0);
        for trial in 0..150 {
            let bucket = format!("race-{trial}");
            c.create_bucket(&bucket, &BucketRecord { created_ms: 0 })
                .unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(3));
            let put = {
                let (c, b, start) = (c.clone(), bucket.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    c.put_object(&b, "k", &rec(1)).is_ok()
                })
            };
            let delete = {
                let (c, b, start) = (c.clone(), bucket.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    c.delete_bucket(&b).is_ok()
                })
            };
            // Another key's write in a live bucket runs alongside, sharing the lock.
            c.create_bucket("other", &BucketRecord { created_ms: 0 })
                .unwrap();
            start.wait();
            c.put_object("other", &bucket, &rec(2)).unwrap();
            let (put, delete) = (put.join().unwrap(), delete.join().unwrap());
            let exists = c.bucket(&bucket).unwrap().is_some();
            let key = c.object(&bucket, "k").unwrap().is_some();
            assert!(exists || !key, "trial {trial}: a key in a deleted bucket");
            assert_eq!(put, key, "trial {trial}");
            assert_eq!(delete, !exists, "trial {trial}");
            assert!(!(put && delete), "trial {trial}: both won");
            deleted += usize::from(delete);
            stored += usize::from(put);
        }
        assert_eq!(deleted + stored, 150, "every trial has one winner");
    }
}
