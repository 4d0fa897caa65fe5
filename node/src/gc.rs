//! Garbage collection: every `leases.gc_interval`, delete the shards no hold covers any more
//! and the manifests whose owners' leases all ended, `leases.grace_epochs` after the end.
//!
//! The decisions are `cairn_policy::lease`'s; the store rechecks each shard and manifest under
//! its claim before deleting it ([`Store::collect_shards`], [`Store::collect_objects`]), in
//! batches of [`BATCH`], so a pass never holds the store for long and a renewal that lands
//! meanwhile is honoured; the walk over shards goes on from where a batch stopped, and a row
//! that does not parse keeps what it describes (counted in `cairn_gc_damaged_rows`). After a pass that deleted shards the store gives their space back to
//! the filesystem, rewriting live shards only when as many dead bytes go ([`Store::reclaim`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proofs::epoch::Epochs;
use tokio_util::sync::CancellationToken;

use crate::metrics::GcMetrics;
use crate::store::{Collected, Store, StoreError};

/// Most shards (or manifests) deleted per store call.
pub const BATCH: usize = 1_000;

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Shards deleted.
    pub shards: u64,
    /// Shard bytes given back.
    pub bytes: u64,
    /// Manifests deleted.
    pub manifests: u64,
    /// `shards` blob-file bytes before and after the compaction (when shards were deleted).
    pub blobs: Option<(u64, u64)>,
    /// Rows that did not parse (what they describe was kept, and logged).
    pub damaged: u64,
}

/// One collection pass at epoch `now` (blocking: call from a blocking thread).
pub fn pass(store: &Store, now: u64, grace: u64, epochs: Epochs) -> Result<Pass, StoreError> {
    let mut out = Pass::default();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let c: Collected = store.collect_shards(now, grace, epochs, BATCH, after.as_deref())?;
        out.shards += c.items;
        out.bytes += c.bytes;
        out.damaged += c.damaged;
        match c.next {
            Some(next) if c.more => after = Some(next),
            _ => break,
        }
    }
    loop {
        let c = store.collect_objects(now, grace, epochs, BATCH)?;
        out.manifests += c.items;
        out.damaged += c.damaged;
        if !c.more {
            break;
        }
    }
    if out.shards > 0 {
        out.blobs = Some(store.reclaim()?);
    }
    Ok(out)
}

/// Runs a pass every `interval` until `cancel` fires.
pub async fn run(
    store: Arc<Store>,
    epochs: Epochs,
    grace: u64,
    interval: Duration,
    metrics: GcMetrics,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(interval) => {} }
        let started = Instant::now();
        let now = epochs.at(crate::proofs::unix_ms());
        let s = store.clone();
        let result = tokio::task::spawn_blocking(move || pass(&s, now, grace, epochs)).await;
        metrics
            .last_pass_ms
            .set(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        match result {
            Ok(Ok(p)) => {
                metrics.shards_collected.inc_by(p.shards);
                metrics.bytes_collected.inc_by(p.bytes);
                metrics.manifests_collected.inc_by(p.manifests);
                metrics
                    .damaged_rows
                    .set(i64::try_from(p.damaged).unwrap_or(i64::MAX));
                if p.shards > 0 || p.manifests > 0 {
                    let (blobs_before, blobs_after) = p.blobs.unwrap_or_default();
                    tracing::info!(
                        target: "cairn::_events::gc",
                        shards = p.shards,
                        bytes = p.bytes,
                        manifests = p.manifests,
                        blobs_before,
                        blobs_after,
                        ms = started.elapsed().as_millis() as u64,
                        "garbage collection deleted {} shards ({} bytes) and {} manifests whose \
                         leases ended more than {grace} epochs ago",
                        p.shards,
                        p.bytes,
                        p.manifests
                    );
                }
            }
            Ok(Err(e)) => tracing::error!("garbage collection failed (tried again next pass): {e}"),
            Err(_) => return,
        }
    }
}
