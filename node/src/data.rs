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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::verified::{self, RangeDecoder};
use futures::FutureExt;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::NodeMetrics;
use crate::protocol::{
    DATA_ALPN, DataRequest, DataResponse, ErrorCode, Holding, MAX_DATA_HEADER, MAX_ENVELOPE_BYTES,
    ManifestKind, RESET_ABORTED, RESET_CORRUPT, RemoteError, decode_body, encode_frame,
};
use crate::store::{Store, StoreError};

/// Whole-shard fetches are verified and queued in pieces of this size, so the first bytes leave
/// after one piece is hashed rather than the whole shard; a client yields to other tasks after
/// verifying this much.
const SEND_PIECE: usize = 8 * verified::GROUP_BYTES;
/// Verified pieces a whole-shard send may run ahead of the network by.
const PIECES_AHEAD: usize = 4;
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
/// Store writes waiting on the disk at once (see [`Server::io`]); their bodies are already
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

fn transport(max_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(max_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(VarInt::from_u32(16 << 20));
    t.receive_window(VarInt::from_u32(64 << 20));
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
            config.transport_config(transport(max_streams));
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
fn remote_peer(conn: &Connection) -> Option<PeerId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    crate::tls::peer_of(&certs)
}

// ---------------------------------------------------------------------------------------------
// Server

/// What the data-plane server needs.
pub struct Server {
    /// The shard store.
    pub store: Arc<Store>,
    /// Metrics to update.
    pub metrics: Arc<NodeMetrics>,
    /// Bounds bytes of incoming bodies buffered at once (permits are KiB).
    pub inflight: Arc<Semaphore>,
    /// Bounds store work (RocksDB + BLAKE3, CPU-bound) running at once to the number of cores:
    /// more would only thrash caches and delay every request.
    pub cpu: Arc<Semaphore>,
    /// The fast lane's own bound: small reads do not queue behind bulk ones for `cpu`, but
    /// many peers asking for small ranges at once still cannot occupy every blocking thread.
    pub fast: Arc<Semaphore>,
    /// Bounds writes (RocksDB writes, each an fsync by default) waiting on the disk at once.
    /// They hold no `cpu` permit while they wait, so a slow disk does not stall reads and
    /// hashing, and concurrent writes share fsyncs (RocksDB commits them as one group).
    pub io: Arc<Semaphore>,
    /// Bounds bytes of range answers waiting for their peers (permits are KiB).
    pub outgoing: Arc<Semaphore>,
    /// Bounds whole-shard sends at once (each holds a blocking thread).
    pub sends: Arc<Semaphore>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `store`.
    pub fn new(store: Arc<Store>, metrics: Arc<NodeMetrics>) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Self {
            store,
            metrics,
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_BYTES / 1024)),
            cpu: Arc::new(Semaphore::new(cores)),
            fast: Arc::new(Semaphore::new(cores * 4)),
            io: Arc::new(Semaphore::new(WRITES_AT_ONCE)),
            outgoing: Arc::new(Semaphore::new(MAX_OUTGOING_BYTES / 1024)),
            sends: Arc::new(Semaphore::new(SENDS_AT_ONCE)),
        })
    }

    /// Accepts connections until `cancel` fires. Each connection and stream runs in its own task;
    /// quinn bounds streams per connection, and tasks end when the endpoint closes.
    pub async fn run(self: Arc<Self>, endpoint: Endpoint, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let per_peer: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
        loop {
            let incoming = tokio::select! {
                _ = cancel.cancelled() => break,
                i = endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { break };
            if tasks.len() >= 4096 {
                incoming.refuse();
                continue;
            }
            let server = self.clone();
            let cancel = cancel.clone();
            let per_peer = per_peer.clone();
            tasks.spawn(async move {
                let conn = match tokio::time::timeout(CONNECT_TIMEOUT, incoming).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::debug!("data-plane handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                let Some(peer) = remote_peer(&conn) else {
                    conn.close(VarInt::from_u32(1), b"no libp2p identity");
                    return;
                };
                let Some(_slot) = PeerSlot::take(&per_peer, peer) else {
                    server.metrics.net.busy.inc();
                    tracing::debug!(%peer, "refused a data-plane connection: the peer holds enough");
                    conn.close(VarInt::from_u32(2), b"too many connections from this peer");
                    return;
                };
                let mut streams = tokio::task::JoinSet::new();
                loop {
                    let accepted = tokio::select! {
                        _ = cancel.cancelled() => break,
                        s = conn.accept_bi() => s,
                    };
                    let Ok((send, recv)) = accepted else { break };
                    let server = server.clone();
                    streams.spawn(async move { server.handle_stream(peer, send, recv).await });
                    while streams.try_join_next().is_some() {}
                }
                streams.abort_all();
            });
            while tasks.try_join_next().is_some() {}
        }
        endpoint.close(VarInt::from_u32(0), b"shutting down");
        tasks.abort_all();
    }

    async fn handle_stream(&self, peer: PeerId, mut send: SendStream, mut recv: RecvStream) {
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, self.serve(&mut send, &mut recv)).await;
        let error = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(Failure::Answer(e))) => e,
            Ok(Err(Failure::Gone(reason))) => {
                tracing::debug!(%peer, "data stream ended: {reason}");
                return;
            }
            Ok(Err(Failure::Reset { code, reason })) => {
                // Part of the answer is out already: cut the stream with a code that tells the
                // client why (`RESET_CORRUPT`: the store has quarantined and logged its copy).
                self.metrics.net.request_errors.inc();
                tracing::warn!(%peer, code, "stopped sending a shard: {reason}");
                let _ = recv.stop(VarInt::from_u32(0));
                let _ = send.reset(VarInt::from_u32(code));
                return;
            }
            Err(_) => RemoteError {
                code: ErrorCode::BadRequest,
                message: format!(
                    "request not completed within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            },
        };
        self.metrics.net.request_errors.inc();
        tracing::debug!(%peer, code = ?error.code, "data request refused: {}", error.message);
        let _ = recv.stop(VarInt::from_u32(0));
        let frame = encode_frame(&DataResponse::Error(error));
        if tokio::time::timeout(STALL_TIMEOUT, send.write_all(&frame))
            .await
            .is_err()
        {
            let _ = send.reset(VarInt::from_u32(RESET_ABORTED));
            return;
        }
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    }

    async fn serve(&self, send: &mut SendStream, recv: &mut RecvStream) -> Result<(), Failure> {
        let request: DataRequest =
            tokio::time::timeout(FIRST_BYTE_TIMEOUT, read_frame(recv, MAX_DATA_HEADER))
                .await
                .map_err(|_| {
                    Failure::answer(ErrorCode::BadRequest, "no request header in time")
                })??;
        request.check().map_err(Failure::Answer)?;
        match request {
            DataRequest::Store { cid, len } => {
                cids::digest(&cid, Codec::Raw)
                    .map_err(|e| Failure::answer(ErrorCode::BadRequest, e.to_string()))?;
                self.store.check_space(len).map_err(store_failure)?;
                let _permit = self.reserve(len).await?;
                let body = read_body(recv, len as usize).await?;
                self.metrics.net.bytes_in.inc_by(len);
                let store = self.store.clone();
                let checked = self.blocking(move || store.check_shard(&cid, body)).await?;
                let store = self.store.clone();
                self.writing(move || store.commit_shard(checked)).await?;
                respond(send, &DataResponse::Stored, None).await
            }
            DataRequest::Fetch { cid, range } => {
                let store = self.store.clone();
                match range {
                    // Whole shards: outboard then data, a stored piece at a time.
                    // The outboard goes first (checked against the CID when opened); a
                    // blocking task then hashes the data piece by piece and hands each
                    // verified piece over, so the first bytes leave while the rest is still
                    // being hashed, and the hashing stays off the async workers (where it
                    // would delay fast-lane reads). A corrupt piece is never sent: the
                    // stream is reset with `RESET_CORRUPT` instead.
                    None => {
                        let (head, mut pieces) = self.spawn_outgoing(cid).await?;
                        let (size, outboard) = head
                            .await
                            .map_err(|_| Failure::answer(ErrorCode::Internal, "store task failed"))?
                            .map_err(store_failure)?;
                        let header = encode_frame(&DataResponse::Shard { size });
                        self.metrics.net.bytes_out.inc_by(outboard.len() as u64);
                        let mut first = [Bytes::from(header), outboard];
                        write_all(send, &mut first).await?;
                        // Every verified piece ready is handed to quinn in one call: one
                        // wake-up of the connection instead of one per piece.
                        let mut batch = Vec::with_capacity(PIECES_AHEAD);
                        let mut failed = None;
                        while let Some(piece) = pieces.recv().await {
                            let mut next = Some(piece);
                            while let Some(piece) = next.take() {
                                match piece {
                                    Ok(piece) => batch.push(piece),
                                    Err(e) => {
                                        failed = Some(e);
                                        break;
                                    }
                                }
                                next = pieces.try_recv().ok();
                            }
                            let bytes: usize = batch.iter().map(Bytes::len).sum();
                            self.metrics.net.bytes_out.inc_by(bytes as u64);
                            write_all(send, &mut batch).await?;
                            batch.clear();
                            if let Some(e) = failed {
                                let code = match e {
                                    StoreError::Corrupt { .. } => RESET_CORRUPT,
                                    _ => RESET_ABORTED,
                                };
                                let reason = e.to_string();
                                return Err(Failure::Reset { code, reason });
                            }
                        }
                        let _ = send.finish();
                        let _ = tokio::time::timeout(REQUEST_TIMEOUT, send.stopped()).await;
                        Ok(())
                    }
                    Some((a, b)) => {
                        let started = Instant::now();
                        // The fast lane: a range of at most two groups is usually the head of a
                        // read that a reader is waiting on (see `Client::fetch_head_first`). It
                        // takes a permit from the fast pool instead of queueing for `cpu`, and
                        // its bytes leave before the bulk streams' on this connection.
                        let small = b.saturating_sub(a) <= FAST_LANE_BYTES;
                        // The answer is held whole until the peer has taken it: count it
                        // against what the node holds for peers.
                        let _held = self.hold_outgoing(b.saturating_sub(a)).await?;
                        let read = move || store.read_range(&cid, Some(a..b));
                        let (size, proof) = if small {
                            let _ = send.set_priority(1);
                            let _permit = self.fast.acquire().await.map_err(|_| {
                                Failure::answer(ErrorCode::Internal, "shutting down")
                            })?;
                            blocking_task(read).await?
                        } else {
                            self.blocking(read).await?
                        };
                        let ready = started.elapsed();
                        self.metrics.net.bytes_out.inc_by(proof.len() as u64);
                        let header = DataResponse::Proof {
                            size,
                            len: proof.len() as u64,
                        };
                        let r = respond(send, &header, Some(Bytes::from(proof))).await;
                        tracing::debug!(
                            %cid,
                            from = a,
                            len = b - a,
                            ready_ms = ready.as_millis() as u64,
                            ms = started.elapsed().as_millis() as u64,
                            "served a range"
                        );
                        r
                    }
                }
            }
            DataRequest::PutManifest {
                cid,
                kind,
                len,
                envelopes,
            } => {
                let _permit = self
                    .reserve(len + u64::from(envelopes) * MAX_ENVELOPE_BYTES as u64)
                    .await?;
                let body = read_body(recv, len as usize).await?;
                let mut envs = Vec::with_capacity(envelopes as usize);
                for _ in 0..envelopes {
                    let n = read_u32(recv).await? as usize;
                    if n > MAX_ENVELOPE_BYTES {
                        return Err(Failure::answer(
                            ErrorCode::BadRequest,
                            format!("envelope of {n} bytes is over {MAX_ENVELOPE_BYTES}"),
                        ));
                    }
                    envs.push(read_body(recv, n).await?.to_vec());
                }
                self.metrics.net.bytes_in.inc_by(len);
                let store = self.store.clone();
                // A manifest's checks (decode, signatures) are small beside its fsync.
                self.writing(move || store.put_manifest(&cid, kind, &body, &envs))
                    .await?;
                respond(send, &DataResponse::Stored, None).await
            }
            DataRequest::Has { cids } => {
                let store = self.store.clone();
                let held = self.blocking(move || store.has(&cids)).await?;
                respond(send, &DataResponse::Has(held), None).await
            }
            DataRequest::GetManifest { cid } => {
                let store = self.store.clone();
                let (bytes, envs) = self.blocking(move || store.get_manifest(&cid)).await?;
                let mut body = Vec::with_capacity(
                    bytes.len() + envs.iter().map(|e| e.len() + 4).sum::<usize>(),
                );
                body.extend_from_slice(&bytes);
                for e in &envs {
                    body.extend_from_slice(&(e.len() as u32).to_le_bytes());
                    body.extend_from_slice(e);
                }
                self.metrics.net.bytes_out.inc_by(body.len() as u64);
                let header = DataResponse::Manifest {
                    len: bytes.len() as u64,
                    envelopes: envs.len() as u32,
                };
                respond(send, &header, Some(Bytes::from(body))).await
            }
        }
    }

    /// Opens `cid` for sending on a blocking thread that then verifies it piece by piece: the
    /// first channel gets its size and outboard (or why it cannot be sent), the second the
    /// verified pieces, ending with an error if a piece fails. The thread holds a CPU permit
    /// while it hashes, and lets it go while it waits for a slow receiver, so a stalled
    /// connection cannot keep other reads from the CPU.
    async fn spawn_outgoing(&self, cid: Cid) -> Result<(OutgoingHead, OutgoingPieces), Failure> {
        let shutting_down = || Failure::answer(ErrorCode::Internal, "shutting down");
        let send_slot =
            match tokio::time::timeout(Duration::from_secs(10), self.sends.clone().acquire_owned())
                .await
            {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) => return Err(shutting_down()),
                Err(_) => {
                    self.metrics.net.busy.inc();
                    return Err(Failure::answer(
                        ErrorCode::Busy,
                        "too many shards being sent; retry shortly",
                    ));
                }
            };
        let permit = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shutting_down())?;
        let (store, cpu) = (self.store.clone(), self.cpu.clone());
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(PIECES_AHEAD);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _send_slot = send_slot;
            let mut permit = Some(permit);
            let mut shard = match store.open_outgoing(&cid) {
                Ok(shard) => shard,
                Err(e) => {
                    let _ = head_tx.send(Err(e));
                    return;
                }
            };
            if head_tx
                .send(Ok((shard.size(), shard.outboard().clone())))
                .is_err()
            {
                return;
            }
            loop {
                if permit.is_none() {
                    match runtime.block_on(cpu.clone().acquire_owned()) {
                        Ok(p) => permit = Some(p),
                        Err(_) => return,
                    }
                }
                let piece = shard.next_piece(&store, SEND_PIECE).transpose();
                let Some(piece) = piece else { return };
                let failed = piece.is_err();
                let piece = match tx.try_send(piece) {
                    Ok(()) => None,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(piece)) => Some(piece),
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                };
                if let Some(piece) = piece {
                    // The receiver is behind: wait for it without holding the CPU.
                    permit = None;
                    if tx.blocking_send(piece).is_err() {
                        return;
                    }
                }
                if failed {
                    return;
                }
            }
        });
        Ok((head_rx, rx))
    }

    /// Runs store work on a blocking thread, at most one per core at a time.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Failure> {
        permitted(&self.cpu, f).await
    }

    /// Runs a store write on a blocking thread, at most [`WRITES_AT_ONCE`] at a time.
    async fn writing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Failure> {
        permitted(&self.io, f).await
    }

    /// Counts `bytes` of an answer against [`MAX_OUTGOING_BYTES`] until the permit drops (its
    /// proof adds under 1 %, and 64 KiB covers a small range's).
    async fn hold_outgoing(&self, bytes: u64) -> Result<tokio::sync::SemaphorePermit<'_>, Failure> {
        let busy = "too many answers waiting for their peers; retry shortly";
        let bytes = bytes.saturating_add(64 * 1024);
        self.budget(&self.outgoing, bytes, MAX_OUTGOING_BYTES, busy)
            .await
    }

    /// Counts `bytes` of an incoming body against [`MAX_INFLIGHT_BYTES`] until the permit drops.
    async fn reserve(&self, bytes: u64) -> Result<tokio::sync::SemaphorePermit<'_>, Failure> {
        let busy = "too many bytes in flight; retry shortly";
        self.budget(&self.inflight, bytes, MAX_INFLIGHT_BYTES, busy)
            .await
    }

    /// Takes `bytes` (at most all `max`) of the KiB permits of `pool`, waiting up to 10 s before
    /// answering `Busy`.
    async fn budget<'a>(
        &self,
        pool: &'a Semaphore,
        bytes: u64,
        max: usize,
        busy: &str,
    ) -> Result<tokio::sync::SemaphorePermit<'a>, Failure> {
        let kib = bytes.div_ceil(1024).min(max as u64 / 1024) as u32;
        match tokio::time::timeout(Duration::from_secs(10), pool.acquire_many(kib)).await {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.metrics.net.busy.inc();
                Err(Failure::answer(ErrorCode::Busy, busy))
            }
        }
    }
}

