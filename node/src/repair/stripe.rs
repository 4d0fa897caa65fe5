//! Repairing one stripe: read `k` of its shards (verified), rebuild the missing ones (checked
//! against their CIDs), store each on the best live node that holds nothing of the stripe,
//! and keep the new holders' receipts beside the manifest, here and on the other keepers.
//! Shards on draining nodes are copied off them instead (one shard read per shard moved).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use cairn_chunker::cids::Cid;
use cairn_chunker::pipeline::StripeDecoder;
use cairn_policy::placement;
use cairn_policy::repair::Fetch;
use cairn_wire::data::Client;
use futures::StreamExt;

use super::{Job, RepairMetrics};
use crate::leases::Leaser;
use crate::store::Store;

/// Tries per shard before its stripe's repair is left for the next pass.
const TARGET_TRIES: usize = 3;

/// What a stripe repair works with.
pub struct Context {
    /// This node's store (it may hold sources and take targets itself).
    pub store: Arc<Store>,
    /// The data-plane client.
    pub data: Client,
    /// Signs receipts for shards this node takes itself.
    pub leaser: Arc<Leaser>,
    /// Counters.
    pub metrics: RepairMetrics,
}

/// Bytes a job reads and writes, for the rate limit.
pub fn cost(job: &Job) -> u64 {
    let stripe = &job.manifest.stripes[job.index];
    let len = |i: usize| stripe.shard(i).map_or(0, |s| u64::from(s.len));
    let k = stripe.data.len() as u64;
    let widest = (0..stripe.data.len() + stripe.parity.len())
        .map(len)
        .max()
        .unwrap_or(0);
    let rebuild = if job.assessment.rebuild.is_empty() {
        0
    } else {
        k * widest + job.assessment.rebuild.iter().map(|&i| len(i)).sum::<u64>()
    };
    let rebalance = job.rebalance.map_or(0, |m| 2 * len(m.shard));
    rebuild + 2 * job.assessment.moves.iter().map(|&i| len(i)).sum::<u64>() + rebalance
}

/// Reads shard `cid` (`len` bytes) from node `n` of the job's view, verified.
pub(super) async fn read(ctx: &Context, job: &Job, n: usize, cid: Cid, len: u64) -> Option<Bytes> {
    if n == 0 {
        let store = ctx.store.clone();
        return match tokio::task::spawn_blocking(move || store.read_shard(&cid)).await {
            Ok(Ok(b)) if b.len() as u64 == len => Some(Bytes::from(b)),
            _ => None,
        };
    }
    let t = job.view.nodes[n].target?;
    match ctx.data.fetch(&t, &cid, Some(len), None).await {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::info!(peer = %t.peer, %cid, "repair: a source failed: {e}");
            None
        }
    }
}

/// Stores `bytes` as `cid` on node `n` (this node: its own store), returning the receipt.
pub(super) async fn write(
    ctx: &Context,
    job: &Job,
    n: usize,
    cid: Cid,
    bytes: Bytes,
) -> Option<Vec<u8>> {
    if n == 0 {
        let (store, leaser) = (ctx.store.clone(), ctx.leaser.clone());
        let len = bytes.len() as u64;
        let done = tokio::task::spawn_blocking(move || {
            store.put_shard(&cid, &bytes)?;
            leaser.lease(&*store, &cid, len)
        })
        .await;
        return match done {
            Ok(Ok(r)) => Some(r.to_bytes()),
            Ok(Err(e)) => {
                tracing::info!(%cid, "repair: could not keep a rebuilt shard here: {e}");
                None
            }
            Err(_) => None,
        };
    }
    let t = job.view.nodes[n].target?;
    match ctx.data.store(&t, &cid, bytes).await {
        Ok(r) => Some(r.to_bytes()),
        Err(e) => {
            tracing::info!(peer = %t.peer, %cid, "repair: a new holder refused a shard: {e}");
            None
        }
    }
}

