//! `cairn-node` configuration: one typed, documented, defaulted file (`DATA_DIR/config.toml`),
//! parsed once and checked with errors that name the field and the fix.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::{Deserialize, Serialize};

/// A byte count written as an integer or with a unit (`500GiB`, `1.5 TB`, `64 MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim());
        let n: f64 = num.parse().map_err(|_| {
            format!("{s:?} is not a size (use e.g. 500GiB, 2TB or a number of bytes)")
        })?;
        let mult: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "p" | "pb" => 1e15,
            "kib" => 1024.0,
            "mib" => 1024f64.powi(2),
            "gib" => 1024f64.powi(3),
            "tib" => 1024f64.powi(4),
            "pib" => 1024f64.powi(5),
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ));
            }
        };
        let bytes = n * mult;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("{s:?} is out of range"));
        }
        Ok(Size(bytes as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, unit) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{name}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Network settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// libp2p listen addresses (QUIC), e.g. `/ip4/0.0.0.0/udp/4001/quic-v1`. Port 0 picks a free port.
    pub listen: Vec<String>,
    /// UDP address of the data plane (shard bytes over QUIC), e.g. `0.0.0.0:4002`.
    pub data_listen: String,
    /// Data-plane address to tell peers, when `data_listen` is a wildcard or behind NAT.
    pub data_advertise: Option<String>,
    /// Peers to join through, as multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// Most concurrent data-plane streams per connection.
    pub max_streams_per_peer: u32,
    /// Most data-plane connections at once, from everyone.
    pub max_connections: usize,
    /// Most data-plane connections from one address (an IPv4 address, an IPv6 /64) at once:
    /// keys are free, so one host could otherwise open the node-wide limit's worth.
    pub max_connections_per_ip: usize,
    /// A data-plane connection with no request open for this long is closed (the peer's
    /// keep-alives do not keep it).
    pub idle_timeout: Span,
    /// Slowest average rate an upload body may arrive at, after its first 5 seconds
    /// (bytes per second): a peer trickling bytes does not hold upload buffers for long.
    pub min_body_rate: Size,
    /// Take loopback and private addresses that remote peers announce (identify). Off, only
    /// peers reached on such an address themselves may announce them (a devnet, a LAN).
    pub accept_private_addresses: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/0.0.0.0/udp/4001/quic-v1".into()],
            data_listen: "0.0.0.0:4002".into(),
            data_advertise: None,
            bootstrap: Vec::new(),
            max_streams_per_peer: 32,
            max_connections: 4096,
            max_connections_per_ip: 256,
            idle_timeout: Span(std::time::Duration::from_secs(60)),
            min_body_rate: Size(64 << 10),
            accept_private_addresses: false,
        }
    }
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most shard bytes this node accepts; further stores are refused with a clear error.
    pub capacity: Size,
    /// fsync every write (safe against power loss; about half the write throughput).
    pub sync_writes: bool,
    /// Background re-verification rate in bytes per second (0 turns the scrub off).
    pub scrub_rate: Size,
    /// Seconds after start before the scrub's first pass (spares the disk while a node boots).
    pub scrub_start_secs: u64,
    /// Also let RocksDB verify its own checksums on shard reads (BLAKE3 is always verified).
    pub rocksdb_checksums: bool,
    /// Space to leave free on the data directory's disk whatever the capacity says: shards
    /// that would eat into it are refused.
    pub disk_reserve: Size,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            capacity: Size(100 << 30),
            sync_writes: true,
            scrub_rate: Size(32 << 20),
            scrub_start_secs: 300,
            rocksdb_checksums: false,
            disk_reserve: Size(crate::store::DEFAULT_DISK_RESERVE),
        }
    }
}

