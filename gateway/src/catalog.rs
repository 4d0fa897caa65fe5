//! The bucket catalog: bucket/key -> where the object's bytes are on the network, and what S3
//! says about it. Kept in the gateway's own RocksDB (the gateway never touches a node's).
//!
//! | column family | key | value (DAG-CBOR) |
//! |---|---|---|
//! | `buckets` | bucket name | [`BucketRecord`] |
//! | `objects` | bucket ‖ 0x00 ‖ key | [`ObjectRecord`] |
//! | `uploads` | upload id | [`UploadRecord`] |
//! | `parts` | upload id ‖ 0x00 ‖ part number (5 decimal digits) | [`PartRecord`] |
//!
//! Keys sort as S3 lists them (UTF-8 byte order), so listing is a range scan. Every method
//! blocks: call from a blocking thread.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use cairn_chunker::Cid;
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const CF_BUCKETS: &str = "buckets";
const CF_OBJECTS: &str = "objects";
const CF_UPLOADS: &str = "uploads";
const CF_PARTS: &str = "parts";

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

/// Catalog errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// RocksDB failed.
    #[error("catalog database: {0}")]
    Db(#[from] rocksdb::Error),
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
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // Records hold strings, integers, maps and CIDs only.
    serde_ipld_dagcbor::to_vec(v).unwrap_or_else(|e| unreachable!("catalog records encode: {e}"))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, CatalogError> {
    serde_ipld_dagcbor::from_slice(b).map_err(|e| CatalogError::Damaged(e.to_string()))
}

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn part_key(upload: &str, part: u32) -> Vec<u8> {
    let mut k = upload.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(format!("{part:05}").as_bytes());
    k
}

/// A page of a listing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Objects (key, record), in key order.
    pub objects: Vec<(String, ObjectRecord)>,
    /// Common prefixes (with a delimiter), in order.
    pub prefixes: Vec<String>,
    /// The last key or prefix returned, if the listing was cut short.
    pub next: Option<String>,
}

