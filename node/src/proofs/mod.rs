//! The node's part in storage proofs, driving `cairn-proofs` with tokio, RocksDB and libp2p.
//!
//! * [`prover`]: at each epoch the node commits to the shards it holds under live leases
//!   (kept on disk, so a restart answers with the same commitment), and answers challenges
//!   from RocksDB, reading only the 16 KiB groups challenged.
//! * [`auditor`]: each epoch the node audits a few peers (fetch commitment, challenge, judge,
//!   probe a random range), signs an audit receipt, folds it into its ledger and spreads it.
//! * Audit receipts from peers are verified and folded into the same [`Ledger`]; what the
//!   ledger decides (shards to repair, peers to stop placing on) is logged, counted, shown at
//!   `/proofs` and in `cairn proofs`, and named in the node's `Info` answer (`faulty`), which
//!   clients read before placing data.
//!
//! Every decision (what to commit, what to ask, what an answer means, what a record says) is
//! made in `cairn-proofs`; this module only moves bytes and time.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proofs::audit::Auditor;
use cairn_proofs::epoch::ProofConfig;
use cairn_proofs::ledger::{Action, AuditReceipt, Ledger, LedgerError, NodeRecord};
use cairn_proofs::{Hash32, NodeKey};
use cairn_wire::keys;
use cairn_wire::protocol::{
    ControlRequest, ControlResponse, ErrorCode, FaultView, MAX_GOSSIP, MAX_RECORDS, RecordView,
    RemoteError,
};
use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;

use crate::metrics::ProofMetrics;
use crate::store::Store;

pub mod auditor;
pub mod prover;

pub use prover::{Committed, ProverError};

/// Directory inside the data directory holding the kept commitments.
pub const PROOFS_DIR: &str = "proofs";
/// Peers each new audit receipt is pushed to.
pub const GOSSIP_FANOUT: usize = 3;
/// Receipt batches waiting to be pushed.
const GOSSIP_QUEUE: usize = 64;

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The node's proof state: its prover, its auditor, its ledger.
pub struct Proofs {
    key: SigningKey,
    me: NodeKey,
    config: ProofConfig,
    store: Arc<Store>,
    dir: PathBuf,
    prover: tokio::sync::Mutex<prover::Prover>,
    ledger: Mutex<Ledger>,
    auditor: Mutex<Auditor>,
    metrics: ProofMetrics,
    /// Storage nodes this node knows (its routing table, refreshed each epoch): only their
    /// audit receipts are folded in, so keys made up by one peer do not count as auditors.
    known: Mutex<BTreeSet<NodeKey>>,
    gossip: mpsc::Sender<Vec<AuditReceipt>>,
    gossip_rx: Mutex<Option<mpsc::Receiver<Vec<AuditReceipt>>>>,
}

