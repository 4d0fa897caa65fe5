//! A scenario: the network, the data, what goes wrong, and how repair is set, as TOML.
//!
//! ```toml
//! name = "steady state"
//! days = 365
//!
//! [network]
//! nodes = 200            # storage nodes at the start
//! capacity_gib = 4096    # each
//! labels = 20            # failure domains (node i is in domain i % labels)
//!
//! [data]
//! objects = 100
//! stripes_per_object = 10
//! shard_mib = 64
//! k = 4
//! m = 2
//!
//! [churn]
//! outages_per_node_year = 12.0   # restarts, partitions: the node comes back with its data
//! outage_hours = 1.0             # mean length of one
//! losses_per_node_year = 0.05    # disks lost for good
//! replace_lost = true            # a new, empty node joins for each one lost
//! domain_loss_day = 100          # optional: every node of domain 0 is lost that day
//!
//! [repair]
//! enabled = true
//! interval_hours = 1.0
//! grace_hours = 0.5
//! margin = 0                     # 0: m - m/4, as the node's default
//! rate_mib_s = 64                # per node, as `repair.rate`
//! ```

use serde::Deserialize;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it is called in reports.
    pub name: String,
    /// How long it runs.
    pub days: f64,
    /// The nodes.
    pub network: Network,
    /// What is stored.
    pub data: Data,
    /// What goes wrong.
    #[serde(default)]
    pub churn: Churn,
    /// How the network repairs itself.
    #[serde(default)]
    pub repair: Repair,
    /// Storage proofs and cheaters.
    #[serde(default)]
    pub proofs: Proofs,
}

/// Storage proofs, with the production parameters (hour-long epochs, `c` = 32, 3 audits a
/// node an epoch, faulty on faults from 2 auditors within 3 epochs), and cheaters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    /// Whether nodes are audited.
    #[serde(default)]
    pub enabled: bool,
    /// Share of the starting nodes that cheat.
    #[serde(default)]
    pub cheaters: f64,
    /// Share of its shards each cheater deletes at the start, at least one (it goes on claiming
    /// them).
    #[serde(default)]
    pub deleted: f64,
}

/// The nodes at the start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// How many.
    pub nodes: usize,
    /// Each one's capacity, GiB.
    pub capacity_gib: u64,
    /// Failure domains: node `i` is in domain `i % labels` (0: no labels).
    #[serde(default)]
    pub labels: usize,
}

/// The objects, all uploaded at the start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// How many.
    pub objects: usize,
    /// Stripes in each.
    pub stripes_per_object: usize,
    /// Every shard's size, MiB.
    pub shard_mib: u64,
    /// Data shards per stripe.
    pub k: usize,
    /// Parity shards per stripe.
    pub m: usize,
}

/// Failures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Transient outages per node per year (a Poisson process).
    #[serde(default)]
    pub outages_per_node_year: f64,
    /// Mean outage length, hours (exponential).
    #[serde(default)]
    pub outage_hours: f64,
    /// Permanent losses per node per year (a Poisson process).
    #[serde(default)]
    pub losses_per_node_year: f64,
    /// Whether a new, empty node joins for each node lost.
    #[serde(default)]
    pub replace_lost: bool,
    /// The day every node of failure domain 0 is lost at once, if any.
    #[serde(default)]
    pub domain_loss_day: Option<f64>,
}

/// Repair settings, as the node's `[repair]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Repair {
    /// Whether stripes are rebuilt at all.
    pub enabled: bool,
    /// Hours between passes.
    pub interval_hours: f64,
    /// Hours a silent node is waited for before its copies count as lost.
    pub grace_hours: f64,
    /// Rebuild below `k + margin` live shards (0: the node's default, `m - m/4`).
    pub margin: usize,
    /// MiB per second each node's repairs may read and write.
    pub rate_mib_s: u64,
}

impl Default for Repair {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_hours: 1.0,
            grace_hours: 0.5,
            margin: 0,
            rate_mib_s: 64,
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// Not valid TOML for this format.
    #[error("the scenario is not valid: {0}")]
    Parse(String),
    /// A value that cannot work.
    #[error("{field}: {why}")]
    Bad {
        /// The field.
        field: &'static str,
        /// What is wrong with it, and the fix.
        why: String,
    },
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let bad = |field, why: &str| {
            Err(ScenarioError::Bad {
                field,
                why: why.to_string(),
            })
        };
        let d = &self.data;
        if !(self.days > 0.0 && self.days <= 36_500.0) {
            return bad("days", "must be more than 0 and at most 36,500 (a century)");
        }
        if self.network.capacity_gib > 1 << 30 || d.shard_mib > 1 << 20 {
            return bad(
                "network.capacity_gib",
                "capacities up to 2^30 GiB and shards up to 2^20 MiB",
            );
        }
        if self.churn.domain_loss_day.is_some() && self.network.labels == 0 {
            return bad(
                "churn.domain_loss_day",
                "a failure domain needs labels: set network.labels",
            );
        }
        if d.k == 0 || d.k + d.m > 255 {
            return bad("data.k", "k must be at least 1 and k + m at most 255");
        }
        if self.network.nodes < d.k + d.m {
            return bad(
                "network.nodes",
                "a stripe needs k + m distinct nodes: add nodes or use a smaller code",
            );
        }
        if d.shard_mib == 0 || self.network.capacity_gib == 0 {
            return bad("data.shard_mib", "shards and capacities must not be empty");
        }
        let c = &self.churn;
        for (field, v) in [
            ("churn.outages_per_node_year", c.outages_per_node_year),
            ("churn.outage_hours", c.outage_hours),
            ("churn.losses_per_node_year", c.losses_per_node_year),
        ] {
            if !(0.0..=1e6).contains(&v) {
                return bad(field, "must be from 0 to 1,000,000");
            }
        }
        if c.outages_per_node_year > 0.0 && c.outage_hours <= 0.0 {
            return bad("churn.outage_hours", "outages need a length above 0");
        }
        let p = &self.proofs;
        if !(0.0..=1.0).contains(&p.cheaters) || !(0.0..=1.0).contains(&p.deleted) {
            return bad("proofs.cheaters", "shares are from 0 to 1");
        }
        let r = &self.repair;
        if r.enabled && !(r.interval_hours >= 1.0 / 3600.0 && r.interval_hours <= 8760.0) {
            return bad(
                "repair.interval_hours",
                "a pass needs a second or more before the next, and at most a year",
            );
        }
        if !(0.0..=1e6).contains(&r.grace_hours) {
            return bad("repair.grace_hours", "must be from 0 to 1,000,000");
        }
        Ok(())
    }
}
