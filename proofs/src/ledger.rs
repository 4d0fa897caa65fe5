//! Audit receipts and the ledger they fold into.
//!
//! Every audit ends in an [`AuditReceipt`] signed by the auditor: who was asked, about which
//! commitment, what the verdict was, how long the answer and a service probe took. Receipts
//! spread between nodes; each node folds the ones it sees into a [`Ledger`], one
//! [`NodeRecord`] per prover: proven byte-epochs, faults, declared faults, recoveries, probe
//! latency, a score. Consequences are outputs: [`Action::Repair`] names shards that failed
//! (or were declared lost) so repair can rebuild them elsewhere, and [`Action::StopPlacing`] /
//! [`Action::ResumePlacing`] say when a node is faulty, that is, when at least `fault_quorum`
//! distinct auditors reported a fault in the last `fault_window` epochs (one lying auditor
//! cannot shut an honest node out, and a node that stops failing comes back).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::epoch::ProofConfig;
use crate::proof::FaultKind;
use crate::{Hash32, NodeKey, Sig64};

const CONTEXT: &str = "cairn-proofs audit receipt v1";
const VERSION: u8 = 1;
/// Most shards one audit receipt names.
pub const MAX_RECEIPT_SHARDS: usize = 64;
/// Largest encoded audit receipt.
pub const MAX_AUDIT_RECEIPT_BYTES: usize = 1024 + MAX_RECEIPT_SHARDS * 36;
/// Receipts older than this many epochs are not folded in (they would rewrite settled history).
pub const HORIZON_EPOCHS: u64 = 16;

/// An audit's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A valid proof in time: the commitment's `bytes` count as proven this epoch; `declared`
    /// named shards were answered as declared faults.
    Pass {
        /// Committed bytes.
        bytes: u64,
        /// Named shards the commitment declared lost.
        declared: u32,
    },
    /// A valid answer to a question asked again under containment: no fault, and nothing
    /// earned (the node had the question in advance).
    Cleared,
    /// A valid proof after the deadline, inside the grace period: nothing earned, asked again.
    Late,
    /// No usable answer in time (a timeout, a refusal): asked again; `misses` in a row so far.
    Contained {
        /// Unanswered askings in a row.
        misses: u32,
    },
    /// The node could not be reached at all: no fault (a restart, a network blip); repair of
    /// long-offline nodes is decided elsewhere.
    Offline,
    /// An invalid proof, a lost shard, an omitted one, or too many misses.
    Fault(FaultKind),
}

impl Verdict {
    /// Whether this verdict is a fault.
    pub fn is_fault(&self) -> bool {
        matches!(self, Verdict::Fault(_))
    }

    /// A short name for logs and metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "pass",
            Verdict::Cleared => "cleared",
            Verdict::Late => "late",
            Verdict::Contained { .. } => "contained",
            Verdict::Offline => "offline",
            Verdict::Fault(_) => "fault",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    auditor: &'a NodeKey,
    prover: &'a NodeKey,
    epoch: u64,
    commitment: &'a Hash32,
    verdict: &'a Verdict,
    latency_ms: u64,
    probe_ms: Option<u64>,
    shards: &'a [Hash32],
}

/// An auditor's signed record of one audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    /// Format version.
    pub version: u8,
    /// Who audited.
    pub auditor: NodeKey,
    /// Who was audited.
    pub prover: NodeKey,
    /// The epoch of the commitment challenged.
    pub epoch: u64,
    /// That commitment's digest (zero when none was obtained).
    pub commitment: Hash32,
    /// The outcome.
    pub verdict: Verdict,
    /// Time from challenge to answer, in milliseconds (the wait, when there was none).
    pub latency_ms: u64,
    /// Time to the first verified byte of a random range read, when one was made.
    pub probe_ms: Option<u64>,
    /// Shards concerned: those that failed (a fault) or were declared lost (a pass).
    pub shards: Vec<Hash32>,
    /// The auditor's signature.
    pub signature: Sig64,
}

/// Why a receipt was not folded in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// It does not decode or is not signed by its auditor.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// It is not acceptable here.
    #[error("audit receipt of {auditor} about {prover} for epoch {epoch}: {reason}")]
    Refused {
        /// Its auditor.
        auditor: NodeKey,
        /// Its prover.
        prover: NodeKey,
        /// Its epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
    /// Seen before (gossip brings the same receipt many times).
    #[error("audit receipt already folded in")]
    Duplicate,
}

