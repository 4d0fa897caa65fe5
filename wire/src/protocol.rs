//! Wire messages of the node's two planes, and their framing.
//!
//! * **Control plane** (libp2p request-response over libp2p-QUIC, protocol
//!   [`CONTROL_PROTOCOL`]): small questions — node info, has, list.
//! * **Data plane** (a quinn endpoint whose TLS certificates carry the node's libp2p identity,
//!   ALPN [`DATA_ALPN`]): one bidirectional QUIC stream per request, for shard and manifest bytes.
//!
//! Every frame is `u32 little-endian length ‖ DAG-CBOR body`, and every length is checked
//! against a limit before anything is allocated. Bulk bytes follow a data-plane header raw on
//! the same stream. The layout is documented in `node/DESIGN.md`.

use std::net::SocketAddr;

use cairn_chunker::Cid;
use cairn_chunker::manifest::{MAX_MANIFEST_BYTES, MAX_SHARD_SIZE};
use cairn_proofs::receipt::MAX_RECEIPT_BYTES;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// libp2p protocol name of the control plane.
pub const CONTROL_PROTOCOL: &str = "/cairn/control/1";
/// libp2p protocol name of Cairn's Kademlia DHT (kept apart from IPFS's).
pub const KAD_PROTOCOL: &str = "/cairn/kad/1";
/// libp2p protocol name of identify.
pub const IDENTIFY_PROTOCOL: &str = "/cairn/id/1";
/// ALPN of the data plane.
pub const DATA_ALPN: &[u8] = b"cairn-data/1";

/// Largest control request.
pub const MAX_CONTROL_REQUEST: usize = 256 * 1024;
/// Largest control response.
pub const MAX_CONTROL_RESPONSE: usize = 4 << 20;
/// Largest data-plane header.
pub const MAX_DATA_HEADER: usize = 64 * 1024;
/// Most CIDs in one `Has` request.
pub const MAX_HAS: usize = 4096;
/// Most entries in one `List` response.
pub const MAX_LIST: u32 = 10_000;

/// What went wrong, as a peer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The request was malformed or over a limit.
    BadRequest,
    /// The node does not hold it.
    NotFound,
    /// The node's copy is corrupt and was not served.
    Corrupt,
    /// Bytes sent do not match their CID.
    HashMismatch,
    /// The node is full.
    NoSpace,
    /// Too many requests in flight.
    Busy,
    /// Something failed inside the node.
    Internal,
}

/// An error answer: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// A node's description of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Software version.
    pub version: String,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// Data-plane (quinn) addresses to dial for shard bytes.
    pub data_addrs: Vec<SocketAddr>,
    /// Failure-domain label (rack, host, zone), if set.
    pub label: Option<String>,
    /// Capacity limit in bytes.
    pub capacity: u64,
    /// Shard bytes stored.
    pub used: u64,
    /// Bytes of manifests and provenance envelopes stored: they take capacity beside `used`.
    #[serde(default)]
    pub manifest_bytes: u64,
    /// Shards stored.
    pub shards: u64,
    /// Room for shards on the node's disk (what is free beyond its reserve), when known. It can
    /// be less than `capacity - used`, when the capacity promises more than the disk holds.
    #[serde(default)]
    pub disk_room: Option<u64>,
    /// Peers this node's proof ledger holds faulty now (a quorum of auditors reported faults
    /// within the fault window): clients place no new data on a node enough others name.
    #[serde(default)]
    pub faulty: Vec<String>,
    /// The storage-proof epoch length in milliseconds, when the node takes part in proofs.
    #[serde(default)]
    pub epoch_ms: Option<u64>,
    /// The node is leaving the network (`cairn-node drain`): it takes no new data, and the
    /// keepers of the objects it holds shards of copy them elsewhere.
    #[serde(default)]
    pub draining: bool,
    /// The node looks after the objects it keeps (`repair.enabled`): only such a node can be
    /// the keeper in charge of an object (one that does not, or an older version, would hold
    /// the charge and never act on it).
    #[serde(default)]
    pub repairs: bool,
    /// Of `used`, bytes of spare copies: shards other nodes hold for the network now (keepers
    /// said so with their receipts), kept only until their holds end. Rebalancing counts them
    /// out of the node's fill.
    #[serde(default)]
    pub spare: u64,
}

