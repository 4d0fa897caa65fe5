//! The auditing half: each epoch, audit a few peers; spread audit receipts.
//!
//! An audit: fetch the peer's commitment for the epoch, ask a challenge (naming shards this
//! node holds storage receipts for, from the manifests it keeps), judge the answer against the
//! deadline, make a verified random range read of one proven shard (the service probe: time
//! to its first verified byte), sign the audit receipt, fold it into the ledger and push it to
//! a few peers. Peers push theirs here; new ones are folded in and pushed on once.
//!
//! Audits start at a point in the first third of the epoch (after its first twentieth) that
//! differs per node, so a network's provers are not all asked at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_chunker::cids::{self, Codec};
use cairn_proofs::audit::{Answer, Auditor, Judgement};
use cairn_proofs::commitment::Commitment;
use cairn_proofs::ledger::{AuditReceipt, Verdict};
use cairn_proofs::proof::{EpochProof, FaultKind};
use cairn_proofs::receipt::StorageReceipt;
use cairn_proofs::{Hash32, NodeKey};
use cairn_wire::data::{Client, Target};
use cairn_wire::keys;
use cairn_wire::protocol::{ControlRequest, ControlResponse, ErrorCode};
use cairn_wire::swarm::{Swarm, SwarmError};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{GOSSIP_FANOUT, Proofs, unix_ms};

/// Bytes a service probe reads.
const PROBE_BYTES: u64 = 64 * 1024;
/// Receipts of one prover an auditor considers when naming shards.
const RECEIPTS_PER_PROVER: usize = 4096;

