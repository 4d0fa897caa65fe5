//! Epoch proofs: the prover's answer to a challenge, and the auditor's check of it.
//!
//! A proof holds, for every challenged position and every chunk of every named shard, the
//! chunk's bytes and its path to the shard's root ([`ChunkProof`]), plus one multiproof of the
//! shards' places in the commitment ([`MultiProof`]), so the auditor derives each shard's
//! offset itself and knows the position really falls inside it. The prover signs it all
//! together with the challenge it answers, so a proof answers exactly one question of one
//! auditor about one commitment: it cannot be replayed, lent to another node or moved to
//! another epoch.
//!
//! Verifying needs the challenge the auditor sent, the commitment it fetched (whose digest the
//! challenge names), the receipts of any shards it named, and nothing else.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::challenge::Challenge;
use crate::chunk::{self, CHUNK_BYTES, ChunkProof};
use crate::codec::{self, CodecError};
use crate::commitment::Commitment;
use crate::receipt::StorageReceipt;
use crate::tree::{CommitTree, Entry, MultiProof, Place, verify_multiproof};
use crate::{Hash32, Sig64};

const CONTEXT: &str = "cairn-proofs epoch proof v1";
const DIGEST: &str = "cairn-proofs epoch proof digest v1";
const VERSION: u8 = 1;
/// Largest encoded proof (a proof at the protocol's limits of challenges and named shards).
pub const MAX_PROOF_BYTES: usize = 2 << 20;

/// How many chunks a proof answers: both sides must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Uniformly sampled chunks (`c`).
    pub challenges: u32,
    /// Chunks per named shard.
    pub target_chunks: u32,
}

impl From<&crate::epoch::ProofConfig> for Params {
    fn from(c: &crate::epoch::ProofConfig) -> Self {
        Params {
            challenges: c.challenges,
            target_chunks: c.target_chunks,
        }
    }
}

/// A prover's signed answer to one challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochProof {
    /// Format version.
    pub version: u8,
    /// The challenge answered, as received.
    pub challenge: Challenge,
    /// The places of every shard a chunk is proven from, in the commitment.
    pub places: MultiProof,
    /// The challenged chunks: the uniform positions in order, then each named shard's chunks
    /// (named shards the commitment declares lost have none).
    pub chunks: Vec<ChunkProof>,
    /// The prover's signature over all of the above.
    pub signature: Sig64,
}

#[derive(Serialize)]
struct Body<'a> {
    challenge: &'a Challenge,
    places: &'a MultiProof,
    chunks: &'a [ChunkProof],
}

fn body_digest(challenge: &Challenge, places: &MultiProof, chunks: &[ChunkProof]) -> Hash32 {
    let body = codec::encode(&Body {
        challenge,
        places,
        chunks,
    });
    codec::digest(DIGEST, &[&body])
}

/// Why a prover could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// The challenge is for another node, or malformed.
    #[error("the challenge is not for this node or not valid: {0}")]
    NotMine(String),
    /// The challenge names a commitment this node did not make for that epoch.
    #[error(
        "the challenge names commitment {named} for epoch {epoch}; this node committed to {ours}"
    )]
    WrongCommitment {
        /// The epoch.
        epoch: u64,
        /// What the challenge names.
        named: Hash32,
        /// What the node signed.
        ours: Hash32,
    },
    /// Challenged chunks could not be read or do not match their shard: the node has lost
    /// them (its store has been told, so the next commitment declares them).
    #[error("{} challenged shard(s) could not be proven: {}", .shards.len(), .reason)]
    Lost {
        /// The shards.
        shards: Vec<Hash32>,
        /// The first reason.
        reason: String,
    },
    /// The commitment tree refused (a bug: the tree was built by this node).
    #[error("commitment tree: {0}")]
    Tree(String),
}

/// What an auditor learns from a valid proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// Bytes the commitment covers (proven, with the confidence `c` gives, for this epoch).
    pub bytes: u64,
    /// Distinct shards whose chunks were checked.
    pub shards: Vec<Hash32>,
    /// Named shards the commitment had declared lost.
    pub declared: Vec<Hash32>,
}

/// A proof that fails, and the shards it fails on (empty when the failure is not about a
/// particular shard).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} ({} shard(s) named)", .shards.len())]
pub struct Fault {
    /// What was wrong.
    pub kind: FaultKind,
    /// The shards it concerns.
    pub shards: Vec<Hash32>,
}