/// A duration written with a unit: `500ms`, `10s`, `5m`, `1h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub std::time::Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim());
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (use e.g. 10s, 5m, 1h, 7d)"))?;
        let ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?} (use ms, s, m, h or d)"
                ));
            }
        };
        let ms = n
            .checked_mul(ms)
            .ok_or_else(|| format!("{s:?} is out of range"))?;
        Ok(Span(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, name) in [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ] {
            if ms >= unit && ms.is_multiple_of(unit) {
                return write!(f, "{}{name}", ms / unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Proof-of-storage settings: how long an epoch is, how long a stored shard is promised for,
/// how many peers this node audits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProofsSection {
    /// Take part in storage proofs: commit, answer challenges, audit peers.
    pub enabled: bool,
    /// Epoch length. Every node of a network must use the same one.
    pub epoch: Span,
    /// Epochs a stored shard is held for on the strength of its upload alone (the upload hold,
    /// and the lease of the receipt the node signs when it takes the shard); owners' lease
    /// statements extend (or release) it. A shard no statement claims is collected after it
    /// ends (plus `leases.grace_epochs`).
    pub lease_epochs: u64,
    /// Peers audited per epoch (beside those held in containment).
    pub audits_per_epoch: usize,
    /// Distinct auditors whose faults make a node faulty in this node's ledger.
    pub fault_quorum: usize,
}

impl Default for ProofsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            epoch: Span(std::time::Duration::from_secs(3600)),
            lease_epochs: 168,
            audits_per_epoch: 3,
            fault_quorum: 2,
        }
    }
}

/// Leases and garbage collection: how often the node deletes what no lease holds any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeasesSection {
    /// Collect garbage: shards whose holds all ended, manifests whose statements all ended.
    pub enabled: bool,
    /// Time between collection passes.
    pub gc_interval: Span,
    /// Epochs past a lease's end before what it held is collected.
    pub grace_epochs: u64,
}

impl Default for LeasesSection {
    fn default() -> Self {
        Self {
            enabled: true,
            gc_interval: Span(std::time::Duration::from_secs(600)),
            grace_epochs: 24,
        }
    }
}

/// Admin HTTP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP server (`/health`, `/metrics`, `/status`).
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9101".into(),
        }
    }
}

/// Identity and operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Failure-domain label (host, rack or zone); placement puts one shard of a stripe per label.
    pub label: Option<String>,
    /// Log filter, `tracing` syntax (`info`, `cairn_node=debug,info`).
    pub log: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            label: None,
            log: "info".into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`
    pub node: NodeSection,
    /// `[network]`
    pub network: NetworkConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[proofs]`
    pub proofs: ProofsSection,
    /// `[repair]`
    pub repair: RepairSection,
    /// `[leases]`
    pub leases: LeasesSection,
}

/// Self-repair: how often this node looks after the objects it keeps, how long a silent peer
/// is waited for, when a stripe is rebuilt, and how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairSection {
    /// Look after the objects whose manifests this node keeps (repair, manifest copies).
    pub enabled: bool,
    /// Time between two passes over the kept objects.
    pub interval: Span,
    /// How long a peer may be unreachable before its shards count as lost (a restart is not
    /// a loss).
    pub grace: Span,
    /// A stripe is rebuilt once fewer than `k + margin` of its shards are live; 0 picks
    /// `m - m/4` (at least 1) for each object's `m`.
    pub margin: usize,
    /// Bytes per second the node's repairs may read and write (0: no limit).
    pub rate: Size,
    /// Stripes rebuilt at once.
    pub stripes_at_once: usize,
    /// Rebalancing: a node whose fill (held bytes, spare copies left out, over capacity) is
    /// more than this fraction of capacity above the network's mean gives shards to nodes as
    /// far below it (0: no rebalancing).
    pub rebalance_spread: f64,
    /// Bytes per second this node's rebalancing moves at most (within `rate`, after repairs;
    /// 0: none, unlike `rate`, where 0 means no limit).
    pub rebalance_rate: Size,
}

impl Default for RepairSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Span(std::time::Duration::from_secs(60)),
            // Four hours: a restart, an upgrade or a maintenance window is not a loss.
            // docs/SIMULATION.md: under monthly 30-minute outages a 10-minute grace made repair
            // move 35 bytes per byte stored a year, 4 hours 0.36, and no setting lost data.
            grace: Span(std::time::Duration::from_secs(4 * 3600)),
            margin: 0,
            rate: Size(64 << 20),
            stripes_at_once: 2,
            rebalance_spread: 0.05,
            rebalance_rate: Size(16 << 20),
        }
    }
}