/// Sleeps until Unix time `at_ms`, or returns false if cancelled first.
async fn sleep_until(at_ms: u64, cancel: &CancellationToken) -> bool {
    let wait = Duration::from_millis(at_ms.saturating_sub(unix_ms()));
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// The epoch loop: commit, wait for this node's audit time, audit, repeat.
pub async fn audit_loop(
    proofs: Arc<Proofs>,
    swarm: Swarm,
    data: Client,
    cancel: CancellationToken,
) {
    let epochs = proofs.config.epochs;
    loop {
        let epoch = proofs.epoch();
        // Commit at the start of the epoch, before any auditor asks.
        if let Err(e) = proofs.commitment(epoch).await {
            tracing::error!(epoch, "could not commit: {e}");
        }
        proofs.tick(epoch);
        let offset = {
            let h = blake3::keyed_hash(
                &blake3::derive_key("cairn-node audit offset v1", &proofs.me.0),
                &epoch.to_le_bytes(),
            );
            let mut b = [0u8; 8];
            b.copy_from_slice(&h.as_bytes()[..8]);
            // Not in the first twentieth: a prover whose clock is a little behind has
            // committed by then.
            let (len, early) = (epochs.length_ms(), epochs.length_ms() / 20);
            early + u64::from_le_bytes(b) % (len / 3 - early).max(1)
        };
        if !sleep_until(epochs.start_ms(epoch) + offset, &cancel).await {
            return;
        }
        audit_round(&proofs, &swarm, &data, epoch).await;
        if !sleep_until(epochs.start_ms(epoch + 1), &cancel).await {
            return;
        }
    }
}

async fn audit_round(proofs: &Arc<Proofs>, swarm: &Swarm, data: &Client, epoch: u64) {
    // Storage nodes only: clients connected right now (or gone without a goodbye, until their
    // connection times out) are neither audited nor auditors.
    let peers: Vec<(NodeKey, PeerId)> = match swarm.peers().await {
        Ok(p) => p
            .iter()
            .filter(|k| k.in_routing_table())
            .filter_map(|k| k.peer_id.parse::<PeerId>().ok())
            .filter_map(|p| keys::node_key(&p).map(|k| (k, p)))
            .collect(),
        Err(_) => return,
    };
    let keys_only: Vec<NodeKey> = peers.iter().map(|(k, _)| *k).collect();
    proofs.set_known(&keys_only);
    let picks = match proofs.auditor.lock() {
        Ok(mut a) => {
            a.expire(epoch);
            a.pick(epoch, &keys_only)
        }
        Err(_) => return,
    };
    let mut audits = tokio::task::JoinSet::new();
    for key in picks {
        let Some(peer) = peers.iter().find(|(k, _)| *k == key).map(|(_, p)| *p) else {
            continue;
        };
        let (proofs, swarm, data) = (proofs.clone(), swarm.clone(), data.clone());
        audits.spawn(async move { audit(&proofs, &swarm, &data, peer, key, epoch).await });
    }
    let mut receipts = Vec::new();
    while let Some(r) = audits.join_next().await {
        if let Ok(Some(r)) = r {
            receipts.push(r);
        }
    }
    if !receipts.is_empty() {
        proofs.accept(receipts, None);
    }
}

/// Audits one peer; `None` when it turned out not to be a storage node (a client).
async fn audit(
    proofs: &Arc<Proofs>,
    swarm: &Swarm,
    data: &Client,
    peer: PeerId,
    key: NodeKey,
    epoch: u64,
) -> Option<AuditReceipt> {
    let config = proofs.config.clone();
    let again = proofs.auditor.lock().ok()?.question_again(&key);
    let question = match again {
        Some(q) => q,
        None => {
            let asked = tokio::time::timeout(
                config.deadline + config.grace,
                swarm.request(peer, ControlRequest::Commitment { epoch }),
            )
            .await;
            let bytes = match asked {
                Ok(Ok(ControlResponse::Commitment(b))) => b,
                Ok(Err(SwarmError::Remote { error, .. }))
                    if error.code == ErrorCode::BadRequest
                        && error.message.contains("does not take part") =>
                {
                    return None;
                }
                Ok(Err(SwarmError::Request { reason, .. })) if reason.contains("nsupported") => {
                    return None;
                }
                _ => return Some(offline(proofs, key, epoch)),
            };
            let commitment = match Commitment::from_bytes(&bytes) {
                Ok(c) => c,
                // Another version of the protocol (a rolling upgrade): not this node's to judge.
                Err(cairn_proofs::commitment::CommitmentError::Codec(
                    cairn_proofs::CodecError::Version { .. },
                )) => return Some(offline(proofs, key, epoch)),
                Err(e) => {
                    let fault = cairn_proofs::proof::Fault {
                        kind: FaultKind::WrongCommitment(e.to_string()),
                        shards: Vec::new(),
                    };
                    return Some(Auditor::fault_receipt(
                        &proofs.key,
                        key,
                        epoch,
                        Hash32([0; 32]),
                        fault,
                    ));
                }
            };
            let digest = commitment.digest();
            let store = proofs.store.clone();
            let receipts =
                tokio::task::spawn_blocking(move || store.receipts_of(&key.0, RECEIPTS_PER_PROVER))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
            let receipts: Vec<StorageReceipt> = receipts
                .iter()
                .filter_map(|b| StorageReceipt::from_bytes(b).ok())
                .collect();
            let asked = proofs
                .auditor
                .lock()
                .ok()?
                .question_for(key, epoch, commitment, &receipts);
            match asked {
                Ok(q) => q,
                Err(fault) => {
                    return Some(Auditor::fault_receipt(
                        &proofs.key,
                        key,
                        epoch,
                        digest,
                        fault,
                    ));
                }
            }
        }
    };
    let started = Instant::now();
    let asked = tokio::time::timeout(
        config.deadline + config.grace,
        swarm.request(
            peer,
            ControlRequest::Prove {
                challenge: question.challenge.to_bytes(),
            },
        ),
    )
    .await;
    let latency = started.elapsed();
    let mut proven_from: Vec<[u8; 32]> = Vec::new();
    let answer = match asked {
        Err(_) => Answer::TimedOut,
        Ok(Ok(ControlResponse::Proof(bytes))) => match EpochProof::from_bytes(&bytes) {
            Ok(p) => {
                proven_from = p
                    .places
                    .entries()
                    .unwrap_or_default()
                    .iter()
                    .map(|e| e.root)
                    .collect();
                Answer::Proof(Box::new(p))
            }
            Err(e) => {
                let judgement = Judgement {
                    verdict: Verdict::Fault(FaultKind::Malformed(e.to_string())),
                    shards: Vec::new(),
                    recovered: 0,
                };
                return Some(Auditor::receipt(
                    &proofs.key,
                    &question,
                    &judgement,
                    latency,
                    None,
                ));
            }
        },
        Ok(Ok(ControlResponse::Unprovable { shards, reason })) => Answer::Lost { shards, reason },
        Ok(Ok(other)) => Answer::Refused(cairn_proofs::audit::clip(format!(
            "unexpected answer {other:?}"
        ))),
        // Too busy to take the request (its control plane is full, perhaps flooded by
        // someone else): not the prover's failure.
        Ok(Err(SwarmError::Remote { error, .. })) if error.code == ErrorCode::Busy => {
            Answer::Unreachable
        }
        Ok(Err(SwarmError::Remote { error, .. })) => Answer::Refused(error.to_string()),
        // A node that just gave its commitment and then drops the question has not answered
        // it. Only a question asked again (no commitment fetched first) can find the node
        // gone: a dial failure is fast.
        Ok(Err(_)) if question.again && latency < Duration::from_secs(1) => Answer::Unreachable,
        Ok(Err(_)) => Answer::TimedOut,
    };
    let judgement = match proofs.auditor.lock() {
        Ok(mut a) => a.judge(&question, answer, latency),
        Err(_) => return None,
    };
    proofs.metrics.audits(judgement.verdict.label()).inc();
    proofs.metrics.audit_seconds.observe(latency.as_secs_f64());
    if judgement.recovered > 0
        && let Ok(mut l) = proofs.ledger.lock()
    {
        l.recovered(&key, judgement.recovered);
    }
    let probe = if matches!(judgement.verdict, Verdict::Pass { .. }) {
        probe(swarm, data, peer, &question.challenge.nonce, &proven_from).await
    } else {
        None
    };
    if let Some(p) = probe {
        proofs.metrics.probe_seconds.observe(p.as_secs_f64());
    }
    tracing::info!(
        target: "cairn::_events::audit",
        peer = %peer,
        epoch = question.challenge.epoch,
        verdict = judgement.verdict.label(),
        ms = latency.as_millis() as u64,
        probe_ms = probe.map(|p| p.as_millis() as u64),
        "audited a peer"
    );
    if let Verdict::Fault(kind) = &judgement.verdict {
        tracing::warn!(peer = %peer, shards = judgement.shards.len(), "audit found a fault: {kind}");
    }
    Some(Auditor::receipt(
        &proofs.key,
        &question,
        &judgement,
        latency,
        probe,
    ))
}

fn offline(proofs: &Proofs, key: NodeKey, epoch: u64) -> AuditReceipt {
    proofs.metrics.audits("offline").inc();
    AuditReceipt::sign(
        &proofs.key,
        key,
        epoch,
        Hash32([0; 32]),
        Verdict::Offline,
        0,
        None,
        Vec::new(),
    )
}

/// Reads a random range of one of the proven shards from the peer's data plane, verified, and
/// returns the time to its first verified byte.
async fn probe(
    swarm: &Swarm,
    data: &Client,
    peer: PeerId,
    nonce: &Hash32,
    shards: &[[u8; 32]],
) -> Option<Duration> {
    if shards.is_empty() {
        return None;
    }
    let pick = |label: &[u8], n: u64| -> u64 {
        let h = blake3::keyed_hash(&nonce.0, label);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b) % n.max(1)
    };
    let root = shards[pick(b"shard", shards.len() as u64) as usize];
    let info = match swarm.request(peer, ControlRequest::Info).await {
        Ok(ControlResponse::Info(i)) => i,
        _ => return None,
    };
    let addr = *info.data_addrs.first()?;
    let cid = cids::from_hash(Codec::Raw, &blake3::Hash::from_bytes(root));
    let target = Target { peer, addr };
    // The shard's size: a `has` on the data plane (the probe measures a read as a trainer
    // would make it, so it goes through the same path).
    let size = data.has(&target, &[cid]).await.ok()?.first()?.intact()?;
    let len = PROBE_BYTES.min(size);
    let start = pick(b"offset", size - len + 1);
    let started = Instant::now();
    let first = std::sync::Mutex::new(None);
    let read = data
        .fetch_streaming(&target, &cid, Some(size), Some(start..start + len), &|_| {
            if let Ok(mut f) = first.lock() {
                f.get_or_insert_with(|| started.elapsed());
            }
        })
        .await;
    match read {
        Ok(_) => first.into_inner().ok().flatten(),
        Err(e) => {
            tracing::warn!(%peer, %cid, "service probe failed: {e}");
            None
        }
    }
}