/// Repairs one stripe; failures are counted and logged, and the next pass finds the stripe
/// again.
pub async fn repair(ctx: &Context, job: Job) {
    if let Some(m) = job.rebalance {
        let (from, to) = (job.view.nodes[m.from].peer, job.view.nodes[m.to].peer);
        match super::rebalance::run(ctx, &job, m).await {
            Ok(bytes) => tracing::info!(
                target: "cairn::_events::repair",
                object = %job.object,
                stripe = job.index,
                shard = m.shard,
                %from,
                %to,
                mib = bytes as f64 / (1 << 20) as f64,
                "rebalanced a shard onto an emptier node (the old copy lapses when its holds end)"
            ),
            // Not a repair failure: nothing is at risk, and a later pass plans afresh.
            Err(why) => {
                tracing::info!(
                    target: "cairn::_events::repair",
                    object = %job.object,
                    stripe = job.index,
                    %from,
                    %to,
                    "could not rebalance a shard (a later pass may): {why}"
                );
            }
        }
        return;
    }
    match repair_inner(ctx, &job).await {
        Ok((rebuilt, moved, read_bytes, written, targets)) => {
            ctx.metrics.stripes_repaired.inc();
            tracing::info!(
                target: "cairn::_events::repair",
                object = %job.object,
                stripe = job.index,
                health = job.assessment.health.name(),
                rebuilt,
                moved,
                read_mib = read_bytes as f64 / (1 << 20) as f64,
                written_mib = written as f64 / (1 << 20) as f64,
                to = %targets.join(","),
                "repaired a stripe"
            );
        }
        Err(why) => {
            ctx.metrics.failures.inc();
            tracing::warn!(
                target: "cairn::_events::repair",
                object = %job.object,
                stripe = job.index,
                health = job.assessment.health.name(),
                "could not repair a stripe (tried again at the next pass): {why}"
            );
        }
    }
}

type Done = (usize, usize, u64, u64, Vec<String>);

