//! Storage proofs in the simulation, judged and recorded by the proofs crate's own code: every
//! epoch each node is audited by `audits_per_epoch` others (and again by each auditor holding it
//! in containment); the answer is judged by [`Auditor::judge_checked`] (deadline, grace,
//! containment, misses) and the receipt folded into the network's [`Ledger`] (proven
//! byte-epochs, faults, score, faulty when a quorum of auditors reports faults inside the
//! window). What an answer is comes from the world: an honest node proves in time, a deleter's
//! proof fails when one of the `c` positions the proofs crate's [`Challenge::positions`] draws
//! falls in a shard it deleted, and so on for each kind of adversary.
//!
//! What is shortened, and why it cannot change an answer:
//! - Proofs are judged by their verdict, not built and verified: the proofs crate's tests show
//!   an honest proof always verifies and a proof over a missing byte always fails.
//! - The commitment is a digest of (node, epoch) rather than of its shard list, which only
//!   changes which uniform positions are drawn.
//! - Auditors are drawn at random per audit rather than by each auditor's own pick, which
//!   spreads audits the same way on average; receipts are not signed (the ledger is fed with
//!   [`Ledger::apply_verified`]), and one ledger stands for every node's (they fold the same
//!   gossiped receipts).
//! - Only the adversaries and a sample of honest nodes are judged and folded (`honest_sample`);
//!   the other honest nodes' audits are counted as the passes they are, since a node that
//!   holds its data and answers in time is judged the same way every time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use cairn_proofs::audit::{Auditor, Checked, Judgement, Question};
use cairn_proofs::challenge::Challenge;
use cairn_proofs::commitment::Commitment;
use cairn_proofs::epoch::ProofConfig;
use cairn_proofs::ledger::{Action, AuditReceipt, Ledger};
use cairn_proofs::{Hash32, NodeKey, Sig64};

use crate::rng::Rng;

/// A node's key for challenges and the ledger.
pub fn key(id: &[u8]) -> NodeKey {
    let mut k = [0u8; 32];
    k[..id.len().min(32)].copy_from_slice(&id[..id.len().min(32)]);
    NodeKey(k)
}

/// The audit state of the network.
pub struct Audits {
    config: ProofConfig,
    ledger: Ledger,
    /// Each auditor's state (containment, misses), made when it first audits.
    auditors: HashMap<usize, Auditor>,
    /// Per prover: the auditors holding it in containment.
    contained_by: BTreeMap<usize, BTreeSet<usize>>,
    /// Audits made.
    pub audits: u64,
    /// Deleters' audits whose proof failed (over a deleted byte).
    pub failures: u64,
    /// The sum over deleters' audits of their chance to fail, `1 - (1 - f)^c` with `f` the
    /// share of their committed bytes they deleted: what `failures` should come to.
    pub expected_failures: f64,
    /// Verdicts by kind ("pass", "late", "fault", ...).
    pub verdicts: BTreeMap<&'static str, u64>,
}

/// What a prover answered and how long it took.
pub struct Answer {
    /// The answer, its proof checked.
    pub checked: Checked,
    /// Time to answer.
    pub latency: Duration,
}

