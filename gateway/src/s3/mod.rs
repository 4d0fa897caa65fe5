//! The S3 API over Cairn: `s3s` does routing, XML and SigV4; this module maps each operation
//! onto the catalog and the network. The gateway's state and the [`S3`] trait impl are here;
//! the impl only dispatches, and each operation's code lives with its concern:
//!
//! - `buckets`: bucket names, and the bucket operations.
//! - `headers`: what a request's key, version and headers may hold; the metadata reads answer.
//! - `body`: storing a request body (its limits, stalls, and refusing one unread).
//! - `checksum`: Content-MD5, declared checksums (headers or trailers), hashing whole objects.
//! - `conditions`: conditional requests (`If-Match`, `If-None-Match`, dates), reads and writes.
//! - `read`: GetObject and HeadObject: ranges, and streaming verified bytes with read-ahead.
//! - `write`: PutObject, CopyObject, DeleteObject and DeleteObjects.
//! - `listing`: ListObjects and ListObjectsV2: pages, prefixes, delimiters, URL encoding.
//! - `multipart`: multipart uploads, and Complete's manifest and BLAKE3 from the parts.

mod body;
mod buckets;
mod checksum;
mod conditions;
mod headers;
mod listing;
mod manifest_cache;
mod multipart;
mod read;
mod release;
mod uploads;
mod write;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_chunker::Cid;
use cairn_chunker::manifest::{ObjectManifest, hex};
use cairn_client::cache::ShardCache;
use cairn_client::get::{Manifest, fetch_manifest};
use cairn_client::network::Network;
use cairn_client::put::PutOptions;
use ed25519_dalek::SigningKey;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::catalog::{Catalog, ObjectRecord};
use crate::error::Error;
use crate::metrics::GatewayMetrics;
use cairn_policy::readahead::ReadAhead;

pub use buckets::check_bucket_name;
pub use headers::MAX_USER_METADATA;
pub(crate) use headers::{check_key, check_object_headers};
pub use release::{Swept, release_pause};

/// Largest single PUT (as S3).
pub const MAX_PUT: u64 = 5 << 30;
/// Smallest part but the last (as S3).
pub const MIN_PART: u64 = 5 << 20;
/// Most parts in an upload (as S3).
pub const MAX_PARTS: i32 = 10_000;
/// Manifests kept decoded in memory: at least this many of the most recently used (at most
/// twice as many).
const MANIFEST_CACHE: usize = 16_384;
/// What the manifests of one cache generation may weigh (inline objects carry their bytes):
/// at most twice this is held.
const MANIFEST_CACHE_BYTES: usize = 64 << 20;
/// Read-ahead fetches running at once (each fetches up to a stripe's worth of shards in parallel).
const READAHEAD_TASKS: usize = 2;

/// The last catalog export this gateway made or restored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportStatus {
    /// CID of the signed dataset manifest.
    pub cid: String,
    /// When (ms since the epoch).
    pub time_ms: u64,
    /// Keys it holds.
    pub objects: usize,
    /// The catalog generation it captured.
    pub generation: u64,
}

/// How reads use memory.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    /// Shard cache bound (0: no cache).
    pub cache_bytes: u64,
    /// Read-ahead window per sequential reader (0: off).
    pub readahead_bytes: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The last millisecond of year 9999: the latest time S3 dates (and `time`) can carry.
const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

/// A time in ms since the epoch as S3 dates it; times past year 9999 (a bad `modified-ms` in
/// imported metadata) are clamped there instead of overflowing.
fn timestamp(ms: u64) -> Timestamp {
    let nanos = i128::from(ms.min(MAX_TIMESTAMP_MS)) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_or_else(|_| Timestamp::from(UNIX_EPOCH), Timestamp::from)
}