impl NodeInfo {
    /// Bytes the node can still take: the smaller of what its capacity leaves (after shards
    /// and manifests) and what its disk has room for.
    pub fn free(&self) -> u64 {
        self.space().free()
    }

    /// Its space, as the policies see it.
    pub fn space(&self) -> cairn_policy::capacity::Space {
        cairn_policy::capacity::Space {
            capacity: self.capacity,
            used: self.used.saturating_add(self.manifest_bytes),
            disk_room: self.disk_room,
        }
    }
}

/// Whether a node holds a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Holding {
    /// Not held.
    Absent,
    /// Held and, as far as the node knows, intact (its length).
    Intact(u64),
    /// Held, but its copy failed verification and is quarantined (never served).
    Corrupt,
}

impl Holding {
    /// The length of an intact copy.
    pub fn intact(self) -> Option<u64> {
        match self {
            Holding::Intact(n) => Some(n),
            _ => None,
        }
    }
}

/// Control-plane requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Describe yourself.
    Info,
    /// Which of these shards or manifests do you hold (and how long are they)?
    Has(Vec<Cid>),
    /// List held shards in CID byte order, after `after`, at most `limit`.
    List {
        /// Continue after this CID.
        after: Option<Cid>,
        /// Most entries wanted (capped at [`MAX_LIST`]).
        limit: u32,
    },
    /// Manifests signed by this ed25519 public key, newest first.
    Signed {
        /// The signer's public key (32 bytes).
        #[serde(with = "serde_bytes")]
        signer: Vec<u8>,
        /// Most entries wanted (capped at [`MAX_SIGNED`]).
        limit: u32,
    },
    /// This node's signed storage commitment for `epoch` (the current epoch, or one it still
    /// keeps): a `cairn_proofs::commitment::Commitment`, encoded.
    Commitment {
        /// The epoch.
        epoch: u64,
    },
    /// Answer this challenge (a `cairn_proofs::challenge::Challenge`, encoded) with a proof.
    Prove {
        /// The encoded challenge.
        #[serde(with = "serde_bytes")]
        challenge: Vec<u8>,
    },
    /// Audit receipts (`cairn_proofs::ledger::AuditReceipt`, encoded) spreading between
    /// nodes: at most [`MAX_GOSSIP`].
    AuditReceipts(Vec<serde_bytes::ByteBuf>),
    /// The proof records this node's ledger keeps: of one node (a peer id), or of all.
    Records {
        /// The node asked about; every node if absent.
        node: Option<String>,
    },
}

/// Most audit receipts in one [`ControlRequest::AuditReceipts`].
pub const MAX_GOSSIP: usize = 64;
/// Most records in one [`ControlResponse::Records`].
pub const MAX_RECORDS: usize = 256;

/// Most entries in one [`ControlResponse::Signed`].
pub const MAX_SIGNED: u32 = 1000;

/// A manifest a signer published, as a node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest.
    pub cid: Cid,
    /// When it was signed (milliseconds since the Unix epoch, the signer's clock).
    pub time_ms: u64,
    /// Object or dataset.
    pub kind: ManifestKind,
}

