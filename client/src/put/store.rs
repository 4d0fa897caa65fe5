//! Storing one item (a shard, a manifest) on ranked nodes: the next target started when one
//! fails or goes silent, as `StoreRun` decides; manifests signed and published.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_chunker::Cid;
use cairn_chunker::manifest::Provenance;
use cairn_policy::keeper;
use cairn_policy::store::{self as policy, OnSilence, StoreRun};
use cairn_proofs::receipt::StorageReceipt;
use cairn_wire::data::{self, Target};
use cairn_wire::protocol::ManifestKind;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{PutOptions, STORE_SILENT_FOR, lock};
use crate::error::ClientError;
use crate::get::Incidents;
use crate::network::{Network, StoreFailures};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stores a shard on the first of `targets` (node index, address) that takes it; see
/// [`store_on`]. `stripe`: the nodes holding or taking the stripe's shards (each shard's first
/// choice, and whichever node a retry or hedge took), so that no node gets two shards of one
/// stripe. Returns the storage receipts of the nodes that took it (checked: each signed by its
/// node for this shard), or what every attempt said when none took it.
pub(super) async fn store_shard(
    client: &data::Client,
    targets: &[(usize, Target)],
    cid: &Cid,
    bytes: &Bytes,
    stripe: &Mutex<HashSet<usize>>,
    failures: &StoreFailures,
    notes: &Incidents,
) -> Result<Vec<StorageReceipt>, Vec<String>> {
    let store = |t: Target| async move { client.store(&t, cid, bytes.clone()).await };
    let what = format!("shard {cid}");
    // The first target is the shard's own choice (already in `stripe`); a later one only if no
    // other shard of the stripe has taken it.
    let free = |i: usize| i == 0 || lock(stripe).insert(targets[i].0);
    let quiet = |t: &Target| client.silent_for(t);
    match store_on(quiet, targets, 1, store, free, failures, notes, &what).await {
        (taken, attempts) if taken.is_empty() => Err(attempts),
        (taken, _) => Ok(taken.into_iter().map(|(_, receipt)| receipt).collect()),
    }
}

/// Runs `store` on `targets` (node index, address), in order, until `want` of them have taken
/// what it stores, starting the next target (one `free` accepts) whenever one fails. A target
/// whose node goes silent for [`STORE_SILENT_FOR`] (as `quiet` tells: how long nothing was
/// heard from a target's node) gets the next target started beside it, and the store that
/// finishes first counts: once `want` have, the rest are dropped, and their nodes discard what
/// they got (one that took it just before is a spare holder). Failed nodes, and silent ones
/// another target was started for, are reported to `failures`, so later stripes pass them
/// over; all are noted in `notes` under `what`. Returns the targets that took it (index into
/// `targets`) with what each store answered, and what the failed attempts said. The decisions
/// are [`StoreRun`]'s; this runs them on tokio's clock.
#[allow(clippy::too_many_arguments)]
async fn store_on<F, Fut, T>(
    quiet: impl Fn(&Target) -> Option<Duration>,
    targets: &[(usize, Target)],
    want: usize,
    store: F,
    free: impl Fn(usize) -> bool,
    failures: &impl NodeReport,
    notes: &Incidents,
    what: &str,
) -> (Vec<(usize, T)>, Vec<String>)
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = Result<T, data::DataError>>,
{
    let start = |i: usize| {
        let t = targets[i].1;
        let done = store(t);
        async move { (i, done.await) }
    };
    let mut run = StoreRun::new(targets.len(), want);
    let mut running = FuturesUnordered::new();
    let mut attempts = Vec::new();
    let mut taken = Vec::new();
    let mut watch = tokio::time::interval(policy::WATCH_EVERY);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        running.extend(run.start(&free).into_iter().map(start));
        if run.is_done(!running.is_empty()) {
            return (taken, attempts);
        }
        tokio::select! {
            // An answer first: a store that finished is not judged silent by a tick that was
            // ready at the same time.
            biased;
            Some((i, result)) = running.next() => {
                let (n, t) = &targets[i];
                match result {
                    Ok(answer) => {
                        if run.stored(i) {
                            // It was slow, not gone: let later stripes use it again.
                            failures.answered(*n);
                        }
                        taken.push((i, answer));
                    }
                    Err(e) => {
                        run.failed(i);
                        failures.failed(*n, &e);
                        notes.record(t.peer, format!("{what} not stored: {e}"));
                        attempts.push(e.to_string());
                    }
                }
            }
            at = watch.tick() => {
                if policy::tick_too_late(at.elapsed()) {
                    continue;
                }
                let silent: Vec<usize> = run
                    .watched()
                    .iter()
                    .copied()
                    .filter(|&i| quiet(&targets[i].1).is_some_and(policy::is_silent))
                    .collect();
                for i in silent {
                    let (n, t) = &targets[i];
                    let secs = STORE_SILENT_FOR.as_secs();
                    attempts.push(format!("{}: silent for {secs} s", t.peer));
                    match run.silent(i, &free) {
                        OnSilence::Hedge(h) => {
                            failures.silent(*n);
                            notes.record(
                                t.peer,
                                format!("{what}: nothing heard from the node for {secs} s; storing it elsewhere"),
                            );
                            running.push(start(h));
                        }
                        OnSilence::Wait => notes.record(
                            t.peer,
                            format!("{what}: nothing heard from the node for {secs} s; no other node to try, waiting"),
                        ),
                    }
                }
            }
        }
    }
}

