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
use crate::proof::{EpochProof, Fault, FaultKind, Params, Proven};
use crate::receipt::StorageReceipt;
use crate::{Hash32, NodeKey, codec};

/// Longest text a verdict carries (a prover's words end up in receipts every node keeps).
pub const MAX_REASON: usize = 200;

/// `text` cut to at most [`MAX_REASON`] bytes, on a character boundary.
pub fn clip(mut text: String) -> String {
    if text.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

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

/// An answer after its proof was checked: what [`Auditor::judge_checked`] judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// A proof that verified.
    Proven(Proven),
    /// A proof that did not.
    Failed(Fault),
    /// The prover said it lost these shards.
    Lost {
        /// The shards.
        shards: Vec<Hash32>,
        /// Its words.
        reason: String,
    },
    /// The prover refused.
    Refused,
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
}

/// One node's auditor state.
#[derive(Debug)]
pub struct Auditor {
    me: NodeKey,
    secret: [u8; 32],
    config: ProofConfig,
    counter: u64,
    contained: BTreeMap<NodeKey, Contained>,
    /// Unanswered or late askings of each prover since its last in-time answer to a fresh
    /// question: answering a question asked again does not reset it, so a node cannot stall
    /// every fresh question and answer each one at leisure.
    misses: BTreeMap<NodeKey, u32>,
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
            misses: BTreeMap::new(),
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

    /// [`Auditor::question`] for a commitment fetched from `prover`: one that names another
    /// node (a peer passing off someone else's commitment) is a fault.
    pub fn question_for(
        &mut self,
        prover: NodeKey,
        epoch: u64,
        commitment: Commitment,
        receipts: &[StorageReceipt],
    ) -> Result<Question, Fault> {
        if commitment.node != prover {
            return Err(Fault {
                kind: FaultKind::WrongCommitment(format!(
                    "node {prover} answered with the commitment of node {}",
                    commitment.node
                )),
                shards: Vec::new(),
            });
        }
        self.question(epoch, commitment, receipts)
    }

    /// The question held for a contained prover, if any: ask it again.
    pub fn question_again(&self, prover: &NodeKey) -> Option<Question> {
        self.contained.get(prover).map(|c| Question {
            again: true,
            ..c.question.clone()
        })
    }

    /// Starts the nonce counter at `n`. A node passes the time it started, so that an auditor
    /// restarted within an epoch does not ask a question it asked before (whose answer the
    /// prover could replay).
    pub fn start_counter(&mut self, n: u64) {
        self.counter = n;
    }