/// Control-plane responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlResponse {
    /// Answer to [`ControlRequest::Info`].
    Info(NodeInfo),
    /// Answer to [`ControlRequest::Has`], one entry per CID asked.
    Has(Vec<Holding>),
    /// Answer to [`ControlRequest::List`].
    List {
        /// `(cid, length)` pairs.
        shards: Vec<(Cid, u64)>,
        /// Whether more follow.
        more: bool,
    },
    /// Answer to [`ControlRequest::Signed`], newest first.
    Signed(Vec<SignedManifest>),
    /// Answer to [`ControlRequest::Commitment`]: the encoded commitment.
    Commitment(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Answer to [`ControlRequest::Prove`]: the encoded `cairn_proofs::proof::EpochProof`.
    Proof(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Answer to [`ControlRequest::Prove`] when the node cannot prove challenged shards: it has
    /// lost them (they are quarantined now, and its next commitment declares them).
    Unprovable {
        /// The shards' roots.
        shards: Vec<cairn_proofs::Hash32>,
        /// Why, for people.
        reason: String,
    },
    /// Answer to [`ControlRequest::AuditReceipts`]: how many were new to this node.
    Accepted {
        /// New receipts.
        new: u32,
    },
    /// Answer to [`ControlRequest::Records`].
    Records {
        /// The node's current epoch.
        epoch: u64,
        /// The records (at most [`MAX_RECORDS`]).
        records: Vec<RecordView>,
    },
    /// Answer to [`DataRequest::Lease`]: how many statements were taken (kept, or no newer
    /// than the one kept), and why others were refused (at most [`MAX_LEASE_REASONS`]).
    Leased {
        /// Statements taken.
        accepted: u32,
        /// Reasons for refusals.
        refused: Vec<String>,
    },
    /// Answer to [`DataRequest::Hold`]: encoded storage receipts, one per shard held.
    Held {
        /// The receipts.
        receipts: Vec<serde_bytes::ByteBuf>,
    },
    /// The request failed.
    Error(RemoteError),
}

/// A node's proof record as another node's ledger keeps it (see `cairn_proofs::ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    /// The node (peer id).
    pub peer_id: String,
    /// Sum over epochs of the bytes proven in each.
    pub proven_byte_epochs: u64,
    /// Epochs with a passing audit.
    pub proven_epochs: u64,
    /// Audits passed.
    pub passes: u64,
    /// Questions asked again and answered (no fault, nothing earned).
    pub cleared: u64,
    /// Late answers.
    pub late: u64,
    /// Unanswered askings (containment).
    pub contained: u64,
    /// Audits that could not reach the node.
    pub offline: u64,
    /// Faults reported.
    pub faults: u64,
    /// Named shards the node had declared lost.
    pub declared: u64,
    /// Recovered shards proven again.
    pub recoveries: u64,
    /// Newest epoch heard of.
    pub last_epoch: u64,
    /// Faulty now: offered no new data.
    pub faulty: bool,
    /// Score in thousandths (0 to 1000; a new node starts at 500).
    pub score_milli: u32,
    /// Median time to first byte of recent probes.
    pub probe_median_ms: Option<u64>,
    /// Recent faults, newest last.
    pub recent_faults: Vec<FaultView>,
    /// Shard CIDs named for repair (at most 64 listed).
    pub repair: Vec<String>,
    /// Shards named for repair in all.
    pub repair_count: u64,
}

/// One fault in a [`RecordView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultView {
    /// The epoch.
    pub epoch: u64,
    /// Who reported it (peer id).
    pub auditor: String,
    /// What it was, for people.
    pub kind: String,
    /// Shards concerned.
    pub shards: u32,
}

/// What a manifest blob is, for the receiver's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// An object manifest.
    Object,
    /// A dataset manifest.
    Dataset,
}

