//! What a run found: a summary and a line per day, as a table for people and JSON for scripts.
//! Nothing in it depends on the machine or the wall clock, so the same seed and scenario give
//! the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::scenario::Scenario;

/// One day's line.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    /// Days since the start.
    pub day: f64,
    /// Nodes answering.
    pub nodes_up: usize,
    /// Stripes uploaded so far.
    pub stripes: usize,
    /// Fewest shards any stripe (not lost) can be read from now.
    pub fewest_live_shards: usize,
    /// Stripes with fewer than `k` shards readable now (not lost: a holder may come back).
    pub unreadable_stripes: usize,
    /// Stripes lost for good so far.
    pub stripes_lost: usize,
    /// Objects lost for good so far.
    pub objects_lost: usize,
    /// Bytes repair has read and written so far.
    pub repair_bytes: u64,
    /// Mean earnings so far of each kind of judged node, per disk.
    pub earnings: BTreeMap<String, f64>,
}

/// What one kind of node (honest, or an adversary of the scenario) did and earned.
#[derive(Debug, Clone, Serialize)]
pub struct Kind {
    /// "honest" (the judged sample), "deleter", "late", "dark", "fetcher" or "sybil".
    pub name: String,
    /// Identities of this kind judged.
    pub nodes: usize,
    /// Disks they run on (a sybil's identities share one).
    pub disks: usize,
    /// Identities the ledger held faulty at some point.
    pub detected: usize,
    /// Epochs (hours) from the start to each one's first fault: the mean.
    pub detection_epochs_mean: f64,
    /// The longest.
    pub detection_epochs_max: u64,
    /// Mean earnings per disk at the end, net of costs.
    pub earnings_per_disk: f64,
    /// Mean TiB-months really on each disk.
    pub disk_tib_months: f64,
    /// Whether this adversary earned at least what an honest disk did: cheating paid.
    pub pays: bool,
}

/// A run's results.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Days simulated.
    pub days: f64,
    /// The code.
    pub k: usize,
    /// The code's parity shards.
    pub m: usize,
    /// Nodes at the start.
    pub nodes_start: usize,
    /// Nodes not lost at the end.
    pub nodes_end: usize,
    /// Objects stored.
    pub objects: usize,
    /// Their stripes.
    pub stripes: usize,
    /// Shard bytes stored at the start.
    pub stored_bytes: u64,
    /// Shards no node had room for at the start (stored with no copy; repair rebuilds them
    /// when it can).
    pub shards_unplaced: u64,
    /// Objects with a stripe lost for good (fewer than `k` shards left anywhere).
    pub objects_lost: usize,
    /// Stripes lost for good.
    pub stripes_lost: usize,
    /// When the first object was lost.
    pub first_loss_day: Option<f64>,
    /// Fewest shards any stripe not lost could be read from, at any pass or day.
    pub fewest_live_shards: usize,
    /// Bytes repair read.
    pub repair_read_bytes: u64,
    /// Bytes repair wrote.
    pub repair_written_bytes: u64,
    /// Repair bytes (read and written) per byte stored.
    pub repair_per_stored_byte: f64,
    /// Shards rebuilt.
    pub shards_rebuilt: u64,
    /// Copies collected when their lease ran out (a rebuilt shard's old copy).
    pub copies_collected: u64,
    /// Copies that rotted.
    pub copies_rotted: u64,
    /// Rotten copies their node found (by its scrub, or proving a challenge that sampled
    /// them) and quarantined before anything else removed them.
    pub rot_found: u64,
    /// Audits of honest nodes that failed on a rotten copy their scrub had not reached yet.
    pub audits_failed_on_rot: u64,
    /// Rebuilds put off to a later pass because no holder had the bandwidth left to send.
    pub rebuilds_short_of_bandwidth: u64,
    /// Objects every copy of whose manifest was lost (so no one knows their shards).
    pub manifests_lost: u64,
    /// Manifest copies keepers in charge wrote to replace keepers lost or silent.
    pub manifest_copies_made: u64,
    /// Times a stripe needing repair was assessed while none of its object's keepers answered.
    pub stripes_without_keeper: u64,
    /// Transient outages.
    pub outages: u64,
    /// Nodes lost for good.
    pub losses: u64,
    /// Events simulated.
    pub events: u64,
    /// Audits made (storage proofs).
    pub audits: u64,
    /// Audits whose proof failed (a deleter's, over a byte it deleted).
    pub audit_failures: u64,
    /// What the closed form says should fail: the sum over deleters' audits of
    /// `1 - (1 - f)^c`, `f` the share of its committed bytes the deleter deleted.
    pub audit_failures_expected: f64,
    /// The auditors' verdicts, by kind.
    pub verdicts: BTreeMap<String, u64>,
    /// Honest nodes ever found faulty.
    pub honest_faulty: usize,
    /// Each kind of judged node: detection and earnings.
    pub kinds: Vec<Kind>,
    /// A line per day.
    pub daily: Vec<Day>,
}

