//! Prometheus metrics, owned by each node instance (no global registry), so many nodes can share
//! one process in tests and in the simulator.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{StoreMetrics, StoreStats};

/// Counters of the data plane.
#[derive(Debug, Clone, Default)]
pub struct NetMetrics {
    /// Payload bytes received on the data plane.
    pub bytes_in: Counter,
    /// Payload bytes sent on the data plane.
    pub bytes_out: Counter,
    /// Data-plane requests that ended in an error answer.
    pub request_errors: Counter,
    /// Streams refused because the node was busy.
    pub busy: Counter,
    /// Data-plane connections open now.
    pub connections: Gauge,
    /// Data-plane connections refused, by why: `node` (the node-wide limit), `address` (one
    /// address holds its limit), `peer` (one key holds its limit).
    pub connections_refused: Family<Labels, Counter>,
    /// Data-plane connections closed because no request was open for `network.idle_timeout`.
    pub idle_closed: Counter,
    /// Upload bodies cut off for arriving slower than `network.min_body_rate`.
    pub slow_bodies: Counter,
}

type Labels = Vec<(String, String)>;

/// Metrics of garbage collection.
#[derive(Debug, Clone, Default)]
pub struct GcMetrics {
    /// Shards deleted because no hold covered them any more.
    pub shards_collected: Counter,
    /// Shard bytes given back by those deletes.
    pub bytes_collected: Counter,
    /// Manifests deleted because their owners' leases all ended.
    pub manifests_collected: Counter,
    /// How long the last collection pass took, in milliseconds.
    pub last_pass_ms: Gauge,
    /// Rows the last pass found damaged (what they describe is kept).
    pub damaged_rows: Gauge,
}

impl GcMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "gc_shards_collected",
            "Shards deleted because every hold on them ended (plus the grace)",
            self.shards_collected.clone(),
        );
        registry.register(
            "gc_bytes_collected",
            "Shard bytes given back by garbage collection",
            self.bytes_collected.clone(),
        );
        registry.register(
            "gc_manifests_collected",
            "Manifests deleted because their owners' leases all ended (plus the grace)",
            self.manifests_collected.clone(),
        );
        registry.register(
            "gc_last_pass_milliseconds",
            "How long the last garbage-collection pass took",
            self.last_pass_ms.clone(),
        );
        registry.register(
            "gc_damaged_rows",
            "Lease, hold or statement rows the last garbage-collection pass could not parse (kept)",
            self.damaged_rows.clone(),
        );
    }
}

/// Metrics of storage proofs: the prover's answers, the auditor's verdicts, the ledger.
#[derive(Debug, Clone)]
pub struct ProofMetrics {
    /// Challenges answered with a proof.
    pub proofs_answered: Counter,
    /// Challenges answered "lost" (shards that could not be proven).
    pub proofs_unprovable: Counter,
    /// Challenges refused (malformed, wrong node, store failure).
    pub proofs_refused: Counter,
    /// Time to build a proof.
    pub prove_seconds: Histogram,
    /// Audits made, by verdict.
    audits: Family<Labels, Counter>,
    /// Time from challenge to answer, as auditor.
    pub audit_seconds: Histogram,
    /// Service probes: time to the first verified byte of a random range.
    pub probe_seconds: Histogram,
    /// Audit receipts new to this node (its own and peers').
    pub receipts_new: Counter,
    /// Receipt batches pushed to a peer.
    pub gossip_sent: Counter,
    /// Receipt batches not pushed because the queue was full.
    pub gossip_dropped: Counter,
    /// Shards named for repair.
    pub repair_named: Counter,
    /// Peers faulty in this node's ledger.
    pub faulty_nodes: Gauge,
    /// Shards in this node's current commitment.
    pub commitment_shards: Gauge,
    /// Bytes in this node's current commitment.
    pub commitment_bytes: Gauge,
    /// Shards this node's current commitment declares lost.
    pub declared_shards: Gauge,
    /// Ledger score of each peer, in thousandths.
    scores: Family<Labels, Gauge>,
}