impl AuditReceipt {
    /// Signs a receipt. `shards` beyond [`MAX_RECEIPT_SHARDS`] are dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &SigningKey,
        prover: NodeKey,
        epoch: u64,
        commitment: Hash32,
        verdict: Verdict,
        latency_ms: u64,
        probe_ms: Option<u64>,
        mut shards: Vec<Hash32>,
    ) -> Self {
        shards.sort_unstable();
        shards.dedup();
        shards.truncate(MAX_RECEIPT_SHARDS);
        let auditor = NodeKey::of(key);
        let signature = codec::sign(
            key,
            CONTEXT,
            &Body {
                auditor: &auditor,
                prover: &prover,
                epoch,
                commitment: &commitment,
                verdict: &verdict,
                latency_ms,
                probe_ms,
                shards: &shards,
            },
        );
        AuditReceipt {
            version: VERSION,
            auditor,
            prover,
            epoch,
            commitment,
            verdict,
            latency_ms,
            probe_ms,
            shards,
            signature,
        }
    }

    /// Checks the auditor's signature and the bounds.
    pub fn verify(&self) -> Result<(), CodecError> {
        if self.version != VERSION {
            return Err(CodecError::Version {
                what: "audit receipt",
                version: self.version,
                known: VERSION,
            });
        }
        if self.shards.len() > MAX_RECEIPT_SHARDS {
            return Err(CodecError::Malformed {
                what: "audit receipt",
                reason: format!("{} shards, at most {MAX_RECEIPT_SHARDS}", self.shards.len()),
            });
        }
        codec::verify(
            "audit receipt",
            &self.auditor,
            CONTEXT,
            &Body {
                auditor: &self.auditor,
                prover: &self.prover,
                epoch: self.epoch,
                commitment: &self.commitment,
                verdict: &self.verdict,
                latency_ms: self.latency_ms,
                probe_ms: self.probe_ms,
                shards: &self.shards,
            },
            &self.signature,
        )
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and verifies a receipt.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let r: Self = codec::decode("audit receipt", bytes, MAX_AUDIT_RECEIPT_BYTES)?;
        r.verify()?;
        Ok(r)
    }
}

/// What the ledger's state says must happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// These shards of `node` failed or were declared lost: rebuild them elsewhere.
    Repair {
        /// The node.
        node: NodeKey,
        /// The shards.
        shards: Vec<Hash32>,
    },
    /// `node` is faulty: offer it no new data.
    StopPlacing {
        /// The node.
        node: NodeKey,
    },
    /// `node` is no longer faulty.
    ResumePlacing {
        /// The node.
        node: NodeKey,
    },
}

/// Most receipts, faults and probe samples a record keeps (the totals count them all): with
/// receipts of ~300 bytes, a record stays under 16 KiB, a ledger of 10,000 nodes under 160 MiB.
const KEEP: usize = 32;
/// Most shards a record keeps named for repair.
const MAX_REPAIR: usize = 4096;
/// How fast the score forgets: each receipt scales the past by this much.
const FORGET: f64 = 0.98;

/// One fault as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultEntry {
    /// The epoch.
    pub epoch: u64,
    /// Who reported it.
    pub auditor: NodeKey,
    /// What it was.
    pub kind: FaultKind,
    /// Shards concerned.
    pub shards: Vec<Hash32>,
}

/// What the ledger knows of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRecord {
    /// The node.
    pub node: NodeKey,
    /// Sum over epochs of the bytes proven in that epoch (each epoch counted once, at the
    /// largest proven commitment).
    pub proven_byte_epochs: u64,
    /// Epochs with at least one passing audit.
    pub proven_epochs: u64,
    /// Audits passed.
    pub passes: u64,
    /// Questions asked again and answered (no fault, nothing earned).
    pub cleared: u64,
    /// Late answers.
    pub late: u64,
    /// Unanswered askings.
    pub contained: u64,
    /// Audits that could not reach the node.
    pub offline: u64,
    /// Faults reported.
    pub faults: u64,
    /// Shards the node declared lost when named.
    pub declared: u64,
    /// Recovered shards proven again.
    pub recoveries: u64,
    /// The newest epoch of any receipt.
    pub last_epoch: u64,
    /// Whether the node is faulty now (quorum of auditors inside the window).
    pub faulty: bool,
    /// Score in [0, 1]: passes against faults, forgetting the past (a new node starts at 0.5).
    pub score: f64,
    /// Recent faults, newest last.
    pub recent_faults: VecDeque<FaultEntry>,
    /// Recent probe times to first byte (ms), newest last.
    pub probe_ms: VecDeque<u64>,
    /// Shards named for repair.
    pub repair: BTreeSet<Hash32>,
    /// Recent receipts, newest last (the evidence behind the numbers).
    #[serde(skip)]
    pub receipts: VecDeque<AuditReceipt>,
    #[serde(skip)]
    alpha: f64,
    #[serde(skip)]
    beta: f64,
    #[serde(skip)]
    proven_by_epoch: BTreeMap<u64, u64>,
}