/// One of a peer's [`MAX_CONNECTIONS_PER_PEER`] connections, given back when dropped.
struct PeerSlot {
    counts: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl PeerSlot {
    fn take(counts: &Arc<Mutex<HashMap<PeerId, usize>>>, peer: PeerId) -> Option<Self> {
        let mut held = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(peer).or_default();
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: counts.clone(),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.peer);
            }
        }
    }
}

/// Size and outboard of a shard opened for sending, or why it cannot be sent.
type OutgoingHead = tokio::sync::oneshot::Receiver<Result<(u64, Bytes), StoreError>>;
/// Verified pieces of a shard being sent; an error ends it.
type OutgoingPieces = tokio::sync::mpsc::Receiver<Result<Bytes, StoreError>>;

/// How a request ended badly.
enum Failure {
    /// Tell the peer.
    Answer(RemoteError),
    /// The peer went away; nothing to say.
    Gone(String),
    /// Sending stopped after part of the answer was out: reset the stream with `code`
    /// ([`RESET_CORRUPT`] if the stored copy turned out corrupt, else [`RESET_ABORTED`]).
    Reset {
        /// The reset code.
        code: u32,
        /// Why, for the log.
        reason: String,
    },
}

impl Failure {
    fn answer(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure::Answer(RemoteError {
            code,
            message: message.into(),
        })
    }
}