/// A configuration problem, naming the field and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said (it names the key and line).
        message: String,
    },
    /// A field has a bad value.
    #[error("config field {field} = {value:?}: {problem}; {fix}")]
    Field {
        /// Dotted field name.
        field: String,
        /// The value found.
        value: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

fn field(
    field: impl Into<String>,
    value: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        value: value.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The configuration with every value parsed.
#[derive(Debug, Clone)]
pub struct Checked {
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Data-plane listen address.
    pub data_listen: SocketAddr,
    /// Data-plane address advertised, if set.
    pub data_advertise: Option<SocketAddr>,
    /// Bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// The proof protocol's parameters.
    pub proofs: cairn_proofs::epoch::ProofConfig,
    /// The source configuration.
    pub config: Config,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Parses every value and checks the combination.
    pub fn check(&self) -> Result<Checked, ConfigError> {
        let n = &self.network;
        if n.listen.is_empty() {
            return Err(field(
                "network.listen",
                "[]",
                "no listen address",
                "add one, e.g. \"/ip4/0.0.0.0/udp/4001/quic-v1\"",
            ));
        }
        let mut listen = Vec::new();
        for (i, a) in n.listen.iter().enumerate() {
            let name = format!("network.listen[{i}]");
            let ma: Multiaddr = a.parse().map_err(|e| {
                field(
                    &name,
                    a,
                    format!("not a multiaddr ({e})"),
                    "use e.g. /ip4/0.0.0.0/udp/4001/quic-v1",
                )
            })?;
            let quic = ma.iter().any(|p| matches!(p, Protocol::QuicV1));
            if !quic {
                return Err(field(
                    &name,
                    a,
                    "Cairn nodes listen on QUIC only",
                    "end the address with /udp/<port>/quic-v1",
                ));
            }
            listen.push(ma);
        }
        let data_listen: SocketAddr = n.data_listen.parse().map_err(|_| {
            field(
                "network.data_listen",
                &n.data_listen,
                "not an IP:port address",
                "use e.g. 0.0.0.0:4002",
            )
        })?;
        let data_advertise = match &n.data_advertise {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                field(
                    "network.data_advertise",
                    a,
                    "not an IP:port address",
                    "use the address peers can reach, e.g. 203.0.113.7:4002",
                )
            })?),
        };
        let mut bootstrap = Vec::new();
        for (i, a) in n.bootstrap.iter().enumerate() {
            let name = format!("network.bootstrap[{i}]");
            let ma: Multiaddr = a.parse().map_err(|e| {
                field(
                    &name,
                    a,
                    format!("not a multiaddr ({e})"),
                    "copy a peer's address from its /status",
                )
            })?;
            if !matches!(ma.iter().last(), Some(Protocol::P2p(_))) {
                return Err(field(
                    &name,
                    a,
                    "the address does not end in /p2p/<peer id>",
                    "append the peer id, as printed in the peer's /status",
                ));
            }
            bootstrap.push(ma);
        }
        if n.max_streams_per_peer == 0 || n.max_streams_per_peer > 1024 {
            return Err(field(
                "network.max_streams_per_peer",
                n.max_streams_per_peer.to_string(),
                "must be between 1 and 1024",
                "the default is 32",
            ));
        }
        if n.max_connections == 0 || n.max_connections > 1 << 20 {
            return Err(field(
                "network.max_connections",
                n.max_connections.to_string(),
                "must be between 1 and 1048576",
                "the default is 4096",
            ));
        }
        if n.max_connections_per_ip == 0 || n.max_connections_per_ip * 2 > n.max_connections {
            return Err(field(
                "network.max_connections_per_ip",
                n.max_connections_per_ip.to_string(),
                "must be at least 1 and at most half of network.max_connections, so that one \
                 address cannot take every connection",
                "the default is 256 (with max_connections = 4096)",
            ));
        }
        if n.idle_timeout.0 < std::time::Duration::from_secs(1)
            || n.idle_timeout.0 > std::time::Duration::from_secs(86_400)
        {
            return Err(field(
                "network.idle_timeout",
                n.idle_timeout.to_string(),
                "must be between 1s and 1d",
                "the default is \"60s\"",
            ));
        }
        if self.storage.capacity.0 == 0 {
            return Err(field(
                "storage.capacity",
                "0",
                "a node with no capacity can store nothing",
                "set e.g. capacity = \"500GiB\"",
            ));
        }
        let admin: SocketAddr = self.admin.listen.parse().map_err(|_| {
            field(
                "admin.listen",
                &self.admin.listen,
                "not an IP:port address",
                "use e.g. 127.0.0.1:9101",
            )
        })?;
        if let Some(label) = &self.node.label
            && (label.is_empty() || label.len() > 128)
        {
            return Err(field(
                "node.label",
                label,
                "labels are 1 to 128 characters",
                "use e.g. \"rack-a\"",
            ));
        }
        if tracing_subscriber_filter_ok(&self.node.log).is_err() {
            return Err(field(
                "node.log",
                &self.node.log,
                "not a log filter",
                "use e.g. \"info\" or \"cairn_node=debug,info\"",
            ));
        }
        let p = &self.proofs;
        let mut proofs = cairn_proofs::epoch::ProofConfig::with_epoch(p.epoch.0).map_err(|e| {
            field(
                "proofs.epoch",
                p.epoch.to_string(),
                e.0,
                "use \"1h\" in production, a few seconds on a devnet",
            )
        })?;
        proofs.audits_per_epoch = p.audits_per_epoch;
        proofs.fault_quorum = p.fault_quorum;
        proofs.check().map_err(|e| {
            field(
                "proofs",
                format!("{p:?}"),
                e.0,
                "fault_quorum must be at least 1",
            )
        })?;
        let r = &self.repair;
        if r.enabled && r.interval.0.is_zero() {
            return Err(field(
                "repair.interval",
                r.interval.to_string(),
                "a pass needs time between it and the next",
                "the default is \"60s\"; a few seconds on a devnet",
            ));
        }
        if r.stripes_at_once == 0 {
            return Err(field(
                "repair.stripes_at_once",
                "0",
                "no stripe could ever be rebuilt",
                "use 1 or more (the default is 2)",
            ));
        }
        if !(0.0..=0.5).contains(&r.rebalance_spread) {
            return Err(field(
                "repair.rebalance_spread",
                r.rebalance_spread.to_string(),
                "it is a fraction of capacity: nodes within it of the mean fill are left alone",
                "use a value from 0 (no rebalancing) to 0.5; the default is 0.05",
            ));
        }
        if p.lease_epochs == 0 {
            return Err(field(
                "proofs.lease_epochs",
                "0",
                "a lease of no epochs promises nothing",
                "the default is 168 (a week of hour-long epochs)",
            ));
        }
        let l = &self.leases;
        if l.gc_interval.0 < std::time::Duration::from_millis(100) {
            return Err(field(
                "leases.gc_interval",
                l.gc_interval.to_string(),
                "a collection pass this often would keep the store busy",
                "the default is \"10m\"; a second or so on a devnet",
            ));
        }
        Ok(Checked {
            listen,
            data_listen,
            data_advertise,
            bootstrap,
            admin,
            proofs,
            config: self.clone(),
        })
    }
}