impl NodeRecord {
    fn new(node: NodeKey) -> Self {
        NodeRecord {
            node,
            proven_byte_epochs: 0,
            proven_epochs: 0,
            passes: 0,
            cleared: 0,
            late: 0,
            contained: 0,
            offline: 0,
            faults: 0,
            declared: 0,
            recoveries: 0,
            last_epoch: 0,
            faulty: false,
            score: 0.5,
            recent_faults: VecDeque::new(),
            probe_ms: VecDeque::new(),
            repair: BTreeSet::new(),
            receipts: VecDeque::new(),
            alpha: 1.0,
            beta: 1.0,
            proven_by_epoch: BTreeMap::new(),
        }
    }

    fn weigh(&mut self, good: f64, bad: f64) {
        self.alpha = self.alpha * FORGET + good;
        self.beta = self.beta * FORGET + bad;
        self.score = self.alpha / (self.alpha + self.beta);
    }

    /// The median of the recent probe times.
    pub fn probe_median_ms(&self) -> Option<u64> {
        let mut v: Vec<u64> = self.probe_ms.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    fn faulty_at(&self, epoch: u64, window: u64, quorum: usize) -> bool {
        let from = epoch.saturating_sub(window - 1);
        let auditors: BTreeSet<&NodeKey> = self
            .recent_faults
            .iter()
            .filter(|f| f.epoch >= from && f.epoch <= epoch)
            .map(|f| &f.auditor)
            .collect();
        auditors.len() >= quorum
    }
}

/// A node's view of every other node's proof record.
#[derive(Debug, Clone)]
pub struct Ledger {
    window: u64,
    quorum: usize,
    nodes: BTreeMap<NodeKey, NodeRecord>,
    /// One receipt per (epoch, auditor, prover, verdict kind) within the horizon: gossip brings
    /// the same receipt many times, and an auditor re-signing variants of one audit must not
    /// count more than once.
    seen: BTreeSet<(u64, NodeKey, NodeKey, &'static str)>,
    max_nodes: usize,
}

/// The nodes at least `quorum` reporters name, each reporter counted once per node: how a
/// client reads the `faulty` lists of the nodes it asks (one lying node cannot keep data off
/// an honest one).
pub fn named_by_quorum<T: Ord + Clone>(reports: &[Vec<T>], quorum: usize) -> BTreeSet<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for report in reports {
        let distinct: BTreeSet<&T> = report.iter().collect();
        for t in distinct {
            *counts.entry(t.clone()).or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n >= quorum.max(1))
        .map(|(t, _)| t)
        .collect()
}

impl Ledger {
    /// An empty ledger with `config`'s fault window and quorum.
    pub fn new(config: &ProofConfig) -> Self {
        Self::with_quorum(config.fault_window, config.fault_quorum)
    }

    /// An empty ledger: faulty means `quorum` distinct auditors in `window` epochs. A data
    /// owner auditing for itself trusts its own verdicts: quorum 1.
    pub fn with_quorum(window: u64, quorum: usize) -> Self {
        Ledger {
            window: window.max(1),
            quorum: quorum.max(1),
            nodes: BTreeMap::new(),
            seen: BTreeSet::new(),
            max_nodes: 100_000,
        }
    }

    /// Folds in a receipt (verifying it) at epoch `now`. Returns what must happen because of it.
    pub fn apply(&mut self, r: &AuditReceipt, now: u64) -> Result<Vec<Action>, LedgerError> {
        r.verify()?;
        self.apply_verified(r, now)
    }