/// Data-plane request header; raw bytes follow for `Store`, `PutManifest` and `PutReceipts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataRequest {
    /// Store the `len` shard bytes that follow under `cid`.
    Store {
        /// The shard's CID; the receiver checks the bytes against it.
        cid: Cid,
        /// Byte count that follows.
        len: u64,
    },
    /// Send a byte range of a shard as a verified-streaming proof stream
    /// ([`DataResponse::Proof`]), or the whole shard as outboard and data
    /// ([`DataResponse::Shard`]; cut with [`RESET_CORRUPT`] if the node's copy turns out corrupt
    /// part-way).
    Fetch {
        /// The shard.
        cid: Cid,
        /// Byte range, whole shard if absent.
        range: Option<(u64, u64)>,
    },
    /// Store the manifest bytes that follow (`len`), and any provenance envelopes (each
    /// `u32 length ‖ bytes`, `envelopes` of them) after them.
    PutManifest {
        /// CID the bytes must hash to.
        cid: Cid,
        /// What kind of manifest it is.
        kind: ManifestKind,
        /// Length of the manifest bytes.
        len: u64,
        /// Number of provenance envelopes that follow.
        envelopes: u32,
    },
    /// Send a manifest and its provenance envelopes.
    GetManifest {
        /// The manifest.
        cid: Cid,
    },
    /// Which of these shards or manifests are held (the control plane's `Has`, on the cheaper
    /// data plane: `stat` and `verify` ask every node, readers ask when a guessed holder
    /// turns out not to hold a shard).
    Has {
        /// At most [`MAX_DATA_HAS`].
        cids: Vec<Cid>,
    },
    /// Keep these storage receipts beside `manifest` (which the node must hold): `len` bytes
    /// follow, `count` receipts framed as in [`encode_receipts`]. Answered
    /// [`DataResponse::Stored`], or refused whole if any receipt is bad.
    PutReceipts {
        /// The manifest whose shards the receipts name.
        manifest: Cid,
        /// Receipts that follow (at most [`MAX_RECEIPTS`]).
        count: u32,
        /// Bytes that follow (at most [`MAX_RECEIPTS_BYTES`]).
        len: u64,
    },
    /// Send the storage receipts kept beside `manifest`, by shard root and node key, a page at
    /// a time ([`DataResponse::Receipts`]).
    GetReceipts {
        /// The manifest.
        manifest: Cid,
        /// Continue after the receipt for this `(shard root, node key)` (the last one of the
        /// page before); from the first if absent.
        #[serde(default)]
        after: Option<(cairn_proofs::Hash32, cairn_proofs::NodeKey)>,
    },
    /// Keep these owners' lease statements (encoded `cairn_proofs::lease::LeaseStatement`s,
    /// at most [`MAX_LEASE_STATEMENTS`]) beside the manifests they name: sent to a keeper.
    /// Each must verify and name a manifest the node holds, or that one is refused (a bad
    /// signature refuses the whole request). Answered [`DataResponse::Leased`].
    Lease {
        /// The encoded statements.
        statements: Vec<serde_bytes::ByteBuf>,
    },
    /// Apply this lease statement to each of these shards the node holds (at most
    /// [`MAX_HOLD_SHARDS`]), sent by a keeper of the object. Answered [`DataResponse::Held`]:
    /// a storage receipt for each shard held, for the lease it is held under now.
    Hold {
        /// The encoded statement.
        statement: serde_bytes::ByteBuf,
        /// The shards.
        shards: Vec<Cid>,
    },
    /// These copies of shards the node holds are spare: for each shard, the storage receipt
    /// of the node that holds it for the network now (sent by a keeper of an object once a
    /// rebalancing move, a repair or a hedge left two copies). The node keeps the copies until
    /// their holds end (it never deletes under a live hold), and counts them out of the fill
    /// it reports ([`NodeInfo::spare`]) until a hold renews one. Each pair is checked: the
    /// receipt verifies, names the shard and another node, and runs at least as long as this
    /// node's lease. Answered [`DataResponse::Leased`] (pairs taken, reasons for the others).
    Spare {
        /// The shards (at most [`MAX_SPARE_SHARDS`]).
        shards: Vec<Cid>,
        /// The encoded receipts, one per shard, in the same order.
        receipts: Vec<serde_bytes::ByteBuf>,
    },
}

/// Most shards in one [`DataRequest::Spare`]: a full request, every receipt at its largest,
/// fits [`MAX_DATA_HEADER`].
pub const MAX_SPARE_SHARDS: usize = 200;

/// Most lease statements in one [`DataRequest::Lease`]: a full request, every statement at
/// its largest, fits [`MAX_DATA_HEADER`].
pub const MAX_LEASE_STATEMENTS: usize = 200;
/// Most shards in one [`DataRequest::Hold`]: the answer, a receipt per shard at its largest,
/// fits [`MAX_DATA_HEADER`].
pub const MAX_HOLD_SHARDS: usize = 200;
/// Most refusal reasons a [`DataResponse::Leased`] spells out (the rest are counted only).
pub const MAX_LEASE_REASONS: usize = 16;
/// Longest refusal reason sent.
pub const MAX_LEASE_REASON_BYTES: usize = 300;

