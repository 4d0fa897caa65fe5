//! The auditor's side: whom to audit, what to ask, how to judge the answer.
//!
//! Each epoch an auditor picks a few peers (the ones it holds in *containment* first, then a
//! sample it derives from its secret, so provers cannot predict who audits them). For each it
//! fetches the peer's commitment, asks a [`Challenge`] with a fresh nonce and the shards it
//! holds receipts for (plus any the commitment lists as recovered), and judges the answer:
//!
//! | answer | verdict |
//! |---|---|
//! | valid proof within the deadline | pass (or *cleared*, if it was a question asked again) |
//! | valid proof after the deadline, within the grace | late: nothing earned, asked again |
//! | no answer by deadline + grace, or a refusal | contained: the *same* question is asked again next time |
//! | `max_contained` contained or late answers in a row | fault (missed) |
//! | unreachable | offline: no fault |
//! | an invalid proof, a lost or omitted shard, a second commitment for the epoch | fault |
//!
//! Asking the same question again (Storj's containment) means a node cannot escape a question
//! by stalling, and a valid answer to a question it had in advance earns nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;

use crate::challenge::{self, Challenge};
use crate::commitment::Commitment;
use crate::epoch::ProofConfig;
use crate::ledger::{AuditReceipt, Verdict};
use crate::proof::{EpochProof, Fault, FaultKind, Params};
use crate::receipt::StorageReceipt;
use crate::{Hash32, NodeKey, codec};

/// A question to one prover, with what the auditor needs to judge the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The challenge to send.
    pub challenge: Challenge,
    /// The commitment it is over.
    pub commitment: Commitment,
    /// Receipts of the shards it names.
    pub receipts: Vec<StorageReceipt>,
    /// Whether it is a question asked again under containment.
    pub again: bool,
}

/// What came back.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A proof.
    Proof(Box<EpochProof>),
    /// The prover said it cannot prove these shards (it lost them, undeclared).
    Lost {
        /// The shards.
        shards: Vec<Hash32>,
        /// Its words.
        reason: String,
    },
    /// The prover refused for another reason (busy, an internal error).
    Refused(String),
    /// Nothing came back by deadline + grace.
    TimedOut,
    /// The prover could not be reached.
    Unreachable,
}

/// A judged audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Shards concerned (failed ones, or declared ones on a pass).
    pub shards: Vec<Hash32>,
    /// Recovered shards the answer proved again.
    pub recovered: u64,
}

#[derive(Debug, Clone)]
struct Contained {
    question: Question,
    misses: u32,
}

/// One node's auditor state.
#[derive(Debug)]
pub struct Auditor {
    me: NodeKey,
    secret: [u8; 32],
    config: ProofConfig,
    counter: u64,
    contained: BTreeMap<NodeKey, Contained>,
    /// The commitment digest each prover gave for recent epochs, to catch a second one.
    seen: BTreeMap<(NodeKey, u64), Commitment>,
}