    /// [`Ledger::apply`] for a receipt whose signature is known good: the node verifies every
    /// receipt it gets (through `apply`); the simulator, whose auditors sign nothing, folds its
    /// receipts with this, by the same rules.
    pub fn apply_verified(
        &mut self,
        r: &AuditReceipt,
        now: u64,
    ) -> Result<Vec<Action>, LedgerError> {
        let refuse = |reason: &str| LedgerError::Refused {
            auditor: r.auditor,
            prover: r.prover,
            epoch: r.epoch,
            reason: reason.into(),
        };
        if r.auditor == r.prover {
            return Err(refuse("a node cannot audit itself"));
        }
        if r.epoch > now.saturating_add(1) {
            return Err(refuse("it is from the future"));
        }
        if r.epoch.saturating_add(HORIZON_EPOCHS) < now {
            return Err(refuse("it is too old"));
        }
        if !self
            .seen
            .insert((r.epoch, r.auditor, r.prover, r.verdict.label()))
        {
            return Err(LedgerError::Duplicate);
        }
        let oldest = now.saturating_sub(HORIZON_EPOCHS);
        if self.seen.first().is_some_and(|s| s.0 < oldest) {
            self.seen = self
                .seen
                .split_off(&(oldest, NodeKey([0; 32]), NodeKey([0; 32]), ""));
        }
        if !self.nodes.contains_key(&r.prover) && self.nodes.len() >= self.max_nodes {
            return Err(refuse("the ledger is full"));
        }
        let (window, quorum) = (self.window, self.quorum);
        let rec = self
            .nodes
            .entry(r.prover)
            .or_insert_with(|| NodeRecord::new(r.prover));
        let was_faulty = rec.faulty;
        let mut actions = Vec::new();
        rec.last_epoch = rec.last_epoch.max(r.epoch);
        match &r.verdict {
            Verdict::Pass { bytes, declared } => {
                rec.passes += 1;
                rec.declared += u64::from(*declared);
                // Proving an empty commitment proves nothing: no credit.
                let good = if *bytes == 0 { 0.0 } else { 1.0 };
                rec.weigh(good, 0.1 * f64::from((*declared).min(10)));
                let best = rec.proven_by_epoch.entry(r.epoch).or_insert(0);
                if *best == 0 {
                    rec.proven_epochs += 1;
                }
                if *bytes > *best {
                    rec.proven_byte_epochs = rec.proven_byte_epochs.saturating_add(bytes - *best);
                    *best = *bytes;
                }
                let oldest = now.saturating_sub(HORIZON_EPOCHS + 1);
                rec.proven_by_epoch.retain(|e, _| *e >= oldest);
                if *declared > 0 && !r.shards.is_empty() {
                    actions.push(Action::Repair {
                        node: r.prover,
                        shards: r.shards.clone(),
                    });
                }
            }
            Verdict::Cleared => {
                rec.cleared += 1;
                rec.weigh(0.0, 0.0);
            }
            Verdict::Late => {
                rec.late += 1;
                rec.weigh(0.0, 0.05);
            }
            Verdict::Contained { .. } => {
                rec.contained += 1;
                rec.weigh(0.0, 0.05);
            }
            Verdict::Offline => rec.offline += 1,
            Verdict::Fault(kind) => {
                rec.faults += 1;
                rec.weigh(0.0, 1.0);
                rec.recent_faults.push_back(FaultEntry {
                    epoch: r.epoch,
                    auditor: r.auditor,
                    kind: kind.clone(),
                    shards: r.shards.clone(),
                });
                if rec.recent_faults.len() > KEEP {
                    rec.recent_faults.pop_front();
                }
                if !r.shards.is_empty() {
                    actions.push(Action::Repair {
                        node: r.prover,
                        shards: r.shards.clone(),
                    });
                }
            }
        }
        if let Some(p) = r.probe_ms {
            rec.probe_ms.push_back(p);
            if rec.probe_ms.len() > KEEP {
                rec.probe_ms.pop_front();
            }
        }
        for a in &actions {
            if let Action::Repair { shards, .. } = a {
                for s in shards {
                    if rec.repair.len() < MAX_REPAIR {
                        rec.repair.insert(*s);
                    }
                }
            }
        }
        rec.receipts.push_back(r.clone());
        if rec.receipts.len() > KEEP {
            rec.receipts.pop_front();
        }
        rec.faulty = rec.faulty_at(now.max(r.epoch), window, quorum);
        if rec.faulty && !was_faulty {
            actions.push(Action::StopPlacing { node: r.prover });
        } else if !rec.faulty && was_faulty {
            actions.push(Action::ResumePlacing { node: r.prover });
        }
        Ok(actions)
    }