/// What a store run tells about the nodes it used (the network view, [`StoreFailures`]).
trait NodeReport {
    /// A store on node `index` failed with `error`.
    fn failed(&self, index: usize, error: &data::DataError);
    /// Node `index`, found silent, took the item after all.
    fn answered(&self, index: usize);
    /// Node `index` went silent and another target was started beside it.
    fn silent(&self, index: usize);
}

impl NodeReport for StoreFailures {
    fn failed(&self, index: usize, error: &data::DataError) {
        self.report(index, error);
    }
    fn answered(&self, index: usize) {
        StoreFailures::answered(self, index);
    }
    fn silent(&self, index: usize) {
        StoreFailures::silent(self, index);
    }
}

/// Signs a manifest and stores it with its envelope on the best-ranked nodes for its CID
/// (`opts.manifest_copies`, default `m + 1`, all of them or an error); returns how many nodes
/// took it. Nodes that failed
/// or went silent on the way are noted in `notes`, or logged as warnings without it.
pub async fn publish_manifest(
    net: &Network,
    key: &SigningKey,
    cid: &Cid,
    kind: ManifestKind,
    bytes: &[u8],
    opts: &PutOptions,
    notes: Option<&Incidents>,
) -> Result<usize, ClientError> {
    Ok(publish(net, key, cid, kind, bytes, opts, notes)
        .await?
        .len())
}

/// [`publish_manifest`] for a manifest whose shards were stored earlier (an S3 multipart
/// object made of its parts' stripes): the storage receipts of those shards (encoded) are
/// given to the nodes that took the manifest, so they are kept beside it as a put keeps them.
/// A keeper that refuses them is noted in `notes` (or logged); returns how many nodes took the
/// manifest.
#[allow(clippy::too_many_arguments)]
pub async fn publish_manifest_with_receipts(
    net: &Network,
    key: &SigningKey,
    cid: &Cid,
    kind: ManifestKind,
    bytes: &[u8],
    opts: &PutOptions,
    notes: Option<&Incidents>,
    receipts: &[Vec<u8>],
) -> Result<usize, ClientError> {
    let keepers = publish(net, key, cid, kind, bytes, opts, notes).await?;
    let own = Incidents::default();
    crate::receipts::give(net, cid, &keepers, receipts, notes.unwrap_or(&own)).await;
    for (peer, what) in own.list() {
        tracing::warn!(%peer, "{what}");
    }
    Ok(keepers.len())
}

/// [`publish_manifest`], returning the nodes that took the manifest: its keepers, which the
/// put then gives the storage receipts of the manifest's shards.
pub(super) async fn publish(
    net: &Network,
    key: &SigningKey,
    cid: &Cid,
    kind: ManifestKind,
    bytes: &[u8],
    opts: &PutOptions,
    notes: Option<&Incidents>,
) -> Result<Vec<Target>, ClientError> {
    let envelope = Provenance::sign(*cid, key, now_ms(), opts.source.clone()).to_bytes();
    // The manifest's keeper ranking (`cairn_policy::keeper`, the order its keepers and readers
    // use), with nodes that recently failed, are full or leaving last (`write_candidates`
    // offers them with no room).
    let candidates = net.write_candidates();
    let ranked = keeper::ranking(
        &cid.to_bytes(),
        &candidates.iter().map(|c| c.id()).collect::<Vec<_>>(),
    );
    let (ready, last): (Vec<usize>, Vec<usize>) =
        ranked.into_iter().partition(|&i| candidates[i].free > 0);
    let targets: Vec<(usize, Target)> = ready
        .into_iter()
        .chain(last)
        .map(|i| (i, net.nodes()[i].target))
        .collect();
    // Every copy is wanted before the put succeeds: an inline object lives only in its
    // manifest, and any object is lost with its last manifest copy, so `m` nodes dying right
    // after the put must leave one.
    let want = opts.copies();
    // The first `want` ranked nodes at once (each write is an fsync away: one after another,
    // a small object's PUT waited for all of them in turn); a failure brings in the next one.
    let envelope = std::slice::from_ref(&envelope);
    let put = |t: Target| async move {
        net.data()
            .put_manifest(&t, cid, kind, bytes, envelope)
            .await
    };
    let what = format!("manifest {cid}");
    let own = Incidents::default();
    let noted = notes.unwrap_or(&own);
    let failures = net.store_failures();
    let (stored, attempts) = store_on(
        |t: &Target| net.data().silent_for(t),
        &targets,
        want,
        put,
        |_| true,
        &failures,
        noted,
        &what,
    )
    .await;
    for (peer, what) in own.list() {
        tracing::warn!(%peer, "{what}");
    }
    if stored.len() < want {
        return Err(ClientError::ManifestUpload {
            cid: Box::new(*cid),
            stored: stored.len(),
            wanted: want,
            attempts,
        });
    }
    Ok(stored.into_iter().map(|(i, ())| targets[i].1).collect())
}
