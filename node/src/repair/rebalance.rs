//! Rebalancing and spare copies: the node's side of `cairn_policy::rebalance`.
//!
//! * [`balancer`]: a pass's [`Balancer`] over the view's fills (`used`, `spare`, `capacity`
//!   of every node that takes data).
//! * [`plan`]: for a healthy stripe, one shard to copy from its kept holder (a node more than
//!   the spread above the mean fill) to an emptier node. The target must rank above that holder in the shard's
//!   ranking of node ids (`cairn_policy::keeper::ranking`), which is the order
//!   `cairn_policy::repair::designate` keeps copies leased in: once the new copy answers, it
//!   is the one renewed, and the old one lapses when its holds end. A target never shares a
//!   failure-domain label with another shard of the stripe.
//! * [`run`]: makes the copy (read verified, stored, receipts kept here and on the keepers).
//! * [`name_spares`]: tells the holders of copies that are not kept leased that their copy is
//!   spare, with the kept copy's receipt, so they count it out of their fill.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::Stripe;
use cairn_policy::keeper;
use cairn_policy::placement;
use cairn_policy::rebalance::{Balancer, Fill};
use cairn_proofs::receipt::StorageReceipt;
use cairn_wire::data::Client;
use cairn_wire::keys;
use libp2p::PeerId;

use super::stripe::{Context, keep_receipts, read, write};
use super::view::View;
use super::{Job, RepairMetrics};
use crate::store::Store;

/// A planned move: the shard's index in its stripe, the node it is copied from and the node
/// it is copied to (view indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The shard.
    pub shard: usize,
    /// Its kept holder.
    pub from: usize,
    /// The emptier node.
    pub to: usize,
}

/// A pass's balancer: every node that takes data, by its reported fill. Each keeper takes one
/// share of the moves, one over the nodes that can be in charge of objects.
pub fn balancer(view: &View, spread: f64, budget: u64) -> Balancer {
    let leaders = view.nodes.iter().filter(|n| n.can_lead()).count().max(1);
    let fills: Vec<Option<Fill>> = view
        .nodes
        .iter()
        .map(|n| {
            let info = n.info.as_ref().filter(|_| n.takes_data())?;
            Some(Fill {
                used: info.used,
                spare: info.spare,
                capacity: info.capacity,
            })
        })
        .collect();
    Balancer::new(&fills, spread, budget, 1.0 / leaders as f64)
}

/// A shard's luck in pass `pass`: uniform over `u64`, the same for every keeper.
fn luck(shard: &Cid, pass: u64) -> u64 {
    let mut h = blake3::Hasher::new_derive_key("cairn rebalance luck v1");
    h.update(&shard.to_bytes());
    h.update(&pass.to_le_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// One move for a healthy stripe whose shard `i` is kept on `kept[i]` (a live copy), or
/// `None`. `holders` are every node holding anything of the stripe (never a target); a shard
/// whose `full[i]` is set (its receipts at the limit a keeper keeps) does not move, since the
/// new holder's receipt would not be kept. `pass` counts the keeper's passes (for the luck of
/// moves smaller than a share).
pub fn plan(
    balancer: &mut Balancer,
    view: &View,
    stripe: &Stripe,
    kept: &[Option<usize>],
    full: &[bool],
    holders: &HashSet<usize>,
    pass: u64,
) -> Option<Move> {
    // Only where every stored shard has a live copy kept: a silent holder's label is unknown,
    // and a target must not share a label with another shard of the stripe.
    let stored = |i: usize| stripe.shard(i).is_some_and(|s| s.len > 0);
    if (0..kept.len()).any(|i| stored(i) && kept[i].is_none()) {
        return None;
    }
    let candidates = view.candidates();
    let mut exclude: HashSet<usize> = holders.clone();
    exclude.extend((0..candidates.len()).filter(|&n| candidates[n].free == 0));
    for (i, from) in kept.iter().enumerate() {
        let (Some(from), Some(s)) = (*from, stripe.shard(i)) else {
            continue;
        };
        if s.len == 0 || full.get(i).copied().unwrap_or(true) || !balancer.gives(from) {
            continue;
        }
        // Labels the stripe's other shards use: a move must not put two on one.
        let others: HashSet<Option<String>> = kept
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, n)| n.map(|n| candidates[n].label.clone()))
            .collect();
        let key = s.cid.to_bytes();
        let above = keeper::score(&key, candidates[from].id());
        let targets: Vec<usize> =
            placement::place_repair(&s.cid, &candidates, &exclude, &HashSet::new())
                .into_iter()
                .filter(|&t| {
                    keeper::score(&key, candidates[t].id()) > above
                        && candidates[t].free >= u64::from(s.len)
                        && (candidates[t].label.is_none() || !others.contains(&candidates[t].label))
                })
                .collect();
        if let Some(to) = balancer.pick(from, u64::from(s.len), luck(&s.cid, pass), targets) {
            return Some(Move { shard: i, from, to });
        }
        if balancer.budget() < u64::from(s.len) {
            return None;
        }
    }
    None
}

