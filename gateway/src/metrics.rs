//! Prometheus metrics of one gateway, owned by the instance (no global registry) so tests can run
//! several gateways in one process.

use std::sync::Arc;

use cairn_client::cache::CacheStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every metric of a gateway.
pub struct GatewayMetrics {
    registry: Registry,
    /// S3 requests handled (any operation, any outcome).
    pub requests: Counter,
    /// S3 requests answered with an error (4xx or 5xx).
    pub errors: Counter,
    /// S3 requests the gateway failed (5xx): the ones to alert on, where `errors` also counts
    /// clients' mistakes (a missing key, a bad signature).
    pub server_errors: Counter,
    /// Object bytes received from S3 clients and stored on the network.
    pub bytes_in: Counter,
    /// Object bytes sent to S3 clients.
    pub bytes_out: Counter,
    /// Responses cut short because the network could not deliver the bytes after headers were sent.
    pub read_errors: Counter,
    /// Storage nodes in the gateway's current view of the network.
    pub nodes: Gauge,
    /// Shard reads answered from the shard cache (or a fetch already under way).
    pub cache_hits: Counter,
    /// Shard reads that went to the network.
    pub cache_misses: Counter,
    /// Shards evicted from the cache.
    pub cache_evictions: Counter,
    /// Bytes held by the shard cache.
    pub cache_bytes: Gauge,
    /// Shards fetched ahead of sequential readers.
    pub readahead_shards: Counter,
    /// Multipart parts read back at Complete to hash the object (the rest merge hashes).
    pub complete_parts_reread: Counter,
    /// Automatic catalog exports made.
    pub exports: Counter,
    /// Automatic catalog exports that failed.
    pub export_failures: Counter,
    /// S3 connections open now.
    pub connections: Gauge,
    /// Requests and connections dropped because the client stopped sending a body or stopped
    /// reading a response (see [`crate::stall`]).
    pub stalled_clients: Counter,
    /// New S3 connections refused (closed at once) because a connection cap was reached and
    /// no connection it counts was idle (see [`crate::http::connections`]).
    pub connections_refused: Counter,
    /// Idle S3 connections closed to make room for new ones at a connection cap.
    pub connections_evicted: Counter,
    /// S3 connections closed by the gateway after having no request in flight for the idle
    /// limit (HTTP/2, and HTTP/1 ones that had not sent a request head by then).
    pub idle_closed: Counter,
    /// Objects whose lease the gateway renewed (each CID once per renewal).
    pub leases_renewed: Counter,
    /// Lease renewals or releases no keeper took (each CID once per attempt).
    pub lease_failures: Counter,
    /// Objects whose lease the gateway released because no catalog record references them
    /// any more (deleted, overwritten, aborted or completed parts).
    pub leases_released: Counter,
    /// CIDs a catalog change stopped referencing that the release sweep has not dealt with.
    pub release_pending: Gauge,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayMetrics").finish_non_exhaustive()
    }
}

impl GatewayMetrics {
    /// Creates and registers every metric under the `cairn_gateway_` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("cairn_gateway");
        let m = Self {
            requests: Counter::default(),
            errors: Counter::default(),
            server_errors: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            read_errors: Counter::default(),
            nodes: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            readahead_shards: Counter::default(),
            complete_parts_reread: Counter::default(),
            exports: Counter::default(),
            export_failures: Counter::default(),
            connections: Gauge::default(),
            stalled_clients: Counter::default(),
            connections_refused: Counter::default(),
            connections_evicted: Counter::default(),
            idle_closed: Counter::default(),
            leases_renewed: Counter::default(),
            lease_failures: Counter::default(),
            leases_released: Counter::default(),
            release_pending: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "S3 requests handled", m.requests.clone());
        registry.register(
            "errors",
            "S3 requests answered with an error (4xx or 5xx)",
            m.errors.clone(),
        );
        registry.register(
            "server_errors",
            "S3 requests the gateway failed (5xx; no client mistakes)",
            m.server_errors.clone(),
        );
        registry.register(
            "bytes_in",
            "Object bytes received from S3 clients",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Object bytes sent to S3 clients",
            m.bytes_out.clone(),
        );
        registry.register(
            "read_errors",
            "Responses cut short because the network failed after headers were sent",
            m.read_errors.clone(),
        );
        registry.register(
            "nodes",
            "Storage nodes in the gateway's view of the network",
            m.nodes.clone(),
        );
        registry.register(
            "cache_hits",
            "Shard reads answered from the shard cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Shard reads that went to the network",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_evictions",
            "Shards evicted from the shard cache",
            m.cache_evictions.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by the shard cache",
            m.cache_bytes.clone(),
        );
        registry.register(
            "readahead_shards",
            "Shards fetched ahead of sequential range readers",
            m.readahead_shards.clone(),
        );
        registry.register(
            "complete_parts_reread",
            "Multipart parts read back at Complete to hash the object",
            m.complete_parts_reread.clone(),
        );
        registry.register(
            "exports",
            "Automatic catalog exports made",
            m.exports.clone(),
        );
        registry.register(
            "export_failures",
            "Automatic catalog exports that failed",
            m.export_failures.clone(),
        );
        registry.register(
            "connections",
            "S3 connections open now",
            m.connections.clone(),
        );
        registry.register(
            "stalled_clients",
            "Requests and connections dropped because the client stopped sending or reading",
            m.stalled_clients.clone(),
        );
        registry.register(
            "connections_refused",
            "S3 connections refused at a connection cap (none idle to close)",
            m.connections_refused.clone(),
        );
        registry.register(
            "connections_evicted",
            "Idle S3 connections closed to make room at a connection cap",
            m.connections_evicted.clone(),
        );
        registry.register(
            "idle_closed",
            "S3 connections closed after the idle limit with no request in flight",
            m.idle_closed.clone(),
        );
        registry.register(
            "leases_renewed",
            "Objects whose lease the gateway renewed",
            m.leases_renewed.clone(),
        );
        registry.register(
            "lease_failures",
            "Lease renewals or releases of an object that no keeper took",
            m.lease_failures.clone(),
        );
        registry.register(
            "leases_released",
            "Objects whose lease the gateway released because no catalog record references them",
            m.leases_released.clone(),
        );
        registry.register(
            "release_pending",
            "CIDs a catalog change stopped referencing, waiting for the release sweep",
            m.release_pending.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// Brings the cache figures up to date with the cache's own counters (before a scrape).
    pub fn observe_cache(&self, stats: CacheStats) {
        let catch_up = |c: &Counter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        catch_up(&self.cache_hits, stats.hits);
        catch_up(&self.cache_misses, stats.misses);
        catch_up(&self.cache_evictions, stats.evictions);
        self.cache_bytes.set(stats.bytes as i64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!("metrics encoding failed: {e}");
        }
        out
    }
}
