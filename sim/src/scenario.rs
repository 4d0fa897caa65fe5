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
//! bandwidth_mib_s = 0    # each node's repair sends and receives at most this (0: no limit)
//!
//! [data]
//! objects = 100
//! stripes_per_object = 10
//! shard_mib = 64
//! k = 4
//! m = 2
//! upload_days = 0                # objects uploaded evenly over this many days (0: at the start)
//!
//! [churn]
//! outages_per_node_year = 12.0   # restarts, partitions: the node comes back with its data
//! outage_hours = 1.0             # mean length of one
//! losses_per_node_year = 0.05    # disks lost for good
//! replace_lost = true            # a new, empty node joins for each one lost
//! domain_loss_day = 100          # optional: every node of domain 0 is lost that day
//! bitrot_per_tib_year = 0.5      # copies made unreadable by rot, per TiB stored a year
//! scrub_mib_s = 32               # the node's scrub rate: it finds rot within a pass
//!
//! [repair]
//! enabled = true
//! interval_hours = 1.0
//! grace_hours = 0.5
//! margin = 0                     # 0: m - m/4, as the node's default
//! rate_mib_s = 64                # per node, as `repair.rate`
//!
//! [proofs]
//! enabled = true
//! deadline_seconds = 600         # the production deadline (and as long again of grace)
//! challenges = 32                # c, positions challenged per audit
//! answer_seconds = 1.0           # an honest node's mean time to answer
//! honest_sample = 100            # honest nodes judged and folded into the ledger
//! adversaries = [
//!   { kind = "deleter", nodes = 0.02, deleted = 0.01 },
//!   { kind = "late", nodes = 0.02, late = 0.5 },
//!   { kind = "dark", nodes = 0.02, dark_per_year = 50, dark_hours = 12 },
//!   { kind = "fetcher", nodes = 0.02, deleted = 1.0, fetch_seconds = 2.0 },
//!   { kind = "sybil", nodes = 0.02, identities = 4 },
//! ]
//!
//! [leases]
//! term_hours = 168               # a copy no keeper holds is collected after this
//!
//! [economics]                    # per TiB and month of 30 days
//! reward_per_tib_month = 1.5
//! penalty_per_fault = 1.0
//! disk_per_tib_month = 0.5
//! bandwidth_per_tib = 2.0
//! node_per_month = 0.5
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
    /// Storage proofs and adversaries.
    #[serde(default)]
    pub proofs: Proofs,
    /// Leases: how long a copy nobody holds any more is kept.
    #[serde(default)]
    pub leases: Leases,
    /// Rewards and costs.
    #[serde(default)]
    pub economics: Economics,
}

/// Leases, as the node's `[leases]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Leases {
    /// Hours a copy stays after its keepers stop holding it (a rebuilt shard's old copy, once
    /// the new one is kept): the node's lease term, `leases.lease_epochs` hour-long epochs.
    pub term_hours: f64,
}

impl Default for Leases {
    fn default() -> Self {
        Self { term_hours: 168.0 }
    }
}

/// Storage proofs, with the production parameters (hour-long epochs, `c` = 32, 3 audits a
/// node an epoch, faulty on faults from 2 auditors within 3 epochs), and adversaries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proofs {
    /// Whether nodes are audited.
    pub enabled: bool,
    /// Seconds an answer may take and count (the production deadline: 600); as long again is
    /// the grace in which it is late.
    pub deadline_seconds: f64,
    /// Byte positions challenged per audit (`c`; the production value: 32).
    pub challenges: u32,
    /// Mean seconds an honest node takes to answer (exponential).
    pub answer_seconds: f64,
    /// Honest nodes whose audits are judged by the auditor's rules and folded into the
    /// ledger, for their earnings (every adversary's are); the other honest nodes' audits are
    /// counted as passes.
    pub honest_sample: usize,
    /// The adversaries, each a share of the starting nodes.
    pub adversaries: Vec<Adversary>,
}

