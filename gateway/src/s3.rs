//! The S3 API over Cairn: `s3s` does routing, XML and SigV4; this file maps each operation
//! onto the catalog and the network.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_chunker::manifest::{ErasureParams, ObjectManifest, Stripe, hex};
use cairn_chunker::pieces::{PieceHasher, Subtree, combine};
use cairn_chunker::{Cid, cids};
use cairn_client::cache::ShardCache;
use cairn_client::error::ClientError;
use cairn_client::get::{
    Incidents, Manifest, Sink, fetch_manifest, prefetch, read_object, read_object_to,
};
use cairn_client::network::Network;
use cairn_client::put::{Input, PutOptions, publish_manifest, put_object};
use cairn_node::protocol::ManifestKind;
use ed25519_dalek::SigningKey;
use futures::{Stream, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::io::AsyncWrite;

use crate::catalog::{
    BucketRecord, Catalog, ETagMatch, Location, ObjectRecord, PartRecord, UploadRecord,
    WriteCondition,
};
use crate::error::Error;
use crate::metrics::GatewayMetrics;
use crate::readahead::ReadAhead;
use crate::stall::{BODY_STALL_TIMEOUT, limit_body};

/// Largest single PUT (as S3).
pub const MAX_PUT: u64 = 5 << 30;
/// Smallest part but the last (as S3).
pub const MIN_PART: u64 = 5 << 20;
/// Most parts in an upload (as S3).
pub const MAX_PARTS: i32 = 10_000;
/// Manifests kept decoded in memory.
const MANIFEST_CACHE: usize = 4096;
/// Verified pieces (16 KiB to a shard each) queued between the network reader and an HTTP
/// response; the reader waits when the client is slower.
const BODY_QUEUE: usize = 64;
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

fn ms_of(t: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

/// S3 bucket naming rules.
pub fn check_bucket_name(name: &str) -> Result<(), Error> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidBucketName(name.to_string()))
    }
}

/// Most of a refused request's body the gateway reads (and drops) so that its client, which is
/// sending it, gets to read the answer.
const DRAIN_LIMIT: u64 = 256 << 20;

/// Where a body to store comes from.
#[derive(Debug, Clone, Copy)]
enum BodyFrom {
    /// An S3 client's request.
    Client {
        /// It sent `Expect: 100-continue`: it sends the body only once asked to, which reading
        /// it does.
        expects_continue: bool,
    },
    /// The network (UploadPartCopy's source), which has its own limits.
    Network,
}

impl BodyFrom {
    fn client(headers: &http::HeaderMap) -> Self {
        let expects_continue = headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        BodyFrom::Client { expects_continue }
    }
}

/// Reads and drops up to `limit` bytes of `body` (it ends early on the body's own end, an error,
/// or a stall).
async fn drain<E>(body: impl futures::Stream<Item = Result<bytes::Bytes, E>>, limit: u64) {
    let mut body = std::pin::pin!(body);
    let mut taken = 0u64;
    while taken < limit {
        match futures::StreamExt::next(&mut body).await {
            Some(Ok(chunk)) => taken += chunk.len() as u64,
            _ => break,
        }
    }
}

/// Answers `e` for a request refused before its body was read. A client that sent
/// `Expect: 100-continue` sends no body; one that did not is sending it anyway, and answered and
/// cut off mid-body it would see a reset connection instead of the answer: a body it declared
/// to be at most [`DRAIN_LIMIT`] is taken and dropped first. A larger one is not waited for (the
/// connection closes after the answer, as it must).
async fn refuse_unread(
    e: Error,
    body: Option<StreamingBlob>,
    declared_len: Option<i64>,
    from: BodyFrom,
) -> Error {
    let small = declared_len.is_some_and(|n| (0..=DRAIN_LIMIT as i64).contains(&n));
    if let (
        Some(body),
        true,
        BodyFrom::Client {
            expects_continue: false,
        },
    ) = (body, small, from)
    {
        // A client that stops sending is not waited for longer than one that stalls mid-PUT.
        let stalled = Arc::new(AtomicBool::new(false));
        drain(limit_body(body, BODY_STALL_TIMEOUT, stalled), DRAIN_LIMIT).await;
    }
    e
}

/// Keys S3 takes: 1 to 1024 bytes, and only characters XML 1.0 can carry (no control
/// character but tab, LF and CR), so that every listing that holds them can be read.
fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 1024 || key.chars().any(xml_unsafe) {
        return Err(Error::InvalidArgument(format!(
            "invalid object key {key:?}: 1..=1024 bytes, and no control character but tab, \
             LF and CR (XML cannot carry them in listings)"
        )));
    }
    Ok(())
}

/// Most user metadata (`x-amz-meta-*` keys and values, in bytes) a write may carry: S3's limit.
pub const MAX_USER_METADATA: usize = 2 << 10;

/// The limits on what a write carries in its headers, checked before its body is read: user
/// metadata (S3's 2 KiB, `MetadataTooLarge`) and the content type (what a manifest holds). Every
/// path that writes them (PutObject, CopyObject with `REPLACE`, CreateMultipartUpload) checks
/// them, so nothing a client sends can make a record the catalog's export then refuses.
fn check_object_headers(
    content_type: Option<&str>,
    metadata: Option<&Metadata>,
) -> Result<(), Error> {
    let size: usize = metadata
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > MAX_USER_METADATA {
        return Err(Error::MetadataTooLarge {
            size,
            max: MAX_USER_METADATA,
        });
    }
    if let Some(ct) = content_type
        && ct.len() > cairn_chunker::manifest::MAX_CONTENT_TYPE
    {
        return Err(Error::InvalidArgument(format!(
            "Content-Type is {} bytes, over the {}-byte limit",
            ct.len(),
            cairn_chunker::manifest::MAX_CONTENT_TYPE
        )));
    }
    Ok(())
}

/// This gateway keeps one version of each key, the one S3 calls `null`: a request for any other
/// version is refused as S3 refuses it on a bucket without versioning.
fn no_versions(version_id: Option<&str>) -> Result<(), Error> {
    match version_id {
        None | Some("null") => Ok(()),
        Some(v) => Err(Error::NoSuchVersion(v.to_string())),
    }
}

/// Characters XML 1.0 cannot carry (most C0 controls, U+FFFE, U+FFFF): a key holding one can
/// be neither stored nor echoed in an XML answer.
fn xml_unsafe(c: char) -> bool {
    matches!(
        c,
        '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'
    )
}

/// The gateway: S3 operations over the catalog and the network. Clones share all state.
#[derive(Clone)]
pub struct Gateway {
    net: Arc<tokio::sync::RwLock<Arc<Network>>>,
    catalog: Arc<Catalog>,
    key: SigningKey,
    opts: PutOptions,
    manifests: Arc<Mutex<HashMap<Cid, Arc<ObjectManifest>>>>,
    metrics: Arc<GatewayMetrics>,
    cache: Arc<ShardCache>,
    readahead: Arc<Mutex<ReadAhead>>,
    readahead_tasks: Arc<tokio::sync::Semaphore>,
    last_export: Arc<Mutex<Option<ExportStatus>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// Bodies up to this size are gathered in memory and encoded there (see `store_body`).
const SMALL_BODY: usize = 1 << 20;

/// What storing a request body produced.
struct Stored {
    cid: Cid,
    size: u64,
    md5: String,
    checksum: Checksum,
    blake3: blake3::Hash,
    /// For a part: the offset it was hashed at and its BLAKE3 tree nodes there.
    nodes: Option<(u64, Vec<Subtree>)>,
}

/// Runs blocking catalog work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("catalog task: {e}")))?
}