/// Kinds of invalid answers: every one is the prover's fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FaultKind {
    /// The proof does not decode.
    #[error("malformed proof: {0}")]
    Malformed(String),
    /// It answers another question (an old proof replayed, another auditor's, another node's).
    #[error("the proof answers another challenge")]
    WrongChallenge,
    /// The challenge, commitment and proof do not belong together (another node's commitment,
    /// another epoch's).
    #[error("the proof is over another commitment: {0}")]
    WrongCommitment(String),
    /// Two different commitments signed for one epoch.
    #[error("the node signed two different commitments for one epoch")]
    Equivocation,
    /// The prover's signature does not hold.
    #[error("the proof is not signed by the challenged node")]
    Unsigned,
    /// The shards' places do not verify against the commitment.
    #[error("the shards' places do not verify against the commitment: {0}")]
    Places(String),
    /// A chunk does not verify against its shard.
    #[error("challenged chunks do not match their shards")]
    BadChunk,
    /// A named shard the node signed a receipt for is neither committed nor declared lost.
    #[error("named shards are neither committed nor declared lost")]
    Omitted,
    /// The node said it cannot prove challenged shards (it lost them without declaring it).
    #[error("the node could not prove challenged shards: {0}")]
    Lost(String),
    /// The node did not answer within the deadline and grace, too many times in a row.
    #[error("no answer to the same challenge {0} times in a row")]
    Missed(u32),
}

impl Fault {
    fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            shards: Vec::new(),
        }
    }
}

/// One chunk the proof must hold: which shard, which chunk.
struct Want {
    entry: Entry,
    index: u64,
}

/// What [`wanted`] finds: the chunks wanted, and two lists of shard roots.
type Wanted = (Vec<Want>, Vec<Hash32>, Vec<Hash32>);

/// The chunks a challenge asks of a commitment, from the shards' places: first the uniform
/// positions (each inside the place that covers it), then each named shard's chunks.
fn wanted(
    challenge: &Challenge,
    bytes: u64,
    params: Params,
    places: &[Place],
    declared: &[Hash32],
) -> Result<Wanted, Fault> {
    let mut out = Vec::new();
    for pos in challenge.positions(bytes, params.challenges) {
        // `places` is sorted by index, so by offset too.
        let i = places.partition_point(|p| p.offset <= pos);
        let place = i
            .checked_sub(1)
            .map(|i| &places[i])
            .filter(|p| pos - p.offset < p.entry.size)
            .ok_or_else(|| {
                Fault::new(FaultKind::Places(format!(
                    "no proven shard covers committed byte {pos}"
                )))
            })?;
        out.push(Want {
            entry: place.entry,
            index: (pos - place.offset) / CHUNK_BYTES,
        });
    }
    let mut omitted = Vec::new();
    let mut answered_declared = Vec::new();
    for t in &challenge.targets {
        if declared.binary_search(t).is_ok() {
            answered_declared.push(*t);
        } else if let Some(p) = places.iter().find(|p| p.entry.root == t.0) {
            for index in challenge.target_chunks(t, p.entry.size, params.target_chunks) {
                out.push(Want {
                    entry: p.entry,
                    index,
                });
            }
        } else {
            omitted.push(*t);
        }
    }
    Ok((out, omitted, answered_declared))
}

impl EpochProof {
    /// Answers `challenge` over `commitment` (this node's, signed with `key`, for the
    /// challenge's epoch) and the `tree` it was made from. `read` fetches one chunk's proof
    /// from the node's store (reading only the 16 KiB group that holds it and the outboard);
    /// each is checked here before it is sent, so a node never signs a proof over its own
    /// corrupt copy: that is reported as [`ProveError::Lost`] instead.
    pub fn prove(
        key: &SigningKey,
        commitment: &Commitment,
        tree: &CommitTree,
        challenge: &Challenge,
        params: Params,
        mut read: impl FnMut(&Entry, u64) -> Result<ChunkProof, String>,
    ) -> Result<Self, ProveError> {
        challenge
            .check()
            .map_err(|e| ProveError::NotMine(e.to_string()))?;
        if challenge.prover != commitment.node || commitment.node != crate::NodeKey::of(key) {
            return Err(ProveError::NotMine(format!(
                "it is for node {}",
                challenge.prover
            )));
        }
        if challenge.epoch != commitment.epoch || challenge.commitment != commitment.digest() {
            return Err(ProveError::WrongCommitment {
                epoch: challenge.epoch,
                named: challenge.commitment,
                ours: commitment.digest(),
            });
        }
        // The leaves to prove: every position's, and every named shard's that is committed.
        let mut leaves = Vec::new();
        for pos in challenge.positions(tree.total_bytes(), params.challenges) {
            let (leaf, _) = tree
                .locate(pos)
                .ok_or_else(|| ProveError::Tree(format!("byte {pos} is not in the tree")))?;
            leaves.push(leaf);
        }
        for t in &challenge.targets {
            if let Some(leaf) = tree.find(&t.0) {
                leaves.push(leaf);
            }
        }
        let places = tree
            .multiproof(&leaves)
            .map_err(|e| ProveError::Tree(e.to_string()))?;
        let proven = verify_multiproof(
            &commitment.root,
            commitment.count,
            commitment.bytes,
            &places,
        )
        .map_err(|e| ProveError::Tree(e.to_string()))?;
        let (wants, _, _) = wanted(
            challenge,
            tree.total_bytes(),
            params,
            &proven,
            &commitment.declared,
        )
        .map_err(|f| ProveError::Tree(f.to_string()))?;
        let mut chunks = Vec::with_capacity(wants.len());
        let mut lost: Vec<Hash32> = Vec::new();
        let mut reason = String::new();
        for w in &wants {
            let got = read(&w.entry, w.index).and_then(|p| {
                chunk::verify(&w.entry.root, w.entry.size, w.index, &p)
                    .map(|()| p)
                    .map_err(|e| e.to_string())
            });
            match got {
                Ok(p) => chunks.push(p),
                Err(e) => {
                    if reason.is_empty() {
                        reason = e;
                    }
                    let root = Hash32(w.entry.root);
                    if !lost.contains(&root) {
                        lost.push(root);
                    }
                }
            }
        }
        if !lost.is_empty() {
            return Err(ProveError::Lost {
                shards: lost,
                reason,
            });
        }
        let digest = body_digest(challenge, &places, &chunks);
        let signature = codec::sign(key, CONTEXT, &digest);
        Ok(EpochProof {
            version: VERSION,
            challenge: challenge.clone(),
            places,
            chunks,
            signature,
        })
    }