    /// A new question for the prover of `commitment` (fetched for `epoch`), naming up to
    /// `max_targets` of the shards in `receipts` (forged ones are skipped) that may be named
    /// this epoch, and some of the recovered shards the commitment lists. A commitment that is invalid, for the wrong epoch, or different from one the
    /// prover gave before for the same epoch is a fault.
    ///
    /// The caller must check that the commitment came from the node it means to audit
    /// ([`Auditor::question_for`] does).
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
            .filter(|r| r.node == prover && r.named_in(epoch) && r.verify().is_ok())
            .map(|r| {
                (
                    codec::digest("cairn-proofs target pick v1", &[&nonce.0, &r.shard.0]),
                    r,
                )
            })
            .collect();
        due.sort_unstable_by_key(|a| a.0);
        // Receipt-backed shards first; recovered ones (which the prover lists itself) get at
        // most a quarter of the places, so a prover cannot crowd out the shards it promised
        // to hold by listing shards of its own as recovered.
        let max = self.config.max_targets.min(challenge::MAX_TARGETS);
        let mut targets: Vec<Hash32> = Vec::new();
        let mut named = Vec::new();
        let recovered_max = if commitment.recovered.is_empty() {
            0
        } else {
            (max / 4).max(1)
        };
        for (_, r) in due {
            if targets.len() + recovered_max >= max {
                break;
            }
            if !targets.contains(&r.shard) {
                targets.push(r.shard);
                named.push(r.clone());
            }
        }
        for r in commitment.recovered.iter() {
            if targets.len() >= max {
                break;
            }
            if !targets.contains(r) {
                targets.push(*r);
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
        let too_late = latency > self.config.deadline + self.config.grace;
        let checked = match answer {
            Answer::Proof(_) if too_late => Checked::TimedOut,
            Answer::Proof(proof) => match proof.verify(
                &question.challenge,
                &question.commitment,
                &question.receipts,
                Params::from(&self.config),
            ) {
                Ok(proven) => Checked::Proven(proven),
                Err(fault) => Checked::Failed(fault),
            },
            Answer::Lost { shards, reason } => Checked::Lost { shards, reason },
            Answer::Refused(_) => Checked::Refused,
            Answer::TimedOut => Checked::TimedOut,
            Answer::Unreachable => Checked::Unreachable,
        };
        self.judge_checked(question, checked, latency)
    }

    /// Judges an answer whose proof (if any) has been checked already: the auditor's rules
    /// for deadlines, containment and misses, apart from verification. [`Auditor::judge`]
    /// calls it after verifying; the simulator calls it with the verdict a proof would get.
    pub fn judge_checked(
        &mut self,
        question: &Question,
        checked: Checked,
        latency: Duration,
    ) -> Judgement {
        let prover = question.challenge.prover;
        let late = latency > self.config.deadline;
        let too_late = latency > self.config.deadline + self.config.grace;
        let checked = match checked {
            Checked::Proven(_) | Checked::Failed(_) if too_late => Checked::TimedOut,
            c => c,
        };
        let judgement = |verdict, shards| Judgement {
            verdict,
            shards,
            recovered: 0,
        };
        match checked {
            Checked::Unreachable => judgement(Verdict::Offline, Vec::new()),
            Checked::TimedOut | Checked::Refused => self.miss(question),
            Checked::Lost { shards, reason } => {
                self.contained.remove(&prover);
                judgement(Verdict::Fault(FaultKind::Lost(clip(reason))), shards)
            }
            Checked::Failed(fault) => {
                self.contained.remove(&prover);
                judgement(Verdict::Fault(fault.kind.clipped()), fault.shards)
            }
            // Valid but late: nothing earned, asked again (a late answer counts toward
            // `max_contained` like no answer).
            Checked::Proven(_) if late => {
                let mut j = self.miss(question);
                if matches!(j.verdict, Verdict::Contained { .. }) {
                    j.verdict = Verdict::Late;
                }
                j
            }
            Checked::Proven(proven) => {
                self.contained.remove(&prover);
                if !question.again {
                    self.misses.remove(&prover);
                }
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

    /// Counts an unanswered (or late) asking: contained, or a fault after too many.
    fn miss(&mut self, question: &Question) -> Judgement {
        let prover = question.challenge.prover;
        self.contained.entry(prover).or_insert_with(|| Contained {
            question: question.clone(),
        });
        let misses = {
            let m = self.misses.entry(prover).or_insert(0);
            *m += 1;
            *m
        };
        if misses >= self.config.max_contained {
            self.contained.remove(&prover);
            self.misses.remove(&prover);
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

    /// Drops questions held in containment that are too old for their provers to still keep
    /// the commitment they are about (`keep_epochs`): those provers are asked afresh, and the
    /// misses so far still count.
    pub fn expire(&mut self, now: u64) {
        let keep = self.config.keep_epochs;
        self.contained
            .retain(|_, c| c.question.challenge.epoch.saturating_add(keep) > now.saturating_add(1));
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
            Verdict::Fault(fault.kind.clipped()),
            0,
            None,
            fault.shards,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::CommitTree;

    #[test]
    fn a_commitment_from_another_node_is_a_fault_and_counters_start_where_told() {
        let config = ProofConfig::with_epoch(Duration::from_secs(60)).unwrap();
        let mut a = Auditor::new(NodeKey([1; 32]), [2; 32], config);
        let prover = SigningKey::from_bytes(&[3; 32]);
        let other = SigningKey::from_bytes(&[4; 32]);
        let tree = CommitTree::build(Vec::new()).unwrap();
        let theirs = Commitment::sign(&other, 5, &tree, vec![], vec![]).unwrap();
        let fault = a
            .question_for(NodeKey::of(&prover), 5, theirs, &[])
            .unwrap_err();
        assert!(matches!(fault.kind, FaultKind::WrongCommitment(_)));
        let mine = Commitment::sign(&prover, 5, &tree, vec![], vec![]).unwrap();
        let first = a
            .question_for(NodeKey::of(&prover), 5, mine.clone(), &[])
            .unwrap();
        // A restarted auditor that starts its counter elsewhere asks a different question.
        let mut b = Auditor::new(NodeKey([1; 32]), [2; 32], a.config().clone());
        b.start_counter(1_000);
        let second = b.question_for(NodeKey::of(&prover), 5, mine, &[]).unwrap();
        assert_ne!(first.challenge.nonce, second.challenge.nonce);
    }

    fn setup() -> (Auditor, SigningKey, CommitTree) {
        let config = ProofConfig::with_epoch(Duration::from_secs(60)).unwrap();
        let a = Auditor::new(NodeKey([1; 32]), [2; 32], config);
        (
            a,
            SigningKey::from_bytes(&[3; 32]),
            CommitTree::build(Vec::new()).unwrap(),
        )
    }

    fn proof_for(key: &SigningKey, tree: &CommitTree, q: &Question) -> Answer {
        let p = EpochProof::prove(
            key,
            &q.commitment,
            tree,
            &q.challenge,
            Params::from(&ProofConfig::with_epoch(Duration::from_secs(60)).unwrap()),
            |_, _| Err("nothing".into()),
        )
        .unwrap();
        Answer::Proof(Box::new(p))
    }

    #[test]
    fn stalling_every_fresh_question_and_answering_it_later_is_still_a_fault() {
        let (mut a, key, tree) = setup();
        let prover = NodeKey::of(&key);
        let fast = Duration::from_millis(5);
        let mut verdicts = Vec::new();
        for epoch in 1..=3 {
            let c = Commitment::sign(&key, epoch, &tree, vec![], vec![]).unwrap();
            let q = a.question_for(prover, epoch, c, &[]).unwrap();
            verdicts.push(
                a.judge(&q, Answer::TimedOut, a.config().deadline * 3)
                    .verdict,
            );
            if let Some(again) = a.question_again(&prover) {
                let answer = proof_for(&key, &tree, &again);
                verdicts.push(a.judge(&again, answer, fast).verdict);
            }
        }
        assert_eq!(
            verdicts,
            vec![
                Verdict::Contained { misses: 1 },
                Verdict::Cleared,
                Verdict::Contained { misses: 2 },
                Verdict::Cleared,
                Verdict::Fault(FaultKind::Missed(3)),
            ]
        );
        // An answer in time to a fresh question forgives the misses.
        let c = Commitment::sign(&key, 4, &tree, vec![], vec![]).unwrap();
        let q = a.question_for(prover, 4, c, &[]).unwrap();
        a.judge(&q, Answer::TimedOut, a.config().deadline * 3);
        let c = Commitment::sign(&key, 5, &tree, vec![], vec![]).unwrap();
        let q = a.question_for(prover, 5, c, &[]).unwrap();
        let answer = proof_for(&key, &tree, &q);
        assert!(matches!(
            a.judge(&q, answer, fast).verdict,
            Verdict::Pass { .. }
        ));
        let c = Commitment::sign(&key, 6, &tree, vec![], vec![]).unwrap();
        let q = a.question_for(prover, 6, c, &[]).unwrap();
        let v = a
            .judge(&q, Answer::TimedOut, a.config().deadline * 3)
            .verdict;
        assert_eq!(v, Verdict::Contained { misses: 1 });
    }

    #[test]
    fn questions_about_epochs_the_prover_no_longer_keeps_are_dropped() {
        let (mut a, key, tree) = setup();
        let prover = NodeKey::of(&key);
        let c = Commitment::sign(&key, 10, &tree, vec![], vec![]).unwrap();
        let q = a.question_for(prover, 10, c, &[]).unwrap();
        a.judge(&q, Answer::TimedOut, a.config().deadline * 3);
        let keep = a.config().keep_epochs;
        a.expire(10 + keep - 2);
        assert!(a.is_contained(&prover));
        a.expire(10 + keep - 1);
        assert!(
            !a.is_contained(&prover),
            "its commitment is pruned at 10 + keep"
        );
    }

    #[test]
    fn recovered_shards_cannot_crowd_out_named_ones_and_reasons_are_clipped() {
        let (mut a, key, _) = setup();
        let prover = NodeKey::of(&key);
        let entries: Vec<crate::tree::Entry> = (0..40u8)
            .map(|i| crate::tree::Entry {
                root: [i + 1; 32],
                size: 10,
            })
            .collect();
        let tree = CommitTree::build(entries).unwrap();
        let recovered: Vec<Hash32> = (0..20u8).map(|i| Hash32([i + 1; 32])).collect();
        let c = Commitment::sign(&key, 9, &tree, vec![], recovered.clone()).unwrap();
        let receipts: Vec<StorageReceipt> = (20..40u8)
            .map(|i| StorageReceipt::sign(&key, Hash32([i + 1; 32]), 10, 1, 100))
            .collect();
        let q = a.question_for(prover, 9, c, &receipts).unwrap();
        let max = a.config().max_targets;
        assert_eq!(q.challenge.targets.len(), max);
        let from_recovered = q
            .challenge
            .targets
            .iter()
            .filter(|t| recovered.contains(t))
            .count();
        assert_eq!(from_recovered, max / 4, "{:?}", q.challenge.targets);
        let j = a.judge(
            &q,
            Answer::Lost {
                shards: vec![],
                reason: "é".repeat(1000),
            },
            Duration::from_millis(1),
        );
        let Verdict::Fault(FaultKind::Lost(reason)) = j.verdict else {
            panic!("{:?}", j.verdict)
        };
        assert!(reason.len() <= MAX_REASON && reason.len() >= MAX_REASON - 1);
    }
}
