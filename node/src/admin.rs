//! The admin HTTP server: `GET /health`, `GET /metrics` (Prometheus text), `GET /status` (JSON).
//! Also a tiny HTTP GET client, so tools and tests can read a node's status without a
//! full HTTP client stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::NodeMetrics;
use crate::store::Store;
use crate::swarm::{KnownPeer, Swarm};

/// What `/status` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// libp2p peer id.
    pub peer_id: String,
    /// Software version.
    pub version: String,
    /// libp2p addresses (with `/p2p/<peer id>`): give one to others as a bootstrap peer.
    pub listen: Vec<String>,
    /// Data-plane addresses.
    pub data_addrs: Vec<SocketAddr>,
    /// Failure-domain label.
    pub label: Option<String>,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes used.
    pub used: u64,
    /// Shard bytes the node can still take: the smaller of `capacity - used` and the disk's room
    /// beyond its reserve.
    pub free: u64,
    /// Bytes free on the filesystem that holds the store (`null` if it could not be asked).
    pub disk_available: Option<u64>,
    /// Bytes kept free on that filesystem (`storage.disk_reserve`).
    pub disk_reserve: u64,
    /// Shards stored.
    pub shards: u64,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Every peer known (routing table and connections).
    pub peers: Vec<PeerStatus>,
}

/// One peer in `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer id.
    pub peer_id: String,
    /// Known addresses.
    pub addrs: Vec<String>,
    /// Connected now.
    pub connected: bool,
}

impl From<KnownPeer> for PeerStatus {
    fn from(p: KnownPeer) -> Self {
        Self {
            peer_id: p.peer_id,
            addrs: p.addrs,
            connected: p.connected,
        }
    }
}

/// Everything the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Arc<Store>,
    /// The swarm.
    pub swarm: Swarm,
    /// Metrics.
    pub metrics: Arc<NodeMetrics>,
    /// Data-plane addresses.
    pub data_addrs: Vec<SocketAddr>,
    /// Label.
    pub label: Option<String>,
}

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let peers = s.swarm.peers().await.unwrap_or_default();
    let connected = peers.iter().filter(|p| p.connected).count();
    let body = s.metrics.render(s.store.stats(), connected, peers.len());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn status(State(s): State<AdminState>) -> Response {
    let (Ok(peers), Ok(listen)) = (s.swarm.peers().await, s.swarm.listening().await) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "network task stopped\n").into_response();
    };
    let stats = s.store.stats();
    Json(Status {
        peer_id: s.swarm.local_peer_id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen: listen.iter().map(ToString::to_string).collect(),
        data_addrs: s.data_addrs.clone(),
        label: s.label.clone(),
        capacity: stats.capacity,
        used: stats.used,
        free: stats.free(),
        disk_available: stats.disk_available,
        disk_reserve: stats.disk_reserve,
        shards: stats.shards,
        connected_peers: peers.iter().filter(|p| p.connected).count(),
        peers: peers.into_iter().map(PeerStatus::from).collect(),
    })
    .into_response()
}

/// Serves the admin API on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state);
    serve_router(listener, app, cancel).await;
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

/// A minimal HTTP/1.1 GET: returns the status code and body.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], b"", timeout).await
}

/// A minimal HTTP/1.1 request with headers and a body: returns the status code and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut buf = Vec::new();
        stream.take(16 << 20).read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
            })?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((code, body))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{addr}{path} did not answer"),
        )
    })?
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
