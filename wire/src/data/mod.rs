//! The data plane: shard and manifest bytes over a quinn QUIC endpoint keyed to the node's
//! libp2p identity.
//!
//! Both ends present libp2p-TLS certificates (the libp2p key signs the TLS key), so a client
//! knows it reached the peer id it dialled and a server knows which peer id is talking. One
//! request per bidirectional stream:
//!
//! ```text
//! client                                   server
//!   ── u32 len ‖ DataRequest (CBOR) ──────►  check limits, space
//!   ── raw body (Store / PutManifest) ────►  verify against the CID, write to RocksDB
//!   ◄───────── u32 len ‖ DataResponse ────
//!   ◄───────── raw body (Proof / Manifest)   client verifies every 16 KiB as it arrives
//! ```
//!
//! Limits: header <= 64 KiB; shard <= 64 MiB; streams per connection bounded by quinn
//! (`network.max_streams_per_peer`); bytes buffered for incoming shards bounded by a node-wide
//! semaphore; every request has a deadline. Malformed input gets an error answer and closes
//! that stream only; it never panics the node.

// Errors name the peer (a 38+-byte PeerId) so callers can say which node failed; next to
// network I/O their size does not matter.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_chunker::cids::Cid;
use cairn_chunker::verified;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, VarInt};

use crate::protocol::{DATA_ALPN, RemoteError};

/// Whole-shard fetches are verified and queued in pieces of this size, so the first bytes leave
/// after one piece is hashed rather than the whole shard; a client yields to other tasks after
/// verifying this much.
pub const SEND_PIECE: usize = 8 * verified::GROUP_BYTES;
/// Verified pieces a whole-shard send may run ahead of the network by.
pub const PIECES_AHEAD: usize = 4;
/// Time allowed to establish a connection: a stopped node fails this fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Ranges up to this long are served in the fast lane (ahead of bulk transfers).
pub const FAST_LANE_BYTES: u64 = 2 * verified::GROUP_BYTES as u64;
/// Time allowed for a peer to start answering a request.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for a whole request, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed between two arrivals of an answer's bytes: a peer that stops sending part-way
/// is given up on this soon, not only when [`REQUEST_TIMEOUT`] runs out.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of incoming shard bodies a node buffers at once, across all peers.
pub const MAX_INFLIGHT_BYTES: usize = 512 << 20;
/// Bytes of range answers (data and proof) a node holds at once while their peers take them.
pub const MAX_OUTGOING_BYTES: usize = 512 << 20;
/// Whole-shard sends at once. Each holds a blocking thread while it runs, so this stays well
/// below tokio's 512, leaving threads for store writes, small reads and the scrub.
pub const SENDS_AT_ONCE: usize = 256;
/// Data-plane connections one peer (one node key) may hold at once. A client holds one per
/// node; this bounds what one peer can take of the node's streams and connections
/// (`max_concurrent_bidi_streams` bounds each connection).
pub const MAX_CONNECTIONS_PER_PEER: usize = 16;
/// Most pages of receipts [`Client::get_receipts`] takes for one manifest, each up to
/// [`RECEIPTS_PER_MESSAGE`](crate::protocol::RECEIPTS_PER_MESSAGE) receipts: about four
/// million in all, so a node cannot make a reader take receipts without end.
pub const MAX_RECEIPT_PAGES: usize = 64;
/// Store writes waiting on the disk at once (the node's data-plane server holds them to this); their bodies are already
/// bounded by [`MAX_INFLIGHT_BYTES`].
pub const WRITES_AT_ONCE: usize = 32;

/// Errors talking to a peer's data plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The peer could not be reached.
    #[error("could not reach node {peer} at {addr}: {reason} (is it running?)")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Its data-plane address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The peer did not answer in time.
    #[error("node {peer} did not answer within {secs}s")]
    Timeout {
        /// The peer.
        peer: PeerId,
        /// The deadline.
        secs: u64,
    },
    /// The peer stopped sending part-way through an answer.
    #[error("node {peer} sent nothing for {secs}s, {received} data bytes into its answer")]
    Stalled {
        /// The peer.
        peer: PeerId,
        /// How long nothing arrived.
        secs: u64,
        /// Data bytes that had arrived: of the shard (0 while its outboard was coming), of the
        /// proof stream for a range, of the manifest.
        received: u64,
    },
    /// The peer answered with an error.
    #[error("node {peer} refused: {error}")]
    Remote {
        /// The peer.
        peer: PeerId,
        /// Its answer.
        error: RemoteError,
    },
    /// The peer's bytes did not verify against the CID.
    #[error("node {peer} sent bytes for {cid} that do not verify: {reason}")]
    BadData {
        /// The peer.
        peer: PeerId,
        /// The shard or manifest.
        cid: Cid,
        /// What failed.
        reason: String,
    },
    /// The peer broke the protocol (bad frame, wrong lengths, stream reset).
    #[error("protocol error with node {peer}: {reason}")]
    Protocol {
        /// The peer.
        peer: PeerId,
        /// What happened.
        reason: String,
    },
    /// Local setup failed (certificates, socket).
    #[error("data plane setup: {0}")]
    Setup(String),
}