    /// Checks the proof as the answer to `sent`, over `commitment` (fetched from the prover
    /// before the challenge was sent), with `receipts` for the shards the challenge names (a
    /// named shard without a receipt, such as a recovered one, is checked for presence only).
    pub fn verify(
        &self,
        sent: &Challenge,
        commitment: &Commitment,
        receipts: &[StorageReceipt],
        params: Params,
    ) -> Result<Proven, Fault> {
        if self.version != VERSION {
            return Err(Fault::new(FaultKind::Malformed(format!(
                "version {}",
                self.version
            ))));
        }
        if self.challenge != *sent {
            return Err(Fault::new(FaultKind::WrongChallenge));
        }
        if commitment.node != sent.prover
            || commitment.epoch != sent.epoch
            || commitment.digest() != sent.commitment
        {
            return Err(Fault::new(FaultKind::WrongCommitment(format!(
                "the challenge names {} of epoch {}; the commitment is {} of node {} for epoch {}",
                sent.commitment,
                sent.epoch,
                commitment.digest(),
                commitment.node,
                commitment.epoch
            ))));
        }
        let digest = body_digest(&self.challenge, &self.places, &self.chunks);
        codec::verify(
            "epoch proof",
            &sent.prover,
            CONTEXT,
            &digest,
            &self.signature,
        )
        .map_err(|_| Fault::new(FaultKind::Unsigned))?;
        let places = verify_multiproof(
            &commitment.root,
            commitment.count,
            commitment.bytes,
            &self.places,
        )
        .map_err(|e| Fault::new(FaultKind::Places(e.to_string())))?;
        let (wants, omitted, declared) = wanted(
            sent,
            commitment.bytes,
            params,
            &places,
            &commitment.declared,
        )?;
        // A named shard is due only if its receipt says so; the caller sends due ones only,
        // but a receipt-backed size must match the committed one.
        let mut wrong_size = Vec::new();
        for r in receipts {
            if let Some(p) = places.iter().find(|p| p.entry.root == r.shard.0)
                && p.entry.size != r.size
            {
                wrong_size.push(r.shard);
            }
        }
        if !omitted.is_empty() || !wrong_size.is_empty() {
            let mut shards = omitted;
            shards.extend(wrong_size);
            return Err(Fault {
                kind: FaultKind::Omitted,
                shards,
            });
        }
        if self.chunks.len() != wants.len() {
            return Err(Fault::new(FaultKind::Malformed(format!(
                "{} chunks for {} challenged",
                self.chunks.len(),
                wants.len()
            ))));
        }
        let mut used = vec![false; places.len()];
        let mut bad = Vec::new();
        let mut shards = Vec::new();
        for (w, p) in wants.iter().zip(&self.chunks) {
            let root = Hash32(w.entry.root);
            if let Some(i) = places.iter().position(|p| p.entry.root == w.entry.root) {
                used[i] = true;
            }
            if chunk::verify(&w.entry.root, w.entry.size, w.index, p).is_err() {
                if !bad.contains(&root) {
                    bad.push(root);
                }
            } else if !shards.contains(&root) {
                shards.push(root);
            }
        }
        if !bad.is_empty() {
            return Err(Fault {
                kind: FaultKind::BadChunk,
                shards: bad,
            });
        }
        if used.iter().any(|u| !u) {
            return Err(Fault::new(FaultKind::Places(
                "the proof places shards nothing was asked of".into(),
            )));
        }
        shards.sort_unstable();
        Ok(Proven {
            bytes: commitment.bytes,
            shards,
            declared,
        })
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a proof (its contents are checked by [`EpochProof::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode("epoch proof", bytes, MAX_PROOF_BYTES)
    }
}