impl ProofMetrics {
    fn new(registry: &mut Registry) -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let m = ProofMetrics {
            proofs_answered: Counter::default(),
            proofs_unprovable: Counter::default(),
            proofs_refused: Counter::default(),
            prove_seconds: seconds(),
            audits: Family::default(),
            audit_seconds: seconds(),
            probe_seconds: seconds(),
            receipts_new: Counter::default(),
            gossip_sent: Counter::default(),
            gossip_dropped: Counter::default(),
            repair_named: Counter::default(),
            faulty_nodes: Gauge::default(),
            commitment_shards: Gauge::default(),
            commitment_bytes: Gauge::default(),
            declared_shards: Gauge::default(),
            scores: Family::default(),
        };
        let r = registry;
        r.register(
            "proofs_answered",
            "Challenges answered with a proof",
            m.proofs_answered.clone(),
        );
        r.register(
            "proofs_unprovable",
            "Challenges over shards this node could not prove (lost or corrupt here)",
            m.proofs_unprovable.clone(),
        );
        r.register(
            "proofs_refused",
            "Challenges refused (malformed, another node's, a store failure)",
            m.proofs_refused.clone(),
        );
        r.register(
            "prove_seconds",
            "Time to build a proof",
            m.prove_seconds.clone(),
        );
        r.register("audits", "Audits of peers, by verdict", m.audits.clone());
        r.register(
            "audit_seconds",
            "Time from challenge to answer when auditing peers",
            m.audit_seconds.clone(),
        );
        r.register(
            "probe_seconds",
            "Service probes: time to the first verified byte of a random range of a peer's shard",
            m.probe_seconds.clone(),
        );
        r.register(
            "audit_receipts_new",
            "Audit receipts new to this node's ledger",
            m.receipts_new.clone(),
        );
        r.register(
            "gossip_sent",
            "Audit receipt batches pushed to peers",
            m.gossip_sent.clone(),
        );
        r.register(
            "gossip_dropped",
            "Audit receipt batches not pushed (queue full)",
            m.gossip_dropped.clone(),
        );
        r.register(
            "repair_named",
            "Shards the ledger named for repair",
            m.repair_named.clone(),
        );
        r.register(
            "faulty_nodes",
            "Peers this node's ledger holds faulty",
            m.faulty_nodes.clone(),
        );
        r.register(
            "commitment_shards",
            "Shards in this node's commitment for the current epoch",
            m.commitment_shards.clone(),
        );
        r.register(
            "commitment_bytes",
            "Bytes in this node's commitment for the current epoch",
            m.commitment_bytes.clone(),
        );
        r.register(
            "declared_shards",
            "Shards this node's current commitment declares lost",
            m.declared_shards.clone(),
        );
        r.register(
            "ledger_score_milli",
            "Each peer's proof score in this node's ledger, in thousandths",
            m.scores.clone(),
        );
        m
    }

    /// The audit counter for a verdict.
    pub fn audits(&self, verdict: &str) -> Counter {
        self.audits
            .get_or_create(&vec![("verdict".to_string(), verdict.to_string())])
            .clone()
    }

    /// Sets the peers' scores (from the ledger's records).
    pub fn set_scores(&self, records: &[cairn_wire::protocol::RecordView]) {
        self.scores.clear();
        for r in records {
            self.scores
                .get_or_create(&vec![("peer".to_string(), r.peer_id.clone())])
                .set(i64::from(r.score_milli));
        }
    }
}