impl DataError {
    /// The peer involved, if any.
    pub fn peer(&self) -> Option<PeerId> {
        match self {
            DataError::Unreachable { peer, .. }
            | DataError::Timeout { peer, .. }
            | DataError::Stalled { peer, .. }
            | DataError::Remote { peer, .. }
            | DataError::BadData { peer, .. }
            | DataError::Protocol { peer, .. } => Some(*peer),
            DataError::Setup(_) => None,
        }
    }
}

/// A peer's data-plane address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Its identity (checked in the TLS handshake).
    pub peer: PeerId,
    /// Its data-plane UDP address.
    pub addr: SocketAddr,
}

/// Traffic-free time after which either end of a data connection sends a keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// What [`Client::silent_for`] last saw of a connection.
#[derive(Debug, Clone, Copy)]
struct Heard {
    conn: usize,
    datagrams: u64,
    since: Instant,
}

/// What a server lets one peer send ahead of what it has read (upload bodies), per stream and
/// per connection: the node reads bodies a step at a time against its budget, so what quinn
/// buffers beyond that is kept small (a client receives answers in larger windows).
const SERVER_STREAM_WINDOW: u32 = 2 << 20;
const SERVER_CONNECTION_WINDOW: u32 = 16 << 20;

fn transport(max_streams: u32, server: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(max_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    let (stream, conn) = if server {
        (SERVER_STREAM_WINDOW, SERVER_CONNECTION_WINDOW)
    } else {
        (16 << 20, 64 << 20)
    };
    t.stream_receive_window(VarInt::from_u32(stream));
    t.receive_window(VarInt::from_u32(conn));
    t.send_window(64 << 20);
    // A killed peer sends nothing; keep-alives let the other side notice within the idle timeout.
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(VarInt::from_u32(10_000).into()));
    t.allow_spin(false);
    Arc::new(t)
}

/// Builds a data-plane endpoint on `addr`: a server too when `serve` is set.
pub fn endpoint(
    keypair: &Keypair,
    addr: SocketAddr,
    serve: Option<u32>,
) -> Result<Endpoint, DataError> {
    let setup = |e: String| DataError::Setup(e);
    let server = match serve {
        Some(max_streams) => {
            let tls =
                crate::tls::server_config(keypair, DATA_ALPN).map_err(|e| setup(e.to_string()))?;
            let crypto = QuicServerConfig::try_from(tls).map_err(|e| setup(e.to_string()))?;
            let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            config.transport_config(transport(max_streams, true));
            config.migration(false);
            Some(config)
        }
        None => None,
    };
    let socket = udp_socket(addr).map_err(|e| setup(format!("binding UDP {addr}: {e}")))?;
    let runtime = quinn::default_runtime().ok_or_else(|| setup("no async runtime".into()))?;
    Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
        .map_err(|e| setup(e.to_string()))
}

/// Socket buffer size asked for on data-plane UDP sockets.
pub const UDP_BUFFER: usize = 2 << 20;

/// A UDP socket bound to `addr` with large kernel buffers. With the default (~208 KiB) a node
/// or gateway receiving from several peers at once drops datagrams whenever it is a moment late
/// reading them, and every drop stalls its stream for a loss-recovery round (seen here: p99 time
/// to first byte of range reads 0.3-1.4 s). The kernel caps the size at `net.core.rmem_max` /
/// `wmem_max`; a smaller effective buffer is logged.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    // Linux reports twice what was granted (the other half is its bookkeeping).
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < UDP_BUFFER {
        tracing::debug!(
            asked = UDP_BUFFER,
            got,
            "UDP receive buffer capped by the kernel; raise net.core.rmem_max for fewer drops under load"
        );
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The peer id a connection authenticated as.
pub fn remote_peer(conn: &Connection) -> Option<PeerId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    crate::tls::peer_of(&certs)
}

// ---------------------------------------------------------------------------------------------
// Server

mod client;
pub mod frame;
mod leases;

pub use client::Client;
