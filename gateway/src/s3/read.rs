//! Object reads: HeadObject and GetObject, the byte range they answer, and the response body
//! that streams an object's verified bytes from the network (with read-ahead for sequential
//! range readers).

use std::collections::BTreeMap;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cairn_chunker::Cid;
use cairn_chunker::manifest::ObjectManifest;
use cairn_client::error::ClientError;
use cairn_client::get::{Incidents, Sink, prefetch, read_object_to};
use cairn_client::network::Network;
use futures::Stream;
use s3s::dto::*;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3Request, S3Response, S3Result};

use super::conditions::preconditions;
use super::headers::{metadata_out, no_versions};
use super::{Gateway, timestamp};
use crate::catalog::{Location, ObjectRecord};
use crate::error::Error;

/// Verified pieces (16 KiB to a shard each) queued between the network reader and an HTTP
/// response; the reader waits when the client is slower.
const BODY_QUEUE: usize = 64;

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
    /// A response body streaming `range` of an object from the network (verified).
    pub(super) async fn body(
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
        // The manifest is the one its CID names; the record must describe it (an inline
        // object's bytes go out from the manifest as they are).
        let fits = match r.location {
            Location::Object(_) => {
                manifest.size == r.size
                    && (r.blake3.is_empty() || *r.blake3 == *manifest.blake3.to_hex())
            }
            _ => base
                .checked_add(r.size)
                .is_some_and(|end| end <= manifest.size),
        };
        if !fits {
            return Err(Error::Internal(format!(
                "the catalog's record ({} bytes, BLAKE3 {}) does not match manifest {cid} ({} \
                 bytes, BLAKE3 {})",
                r.size, r.blake3, manifest.size, manifest.blake3
            )));
        }
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

    pub(super) async fn handle_head_object(
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

    pub(super) async fn handle_get_object(
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
}
