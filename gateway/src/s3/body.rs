//! Request bodies to store: what is checked before one is read (room on the network), how a
//! request refused before its body is answered, and streaming a body into a new Cairn object
//! under a stall limit, hashing it on the way.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_chunker::Cid;
use cairn_chunker::manifest::hex;
use cairn_chunker::pieces::{PieceHasher, Subtree};
use cairn_client::put::{Input, PutOptions, put_object};
use futures::TryStreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::stream::ByteStream;

use super::Gateway;
use super::checksum::{Declared, check_checksums, trailer_checksums};
use crate::error::Error;
use crate::stall::{BODY_STALL_TIMEOUT, limit_body};

/// Most of a refused request's body the gateway reads (and drops) so that its client, which is
/// sending it, gets to read the answer.
const DRAIN_LIMIT: u64 = 256 << 20;

/// Where a body to store comes from.
#[derive(Debug, Clone, Copy)]
pub(super) enum BodyFrom {
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
    pub(super) fn client(headers: &http::HeaderMap) -> Self {
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
pub(super) async fn refuse_unread(
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

/// Bodies up to this size are gathered in memory and encoded there (see `store_body`).
const SMALL_BODY: usize = 1 << 20;

/// What storing a request body produced.
pub(super) struct Stored {
    pub(super) cid: Cid,
    pub(super) size: u64,
    pub(super) md5: String,
    pub(super) checksum: Checksum,
    pub(super) blake3: blake3::Hash,
    /// For a part: the offset it was hashed at and its BLAKE3 tree nodes there.
    pub(super) nodes: Option<(u64, Vec<Subtree>)>,
}

impl Gateway {
    /// Streams `body` into a new Cairn object, computing MD5 and any declared checksums.
    /// A body `from_client` that stops coming for [`BODY_STALL_TIMEOUT`] fails the request with
    /// `RequestTimeout` (a body read from the network has its own limits). A body that fails or
    /// ends short of its exact length is never stored: `IncompleteBody` from a client,
    /// `ServiceUnavailable` from the network.
    pub(super) async fn store_body(
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
}