/// The gateway: S3 operations over the catalog and the network. Clones share all state.
#[derive(Clone)]
pub struct Gateway {
    net: Arc<tokio::sync::RwLock<Arc<Network>>>,
    catalog: Arc<Catalog>,
    key: SigningKey,
    opts: PutOptions,
    manifests: Arc<Mutex<manifest_cache::Generations<Cid, Arc<ObjectManifest>>>>,
    /// Smallest part but the last ([`MIN_PART`] unless configured).
    min_part: u64,
    metrics: Arc<GatewayMetrics>,
    cache: Arc<ShardCache>,
    readahead: Arc<Mutex<ReadAhead>>,
    readahead_tasks: Arc<tokio::sync::Semaphore>,
    last_export: Arc<Mutex<Option<ExportStatus>>>,
    leases: Arc<crate::leases::Leases>,
    /// Where writes queue the CIDs their renewal is due for ([`Gateway::renew_soon`]); the
    /// task behind it starts with the first write.
    renewals: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Vec<Cid>>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// Runs blocking catalog work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("catalog task: {e}")))?
}

impl Gateway {
    /// A gateway over `net`, keeping its catalog in `catalog` and signing with `key`.
    pub fn new(
        net: Network,
        catalog: Arc<Catalog>,
        key: SigningKey,
        opts: PutOptions,
        metrics: Arc<GatewayMetrics>,
        reads: ReadSettings,
    ) -> Self {
        let cache = ShardCache::new(reads.cache_bytes);
        let window = if reads.cache_bytes > 0 {
            reads.readahead_bytes
        } else {
            0
        };
        Self {
            net: Arc::new(tokio::sync::RwLock::new(Arc::new(
                net.with_cache(cache.clone()),
            ))),
            catalog,
            key,
            opts,
            manifests: Arc::new(Mutex::new(manifest_cache::Generations::new(
                MANIFEST_CACHE,
                MANIFEST_CACHE_BYTES,
            ))),
            min_part: MIN_PART,
            metrics,
            cache,
            readahead: Arc::new(Mutex::new(ReadAhead::new(window))),
            readahead_tasks: Arc::new(tokio::sync::Semaphore::new(READAHEAD_TASKS)),
            last_export: Arc::new(Mutex::new(None)),
            leases: Arc::new(crate::leases::Leases::new(
                crate::leases::LeaseSettings::OFF,
            )),
            renewals: Arc::default(),
        }
    }

    /// Takes multipart parts (but the last) from `bytes` up, instead of [`MIN_PART`].
    pub fn with_min_part(mut self, bytes: u64) -> Self {
        self.min_part = bytes;
        self
    }

    /// This gateway taking leases under `settings` (a new gateway takes none).
    pub fn with_leases(mut self, settings: crate::leases::LeaseSettings) -> Self {
        self.leases = Arc::new(crate::leases::Leases::new(settings));
        // The renewal task renews against the leases it started with.
        self.renewals = Arc::default();
        self
    }

    /// The gateway's lease bookkeeping.
    pub fn leases(&self) -> &Arc<crate::leases::Leases> {
        &self.leases
    }

    /// Every CID the catalog references, and the remembered exports: what the renewal loop
    /// keeps leased.
    pub async fn referenced(&self) -> Result<Vec<Cid>, Error> {
        let c = self.catalog.clone();
        let mut cids = blocking(move || Ok(c.referenced_cids()?)).await?;
        cids.extend(self.leases.export_cids());
        Ok(cids)
    }

    /// Renews the leases on `cids` that are due (all of them if `force`); how many it renewed.
    /// `read_at_ms`: when the catalog was read for them (see [`crate::leases::Leases::renew`]).
    pub async fn renew_leases(
        &self,
        cids: Vec<Cid>,
        force: bool,
        read_at_ms: Option<u64>,
    ) -> usize {
        let net = self.net().await;
        self.leases
            .renew(&net, &self.key, &self.metrics, cids, force, read_at_ms)
            .await
    }

