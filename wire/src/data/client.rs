//! The data-plane client: dials peers by peer id and address and runs verified requests.

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
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use super::frame::{FrameFailure, encode, read_body, read_frame, read_u32};
use super::*;
use crate::protocol::{
    DATA_ALPN, DataRequest, DataResponse, ErrorCode, Holding, MAX_DATA_HEADER, MAX_ENVELOPE_BYTES,
    ManifestKind, RECEIPTS_PER_MESSAGE, RESET_CORRUPT, RemoteError, decode_receipts,
    encode_receipts,
};
use cairn_proofs::receipt::StorageReceipt;

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

/// Checks the storage receipt `t` answered a store of `cid` (`size` bytes, root `root`) with.
pub(super) fn check_receipt(
    t: &Target,
    cid: &Cid,
    root: Option<&[u8; 32]>,
    size: u64,
    receipt: &[u8],
) -> Result<StorageReceipt, DataError> {
    let bad = |reason: String| DataError::BadData {
        peer: t.peer,
        cid: *cid,
        reason: format!("its storage receipt {reason}"),
    };
    let r = StorageReceipt::from_bytes(receipt).map_err(|e| bad(format!("is invalid: {e}")))?;
    match crate::keys::node_key(&t.peer) {
        Some(key) if key == r.node => {}
        _ => return Err(bad(format!("is signed by another key ({})", r.node))),
    }
    if root != Some(&r.shard.0) {
        return Err(bad(format!("names another shard ({})", r.shard)));
    }
    if r.size != size {
        return Err(bad(format!("says {} bytes, not {size}", r.size)));
    }
    Ok(r)
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

pub(super) fn write_err(peer: PeerId) -> impl Fn(quinn::WriteError) -> DataError {
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
        Self::bind_on(keypair, std::net::Ipv4Addr::UNSPECIFIED.into())
    }

    /// [`Client::bind`] on the local address `ip` (connections come from it), such as one of
    /// the many loopback addresses `127.0.0.0/8` when a test plays several hosts.
    pub fn bind_on(keypair: Keypair, ip: std::net::IpAddr) -> Result<Self, DataError> {
        let any = SocketAddr::new(ip, 0);
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
            config.transport_config(transport(max_streams, false));
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
    pub(super) async fn request<T, F, Fut>(&self, t: &Target, op: F) -> Result<T, DataError>
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

    pub(super) async fn response(
        t: &Target,
        recv: &mut RecvStream,
    ) -> Result<DataResponse, DataError> {
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

    /// Stores a shard on `t`; the peer verifies it against `cid` before accepting, and answers
    /// with its storage receipt: its signed promise to hold the shard. The receipt is checked
    /// (signed by `t`'s own key, for this shard at this size, with a lease that can be right),
    /// and a node whose receipt is not is [`DataError::BadData`], like one that failed the
    /// store.
    pub async fn store(
        &self,
        t: &Target,
        cid: &Cid,
        data: Bytes,
    ) -> Result<StorageReceipt, DataError> {
        // Not a shard CID: the node refuses it, and says so.
        let root = cids::digest(cid, Codec::Raw).ok();
        let size = data.len() as u64;
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
                    DataResponse::StoredShard { receipt } => {
                        check_receipt(t, cid, root.as_ref().map(|r| r.as_bytes()), size, &receipt)
                    }
                    DataResponse::Stored => Err(DataError::BadData {
                        peer: t.peer,
                        cid: *cid,
                        reason: "the node stored the shard but signed no storage receipt for it"
                            .into(),
                    }),
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

    /// Stores encoded storage receipts beside `manifest` on `t` (which must hold it), in as
    /// many requests as the limits need. The node checks every receipt (signature, and that the
    /// manifest lists its shard at its size) and refuses a request with a bad one whole.
    /// Returns how many requests were sent.
    pub async fn put_receipts(
        &self,
        t: &Target,
        manifest: &Cid,
        receipts: &[Vec<u8>],
    ) -> Result<usize, DataError> {
        let mut sent = 0;
        for batch in receipts.chunks(RECEIPTS_PER_MESSAGE) {
            let body = encode_receipts(batch);
            let mut message = encode(&DataRequest::PutReceipts {
                manifest: *manifest,
                count: batch.len() as u32,
                len: body.len() as u64,
            });
            message.extend_from_slice(&body);
            let message = Bytes::from(message);
            self.request(t, |mut send, mut recv| {
                let message = message.clone();
                async move {
                    send.write_chunk(message).await.map_err(write_err(t.peer))?;
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
            .await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// The storage receipts `t` keeps beside `manifest`, every one decoded and its signature
    /// verified (a node that sends a bad one is [`DataError::BadData`]), by shard root and node
    /// key. Asks a page at a time, at most [`MAX_RECEIPT_PAGES`] pages.
    pub async fn get_receipts(
        &self,
        t: &Target,
        manifest: &Cid,
    ) -> Result<Vec<StorageReceipt>, DataError> {
        let mut all: Vec<StorageReceipt> = Vec::new();
        let mut after = None;
        for _ in 0..MAX_RECEIPT_PAGES {
            let (page, more) = self.receipts_page(t, manifest, after).await?;
            // Each page starts after the last receipt of the one before, in order: a node
            // cannot send the same receipts again and again.
            let last = page.last().map(|r| (r.shard, r.node));
            let ordered = page
                .iter()
                .map(|r| (r.shard, r.node))
                .try_fold(after, |prev, key| match prev {
                    Some(p) if key <= p => None,
                    _ => Some(Some(key)),
                })
                .is_some();
            if !ordered {
                return Err(DataError::Protocol {
                    peer: t.peer,
                    reason: "receipts out of order".into(),
                });
            }
            all.extend(page);
            match (more, last) {
                (false, _) => return Ok(all),
                (true, Some(last)) => after = Some(last),
                (true, None) => {
                    return Err(DataError::Protocol {
                        peer: t.peer,
                        reason: "an empty page of receipts said more follow".into(),
                    });
                }
            }
        }
        Err(DataError::Protocol {
            peer: t.peer,
            reason: format!("more than {MAX_RECEIPT_PAGES} pages of receipts"),
        })
    }

    /// One page of [`Client::get_receipts`], and whether more follow.
    async fn receipts_page(
        &self,
        t: &Target,
        manifest: &Cid,
        after: Option<(cairn_proofs::Hash32, cairn_proofs::NodeKey)>,
    ) -> Result<(Vec<StorageReceipt>, bool), DataError> {
        let header = encode(&DataRequest::GetReceipts {
            manifest: *manifest,
            after,
        });
        self.request(t, |mut send, mut recv| {
            let header = &header;
            async move {
                send.write_all(header).await.map_err(write_err(t.peer))?;
                let _ = send.finish();
                let proto = |reason: String| DataError::Protocol {
                    peer: t.peer,
                    reason,
                };
                let answer = Self::response(t, &mut recv).await?;
                answer.check().map_err(proto)?;
                let DataResponse::Receipts { count, len, more } = answer else {
                    return Err(proto(format!("expected receipts, got {answer:?}")));
                };
                let body = read_body(&mut recv, len as usize)
                    .await
                    .map_err(|e| match e {
                        FrameFailure::Io(reason) | FrameFailure::Malformed(reason) => proto(reason),
                        FrameFailure::Stalled(received) => DataError::Stalled {
                            peer: t.peer,
                            secs: STALL_TIMEOUT.as_secs(),
                            received,
                        },
                    })?;
                let mut page = Vec::with_capacity(count as usize);
                for (i, bytes) in decode_receipts(&body, count)
                    .map_err(proto)?
                    .iter()
                    .enumerate()
                {
                    let r = StorageReceipt::from_bytes(bytes).map_err(|e| DataError::BadData {
                        peer: t.peer,
                        cid: *manifest,
                        reason: format!("storage receipt {i} of the page: {e}"),
                    })?;
                    page.push(r);
                }
                Ok((page, more))
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
