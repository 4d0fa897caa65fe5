//! Storage proofs in the simulation: every epoch each node answering is audited by
//! `audits_per_epoch` others, with the proofs crate's own challenge sampling
//! (`Challenge::positions`: `c` byte positions uniform over everything the node committed to).
//! A position inside a shard the node deleted fails the audit; a node that fails audits by
//! `fault_quorum` distinct auditors within `fault_window` epochs is faulty, as the ledger rules
//! (`cairn_proofs::epoch::ProofConfig::production`), and the keepers treat its copies as lost.
//!
//! What is shortened, and why it cannot change an answer: proofs are judged by their verdict,
//! not built and verified (an honest node's proof always verifies, a missing byte always
//! fails: the proofs crate's tests show both); the commitment is a digest of (node, epoch)
//! rather than of the shard list, which only changes which uniform positions are drawn; and
//! auditors are drawn at random per audit rather than by each auditor's own pick, which
//! spreads audits the same way on average.

use std::collections::{BTreeMap, HashSet};

use cairn_proofs::challenge::Challenge;
use cairn_proofs::epoch::ProofConfig;
use cairn_proofs::{Hash32, NodeKey};

use crate::rng::Rng;

/// The audit state of the network.
#[derive(Debug, Clone)]
pub struct Audits {
    config: ProofConfig,
    /// Per node: the epochs and auditors of its failed audits within the window.
    faults: BTreeMap<usize, Vec<(u64, usize)>>,
    /// Audits made, and how many failed.
    pub audits: u64,
    /// Audits that failed.
    pub failures: u64,
    /// The sum over audits of cheaters of their chance to fail, `1 - (1 - f)^c` with `f` the
    /// share of their committed bytes they deleted: what `failures` should come to.
    pub expected_failures: f64,
}

/// A node's key for challenges.
pub fn key(id: &[u8]) -> NodeKey {
    let mut k = [0u8; 32];
    k[..id.len().min(32)].copy_from_slice(&id[..id.len().min(32)]);
    NodeKey(k)
}

impl Audits {
    /// The production parameters.
    pub fn new() -> Self {
        Self {
            config: ProofConfig::production(),
            faults: BTreeMap::new(),
            audits: 0,
            failures: 0,
            expected_failures: 0.0,
        }
    }

    /// Challenges per audit (`c`).
    pub fn c(&self) -> u32 {
        self.config.challenges
    }

    /// Audits `prover` (its committed shards' sizes in commitment order, and which of them it
    /// deleted) by `auditor` in `epoch`: whether the audit failed.
    pub fn audit(
        &mut self,
        rng: &mut Rng,
        epoch: u64,
        (auditor, auditor_id): (usize, &[u8]),
        (prover, prover_id): (usize, &[u8]),
        sizes: &[u64],
        deleted: &HashSet<usize>,
    ) -> bool {
        let total: u64 = sizes.iter().sum();
        if total == 0 {
            return false;
        }
        let mut nonce = [0u8; 32];
        for chunk in nonce.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let mut commitment = [0u8; 32];
        commitment[..8].copy_from_slice(&epoch.to_le_bytes());
        commitment[8..8 + prover_id.len().min(24)]
            .copy_from_slice(&prover_id[..prover_id.len().min(24)]);
        let challenge = Challenge::new(
            key(auditor_id),
            key(prover_id),
            epoch,
            Hash32(commitment),
            Hash32(nonce),
            Vec::new(),
        );
        let c = self.config.challenges;
        // Prefix sums: the shard each position falls in.
        let mut ends = Vec::with_capacity(sizes.len());
        let mut at = 0u64;
        for s in sizes {
            at += s;
            ends.push(at);
        }
        let failed = challenge
            .positions(total, c)
            .into_iter()
            .any(|p| deleted.contains(&ends.partition_point(|&e| e <= p)));
        self.audits += 1;
        if !deleted.is_empty() {
            let gone: u64 = deleted.iter().map(|&i| sizes[i]).sum();
            let f = gone as f64 / total as f64;
            self.expected_failures += 1.0 - (1.0 - f).powi(c as i32);
        }
        if failed {
            self.failures += 1;
            self.faults
                .entry(prover)
                .or_default()
                .push((epoch, auditor));
        }
        failed
    }

    /// Whether `node` is faulty in `epoch`: failed audits by `fault_quorum` distinct auditors
    /// within the last `fault_window` epochs.
    pub fn faulty(&mut self, node: usize, epoch: u64) -> bool {
        let window = self.config.fault_window;
        let Some(f) = self.faults.get_mut(&node) else {
            return false;
        };
        f.retain(|(e, _)| e + window > epoch);
        let auditors: HashSet<usize> = f.iter().map(|(_, a)| *a).collect();
        auditors.len() >= self.config.fault_quorum
    }

    /// Audits each prover gets per epoch.
    pub fn per_epoch(&self) -> usize {
        self.config.audits_per_epoch
    }
}

impl Default for Audits {
    fn default() -> Self {
        Self::new()
    }
}