impl Report {
    pub(crate) fn new(s: &Scenario, seed: u64) -> Self {
        Self {
            scenario: s.name.clone(),
            seed,
            days: s.days,
            k: s.data.k,
            m: s.data.m,
            nodes_start: 0,
            nodes_end: 0,
            objects: 0,
            stripes: 0,
            stored_bytes: 0,
            shards_unplaced: 0,
            objects_lost: 0,
            stripes_lost: 0,
            first_loss_day: None,
            fewest_live_shards: usize::MAX,
            repair_read_bytes: 0,
            repair_written_bytes: 0,
            repair_per_stored_byte: 0.0,
            shards_rebuilt: 0,
            copies_collected: 0,
            copies_rotted: 0,
            rot_found: 0,
            audits_failed_on_rot: 0,
            rebuilds_short_of_bandwidth: 0,
            manifests_lost: 0,
            manifest_copies_made: 0,
            stripes_without_keeper: 0,
            outages: 0,
            losses: 0,
            events: 0,
            audits: 0,
            audit_failures: 0,
            audit_failures_expected: 0.0,
            verdicts: BTreeMap::new(),
            honest_faulty: 0,
            kinds: Vec::new(),
            daily: Vec::new(),
        }
    }

    pub(crate) fn finish(&mut self) {
        if self.fewest_live_shards == usize::MAX {
            self.fewest_live_shards = self.k + self.m;
        }
        self.repair_per_stored_byte = if self.stored_bytes == 0 {
            0.0
        } else {
            (self.repair_read_bytes + self.repair_written_bytes) as f64 / self.stored_bytes as f64
        };
    }

    /// The summary as a table for a terminal.
    pub fn table(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mut rows: Vec<(&str, String)> = vec![
            (
                "scenario",
                format!("{} (seed {})", self.scenario, self.seed),
            ),
            (
                "simulated",
                format!("{} days, {} events", self.days, self.events),
            ),
            ("code", format!("{}+{}", self.k, self.m)),
            (
                "nodes",
                format!(
                    "{} at the start, {} at the end",
                    self.nodes_start, self.nodes_end
                ),
            ),
            (
                "stored",
                format!(
                    "{} objects, {} stripes, {:.1} GiB",
                    self.objects,
                    self.stripes,
                    gib(self.stored_bytes)
                ),
            ),
            (
                "nodes lost / outages",
                format!("{} / {}", self.losses, self.outages),
            ),
            (
                "objects lost",
                match self.first_loss_day {
                    Some(d) => format!(
                        "{} ({} stripes; the first on day {d:.1})",
                        self.objects_lost, self.stripes_lost
                    ),
                    None => "0".to_string(),
                },
            ),
            (
                "fewest live shards",
                format!("{} of {}", self.fewest_live_shards, self.k + self.m),
            ),
            (
                "repair traffic",
                format!(
                    "{:.1} GiB read, {:.1} GiB written, {:.3} bytes per byte stored ({} shards \
                     rebuilt, {} old copies collected)",
                    gib(self.repair_read_bytes),
                    gib(self.repair_written_bytes),
                    self.repair_per_stored_byte,
                    self.shards_rebuilt,
                    self.copies_collected
                ),
            ),
        ];
        if self.audits > 0 {
            let proofs: Vec<(&str, String)> = vec![
                (
                    "audits",
                    format!(
                        "{} ({} failed; {:.1} expected from 1-(1-f)^c)",
                        self.audits, self.audit_failures, self.audit_failures_expected
                    ),
                ),
                (
                    "verdicts",
                    self.verdicts
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                ("honest found faulty", self.honest_faulty.to_string()),
            ];
            rows.extend(proofs);
        }
        if self.copies_rotted > 0 {
            rows.push((
                "rot",
                format!(
                    "{} copies rotted, {} found by their node, {} audits failed on rot",
                    self.copies_rotted, self.rot_found, self.audits_failed_on_rot
                ),
            ));
        }
        if self.manifest_copies_made + self.manifests_lost + self.stripes_without_keeper > 0 {
            rows.push((
                "keepers",
                format!(
                    "{} manifest copies made, {} manifests lost, {} stripes waited for a keeper",
                    self.manifest_copies_made, self.manifests_lost, self.stripes_without_keeper
                ),
            ));
        }
        if self.rebuilds_short_of_bandwidth > 0 {
            rows.push((
                "short of bandwidth",
                format!(
                    "{} rebuilds put off to a later pass",
                    self.rebuilds_short_of_bandwidth
                ),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out: String = rows
            .iter()
            .map(|(k, v)| format!("{k:>width$}  {v}\n"))
            .collect();
        if !self.kinds.is_empty() {
            out.push_str(&format!(
                "\n{:<8} {:>6} {:>6} {:>9} {:>14} {:>12} {:>12}  pays\n",
                "kind", "nodes", "disks", "detected", "epochs to find", "TiB-months", "earned/disk"
            ));
            for k in &self.kinds {
                let find = if k.detected == 0 {
                    "-".to_string()
                } else {
                    format!(
                        "{:.1} ({} max)",
                        k.detection_epochs_mean, k.detection_epochs_max
                    )
                };
                out.push_str(&format!(
                    "{:<8} {:>6} {:>6} {:>9} {:>14} {:>12.2} {:>12.2}  {}\n",
                    k.name,
                    k.nodes,
                    k.disks,
                    k.detected,
                    find,
                    k.disk_tib_months,
                    k.earnings_per_disk,
                    if k.name == "honest" {
                        ""
                    } else if k.pays {
                        "YES"
                    } else {
                        "no"
                    }
                ));
            }
        }
        out
    }
}
