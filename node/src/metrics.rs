//! Prometheus metrics, owned by each node instance (no global registry), so many nodes can share
//! one process in tests and in the simulator.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
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
}

/// Every metric of one node.
pub struct NodeMetrics {
    registry: Registry,
    /// Store counters.
    pub store: StoreMetrics,
    /// Network counters.
    pub net: NetMetrics,
    shards: Gauge,
    bytes: Gauge,
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
        Arc::new(Self {
            registry,
            store,
            net,
            shards,
            bytes,
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
