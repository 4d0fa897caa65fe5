//! A data owner's audit: challenge the nodes that signed storage receipts for an object's
//! shards, by name, and judge their answers with the same code the nodes audit each other with
//! (`cairn_proofs::audit::Auditor`).
//!
//! For each node holding receipts: fetch its commitment for the current epoch, challenge it on
//! `c` uniform positions plus (up to 16 of) the object's shards it promised to hold, and check
//! the proof. Shards stored during the current epoch are not demanded until the next one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_proofs::audit::{Answer, Auditor, Question};
use cairn_proofs::commitment::Commitment;
use cairn_proofs::epoch::ProofConfig;
use cairn_proofs::ledger::Verdict;
use cairn_proofs::proof::EpochProof;
use cairn_proofs::receipt::StorageReceipt;
use cairn_proofs::{NodeKey, challenge};
use cairn_wire::keys;
use cairn_wire::protocol::{ControlRequest, ControlResponse};
use serde::Serialize;

use crate::network::Network;

/// One node's audit.
#[derive(Debug, Clone, Serialize)]
pub struct NodeAudit {
    /// The node.
    pub peer_id: String,
    /// Receipts for this object's shards signed by the node.
    pub receipts: usize,
    /// Those the node can be asked about by name this epoch (taken two or more epochs ago,
    /// lease running).
    pub due: usize,
    /// Shards named in the challenge.
    pub named: usize,
    /// `pass`, `late`, `contained`, `offline` or `fault`.
    pub verdict: String,
    /// What was wrong, for people (empty on a pass).
    pub detail: String,
    /// Time from challenge to answer, in milliseconds.
    pub latency_ms: u64,
    /// Bytes the node's commitment covers, on a pass.
    pub committed_bytes: Option<u64>,
}

/// Why an audit could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// No node takes part in storage proofs.
    #[error(
        "no node reports a storage-proof epoch: are the nodes running with proofs.enabled = true?"
    )]
    NoEpoch,
    /// The object has no receipts.
    #[error(
        "no storage receipts are kept for this object: it was stored before receipts existed, or its keepers are unreachable"
    )]
    NoReceipts,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Audits every node that signed one of `receipts` (an object's, verified by the caller).
pub async fn audit_receipts(
    net: &Network,
    receipts: &[StorageReceipt],
) -> Result<Vec<NodeAudit>, AuditError> {
    if receipts.is_empty() {
        return Err(AuditError::NoReceipts);
    }
    let epoch_ms = net
        .nodes()
        .iter()
        .find_map(|n| n.info.epoch_ms)
        .ok_or(AuditError::NoEpoch)?;
    let config = ProofConfig::with_epoch(Duration::from_millis(epoch_ms))
        .map_err(|_| AuditError::NoEpoch)?;
    let epoch = config.epochs.at(unix_ms());
    // A fresh identity for the auditor: its nonces are unpredictable to the provers.
    let identity = libp2p::identity::Keypair::generate_ed25519();
    let Some(key) = keys::signing_key(&identity) else {
        return Err(AuditError::NoEpoch);
    };
    let me = NodeKey::of(&key);
    let secret = blake3::derive_key("cairn-client audit secret v1", key.as_bytes());
    let mut by_node: BTreeMap<NodeKey, Vec<StorageReceipt>> = BTreeMap::new();
    for r in receipts {
        by_node.entry(r.node).or_default().push(r.clone());
    }
    let asks = by_node.into_iter().map(|(node, rs)| {
        let config = config.clone();
        async move {
            let mut auditor = Auditor::new(me, secret, config.clone());
            audit_node(net, &mut auditor, &config, epoch, node, &rs).await
        }
    });
    Ok(futures::future::join_all(asks).await)
}

async fn audit_node(
    net: &Network,
    auditor: &mut Auditor,
    config: &ProofConfig,
    epoch: u64,
    node: NodeKey,
    receipts: &[StorageReceipt],
) -> NodeAudit {
    let due = receipts.iter().filter(|r| r.named_in(epoch)).count();
    let mut out = NodeAudit {
        peer_id: keys::peer_id(&node).map_or_else(|| node.to_string(), |p| p.to_string()),
        receipts: receipts.len(),
        due,
        named: 0,
        verdict: "offline".into(),
        detail: String::new(),
        latency_ms: 0,
        committed_bytes: None,
    };
    let Some(peer) = keys::peer_id(&node) else {
        out.detail = "the receipt's key is not a node key".into();
        return out;
    };
    let wait = config.deadline + config.grace;
    let commitment = match net
        .control(peer, ControlRequest::Commitment { epoch }, wait)
        .await
    {
        Ok(ControlResponse::Commitment(b)) => b,
        Ok(other) => {
            out.detail = format!("unexpected answer: {other:?}");
            return out;
        }
        Err(e) => {
            out.detail = e.to_string();
            return out;
        }
    };
    let question: Question = match Commitment::from_bytes(&commitment)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            auditor
                .question_for(node, epoch, c, receipts)
                .map_err(|f| f.kind.to_string())
        }) {
        Ok(q) => q,
        Err(e) => {
            out.verdict = "fault".into();
            out.detail = e;
            return out;
        }
    };
    out.named = question.challenge.targets.len();
    debug_assert!(question.challenge.targets.len() <= challenge::MAX_TARGETS);
    let started = Instant::now();
    let asked = net
        .control(
            peer,
            ControlRequest::Prove {
                challenge: question.challenge.to_bytes(),
            },
            wait,
        )
        .await;
    let latency = started.elapsed();
    out.latency_ms = latency.as_millis() as u64;
    let answer = match asked {
        Ok(ControlResponse::Proof(b)) => match EpochProof::from_bytes(&b) {
            Ok(p) => Answer::Proof(Box::new(p)),
            Err(e) => {
                out.verdict = "fault".into();
                out.detail = format!("malformed proof: {e}");
                return out;
            }
        },
        Ok(ControlResponse::Unprovable { shards, reason }) => Answer::Lost { shards, reason },
        Ok(other) => Answer::Refused(format!("{other:?}")),
        Err(cairn_wire::swarm::SwarmError::Remote { error, .. }) => {
            Answer::Refused(error.to_string())
        }
        Err(_) if latency >= wait => Answer::TimedOut,
        Err(e) => {
            out.detail = e.to_string();
            Answer::Unreachable
        }
    };
    let judged = auditor.judge(&question, answer, latency);
    out.verdict = judged.verdict.label().into();
    match judged.verdict {
        Verdict::Pass { bytes, declared } => {
            out.committed_bytes = Some(bytes);
            if declared > 0 {
                out.detail = format!("{declared} named shards declared lost by the node");
            }
        }
        Verdict::Fault(kind) => {
            out.detail = format!("{kind} ({} shards)", judged.shards.len());
        }
        Verdict::Late => out.detail = "answered after the deadline".into(),
        Verdict::Contained { .. } => out.detail = "no answer in time".into(),
        _ => {}
    }
    out
}