impl Catalog {
    /// Opens (or creates) the catalog in `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_BUCKETS, CF_OBJECTS, CF_UPLOADS, CF_PARTS]
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            if e.to_string().contains("lock") {
                CatalogError::Locked(path.display().to_string())
            } else {
                CatalogError::Db(e)
            }
        })?;
        Ok(Self {
            db,
            buckets_lock: RwLock::new(()),
            key_locks: (0..KEY_LOCKS).map(|_| Mutex::new(())).collect(),
            key_hasher: Default::default(),
            generation: AtomicU64::new(0),
        })
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

    /// Creates a bucket; false if it existed.
    pub fn create_bucket(&self, name: &str, record: &BucketRecord) -> Result<bool, CatalogError> {
        let cf = self.cf(CF_BUCKETS)?;
        let _guard = self.lock_buckets();
        if self.db.get_pinned_cf(cf, name)?.is_some() {
            return Ok(false);
        }
        self.db.put_cf_opt(cf, name, enc(record), &Self::wo())?;
        self.changed();
        Ok(true)
    }

    /// A bucket's record.
    pub fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, CatalogError> {
        self.db
            .get_pinned_cf(self.cf(CF_BUCKETS)?, name)?
            .map(|b| dec(&b))
            .transpose()
    }

    /// All buckets, by name.
    pub fn buckets(&self) -> Result<Vec<(String, BucketRecord)>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_BUCKETS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), dec(&v)?));
        }
        Ok(out)
    }

    /// Whether a bucket holds any object or upload.
    pub fn bucket_is_empty(&self, name: &str) -> Result<bool, CatalogError> {
        let prefix = object_key(name, "");
        let mut it = self.db.iterator_cf(
            self.cf(CF_OBJECTS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        if let Some(item) = it.next()
            && item?.0.starts_with(&prefix)
        {
            return Ok(false);
        }
        Ok(self.uploads(name)?.is_empty())
    }

    /// Deletes a bucket, refusing while it holds objects or uploads.
    pub fn delete_bucket(&self, name: &str) -> Result<(), CatalogError> {
        let _guard = self.lock_buckets();
        self.require_bucket(name)?;
        if !self.bucket_is_empty(name)? {
            return Err(CatalogError::BucketNotEmpty(name.to_string()));
        }
        self.db
            .delete_cf_opt(self.cf(CF_BUCKETS)?, name, &Self::wo())?;
        self.changed();
        Ok(())
    }

    /// An object's record.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, CatalogError> {
        self.db
            .get_pinned_cf(self.cf(CF_OBJECTS)?, object_key(bucket, key))?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Stores an object's record (replacing any), if its bucket still exists.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), CatalogError> {
        self.put_object_if(bucket, key, record, &WriteCondition::default())
    }

    /// Stores an object's record (replacing any), if its bucket still exists and the key's
    /// current object meets `cond`, checked and written as one step: of writes racing with
    /// `If-None-Match: *` on a new key, one lands and the others fail with
    /// [`CatalogError::PreconditionFailed`].
    pub fn put_object_if(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        cond: &WriteCondition,
    ) -> Result<(), CatalogError> {
        let k = object_key(bucket, key);
        let _guard = self.share_buckets();
        self.require_bucket(bucket)?;
        let _key = self.lock_key(&k);
        self.check_condition(&k, cond)?;
        self.db
            .put_cf_opt(self.cf(CF_OBJECTS)?, k, enc(record), &Self::wo())?;
        self.changed();
        Ok(())
    }

    /// Stores many records in one atomic batch, creating `bucket` if it is missing.
    pub fn put_objects(
        &self,
        bucket: &str,
        created_ms: u64,
        records: &[(String, ObjectRecord)],
    ) -> Result<(), CatalogError> {
        let mut batch = rocksdb::WriteBatch::default();
        let buckets = self.cf(CF_BUCKETS)?;
        let _guard = self.share_buckets();
        if self.db.get_pinned_cf(buckets, bucket)?.is_none() {
            batch.put_cf(buckets, bucket, enc(&BucketRecord { created_ms }));
        }
        let objects = self.cf(CF_OBJECTS)?;
        let keys: Vec<Vec<u8>> = records.iter().map(|(k, _)| object_key(bucket, k)).collect();
        for (k, (_, record)) in keys.iter().zip(records) {
            batch.put_cf(objects, k, enc(record));
        }
        let _keys = self.lock_keys(&keys.iter().map(Vec::as_slice).collect::<Vec<_>>());
        self.db.write_opt(batch, &Self::wo())?;
        self.changed();
        Ok(())
    }

    /// Removes an object's record; true if there was one.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, CatalogError> {
        let cf = self.cf(CF_OBJECTS)?;
        let k = object_key(bucket, key);
        let _key = self.lock_key(&k);
        let existed = self.db.get_pinned_cf(cf, &k)?.is_some();
        self.db.delete_cf_opt(cf, k, &Self::wo())?;
        if existed {
            self.changed();
        }
        Ok(existed)
    }

    /// Lists keys of `bucket` starting with `prefix`, strictly after `after`, grouping by
    /// `delimiter`, at most `max` entries (objects + prefixes).
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Listing, CatalogError> {
        let base = object_key(bucket, "");
        let start_key = match after {
            Some(a) if a >= prefix => object_key(bucket, a),
            _ => object_key(bucket, prefix),
        };
        let mut listing = Listing::default();
        let mut last_prefix: Option<String> = None;
        let mut count = 0;
        for item in self.db.iterator_cf(
            self.cf(CF_OBJECTS)?,
            IteratorMode::From(&start_key, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&base) {
                break;
            }
            let key = String::from_utf8_lossy(&k[base.len()..]).into_owned();
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if let Some(d) = delimiter.filter(|d| !d.is_empty())
                && let Some(pos) = key[prefix.len()..].find(d)
            {
                let common = key[..prefix.len() + pos + d.len()].to_string();
                if last_prefix.as_deref() == Some(common.as_str())
                    || after.is_some_and(|a| a.starts_with(&common))
                {
                    continue;
                }
                if count == max {
                    listing.next = listing
                        .objects
                        .last()
                        .map(|(k, _)| k.clone())
                        .max(last_prefix.clone());
                    return Ok(listing);
                }
                last_prefix = Some(common.clone());
                listing.prefixes.push(common);
                count += 1;
                continue;
            }
            if count == max {
                listing.next = Some(
                    listing
                        .objects
                        .last()
                        .map(|(k, _)| k.clone())
                        .max(last_prefix.clone())
                        .unwrap_or_default(),
                );
                return Ok(listing);
            }
            listing.objects.push((key, dec(&v)?));
            count += 1;
        }
        Ok(listing)
    }

    /// Records a new multipart upload.
    pub fn create_upload(&self, id: &str, record: &UploadRecord) -> Result<(), CatalogError> {
        let _guard = self.share_buckets();
        self.require_bucket(&record.bucket)?;
        self.db
            .put_cf_opt(self.cf(CF_UPLOADS)?, id, enc(record), &Self::wo())?;
        Ok(())
    }

    /// A multipart upload.
    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, CatalogError> {
        self.db
            .get_pinned_cf(self.cf(CF_UPLOADS)?, id)?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Uploads in progress for a bucket: (id, record).
    pub fn uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_UPLOADS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let r: UploadRecord = dec(&v)?;
            if r.bucket == bucket {
                out.push((String::from_utf8_lossy(&k).into_owned(), r));
            }
        }
        out.sort_by(|a, b| {
            (a.1.key.as_str(), a.1.created_ms).cmp(&(b.1.key.as_str(), b.1.created_ms))
        });
        Ok(out)
    }

    /// Records a part (replacing an earlier upload of the same number), if the upload is still
    /// open: a part that finishes after its upload was completed or aborted is not left behind.
    pub fn put_part(&self, id: &str, number: u32, record: &PartRecord) -> Result<(), CatalogError> {
        let _open = self.lock_keys(&[id.as_bytes()]);
        if self.upload(id)?.is_none() {
            return Err(CatalogError::NoSuchUpload(id.to_string()));
        }
        self.db.put_cf_opt(
            self.cf(CF_PARTS)?,
            part_key(id, number),
            enc(record),
            &Self::wo(),
        )?;
        Ok(())
    }

    /// The parts of an upload, by number.
    pub fn parts(&self, id: &str) -> Result<Vec<(u32, PartRecord)>, CatalogError> {
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_PARTS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let number = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| CatalogError::Damaged("bad part key".into()))?;
            out.push((number, dec(&v)?));
        }
        Ok(out)
    }

    /// Ends an upload: removes it and its parts, and (if given) stores the final object, in one
    /// atomic batch.
    pub fn finish_upload(
        &self,
        id: &str,
        object: Option<(&str, &str, &ObjectRecord)>,
    ) -> Result<(), CatalogError> {
        self.finish_upload_if(id, object, &WriteCondition::default())
    }

    /// [`Catalog::finish_upload`], storing the object only if the key's current object meets
    /// `cond` (checked and written as one step, as [`Catalog::put_object_if`]). When it does
    /// not, nothing changes: the upload stays open.
    pub fn finish_upload_if(
        &self,
        id: &str,
        object: Option<(&str, &str, &ObjectRecord)>,
        cond: &WriteCondition,
    ) -> Result<(), CatalogError> {
        let _guard = self.share_buckets();
        // The upload's lock (and the key's): of a Complete and an Abort racing, or two
        // Completes, one ends the upload and the other finds it gone.
        let target = object.map(|(bucket, key, _)| object_key(bucket, key));
        let mut locked = vec![id.as_bytes()];
        locked.extend(target.as_deref());
        let _locks = self.lock_keys(&locked);
        if self.upload(id)?.is_none() {
            return Err(CatalogError::NoSuchUpload(id.to_string()));
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_UPLOADS)?, id);
        for (n, _) in self.parts(id)? {
            batch.delete_cf(self.cf(CF_PARTS)?, part_key(id, n));
        }
        if let (Some((bucket, _, record)), Some(k)) = (object, target) {
            self.require_bucket(bucket)?;
            self.check_condition(&k, cond)?;
            batch.put_cf(self.cf(CF_OBJECTS)?, k, enc(record));
        }
        self.db.write_opt(batch, &Self::wo())?;
        if object.is_some() {
            self.changed();
        }
        Ok(())
    }

    /// Every object of every bucket (for export).
    pub fn all_objects(&self) -> Result<Vec<(String, String, ObjectRecord)>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OBJECTS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let split = k
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| CatalogError::Damaged("object key without bucket".into()))?;
            out.push((
                String::from_utf8_lossy(&k[..split]).into_owned(),
                String::from_utf8_lossy(&k[split + 1..]).into_owned(),
                dec(&v)?,
            ));
        }
        Ok(out)
    }

    /// Stores `(bucket, key, record)`s of several buckets in one atomic batch, creating the
    /// `(bucket, created_ms)`s that are missing: all of it lands, or none (restoring an export:
    /// a restore that fails leaves the catalog as it was).
    pub fn put_objects_in_buckets(
        &self,
        buckets: &[(String, u64)],
        records: &[(String, String, ObjectRecord)],
    ) -> Result<(), CatalogError> {
        let mut batch = WriteBatch::default();
        let (bucket_cf, objects) = (self.cf(CF_BUCKETS)?, self.cf(CF_OBJECTS)?);
        let _guard = self.share_buckets();
        for (bucket, created_ms) in buckets {
            if self.db.get_pinned_cf(bucket_cf, bucket)?.is_none() {
                let record = BucketRecord {
                    created_ms: *created_ms,
                };
                batch.put_cf(bucket_cf, bucket, enc(&record));
            }
        }
        // A key lands only in a bucket that exists or is created here.
        let mut checked: std::collections::BTreeSet<&str> =
            buckets.iter().map(|(b, _)| b.as_str()).collect();
        for (bucket, _, _) in records {
            if checked.insert(bucket) {
                self.require_bucket(bucket)?;
            }
        }
        let keys: Vec<Vec<u8>> = records.iter().map(|(b, k, _)| object_key(b, k)).collect();
        for (k, (_, _, record)) in keys.iter().zip(records) {
            batch.put_cf(objects, k, enc(record));
        }
        let _keys = self.lock_keys(&keys.iter().map(Vec::as_slice).collect::<Vec<_>>());
        self.db.write_opt(batch, &Self::wo())?;
        self.changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multipart upload of `key` in bucket `b`.
    fn upload_of(key: &str) -> UploadRecord {
        UploadRecord {
            bucket: "b".into(),
            key: key.into(),
            created_ms: 1,
            content_type: None,
            metadata: BTreeMap::new(),
            erasure: None,
        }
    }

    fn rec(n: u8) -> ObjectRecord {
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

    #[test]
    fn listing_with_prefix_delimiter_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        let keys = ["a.txt", "dir/1", "dir/2", "dir/sub/3", "dir2/x", "z"];
        for (i, k) in keys.iter().enumerate() {
            c.put_object("b", k, &rec(i as u8)).unwrap();
        }
        c.create_bucket("bb", &BucketRecord { created_ms: 0 })
            .unwrap();
        c.put_object("bb", "not-in-b", &rec(9)).unwrap();
        let all = c.list("b", "", None, None, 1000).unwrap();
        assert_eq!(
            all.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            keys
        );
        let top = c.list("b", "", Some("/"), None, 1000).unwrap();
        assert_eq!(
            top.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["a.txt", "z"]
        );
        assert_eq!(top.prefixes, ["dir/", "dir2/"]);
        let dir = c.list("b", "dir/", Some("/"), None, 1000).unwrap();
        assert_eq!(
            dir.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["dir/1", "dir/2"]
        );
        assert_eq!(dir.prefixes, ["dir/sub/"]);
        // Pages of two, resuming after the last key.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = c.list("b", "", None, after.as_deref(), 2).unwrap();
            seen.extend(page.objects.iter().map(|(k, _)| k.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, keys);
        // Pages with a delimiter never repeat a prefix.
        let p1 = c.list("b", "", Some("/"), None, 2).unwrap();
        assert_eq!((p1.objects.len(), p1.prefixes.len()), (1, 1));
        let p2 = c.list("b", "", Some("/"), p1.next.as_deref(), 10).unwrap();
        assert_eq!(p2.prefixes, ["dir2/"]);
        assert_eq!(
            p2.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["z"]
        );
        assert!(!c.bucket_is_empty("b").unwrap());
    }

    #[test]
    fn uploads_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let up = upload_of("k");
        assert!(matches!(
            c.create_upload("u1", &up),
            Err(CatalogError::NoSuchBucket(_))
        ));
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        c.create_upload("u1", &up).unwrap();
        let part = |n: u32| {
            let mut h =
                cairn_chunker::pieces::PieceHasher::new(u64::from(n - 1) * 5120, 5120).unwrap();
            h.update(&[n as u8; 5120]);
            PartRecord {
                cid: cairn_chunker::cids::dag_cbor(&[n as u8]),
                size: 5120,
                etag: n.to_string(),
                modified_ms: 0,
                hashed_at: (n != 10).then_some(u64::from(n - 1) * 5120),
                nodes: if n != 10 { h.finish().unwrap() } else { vec![] },
            }
        };
        for n in [3u32, 1, 2, 10] {
            c.put_part("u1", n, &part(n)).unwrap();
        }
        let parts = c.parts("u1").unwrap();
        assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 10]);
        for (n, p) in &parts {
            assert_eq!(p, &part(*n), "part records round-trip, tree nodes included");
        }
        // A part recorded before parts carried tree nodes still reads, without them.
        #[derive(serde::Serialize)]
        struct OldPart {
            cid: Cid,
            size: u64,
            etag: String,
            modified_ms: u64,
        }
        let old = OldPart {
            cid: part(4).cid,
            size: 5,
            etag: "e".into(),
            modified_ms: 7,
        };
        let read: PartRecord = dec(&enc(&old)).unwrap();
        assert_eq!((read.size, read.hashed_at, read.nodes.len()), (5, None, 0));
        // An upload recorded before uploads kept their erasure parameters still reads.
        #[derive(serde::Serialize)]
        struct OldUpload {
            bucket: String,
            key: String,
            created_ms: u64,
            content_type: Option<String>,
            metadata: BTreeMap<String, String>,
        }
        let old = OldUpload {
            bucket: "b".into(),
            key: "k".into(),
            created_ms: 1,
            content_type: None,
            metadata: BTreeMap::new(),
        };
        let read: UploadRecord = dec(&enc(&old)).unwrap();
        assert_eq!((read.key.as_str(), read.erasure), ("k", None));
        assert_eq!(c.uploads("b").unwrap().len(), 1);
        assert!(!c.bucket_is_empty("b").unwrap());
        c.finish_upload("u1", Some(("b", "k", &rec(1)))).unwrap();
        assert!(c.parts("u1").unwrap().is_empty());
        assert!(c.upload("u1").unwrap().is_none());
        assert_eq!(c.object("b", "k").unwrap(), Some(rec(1)));
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

    /// A conditional write checks its condition and writes as one step: of writers racing on
    /// one key, each of which saw it absent (or at one ETag), exactly one lands.
    #[test]
    fn racing_conditional_writes_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Catalog::open(dir.path()).unwrap());
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        let absent = WriteCondition {
            absent: true,
            ..Default::default()
        };
        let is = |e: &str| WriteCondition {
            if_match: Some(ETagMatch::Strong(e.into())),
            ..Default::default()
        };
        for trial in 0..50u8 {
            let key = format!("k{trial}");
            let race = |cond: WriteCondition, base: u8| {
                let start = std::sync::Arc::new(std::sync::Barrier::new(8));
                let writers: Vec<_> = (0..8u8)
                    .map(|i| {
                        let (c, k, cond, start) =
                            (c.clone(), key.clone(), cond.clone(), start.clone());
                        std::thread::spawn(move || {
                            start.wait();
                            match c.put_object_if("b", &k, &rec(base + i), &cond) {
                                Ok(()) => Some(base + i),
                                Err(CatalogError::PreconditionFailed(_)) => None,
                                Err(e) => panic!("{e}"),
                            }
                        })
                    })
                    .collect();
                let won: Vec<u8> = writers
                    .into_iter()
                    .filter_map(|w| w.join().unwrap())
                    .collect();
                assert_eq!(won.len(), 1, "trial {trial}: {won:?}");
                assert_eq!(c.object("b", &key).unwrap(), Some(rec(won[0])));
                won[0]
            };
            let first = race(absent.clone(), 0);
            race(is(&first.to_string()), 100);
        }
        // Conditions on their own.
        c.put_object("b", "x", &rec(1)).unwrap();
        let any = WriteCondition {
            if_match: Some(ETagMatch::Any),
            ..Default::default()
        };
        let weak = WriteCondition {
            if_match: Some(ETagMatch::Weak),
            ..Default::default()
        };
        let failed = |r| matches!(r, Err(CatalogError::PreconditionFailed(_)));
        assert!(failed(c.put_object_if("b", "x", &rec(2), &absent)));
        assert!(failed(c.put_object_if("b", "x", &rec(2), &is("2"))));
        assert!(failed(c.put_object_if("b", "x", &rec(2), &weak)));
        assert!(failed(c.put_object_if("b", "none", &rec(2), &any)));
        assert_eq!(
            c.object("b", "x").unwrap(),
            Some(rec(1)),
            "refused writes change nothing"
        );
        c.put_object_if("b", "x", &rec(2), &any).unwrap();
        c.put_object_if("b", "x", &rec(3), &is("2")).unwrap();
        assert!(failed(c.put_object_if(
            "b",
            "x",
            &rec(4),
            &WriteCondition {
                absent: true,
                if_match: Some(ETagMatch::Any),
            }
        )));
        // A refused Complete leaves its upload open.
        let up = upload_of("x");
        c.create_upload("u", &up).unwrap();
        assert!(failed(c.finish_upload_if(
            "u",
            Some(("b", "x", &rec(5))),
            &absent
        )));
        assert!(c.upload("u").unwrap().is_some());
        assert_eq!(c.object("b", "x").unwrap(), Some(rec(3)));
        c.finish_upload_if("u", Some(("b", "x", &rec(5))), &is("3"))
            .unwrap();
        assert!(c.upload("u").unwrap().is_none());
        assert_eq!(c.object("b", "x").unwrap(), Some(rec(5)));
    }

    /// An upload ended by one request (Complete or Abort) is gone for every other: a Complete
    /// racing an Abort does not create the object after the Abort answered, and a part that
    /// finishes late is not left behind.
    #[test]
    fn an_ended_upload_takes_no_more_parts_and_cannot_end_twice() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        let up = upload_of("k");
        let part = PartRecord {
            cid: cairn_chunker::cids::dag_cbor(b"p"),
            size: 5,
            etag: "e".into(),
            modified_ms: 0,
            hashed_at: None,
            nodes: vec![],
        };
        c.create_upload("u", &up).unwrap();
        c.put_part("u", 1, &part).unwrap();
        // Aborted.
        c.finish_upload("u", None).unwrap();
        let gone = |r| matches!(r, Err(CatalogError::NoSuchUpload(_)));
        assert!(gone(c.put_part("u", 2, &part)));
        assert!(gone(c.finish_upload("u", Some(("b", "k", &rec(1))))));
        assert!(gone(c.finish_upload("u", None)));
        assert_eq!(c.object("b", "k").unwrap(), None);
        assert!(c.parts("u").unwrap().is_empty());
        // Completed once, then not again.
        c.create_upload("v", &up).unwrap();
        c.finish_upload("v", Some(("b", "k", &rec(2)))).unwrap();
        assert!(gone(c.finish_upload("v", Some(("b", "k", &rec(3))))));
        assert_eq!(c.object("b", "k").unwrap(), Some(rec(2)));
    }

    #[test]
    fn keys_land_only_in_live_buckets_and_changes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let g0 = c.generation();
        assert!(matches!(
            c.put_object("gone", "k", &rec(1)),
            Err(CatalogError::NoSuchBucket(_))
        ));
        assert!(matches!(
            c.delete_bucket("gone"),
            Err(CatalogError::NoSuchBucket(_))
        ));
        assert_eq!(c.generation(), g0, "failed writes change nothing");
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        c.put_object("b", "k", &rec(1)).unwrap();
        assert!(matches!(
            c.delete_bucket("b"),
            Err(CatalogError::BucketNotEmpty(_))
        ));
        let g1 = c.generation();
        assert!(g1 > g0);
        assert!(c.delete_object("b", "k").unwrap());
        assert!(!c.delete_object("b", "k").unwrap());
        let g2 = c.generation();
        assert_eq!(g2, g1 + 1, "only a real delete counts");
        c.delete_bucket("b").unwrap();
        assert!(c.generation() > g2);
        // A PUT that checked the bucket before it was deleted cannot land the key now.
        assert!(matches!(
            c.put_object("b", "late", &rec(2)),
            Err(CatalogError::NoSuchBucket(_))
        ));
        assert!(c.object("b", "late").unwrap().is_none());
    }
}