/// Most storage receipts a node keeps per shard per manifest: a shard is stored on one node,
/// and on a few more when its store is retried or hedged.
pub const MAX_RECEIPTS_PER_SHARD: usize = 8;
/// Most storage receipts in one [`DataRequest::PutReceipts`] or [`DataResponse::Receipts`].
pub const MAX_RECEIPTS: u32 = 65_536;
/// Most bytes of receipts (with their length prefixes) in one [`DataRequest::PutReceipts`] or
/// [`DataResponse::Receipts`].
pub const MAX_RECEIPTS_BYTES: u64 = 16 << 20;
/// Most receipts that always fit one message, whatever their sizes: what a sender puts in one.
pub const RECEIPTS_PER_MESSAGE: usize = {
    let fit = MAX_RECEIPTS_BYTES as usize / (4 + MAX_RECEIPT_BYTES);
    if fit < MAX_RECEIPTS as usize {
        fit
    } else {
        MAX_RECEIPTS as usize
    }
};

/// Frames receipts as a [`DataRequest::PutReceipts`] or [`DataResponse::Receipts`] body: each
/// `u32 LE length ‖ encoded receipt`.
pub fn encode_receipts(receipts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(receipts.iter().map(|r| 4 + r.len()).sum());
    for r in receipts {
        body.extend_from_slice(&(r.len() as u32).to_le_bytes());
        body.extend_from_slice(r);
    }
    body
}

/// Splits a receipts body into exactly `count` receipts of at most [`MAX_RECEIPT_BYTES`] each
/// (not decoded): an error says what does not fit.
pub fn decode_receipts(body: &[u8], count: u32) -> Result<Vec<Vec<u8>>, String> {
    let mut rest = body;
    let mut out = Vec::with_capacity((count as usize).min(RECEIPTS_PER_MESSAGE));
    for i in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!("receipts body ends before receipt {i} of {count}"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_RECEIPT_BYTES {
            return Err(format!(
                "receipt {i} of {len} bytes is over the {MAX_RECEIPT_BYTES}-byte limit"
            ));
        }
        let Some((receipt, tail)) = tail.split_at_checked(len) else {
            return Err(format!("receipts body ends inside receipt {i} of {count}"));
        };
        out.push(receipt.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes follow the last of {count} receipts",
            rest.len()
        ));
    }
    Ok(out)
}

/// Checks a receipts message's header against the limits: `count` receipts in `len` bytes.
fn receipts_fit(count: u32, len: u64) -> bool {
    let (n, min, max) = (u64::from(count), 4, 4 + MAX_RECEIPT_BYTES as u64);
    count <= MAX_RECEIPTS && len <= MAX_RECEIPTS_BYTES && len >= n * min && len <= n * max
}

/// Most CIDs in one data-plane [`DataRequest::Has`] (so the request fits a frame header).
pub const MAX_DATA_HAS: usize = 1024;

/// Stream reset code a node uses when it finds its copy of a shard corrupt part-way through
/// sending it (the store has quarantined it): the client reads it as [`ErrorCode::Corrupt`].
pub const RESET_CORRUPT: u32 = 0xc0;

/// Stream reset code a node uses when it cannot finish sending a shard for another reason (it
/// was deleted meanwhile, or the store failed): its copy is not known to be bad, and the client
/// should ask another holder.
pub const RESET_ABORTED: u32 = 0xc1;