impl std::fmt::Debug for Proofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proofs")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Proofs {
    /// The proof state of a node with signing key `key` over `store`, keeping commitments in
    /// `data_dir/proofs`.
    pub fn new(
        key: SigningKey,
        config: ProofConfig,
        store: Arc<Store>,
        data_dir: &std::path::Path,
        metrics: ProofMetrics,
    ) -> Result<Arc<Self>, ProverError> {
        let dir = data_dir.join(PROOFS_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| ProverError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let me = NodeKey::of(&key);
        // The auditor's secret (nonces, samples) is derived from the node key, so it is
        // unpredictable to peers and needs no random source.
        let secret = blake3::derive_key("cairn-node auditor secret v1", key.as_bytes());
        let (gossip, rx) = mpsc::channel(GOSSIP_QUEUE);
        Ok(Arc::new(Proofs {
            me,
            auditor: Mutex::new({
                let mut a = Auditor::new(me, secret, config.clone());
                a.start_counter(unix_ms());
                a
            }),
            ledger: Mutex::new(Ledger::new(&config)),
            prover: tokio::sync::Mutex::new(prover::Prover::default()),
            key,
            config,
            store,
            dir,
            metrics,
            known: Mutex::new(BTreeSet::new()),
            gossip,
            gossip_rx: Mutex::new(Some(rx)),
        }))
    }

    /// This node's proof key.
    pub fn me(&self) -> NodeKey {
        self.me
    }

    /// The protocol parameters.
    pub fn config(&self) -> &ProofConfig {
        &self.config
    }

    /// The epoch now.
    pub fn epoch(&self) -> u64 {
        self.config.epochs.at(unix_ms())
    }

    /// Answers the proof messages of the control plane.
    pub async fn handle(
        self: &Arc<Self>,
        from: libp2p::PeerId,
        req: ControlRequest,
    ) -> ControlResponse {
        let failure = |code, message: String| ControlResponse::Error(RemoteError { code, message });
        match req {
            ControlRequest::Commitment { epoch } => match self.commitment(epoch).await {
                Ok(c) => ControlResponse::Commitment(c.commitment.to_bytes()),
                Err(e) => failure(e.code(), e.to_string()),
            },
            ControlRequest::Prove { challenge } => self.prove(&challenge).await,
            ControlRequest::AuditReceipts(list) if list.len() > MAX_GOSSIP => failure(
                ErrorCode::BadRequest,
                format!("at most {MAX_GOSSIP} audit receipts per message"),
            ),
            ControlRequest::AuditReceipts(list) => {
                let mut receipts = Vec::with_capacity(list.len());
                for bytes in &list {
                    // One bad receipt does not sink the good ones beside it.
                    match AuditReceipt::from_bytes(bytes) {
                        Ok(r) => receipts.push(r),
                        Err(e) => tracing::debug!(%from, "refused an audit receipt: {e}"),
                    }
                }
                let new = self.accept(receipts, Some(from));
                ControlResponse::Accepted { new: new as u32 }
            }
            ControlRequest::Records { node } => {
                let wanted = match node.as_deref().map(str::parse::<libp2p::PeerId>) {
                    None => None,
                    Some(Ok(p)) => match keys::node_key(&p) {
                        Some(k) => Some(k),
                        None => {
                            return failure(
                                ErrorCode::BadRequest,
                                format!("{p} is not an ed25519 node id"),
                            );
                        }
                    },
                    Some(Err(e)) => {
                        return failure(ErrorCode::BadRequest, format!("not a peer id: {e}"));
                    }
                };
                ControlResponse::Records {
                    epoch: self.epoch(),
                    records: self.records(wanted.as_ref()),
                }
            }
            _ => failure(ErrorCode::BadRequest, "not a proof message".into()),
        }
    }

    /// The ledger's records, for people and programs: of one node, or all (at most
    /// [`MAX_RECORDS`]).
    pub fn records(&self, node: Option<&NodeKey>) -> Vec<RecordView> {
        let Ok(ledger) = self.ledger.lock() else {
            return Vec::new();
        };
        match node {
            Some(k) => ledger.record(k).map(view).into_iter().collect(),
            None => ledger.records().take(MAX_RECORDS).map(view).collect(),
        }
    }

    /// Peers the ledger holds faulty now, as peer ids.
    pub fn faulty_peers(&self) -> Vec<String> {
        let Ok(ledger) = self.ledger.lock() else {
            return Vec::new();
        };
        ledger
            .faulty()
            .iter()
            .take(256)
            .filter_map(keys::peer_id)
            .map(|p| p.to_string())
            .collect()
    }

    /// Sets the storage nodes this node knows (and itself).
    pub fn set_known(&self, nodes: &[NodeKey]) {
        if let Ok(mut k) = self.known.lock() {
            *k = nodes.iter().copied().collect();
            k.insert(self.me);
        }
    }

    /// Folds receipts into the ledger; new ones are pushed on to a few peers (a receipt seen
    /// before is not pushed again, so the spreading ends). Receipts whose auditor or prover is
    /// not a storage node this node knows are left out. Returns how many were new.
    pub fn accept(&self, receipts: Vec<AuditReceipt>, from: Option<libp2p::PeerId>) -> usize {
        let now = self.epoch();
        let receipts: Vec<AuditReceipt> = match self.known.lock() {
            Ok(k) => receipts
                .into_iter()
                .filter(|r| k.contains(&r.auditor) && k.contains(&r.prover))
                .collect(),
            Err(_) => return 0,
        };
        let mut fresh = Vec::new();
        let mut actions = Vec::new();
        if let Ok(mut ledger) = self.ledger.lock() {
            for r in receipts {
                match ledger.apply(&r, now) {
                    Ok(a) => {
                        actions.extend(a);
                        fresh.push(r);
                    }
                    Err(LedgerError::Duplicate) => {}
                    Err(e) => tracing::debug!(?from, "audit receipt not folded in: {e}"),
                }
            }
        }
        self.metrics.receipts_new.inc_by(fresh.len() as u64);
        self.act(&actions);
        let n = fresh.len();
        if !fresh.is_empty() && self.gossip.try_send(fresh).is_err() {
            self.metrics.gossip_dropped.inc();
        }
        n
    }

    /// Logs and counts what the ledger decided.
    fn act(&self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Repair { node, shards } => {
                    self.metrics.repair_named.inc_by(shards.len() as u64);
                    tracing::warn!(
                        target: "cairn::_events::repair",
                        node = %peer_name(node),
                        shards = shards.len(),
                        first = %shards.first().map(shard_cid).unwrap_or_default(),
                        "shards named for repair"
                    );
                }
                Action::StopPlacing { node } => tracing::warn!(
                    target: "cairn::_events::faulty",
                    node = %peer_name(node),
                    "node is faulty: a quorum of auditors reported faults; no new data goes to it"
                ),
                Action::ResumePlacing { node } => tracing::info!(
                    target: "cairn::_events::recovered",
                    node = %peer_name(node),
                    "node is no longer faulty"
                ),
            }
        }
        if let Ok(ledger) = self.ledger.lock() {
            self.metrics.faulty_nodes.set(ledger.faulty().len() as i64);
        }
    }

    /// Moves the ledger to epoch `now`.
    fn tick(&self, now: u64) {
        let actions = match self.ledger.lock() {
            Ok(mut l) => l.tick(now),
            Err(_) => return,
        };
        self.act(&actions);
    }

    /// Runs the auditor and the gossip until `cancel` fires.
    pub async fn run(
        self: Arc<Self>,
        swarm: cairn_wire::swarm::Swarm,
        data: cairn_wire::data::Client,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let rx = self.gossip_rx.lock().ok().and_then(|mut g| g.take());
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(rx) = rx {
            tasks.spawn(auditor::gossip(
                self.clone(),
                swarm.clone(),
                rx,
                cancel.clone(),
            ));
        }
        tasks.spawn(auditor::audit_loop(
            self.clone(),
            swarm,
            data,
            cancel.clone(),
        ));
        cancel.cancelled().await;
        let drain = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }
}