/// A body stream with an exact length, as HTTP needs for Content-Length. One whose source ends
/// before that length ends with an [`std::io::ErrorKind::UnexpectedEof`] error, so that no
/// reader (an HTTP response, or UploadPartCopy storing it) takes it for the whole body.
struct Sized<S> {
    inner: S,
    remaining: usize,
    ended: bool,
}

impl<S> Sized<S> {
    fn new(inner: S, len: usize) -> Self {
        Sized {
            inner,
            remaining: len,
            ended: false,
        }
    }
}

impl<S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin> Stream for Sized<S> {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len());
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.ended = true;
                if self.remaining == 0 {
                    return Poll::Ready(None);
                }
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the body ended {} bytes short", self.remaining),
                );
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin> ByteStream for Sized<S> {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(self.remaining)
    }
}

/// Where an object read sends a body's bytes, ahead of the read's error if it fails.
struct BodySender(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Sink for BodySender {
    async fn put(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.0
            .send(Ok(bytes))
            .await
            .map_err(|_| ClientError::Write {
                to: cairn_client::error::Output::Stream("a response body"),
                source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away"),
            })
    }
}

/// An `AsyncWrite` that only hashes (to compute a whole object's BLAKE3 from its parts).
struct HashSink<H>(H);

/// Something [`HashSink`] feeds: a whole-object hasher, or one for a piece at its offset.
trait Absorb {
    fn absorb(&mut self, bytes: &[u8]);
}

impl Absorb for blake3::Hasher {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Absorb for PieceHasher {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl<H: Absorb + Unpin> AsyncWrite for HashSink<H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.absorb(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn checksum_map(c: &Checksum) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (name, v) in [
        ("crc32", &c.checksum_crc32),
        ("crc32c", &c.checksum_crc32c),
        ("crc64nvme", &c.checksum_crc64nvme),
        ("sha1", &c.checksum_sha1),
        ("sha256", &c.checksum_sha256),
    ] {
        if let Some(v) = v {
            m.insert(name.to_string(), v.clone());
        }
    }
    m
}

/// The checksums a request declares (headers, or the algorithm whose value comes in trailers).
struct Declared {
    hasher: s3s::checksum::ChecksumHasher,
    expected: Checksum,
}

fn declared(
    algorithm: Option<&ChecksumAlgorithm>,
    crc32: Option<String>,
    crc32c: Option<String>,
    crc64nvme: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
) -> Result<Declared, Error> {
    let mut hasher = s3s::checksum::ChecksumHasher::default();
    let expected = Checksum {
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        ..Default::default()
    };
    if expected.checksum_crc32.is_some() {
        hasher.crc32 = Some(Default::default());
    }
    if expected.checksum_crc32c.is_some() {
        hasher.crc32c = Some(Default::default());
    }
    if expected.checksum_crc64nvme.is_some() {
        hasher.crc64nvme = Some(Default::default());
    }
    if expected.checksum_sha1.is_some() {
        hasher.sha1 = Some(Default::default());
    }
    if expected.checksum_sha256.is_some() {
        hasher.sha256 = Some(Default::default());
    }
    if let Some(alg) = algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => hasher.crc64nvme = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unsupported checksum algorithm {other}"
                )));
            }
        }
    }
    Ok(Declared { hasher, expected })
}

/// Takes checksum values that arrived as trailers (aws-chunked uploads).
fn trailer_checksums(
    trailers: Option<s3s::TrailingHeaders>,
    expected: &mut Checksum,
) -> Result<(), Error> {
    let Some(trailers) = trailers.and_then(|t| t.take()) else {
        return Ok(());
    };
    let get = |name: &str| -> Result<Option<String>, Error> {
        trailers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| Error::InvalidArgument(format!("bad {name} trailer")))
            })
            .transpose()
    };
    if let Some(v) = get("x-amz-checksum-crc32")? {
        expected.checksum_crc32 = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-crc32c")? {
        expected.checksum_crc32c = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-crc64nvme")? {
        expected.checksum_crc64nvme = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-sha1")? {
        expected.checksum_sha1 = Some(v);
    }
    if let Some(v) = get("x-amz-checksum-sha256")? {
        expected.checksum_sha256 = Some(v);
    }
    Ok(())
}

/// Compares what was computed with what the client declared.
fn check_checksums(computed: &Checksum, expected: &Checksum) -> Result<(), Error> {
    for (name, c, e) in [
        ("CRC32", &computed.checksum_crc32, &expected.checksum_crc32),
        (
            "CRC32C",
            &computed.checksum_crc32c,
            &expected.checksum_crc32c,
        ),
        (
            "CRC64NVME",
            &computed.checksum_crc64nvme,
            &expected.checksum_crc64nvme,
        ),
        ("SHA1", &computed.checksum_sha1, &expected.checksum_sha1),
        (
            "SHA256",
            &computed.checksum_sha256,
            &expected.checksum_sha256,
        ),
    ] {
        if let Some(e) = e
            && c.as_ref() != Some(e)
        {
            return Err(Error::BadDigest(format!(
                "the {name} you specified ({e}) did not match what we received ({})",
                c.as_deref().unwrap_or("none")
            )));
        }
    }
    Ok(())
}

fn check_md5(content_md5: Option<&String>, md5_hex: &str) -> Result<(), Error> {
    let Some(b64) = content_md5 else {
        return Ok(());
    };
    let raw = base64_simd::STANDARD
        .decode_to_vec(b64)
        .map_err(|_| Error::InvalidArgument("Content-MD5 is not base64".into()))?;
    if hex(&raw) != md5_hex {
        return Err(Error::BadDigest(
            "the Content-MD5 you specified did not match what we received".into(),
        ));
    }
    Ok(())
}

/// Conditional request checks (RFC 9110 order).
fn preconditions(
    r: &ObjectRecord,
    if_match: Option<&IfMatch>,
    if_none_match: Option<&IfNoneMatch>,
    if_modified_since: Option<&IfModifiedSince>,
    if_unmodified_since: Option<&IfUnmodifiedSince>,
) -> Result<(), Error> {
    let etag = ETag::Strong(r.etag.clone());
    if let Some(cond) = if_match {
        let ok = cond.is_any() || cond.as_etag().is_some_and(|e| e.strong_cmp(&etag));
        if !ok {
            return Err(Error::PreconditionFailed(
                "If-Match does not match the ETag".into(),
            ));
        }
    } else if let Some(t) = if_unmodified_since
        && r.modified_ms / 1000 > ms_of(t) / 1000
    {
        return Err(Error::PreconditionFailed(
            "modified since If-Unmodified-Since".into(),
        ));
    }
    if let Some(cond) = if_none_match {
        let hit = cond.is_any() || cond.as_etag().is_some_and(|e| e.weak_cmp(&etag));
        if hit {
            return Err(Error::NotModified);
        }
    } else if let Some(t) = if_modified_since
        && r.modified_ms / 1000 <= ms_of(t) / 1000
    {
        return Err(Error::NotModified);
    }
    Ok(())
}

/// What a conditional write (`If-None-Match: *`, `If-Match`) asks of the key it writes. An
/// `If-None-Match` with an ETag asks nothing of a write.
fn write_condition(
    if_match: Option<&IfMatch>,
    if_none_match: Option<&IfNoneMatch>,
) -> WriteCondition {
    WriteCondition {
        absent: if_none_match.is_some_and(ETagCondition::is_any),
        if_match: if_match.map(|c| match c.as_etag() {
            None => ETagMatch::Any,
            Some(ETag::Strong(e)) => ETagMatch::Strong(e.clone()),
            Some(ETag::Weak(_)) => ETagMatch::Weak,
        }),
    }
}