/// Data-plane response header; raw bytes may follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataResponse {
    /// Stored (or already held).
    Stored,
    /// A whole shard follows as its outboard (`verified::outboard_size(size)` bytes) and then
    /// its `size` data bytes: the answer to a `Fetch` without a range.
    Shard {
        /// Shard size.
        size: u64,
    },
    /// A proof stream of `len` bytes follows for a range of a shard of `size` bytes.
    Proof {
        /// Shard size.
        size: u64,
        /// Proof stream length.
        len: u64,
    },
    /// A manifest of `len` bytes follows, then `envelopes` frames of provenance envelopes.
    Manifest {
        /// Manifest length.
        len: u64,
        /// Envelope count.
        envelopes: u32,
    },
    /// Answer to [`DataRequest::Has`], one entry per CID asked.
    Has(Vec<Holding>),
    /// A shard was stored (or was held already): the node's signed promise to hold it, an
    /// encoded `cairn_proofs::receipt::StorageReceipt` naming the lease it holds now.
    StoredShard {
        /// The encoded receipt.
        #[serde(with = "serde_bytes")]
        receipt: Vec<u8>,
    },
    /// Answer to [`DataRequest::GetReceipts`]: `len` bytes of `count` receipts follow (framed
    /// as in [`encode_receipts`]).
    Receipts {
        /// Receipts that follow (at most [`MAX_RECEIPTS`]).
        count: u32,
        /// Bytes that follow (at most [`MAX_RECEIPTS_BYTES`]).
        len: u64,
        /// Whether more receipts follow the last one sent (ask again after it).
        #[serde(default)]
        more: bool,
    },
    /// Answer to [`DataRequest::Lease`]: how many statements were taken (kept, or no newer
    /// than the one kept), and why others were refused (at most [`MAX_LEASE_REASONS`]).
    Leased {
        /// Statements taken.
        accepted: u32,
        /// Reasons for refusals.
        refused: Vec<String>,
    },
    /// Answer to [`DataRequest::Hold`]: encoded storage receipts, one per shard held.
    Held {
        /// The receipts.
        receipts: Vec<serde_bytes::ByteBuf>,
    },
    /// The request failed.
    Error(RemoteError),
}

impl DataResponse {
    /// Checks a [`DataResponse::Receipts`] header against the limits (others pass).
    pub fn check(&self) -> Result<(), String> {
        match self {
            DataResponse::Receipts { count, len, .. } if !receipts_fit(*count, *len) => Err(
                format!("{count} receipts in {len} bytes is over the limits or cannot be right"),
            ),
            DataResponse::Held { receipts } if receipts.len() > MAX_HOLD_SHARDS => Err(format!(
                "{} receipts for one hold, at most {MAX_HOLD_SHARDS}",
                receipts.len()
            )),
            DataResponse::Leased { refused, .. } if refused.len() > MAX_LEASE_REASONS => {
                Err(format!(
                    "{} refusal reasons, at most {MAX_LEASE_REASONS}",
                    refused.len()
                ))
            }
            _ => Ok(()),
        }
    }
}

