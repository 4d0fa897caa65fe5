//! What a run found: a summary and a line per day, as a table for people and JSON for scripts.
//! Nothing in it depends on the machine or the wall clock, so the same seed and scenario give
//! the same bytes.

use serde::Serialize;

use crate::scenario::Scenario;

/// One day's line.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    /// Days since the start.
    pub day: f64,
    /// Nodes answering.
    pub nodes_up: usize,
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
    /// Transient outages.
    pub outages: u64,
    /// Nodes lost for good.
    pub losses: u64,
    /// Events simulated.
    pub events: u64,
    /// Audits made (storage proofs).
    pub audits: u64,
    /// Audits that failed.
    pub audit_failures: u64,
    /// What the closed form says should fail: the sum over cheaters' audits of
    /// `1 - (1 - f)^c`, `f` the share of its committed bytes the cheater deleted.
    pub audit_failures_expected: f64,
    /// Nodes that cheat.
    pub cheaters: usize,
    /// Cheaters found faulty.
    pub cheaters_detected: usize,
    /// Honest nodes ever found faulty.
    pub honest_faulty: usize,
    /// Epochs (hours) from the start to each cheater's detection: the mean and the longest.
    pub detection_epochs_mean: f64,
    /// The longest.
    pub detection_epochs_max: u64,
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
            outages: 0,
            losses: 0,
            events: 0,
            audits: 0,
            audit_failures: 0,
            audit_failures_expected: 0.0,
            cheaters: 0,
            cheaters_detected: 0,
            honest_faulty: 0,
            detection_epochs_mean: 0.0,
            detection_epochs_max: 0,
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
        let rows: Vec<(&str, String)> = vec![
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
                "audits",
                format!(
                    "{} ({} failed; {:.1} expected from 1-(1-f)^c)",
                    self.audits, self.audit_failures, self.audit_failures_expected
                ),
            ),
            (
                "cheaters",
                format!(
                    "{} detected of {} (after {:.1} epochs on average, {} at most); {} honest \
                     nodes found faulty",
                    self.cheaters_detected,
                    self.cheaters,
                    self.detection_epochs_mean,
                    self.detection_epochs_max,
                    self.honest_faulty
                ),
            ),
            (
                "repair traffic",
                format!(
                    "{:.1} GiB read, {:.1} GiB written, {:.3} bytes per byte stored ({} shards rebuilt)",
                    gib(self.repair_read_bytes),
                    gib(self.repair_written_bytes),
                    self.repair_per_stored_byte,
                    self.shards_rebuilt
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:>width$}  {v}\n"))
            .collect()
    }
}
