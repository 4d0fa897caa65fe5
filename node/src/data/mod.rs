//! The data-plane server: answers peers' store, fetch, manifest and receipt requests from the
//! store, under the limits in [`cairn_wire::data`] (the client half and the framing live
//! there), who may hold connections ([`conns`]) and how upload bodies count against the
//! node's buffers ([`body`]). A stored shard is answered with a storage receipt ([`Leaser`]).

pub mod body;
pub mod conns;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_proofs::CodecError;
use cairn_proofs::lease::{LeaseError, LeaseStatement};
use cairn_proofs::receipt::StorageReceipt;
use cairn_wire::data::frame::{FrameFailure, read_body, read_frame, read_u32};

use self::body::{BodyFailure, Budget};
use self::conns::{Addr, Admission, Conns, Limits};
use cairn_wire::data::*;
use cairn_wire::protocol::{
    DataRequest, DataResponse, ErrorCode, MAX_DATA_HEADER, MAX_ENVELOPE_BYTES,
    MAX_LEASE_REASON_BYTES, MAX_LEASE_REASONS, RECEIPTS_PER_MESSAGE, RESET_ABORTED, RESET_CORRUPT,
    RemoteError, decode_receipts, encode_frame, encode_receipts,
};
use libp2p::PeerId;
use quinn::{Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::holds::Carrier;
use crate::leases::Leaser;
use crate::metrics::NodeMetrics;
use crate::store::{Store, StoreError};

/// What the data-plane server needs.
pub struct Server {
    /// The shard store.
    pub store: Arc<Store>,
    /// Metrics to update.
    pub metrics: Arc<NodeMetrics>,
    /// Leases stored shards and signs their receipts.
    pub leaser: Arc<Leaser>,
    /// Bounds bytes of incoming bodies buffered at once, and each address's share of them.
    pub budget: Budget,
    /// Limits on connections and on slow bodies.
    pub limits: Limits,
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
    /// Carries new lease statements to shard holders at once; set by the node before the
    /// server runs (without it, statements are kept and carried by the keeper loop only).
    pub carrier: std::sync::OnceLock<Carrier>,
    /// The node's data directory, where `cairn-node drain` leaves its marker: a draining node
    /// takes no new shards (set by the node before the server runs).
    pub data_dir: std::sync::OnceLock<std::path::PathBuf>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `store`, answering stored shards with receipts `leaser` signs, under
    /// `limits`.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<NodeMetrics>,
        leaser: Arc<Leaser>,
        limits: Limits,
    ) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Self {
            store,
            metrics,
            leaser,
            budget: Budget::default(),
            limits,
            cpu: Arc::new(Semaphore::new(cores)),
            fast: Arc::new(Semaphore::new(cores * 4)),
            io: Arc::new(Semaphore::new(WRITES_AT_ONCE)),
            outgoing: Arc::new(Semaphore::new(MAX_OUTGOING_BYTES / 1024)),
            sends: Arc::new(Semaphore::new(SENDS_AT_ONCE)),
            carrier: std::sync::OnceLock::new(),
            data_dir: std::sync::OnceLock::new(),
        })
    }

    /// Accepts connections until `cancel` fires, under [`Limits`] (see [`conns`]). Each
    /// connection and stream runs in its own task; quinn bounds streams per connection, and
    /// tasks end when the endpoint closes.
    pub async fn run(self: Arc<Self>, endpoint: Endpoint, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let conns: Arc<Conns> = Arc::default();
        loop {
            let incoming = tokio::select! {
                _ = cancel.cancelled() => break,
                i = endpoint.accept() => i,
            };
            let Some(incoming) = incoming else { break };
            let ip = incoming.remote_address().ip();
            let validated = incoming.remote_address_validated();
            let slot = match conns.admit(ip, validated, &self.limits) {
                Admission::Take(slot) => slot,
                Admission::Validate if incoming.may_retry() => {
                    let _ = incoming.retry();
                    continue;
                }
                Admission::Validate => {
                    incoming.ignore();
                    continue;
                }
                Admission::Refuse(why) => {
                    self.refused(why);
                    tracing::debug!(%ip, why = why.label(), "refused a data-plane connection");
                    incoming.refuse();
                    continue;
                }
            };
            let server = self.clone();
            let cancel = cancel.clone();
            let conns = conns.clone();
            tasks.spawn(async move {
                let addr = slot.addr();
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
                let Some(_peer_slot) = conns.peer(peer) else {
                    server.refused(conns::Refused::Peer);
                    tracing::debug!(%peer, "refused a data-plane connection: the peer holds enough");
                    conn.close(VarInt::from_u32(2), b"too many connections from this peer");
                    return;
                };
                server.metrics.net.connections.inc();
                server.connection(conn, peer, addr, cancel).await;
                server.metrics.net.connections.dec();
                drop(slot);
            });
            while tasks.try_join_next().is_some() {}
        }
        endpoint.close(VarInt::from_u32(0), b"shutting down");
        tasks.abort_all();
    }

    fn refused(&self, why: conns::Refused) {
        self.metrics
            .net
            .connections_refused
            .get_or_create(&vec![("limit".to_string(), why.label().to_string())])
            .inc();
    }

    /// Serves `conn`'s streams until it closes, `cancel` fires, or no request has been open
    /// for [`Limits::idle_timeout`]: keep-alives keep a connection alive for quinn, not here.
    async fn connection(
        self: &Arc<Self>,
        conn: quinn::Connection,
        peer: PeerId,
        addr: Addr,
        cancel: CancellationToken,
    ) {
        let idle = self.limits.idle_timeout;
        let mut streams = tokio::task::JoinSet::new();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                s = conn.accept_bi() => {
                    let Ok((send, recv)) = s else { break };
                    let server = self.clone();
                    streams.spawn(async move { server.handle_stream(peer, addr, send, recv).await });
                }
                Some(_) = streams.join_next(), if !streams.is_empty() => {
                    if streams.is_empty() {
                        quiet_since = tokio::time::Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(quiet_since + idle), if streams.is_empty() => {
                    self.metrics.net.idle_closed.inc();
                    tracing::debug!(%peer, "closing an idle data-plane connection");
                    conn.close(VarInt::from_u32(3), b"idle");
                    break;
                }
            }
        }
        streams.abort_all();
    }

    async fn handle_stream(
        &self,
        peer: PeerId,
        addr: Addr,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let outcome =
            tokio::time::timeout(REQUEST_TIMEOUT, self.serve(addr, &mut send, &mut recv)).await;
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

    async fn serve(
        &self,
        addr: Addr,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<(), Failure> {
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
                if self
                    .data_dir
                    .get()
                    .is_some_and(|d| crate::repair::drain::is_draining(d))
                {
                    // No room, as a full node says it: writers move on to the next node.
                    return Err(Failure::answer(
                        ErrorCode::NoSpace,
                        "this node is draining (leaving the network) and takes no new shards:                          store on another node",
                    ));
                }
                self.store.check_space(len).map_err(store_failure)?;
                let mut held = self.hold(addr, len).await?;
                let body = self.receive(recv, len, &mut held).await?;
                let store = self.store.clone();
                let checked = self.blocking(move || store.check_shard(&cid, body)).await?;
                let (store, leaser) = (self.store.clone(), self.leaser.clone());
                // Leased (durably) before the receipt is signed: a receipt never promises what
                // the store will not commit to.
                let receipt = self
                    .writing(move || {
                        // One fsync for both: the lease's synced write covers the shard's.
                        store.commit_shard(checked.synced_by_next_write())?;
                        leaser.lease(&*store, &cid, len)
                    })
                    .await?;
                let answer = DataResponse::StoredShard {
                    receipt: receipt.to_bytes(),
                };
                respond(send, &answer, None).await
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
                let envelope_bytes = u64::from(envelopes) * MAX_ENVELOPE_BYTES as u64;
                let mut held = self.hold(addr, len + envelope_bytes).await?;
                let body = self.receive(recv, len, &mut held).await?;
                held.take(envelope_bytes).await.map_err(Failure::Answer)?;
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
                let store = self.store.clone();
                // A manifest's checks (decode, signatures) are small beside its fsync.
                self.writing(move || store.put_manifest(&cid, kind, &body, &envs))
                    .await?;
                respond(send, &DataResponse::Stored, None).await
            }
            DataRequest::PutReceipts {
                manifest,
                count,
                len,
            } => {
                // `check` bounded `len` (16 MiB) before anything was read.
                let mut held = self.hold(addr, len).await?;
                let body = self.receive(recv, len, &mut held).await?;
                let receipts = decode_receipts(&body, count)
                    .map_err(|m| Failure::answer(ErrorCode::BadRequest, m))?;
                drop(body);
                let store = self.store.clone();
                // Checking a receipt is a signature verification: CPU work beside a small write.
                let new = self
                    .blocking(move || store.put_receipts(&manifest, &receipts))
                    .await?;
                tracing::debug!(%manifest, count, new, "storage receipts kept");
                respond(send, &DataResponse::Stored, None).await
            }
            DataRequest::GetReceipts { manifest, after } => {
                let store = self.store.clone();
                let after = after.map(|(shard, node)| (shard.0, node.0));
                let (page, more) = self
                    .blocking(move || store.receipts_page(&manifest, after, RECEIPTS_PER_MESSAGE))
                    .await?;
                let body = encode_receipts(&page);
                self.metrics.net.bytes_out.inc_by(body.len() as u64);
                let header = DataResponse::Receipts {
                    count: page.len() as u32,
                    len: body.len() as u64,
                    more,
                };
                respond(send, &header, Some(Bytes::from(body))).await
            }
            DataRequest::Lease { statements } => {
                let parsed = statements
                    .iter()
                    .enumerate()
                    .map(|(i, b)| statement(b).map_err(|m| format!("statement {i}: {m}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| Failure::answer(ErrorCode::BadRequest, m))?;
                let store = self.store.clone();
                let (accepted, refused, new) = self
                    .writing(move || {
                        let (mut accepted, mut refused, mut new) = (0u32, Vec::new(), Vec::new());
                        for s in parsed {
                            match store.keep_statement(&s) {
                                Ok(changed) => {
                                    accepted += 1;
                                    if changed
                                        && let Ok(cid) = Cid::try_from(&s.object[..])
                                        && !new.contains(&cid)
                                    {
                                        new.push(cid);
                                    }
                                }
                                Err(StoreError::NotFound { cid }) => refused.push(format!(
                                    "{cid}: this node does not keep that manifest; send the \
                                     statement to the nodes that hold it"
                                )),
                                Err(e) => refused.push(e.to_string()),
                            }
                        }
                        Ok((accepted, refused, new))
                    })
                    .await?;
                if let Some(carrier) = self.carrier.get() {
                    for object in new {
                        let (store, carrier) = (self.store.clone(), carrier.clone());
                        tokio::spawn(async move {
                            match crate::holds::carry_kept(&store, &carrier, &object).await {
                                Ok(n) => {
                                    tracing::debug!(%object, receipts = n, "carried a lease statement")
                                }
                                Err(e) => {
                                    tracing::warn!(%object, "carrying a lease statement failed: {e}")
                                }
                            }
                        });
                    }
                }
                let reasons = refused
                    .iter()
                    .take(MAX_LEASE_REASONS)
                    .map(|r| r.chars().take(MAX_LEASE_REASON_BYTES / 4).collect())
                    .collect();
                let answer = DataResponse::Leased {
                    accepted,
                    refused: reasons,
                };
                respond(send, &answer, None).await
            }
            DataRequest::Spare { shards, receipts } => {
                let (store, me) = (self.store.clone(), self.leaser.node_key());
                let (accepted, refused) = self
                    .blocking(move || {
                        let (mut accepted, mut refused) = (0u32, Vec::new());
                        for (cid, bytes) in shards.iter().zip(&receipts) {
                            let marked = StorageReceipt::from_bytes(bytes)
                                .map_err(|e| format!("{cid}: the receipt is not valid: {e}"))
                                .and_then(|r| store.mark_spare(cid, &r, &me.0));
                            match marked {
                                Ok(()) => accepted += 1,
                                Err(why) => refused.push(why),
                            }
                        }
                        Ok((accepted, refused))
                    })
                    .await?;
                if !refused.is_empty() {
                    tracing::debug!(accepted, refused = refused.len(), first = %refused[0], "spare copies refused");
                }
                let answer = DataResponse::Leased {
                    accepted,
                    refused: refused
                        .iter()
                        .take(MAX_LEASE_REASONS)
                        .map(|r| r.chars().take(MAX_LEASE_REASON_BYTES / 4).collect())
                        .collect(),
                };
                respond(send, &answer, None).await
            }
            DataRequest::Hold {
                statement: bytes,
                shards,
            } => {
                let s = statement(&bytes).map_err(|m| Failure::answer(ErrorCode::BadRequest, m))?;
                let (store, leaser) = (self.store.clone(), self.leaser.clone());
                let receipts = self
                    .writing(move || leaser.hold(&store, &s, &shards))
                    .await?;
                let answer = DataResponse::Held {
                    receipts: receipts
                        .iter()
                        .map(|r| serde_bytes::ByteBuf::from(r.to_bytes()))
                        .collect(),
                };
                respond(send, &answer, None).await
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

    /// Claims `len` bytes of `addr`'s share of the body budget ([`body::Budget::hold`]).
    async fn hold(&self, addr: Addr, len: u64) -> Result<body::Held<'_>, Failure> {
        self.budget.hold(addr, len).await.map_err(|e| {
            self.metrics.net.busy.inc();
            Failure::Answer(e)
        })
    }

    /// Reads an upload body of `len` bytes, counted in `held` as it arrives (see [`body`]).
    async fn receive(
        &self,
        recv: &mut RecvStream,
        len: u64,
        held: &mut body::Held<'_>,
    ) -> Result<Bytes, Failure> {
        let len = usize::try_from(len)
            .map_err(|_| Failure::answer(ErrorCode::BadRequest, "body too long"))?;
        match body::receive(recv, len, held, self.limits.min_body_rate).await {
            Ok(body) => {
                self.metrics.net.bytes_in.inc_by(len as u64);
                Ok(body)
            }
            Err(BodyFailure::Refused(e)) => {
                self.metrics.net.busy.inc();
                Err(Failure::Answer(e))
            }
            Err(BodyFailure::Gone(why)) => Err(Failure::Gone(why)),
            Err(BodyFailure::Slow(got)) => {
                self.metrics.net.slow_bodies.inc();
                Err(Failure::answer(
                    ErrorCode::BadRequest,
                    format!(
                        "the body arrived too slowly: {got} of {len} bytes (the node takes at \
                         least {} bytes/s on average after the first {}s)",
                        self.limits.min_body_rate,
                        body::BODY_GRACE.as_secs()
                    ),
                ))
            }
        }
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
        | StoreError::TooManyEnvelopes { .. }
        | StoreError::BadLease { .. }
        | StoreError::NoSuchGroup { .. }
        | StoreError::BadReceipts { .. } => ErrorCode::BadRequest,
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

/// A lease statement from the wire, decoded and verified, or why not (nothing is kept or
/// applied for a request with one that fails).
fn statement(bytes: &[u8]) -> Result<LeaseStatement, String> {
    LeaseStatement::from_bytes(bytes).map_err(|e| match e {
        LeaseError::Codec(CodecError::BadSignature { signer, .. }) => format!(
            "the lease statement's signature does not verify under the owner key it names \
             ({signer}); sign it with that key; nothing was changed"
        ),
        other => format!("the lease statement is not valid ({other}); nothing was changed"),
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