impl From<FrameFailure> for Failure {
    fn from(e: FrameFailure) -> Self {
        match e {
            FrameFailure::Malformed(m) => Failure::answer(ErrorCode::BadRequest, m),
            FrameFailure::Io(m) => Failure::Gone(m),
            // A sender that goes quiet part-way does not keep its stream (and the memory
            // reserved for its body) until the request limit.
            FrameFailure::Stalled(n) => Failure::Gone(format!(
                "nothing arrived for {}s, {n} body bytes in",
                STALL_TIMEOUT.as_secs()
            )),
        }
    }
}

fn store_failure(e: StoreError) -> Failure {
    let code = match &e {
        StoreError::NotFound { .. } => ErrorCode::NotFound,
        StoreError::Corrupt { .. } => ErrorCode::Corrupt,
        StoreError::HashMismatch { .. } => ErrorCode::HashMismatch,
        StoreError::NoSpace { .. } | StoreError::DiskFull { .. } => ErrorCode::NoSpace,
        StoreError::BadSize { .. }
        | StoreError::Cid(_)
        | StoreError::Range(_)
        | StoreError::Manifest(_)
        | StoreError::TooManyEnvelopes { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    if code == ErrorCode::Internal {
        tracing::error!("store error: {e}");
    }
    Failure::Answer(RemoteError {
        code,
        message: e.to_string(),
    })
}

/// Runs `f` on a blocking thread while holding a permit of `pool`.
async fn permitted<T: Send + 'static>(
    pool: &Semaphore,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    let _permit = pool
        .acquire()
        .await
        .map_err(|_| Failure::answer(ErrorCode::Internal, "shutting down"))?;
    blocking_task(f).await
}

async fn blocking_task<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(store_failure),
        Err(e) => Err(Failure::answer(
            ErrorCode::Internal,
            format!("store task failed: {e}"),
        )),
    }
}