    /// Moves the ledger to epoch `now`: nodes whose faults left the window are placed on again.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        let (window, quorum) = (self.window, self.quorum);
        let mut actions = Vec::new();
        for rec in self.nodes.values_mut() {
            let faulty = rec.faulty_at(now, window, quorum);
            if rec.faulty && !faulty {
                actions.push(Action::ResumePlacing { node: rec.node });
            } else if !rec.faulty && faulty {
                actions.push(Action::StopPlacing { node: rec.node });
            }
            rec.faulty = faulty;
        }
        actions
    }

    /// A node's record.
    pub fn record(&self, node: &NodeKey) -> Option<&NodeRecord> {
        self.nodes.get(node)
    }

    /// Every record.
    pub fn records(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// Nodes faulty now.
    pub fn faulty(&self) -> Vec<NodeKey> {
        self.nodes
            .values()
            .filter(|r| r.faulty)
            .map(|r| r.node)
            .collect()
    }

    /// Marks shards of `node` as repaired (taken off its repair list).
    pub fn repaired(&mut self, node: &NodeKey, shards: &[Hash32]) {
        if let Some(rec) = self.nodes.get_mut(node) {
            for s in shards {
                rec.repair.remove(s);
            }
        }
    }

    /// Counts a named recovered shard proven again.
    pub fn recovered(&mut self, node: &NodeKey, count: u64) {
        if let Some(rec) = self.nodes.get_mut(node) {
            rec.recoveries += count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn receipt(
        auditor: u8,
        prover: u8,
        epoch: u64,
        verdict: Verdict,
        shards: &[u8],
    ) -> AuditReceipt {
        AuditReceipt::sign(
            &key(auditor),
            NodeKey::of(&key(prover)),
            epoch,
            Hash32([0; 32]),
            verdict,
            12,
            Some(30),
            shards.iter().map(|&s| Hash32([s; 32])).collect(),
        )
    }

    fn pass(bytes: u64) -> Verdict {
        Verdict::Pass { bytes, declared: 0 }
    }

    #[test]
    fn receipts_round_trip_and_forgeries_fail() {
        let r = receipt(1, 2, 5, pass(100), &[]);
        assert_eq!(AuditReceipt::from_bytes(&r.to_bytes()).unwrap(), r);
        let forged = AuditReceipt {
            verdict: Verdict::Fault(FaultKind::BadChunk),
            ..r.clone()
        };
        assert!(forged.verify().is_err());
        let mut ledger = Ledger::with_quorum(3, 1);
        assert!(matches!(
            ledger.apply(&forged, 5),
            Err(LedgerError::Codec(_))
        ));
    }

    #[test]
    fn byte_epochs_count_each_epoch_once_at_its_largest_commitment() {
        let mut l = Ledger::with_quorum(3, 2);
        let p = NodeKey::of(&key(9));
        l.apply(&receipt(1, 9, 5, pass(100), &[]), 5).unwrap();
        l.apply(&receipt(2, 9, 5, pass(150), &[]), 5).unwrap();
        l.apply(&receipt(3, 9, 5, pass(120), &[]), 5).unwrap();
        l.apply(&receipt(1, 9, 6, pass(200), &[]), 6).unwrap();
        let rec = l.record(&p).unwrap();
        assert_eq!(rec.proven_byte_epochs, 350);
        assert_eq!(rec.proven_epochs, 2);
        assert_eq!(rec.passes, 4);
        assert!(rec.score > 0.5);
        assert_eq!(rec.probe_median_ms(), Some(30));
        // The same receipt again (gossip) changes nothing; nor does the same auditor signing
        // a variant of the same audit (another latency).
        assert_eq!(
            l.apply(&receipt(1, 9, 6, pass(200), &[]), 6),
            Err(LedgerError::Duplicate)
        );
        let variant = AuditReceipt::sign(
            &key(1),
            p,
            6,
            Hash32([0; 32]),
            pass(900),
            99,
            None,
            Vec::new(),
        );
        assert_eq!(l.apply(&variant, 6), Err(LedgerError::Duplicate));
        assert_eq!(l.record(&p).unwrap().proven_byte_epochs, 350);
        // Proving an empty commitment earns no score.
        let before = l.record(&p).unwrap().score;
        l.apply(&receipt(2, 9, 6, pass(0), &[]), 6).unwrap();
        assert!(l.record(&p).unwrap().score <= before);
    }

    #[test]
    fn a_quorum_of_auditors_makes_a_node_faulty_and_the_window_forgives() {
        let mut l = Ledger::with_quorum(3, 2);
        let p = NodeKey::of(&key(9));
        let fault = Verdict::Fault(FaultKind::BadChunk);
        let a = l
            .apply(&receipt(1, 9, 10, fault.clone(), &[7]), 10)
            .unwrap();
        assert_eq!(
            a,
            vec![Action::Repair {
                node: p,
                shards: vec![Hash32([7; 32])]
            }]
        );
        assert!(!l.record(&p).unwrap().faulty, "one auditor is not a quorum");
        // The same auditor again is still one auditor.
        l.apply(&receipt(1, 9, 11, fault.clone(), &[7]), 11)
            .unwrap();
        assert!(l.faulty().is_empty());
        let a = l.apply(&receipt(2, 9, 11, fault, &[8]), 11).unwrap();
        assert!(a.contains(&Action::StopPlacing { node: p }));
        assert_eq!(l.faulty(), vec![p]);
        assert_eq!(l.record(&p).unwrap().repair.len(), 2);
        assert!(l.tick(13).is_empty(), "epoch 11 is still inside 11..=13");
        assert_eq!(l.tick(14), vec![Action::ResumePlacing { node: p }]);
        assert!(l.faulty().is_empty());
        assert!(l.record(&p).unwrap().score < 0.5);
    }

    #[test]
    fn blips_are_not_faults() {
        let mut l = Ledger::with_quorum(3, 1);
        let p = NodeKey::of(&key(9));
        for (i, v) in [
            Verdict::Late,
            Verdict::Contained { misses: 1 },
            Verdict::Offline,
            Verdict::Cleared,
        ]
        .into_iter()
        .enumerate()
        {
            assert!(
                l.apply(&receipt(1, 9, 20 + i as u64, v, &[]), 23)
                    .unwrap()
                    .is_empty()
            );
        }
        let rec = l.record(&p).unwrap();
        assert!(!rec.faulty);
        assert_eq!(
            (
                rec.late,
                rec.contained,
                rec.offline,
                rec.cleared,
                rec.faults
            ),
            (1, 1, 1, 1, 0)
        );
        assert_eq!(rec.proven_byte_epochs, 0);
    }

    #[test]
    fn declared_faults_cost_less_than_caught_ones_and_name_shards_for_repair() {
        let mut declared = Ledger::with_quorum(3, 1);
        let mut caught = Ledger::with_quorum(3, 1);
        let p = NodeKey::of(&key(9));
        let a = declared
            .apply(
                &receipt(
                    1,
                    9,
                    5,
                    Verdict::Pass {
                        bytes: 10,
                        declared: 1,
                    },
                    &[4],
                ),
                5,
            )
            .unwrap();
        assert_eq!(
            a,
            vec![Action::Repair {
                node: p,
                shards: vec![Hash32([4; 32])]
            }]
        );
        caught
            .apply(
                &receipt(
                    1,
                    9,
                    5,
                    Verdict::Fault(FaultKind::Lost("gone".into())),
                    &[4],
                ),
                5,
            )
            .unwrap();
        let (d, c) = (declared.record(&p).unwrap(), caught.record(&p).unwrap());
        assert!(d.score > c.score, "{} vs {}", d.score, c.score);
        assert!(!d.faulty);
        assert!(c.faulty);
    }

    #[test]
    fn self_audits_future_and_stale_receipts_are_refused() {
        let mut l = Ledger::with_quorum(3, 1);
        assert!(l.apply(&receipt(1, 1, 5, pass(1), &[]), 5).is_err());
        assert!(l.apply(&receipt(1, 2, 7, pass(1), &[]), 5).is_err());
        assert!(l.apply(&receipt(1, 2, 6, pass(1), &[]), 5).is_ok());
        assert!(
            l.apply(&receipt(1, 2, 1, pass(1), &[]), 1 + HORIZON_EPOCHS + 1)
                .is_err()
        );
    }

    #[test]
    fn a_node_is_named_faulty_by_a_quorum_of_distinct_reporters() {
        let reports = vec![vec!["a", "b", "b"], vec!["b"], vec!["c"], vec![]];
        assert_eq!(
            named_by_quorum(&reports, 2),
            BTreeSet::from(["b"]),
            "one reporter naming b twice counts once; a and c have one each"
        );
        assert_eq!(named_by_quorum(&reports, 1).len(), 3);
        assert!(named_by_quorum::<&str>(&[], 2).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = AuditReceipt::from_bytes(&bytes);
        }
    }
}