/// Copies the job's shard to the emptier node, keeps the new receipt here and on the object's
/// other keepers, carries the object's lease statements to the new copy and names the old one
/// spare with the new copy's receipt (so the next pass's fills count the move). The old copy
/// is otherwise left alone: it lapses once the new one is kept leased.
pub async fn run(ctx: &Context, job: &Job, m: Move) -> Result<u64, String> {
    let stripe = &job.manifest.stripes[job.index];
    let s = stripe
        .shard(m.shard)
        .ok_or_else(|| format!("no shard {}", m.shard))?;
    let len = u64::from(s.len);
    let mut bytes = None;
    for &n in std::iter::once(&m.from).chain(&job.sources[m.shard]) {
        if let Some(b) = read(ctx, job, n, s.cid, len).await {
            bytes = Some(b);
            break;
        }
    }
    let bytes = bytes.ok_or("no holder of the shard could be read")?;
    ctx.metrics.bytes_in.inc_by(len);
    let receipt = write(ctx, job, m.to, s.cid, bytes)
        .await
        .ok_or("the emptier node did not take the shard")?;
    keep_receipts(ctx, job, &[receipt]).await;
    ctx.metrics.shards_rebalanced.inc();
    ctx.metrics.rebalance_bytes.inc_by(len);
    // The new copy is the one kept leased from now on (it ranks above the old one): give it
    // the owners' statements now, then name the old copy spare with its renewed receipt. A
    // copy this node took itself gets its statements at the next pass.
    if let Some(t) = job.view.nodes[m.to].target.filter(|_| m.to != 0) {
        let held = [(t, vec![s.cid])];
        if let Err(e) = crate::holds::carry(&ctx.store, &ctx.data, &job.object, &held).await {
            tracing::debug!(object = %job.object, "rebalance: could not carry the leases to the new copy: {e}");
        }
    }
    let receipts = super::receipts_for(&ctx.store, job.object).await;
    name_spares(
        &ctx.store,
        &ctx.data,
        &ctx.metrics,
        &job.view,
        ctx.leaser.node_key().0,
        &[(m.from, s.cid, m.to)],
        &receipts,
    )
    .await;
    Ok(len)
}

/// Tells the holders of `spares` (node, shard, the node whose copy is kept leased) that their
/// copy is spare, with the kept copy's receipt from among `receipts` (the object's, read after
/// the pass carried its leases, so they name the renewed lease). This node's own spare copies
/// are marked in its store.
pub async fn name_spares(
    store: &Arc<Store>,
    data: &Client,
    metrics: &RepairMetrics,
    view: &View,
    me: [u8; 32],
    spares: &[(usize, Cid, usize)],
    receipts: &[Vec<u8>],
) {
    if spares.is_empty() {
        return;
    }
    let by_holder: HashMap<([u8; 32], PeerId), &Vec<u8>> = receipts
        .iter()
        .filter_map(|b| {
            let r = StorageReceipt::from_bytes(b).ok()?;
            Some(((r.shard.0, keys::peer_id(&r.node)?), b))
        })
        .collect();
    let mut to: HashMap<usize, Vec<(Cid, Vec<u8>)>> = HashMap::new();
    for &(n, cid, kept) in spares {
        let Ok(root) = cids::digest(&cid, Codec::Raw) else {
            continue;
        };
        if let Some(r) = by_holder.get(&(*root.as_bytes(), view.nodes[kept].peer)) {
            to.entry(n).or_default().push((cid, (*r).clone()));
        }
    }
    for (n, list) in to {
        let named = if n == 0 {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                list.iter()
                    .filter(|(cid, r)| {
                        StorageReceipt::from_bytes(r)
                            .map_err(|e| e.to_string())
                            .and_then(|r| store.mark_spare(cid, &r, &me))
                            .is_ok()
                    })
                    .count() as u64
            })
            .await
            .unwrap_or(0)
        } else {
            let Some(t) = view.nodes[n].target else {
                continue;
            };
            match data.spare(&t, &list).await {
                Ok((accepted, refused)) => {
                    if let Some(why) = refused.first() {
                        tracing::debug!(peer = %t.peer, refused = refused.len(), "spare copies refused: {why}");
                    }
                    u64::from(accepted)
                }
                Err(e) => {
                    tracing::debug!(peer = %t.peer, "could not name spare copies: {e}");
                    0
                }
            }
        };
        metrics.spares_named.inc_by(named);
    }
}