/// Pushes new receipts to a few peers.
pub async fn gossip(
    proofs: Arc<Proofs>,
    swarm: Swarm,
    mut rx: mpsc::Receiver<Vec<AuditReceipt>>,
    cancel: CancellationToken,
) {
    let mut round: u64 = 0;
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = rx.recv() => match b { Some(b) => b, None => return },
        };
        round += 1;
        let Ok(peers) = swarm.peers().await else {
            return;
        };
        // To storage nodes: a client keeps no ledger, and a send to one that left waits for
        // its connection to time out, holding up every batch behind it.
        let mut peers: Vec<(blake3::Hash, PeerId)> = peers
            .iter()
            .filter(|p| p.in_routing_table())
            .filter_map(|p| p.peer_id.parse::<PeerId>().ok())
            .filter(|p| keys::node_key(p).is_some_and(|k| k != proofs.me))
            .map(|p| {
                let mut h = blake3::Hasher::new();
                h.update(&round.to_le_bytes());
                h.update(&p.to_bytes());
                (h.finalize(), p)
            })
            .collect();
        peers.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let bytes: Vec<serde_bytes::ByteBuf> = batch
            .iter()
            .take(cairn_wire::protocol::MAX_GOSSIP)
            .map(|r| serde_bytes::ByteBuf::from(r.to_bytes()))
            .collect();
        let mut sends = tokio::task::JoinSet::new();
        for (_, peer) in peers.into_iter().take(GOSSIP_FANOUT) {
            let (swarm, bytes) = (swarm.clone(), bytes.clone());
            sends.spawn(async move {
                swarm
                    .request(peer, ControlRequest::AuditReceipts(bytes))
                    .await
            });
        }
        while let Some(r) = sends.join_next().await {
            if let Ok(Ok(_)) = r {
                proofs.metrics.gossip_sent.inc();
            }
        }
    }
}