impl Default for Proofs {
    fn default() -> Self {
        Self {
            enabled: false,
            deadline_seconds: 600.0,
            challenges: 32,
            answer_seconds: 1.0,
            honest_sample: 100,
            adversaries: Vec::new(),
        }
    }
}

/// A kind of adversary, and its share of the starting nodes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Adversary {
    /// Deletes a share of its copies at the start (at least one) and goes on claiming them.
    Deleter {
        /// Share of the starting nodes.
        nodes: f64,
        /// Share of its copies it deletes.
        deleted: f64,
    },
    /// Keeps its data, but answers an audit after the deadline (inside the grace) this often.
    Late {
        /// Share of the starting nodes.
        nodes: f64,
        /// Share of its answers that are late.
        late: f64,
    },
    /// Keeps its data, but goes dark (unreachable) now and then, and comes back.
    Dark {
        /// Share of the starting nodes.
        nodes: f64,
        /// Times a year it goes dark (a Poisson process).
        dark_per_year: f64,
        /// Mean hours it stays dark (exponential).
        dark_hours: f64,
    },
    /// Deletes a share of its copies and rebuilds the challenged chunks on demand from the
    /// stripe's other shards (range reads from `k` of their holders, then decoding).
    Fetcher {
        /// Share of the starting nodes.
        nodes: f64,
        /// Share of its copies it deletes.
        deleted: f64,
        /// Seconds the fetching and decoding add to an answer.
        fetch_seconds: f64,
    },
    /// Runs several identities on one disk, each claiming its own failure domain: a disk loss
    /// or an outage takes them all at once.
    Sybil {
        /// Share of the starting nodes (identities).
        nodes: f64,
        /// Identities per disk.
        identities: usize,
    },
}

impl Adversary {
    /// Its share of the starting nodes.
    pub fn share(&self) -> f64 {
        match self {
            Adversary::Deleter { nodes, .. }
            | Adversary::Late { nodes, .. }
            | Adversary::Dark { nodes, .. }
            | Adversary::Fetcher { nodes, .. }
            | Adversary::Sybil { nodes, .. } => *nodes,
        }
    }

    /// Its name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Adversary::Deleter { .. } => "deleter",
            Adversary::Late { .. } => "late",
            Adversary::Dark { .. } => "dark",
            Adversary::Fetcher { .. } => "fetcher",
            Adversary::Sybil { .. } => "sybil",
        }
    }
}

/// What storage earns and costs (in any currency, per TiB and month of 30 days).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Economics {
    /// Paid per TiB-month the ledger counts proven (proven byte-epochs).
    pub reward_per_tib_month: f64,
    /// Taken for each fault the ledger records.
    pub penalty_per_fault: f64,
    /// What keeping a TiB on disk for a month costs (disks, power, space).
    pub disk_per_tib_month: f64,
    /// What moving a TiB costs (a fetcher's reads of other shards to answer audits; repair
    /// reads are paid at cost, so they net to nothing).
    pub bandwidth_per_tib: f64,
    /// What running one identity costs a month, whatever it stores.
    pub node_per_month: f64,
}

impl Default for Economics {
    fn default() -> Self {
        Self {
            reward_per_tib_month: 1.5,
            penalty_per_fault: 1.0,
            disk_per_tib_month: 0.5,
            bandwidth_per_tib: 2.0,
            node_per_month: 0.5,
        }
    }
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
    /// MiB per second each node can send and, apart, receive for repair (0: no limit beyond
    /// `repair.rate_mib_s`).
    #[serde(default)]
    pub bandwidth_mib_s: u64,
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
    /// Days over which the objects are uploaded, one after another at an even pace (0: all
    /// at the start).
    #[serde(default)]
    pub upload_days: f64,
}

/// Failures.
#[derive(Debug, Clone, Deserialize)]
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
    /// Copies that rot (a flipped bit makes one unreadable) per TiB stored per year.
    #[serde(default)]
    pub bitrot_per_tib_year: f64,
    /// MiB per second each node's scrub re-reads its disk at (the node's `scrub_rate`), so it
    /// finds rot within `used / scrub_mib_s`.
    #[serde(default = "scrub_mib_s")]
    pub scrub_mib_s: f64,
}

