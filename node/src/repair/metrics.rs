//! Prometheus metrics of repair: what the keeper in charge sees and what it rebuilds.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Repair metrics of one node.
#[derive(Debug, Clone, Default)]
pub struct RepairMetrics {
    /// Stripes of the objects this node is in charge of, by health at the last pass.
    stripes: Family<Labels, Gauge>,
    /// Objects this node keeps, and of those, the ones it is in charge of.
    pub objects_kept: Gauge,
    /// Objects this node is in charge of.
    pub objects_in_charge: Gauge,
    /// Stripes waiting for repair.
    pub queue: Gauge,
    /// Seconds the longest-waiting stripe has waited.
    pub queue_age_seconds: Gauge,
    /// Bytes read from peers (and this node) to rebuild or move shards.
    pub bytes_in: Counter,
    /// Bytes of rebuilt or moved shards stored on their new holders.
    pub bytes_out: Counter,
    /// Shards rebuilt from others.
    pub shards_rebuilt: Counter,
    /// Shards copied off draining nodes.
    pub shards_moved: Counter,
    /// Stripes repaired.
    pub stripes_repaired: Counter,
    /// Stripe repairs that failed (retried at the next pass).
    pub failures: Counter,
    /// Manifest copies made on keepers that lacked one.
    pub manifest_copies: Counter,
    /// Peers whose shards count as lost (silent beyond the grace period).
    pub lost_peers: Gauge,
    /// Shards copied to emptier nodes by rebalancing.
    pub shards_rebalanced: Counter,
    /// Bytes of those shards.
    pub rebalance_bytes: Counter,
    /// Copies named spare to their holders (another node holds the shard for the network).
    pub spares_named: Counter,
}

impl RepairMetrics {
    /// Registers every repair metric in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "repair_stripes",
            "Stripes of the objects this node is in charge of, by health at the last pass \
             (healthy, degraded, repair, at_risk, lost)",
            m.stripes.clone(),
        );
        r.register(
            "repair_objects_kept",
            "Object manifests this node keeps",
            m.objects_kept.clone(),
        );
        r.register(
            "repair_objects_in_charge",
            "Objects this node is the keeper in charge of",
            m.objects_in_charge.clone(),
        );
        r.register(
            "repair_queue",
            "Stripes waiting for repair",
            m.queue.clone(),
        );
        r.register(
            "repair_queue_age_seconds",
            "How long the longest-waiting stripe has waited",
            m.queue_age_seconds.clone(),
        );
        r.register(
            "repair_bytes_in",
            "Shard bytes read to rebuild or move shards",
            m.bytes_in.clone(),
        );
        r.register(
            "repair_bytes_out",
            "Shard bytes stored on new holders by repairs",
            m.bytes_out.clone(),
        );
        r.register(
            "repair_shards_rebuilt",
            "Shards rebuilt from others of their stripe",
            m.shards_rebuilt.clone(),
        );
        r.register(
            "repair_shards_moved",
            "Shards copied off draining nodes",
            m.shards_moved.clone(),
        );
        r.register(
            "repair_stripes_repaired",
            "Stripes repaired",
            m.stripes_repaired.clone(),
        );
        r.register(
            "repair_failures",
            "Stripe repairs that failed (tried again at the next pass)",
            m.failures.clone(),
        );
        r.register(
            "repair_manifest_copies",
            "Manifest copies made on keepers that lacked one",
            m.manifest_copies.clone(),
        );
        r.register(
            "repair_lost_peers",
            "Peers silent beyond the repair grace period, whose shards count as lost",
            m.lost_peers.clone(),
        );
        r.register(
            "rebalance_shards",
            "Shards this node copied from a node above the network's mean fill to one below it",
            m.shards_rebalanced.clone(),
        );
        r.register(
            "rebalance_bytes",
            "Bytes of the shards this node's rebalancing copied",
            m.rebalance_bytes.clone(),
        );
        r.register(
            "repair_spares_named",
            "Copies this node told their holders are spare (another copy is kept leased); \
             each pass names them again",
            m.spares_named.clone(),
        );
        m
    }

    /// Sets the stripe counts by health name.
    pub fn set_stripes(&self, counts: &[(&str, usize)]) {
        for (health, n) in counts {
            self.stripes
                .get_or_create(&vec![("health".to_string(), (*health).to_string())])
                .set(*n as i64);
        }
    }
}
