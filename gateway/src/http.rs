//! S3 over HTTP: the listener, each connection's limits, and the repairs made to s3s's answers.

use std::sync::Arc;
use std::time::Duration;

use futures::future::Either;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthPolicy;
use crate::metrics::GatewayMetrics;
use crate::stall::{SEND_STALL_TIMEOUT, Watched};

pub mod connections;

use connections::{InFlight, Limits, Table};
pub use connections::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS};

/// Time an S3 client has to send a request's head (request line and headers), counted from when
/// the gateway starts waiting for it, so an idle keep-alive connection is closed after this too.
/// An HTTP/2 connection with no request in flight for this long is closed as well (GOAWAY,
/// then the socket); see [`connections`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// An error answer, logged (client errors at debug, the gateway's own failures as warnings) and
/// given a message that says what to do where s3s sent none (see [`crate::error::explain`]).
/// s3s's own logging of these is turned off (`cairn-gateway`'s log filter), because it logs a
/// client's bad signature or bucket name as an ERROR of the gateway.
fn explained(
    resp: http::Response<s3s::Body>,
    method: &http::Method,
    path: &str,
) -> http::Response<s3s::Body> {
    let status = resp.status();
    let (mut parts, body) = resp.into_parts();
    let Some((doc, new_body)) = body.bytes().and_then(|b| crate::error::explain(&b)) else {
        if status.is_server_error() {
            tracing::warn!(%method, path, %status, "S3 request failed");
        }
        return http::Response::from_parts(parts, body);
    };
    let message = doc.message.as_deref().unwrap_or("");
    if status.is_server_error() {
        tracing::warn!(%method, path, %status, code = %doc.code, "S3 request failed: {message}");
    } else {
        tracing::debug!(%method, path, %status, code = %doc.code, "S3 request refused: {message}");
    }
    match new_body {
        Some(new_body) => {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            http::Response::from_parts(parts, s3s::Body::from(new_body))
        }
        None => http::Response::from_parts(parts, body),
    }
}

/// `POST /bucket/key?uploadId=…` without a part number: CompleteMultipartUpload.
fn is_complete_multipart<B>(req: &http::Request<B>) -> bool {
    let query = req.uri().query().unwrap_or_default();
    let has = |name: &str| {
        query
            .split('&')
            .any(|kv| kv.split('=').next() == Some(name))
    };
    req.method() == http::Method::POST && has("uploadId") && !has("partNumber")
}

/// A response body passed through unchanged, except for two repairs on CompleteMultipartUpload.
///
/// Complete answers 200 at once and sends whitespace until its result is ready (see
/// `Gateway::complete_multipart_upload`). When it fails at that point, s3s 0.14.1 sends its
/// error document with a second `<?xml …?>` declaration after the one that opened the body,
/// which is not well-formed XML: aws-sdk and botocore then see an unparseable body instead of
/// the S3 error code. `repair` drops a declaration that opens any frame but the first, and
/// escapes what XML cannot carry raw (see [`crate::compat::xml_safe`]).
struct OneXmlDeclaration {
    inner: s3s::Body,
    repair: bool,
    first: bool,
}

impl OneXmlDeclaration {
    fn new(inner: s3s::Body, repair: bool) -> Self {
        Self {
            inner,
            repair,
            first: true,
        }
    }
}