fn metadata_out(r: &ObjectRecord) -> Metadata {
    let mut m: Metadata = r
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match &r.location {
        Location::Object(c) => {
            m.insert("cairn-cid".into(), c.to_string());
        }
        Location::Slice { object, offset } => {
            m.insert("cairn-cid".into(), object.to_string());
            m.insert("cairn-offset".into(), offset.to_string());
        }
        Location::Inline(bytes) => {
            m.insert("cairn-cid".into(), cids::raw(bytes).to_string());
        }
    }
    m.insert("cairn-signer".into(), r.signer.clone());
    if !r.blake3.is_empty() {
        m.insert("cairn-blake3".into(), r.blake3.clone());
    }
    m
}

fn metadata_in(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("cairn-"))
        .collect()
}

/// What a GET or HEAD answers about a record: the bytes it covers and the stored checksums (only
/// for the whole object: they describe all of it).
struct Reply<'a> {
    range: Option<Range<u64>>,
    len: u64,
    content_range: Option<String>,
    checksums: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Reply<'a> {
    fn new(r: &'a ObjectRecord, range: Option<&s3s::dto::Range>) -> Result<Self, Error> {
        // The only empty range a satisfiable request resolves to is a suffix (`bytes=-n`) of
        // an empty object: it is all of the object, answered 200 as S3 does (there is no
        // `bytes a-b/0` to say).
        let range = byte_range(range, r.size)?.filter(|x| !x.is_empty());
        Ok(match &range {
            None => Reply {
                len: r.size,
                content_range: None,
                checksums: Some(&r.checksums),
                range,
            },
            Some(x) => Reply {
                len: x.end - x.start,
                content_range: Some(format!("bytes {}-{}/{}", x.start, x.end - 1, r.size)),
                checksums: None,
                range,
            },
        })
    }

    fn sum(&self, name: &str) -> Option<String> {
        self.checksums.and_then(|c| c.get(name).cloned())
    }
}

