//! Plumbing both daemons (node and gateway) share: their tokio runtime, the admin HTTP server
//! loop with its header deadline, accepting without spinning, following a parent process, and
//! atomic file writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::Semaphore;
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
/// until the daemon runs out of descriptors. At most [`MAX_ADMIN_CONNECTIONS`] are served at
/// once: the next waits in the listen backlog until one ends (each ends within the header
/// timeout unless it is busy with requests), so a flood costs queued sockets, not tasks. Used
/// by the node's and the gateway's admin servers.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: CancellationToken,
) {
    serve_router_with(listener, app, cancel, MAX_ADMIN_CONNECTIONS).await;
}

/// Admin connections served at once (Prometheus, health checks and an operator's curl need a
/// handful).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// [`serve_router`] with at most `max` connections at once.
pub async fn serve_router_with(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: CancellationToken,
    max: usize,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max));
    loop {
        // The permit first: no task (nor accepted socket) exists without one.
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let Some(socket) = accept(&listener, &cancel, "admin").await else {
            break;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("admin connection ended: {e}");
            }
            drop(permit);
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

/// An exclusive lock on a daemon's data (a store, a catalog), held while this lives. Taken
/// with `flock` on a file of its own beside the data, so "another process has it" is a typed
/// answer ([`lock_exclusive`] returns `None`), not a guess from a database's error text.
#[derive(Debug)]
pub struct DataLock {
    _file: std::fs::File,
}

/// Takes the exclusive lock on `path` (a file, created if missing; its parent must exist).
/// `Ok(None)`: another process (or another open in this one) holds it.
pub fn lock_exclusive(path: &Path) -> std::io::Result<Option<DataLock>> {
    use rustix::fs::{FlockOperation, flock};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(DataLock { _file: file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Bytes free for unprivileged use on the filesystem holding `path` (`statvfs`), or `None`
/// if it cannot be asked.
pub fn disk_available(path: &Path) -> Option<u64> {
    rustix::fs::statvfs(path)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_data_lock_is_exclusive_until_dropped() {
        let dir = std::env::temp_dir().join(format!("cairn-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.lock");
        let held = lock_exclusive(&path).unwrap().expect("free at first");
        assert!(lock_exclusive(&path).unwrap().is_none(), "taken twice");
        drop(held);
        assert!(
            lock_exclusive(&path).unwrap().is_some(),
            "free again once dropped"
        );
        assert!(disk_available(&dir).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Admin connections past the cap wait for a slot instead of each getting a task; a slot
    /// freed lets the next one in.
    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let app = Router::new().route("/health", get(|| async { "ok" }));
        let server = tokio::spawn(serve_router_with(listener, app, cancel.clone(), 2));
        // Two connections that send nothing take both slots.
        let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let ask = || crate::admin::http_get(addr, "/health", Duration::from_millis(400));
        let refused = ask().await;
        assert!(refused.is_err(), "served past the cap: {refused:?}");
        // One of them sends a request and closes: its slot goes to the next.
        idle2
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut idle2, &mut answer)
            .await
            .unwrap();
        drop(idle2);
        let served = crate::admin::http_get(addr, "/health", Duration::from_secs(5)).await;
        assert_eq!(served.unwrap(), (200, "ok".to_string()));
        drop(idle1);
        cancel.cancel();
        server.await.unwrap();
    }
}