async fn repair_inner(ctx: &Context, job: &Job) -> Result<Done, String> {
    let stripe = &job.manifest.stripes[job.index];
    let total = stripe.data.len() + stripe.parity.len();
    let k = stripe.data.len();
    let shard = |i: usize| stripe.shard(i).ok_or_else(|| format!("no shard {i}"));
    let mut bytes: Vec<Option<Bytes>> = vec![None; total];
    let mut read_bytes = 0u64;
    // Moves first: one read per shard, from the draining node.
    for &i in &job.assessment.moves {
        let s = shard(i)?;
        for &n in &job.draining[i] {
            if let Some(b) = read(ctx, job, n, s.cid, u64::from(s.len)).await {
                read_bytes += b.len() as u64;
                bytes[i] = Some(b);
                break;
            }
        }
    }
    // A rebuild that cannot be made does not stop the moves already read from being placed.
    let mut rebuild_failed = None;
    if !job.assessment.rebuild.is_empty() {
        // Shards on draining nodes are readable too (their copy is still there), last.
        let readable: Vec<usize> = (0..total)
            .filter(|&i| {
                !job.sources[i].is_empty()
                    || !job.draining[i].is_empty()
                    || stripe.shard(i).is_some_and(|s| s.len == 0)
            })
            .collect();
        let mut fetch = Fetch::new(k, readable);
        let mut given: Vec<Option<Bytes>> = vec![None; total];
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            for i in fetch.start() {
                let s = shard(i)?;
                let moved = bytes[i].clone();
                running.push(async move {
                    if s.len == 0 {
                        return (i, Some(Bytes::new()));
                    }
                    if moved.is_some() {
                        return (i, moved);
                    }
                    for &n in job.sources[i].iter().chain(&job.draining[i]) {
                        if let Some(b) = read(ctx, job, n, s.cid, u64::from(s.len)).await {
                            return (i, Some(b));
                        }
                    }
                    (i, None)
                });
            }
            if fetch.complete() || fetch.failed() {
                break;
            }
            let Some((i, got)) = running.next().await else {
                break;
            };
            fetch.done(i, got.is_some());
            if let Some(b) = got {
                if bytes[i].is_none() {
                    read_bytes += b.len() as u64;
                }
                given[i] = Some(b);
            }
        }
        drop(running);
        if fetch.complete() {
            let manifest = job.manifest.clone();
            let index = job.index;
            let stripe_owned = stripe.clone();
            let rebuilt = tokio::task::spawn_blocking(move || {
                let mut decoder =
                    StripeDecoder::new(&manifest.erasure).map_err(|e| e.to_string())?;
                decoder
                    .rebuild_all(index, &stripe_owned, given, false)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            match rebuilt {
                Ok(all) => {
                    for &i in &job.assessment.rebuild {
                        bytes[i] = all.get(i).cloned();
                    }
                }
                Err(e) => rebuild_failed = Some(e),
            }
        } else {
            rebuild_failed = Some(format!(
                "fewer than {k} of its shards could be read from their holders"
            ));
        }
    }
    ctx.metrics.bytes_in.inc_by(read_bytes);
    // Targets: the best live nodes holding nothing of the stripe, new labels first.
    let candidates = job.view.candidates();
    let mut exclude: HashSet<usize> = job.holders.clone();
    for (i, c) in candidates.iter().enumerate() {
        if c.free == 0 {
            exclude.insert(i);
        }
    }
    let mut used_labels: HashSet<Option<String>> = job
        .sources
        .iter()
        .flatten()
        .map(|&n| candidates[n].label.clone())
        .collect();
    let mut receipts = Vec::new();
    let mut targets = Vec::new();
    let (mut rebuilt, mut moved, mut written) = (0, 0, 0u64);
    let rebuilds: &[usize] = if rebuild_failed.is_some() {
        &[]
    } else {
        &job.assessment.rebuild
    };
    let work: Vec<(usize, bool)> = rebuilds
        .iter()
        .map(|&i| (i, true))
        .chain(job.assessment.moves.iter().map(|&i| (i, false)))
        .collect();
    let mut failed = Vec::new();
    for (i, is_rebuild) in work {
        let s = shard(i)?;
        let Some(b) = bytes[i].clone() else {
            failed.push(i);
            continue;
        };
        // Nodes holding nothing of the stripe first; when none takes it, any live node not
        // holding this very shard (two shards on one node beat a shard left missing: a spare
        // copy of another shard, say from a hedged upload, must not stop a repair).
        let mut order = placement::place_repair(&s.cid, &candidates, &exclude, &used_labels);
        order.truncate(TARGET_TRIES);
        let relaxed: HashSet<usize> = job.sources[i]
            .iter()
            .chain(&job.draining[i])
            .copied()
            .chain((0..candidates.len()).filter(|&n| candidates[n].free == 0))
            .chain(exclude.iter().copied().filter(|n| !job.holders.contains(n)))
            .collect();
        let more: Vec<usize> = placement::place_repair(&s.cid, &candidates, &relaxed, &used_labels)
            .into_iter()
            .filter(|n| !order.contains(n))
            .take(TARGET_TRIES)
            .collect();
        order.extend(more);
        let mut placed = false;
        for n in order {
            if candidates[n].free < u64::from(s.len) {
                continue;
            }
            if let Some(r) = write(ctx, job, n, s.cid, b.clone()).await {
                receipts.push(r);
                exclude.insert(n);
                used_labels.insert(candidates[n].label.clone());
                targets.push(job.view.nodes[n].peer.to_string());
                written += u64::from(s.len);
                if is_rebuild {
                    rebuilt += 1;
                } else {
                    moved += 1;
                }
                placed = true;
                break;
            }
            exclude.insert(n);
        }
        if !placed {
            failed.push(i);
        }
    }
    ctx.metrics.bytes_out.inc_by(written);
    ctx.metrics.shards_rebuilt.inc_by(rebuilt as u64);
    ctx.metrics.shards_moved.inc_by(moved as u64);
    keep_receipts(ctx, job, &receipts).await;
    if let Some(why) = rebuild_failed {
        return Err(why);
    }
    if !failed.is_empty() {
        return Err(format!(
            "shards {failed:?} found no new holder (the network may lack live nodes outside \
             the stripe, or room)"
        ));
    }
    Ok((rebuilt, moved, read_bytes, written, targets))
}

/// Keeps new receipts beside the manifest here and on the object's other keepers, so
/// auditors and the next pass know the new holders.
pub(super) async fn keep_receipts(ctx: &Context, job: &Job, receipts: &[Vec<u8>]) {
    if receipts.is_empty() {
        return;
    }
    let (store, object, list) = (ctx.store.clone(), job.object, receipts.to_vec());
    match tokio::task::spawn_blocking(move || store.put_receipts(&object, &list)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(object = %job.object, "repair: receipts not kept: {e}"),
        Err(_) => {}
    }
    for &n in &job.keepers {
        let Some(t) = job.view.nodes[n].target else {
            continue;
        };
        if let Err(e) = ctx.data.put_receipts(&t, &job.object, receipts).await {
            tracing::info!(peer = %t.peer, object = %job.object, "repair: a keeper did not take receipts: {e}");
        }
    }
}