fn byte_range(range: Option<&s3s::dto::Range>, size: u64) -> Result<Option<Range<u64>>, Error> {
    match range {
        None => Ok(None),
        Some(r) => r
            .check(size)
            .map(Some)
            .map_err(|_| Error::InvalidRange(size)),
    }
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
            manifests: Arc::new(Mutex::new(HashMap::new())),
            metrics,
            cache,
            readahead: Arc::new(Mutex::new(ReadAhead::new(window))),
            readahead_tasks: Arc::new(tokio::sync::Semaphore::new(READAHEAD_TASKS)),
            last_export: Arc::new(Mutex::new(None)),
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
        if let Some(m) = self.manifests.lock().ok().and_then(|c| c.get(cid).cloned()) {
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
        if let Ok(mut cache) = self.manifests.lock() {
            if cache.len() >= MANIFEST_CACHE {
                cache.clear();
            }
            cache.insert(cid, m);
        }
    }

    /// Streams `body` into a new Cairn object, computing MD5 and any declared checksums.
    /// A body `from_client` that stops coming for [`BODY_STALL_TIMEOUT`] fails the request with
    /// `RequestTimeout` (a body read from the network has its own limits). A body that fails or
    /// ends short of its exact length is never stored: `IncompleteBody` from a client,
    /// `ServiceUnavailable` from the network.
    async fn store_body(
        &self,
        body: StreamingBlob,
        mut declared: Declared,
        trailers: Option<s3s::TrailingHeaders>,
        opts: &PutOptions,
        part: Option<i32>,
        from: BodyFrom,
    ) -> Result<Stored, Error> {
        // A part is also hashed at the offset it will have if all parts before it are as long
        // as it is (what S3 clients do), so Complete can merge instead of reading it back.
        let exact = body.remaining_length().exact();
        let piece = part.zip(exact).and_then(|(n, len)| {
            let len = len as u64;
            let at = u64::try_from(n - 1).ok()?.checked_mul(len)?;
            Some((at, PieceHasher::new(at, len).ok()?))
        });
        let state = Arc::new(Mutex::new((
            Md5::new(),
            std::mem::take(&mut declared.hasher),
            0u64,
            piece,
        )));
        let tap = state.clone();
        let stalled = Arc::new(AtomicBool::new(false));
        let limit = match from {
            BodyFrom::Client { .. } => BODY_STALL_TIMEOUT,
            BodyFrom::Network => Duration::MAX,
        };
        let stream = limit_body(body, limit, stalled.clone()).inspect_ok(move |bytes| {
            if let Ok(mut s) = tap.lock() {
                s.0.update(bytes);
                s.1.update(bytes);
                s.2 += bytes.len() as u64;
                if let Some((_, h)) = &mut s.3 {
                    h.update(bytes);
                }
            }
        });
        let body_failed = |e: String| match from {
            // UploadPartCopy's source could not be read whole: the network failed, not the
            // client.
            BodyFrom::Network => Error::Unavailable(format!("reading the copy source: {e}")),
            BodyFrom::Client { .. } if stalled.load(Ordering::Relaxed) => {
                self.metrics.stalled_clients.inc();
                Error::RequestTimeout(e)
            }
            BodyFrom::Client { .. } => Error::IncompleteBody(e),
        };
        let net = self.net().await;
        // A network with no room for the object is refused before the body is read: a client
        // that sent `Expect: 100-continue` then sends none of it. One that did not is sending
        // it anyway, and answered and cut off mid-body it would see a reset connection instead
        // of the answer: its body is taken and dropped first, up to DRAIN_LIMIT.
        if let Some(len) = exact
            && let Err(e) = cairn_client::put::check_room(&net, &opts.params, len as u64)
        {
            if matches!(
                from,
                BodyFrom::Client {
                    expects_continue: false
                }
            ) {
                drain(stream, DRAIN_LIMIT).await;
            }
            return Err(e.into());
        }
        let input = match exact {
            // A small body is gathered here and encoded from memory, on no thread of its own
            // (for the many-small-files datasets, where starting threads cost more than the
            // work); a larger one streams through a reader, its memory bounded by the encoder.
            Some(len) if len <= SMALL_BODY => {
                let mut buf = bytes::BytesMut::with_capacity(len);
                let mut stream = std::pin::pin!(stream);
                while let Some(chunk) = stream
                    .try_next()
                    .await
                    .map_err(|e| body_failed(e.to_string()))?
                {
                    buf.extend_from_slice(&chunk);
                }
                if buf.len() != len {
                    return Err(body_failed(format!(
                        "received {} of {len} bytes",
                        buf.len()
                    )));
                }
                Input::Bytes(buf.freeze())
            }
            _ => {
                let reader =
                    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
                Input::Reader(Box::new(reader) as Box<dyn Read + Send>)
            }
        };
        let report = put_object(Some(&net), &self.key, input, opts, Arc::new(|_| {}))
            .await
            .map_err(|e| match Error::from(e) {
                Error::IncompleteBody(e) => body_failed(e),
                other => other,
            })?;
        // The upload went around these nodes.
        for (peer, shards, first) in cairn_client::get::per_node(&report.incidents) {
            tracing::warn!(%peer, object = %report.cid, shards, "upload problem: {first}");
        }
        let (md5, checksum, size, nodes) = {
            let mut s = state
                .lock()
                .map_err(|_| Error::Internal("checksum state poisoned".into()))?;
            let md5 = hex(&std::mem::take(&mut s.0).finalize());
            let nodes = s.3.take().and_then(|(at, h)| Some((at, h.finish().ok()?)));
            (md5, std::mem::take(&mut s.1).finalize(), s.2, nodes)
        };
        // A body that says how long it is and ends short (its `Sized` stream fails then, but
        // this holds whatever the stream) is never stored as if it were whole.
        if let Some(len) = exact
            && size != len as u64
        {
            return Err(body_failed(format!("received {size} of {len} bytes")));
        }
        trailer_checksums(trailers, &mut declared.expected)?;
        check_checksums(&checksum, &declared.expected)?;
        if size != report.manifest.size {
            return Err(Error::IncompleteBody(format!(
                "received {size} bytes, stored {}",
                report.manifest.size
            )));
        }
        self.metrics.bytes_in.inc_by(size);
        // Complete (for a part) and the first GET need it next: no need to fetch it back.
        self.remember_manifest(report.cid, Arc::new(report.manifest.clone()));
        Ok(Stored {
            cid: report.cid,
            size,
            md5,
            checksum,
            blake3: report.manifest.blake3,
            nodes,
        })
    }

    /// A response body streaming `range` of an object from the network (verified).
    async fn body(
        &self,
        r: &ObjectRecord,
        range: Option<Range<u64>>,
        started: std::time::Instant,
    ) -> Result<StreamingBlob, Error> {
        let lookup_ms = started.elapsed().as_millis() as u64;
        let wanted = range.clone().unwrap_or(0..r.size);
        let len = (wanted.end - wanted.start) as usize;
        let (cid, base) = match &r.location {
            Location::Object(c) => (*c, 0),
            Location::Slice { object, offset } => (*object, *offset),
            Location::Inline(bytes) => {
                let part = usize::try_from(wanted.start)
                    .ok()
                    .zip(usize::try_from(wanted.end).ok())
                    .and_then(|(a, b)| bytes.get(a..b))
                    .ok_or_else(|| {
                        Error::Internal("inline object shorter than its record".into())
                    })?;
                let chunk = Bytes::copy_from_slice(part);
                self.metrics.bytes_out.inc_by(chunk.len() as u64);
                let inner = futures::stream::iter([Ok::<_, std::io::Error>(chunk)]);
                return Ok(StreamingBlob::new(Sized::new(inner, len)));
            }
        };
        let manifest = self.manifest(&cid).await?;
        // A whole object is read whole (its BLAKE3 is checked); slices and ranges by range.
        let read_range = if base == 0 && range.is_none() && r.size == manifest.size {
            None
        } else {
            Some(base + wanted.start..base + wanted.end)
        };
        let net = self.net().await;
        if range.is_some() {
            self.read_ahead(
                &net,
                &manifest,
                cid,
                base + wanted.start..base + wanted.end,
                base + r.size,
            );
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(BODY_QUEUE);
        let mut tx = BodySender(tx);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let incidents = Incidents::default();
            let first = Arc::new(std::sync::OnceLock::new());
            let seen = first.clone();
            let result = read_object_to(
                &net,
                &manifest,
                read_range.clone(),
                &mut tx,
                Arc::new(move |_| {
                    seen.get_or_init(std::time::Instant::now);
                }),
                &incidents,
            )
            .await;
            tracing::debug!(
                object = %cid,
                range = ?read_range,
                lookup_ms,
                first_byte_ms = first.get().map(|t| t.duration_since(started).as_millis() as u64),
                ms = started.elapsed().as_millis() as u64,
                "read"
            );
            for (peer, what) in incidents.list() {
                tracing::warn!(%peer, "read problem: {what}");
            }
            match result {
                Ok(n) => {
                    metrics.bytes_out.inc_by(n);
                }
                // The client went away (hung up, or was dropped for not reading): not a
                // network failure, so not counted as one.
                Err(e) if tx.0.is_closed() => {
                    tracing::debug!(object = %cid, "read stopped, the S3 client went away: {e}");
                }
                Err(e) => {
                    // The body fails with the error: a response, whose headers are gone, ends
                    // early (how HTTP says the read failed); UploadPartCopy stores nothing.
                    metrics.read_errors.inc();
                    tracing::error!("object read failed mid-response: {e}");
                    let _ = tx.0.send(Err(std::io::Error::other(e))).await;
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(StreamingBlob::new(Sized::new(stream, len)))
    }

    /// Tells the read-ahead policy about a range request (in manifest offsets; the object's
    /// readable bytes end at `limit`) and starts fetching what it says lies ahead.
    fn read_ahead(
        &self,
        net: &Arc<Network>,
        manifest: &Arc<ObjectManifest>,
        cid: Cid,
        range: Range<u64>,
        limit: u64,
    ) {
        let ahead = match self.readahead.lock() {
            Ok(mut ra) => ra.observe(cid, range, limit),
            Err(_) => None,
        };
        let Some(ahead) = ahead else {
            return;
        };
        let (net, manifest) = (net.clone(), manifest.clone());
        let (tasks, metrics) = (self.readahead_tasks.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let Ok(_permit) = tasks.acquire_owned().await else {
                return;
            };
            let n = prefetch(&net, &manifest, ahead.clone()).await;
            metrics.readahead_shards.inc_by(n as u64);
            tracing::debug!(object = %cid, ?ahead, shards = n, "read ahead");
        });
    }

    /// Stores the manifest of a combined (multipart) object and returns its CID.
    async fn publish(&self, manifest: &ObjectManifest) -> Result<Cid, Error> {
        manifest
            .validate()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let bytes = manifest.to_bytes();
        let cid = cids::dag_cbor(&bytes);
        let net = self.net().await;
        publish_manifest(
            &net,
            &self.key,
            &cid,
            ManifestKind::Object,
            &bytes,
            &self.opts,
            None,
        )
        .await?;
        Ok(cid)
    }

    fn signer(&self) -> String {
        hex(&self.key.verifying_key().to_bytes())
    }
}

fn copy_source(src: &CopySource) -> Result<(String, String), Error> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            no_versions(version_id.as_deref())?;
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(Error::InvalidArgument(
            "only bucket/key copy sources are supported".into(),
        )),
    }
}