/// Every metric of one node.
pub struct NodeMetrics {
    registry: Registry,
    /// Store counters.
    pub store: StoreMetrics,
    /// Network counters.
    pub net: NetMetrics,
    /// Storage-proof metrics.
    pub proofs: ProofMetrics,
    /// Repair metrics.
    pub repair: crate::repair::RepairMetrics,
    /// Garbage-collection metrics.
    pub gc: GcMetrics,
    shards: Gauge,
    bytes: Gauge,
    spare: Gauge,
    manifest_bytes: Gauge,
    capacity: Gauge,
    disk_available: Gauge,
    peers: Gauge,
    known_peers: Gauge,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    /// Creates and registers every metric under the `cairn_` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("cairn");
        let store = StoreMetrics::default();
        let net = NetMetrics::default();
        let (shards, bytes, capacity, peers, known_peers) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        registry.register("shards_stored", "Shards held by this node", shards.clone());
        registry.register(
            "shard_bytes_stored",
            "Shard bytes held by this node",
            bytes.clone(),
        );
        let spare = Gauge::default();
        registry.register(
            "spare_bytes",
            "Of the shard bytes held, copies other nodes now hold for the network: kept until \
             their holds end, then collected",
            spare.clone(),
        );
        let manifest_bytes = Gauge::default();
        registry.register(
            "manifest_bytes_stored",
            "Bytes of manifests and provenance envelopes held by this node (they count against \
             capacity beside shard bytes)",
            manifest_bytes.clone(),
        );
        registry.register(
            "capacity_bytes",
            "Configured capacity limit in bytes",
            capacity.clone(),
        );
        let disk_available = Gauge::default();
        registry.register(
            "disk_available_bytes",
            "Bytes free on the filesystem holding the store (-1: unknown); shards are refused \
             when it falls to storage.disk_reserve",
            disk_available.clone(),
        );
        registry.register(
            "connected_peers",
            "Peers with an open libp2p connection",
            peers.clone(),
        );
        registry.register(
            "known_peers",
            "Peers in the Kademlia routing table",
            known_peers.clone(),
        );
        registry.register(
            "shard_reads",
            "Shard reads served (full or range)",
            store.reads.clone(),
        );
        registry.register("shard_writes", "Shards written", store.writes.clone());
        registry.register(
            "verification_failures",
            "Stored shards or manifests that failed BLAKE3 verification",
            store.verification_failures.clone(),
        );
        registry.register(
            "rejected_writes",
            "Incoming shards refused because their bytes did not match the CID",
            store.rejected_writes.clone(),
        );
        registry.register(
            "scrubbed_bytes",
            "Bytes re-verified by the background scrub",
            store.scrubbed_bytes.clone(),
        );
        registry.register(
            "data_bytes_in",
            "Payload bytes received on the data plane",
            net.bytes_in.clone(),
        );
        registry.register(
            "data_bytes_out",
            "Payload bytes sent on the data plane",
            net.bytes_out.clone(),
        );
        registry.register(
            "data_request_errors",
            "Data-plane requests answered with an error",
            net.request_errors.clone(),
        );
        registry.register(
            "data_busy",
            "Data-plane streams refused because the node was busy",
            net.busy.clone(),
        );
        registry.register(
            "data_connections",
            "Data-plane connections open",
            net.connections.clone(),
        );
        registry.register(
            "data_connections_refused",
            "Data-plane connections refused, by the limit that refused them (node, address, peer)",
            net.connections_refused.clone(),
        );
        registry.register(
            "data_idle_closed",
            "Data-plane connections closed after network.idle_timeout with no request open",
            net.idle_closed.clone(),
        );
        registry.register(
            "data_slow_bodies",
            "Upload bodies cut off for arriving slower than network.min_body_rate",
            net.slow_bodies.clone(),
        );
        let proofs = ProofMetrics::new(&mut registry);
        let repair = crate::repair::RepairMetrics::register(&mut registry);
        let gc = GcMetrics::default();
        gc.register(&mut registry);
        Arc::new(Self {
            registry,
            store,
            net,
            proofs,
            repair,
            gc,
            shards,
            bytes,
            spare,
            manifest_bytes,
            capacity,
            disk_available,
            peers,
            known_peers,
        })
    }

    /// Renders the Prometheus text exposition, with gauges refreshed from current state.
    pub fn render(&self, stats: StoreStats, connected: usize, known: usize) -> String {
        self.shards.set(stats.shards as i64);
        self.bytes.set(stats.used as i64);
        self.spare.set(stats.spare as i64);
        self.manifest_bytes.set(stats.manifests as i64);
        self.capacity.set(stats.capacity as i64);
        self.disk_available.set(
            stats
                .disk_available
                .map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)),
        );
        self.peers.set(connected as i64);
        self.known_peers.set(known as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
