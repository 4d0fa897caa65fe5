//! Time limits on S3 clients that stop half-way: one that stops sending a request body, and one
//! that stops reading a response.
//!
//! Neither is bounded by HTTP itself. A PUT whose body stops coming holds the stripes the
//! encoder has in flight (tens of MiB at 10+4) and a task; a GET whose reader stops reading
//! holds its read-ahead and a task; both hold a socket. A few hundred such clients, whether
//! broken or hostile, would exhaust the gateway's memory or descriptors. So:
//!
//! - [`limit_body`] wraps a request body: a gap of [`BODY_STALL_TIMEOUT`] between two chunks
//!   ends it with an error, and the request is answered `400 RequestTimeout`, as S3 does.
//! - [`Watched`] wraps a connection's socket and notes when a write has been refused (the
//!   client's receive window is full) and for how long; [`Progress::stalled`] resolves once
//!   the socket has taken no byte for [`SEND_STALL_TIMEOUT`], and the server then drops the
//!   connection. A client that is merely slow keeps its connection: any byte taken restarts
//!   the clock.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest gap between two pieces of a request body before the request is given up.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest time a client may leave a response unread (its socket taking no byte) before the
/// connection is closed.
pub const SEND_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Ends `body` with an [`io::ErrorKind::TimedOut`] error when no chunk arrives for `limit`,
/// and sets `stalled` so the caller can tell that from other failures.
pub fn limit_body<S, E>(
    body: S,
    limit: Duration,
    stalled: Arc<AtomicBool>,
) -> BoxStream<'static, Result<Bytes, io::Error>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let body = Box::pin(body);
    futures::stream::unfold(Some(body), move |state| {
        let stalled = stalled.clone();
        async move {
            let mut body = state?;
            match tokio::time::timeout(limit, body.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
                Ok(Some(Err(e))) => Some((Err(io::Error::other(e.to_string())), None)),
                Ok(None) => None,
                Err(_) => {
                    stalled.store(true, Ordering::Relaxed);
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client sent nothing for {}s", limit.as_secs()),
                    );
                    Some((Err(e), None))
                }
            }
        }
    })
    .boxed()
}

/// When a connection's writes were last refused, shared between [`Watched`] and the task that
/// serves the connection.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    /// Milliseconds after `start` since which writes have been refused; `NOT_STUCK` otherwise.
    stuck_since: AtomicU64,
}

const NOT_STUCK: u64 = u64::MAX;

impl Progress {
    fn new() -> Self {
        Progress {
            start: Instant::now(),
            stuck_since: AtomicU64::new(NOT_STUCK),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NOT_STUCK - 1)
    }

    fn note<T>(&self, poll: &Poll<T>) {
        match poll {
            Poll::Pending => {
                // Keep the earliest refusal: only a write that goes through restarts the clock.
                let _ = self.stuck_since.compare_exchange(
                    NOT_STUCK,
                    self.now_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => self.stuck_since.store(NOT_STUCK, Ordering::Relaxed),
        }
    }

    /// How long writes have been refused without a byte going through, if they are.
    pub fn stuck_for(&self) -> Option<Duration> {
        let since = self.stuck_since.load(Ordering::Relaxed);
        (since != NOT_STUCK).then(|| Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Resolves once writes have been refused for `limit` without a byte going through.
    pub async fn stalled(&self, limit: Duration) {
        loop {
            let wait = match self.stuck_for() {
                Some(stuck) if stuck >= limit => return,
                Some(stuck) => limit - stuck,
                None => limit,
            };
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }
}

/// A socket whose refused writes are timed (see [`Progress`]). Reads pass through.
#[derive(Debug)]
pub struct Watched<T> {
    io: T,
    progress: Arc<Progress>,
}

impl<T> Watched<T> {
    /// Wraps `io`; the returned [`Progress`] tells how long its writes have been refused.
    pub fn new(io: T) -> (Self, Arc<Progress>) {
        let progress = Arc::new(Progress::new());
        (
            Watched {
                io,
                progress: progress.clone(),
            },
            progress,
        )
    }

    /// The wrapped socket (to peek at it, say).
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress.note(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress.note(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.progress.note(&poll);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // a test's channel of three small sends
    async fn a_body_that_stops_coming_ends_with_a_timeout_and_says_so() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, String>>();
        let stalled = Arc::new(AtomicBool::new(false));
        let limit = Duration::from_millis(500);
        let mut body = Box::pin(limit_body(rx, limit, stalled.clone()));
        tx.unbounded_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), &b"abc"[..]);
        // Gaps shorter than the limit are allowed, however many there are.
        for _ in 0..3 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                tx.unbounded_send(Ok(Bytes::from_static(b"d"))).unwrap();
            });
            assert_eq!(body.next().await.unwrap().unwrap(), &b"d"[..]);
        }
        assert!(!stalled.load(Ordering::Relaxed));
        // Then nothing: the body ends with TimedOut, once, and the flag is set.
        let started = Instant::now();
        let e = body.next().await.unwrap().unwrap_err();
        assert!(started.elapsed() >= limit);
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(stalled.load(Ordering::Relaxed));
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_body_error_or_end_is_passed_on_and_is_not_a_stall() {
        let stalled = Arc::new(AtomicBool::new(false));
        let items: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from_static(b"x")), Err("reset".into())];
        let mut body = Box::pin(limit_body(
            futures::stream::iter(items),
            Duration::from_secs(1),
            stalled.clone(),
        ));
        assert!(body.next().await.unwrap().is_ok());
        let e = body.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert!(body.next().await.is_none());
        assert!(!stalled.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn refused_writes_are_timed_and_a_taken_byte_restarts_the_clock() {
        // A duplex pipe with a 4-byte buffer: the fifth byte is refused until the reader reads.
        let (near, mut far) = tokio::io::duplex(4);
        let (mut watched, progress) = Watched::new(near);
        watched.write_all(b"1234").await.unwrap();
        assert_eq!(progress.stuck_for(), None);
        let write = tokio::spawn(async move {
            watched.write_all(b"5678").await.unwrap();
            watched
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stuck = progress.stuck_for().expect("the write is refused");
        assert!(stuck >= Duration::from_millis(100), "{stuck:?}");
        // `stalled` resolves for a limit already passed, not for one far away.
        tokio::time::timeout(
            Duration::from_secs(5),
            progress.stalled(Duration::from_millis(150)),
        )
        .await
        .expect("stalled() resolves once the limit has passed");
        assert!(
            tokio::time::timeout(
                Duration::from_millis(300),
                progress.stalled(Duration::from_secs(60))
            )
            .await
            .is_err()
        );
        // The reader takes bytes: the write goes through and the clock stops.
        let mut got = [0u8; 8];
        far.read_exact(&mut got).await.unwrap();
        let _watched = write.await.unwrap();
        assert_eq!(&got, b"12345678");
        assert_eq!(progress.stuck_for(), None);
    }
}