fn parse_copy_range(r: &str, size: u64) -> Result<Range<u64>, Error> {
    let bad = || Error::InvalidArgument(format!("bad x-amz-copy-source-range {r:?}"));
    let spec = r.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(Error::InvalidRange(size));
    }
    Ok(a..b + 1)
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.metrics.requests.inc();
        let c = self.catalog.clone();
        let buckets = blocking(move || Ok(c.buckets()?)).await?;
        let buckets = buckets
            .into_iter()
            .map(|(name, r)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(r.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.metrics.requests.inc();
        let name = req.input.bucket;
        check_bucket_name(&name)?;
        let (c, n) = (self.catalog.clone(), name.clone());
        let created = blocking(move || {
            Ok(c.create_bucket(
                &n,
                &BucketRecord {
                    created_ms: now_ms(),
                },
            )?)
        })
        .await?;
        if !created {
            return Err(Error::BucketExists(name).into());
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.metrics.requests.inc();
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.metrics.requests.inc();
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.metrics.requests.inc();
        let name = req.input.bucket;
        // Existence, emptiness and the delete are one step in the catalog, so a PUT racing
        // this either lands first (and the delete is refused) or finds no bucket.
        let (c, n) = (self.catalog.clone(), name);
        blocking(move || Ok(c.delete_bucket(&n)?)).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.metrics.requests.inc();
        let from = BodyFrom::client(&req.headers);
        let trailers = req.trailing_headers;
        let mut input = req.input;
        // Everything the headers decide is checked before the body is read, so that a body
        // sure to be refused is never stored (a 5xx after storing it would also have the client
        // send it again). The write condition is checked again as the record is written (the
        // key may change while the body is stored).
        let cond = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref());
        let checked = async {
            check_key(&input.key)?;
            check_object_headers(input.content_type.as_deref(), input.metadata.as_ref())?;
            self.bucket_exists(&input.bucket).await?;
            if let Some(len) = input.content_length
                && len as u64 > MAX_PUT
            {
                return Err(Error::EntityTooLarge {
                    size: len as u64,
                    max: MAX_PUT,
                });
            }
            self.check_write(&input.bucket, &input.key, &cond).await?;
            declared(
                input.checksum_algorithm.as_ref(),
                input.checksum_crc32.clone(),
                input.checksum_crc32c.clone(),
                input.checksum_crc64nvme.clone(),
                input.checksum_sha1.clone(),
                input.checksum_sha256.clone(),
            )
        }
        .await;
        let decl = match checked {
            Ok(decl) => decl,
            Err(e) => {
                let body = input.body.take();
                return Err(refuse_unread(e, body, input.content_length, from)
                    .await
                    .into());
            }
        };
        let Some(body) = input.body else {
            return Err(Error::IncompleteBody("no body".into()).into());
        };
        let mut opts = self.opts.clone();
        opts.content_type = input.content_type.clone();
        opts.metadata = metadata_in(input.metadata.clone());
        let stored = self
            .store_body(body, decl, trailers, &opts, None, from)
            .await?;
        if stored.size > MAX_PUT {
            return Err(Error::EntityTooLarge {
                size: stored.size,
                max: MAX_PUT,
            }
            .into());
        }
        check_md5(input.content_md5.as_ref(), &stored.md5)?;
        let record = ObjectRecord {
            location: Location::Object(stored.cid),
            size: stored.size,
            etag: stored.md5.clone(),
            content_type: input.content_type,
            metadata: metadata_in(input.metadata),
            modified_ms: now_ms(),
            checksums: checksum_map(&stored.checksum),
            signer: self.signer(),
            blake3: stored.blake3.to_hex().to_string(),
        };
        let (c, b, k) = (self.catalog.clone(), input.bucket, input.key);
        blocking(move || Ok(c.put_object_if(&b, &k, &record, &cond)?)).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(stored.md5)),
            checksum_crc32: stored.checksum.checksum_crc32,
            checksum_crc32c: stored.checksum.checksum_crc32c,
            checksum_crc64nvme: stored.checksum.checksum_crc64nvme,
            checksum_sha1: stored.checksum.checksum_sha1,
            checksum_sha256: stored.checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        no_versions(input.version_id.as_deref())?;
        let r = self.record(&input.bucket, &input.key).await?;
        preconditions(
            &r,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let reply = Reply::new(&r, input.range.as_ref())?;
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(reply.len as i64),
            content_range: reply.content_range.clone(),
            content_type: r.content_type.clone(),
            e_tag: Some(ETag::Strong(r.etag.clone())),
            last_modified: Some(timestamp(r.modified_ms)),
            metadata: Some(metadata_out(&r)),
            checksum_crc32: reply.sum("crc32"),
            checksum_crc32c: reply.sum("crc32c"),
            checksum_crc64nvme: reply.sum("crc64nvme"),
            checksum_sha1: reply.sum("sha1"),
            checksum_sha256: reply.sum("sha256"),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let started = std::time::Instant::now();
        self.metrics.requests.inc();
        let input = req.input;
        no_versions(input.version_id.as_deref())?;
        let r = self.record(&input.bucket, &input.key).await?;
        preconditions(
            &r,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let reply = Reply::new(&r, input.range.as_ref())?;
        let body = self.body(&r, reply.range.clone(), started).await?;
        Ok(S3Response::new(GetObjectOutput {
            accept_ranges: Some("bytes".into()),
            body: Some(body),
            content_length: Some(reply.len as i64),
            content_range: reply.content_range.clone(),
            content_type: r.content_type.clone(),
            e_tag: Some(ETag::Strong(r.etag.clone())),
            last_modified: Some(timestamp(r.modified_ms)),
            metadata: Some(metadata_out(&r)),
            checksum_crc32: reply.sum("crc32"),
            checksum_crc32c: reply.sum("crc32c"),
            checksum_crc64nvme: reply.sum("crc64nvme"),
            checksum_sha1: reply.sum("sha1"),
            checksum_sha256: reply.sum("sha256"),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        no_versions(input.version_id.as_deref())?;
        self.bucket_exists(&input.bucket).await?;
        let (c, b, k) = (self.catalog.clone(), input.bucket, input.key);
        blocking(move || Ok(c.delete_object(&b, &k)?)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.bucket_exists(&input.bucket).await?;
        if input.delete.objects.len() > 1000 {
            return Err(
                Error::InvalidArgument("at most 1000 keys per DeleteObjects".into()).into(),
            );
        }
        // A key XML cannot carry could not be named in the result either (and no such key is
        // ever stored); a version other than the current one is not this gateway's to delete.
        for o in &input.delete.objects {
            if o.key.chars().any(xml_unsafe) {
                return Err(Error::MalformedXml(format!(
                    "the key {:?} holds a character XML 1.0 cannot carry",
                    o.key
                ))
                .into());
            }
            no_versions(o.version_id.as_deref())?;
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let keys: Vec<String> = input.delete.objects.into_iter().map(|o| o.key).collect();
        let (c, b) = (self.catalog.clone(), input.bucket);
        let deleted = blocking(move || {
            for k in &keys {
                c.delete_object(&b, k)?;
            }
            Ok(keys)
        })
        .await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then(|| {
                deleted
                    .into_iter()
                    .map(|k| DeletedObject {
                        key: Some(k),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        check_key(&input.key)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if replace {
            check_object_headers(input.content_type.as_deref(), input.metadata.as_ref())?;
        }
        self.bucket_exists(&input.bucket).await?;
        let (sb, sk) = copy_source(&input.copy_source)?;
        let src = self.record(&sb, &sk).await?;
        preconditions(
            &src,
            input.copy_source_if_match.as_ref(),
            None,
            None,
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| match e {
            Error::NotModified => Error::PreconditionFailed("copy source not modified".into()),
            other => other,
        })?;
        if let Some(cond) = &input.copy_source_if_none_match
            && (cond.is_any()
                || cond
                    .as_etag()
                    .is_some_and(|e| e.weak_cmp(&ETag::Strong(src.etag.clone()))))
        {
            return Err(Error::PreconditionFailed(
                "x-amz-copy-source-if-none-match matched".into(),
            )
            .into());
        }
        let mut record = src.clone();
        record.modified_ms = now_ms();
        if replace {
            record.content_type = input.content_type;
            record.metadata = metadata_in(input.metadata);
        }
        // The bytes are already on the network under their CID: a copy is a new catalog entry.
        let out_etag = record.etag.clone();
        let modified = record.modified_ms;
        let (c, b, k) = (self.catalog.clone(), input.bucket, input.key);
        blocking(move || Ok(c.put_object(&b, &k, &record)?)).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(out_etag)),
                last_modified: Some(timestamp(modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.metrics.requests.inc();
        let input = req.input;
        let after = match &input.continuation_token {
            Some(t) => Some(decode_token(t).ok_or_else(|| {
                Error::InvalidArgument("the continuation token is not valid".into())
            })?),
            None => input.start_after.clone(),
        };
        let enc = KeyEncoding::of(input.encoding_type.as_ref());
        let page = self
            .page(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                after,
                input.max_keys,
                enc,
            )
            .await?;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc.apply(page.prefix)),
            max_keys: Some(page.max as i32),
            key_count: Some((page.contents.len() + page.prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(|a| enc.apply(a)),
            delimiter: input.delimiter.map(|d| enc.apply(d)),
            encoding_type: enc.echo(),
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next.as_deref().map(encode_token),
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        let enc = KeyEncoding::of(input.encoding_type.as_ref());
        let page = self
            .page(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                input.marker.clone(),
                input.max_keys,
                enc,
            )
            .await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc.apply(page.prefix)),
            marker: input.marker.map(|m| enc.apply(m)),
            max_keys: Some(page.max as i32),
            delimiter: input.delimiter.map(|d| enc.apply(d)),
            encoding_type: enc.echo(),
            is_truncated: Some(page.next.is_some()),
            next_marker: page.next.map(|m| enc.apply(m)),
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        check_key(&input.key)?;
        // Refused here, not at Complete, which would answer 200 and then fail for good.
        check_object_headers(input.content_type.as_deref(), input.metadata.as_ref())?;
        self.bucket_exists(&input.bucket).await?;
        let id = hex(&blake3::hash(
            format!(
                "{}/{}/{}/{:?}",
                input.bucket,
                input.key,
                now_ms(),
                std::time::Instant::now()
            )
            .as_bytes(),
        )
        .as_bytes()[..16]);
        let record = UploadRecord {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            created_ms: now_ms(),
            content_type: input.content_type,
            metadata: metadata_in(input.metadata),
            erasure: Some(self.opts.params.erasure),
        };
        let (c, i) = (self.catalog.clone(), id.clone());
        blocking(move || Ok(c.create_upload(&i, &record)?)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.metrics.requests.inc();
        let from = BodyFrom::client(&req.headers);
        let trailers = req.trailing_headers;
        let mut input = req.input;
        // As for PutObject: what the headers decide is refused before the body is read.
        let checked = async {
            if !(1..=MAX_PARTS).contains(&input.part_number) {
                return Err(Error::InvalidArgument(format!(
                    "part number {} is outside 1..=10000",
                    input.part_number
                )));
            }
            let upload = self
                .upload(&input.upload_id, &input.bucket, &input.key)
                .await?;
            if let Some(len) = input.content_length
                && len as u64 > MAX_PUT
            {
                return Err(Error::EntityTooLarge {
                    size: len as u64,
                    max: MAX_PUT,
                });
            }
            let decl = declared(
                input.checksum_algorithm.as_ref(),
                input.checksum_crc32.clone(),
                input.checksum_crc32c.clone(),
                input.checksum_crc64nvme.clone(),
                input.checksum_sha1.clone(),
                input.checksum_sha256.clone(),
            )?;
            Ok((upload, decl))
        }
        .await;
        let (upload, decl) = match checked {
            Ok(c) => c,
            Err(e) => {
                let body = input.body.take();
                return Err(refuse_unread(e, body, input.content_length, from)
                    .await
                    .into());
            }
        };
        let Some(body) = input.body else {
            return Err(Error::IncompleteBody("no body".into()).into());
        };
        let stored = self
            .store_body(
                body,
                decl,
                trailers,
                &self.part_options(&upload),
                Some(input.part_number),
                from,
            )
            .await?;
        check_md5(input.content_md5.as_ref(), &stored.md5)?;
        self.record_part(&input.upload_id, input.part_number as u32, &stored)
            .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(stored.md5)),
            checksum_crc32: stored.checksum.checksum_crc32,
            checksum_crc32c: stored.checksum.checksum_crc32c,
            checksum_crc64nvme: stored.checksum.checksum_crc64nvme,
            checksum_sha1: stored.checksum.checksum_sha1,
            checksum_sha256: stored.checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        let upload = self
            .upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        if !(1..=MAX_PARTS).contains(&input.part_number) {
            return Err(Error::InvalidArgument(format!(
                "part number {} is outside 1..=10000",
                input.part_number
            ))
            .into());
        }
        let (sb, sk) = copy_source(&input.copy_source)?;
        let src = self.record(&sb, &sk).await?;
        preconditions(
            &src,
            input.copy_source_if_match.as_ref(),
            None,
            None,
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| match e {
            Error::NotModified => Error::PreconditionFailed("copy source not modified".into()),
            other => other,
        })?;
        let range = input
            .copy_source_range
            .as_deref()
            .map(|r| parse_copy_range(r, src.size))
            .transpose()?;
        if range.as_ref().map_or(src.size, |r| r.end - r.start) > MAX_PUT {
            return Err(Error::EntityTooLarge {
                size: src.size,
                max: MAX_PUT,
            }
            .into());
        }
        // Read the source range (verified) and store it as the part.
        let body = self.body(&src, range, std::time::Instant::now()).await?;
        let decl = declared(None, None, None, None, None, None)?;
        let stored = self
            .store_body(
                body,
                decl,
                None,
                &self.part_options(&upload),
                Some(input.part_number),
                BodyFrom::Network,
            )
            .await?;
        self.record_part(&input.upload_id, input.part_number as u32, &stored)
            .await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(stored.md5)),
                last_modified: Some(timestamp(now_ms())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let (c, i) = (self.catalog.clone(), input.upload_id.clone());
        let parts = blocking(move || Ok(c.parts(&i)?)).await?;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = page_size("max-parts", input.max_parts)?.max(1);
        let after: Vec<_> = parts.into_iter().filter(|(n, _)| *n > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            is_truncated: Some(truncated),
            next_part_number_marker: page.last().map(|(n, _)| *n as i32),
            max_parts: Some(max as i32),
            parts: Some(
                page.into_iter()
                    .map(|(n, p)| Part {
                        part_number: Some(n as i32),
                        e_tag: Some(ETag::Strong(p.etag)),
                        size: Some(p.size as i64),
                        last_modified: Some(timestamp(p.modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.bucket_exists(&input.bucket).await?;
        let (c, b) = (self.catalog.clone(), input.bucket.clone());
        let uploads = blocking(move || Ok(c.uploads(&b)?)).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let enc = KeyEncoding::of(input.encoding_type.as_ref());
        let uploads: Vec<MultipartUpload> = uploads
            .into_iter()
            .filter(|(_, u)| u.key.starts_with(&prefix))
            .map(|(id, u)| MultipartUpload {
                key: Some(enc.apply(u.key)),
                upload_id: Some(id),
                initiated: Some(timestamp(u.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix.map(|p| enc.apply(p)),
            encoding_type: enc.echo(),
            is_truncated: Some(false),
            max_uploads: Some(1000),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let (c, i) = (self.catalog.clone(), input.upload_id);
        blocking(move || Ok(c.finish_upload(&i, None)?)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        let upload = self
            .upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        // Checked now, while a refusal can still be a 412, and again as the object is committed.
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref());
        self.check_write(&input.bucket, &input.key, &condition)
            .await?;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(Error::InvalidPart("list at least one part".into()).into());
        }
        let (c, i) = (self.catalog.clone(), input.upload_id.clone());
        let uploaded: BTreeMap<u32, PartRecord> = blocking(move || Ok(c.parts(&i)?))
            .await?
            .into_iter()
            .collect();
        let mut chosen = Vec::with_capacity(listed.len());
        let mut last = 0i32;
        for (i, p) in listed.iter().enumerate() {
            let n = p
                .part_number
                .ok_or_else(|| Error::InvalidPart("a part has no number".into()))?;
            if n <= last {
                return Err(Error::InvalidPartOrder.into());
            }
            last = n;
            let rec = uploaded
                .get(&(n as u32))
                .ok_or_else(|| Error::InvalidPart(format!("part {n} was not uploaded")))?;
            if let Some(e) = &p.e_tag
                && !e.strong_cmp(&ETag::Strong(rec.etag.clone()))
            {
                return Err(Error::InvalidPart(format!(
                    "part {n}: ETag does not match the uploaded part"
                ))
                .into());
            }
            if i + 1 < listed.len() && rec.size < MIN_PART {
                return Err(Error::EntityTooSmall {
                    part: n as u32,
                    size: rec.size,
                }
                .into());
            }
            chosen.push(rec.clone());
        }
        // The object's manifest is the parts' stripes in order; its BLAKE3 is read back
        // (verified) from the parts, since hashes of unaligned pieces do not combine.
        let mut stripes = Vec::new();
        let mut size = 0u64;
        let mut md5_concat = Vec::with_capacity(16 * chosen.len());
        let mut params = None;
        let mut parts = Vec::with_capacity(chosen.len());
        for rec in &chosen {
            let m = self.manifest(&rec.cid).await?;
            if m.inline.is_some() && m.size > 0 {
                return Err(Error::Internal("an inline part cannot be combined".into()).into());
            }
            if *params.get_or_insert(m.erasure) != m.erasure {
                return Err(Error::Internal(
                    "parts were written with different erasure parameters".into(),
                )
                .into());
            }
            stripes.extend(m.stripes.iter().cloned());
            size += m.size;
            let raw =
                decode_hex(&rec.etag).ok_or_else(|| Error::Internal("bad part ETag".into()))?;
            md5_concat.extend(raw);
            parts.push(m);
        }
        // Everything a client can get wrong was checked above and is answered with an error
        // status. What is left is the object's BLAKE3 and publishing its manifest. The hash is
        // usually merged from the parts' tree nodes, but parts hashed at the wrong offset are
        // read back, in the worst case all of them (about a second per GiB here, more on a
        // busy network), which can outlast what clients wait for a response to start
        // (boto3: 60 s). So, as S3 does, the 200 goes out now, s3s sends whitespace every
        // 100 ms while this runs, and then the result, or an S3 error document that SDKs check
        // for. Nothing is committed until the end: a failure, or a client that hangs up,
        // leaves the upload open for a retry.
        let etag = format!("{}-{}", hex(&Md5::digest(&md5_concat)), chosen.len());
        let finish = FinishUpload {
            upload,
            id: input.upload_id,
            bucket: input.bucket,
            key: input.key,
            etag,
            parts: chosen.into_iter().zip(parts).collect(),
            size,
            stripes,
            erasure: params.unwrap_or(self.opts.params.erasure),
            condition,
        };
        let gateway = self.clone();
        let future = async move {
            gateway.finish_upload(finish).await.map_err(|e| {
                tracing::error!("completing a multipart upload failed after its 200: {e}");
                // The status said 200: count the failure here, as the status cannot.
                if e.status().is_server_error() {
                    gateway.metrics.server_errors.inc();
                }
                s3s::S3Error::from(e)
            })
        };
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(future)),
            ..Default::default()
        }))
    }
}

impl Gateway {
    /// Whether `bucket/key` meets a conditional write's `cond` now (412 if not). Only a first
    /// check, before the slow part of the write: the catalog checks again as it writes.
    async fn check_write(
        &self,
        bucket: &str,
        key: &str,
        cond: &WriteCondition,
    ) -> Result<(), Error> {
        if cond.is_none() {
            return Ok(());
        }
        let (c, b, k) = (self.catalog.clone(), bucket.to_string(), key.to_string());
        let existing = blocking(move || Ok(c.object(&b, &k)?)).await?;
        cond.check(existing.as_ref())
            .map_err(Error::PreconditionFailed)
    }

    /// The BLAKE3 of the object the parts make, in order. One part is its own object. Parts
    /// hashed at the offset they turned out to have give their tree nodes; a part that was not
    /// (the short last one, or any after parts of other sizes) is read back and hashed at its
    /// offset; only when offsets are not on 1 KiB chunk boundaries is everything read back.
    async fn parts_hash(
        &self,
        parts: &[(PartRecord, Arc<ObjectManifest>)],
        total: u64,
    ) -> Result<blake3::Hash, Error> {
        if let [(_, only)] = parts {
            return Ok(only.blake3);
        }
        let mut nodes = Vec::new();
        let mut reread = Vec::new();
        let mut at = 0u64;
        for (rec, m) in parts {
            if m.size == 0 {
                continue;
            }
            if rec.hashed_at == Some(at) && !rec.nodes.is_empty() {
                nodes.extend_from_slice(&rec.nodes);
            } else {
                reread.push((at, m.clone()));
            }
            at += m.size;
        }
        self.metrics
            .complete_parts_reread
            .inc_by(reread.len() as u64);
        let net = self.net().await;
        let mut pieces_ok = true;
        for (at, m) in reread {
            let Ok(piece) = PieceHasher::new(at, m.size) else {
                pieces_ok = false;
                break;
            };
            let HashSink(piece) = read_into(&net, &m, HashSink(piece)).await?;
            match piece.finish() {
                Ok(n) => nodes.extend(n),
                Err(e) => return Err(Error::Internal(format!("hashing a part: {e}"))),
            }
        }
        if pieces_ok && let Some(hash) = combine(&nodes, total) {
            return Ok(hash);
        }
        // Parts whose offsets are not on chunk boundaries: hash the whole object in order.
        tracing::info!(total, "multipart object re-read whole for its BLAKE3");
        let mut whole = HashSink(blake3::Hasher::new());
        for (_, m) in parts {
            whole = read_into(&net, m, whole).await?;
        }
        Ok(whole.0.finalize())
    }
}

/// Reads a whole object (verified) into a hashing sink.
async fn read_into<H: Absorb + Unpin + Send>(
    net: &Network,
    m: &ObjectManifest,
    mut sink: HashSink<H>,
) -> Result<HashSink<H>, Error> {
    read_object(
        net,
        m,
        None,
        &mut sink,
        Arc::new(|_| {}),
        &Incidents::default(),
    )
    .await?;
    Ok(sink)
}

/// A checked CompleteMultipartUpload, ready to be turned into an object.
struct FinishUpload {
    upload: UploadRecord,
    id: String,
    bucket: String,
    key: String,
    etag: String,
    parts: Vec<(PartRecord, Arc<ObjectManifest>)>,
    size: u64,
    stripes: Vec<Stripe>,
    erasure: ErasureParams,
    /// What the key must hold for the object to be committed (`If-None-Match`, `If-Match`).
    condition: WriteCondition,
}

impl Gateway {
    /// The slow half of CompleteMultipartUpload: the object's BLAKE3 from its parts, then its
    /// manifest published and committed to the catalog.
    async fn finish_upload(&self, f: FinishUpload) -> Result<CompleteMultipartUploadOutput, Error> {
        let blake3 = self.parts_hash(&f.parts, f.size).await?;
        let manifest = ObjectManifest {
            version: cairn_chunker::manifest::VERSION,
            size: f.size,
            blake3,
            erasure: f.erasure,
            chunking: cairn_chunker::chunking::Chunking::Fixed,
            stripes: f.stripes,
            inline: if f.size == 0 { Some(Vec::new()) } else { None },
            content_type: f.upload.content_type.clone(),
            metadata: f.upload.metadata.clone(),
        };
        let cid = self.publish(&manifest).await?;
        let record = ObjectRecord {
            location: Location::Object(cid),
            size: f.size,
            etag: f.etag.clone(),
            content_type: f.upload.content_type,
            metadata: f.upload.metadata,
            modified_ms: now_ms(),
            checksums: BTreeMap::new(),
            signer: self.signer(),
            blake3: manifest.blake3.to_hex().to_string(),
        };
        let (c, i, b, k) = (self.catalog.clone(), f.id, f.bucket.clone(), f.key.clone());
        let cond = f.condition;
        blocking(move || Ok(c.finish_upload_if(&i, Some((&b, &k, &record)), &cond)?)).await?;
        Ok(CompleteMultipartUploadOutput {
            bucket: Some(f.bucket),
            key: Some(f.key),
            e_tag: Some(ETag::Strong(f.etag)),
            ..Default::default()
        })
    }
}

impl Gateway {
    /// One page of a listing (both ListObjects versions).
    async fn page(
        &self,
        bucket: &str,
        prefix: Option<String>,
        delimiter: Option<String>,
        after: Option<String>,
        max_keys: Option<i32>,
        enc: KeyEncoding,
    ) -> Result<Page, Error> {
        self.bucket_exists(bucket).await?;
        let max = page_size("max-keys", max_keys)?;
        let prefix = prefix.unwrap_or_default();
        if max == 0 {
            // Nothing asked, nothing more to give: S3 answers an empty, complete page (a
            // truncated one with no token would have a pager ask again forever).
            return Ok(Page {
                max,
                prefix,
                contents: Vec::new(),
                prefixes: Vec::new(),
                next: None,
            });
        }
        let (c, b, p) = (self.catalog.clone(), bucket.to_string(), prefix.clone());
        let listing =
            blocking(move || Ok(c.list(&b, &p, delimiter.as_deref(), after.as_deref(), max)?))
                .await?;
        Ok(Page {
            max,
            prefix,
            contents: listing
                .objects
                .iter()
                .map(|(k, r)| object_entry(enc.apply(k.clone()), r))
                .collect(),
            prefixes: listing
                .prefixes
                .into_iter()
                .map(|p| CommonPrefix {
                    prefix: Some(enc.apply(p)),
                })
                .collect(),
            next: listing.next,
        })
    }

    fn part_options(&self, upload: &UploadRecord) -> PutOptions {
        // Parts always get stripes, never inline bytes, and the upload's erasure parameters,
        // so Complete can join their stripes.
        let mut o = self.opts.clone();
        if let Some(e) = upload.erasure {
            o.params.erasure = e;
        }
        o.params.inline_limit = 0;
        o.content_type = None;
        o.metadata.clear();
        o
    }

    async fn upload(&self, id: &str, bucket: &str, key: &str) -> Result<UploadRecord, Error> {
        let (c, i) = (self.catalog.clone(), id.to_string());
        let up = blocking(move || Ok(c.upload(&i)?)).await?;
        match up {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => {
                self.bucket_exists(bucket).await?;
                Err(Error::NoSuchUpload(id.to_string()))
            }
        }
    }

    async fn record_part(&self, id: &str, number: u32, stored: &Stored) -> Result<(), Error> {
        let rec = PartRecord {
            cid: stored.cid,
            size: stored.size,
            etag: stored.md5.clone(),
            modified_ms: now_ms(),
            hashed_at: stored.nodes.as_ref().map(|(at, _)| *at),
            nodes: stored.nodes.clone().map(|(_, n)| n).unwrap_or_default(),
        };
        let (c, i) = (self.catalog.clone(), id.to_string());
        blocking(move || Ok(c.put_part(&i, number, &rec)?)).await
    }
}

/// How a listing writes keys, prefixes, delimiters and markers: as they are, or percent-encoded
/// when the request asked for `encoding-type=url`, as S3 does (botocore always asks, and decodes
/// what the response says is encoded).
#[derive(Debug, Clone, Copy)]
struct KeyEncoding {
    url: bool,
}

impl KeyEncoding {
    fn of(requested: Option<&EncodingType>) -> Self {
        KeyEncoding {
            url: requested.is_some_and(|e| e.as_str().eq_ignore_ascii_case(EncodingType::URL)),
        }
    }

    /// `s` as the listing carries it: with `url`, every byte but A-Z a-z 0-9 `-._~` and '/' as
    /// `%XX` (a space as `%20`, '+' as `%2B`).
    fn apply(self, s: String) -> String {
        let keep =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/');
        if !self.url || s.bytes().all(keep) {
            return s;
        }
        let mut out = String::with_capacity(s.len() * 3);
        for b in s.bytes() {
            if keep(b) {
                out.push(char::from(b));
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
        out
    }

    /// The `EncodingType` the response declares: only the one it is encoded with.
    fn echo(self) -> Option<EncodingType> {
        self.url
            .then(|| EncodingType::from_static(EncodingType::URL))
    }
}

/// A listing page in S3 terms.
struct Page {
    max: usize,
    prefix: String,
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    /// The last key or prefix returned, when there is more.
    next: Option<String>,
}

fn object_entry(key: String, r: &ObjectRecord) -> Object {
    Object {
        key: Some(key),
        size: Some(r.size as i64),
        e_tag: Some(ETag::Strong(r.etag.clone())),
        last_modified: Some(timestamp(r.modified_ms)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

/// A listing's page size (`max-keys`, `max-parts`): 1000 when not given, at most 1000, and a
/// negative one refused as S3 refuses it.
fn page_size(name: &str, asked: Option<i32>) -> Result<usize, Error> {
    match asked {
        None => Ok(1000),
        Some(n) if n < 0 => Err(Error::InvalidArgument(format!(
            "{name} must be a number from 0 to 2147483647, not {n}"
        ))),
        Some(n) => Ok(n.min(1000) as usize),
    }
}

fn encode_token(key: &str) -> String {
    hex(key.as_bytes())
}

fn decode_token(token: &str) -> Option<String> {
    String::from_utf8(decode_hex(token)?).ok()
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_sized_body_that_ends_early_is_an_error() {
        let inner = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))]);
        let mut body = Sized::new(inner, 10);
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"abcd");
        let err = body
            .next()
            .await
            .expect("an error, not the end")
            .unwrap_err();
        let err = err.downcast::<std::io::Error>().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        assert!(body.next().await.is_none());

        // One that ends where it said ends cleanly.
        let inner = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))]);
        let mut body = Sized::new(inner, 4);
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"abcd");
        assert!(body.next().await.is_none());
    }

    #[test]
    fn timestamps_past_year_9999_are_clamped() {
        let t: time::OffsetDateTime = timestamp(u64::MAX).into();
        assert_eq!(t.year(), 9999);
        let t: time::OffsetDateTime = timestamp(253_402_300_800_000).into();
        assert_eq!(t.year(), 9999);
        let t: time::OffsetDateTime = timestamp(1_700_000_000_123).into();
        assert_eq!(t.unix_timestamp_nanos(), 1_700_000_000_123_000_000);
    }

    #[test]
    fn listings_percent_encode_keys_as_s3_does_when_asked() {
        let url = KeyEncoding { url: true };
        for (key, listed) in [
            ("plain/x-y_z.~", "plain/x-y_z.~"),
            ("a+b.txt", "a%2Bb.txt"),
            ("e f", "e%20f"),
            ("c%2Fd", "c%252Fd"),
            ("test_file(3).png", "test_file%283%29.png"),
            ("\u{e9}\t\u{1}", "%C3%A9%09%01"),
        ] {
            assert_eq!(url.apply(key.into()), listed);
            assert_eq!(KeyEncoding { url: false }.apply(key.into()), key);
        }
        let of = |e: &str| KeyEncoding::of(Some(&EncodingType::from(e.to_string()))).url;
        assert!(of("url") && !of("base64"));
        assert!(!KeyEncoding::of(None).url);
    }

    #[test]
    fn keys_xml_cannot_carry_are_refused() {
        for ok in ["a", "tab\there", "line\nbreak\r", "\u{7f}\u{e9}\u{fffd}"] {
            assert!(check_key(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "nul\0", "bell\u{7}", "esc\u{1b}", "\u{b}", "\u{ffff}"] {
            assert!(
                matches!(check_key(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        assert!(check_key(&"k".repeat(1025)).is_err());
    }
}