async fn respond(
    send: &mut SendStream,
    header: &DataResponse,
    body: Option<Bytes>,
) -> Result<(), Failure> {
    let mut chunks = [Bytes::from(encode_frame(header)), body.unwrap_or_default()];
    write_all(send, &mut chunks).await?;
    let _ = send.finish();
    // Wait until the peer has the whole answer (or gave up), so dropping the stream loses nothing.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, send.stopped()).await;
    Ok(())
}

/// Writes `chunks` to the peer, giving up (the stream is then reset) if it takes nothing for
/// [`STALL_TIMEOUT`]: a peer that asks and does not read cannot hold the answer, its buffers or
/// its sending thread for long.
async fn write_all(send: &mut SendStream, chunks: &mut [Bytes]) -> Result<(), Failure> {
    let mut rest = &mut chunks[..];
    while let Some(i) = rest.iter().position(|c| !c.is_empty()) {
        rest = &mut rest[i..];
        match tokio::time::timeout(STALL_TIMEOUT, send.write_chunks(rest)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Failure::Gone(e.to_string())),
            Err(_) => {
                return Err(Failure::Reset {
                    code: RESET_ABORTED,
                    reason: format!("the peer took nothing for {}s", STALL_TIMEOUT.as_secs()),
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Framing on quinn streams

enum FrameFailure {
    Malformed(String),
    Io(String),
    /// Nothing arrived for [`STALL_TIMEOUT`], this many body bytes in.
    Stalled(u64),
}

async fn read_u32(recv: &mut RecvStream) -> Result<u32, FrameFailure> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| FrameFailure::Io(e.to_string()))?;
    Ok(u32::from_le_bytes(len))
}

async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<T, FrameFailure> {
    let len = read_u32(recv).await? as usize;
    if len > limit {
        return Err(FrameFailure::Malformed(format!(
            "header of {len} bytes is over the {limit}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| FrameFailure::Io(e.to_string()))?;
    decode_body(&body).map_err(|e| FrameFailure::Malformed(e.to_string()))
}

/// Reads exactly `len` bytes without copying quinn's chunks more than once.
/// Gives up with [`FrameFailure::Stalled`] when nothing arrives for [`STALL_TIMEOUT`].
async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, FrameFailure> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let read = tokio::time::timeout(STALL_TIMEOUT, recv.read_chunk(len - buf.len(), true));
        match read.await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk.bytes),
            Ok(Ok(None)) => {
                return Err(FrameFailure::Io(format!(
                    "stream ended after {} of {len} bytes",
                    buf.len()
                )));
            }
            Ok(Err(e)) => return Err(FrameFailure::Io(e.to_string())),
            Err(_) => return Err(FrameFailure::Stalled(buf.len() as u64)),
        }
    }
    Ok(buf.freeze())
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    encode_frame(msg)
}

// ---------------------------------------------------------------------------------------------
// Client

/// A data-plane client: dials peers by peer id and address, keeps one connection per peer
/// address, and retries a request once on a fresh connection when a cached one turns out dead
/// (every request is idempotent).
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    keypair: Keypair,
    conns: Arc<Mutex<HashMap<Target, Connection>>>,
    /// Dials under way: requests that find no connection to a node wait for the one dial, so a
    /// burst of them opens one connection, not one each (a node takes at most
    /// [`MAX_CONNECTIONS_PER_PEER`] from a peer), and all learn at once if it fails.
    dialing: Arc<Mutex<HashMap<Target, Dial>>>,
    /// Per connection watched by [`Client::silent_for`]: its id, the datagrams received when
    /// last asked, and since when that count has not moved.
    heard: Arc<Mutex<HashMap<Target, Heard>>>,
    max_streams: u32,
    /// A second endpoint (its own UDP socket and connections) for fast-lane requests, so their
    /// answers do not wait in the kernel's receive queue behind bulk transfers.
    fast: Option<Box<Client>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// A dial under way, shared by every request waiting for it.
type Dial =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<Connection, DialError>>>;

/// Why a dial failed (cloneable, for every request that waited on it).
#[derive(Debug, Clone)]
enum DialError {
    Setup(String),
    Unreachable(String),
}

/// A failed read of an answer: a reset with [`RESET_CORRUPT`] is the node saying its copy is
/// corrupt; anything else is a transport failure.
fn read_failed(peer: PeerId, e: quinn::ReadError) -> DataError {
    match e {
        quinn::ReadError::Reset(code) if code.into_inner() == u64::from(RESET_CORRUPT) => {
            DataError::Remote {
                peer,
                error: RemoteError {
                    code: ErrorCode::Corrupt,
                    message: "the node found its copy corrupt while sending it (quarantined)"
                        .into(),
                },
            }
        }
        e => DataError::Protocol {
            peer,
            reason: e.to_string(),
        },
    }
}

fn write_err(peer: PeerId) -> impl Fn(quinn::WriteError) -> DataError {
    move |e| DataError::Protocol {
        peer,
        reason: e.to_string(),
    }
}

impl Client {
    /// A client that dials from `endpoint` (a node's own endpoint, or a client-only one).
    pub fn new(endpoint: Endpoint, keypair: Keypair, max_streams: u32) -> Self {
        Self {
            endpoint,
            keypair,
            conns: Arc::new(Mutex::new(HashMap::new())),
            dialing: Arc::new(Mutex::new(HashMap::new())),
            heard: Arc::new(Mutex::new(HashMap::new())),
            max_streams,
            fast: None,
        }
    }

    /// A client on its own endpoints bound to ephemeral local ports: one for bulk transfers,
    /// one for the fast lane ([`Client::fetch_head_first`]).
    pub fn bind(keypair: Keypair) -> Result<Self, DataError> {
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let fast = Self::new(endpoint(&keypair, any, None)?, keypair.clone(), 64);
        let mut client = Self::new(endpoint(&keypair, any, None)?, keypair, 64);
        client.fast = Some(Box::new(fast));
        Ok(client)
    }

    /// Opens connections to `targets` (in both lanes) in the background, so the first
    /// requests do not pay for handshakes. Failures are ignored: a request reports them.
    pub fn warm(&self, targets: Vec<Target>) {
        let me = self.clone();
        tokio::spawn(async move {
            let lanes = std::iter::once(&me).chain(me.fast.as_deref());
            let dials = lanes.flat_map(|c| targets.iter().map(move |t| c.connection(t)));
            futures::future::join_all(dials).await;
        });
    }

    /// How long nothing at all has arrived from `t` on its current connection, as far as calls
    /// to this method have seen (the clock starts at the first call for a connection); `None`
    /// without an open connection. Both ends send a keep-alive after [`KEEP_ALIVE`] without
    /// traffic and acknowledge each other's packets, so a live peer is never silent for much
    /// longer than that: a request waiting on a peer silent for several keep-alive periods is
    /// waiting on a peer that is gone (killed, frozen, cut off), whatever its timeouts say yet.
    pub fn silent_for(&self, t: &Target) -> Option<Duration> {
        let conn = self.conns.lock().ok()?.get(t).cloned()?;
        if conn.close_reason().is_some() {
            return None;
        }
        let (id, datagrams) = (conn.stable_id(), conn.stats().udp_rx.datagrams);
        let now = Instant::now();
        let mut heard = self.heard.lock().ok()?;
        let h = heard.entry(*t).or_insert(Heard {
            conn: id,
            datagrams,
            since: now,
        });
        if h.conn != id || h.datagrams != datagrams {
            *h = Heard {
                conn: id,
                datagrams,
                since: now,
            };
        }
        Some(now.duration_since(h.since))
    }

    /// The endpoint's local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    async fn connection(&self, t: &Target) -> Result<Connection, DataError> {
        if let Some(c) = self.cached(t) {
            return Ok(c);
        }
        let dial = {
            let mut dialing = self.dialing.lock().unwrap_or_else(|p| p.into_inner());
            // Another dial may have finished since the cache was looked at.
            if let Some(c) = self.cached(t) {
                return Ok(c);
            }
            dialing
                .entry(*t)
                .or_insert_with(|| self.dial(*t).boxed().shared())
                .clone()
        };
        let result = dial.await;
        {
            let mut dialing = self.dialing.lock().unwrap_or_else(|p| p.into_inner());
            if dialing.get(t).is_some_and(|d| d.peek().is_some()) {
                dialing.remove(t);
            }
        }
        result.map_err(|e| match e {
            DialError::Setup(e) => DataError::Setup(e),
            DialError::Unreachable(reason) => DataError::Unreachable {
                peer: t.peer,
                addr: t.addr,
                reason,
            },
        })
    }

    /// The cached connection to `t`, if it is still open.
    fn cached(&self, t: &Target) -> Option<Connection> {
        let conns = self.conns.lock().ok()?;
        conns.get(t).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// Connects to `t` and caches the connection.
    fn dial(
        &self,
        t: Target,
    ) -> impl Future<Output = Result<Connection, DialError>> + Send + 'static {
        let (endpoint, keypair, conns) = (
            self.endpoint.clone(),
            self.keypair.clone(),
            self.conns.clone(),
        );
        let max_streams = self.max_streams;
        async move {
            let tls = crate::tls::client_config(&keypair, t.peer, DATA_ALPN)
                .map_err(|e| DialError::Setup(e.to_string()))?;
            let crypto =
                QuicClientConfig::try_from(tls).map_err(|e| DialError::Setup(e.to_string()))?;
            let mut config = quinn::ClientConfig::new(Arc::new(crypto));
            config.transport_config(transport(max_streams));
            let connecting = endpoint
                .connect_with(config, t.addr, "l")
                .map_err(|e| DialError::Unreachable(e.to_string()))?;
            let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(DialError::Unreachable(e.to_string())),
                Err(_) => {
                    return Err(DialError::Unreachable(format!(
                        "no answer within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    )));
                }
            };
            if let Ok(mut m) = conns.lock() {
                m.insert(t, conn.clone());
            }
            Ok(conn)
        }
    }

    /// Runs `op` on a stream of a (cached) connection to `t`, within [`REQUEST_TIMEOUT`]; if the
    /// connection was dead, runs it once more on a fresh one.
    async fn request<T, F, Fut>(&self, t: &Target, op: F) -> Result<T, DataError>
    where
        F: Fn(SendStream, RecvStream) -> Fut,
        Fut: std::future::Future<Output = Result<T, DataError>>,
    {
        let attempt = async {
            for attempt in 0..2 {
                let conn = self.connection(t).await?;
                let result = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, conn.open_bi()).await {
                    Ok(Ok((send, recv))) => op(send, recv).await,
                    Ok(Err(e)) => Err(DataError::Unreachable {
                        peer: t.peer,
                        addr: t.addr,
                        reason: e.to_string(),
                    }),
                    Err(_) => Err(DataError::Timeout {
                        peer: t.peer,
                        secs: FIRST_BYTE_TIMEOUT.as_secs(),
                    }),
                };
                match result {
                    Err(e)
                        if attempt == 0
                            && conn.close_reason().is_some()
                            && !matches!(e, DataError::Remote { .. }) =>
                    {
                        tracing::debug!(peer = %t.peer, "connection was dead ({e}); retrying on a new one");
                        if let Ok(mut m) = self.conns.lock() {
                            m.remove(t);
                        }
                    }
                    // A node that closed the connection on purpose says why: say that, not
                    // "connection lost".
                    Err(e) if !matches!(e, DataError::Remote { .. }) => {
                        return Err(match conn.close_reason() {
                            Some(quinn::ConnectionError::ApplicationClosed(close))
                                if !close.reason.is_empty() =>
                            {
                                DataError::Unreachable {
                                    peer: t.peer,
                                    addr: t.addr,
                                    reason: format!(
                                        "the node closed the connection: {}",
                                        String::from_utf8_lossy(&close.reason)
                                    ),
                                }
                            }
                            _ => e,
                        });
                    }
                    other => return other,
                }
            }
            Err(DataError::Unreachable {
                peer: t.peer,
                addr: t.addr,
                reason: "connection lost twice".into(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, attempt)
            .await
            .map_err(|_| DataError::Timeout {
                peer: t.peer,
                secs: REQUEST_TIMEOUT.as_secs(),
            })?
    }

    async fn response(t: &Target, recv: &mut RecvStream) -> Result<DataResponse, DataError> {
        match tokio::time::timeout(
            FIRST_BYTE_TIMEOUT,
            read_frame::<DataResponse>(recv, MAX_DATA_HEADER),
        )
        .await
        {
            Err(_) | Ok(Err(FrameFailure::Stalled(_))) => Err(DataError::Timeout {
                peer: t.peer,
                secs: FIRST_BYTE_TIMEOUT.as_secs(),
            }),
            Ok(Err(FrameFailure::Malformed(reason))) | Ok(Err(FrameFailure::Io(reason))) => {
                Err(DataError::Protocol {
                    peer: t.peer,
                    reason,
                })
            }
            Ok(Ok(DataResponse::Error(error))) => Err(DataError::Remote {
                peer: t.peer,
                error,
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Stores a shard on `t`; the peer verifies it against `cid` before accepting.
    pub async fn store(&self, t: &Target, cid: &Cid, data: Bytes) -> Result<(), DataError> {
        let header = encode(&DataRequest::Store {
            cid: *cid,
            len: data.len() as u64,
        });
        self.request(t, |mut send, mut recv| {
            let (header, data) = (&header, data.clone());
            async move {
                send.write_all(header).await.map_err(write_err(t.peer))?;
                // If the peer refuses early (no space), its answer arrives while we write.
                let write = async {
                    send.write_chunk(data).await.map_err(write_err(t.peer))?;
                    let _ = send.finish();
                    Ok::<(), DataError>(())
                };
                let (written, answer) = tokio::join!(write, Self::response(t, &mut recv));
                match answer? {
                    DataResponse::Stored => Ok(()),
                    other => {
                        written?;
                        Err(DataError::Protocol {
                            peer: t.peer,
                            reason: format!("unexpected answer {other:?}"),
                        })
                    }
                }
            }
        })
        .await
    }

    /// Fetches a shard (or `range` of it) from `t` and verifies every byte against `cid` as it
    /// arrives. `size`, when known from a manifest, is checked against the peer's claim.
    pub async fn fetch(
        &self,
        t: &Target,
        cid: &Cid,
        size: Option<u64>,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, DataError> {
        let got = Mutex::new(None);
        self.fetch_inner(t, cid, size, range, false, &|b| {
            if let Ok(mut g) = got.lock() {
                *g = Some(b);
            }
        })
        .await?;
        Ok(got.into_inner().ok().flatten().unwrap_or_default())
    }

    /// Like [`Client::fetch`], but hands each verified piece to `sink` as soon as it is
    /// checked (every 16 KiB group for whole shards), in order, so a reader can pass bytes on
    /// before the shard is complete. Nothing unverified ever reaches `sink`; on an error, what
    /// reached it is a verified prefix. Returns the bytes delivered.
    pub async fn fetch_streaming(
        &self,
        t: &Target,
        cid: &Cid,
        size: Option<u64>,
        range: Option<Range<u64>>,
        sink: &(dyn Fn(Bytes) + Sync),
    ) -> Result<u64, DataError> {
        self.fetch_inner(t, cid, size, range, true, sink).await
    }

    /// [`Client::fetch_streaming`] for a read whose first bytes someone is waiting on: the
    /// head of `range` (up to the end of its first 16 KiB group) is asked for separately, and
    /// the node serves such a small range in its fast lane, ahead of the bulk transfers
    /// sharing the connection; the rest is asked for once the head is through. Same guarantees
    /// as `fetch_streaming`: only verified bytes, in order, a verified prefix on an error.
    pub async fn fetch_head_first(
        &self,
        t: &Target,
        cid: &Cid,
        size: u64,
        range: Range<u64>,
        sink: &(dyn Fn(Bytes) + Sync),
    ) -> Result<u64, DataError> {
        let group = verified::GROUP_BYTES as u64;
        let split = (range.start / group + 1) * group;
        let lane = self.fast.as_deref().unwrap_or(self);
        if range.end.saturating_sub(split) < group {
            // Small enough to be one request (in the fast lane when it fits there).
            let small = range.end.saturating_sub(range.start) <= FAST_LANE_BYTES;
            let client = if small { lane } else { self };
            return client
                .fetch_inner(t, cid, Some(size), Some(range), true, sink)
                .await;
        }
        // The rest is asked for once the head is through: when many reads start at once, their
        // heads then do not share the links and the CPU with the bulk of the others.
        let head = lane
            .fetch_inner(t, cid, Some(size), Some(range.start..split), true, sink)
            .await?;
        let rest = self
            .fetch_inner(t, cid, Some(size), Some(split..range.end), true, sink)
            .await?;
        Ok(head + rest)
    }

    async fn fetch_inner(
        &self,
        t: &Target,
        cid: &Cid,
        size: Option<u64>,
        range: Option<Range<u64>>,
        stream: bool,
        sink: &(dyn Fn(Bytes) + Sync),
    ) -> Result<u64, DataError> {
        let root = cids::digest(cid, Codec::Raw).map_err(|e| DataError::Setup(e.to_string()))?;
        let header = encode(&DataRequest::Fetch {
            cid: *cid,
            range: range.as_ref().map(|r| (r.start, r.end)),
        });
        // Bytes already handed on: a retry on a fresh connection skips them.
        let delivered = AtomicU64::new(0);
        let deliver = |at: u64, b: Bytes| {
            let done = delivered.load(Ordering::Relaxed);
            let end = at + b.len() as u64;
            if end > done {
                sink(b.slice((done.saturating_sub(at)) as usize..));
                delivered.store(end, Ordering::Relaxed);
            }
        };
        self.request(t, |mut send, mut recv| {
            let (header, range, deliver) = (&header, range.clone(), &deliver);
            async move {
                let bad = |reason: String| DataError::BadData {
                    peer: t.peer,
                    cid: *cid,
                    reason,
                };
                let proto = |reason: String| DataError::Protocol {
                    peer: t.peer,
                    reason,
                };
                let stalled = |received: u64| DataError::Stalled {
                    peer: t.peer,
                    secs: STALL_TIMEOUT.as_secs(),
                    received,
                };
                send.write_all(header).await.map_err(write_err(t.peer))?;
                let _ = send.finish();
                let answer = Self::response(t, &mut recv).await?;
                let claimed = match answer {
                    DataResponse::Shard { size } | DataResponse::Proof { size, .. } => size,
                    _ => return Err(proto("expected a shard".into())),
                };
                if let Some(expected) = size
                    && expected != claimed
                {
                    return Err(bad(format!(
                        "size {claimed} differs from the manifest's {expected}"
                    )));
                }
                match (answer, range) {
                    (DataResponse::Shard { size }, None) => {
                        // Outboard first (checked against the CID), then data checked per 16 KiB.
                        let ob_len = verified::outboard_size(size) as usize;
                        let outboard = read_body(&mut recv, ob_len).await.map_err(|e| match e {
                            FrameFailure::Io(m) | FrameFailure::Malformed(m) => proto(m),
                            FrameFailure::Stalled(_) => stalled(0),
                        })?;
                        let mut verifier = verified::OutboardVerifier::new(root, size, &outboard)
                            .map_err(|e| bad(e.to_string()))?;
                        // `out` holds the bytes from `base` on; streaming hands on each verified
                        // prefix (split off the same allocation, no copy).
                        let mut out = BytesMut::with_capacity(size as usize);
                        let mut chunks: [Bytes; 32] = std::array::from_fn(|_| Bytes::new());
                        let (mut base, mut yielded) = (0u64, 0u64);
                        loop {
                            let ok = verifier
                                .check_tail(base, &out)
                                .map_err(|e| bad(e.to_string()))?;
                            if ok >= yielded + SEND_PIECE as u64 {
                                // Hashing while bytes keep arriving could hold this worker
                                // for a whole shard; let the endpoint drain its socket.
                                yielded = ok;
                                tokio::task::yield_now().await;
                            }
                            if stream && ok > base {
                                deliver(base, out.split_to((ok - base) as usize).freeze());
                                base = ok;
                            }
                            let have = base + out.len() as u64;
                            if have >= size {
                                break;
                            }
                            // All the chunks that have arrived, in one call (one lock of the
                            // connection instead of one per packet).
                            let n =
                                tokio::time::timeout(STALL_TIMEOUT, recv.read_chunks(&mut chunks))
                                    .await
                                    .map_err(|_| stalled(have))?
                                    .map_err(|e| read_failed(t.peer, e))?
                                    .ok_or_else(|| {
                                        proto(format!("stream ended after {have} of {size} bytes"))
                                    })?;
                            // Anything past the shard's end is not part of it: dropped, as
                            // when the stream is not read that far.
                            let mut room = (size - have) as usize;
                            for chunk in &mut chunks[..n] {
                                let take = chunk.len().min(room);
                                out.extend_from_slice(&chunk[..take]);
                                room -= take;
                                *chunk = Bytes::new();
                            }
                        }
                        if !verifier.is_done() {
                            return Err(bad("shard incomplete".into()));
                        }
                        if !stream {
                            deliver(0, out.freeze());
                        }
                        Ok(size)
                    }
                    (DataResponse::Proof { size, len }, Some(range)) => {
                        let expected_len = verified::encoded_len(size, range.clone());
                        if len != expected_len {
                            return Err(bad(format!(
                                "proof stream of {len} bytes, expected {expected_len}"
                            )));
                        }
                        let mut decoder = RangeDecoder::new(root, size, range.clone())
                            .map_err(|e| bad(e.to_string()))?;
                        let want = range.end - range.start;
                        let mut out = BytesMut::with_capacity(want as usize);
                        let (mut base, mut received) = (0u64, 0u64);
                        while received < len {
                            let chunk = tokio::time::timeout(
                                STALL_TIMEOUT,
                                recv.read_chunk((len - received) as usize, true),
                            )
                            .await
                            .map_err(|_| stalled(received))?
                            .map_err(|e| proto(e.to_string()))?
                            .ok_or_else(|| {
                                proto(format!(
                                    "stream ended after {received} of {len} proof bytes"
                                ))
                            })?;
                            received += chunk.bytes.len() as u64;
                            decoder
                                .push(&chunk.bytes, |_, b| out.extend_from_slice(b))
                                .map_err(|e| bad(e.to_string()))?;
                            if stream && !out.is_empty() {
                                let piece = out.split().freeze();
                                let n = piece.len() as u64;
                                deliver(base, piece);
                                base += n;
                            }
                        }
                        decoder.finish().map_err(|e| bad(e.to_string()))?;
                        if !stream {
                            deliver(0, out.freeze());
                        }
                        Ok(want)
                    }
                    _ => Err(proto("answer does not match the request".into())),
                }
            }
        })
        .await
    }

    /// Which of `cids` (at most [`crate::protocol::MAX_DATA_HAS`]) `t` holds, one answer per CID.
    pub async fn has(&self, t: &Target, cids: &[Cid]) -> Result<Vec<Holding>, DataError> {
        let header = encode(&DataRequest::Has {
            cids: cids.to_vec(),
        });
        self.request(t, |mut send, mut recv| {
            let header = &header;
            async move {
                send.write_all(header).await.map_err(write_err(t.peer))?;
                let _ = send.finish();
                match Self::response(t, &mut recv).await? {
                    DataResponse::Has(held) if held.len() == cids.len() => Ok(held),
                    other => Err(DataError::Protocol {
                        peer: t.peer,
                        reason: format!("expected {} has answers, got {other:?}", cids.len()),
                    }),
                }
            }
        })
        .await
    }

    /// Stores manifest bytes and provenance envelopes on `t` (the peer checks the CID, the
    /// manifest and every signature).
    pub async fn put_manifest(
        &self,
        t: &Target,
        cid: &Cid,
        kind: ManifestKind,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> Result<(), DataError> {
        let mut body = encode(&DataRequest::PutManifest {
            cid: *cid,
            kind,
            len: bytes.len() as u64,
            envelopes: envelopes.len() as u32,
        });
        body.extend_from_slice(bytes);
        for e in envelopes {
            body.extend_from_slice(&(e.len() as u32).to_le_bytes());
            body.extend_from_slice(e);
        }
        let body = Bytes::from(body);
        self.request(t, |mut send, mut recv| {
            let body = body.clone();
            async move {
                send.write_chunk(body).await.map_err(write_err(t.peer))?;
                let _ = send.finish();
                match Self::response(t, &mut recv).await? {
                    DataResponse::Stored => Ok(()),
                    other => Err(DataError::Protocol {
                        peer: t.peer,
                        reason: format!("unexpected answer {other:?}"),
                    }),
                }
            }
        })
        .await
    }

    /// Fetches a manifest's bytes (checked against `cid`) and its provenance envelopes
    /// (unchecked: callers verify signatures).
    pub async fn get_manifest(
        &self,
        t: &Target,
        cid: &Cid,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), DataError> {
        let header = encode(&DataRequest::GetManifest { cid: *cid });
        self.request(t, |mut send, mut recv| {
            let header = &header;
            async move {
                send.write_all(header).await.map_err(write_err(t.peer))?;
                let _ = send.finish();
                let DataResponse::Manifest { len, envelopes } =
                    Self::response(t, &mut recv).await?
                else {
                    return Err(DataError::Protocol {
                        peer: t.peer,
                        reason: "expected a manifest".into(),
                    });
                };
                if len > cairn_chunker::manifest::MAX_MANIFEST_BYTES as u64
                    || envelopes > crate::protocol::MAX_ENVELOPES
                {
                    return Err(DataError::Protocol {
                        peer: t.peer,
                        reason: "manifest answer over the limits".into(),
                    });
                }
                let io = |e: FrameFailure| match e {
                    FrameFailure::Io(reason) | FrameFailure::Malformed(reason) => {
                        DataError::Protocol {
                            peer: t.peer,
                            reason,
                        }
                    }
                    FrameFailure::Stalled(received) => DataError::Stalled {
                        peer: t.peer,
                        secs: STALL_TIMEOUT.as_secs(),
                        received,
                    },
                };
                let bytes = read_body(&mut recv, len as usize)
                    .await
                    .map_err(io)?
                    .to_vec();
                if cids::dag_cbor(&bytes) != *cid {
                    return Err(DataError::BadData {
                        peer: t.peer,
                        cid: *cid,
                        reason: "manifest bytes do not hash to the CID".into(),
                    });
                }
                let mut envs = Vec::new();
                for _ in 0..envelopes {
                    let n = read_u32(&mut recv).await.map_err(io)? as usize;
                    if n > MAX_ENVELOPE_BYTES {
                        return Err(DataError::Protocol {
                            peer: t.peer,
                            reason: "envelope over the limit".into(),
                        });
                    }
                    envs.push(read_body(&mut recv, n).await.map_err(io)?.to_vec());
                }
                Ok((bytes, envs))
            }
        })
        .await
    }

    /// Sends raw bytes on a new stream and returns whatever comes back (for robustness tests).
    #[doc(hidden)]
    pub async fn raw_exchange(&self, t: &Target, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
        self.request(t, |mut send, mut recv| async move {
            let _ = send.write_all(bytes).await;
            let _ = send.finish();
            match tokio::time::timeout(FIRST_BYTE_TIMEOUT, recv.read_to_end(1 << 20)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(DataError::Protocol {
                    peer: t.peer,
                    reason: e.to_string(),
                }),
                Err(_) => Err(DataError::Timeout {
                    peer: t.peer,
                    secs: FIRST_BYTE_TIMEOUT.as_secs(),
                }),
            }
        })
        .await
    }

    /// Opens a request stream to `t` and hands it over as it is (for robustness tests that
    /// need to misbehave part-way, e.g. stall).
    #[doc(hidden)]
    pub async fn raw_stream(&self, t: &Target) -> Result<(SendStream, RecvStream), DataError> {
        let conn = self.connection(t).await?;
        conn.open_bi().await.map_err(|e| DataError::Unreachable {
            peer: t.peer,
            addr: t.addr,
            reason: e.to_string(),
        })
    }

    /// Closes every connection.
    pub fn close(&self) {
        self.endpoint.close(VarInt::from_u32(0), b"bye");
    }
}
