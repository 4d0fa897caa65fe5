//! Store settings and the counters it keeps.

use prometheus_client::metrics::counter::Counter;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Most shard bytes the store accepts.
    pub capacity: u64,
    /// fsync the WAL on every write batch (durable against power loss, ~2x slower writes).
    pub sync_writes: bool,
    /// Let RocksDB also verify its own block/blob checksums on shard reads. Cairn re-verifies
    /// BLAKE3 on every read regardless; see docs/BENCHMARKS.md for the cost.
    pub rocksdb_checksums: bool,
    /// Bytes to leave free on the filesystem that holds the store, whatever the capacity says:
    /// a shard that would eat into them is refused. RocksDB needs room to flush and compact, and
    /// a disk filled to the last byte fails every write, metadata included.
    pub disk_reserve: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            capacity: 100 << 30,
            sync_writes: true,
            rocksdb_checksums: false,
            disk_reserve: DEFAULT_DISK_RESERVE,
        }
    }
}

/// Default of [`StoreConfig::disk_reserve`].
pub const DEFAULT_DISK_RESERVE: u64 = 1 << 30;

/// Counters the store updates; the node registers them with Prometheus.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// Shard reads served (full or range).
    pub reads: Counter,
    /// Shards written.
    pub writes: Counter,
    /// Stored shards that failed verification (bitrot, tampering).
    pub verification_failures: Counter,
    /// Incoming shards refused because they did not match their CID.
    pub rejected_writes: Counter,
    /// Bytes checked by the background scrub.
    pub scrubbed_bytes: Counter,
}
