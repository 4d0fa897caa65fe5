//! Plumbing both daemons (node and gateway) share: their tokio runtime, the admin HTTP server
//! loop with its header deadline, accepting without spinning, following a parent process, and
//! atomic file writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

/// How many tasks a runtime worker runs between looks for new I/O while it has tasks queued
/// (tokio's default is 61). The daemons' work is many short tasks beside QUIC endpoints: a
/// packet that arrives while a worker runs its queue waits for the next look, and on a busy
/// machine that wait was most of a small read's latency. At 16, 1 MiB range GETs through the
/// gateway at 32 clients answered their first byte in a median ~10 ms instead of ~16 ms, with
/// the same throughput (docs/BENCHMARKS.md, "Runs O").
pub const EVENT_INTERVAL: u32 = 16;

/// The multi-threaded tokio runtime the daemons (node and gateway) run on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(EVENT_INTERVAL)
        .build()
}

/// The next connection on `listener`, or `None` once `cancel` fires. Accept errors (out of
/// descriptors and the like) are logged and retried after a pause rather than in a spin.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    cancel: &CancellationToken,
    what: &str,
) -> Option<tokio::net::TcpStream> {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((socket, _)) => return Some(socket),
                Err(e) => {
                    tracing::error!("accepting an {what} connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Time an admin client has to send its first byte, and then a request's head; an idle
/// keep-alive connection is closed after it too.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` over HTTP/1.1 on `listener` until `cancel` fires, then lets requests in
/// progress finish (up to 5 s).
///
/// Unlike `axum::serve`, a connection must send its request head within
/// [`ADMIN_HEADER_TIMEOUT`] (hyper sets no limit without a timer): otherwise a script or
/// scanner that opens connections and sends nothing would hold a socket and a task each,
/// until the daemon runs out of descriptors. Used by the node's and the gateway's admin servers.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some(socket) = accept(&listener, &cancel, "admin").await {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("admin connection ended: {e}");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::warn!("admin connections still open after 5s; closing");
        }
    }
}

/// Cancels `cancel` when process `pid` exits (daemons started by `cairn devnet` follow it).
pub async fn watch_pid(pid: u32, cancel: CancellationToken) {
    let path = PathBuf::from(format!("/proc/{pid}"));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if !path.exists() {
            tracing::warn!(pid, "watched process is gone; shutting down");
            cancel.cancel();
            return;
        }
    }
}

/// Writes `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