impl Audits {
    /// The production parameters with `challenges` positions an audit and answers due within
    /// `deadline` (and as long again of grace).
    pub fn new(deadline: Duration, challenges: u32) -> Self {
        let mut config = ProofConfig::production();
        config.challenges = challenges;
        config.deadline = deadline;
        config.grace = deadline;
        Self {
            ledger: Ledger::new(&config),
            config,
            auditors: HashMap::new(),
            contained_by: BTreeMap::new(),
            audits: 0,
            failures: 0,
            expected_failures: 0.0,
            verdicts: BTreeMap::new(),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &ProofConfig {
        &self.config
    }

    /// The ledger every node folds receipts into.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Auditors holding `prover` in containment: they ask it again this epoch.
    pub fn containing(&self, prover: usize) -> Vec<usize> {
        self.contained_by
            .get(&prover)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Counts `n` audits of honest nodes outside the sample: passes.
    pub fn passed(&mut self, n: u64) {
        self.audits += n;
        *self.verdicts.entry("pass").or_insert(0) += n;
    }

    /// The question `auditor` asks `prover` (committing `bytes` in `epoch`): the one held in
    /// containment, or a fresh one with a nonce from `rng`.
    pub fn question(
        &mut self,
        rng: &mut Rng,
        epoch: u64,
        (auditor, auditor_id): (usize, &[u8]),
        (prover, prover_id): (usize, &[u8]),
        bytes: u64,
    ) -> Question {
        let config = self.config.clone();
        let a = self.auditors.entry(auditor).or_insert_with(|| {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&(auditor as u64).to_le_bytes());
            Auditor::new(key(auditor_id), secret, config)
        });
        let pk = key(prover_id);
        if let Some(q) = a.question_again(&pk) {
            return q;
        }
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&epoch.to_le_bytes());
        digest[8..16].copy_from_slice(&(prover as u64).to_le_bytes());
        let mut nonce = [0u8; 32];
        for chunk in nonce.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let commitment = Commitment {
            version: 1,
            node: pk,
            epoch,
            root: Hash32(digest),
            count: 0,
            bytes,
            declared: Vec::new(),
            recovered: Vec::new(),
            signature: Sig64([0; 64]),
        };
        Question {
            challenge: Challenge::new(
                key(auditor_id),
                pk,
                epoch,
                Hash32(digest),
                Hash32(nonce),
                Vec::new(),
            ),
            commitment,
            receipts: Vec::new(),
            again: false,
        }
    }

    /// Judges `answer` to `question` by the auditor's rules and folds the receipt into the
    /// ledger in `epoch`. Returns the judgement and what the ledger says must happen.
    pub fn judge(
        &mut self,
        epoch: u64,
        (auditor, prover): (usize, usize),
        question: &Question,
        answer: Answer,
    ) -> (Judgement, Vec<Action>) {
        self.audits += 1;
        let Some(a) = self.auditors.get_mut(&auditor) else {
            return (
                Judgement {
                    verdict: cairn_proofs::ledger::Verdict::Offline,
                    shards: Vec::new(),
                    recovered: 0,
                },
                Vec::new(),
            );
        };
        let j = a.judge_checked(question, answer.checked, answer.latency);
        a.expire(epoch);
        let contained = a.is_contained(&question.challenge.prover);
        let set = self.contained_by.entry(prover).or_default();
        if contained {
            set.insert(auditor);
        } else {
            set.remove(&auditor);
        }
        *self.verdicts.entry(j.verdict.label()).or_insert(0) += 1;
        let receipt = AuditReceipt {
            version: 1,
            auditor: question.challenge.auditor,
            prover: question.challenge.prover,
            epoch: question.challenge.epoch,
            commitment: question.challenge.commitment,
            verdict: j.verdict.clone(),
            latency_ms: u64::try_from(answer.latency.as_millis()).unwrap_or(u64::MAX),
            probe_ms: None,
            shards: j.shards.clone(),
            signature: Sig64([0; 64]),
        };
        // A duplicate (the same auditor's second verdict of one kind for an epoch, as when it
        // asks a contained node again) is refused by the ledger, as in the network.
        let actions = self
            .ledger
            .apply_verified(&receipt, epoch)
            .unwrap_or_default();
        (j, actions)
    }

    /// Moves the ledger to `epoch`: what changes as faults leave the window.
    pub fn tick(&mut self, epoch: u64) -> Vec<Action> {
        self.ledger.tick(epoch)
    }

    /// The shards (indices into `sizes`, the prover's committed shards in commitment order)
    /// that `c` uniform positions drawn by the challenge's own sampling hit among those
    /// `missing` says are gone. With `expect`, adds the closed form's chance that the audit
    /// hits one, `1 - (1 - f)^c`, to `expected_failures`.
    pub fn sample(
        &mut self,
        challenge: &Challenge,
        sizes: &[u64],
        expect: bool,
        missing: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let total: u64 = sizes.iter().sum();
        if total == 0 {
            return Vec::new();
        }
        let c = self.config.challenges;
        let gone: u64 = (0..sizes.len())
            .filter(|&i| missing(i))
            .map(|i| sizes[i])
            .sum();
        if expect {
            let f = gone as f64 / total as f64;
            self.expected_failures += 1.0 - (1.0 - f).powi(c as i32);
        }
        let mut ends = Vec::with_capacity(sizes.len());
        let mut at = 0u64;
        for s in sizes {
            at += s;
            ends.push(at);
        }
        challenge
            .positions(total, c)
            .into_iter()
            .map(|p| ends.partition_point(|&e| e <= p))
            .filter(|&i| missing(i))
            .collect()
    }
}