    /// Makes sure the newest catalog export is known after a restart (it is leased with the
    /// catalog, and its pieces may be shared with older exports): `false` if it could not be
    /// looked up.
    pub async fn know_latest_export(&self) -> bool {
        if self.leases.knows_an_export() {
            return true;
        }
        match self.latest_export_cids().await {
            Ok(Some(cids)) => {
                self.leases.note_export(cids);
                true
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!("looking for the last catalog export to lease: {e}");
                false
            }
        }
    }

    /// Renews `cids` in the background (after a write: the S3 answer never waits for it; a
    /// failure is logged, counted, and left to the renewal loop). Writes that come together
    /// are renewed together: one lease request per keeper for many objects, not one each.
    pub(crate) fn renew_soon(&self, cids: Vec<Cid>) {
        if !self.leases.settings().enabled() || cids.is_empty() {
            return;
        }
        self.leases.renewing_after_write(&cids);
        let tx = self.renewals.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(RENEWALS_QUEUED);
            tokio::spawn(renew_written(
                rx,
                self.net.clone(),
                self.leases.clone(),
                self.key.clone(),
                self.metrics.clone(),
            ));
            tx
        });
        match tx.try_send(cids) {
            Ok(()) => {}
            // More writes queued than batches drain: this one renews on its own.
            Err(tokio::sync::mpsc::error::TrySendError::Full(cids)) => {
                let gw = self.clone();
                tokio::spawn(async move {
                    gw.renew_leases(cids.clone(), true, None).await;
                    gw.leases.renewed_after_write(&cids);
                });
            }
            // The task is gone (the runtime is shutting down): nothing is renewed.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(cids)) => {
                self.leases.renewed_after_write(&cids);
            }
        }
    }

    /// The last catalog export made (or restored) by this process.
    pub fn last_export(&self) -> Option<ExportStatus> {
        self.last_export.lock().ok().and_then(|e| e.clone())
    }

    /// Records a catalog export.
    pub fn note_export(&self, status: ExportStatus) {
        if let Ok(mut e) = self.last_export.lock() {
            *e = Some(status);
        }
    }

    /// The shard cache.
    pub fn cache(&self) -> &Arc<ShardCache> {
        &self.cache
    }

    /// The current view of the network.
    pub async fn net(&self) -> Arc<Network> {
        self.net.read().await.clone()
    }

    /// Replaces the view of the network (nodes joined or left); the shard cache carries over.
    pub async fn set_net(&self, net: Network) {
        *self.net.write().await = Arc::new(net.with_cache(self.cache.clone()));
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The key manifests are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Upload options.
    pub fn options(&self) -> &PutOptions {
        &self.opts
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.metrics
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<(), Error> {
        let (c, b) = (self.catalog.clone(), bucket.to_string());
        let found = blocking(move || Ok(c.bucket(&b)?)).await?;
        found
            .map(|_| ())
            .ok_or_else(|| Error::NoSuchBucket(bucket.to_string()))
    }

    async fn record(&self, bucket: &str, key: &str) -> Result<ObjectRecord, Error> {
        let (c, b, k) = (self.catalog.clone(), bucket.to_string(), key.to_string());
        match blocking(move || Ok(c.object(&b, &k)?)).await? {
            Some(r) => Ok(r),
            None => {
                self.bucket_exists(bucket).await?;
                Err(Error::NoSuchKey {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
            }
        }
    }

    /// A verified, decoded object manifest (cached).
    pub async fn manifest(&self, cid: &Cid) -> Result<Arc<ObjectManifest>, Error> {
        if let Some(m) = self.manifests.lock().ok().and_then(|mut c| c.get(cid)) {
            return Ok(m);
        }
        let net = self.net().await;
        let fetched = fetch_manifest(&net, cid).await?;
        for (peer, what) in &fetched.incidents {
            tracing::warn!(%peer, "read problem: {what}");
        }
        let Manifest::Object(m) = fetched.manifest else {
            return Err(Error::Internal(format!(
                "{cid} is a dataset where an object was expected"
            )));
        };
        let m = Arc::new(m);
        self.remember_manifest(*cid, m.clone());
        Ok(m)
    }

    fn remember_manifest(&self, cid: Cid, m: Arc<ObjectManifest>) {
        let weight = manifest_weight(&m);
        if let Ok(mut cache) = self.manifests.lock() {
            cache.insert(cid, m, weight);
        }
    }

    fn signer(&self) -> String {
        hex(&self.key.verifying_key().to_bytes())
    }
}

/// Renewal batches running at once.
const RENEWALS_AT_ONCE: usize = 4;
/// Most CIDs in one renewal batch.
const RENEWAL_BATCH: usize = 1000;
/// Writes queued for a renewal batch at most; past it a write renews on its own.
const RENEWALS_QUEUED: usize = 16_384;

/// Renews what writes queue, as batches: whatever queued while the batches before were
/// running goes out together. Ends when every sender (every clone of the gateway) is gone.
async fn renew_written(
    mut rx: tokio::sync::mpsc::Receiver<Vec<Cid>>,
    net: Arc<tokio::sync::RwLock<Arc<Network>>>,
    leases: Arc<crate::leases::Leases>,
    key: SigningKey,
    metrics: Arc<GatewayMetrics>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(RENEWALS_AT_ONCE));
    while let Some(mut cids) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while cids.len() < RENEWAL_BATCH {
            match rx.try_recv() {
                Ok(more) => cids.extend(more),
                Err(_) => break,
            }
        }
        let (net, leases, key, metrics) =
            (net.clone(), leases.clone(), key.clone(), metrics.clone());
        tokio::spawn(async move {
            // Over when this task is, however it ends (a panic in a renewal too): a CID left
            // marked as being renewed would never be released.
            let renewing = Renewing { leases, cids };
            let view = net.read().await.clone();
            renewing
                .leases
                .renew(&view, &key, &metrics, renewing.cids.clone(), true, None)
                .await;
            drop(slot);
        });
    }
}

/// A batch of write renewals under way: [`crate::leases::Leases::renewed_after_write`] when
/// dropped.
struct Renewing {
    leases: Arc<crate::leases::Leases>,
    cids: Vec<Cid>,
}

impl Drop for Renewing {
    fn drop(&mut self) {
        self.leases.renewed_after_write(&self.cids);
    }
}

/// Roughly what a decoded manifest holds in memory: its inline bytes, its shard references and
/// its metadata.
fn manifest_weight(m: &ObjectManifest) -> usize {
    let shards: usize = m
        .stripes
        .iter()
        .map(|s| 64 + 64 * (s.data.len() + s.parity.len()))
        .sum();
    let meta: usize = m.metadata.iter().map(|(k, v)| 48 + k.len() + v.len()).sum();
    256 + m.inline.as_ref().map_or(0, Vec::len)
        + shards
        + meta
        + m.content_type.as_ref().map_or(0, String::len)
}

// Each operation is `handle_<operation>` in the file of its concern (see the module docs).
#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.handle_list_buckets(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.handle_create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.handle_head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.handle_get_bucket_location(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.handle_delete_bucket(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.handle_put_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.handle_head_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.handle_get_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.handle_delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.handle_delete_objects(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.handle_copy_object(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.handle_list_objects_v2(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.handle_list_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.handle_create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.handle_upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.handle_upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.handle_list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.handle_list_multipart_uploads(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.handle_abort_multipart_upload(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.handle_complete_multipart_upload(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_past_year_9999_are_clamped() {
        let t: time::OffsetDateTime = timestamp(u64::MAX).into();
        assert_eq!(t.year(), 9999);
        let t: time::OffsetDateTime = timestamp(253_402_300_800_000).into();
        assert_eq!(t.year(), 9999);
        let t: time::OffsetDateTime = timestamp(1_700_000_000_123).into();
        assert_eq!(t.unix_timestamp_nanos(), 1_700_000_000_123_000_000);
    }
}