/// A node key as people see it: its peer id.
pub fn peer_name(key: &NodeKey) -> String {
    keys::peer_id(key).map_or_else(|| key.to_string(), |p| p.to_string())
}

/// A shard root as its CID.
pub fn shard_cid(root: &Hash32) -> String {
    cairn_chunker::cids::from_hash(
        cairn_chunker::cids::Codec::Raw,
        &blake3::Hash::from_bytes(root.0),
    )
    .to_string()
}

fn view(r: &NodeRecord) -> RecordView {
    RecordView {
        peer_id: peer_name(&r.node),
        proven_byte_epochs: r.proven_byte_epochs,
        proven_epochs: r.proven_epochs,
        passes: r.passes,
        cleared: r.cleared,
        late: r.late,
        contained: r.contained,
        offline: r.offline,
        faults: r.faults,
        declared: r.declared,
        recoveries: r.recoveries,
        last_epoch: r.last_epoch,
        faulty: r.faulty,
        score_milli: (r.score * 1000.0).round().clamp(0.0, 1000.0) as u32,
        probe_median_ms: r.probe_median_ms(),
        recent_faults: r
            .recent_faults
            .iter()
            .map(|f| FaultView {
                epoch: f.epoch,
                auditor: peer_name(&f.auditor),
                kind: f.kind.to_string(),
                shards: f.shards.len() as u32,
            })
            .collect(),
        repair: r.repair.iter().take(64).map(shard_cid).collect(),
        repair_count: r.repair.len() as u64,
    }
}