fn tracing_subscriber_filter_ok(filter: &str) -> Result<(), ()> {
    // A light check that keeps the library free of a subscriber dependency: directives are
    // `target=level` or `level`, comma-separated.
    let levels = ["trace", "debug", "info", "warn", "error", "off"];
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = d.rsplit('=').next().unwrap_or(d).to_ascii_lowercase();
        if !levels.contains(&level.as_str()) {
            return Err(());
        }
    }
    Ok(())
}

/// The commented `config.toml` that `cairn-node init` writes.
pub fn template(c: &Config) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let label = c
        .node
        .label
        .as_ref()
        .map_or("# label = \"rack-a\"".to_string(), |l| {
            format!("label = {l:?}")
        });
    let advertise = c
        .network
        .data_advertise
        .as_ref()
        .map_or("# data_advertise = \"203.0.113.7:4002\"".to_string(), |a| {
            format!("data_advertise = {a:?}")
        });
    format!(
        r#"# cairn-node configuration. Every key is optional; the values below are the defaults unless
# `cairn-node init` was given flags. `cairn-node run` flags and CAIRN_* environment variables
# override this file.

[node]
# Failure-domain label (host, rack or zone). Placement puts at most one shard of a stripe on
# each label, so a rack failure costs each stripe at most one shard.
{label}
# Log filter (tracing syntax): "info", "debug", "cairn_node=debug,info".
log = {log:?}

[network]
# libp2p listen addresses (QUIC only). Port 0 picks a free port.
listen = [{listen}]
# Data plane: shard bytes travel over a separate QUIC endpoint on this UDP address.
data_listen = {data_listen:?}
# The data-plane address to give peers, if data_listen is a wildcard seen from elsewhere.
{advertise}
# Peers to join through: multiaddrs ending in /p2p/<peer id>, as shown by their /status.
bootstrap = [{bootstrap}]
# Most concurrent data-plane streams per connection (each may hold a shard in memory).
max_streams_per_peer = {streams}
# Most data-plane connections at once, and from one address (IPv4, or IPv6 /64).
max_connections = {max_conns}
max_connections_per_ip = {per_ip}
# A data-plane connection with no request open for this long is closed.
idle_timeout = "{idle}"
# Slowest average rate an upload may arrive at after its first 5 s ("0": no minimum).
min_body_rate = "{min_rate}"
# Take loopback and private addresses announced by peers that are not on such a network
# themselves (off: a public node ignores a remote peer's 127.0.0.1 or 10.x addresses).
accept_private_addresses = {private}

[storage]
# Most shard bytes this node accepts ("500GiB", "2TB" or a byte count). Beyond it, stores are
# refused with an error that says the node is full.
capacity = "{capacity}"
# fsync each write: survives power loss; roughly halves write throughput.
sync_writes = {sync}
# Background re-verification of every stored byte, in bytes per second ("0" turns it off).
scrub_rate = "{scrub}"
# Seconds after start before the scrub's first pass.
scrub_start_secs = {scrub_start}
# Also verify RocksDB's own checksums on shard reads (BLAKE3 is verified on every read anyway).
rocksdb_checksums = {checksums}
# Space to leave free on this disk whatever the capacity says: shards that would eat into it
# are refused (RocksDB needs room to flush and compact; a disk full to the last byte fails
# every write). The node's free space (/status "free") is the smaller of the two limits.
disk_reserve = "{reserve}"

[admin]
# Admin HTTP: GET /health, /metrics (Prometheus), /status (JSON), /proofs (JSON). Keep it on a
# private address.
listen = {admin:?}

[proofs]
# Storage proofs: every epoch the node commits to the shards it holds, answers auditors'
# challenges over them, and audits a few peers. docs/PROOFS.md says what is asked and why.
enabled = {proofs_on}
# Epoch length; every node of a network must use the same ("1h" in production).
epoch = "{epoch}"
# Epochs a stored shard is held for on the strength of its upload alone (the lease in the
# storage receipt the node signs when it takes it). Owners' lease statements (`cairn renew`)
# hold it longer; a shard none claims is collected after this (plus leases.grace_epochs).
lease_epochs = {lease}
# Peers this node audits each epoch.
audits_per_epoch = {audits}
# Distinct auditors whose fault reports (within 3 epochs) make a peer faulty here.
fault_quorum = {quorum}

[repair]
# Look after the objects whose manifests this node keeps: the first live keeper of each object
# rebuilds its lost shards and keeps its manifest at m+1 copies. docs/OPERATIONS.md says more.
enabled = {repair_on}
# Time between two passes over the kept objects.
interval = "{repair_interval}"
# How long a peer may be unreachable before its shards count as lost (a restart or a maintenance
# window is not a loss: shorter rebuilds the data of every node that restarts slowly).
grace = "{repair_grace}"
# Rebuild a stripe once fewer than k + margin shards are live (0: m - m/4, at least 1).
margin = {repair_margin}
# Bytes per second repairs may read and write ("0": no limit).
rate = "{repair_rate}"
# Stripes rebuilt at once.
stripes_at_once = {repair_at_once}
# Rebalancing: a node more than this fraction of capacity above the network's mean fill gives
# shards to nodes as far below it, such as a node that just joined (0: never).
rebalance_spread = {rebalance_spread}
# Bytes per second rebalancing moves at most, within `rate` and after repairs ("0": none).
rebalance_rate = "{rebalance_rate}"
[leases]
# Garbage collection: delete shards whose holds (upload and owners' leases) all ended, and
# manifests whose owners' leases all ended, grace_epochs later. docs/LEASES.md says more.
enabled = {gc_on}
# Time between collection passes.
gc_interval = "{gc_interval}"
# Epochs past a lease's end before what it held is deleted (a late renewal loses nothing).
grace_epochs = {grace}
"#,
        log = c.node.log,
        listen = list(&c.network.listen),
        data_listen = c.network.data_listen,
        bootstrap = list(&c.network.bootstrap),
        streams = c.network.max_streams_per_peer,
        max_conns = c.network.max_connections,
        per_ip = c.network.max_connections_per_ip,
        idle = c.network.idle_timeout,
        min_rate = c.network.min_body_rate,
        private = c.network.accept_private_addresses,
        capacity = c.storage.capacity,
        sync = c.storage.sync_writes,
        scrub = c.storage.scrub_rate,
        scrub_start = c.storage.scrub_start_secs,
        checksums = c.storage.rocksdb_checksums,
        reserve = c.storage.disk_reserve,
        admin = c.admin.listen,
        proofs_on = c.proofs.enabled,
        epoch = c.proofs.epoch,
        lease = c.proofs.lease_epochs,
        audits = c.proofs.audits_per_epoch,
        quorum = c.proofs.fault_quorum,
        repair_on = c.repair.enabled,
        repair_interval = c.repair.interval,
        repair_grace = c.repair.grace,
        repair_margin = c.repair.margin,
        repair_rate = c.repair.rate,
        repair_at_once = c.repair.stripes_at_once,
        rebalance_spread = c.repair.rebalance_spread,
        rebalance_rate = c.repair.rebalance_rate,
        gc_on = c.leases.enabled,
        gc_interval = c.leases.gc_interval,
        grace = c.leases.grace_epochs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("500GiB".parse::<Size>().unwrap().0, 500 << 30);
        assert_eq!("1.5 TB".parse::<Size>().unwrap().0, 1_500_000_000_000);
        assert_eq!("4096".parse::<Size>().unwrap().0, 4096);
        assert!("10 XB".parse::<Size>().is_err());
        assert!("lots".parse::<Size>().is_err());
        assert_eq!(Size(64 << 20).to_string(), "64MiB");
    }

    #[test]
    fn spans_parse_and_print() {
        assert_eq!("10s".parse::<Span>().unwrap().0.as_secs(), 10);
        assert_eq!("1h".parse::<Span>().unwrap().to_string(), "1h");
        assert_eq!("90m".parse::<Span>().unwrap().to_string(), "90m");
        assert_eq!("1500ms".parse::<Span>().unwrap().to_string(), "1500ms");
        assert!("10".parse::<Span>().is_err());
        assert!("1w".parse::<Span>().is_err());
        assert!("99999999999999999d".parse::<Span>().is_err());
    }

    #[test]
    fn template_round_trips_to_defaults() {
        let c = Config::default();
        let parsed: Config = toml::from_str(&template(&c)).unwrap();
        assert_eq!(parsed, c);
        parsed.check().unwrap();
        let mut c = Config::default();
        c.node.label = Some("rack-b".into());
        c.network.data_advertise = Some("10.0.0.1:4002".into());
        let parsed: Config = toml::from_str(&template(&c)).unwrap();
        assert_eq!(parsed, c);
        // The lease defaults: an unclaimed upload is held a week of hourly epochs.
        assert_eq!(Config::default().proofs.lease_epochs, 168);
        let mut c = Config::default();
        c.leases.enabled = false;
        c.leases.gc_interval = "1s".parse().unwrap();
        c.leases.grace_epochs = 2;
        let parsed: Config = toml::from_str(&template(&c)).unwrap();
        assert_eq!(parsed, c);
        parsed.check().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                "[network]\nlisten = [\"/ip4/0.0.0.0/tcp/1\"]",
                "network.listen[0]",
            ),
            (
                "[network]\ndata_listen = \"nowhere\"",
                "network.data_listen",
            ),
            (
                "[network]\nbootstrap = [\"/ip4/1.2.3.4/udp/1/quic-v1\"]",
                "network.bootstrap[0]",
            ),
            ("[storage]\ncapacity = 0", "storage.capacity"),
            ("[admin]\nlisten = \"x\"", "admin.listen"),
            ("[node]\nlog = \"loud\"", "node.log"),
            ("[proofs]\nepoch = \"10ms\"", "proofs.epoch"),
            ("[proofs]\nlease_epochs = 0", "proofs.lease_epochs"),
            ("[repair]\ninterval = \"0s\"", "repair.interval"),
            ("[repair]\nstripes_at_once = 0", "repair.stripes_at_once"),
            (
                "[repair]\nrebalance_spread = 0.9",
                "repair.rebalance_spread",
            ),
            ("[proofs]\nfault_quorum = 0", "proofs"),
            ("[leases]\ngc_interval = \"10ms\"", "leases.gc_interval"),
        ];
        for (text, name) in cases {
            let c: Config = toml::from_str(text).unwrap();
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = toml::from_str::<Config>("[storage]\ncapacity = \"10 XB\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("capacity") || err.contains("XB"), "{err}");
        let err = toml::from_str::<Config>("[storage]\ncapcity = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("capcity"), "{err}");
    }
}