impl DataRequest {
    /// Checks the request's own limits before any body is read.
    pub fn check(&self) -> Result<(), RemoteError> {
        let bad = |m: String| {
            Err(RemoteError {
                code: ErrorCode::BadRequest,
                message: m,
            })
        };
        match self {
            DataRequest::Store { len, .. } if *len == 0 || *len > u64::from(MAX_SHARD_SIZE) => bad(
                format!("shard length {len} is outside 1..={MAX_SHARD_SIZE}"),
            ),
            DataRequest::Fetch {
                range: Some((a, b)),
                ..
            } if a >= b => bad(format!("empty range {a}..{b}")),
            DataRequest::PutManifest { len, envelopes, .. }
                if *len == 0 || *len > MAX_MANIFEST_BYTES as u64 || *envelopes > MAX_ENVELOPES =>
            {
                bad(format!(
                    "manifest of {len} bytes with {envelopes} envelopes is over the limits ({MAX_MANIFEST_BYTES} bytes, {MAX_ENVELOPES} envelopes)"
                ))
            }
            DataRequest::Lease { statements } if statements.len() > MAX_LEASE_STATEMENTS => {
                bad(format!(
                    "{} lease statements in one request, at most {MAX_LEASE_STATEMENTS}",
                    statements.len()
                ))
            }
            DataRequest::Hold { shards, .. } if shards.len() > MAX_HOLD_SHARDS => bad(format!(
                "{} shards in one hold request, at most {MAX_HOLD_SHARDS}",
                shards.len()
            )),
            DataRequest::Spare { shards, receipts }
                if shards.len() > MAX_SPARE_SHARDS || receipts.len() != shards.len() =>
            {
                bad(format!(
                    "{} shards and {} receipts in one spare request: one receipt per shard, at \
                     most {MAX_SPARE_SHARDS}",
                    shards.len(),
                    receipts.len()
                ))
            }
            DataRequest::Has { cids } if cids.len() > MAX_DATA_HAS => bad(format!(
                "{} CIDs in one has request, at most {MAX_DATA_HAS}",
                cids.len()
            )),
            DataRequest::PutReceipts { count, len, .. } if !receipts_fit(*count, *len) => {
                bad(format!(
                    "{count} receipts in {len} bytes: at most {MAX_RECEIPTS} receipts of at most \
                     {MAX_RECEIPT_BYTES} bytes each, {MAX_RECEIPTS_BYTES} bytes in all, each \
                     behind a 4-byte length"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Most provenance envelopes per manifest.
pub const MAX_ENVELOPES: u32 = 64;
/// Largest provenance envelope.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer's frame is over the limit.
    #[error("frame of {len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Limit.
        limit: usize,
    },
    /// The frame is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream failed or ended early.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Encodes a message as a frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    // The message types here hold only integers, strings, bytes and CIDs: encoding cannot fail.
    let body = serde_ipld_dagcbor::to_vec(msg)
        .unwrap_or_else(|e| unreachable!("protocol messages encode: {e}"));
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_ipld_dagcbor::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads a frame's length prefix and checks it against `limit`.
pub async fn read_len<R: AsyncRead + Unpin>(io: &mut R, limit: usize) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Reads one frame (futures I/O, as libp2p streams are).
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    io: &mut R,
    limit: usize,
) -> Result<T, FrameError> {
    let len = read_len(io, limit).await?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    decode_body(&body)
}

/// Writes one frame (futures I/O).
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(
    io: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    io.write_all(&encode_frame(msg)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let req = DataRequest::Fetch {
            cid: cairn_chunker::cids::raw(b"x"),
            range: Some((1, 5)),
        };
        let frame = encode_frame(&req);
        assert_eq!(
            u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let back: DataRequest = decode_body(&frame[4..]).unwrap();
        assert_eq!(back, req);
        futures::executor::block_on(async {
            let mut r = &frame[..];
            let back: DataRequest = read_frame(&mut r, MAX_DATA_HEADER).await.unwrap();
            assert_eq!(back, req);
            let mut r = &frame[..];
            assert!(matches!(
                read_frame::<DataRequest, _>(&mut r, 3).await,
                Err(FrameError::TooLarge { .. })
            ));
            let garbage = [5u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff];
            let mut r = &garbage[..];
            assert!(matches!(
                read_frame::<DataRequest, _>(&mut r, MAX_DATA_HEADER).await,
                Err(FrameError::Malformed(_))
            ));
            let mut r = &frame[..frame.len() - 1];
            assert!(matches!(
                read_frame::<DataRequest, _>(&mut r, MAX_DATA_HEADER).await,
                Err(FrameError::Io(_))
            ));
        });
    }

    #[test]
    fn request_limits() {
        let cid = cairn_chunker::cids::raw(b"x");
        assert!(DataRequest::Store { cid, len: 0 }.check().is_err());
        assert!(
            DataRequest::Store {
                cid,
                len: u64::from(MAX_SHARD_SIZE) + 1
            }
            .check()
            .is_err()
        );
        assert!(DataRequest::Store { cid, len: 1 << 20 }.check().is_ok());
        assert!(
            DataRequest::Fetch {
                cid,
                range: Some((5, 5))
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn receipt_messages_are_checked_before_their_bodies_are_read() {
        let manifest = cairn_chunker::cids::dag_cbor(b"m");
        let put = |count, len| DataRequest::PutReceipts {
            manifest,
            count,
            len,
        };
        assert!(put(0, 0).check().is_ok());
        assert!(put(1, 200).check().is_ok());
        assert!(put(MAX_RECEIPTS, MAX_RECEIPTS_BYTES).check().is_ok());
        // Too many, too long, or lengths that cannot hold `count` receipts.
        assert!(put(MAX_RECEIPTS + 1, MAX_RECEIPTS_BYTES).check().is_err());
        assert!(put(1000, MAX_RECEIPTS_BYTES + 1).check().is_err());
        assert!(put(2, 7).check().is_err());
        assert!(put(1, 4 + MAX_RECEIPT_BYTES as u64 + 1).check().is_err());
        assert!(put(0, 1).check().is_err());
        let answer = |count, len| DataResponse::Receipts {
            count,
            len,
            more: false,
        };
        assert!(answer(3, 300).check().is_ok());
        assert!(answer(MAX_RECEIPTS + 1, 100).check().is_err());
        assert!(answer(1, MAX_RECEIPTS_BYTES + 1).check().is_err());
        // A full page always fits.
        let page = RECEIPTS_PER_MESSAGE as u64;
        assert!(
            put(page as u32, page * (4 + MAX_RECEIPT_BYTES as u64))
                .check()
                .is_ok()
        );
    }

    #[test]
    fn receipt_bodies_round_trip_and_refuse_what_does_not_fit() {
        let receipts = vec![vec![1u8; 10], Vec::new(), vec![7u8; MAX_RECEIPT_BYTES]];
        let body = encode_receipts(&receipts);
        assert_eq!(decode_receipts(&body, 3).unwrap(), receipts);
        assert!(decode_receipts(&body, 2).is_err(), "trailing bytes");
        assert!(decode_receipts(&body, 4).is_err(), "one missing");
        assert!(
            decode_receipts(&body[..body.len() - 1], 3).is_err(),
            "cut short"
        );
        let mut long = encode_receipts(&[vec![0u8; MAX_RECEIPT_BYTES + 1]]);
        assert!(decode_receipts(&long, 1).unwrap_err().contains("limit"));
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_receipts(&long, 1).is_err());
        assert_eq!(decode_receipts(&[], 0).unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_full_lease_hold_or_spare_message_fits_a_header() {
        use cairn_proofs::lease::MAX_LEASE_BYTES;
        let big = || serde_bytes::ByteBuf::from(vec![0xab; MAX_LEASE_BYTES]);
        let lease = DataRequest::Lease {
            statements: (0..MAX_LEASE_STATEMENTS).map(|_| big()).collect(),
        };
        assert!(encode_frame(&lease).len() <= MAX_DATA_HEADER);
        lease.check().unwrap();
        let over = DataRequest::Lease {
            statements: (0..=MAX_LEASE_STATEMENTS).map(|_| big()).collect(),
        };
        assert!(over.check().is_err());
        let cid = cairn_chunker::cids::raw(b"x");
        let hold = DataRequest::Hold {
            statement: big(),
            shards: vec![cid; MAX_HOLD_SHARDS],
        };
        assert!(encode_frame(&hold).len() <= MAX_DATA_HEADER);
        hold.check().unwrap();
        let over = DataRequest::Hold {
            statement: big(),
            shards: vec![cid; MAX_HOLD_SHARDS + 1],
        };
        assert!(over.check().is_err());
        let held = DataResponse::Held {
            receipts: (0..MAX_HOLD_SHARDS)
                .map(|_| serde_bytes::ByteBuf::from(vec![1; MAX_RECEIPT_BYTES]))
                .collect(),
        };
        assert!(encode_frame(&held).len() <= MAX_DATA_HEADER);
        held.check().unwrap();
        let receipt = || serde_bytes::ByteBuf::from(vec![1; MAX_RECEIPT_BYTES]);
        let spare = DataRequest::Spare {
            shards: vec![cid; MAX_SPARE_SHARDS],
            receipts: (0..MAX_SPARE_SHARDS).map(|_| receipt()).collect(),
        };
        assert!(encode_frame(&spare).len() <= MAX_DATA_HEADER);
        spare.check().unwrap();
        let over = DataRequest::Spare {
            shards: vec![cid; MAX_SPARE_SHARDS + 1],
            receipts: (0..=MAX_SPARE_SHARDS).map(|_| receipt()).collect(),
        };
        assert!(over.check().is_err());
        let unpaired = DataRequest::Spare {
            shards: vec![cid; 2],
            receipts: vec![receipt()],
        };
        assert!(unpaired.check().is_err(), "one receipt per shard");
        let leased = DataResponse::Leased {
            accepted: u32::MAX,
            refused: vec!["x".repeat(MAX_LEASE_REASON_BYTES); MAX_LEASE_REASONS],
        };
        assert!(encode_frame(&leased).len() <= MAX_DATA_HEADER);
    }
}
