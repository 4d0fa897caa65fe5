//! What a running node shows other programs: its admin HTTP answers (`/status` as
//! [`Status`]), the file it leaves in its data directory ([`RuntimeInfo`]), and a tiny HTTP/1.1
//! client so tools and tests can read them without a full HTTP client stack.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// File in a node's data directory describing the running node (removed on clean shutdown).
pub const RUNTIME_FILE: &str = "node.json";
/// Configuration file inside a node's data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// What a running node tells other programs (`DATA_DIR/node.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Process id.
    pub pid: u32,
    /// Peer id.
    pub peer_id: String,
    /// libp2p multiaddrs, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Data-plane address peers dial.
    pub data_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
}

/// Reads a running node's `node.json`.
pub fn read_runtime_info(data_dir: &Path) -> std::io::Result<RuntimeInfo> {
    let bytes = std::fs::read(data_dir.join(RUNTIME_FILE))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

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
    /// Shard bytes held.
    pub used: u64,
    /// Bytes of manifests and provenance envelopes held: they count against capacity too.
    #[serde(default)]
    pub manifest_bytes: u64,
    /// Bytes the node can still take: the smaller of `capacity - used - manifest_bytes` and
    /// the disk's room beyond its reserve.
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

impl From<crate::swarm::KnownPeer> for PeerStatus {
    fn from(p: crate::swarm::KnownPeer) -> Self {
        Self {
            peer_id: p.peer_id,
            addrs: p.addrs,
            connected: p.connected,
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