impl Auditor {
    /// An auditor for node `me`. `secret` keys its nonces and samples (the node derives it from
    /// its private key; the simulator from a seed).
    pub fn new(me: NodeKey, secret: [u8; 32], config: ProofConfig) -> Self {
        Auditor {
            me,
            secret,
            config,
            counter: 0,
            contained: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProofConfig {
        &self.config
    }

    /// Peers to audit in `epoch`: every contained one, then up to `audits_per_epoch` others
    /// in an order derived from the auditor's secret and the epoch.
    pub fn pick(&self, epoch: u64, peers: &[NodeKey]) -> Vec<NodeKey> {
        let mut out: Vec<NodeKey> = self
            .contained
            .keys()
            .filter(|p| peers.contains(p))
            .copied()
            .collect();
        let mut rest: Vec<(Hash32, NodeKey)> = peers
            .iter()
            .filter(|p| **p != self.me && !self.contained.contains_key(p))
            .map(|p| {
                (
                    codec::digest(
                        "cairn-proofs audit pick v1",
                        &[&self.secret, &epoch.to_le_bytes(), &p.0],
                    ),
                    *p,
                )
            })
            .collect();
        rest.sort_unstable();
        rest.dedup_by(|a, b| a.1 == b.1);
        out.extend(
            rest.into_iter()
                .take(self.config.audits_per_epoch)
                .map(|(_, p)| p),
        );
        out
    }

    /// The question held for a contained prover, if any: ask it again.
    pub fn question_again(&self, prover: &NodeKey) -> Option<Question> {
        self.contained.get(prover).map(|c| Question {
            again: true,
            ..c.question.clone()
        })
    }

    /// A new question for the prover of `commitment` (fetched for `epoch`), naming up to
    /// `max_targets` of the due shards in `receipts` and every recovered shard the commitment
    /// lists. A commitment that is invalid, for the wrong epoch, or different from one the
    /// prover gave before for the same epoch is a fault.
    pub fn question(
        &mut self,
        epoch: u64,
        commitment: Commitment,
        receipts: &[StorageReceipt],
    ) -> Result<Question, Fault> {
        let wrong = |m: String| Fault {
            kind: FaultKind::WrongCommitment(m),
            shards: Vec::new(),
        };
        commitment
            .verify()
            .map_err(|e| wrong(format!("the commitment does not verify: {e}")))?;
        if commitment.epoch != epoch {
            return Err(wrong(format!(
                "asked for epoch {epoch}, got a commitment for epoch {}",
                commitment.epoch
            )));
        }
        let prover = commitment.node;
        if let Some(before) = self.seen.get(&(prover, epoch)) {
            if before.equivocates(&commitment) {
                return Err(Fault {
                    kind: FaultKind::Equivocation,
                    shards: Vec::new(),
                });
            }
        } else {
            self.seen.insert((prover, epoch), commitment.clone());
            let keep = self.config.keep_epochs;
            self.seen
                .retain(|(_, e), _| e.saturating_add(keep) >= epoch);
        }
        let nonce = challenge::nonce(&self.secret, epoch, &prover, self.counter);
        self.counter += 1;
        // Named shards: a sample of the due receipts (ordered by a hash of the nonce so the
        // prover cannot tell which will be named), then the recovered ones.
        let mut due: Vec<(Hash32, &StorageReceipt)> = receipts
            .iter()
            .filter(|r| r.node == prover && r.due_in(epoch) && r.verify().is_ok())
            .map(|r| {
                (
                    codec::digest("cairn-proofs target pick v1", &[&nonce.0, &r.shard.0]),
                    r,
                )
            })
            .collect();
        due.sort_unstable_by_key(|a| a.0);
        let max = self.config.max_targets.min(challenge::MAX_TARGETS);
        let mut targets: Vec<Hash32> = commitment.recovered.iter().take(max).copied().collect();
        let mut named = Vec::new();
        for (_, r) in due {
            if targets.len() >= max {
                break;
            }
            if !targets.contains(&r.shard) {
                targets.push(r.shard);
                named.push(r.clone());
            }
        }
        let challenge = Challenge::new(self.me, prover, epoch, commitment.digest(), nonce, targets);
        Ok(Question {
            challenge,
            commitment,
            receipts: named,
            again: false,
        })
    }

    /// Judges `answer` to `question`, which took `latency` (for a timeout: how long the
    /// auditor waited).
    pub fn judge(&mut self, question: &Question, answer: Answer, latency: Duration) -> Judgement {
        let prover = question.challenge.prover;
        let late = latency > self.config.deadline;
        let too_late = latency > self.config.deadline + self.config.grace;
        let answer = match answer {
            Answer::Proof(_) if too_late => Answer::TimedOut,
            a => a,
        };
        let judgement = |verdict, shards| Judgement {
            verdict,
            shards,
            recovered: 0,
        };
        match answer {
            Answer::Unreachable => judgement(Verdict::Offline, Vec::new()),
            Answer::TimedOut | Answer::Refused(_) => self.miss(question),
            Answer::Lost { shards, reason } => {
                self.contained.remove(&prover);
                judgement(Verdict::Fault(FaultKind::Lost(reason)), shards)
            }
            Answer::Proof(proof) => {
                match proof.verify(
                    &question.challenge,
                    &question.commitment,
                    &question.receipts,
                    Params::from(&self.config),
                ) {
                    Err(fault) => {
                        self.contained.remove(&prover);
                        judgement(Verdict::Fault(fault.kind), fault.shards)
                    }
                    Ok(_) if late => self.miss(question),
                    Ok(proven) => {
                        self.contained.remove(&prover);
                        let recovered = question
                            .commitment
                            .recovered
                            .iter()
                            .filter(|r| proven.shards.binary_search(r).is_ok())
                            .count() as u64;
                        let verdict = if question.again {
                            Verdict::Cleared
                        } else {
                            Verdict::Pass {
                                bytes: proven.bytes,
                                declared: proven.declared.len() as u32,
                            }
                        };
                        Judgement {
                            verdict,
                            shards: proven.declared,
                            recovered,
                        }
                    }
                }
            }
        }
    }

    /// Counts an unanswered (or late) asking: contained, or a fault after too many.
    fn miss(&mut self, question: &Question) -> Judgement {
        let prover = question.challenge.prover;
        let entry = self.contained.entry(prover).or_insert_with(|| Contained {
            question: question.clone(),
            misses: 0,
        });
        entry.misses += 1;
        let misses = entry.misses;
        if misses >= self.config.max_contained {
            self.contained.remove(&prover);
            Judgement {
                verdict: Verdict::Fault(FaultKind::Missed(misses)),
                shards: Vec::new(),
                recovered: 0,
            }
        } else {
            Judgement {
                verdict: Verdict::Contained { misses },
                shards: Vec::new(),
                recovered: 0,
            }
        }
    }

    /// Whether `prover` is held in containment.
    pub fn is_contained(&self, prover: &NodeKey) -> bool {
        self.contained.contains_key(prover)
    }

    /// Signs the receipt for a judged audit.
    pub fn receipt(
        key: &SigningKey,
        question: &Question,
        judgement: &Judgement,
        latency: Duration,
        probe: Option<Duration>,
    ) -> AuditReceipt {
        AuditReceipt::sign(
            key,
            question.challenge.prover,
            question.challenge.epoch,
            question.challenge.commitment,
            judgement.verdict.clone(),
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            probe.map(|p| u64::try_from(p.as_millis()).unwrap_or(u64::MAX)),
            judgement.shards.clone(),
        )
    }

    /// A fault found before any question could be asked (a bad or second commitment), as a
    /// receipt.
    pub fn fault_receipt(
        key: &SigningKey,
        prover: NodeKey,
        epoch: u64,
        commitment: Hash32,
        fault: Fault,
    ) -> AuditReceipt {
        AuditReceipt::sign(
            key,
            prover,
            epoch,
            commitment,
            Verdict::Fault(fault.kind),
            0,
            None,
            fault.shards,
        )
    }
}