impl hyper::body::Body for OneXmlDeclaration {
    type Data = bytes::Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        let Some(Ok(frame)) = polled else {
            return std::task::Poll::Ready(polled);
        };
        if !self.repair {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        // Complete's document streams, so it is made XML-safe here, piece by piece, rather
        // than whole by `compat::repair_xml`.
        let frame = match frame.into_data() {
            Ok(data) if !std::mem::replace(&mut self.first, false) => {
                hyper::body::Frame::data(crate::compat::xml_safe(without_declaration(data)))
            }
            Ok(data) => hyper::body::Frame::data(crate::compat::xml_safe(data)),
            Err(other) => other,
        };
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.repair {
            // A repair changes the body's length.
            hyper::body::SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

/// `data` without a leading `<?xml …?>` declaration.
fn without_declaration(data: bytes::Bytes) -> bytes::Bytes {
    if data.starts_with(b"<?xml")
        && let Some(end) = data.windows(2).position(|w| w == b"?>")
    {
        return data.slice(end + 2..);
    }
    data
}

/// Most HTTP/2 streams (requests) one connection may have open at once.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// Largest HTTP/2 request head (header list, as HTTP/2 counts it) accepted. S3 allows 8 KiB
/// of headers; a presigned URL's query counts here too.
pub const H2_MAX_HEADER_LIST_SIZE: u32 = 16 << 10;

/// How long an HTTP/2 client may send nothing (no frame at all) before the gateway pings it to
/// see that it is still there.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long an HTTP/2 client has to answer a keep-alive ping before its connection is closed
/// as dead.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams an HTTP/2 client may reset before the gateway has accepted them (a "rapid reset"
/// flood) before its connection is closed; h2's default.
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the gateway may reset for a client's protocol errors before closing its
/// connection; hyper's default.
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// hyper's connection settings for S3 under `limits`.
fn builder(limits: &Limits) -> ConnBuilder<TokioExecutor> {
    let mut http = ConnBuilder::new(TokioExecutor::new());
    // hyper enforces no header timeout without a timer: a client that opened connections and
    // never finished a request would hold each one (a socket and a task) forever.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle);
    // HTTP/2 has no header timeout in hyper: an idle HTTP/2 connection is closed by the
    // connection's task instead (`connections::Activity`). Pings find peers that vanished
    // while a request was in flight (a response waiting on the network, say).
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS);
    http
}

/// Why a connection's task stopped serving it.
#[derive(Debug, Clone, Copy)]
enum Closing {
    Idle,
    Evicted,
    Shutdown,
}

pub(crate) async fn serve_s3(
    listener: tokio::net::TcpListener,
    service: s3s::service::S3Service,
    metrics: Arc<GatewayMetrics>,
    policy: Arc<AuthPolicy>,
    cancel: CancellationToken,
) {
    let limits = Limits::from_env();
    let http = builder(&limits);
    let table = Table::new(limits, metrics.clone());
    while let Some(socket) = cairn_wire::daemon::accept(&listener, &cancel, "S3").await {
        let peer = match socket.peer_addr() {
            Ok(peer) => peer.ip(),
            Err(e) => {
                tracing::debug!("an S3 connection without a peer address: {e}");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        // A client that stops reading its response would hold the connection, its task and
        // the response's read-ahead forever: it gets SEND_STALL_TIMEOUT.
        let (socket, progress) = Watched::new(socket);
        // At a cap with nothing idle to close, the new connection is dropped: closed at once.
        let Some(slot) = table.admit(peer, progress.clone()) else {
            continue;
        };
        let activity = slot.activity().clone();
        let service = service.clone();
        let counted_metrics = metrics.clone();
        let policy = policy.clone();
        let counted =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                // In flight until the response body is done: the connection is not idle.
                let busy = activity.begin();
                let complete = is_complete_multipart(&req);
                let (method, path) = (req.method().clone(), req.uri().path().to_owned());
                // What s3s does not check of a signature is checked here, for every operation.
                let fut = match crate::auth::check(&mut req, &policy) {
                    Ok(()) => Either::Left(hyper::service::Service::call(&service, req)),
                    Err(refusal) => {
                        tracing::debug!(%method, path, "S3 request refused: {refusal}");
                        Either::Right(std::future::ready(Ok(refusal.into_response())))
                    }
                };
                let metrics = counted_metrics.clone();
                async move {
                    let resp = fut.await;
                    if resp.as_ref().map_or(true, |r| r.status().as_u16() >= 400) {
                        metrics.errors.inc();
                    }
                    if resp.as_ref().map_or(true, |r| r.status().is_server_error()) {
                        metrics.server_errors.inc();
                    }
                    resp.map(|r| {
                        let r = if r.status().as_u16() >= 400 {
                            explained(r, &method, &path)
                        } else {
                            r
                        };
                        let r = crate::compat::repair_xml(r);
                        r.map(|body| InFlight::new(OneXmlDeclaration::new(body, complete), busy))
                    })
                }
            });
        let (http, cancel, metrics) = (http.clone(), cancel.clone(), metrics.clone());
        tokio::spawn(async move {
            // The connection keeps its place in the table until this task ends.
            let activity = slot.activity().clone();
            // hyper first reads to tell HTTP/1 from HTTP/2, with no deadline of its own: a
            // connection that sends no byte within the idle limit is dropped here instead.
            let mut first = [0u8; 1];
            let sent_a_byte = tokio::select! {
                r = socket.get_ref().peek(&mut first) => matches!(r, Ok(1)),
                () = activity.idle_for(limits.idle) => {
                    metrics.idle_closed.inc();
                    tracing::debug!("closing an S3 connection that sent nothing");
                    false
                }
                () = activity.evicted() => false,
                () = cancel.cancelled() => false,
            };
            if !sent_a_byte {
                return;
            }
            let conn = http
                .serve_connection(TokioIo::new(socket), counted)
                .into_owned();
            let mut conn = std::pin::pin!(conn);
            // Once closing, hyper says goodbye (HTTP/2: GOAWAY, a ping, a last GOAWAY) and
            // lets requests in flight finish; every `grace`, a connection that is idle by then
            // (a client that never answers the ping) is dropped.
            let mut closing: Option<(Closing, Duration)> = None;
            loop {
                let grace = closing.map_or(limits.idle, |(_, grace)| grace);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            // hyper's own HTTP/1 header timeout may close an idle connection
                            // before the idle timer does.
                            let timed_out = e
                                .downcast_ref::<hyper::Error>()
                                .is_some_and(hyper::Error::is_timeout);
                            if timed_out && closing.is_none() && activity.is_idle() {
                                metrics.idle_closed.inc();
                            }
                            tracing::debug!("S3 connection ended: {e}");
                        }
                        break;
                    }
                    () = progress.stalled(SEND_STALL_TIMEOUT) => {
                        tracing::info!(
                            "closing an S3 connection: its client has read nothing for {}s",
                            SEND_STALL_TIMEOUT.as_secs()
                        );
                        metrics.stalled_clients.inc();
                        break;
                    }
                    () = activity.idle_for(limits.idle), if closing.is_none() => {
                        tracing::debug!(
                            "closing an S3 connection with no request for {:?}", limits.idle
                        );
                        metrics.idle_closed.inc();
                        conn.as_mut().graceful_shutdown();
                        closing = Some((Closing::Idle, limits.close_grace()));
                    }
                    () = activity.evicted(), if closing.is_none() => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some((Closing::Evicted, limits.evict_grace()));
                    }
                    () = cancel.cancelled(), if closing.is_none() => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some((Closing::Shutdown, limits.close_grace()));
                    }
                    () = tokio::time::sleep(grace), if closing.is_some() => {
                        if activity.is_idle() {
                            tracing::debug!(
                                ?closing,
                                "dropping an S3 connection that did not close in time"
                            );
                            break;
                        }
                    }
                }
            }
        });
    }
    // Connections see `cancel` too, and close once their requests are done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while table.open() > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("S3 connections still open after 10s; closing");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_multipart_is_repaired() {
        let req = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
        };
        assert!(is_complete_multipart(&req("POST", "/b/k?uploadId=abc")));
        assert!(is_complete_multipart(&req("POST", "/b/k?x=1&uploadId")));
        assert!(!is_complete_multipart(&req("POST", "/b/k?uploads")));
        assert!(!is_complete_multipart(&req("POST", "/b/k?uploadIdx=1")));
        assert!(!is_complete_multipart(&req(
            "PUT",
            "/b/k?partNumber=2&uploadId=abc"
        )));
        assert!(!is_complete_multipart(&req("GET", "/b/k?uploadId=abc")));
        assert!(!is_complete_multipart(&req("POST", "/b?delete")));
    }

    #[test]
    fn a_declaration_is_dropped_only_where_it_opens_the_data() {
        let decl =
            bytes::Bytes::from_static(b"<?xml version=\"1.0\"?><Error><Code>X</Code></Error>");
        assert_eq!(
            &without_declaration(decl)[..],
            b"<Error><Code>X</Code></Error>"
        );
        let plain = bytes::Bytes::from_static(b"<Result>?></Result>");
        assert_eq!(without_declaration(plain.clone()), plain);
        let unterminated = bytes::Bytes::from_static(b"<?xml version");
        assert_eq!(without_declaration(unterminated.clone()), unterminated);
    }
}