fn scrub_mib_s() -> f64 {
    32.0
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            outages_per_node_year: 0.0,
            outage_hours: 0.0,
            losses_per_node_year: 0.0,
            replace_lost: false,
            domain_loss_day: None,
            bitrot_per_tib_year: 0.0,
            scrub_mib_s: scrub_mib_s(),
        }
    }
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
        if let Some(day) = self.churn.domain_loss_day
            && !(0.0..=self.days).contains(&day)
        {
            return bad(
                "churn.domain_loss_day",
                "must be a day of the run, from 0 to `days`",
            );
        }
        let shards = (d.objects as u128) * (d.stripes_per_object as u128) * ((d.k + d.m) as u128);
        if shards > 100_000_000 {
            return bad(
                "data.objects",
                "objects x stripes_per_object x (k + m) is over 100 million shards: the \
                 simulator keeps each in memory; use larger shards",
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
            ("churn.bitrot_per_tib_year", c.bitrot_per_tib_year),
            ("data.upload_days", d.upload_days),
        ] {
            if !(0.0..=1e6).contains(&v) {
                return bad(field, "must be from 0 to 1,000,000");
            }
        }
        if !(c.scrub_mib_s > 0.0 && c.scrub_mib_s <= 1e6) {
            return bad(
                "churn.scrub_mib_s",
                "a scrub needs a rate above 0 (and at most 1,000,000 MiB/s)",
            );
        }
        if c.outages_per_node_year > 0.0 && c.outage_hours <= 0.0 {
            return bad("churn.outage_hours", "outages need a length above 0");
        }
        let p = &self.proofs;
        if !(1.0..=86_400.0).contains(&p.deadline_seconds) {
            return bad(
                "proofs.deadline_seconds",
                "must be from 1 to 86,400 (a day)",
            );
        }
        if !(1..=cairn_proofs::challenge::MAX_CHALLENGES).contains(&p.challenges) {
            return bad(
                "proofs.challenges",
                &format!(
                    "must be from 1 to {}",
                    cairn_proofs::challenge::MAX_CHALLENGES
                ),
            );
        }
        if !(0.0..=86_400.0).contains(&p.answer_seconds) {
            return bad("proofs.answer_seconds", "must be from 0 to 86,400 (a day)");
        }
        if p.adversaries.iter().map(Adversary::share).sum::<f64>() > 1.0 {
            return bad(
                "proofs.adversaries",
                "their shares add up to more than every node",
            );
        }
        for a in &p.adversaries {
            let share = |v: f64| (0.0..=1.0).contains(&v);
            let fine = share(a.share())
                && match *a {
                    Adversary::Deleter { deleted, .. } => share(deleted),
                    Adversary::Late { late, .. } => share(late),
                    Adversary::Dark {
                        dark_per_year,
                        dark_hours,
                        ..
                    } => (0.0..=1e6).contains(&dark_per_year) && (0.0..=1e6).contains(&dark_hours),
                    Adversary::Fetcher {
                        deleted,
                        fetch_seconds,
                        ..
                    } => share(deleted) && (0.0..=86_400.0).contains(&fetch_seconds),
                    Adversary::Sybil { identities, .. } => (1..=1000).contains(&identities),
                };
            if !fine {
                return bad(
                    "proofs.adversaries",
                    &format!(
                        "a {} has a value out of range: shares from 0 to 1, hours and counts \
                         from 0 to 1,000,000, seconds up to a day, identities 1 to 1,000",
                        a.name()
                    ),
                );
            }
        }
        if !(0.0..=1e6).contains(&self.leases.term_hours) {
            return bad("leases.term_hours", "must be from 0 to 1,000,000");
        }
        let e = &self.economics;
        if [
            e.reward_per_tib_month,
            e.penalty_per_fault,
            e.disk_per_tib_month,
            e.bandwidth_per_tib,
            e.node_per_month,
        ]
        .iter()
        .any(|v| !v.is_finite() || *v < 0.0)
        {
            return bad("economics", "prices must be finite and not negative");
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
