//! Carrying owners' lease statements: from a keeper (a node holding an object's manifest) to
//! the nodes holding the object's shards, and to the object's other keepers.
//!
//! A keeper keeps each owner's latest statement on the object (`object-leases`). [`carry`]
//! sends them to shard holders (`DataRequest::Hold`), which apply them to their holds and
//! answer with storage receipts for the leases they now hold; the keeper keeps those beside
//! the manifest (replacing older ones, see [`Store::put_fresh_receipts`]). [`share`] sends the
//! statements to the other keepers (`DataRequest::Lease`). A keeper that takes a new statement
//! carries it at once to the holders its kept receipts name ([`carry_kept`]), so a renewal or
//! a release reaches holders promptly; the keeper loop carries again from time to time, for
//! holders that took shards after a repair.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_proofs::NodeKey;
use cairn_proofs::lease::LeaseStatement;
use cairn_proofs::receipt::StorageReceipt;
use cairn_wire::data::{Client, Target};
use cairn_wire::keys;
use cairn_wire::protocol::{ControlRequest, ControlResponse};
use cairn_wire::swarm::Swarm;

use crate::leases::Leaser;
use crate::store::{Store, StoreError};

/// Why carrying or sharing statements failed (a holder or keeper that cannot be reached is
/// logged and passed over, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CarryError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking store task did not finish.
    #[error("store task failed: {0}")]
    Task(String),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, CarryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CarryError::Task(e.to_string()))?
        .map_err(CarryError::from)
}

/// Whether a holder's receipt answering `statement` may be kept: a renewal must leave the
/// shard leased at least through the statement's end (a node answering a renewal with a
/// shorter lease is not taken at its word, and its older receipt stays); a release may shorten
/// it.
pub fn answers(statement: &LeaseStatement, receipt: &StorageReceipt) -> bool {
    statement.is_release() || receipt.end >= statement.end
}

/// Sends the object's kept statements to each holder for the listed shards, and keeps the
/// receipts they answer with beside the manifest. Returns receipts kept.
pub async fn carry(
    store: &Arc<Store>,
    data: &Client,
    object: &Cid,
    holders: &[(Target, Vec<Cid>)],
) -> Result<usize, CarryError> {
    let statements = {
        let (store, object) = (store.clone(), *object);
        blocking(move || store.statements(&object)).await?
    };
    if statements.is_empty() {
        return Ok(0);
    }
    let mut keep = Vec::new();
    for (target, shards) in holders {
        if shards.is_empty() {
            continue;
        }
        for s in &statements {
            match data.hold(target, &s.to_bytes(), shards).await {
                Ok(receipts) => keep.extend(
                    receipts
                        .into_iter()
                        .filter(|r| answers(s, r))
                        .map(|r| r.to_bytes()),
                ),
                Err(e) => {
                    tracing::warn!(%object, peer = %target.peer, "could not carry a lease statement: {e}");
                }
            }
        }
    }
    keep_receipts(store, object, keep).await
}

async fn keep_receipts(
    store: &Arc<Store>,
    object: &Cid,
    receipts: Vec<Vec<u8>>,
) -> Result<usize, CarryError> {
    if receipts.is_empty() {
        return Ok(0);
    }
    let (store, object) = (store.clone(), *object);
    blocking(move || store.put_fresh_receipts(&object, &receipts)).await
}

/// Sends the object's kept statements to the other keepers (DataRequest::Lease).
pub async fn share(
    store: &Arc<Store>,
    data: &Client,
    object: &Cid,
    keepers: &[Target],
) -> Result<(), CarryError> {
    let statements: Vec<Vec<u8>> = {
        let (store, object) = (store.clone(), *object);
        blocking(move || store.statements(&object))
            .await?
            .iter()
            .map(LeaseStatement::to_bytes)
            .collect()
    };
    if statements.is_empty() {
        return Ok(());
    }
    for target in keepers {
        match data.lease(target, &statements).await {
            Ok((_, refused)) if !refused.is_empty() => {
                tracing::debug!(%object, peer = %target.peer, ?refused, "a keeper refused lease statements");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%object, peer = %target.peer, "could not share lease statements: {e}");
            }
        }
    }
    Ok(())
}

/// What a keeper needs to carry statements itself: the swarm (to find holders' data-plane
/// addresses), a data-plane client, and its own leaser (for shards it holds itself).
#[derive(Clone)]
pub struct Carrier {
    /// The swarm.
    pub swarm: Swarm,
    /// A data-plane client on the node's endpoint.
    pub data: Client,
    /// The node's own leaser.
    pub leaser: Arc<Leaser>,
}

impl std::fmt::Debug for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carrier").finish_non_exhaustive()
    }
}

/// The holders the receipts kept beside `object` name, each with the shards it signed for.
pub async fn holders_by_receipts(
    store: &Arc<Store>,
    object: &Cid,
) -> Result<BTreeMap<NodeKey, Vec<Cid>>, CarryError> {
    let receipts = {
        let (store, object) = (store.clone(), *object);
        blocking(move || store.receipts_for(&object)).await?
    };
    let mut by_node: BTreeMap<NodeKey, Vec<Cid>> = BTreeMap::new();
    for bytes in receipts {
        let Ok(r) = StorageReceipt::from_bytes(&bytes) else {
            continue;
        };
        let cid = cids::from_hash(Codec::Raw, &blake3::Hash::from_bytes(r.shard.0));
        let shards = by_node.entry(r.node).or_default();
        if !shards.contains(&cid) {
            shards.push(cid);
        }
    }
    Ok(by_node)
}

/// Each shard's holders, in the order `cairn_policy::keeper::ranking` gives their peer ids for
/// the shard: the order in which the keeper in charge looks for the live copy it keeps leased
/// (`cairn_policy::repair::designate`), so a statement carried at once extends that same copy
/// and spare ones lapse.
fn ranked_holders(by_node: BTreeMap<NodeKey, Vec<Cid>>) -> BTreeMap<Cid, Vec<NodeKey>> {
    let mut by_shard: BTreeMap<Cid, Vec<NodeKey>> = BTreeMap::new();
    for (node, shards) in by_node {
        for s in shards {
            by_shard.entry(s).or_default().push(node);
        }
    }
    for (shard, nodes) in by_shard.iter_mut() {
        let ids: Vec<Vec<u8>> = nodes
            .iter()
            .map(|n| keys::peer_id(n).map(|p| p.to_bytes()).unwrap_or_default())
            .collect();
        let order = cairn_policy::keeper::ranking(&shard.to_bytes(), &ids);
        *nodes = order.into_iter().map(|i| nodes[i]).collect();
    }
    by_shard
}

/// The holders to try in round `round`: each pending shard's `round`-th ranked holder.
fn round_of(
    ranked: &BTreeMap<Cid, Vec<NodeKey>>,
    pending: &std::collections::BTreeSet<Cid>,
    round: usize,
) -> BTreeMap<NodeKey, Vec<Cid>> {
    let mut out: BTreeMap<NodeKey, Vec<Cid>> = BTreeMap::new();
    for shard in pending {
        if let Some(node) = ranked.get(shard).and_then(|n| n.get(round)) {
            out.entry(*node).or_default().push(*shard);
        }
    }
    out
}

/// Carries the object's kept statements to the holders its kept receipts name, itself
/// directly and others through their data planes (found by asking each for its `Info`), and
/// keeps the receipts they answer with. A release goes to every holder (every copy must stop
/// holding for that owner); a renewal to one copy of each shard: its holders are tried in
/// ranked order (`ranked_holders`) until one answers with a receipt for the new lease. Returns
/// receipts kept.
pub async fn carry_kept(
    store: &Arc<Store>,
    carrier: &Carrier,
    object: &Cid,
) -> Result<usize, CarryError> {
    let by_node = holders_by_receipts(store, object).await?;
    let statements = {
        let (store, object) = (store.clone(), *object);
        blocking(move || store.statements(&object)).await?
    };
    if statements.is_empty() {
        return Ok(0);
    }
    if statements.iter().any(LeaseStatement::is_release) {
        let receipts = carry_to_nodes(store, carrier, object, &statements, by_node).await?;
        return keep_receipts(
            store,
            object,
            receipts.iter().map(|r| r.to_bytes()).collect(),
        )
        .await;
    }
    let ranked = ranked_holders(by_node);
    let mut pending: std::collections::BTreeSet<Cid> = ranked.keys().copied().collect();
    let mut kept = Vec::new();
    for round in 0.. {
        let nodes = round_of(&ranked, &pending, round);
        if nodes.is_empty() {
            break;
        }
        for r in carry_to_nodes(store, carrier, object, &statements, nodes).await? {
            pending.remove(&cids::from_hash(
                Codec::Raw,
                &blake3::Hash::from_bytes(r.shard.0),
            ));
            kept.push(r.to_bytes());
        }
    }
    keep_receipts(store, object, kept).await
}

/// Sends `statements` to each node for its shards (this node through its own leaser) and
/// returns the receipts that answer them ([`answers`]). A node that cannot be reached is
/// logged and passed over.
async fn carry_to_nodes(
    store: &Arc<Store>,
    carrier: &Carrier,
    object: &Cid,
    statements: &[LeaseStatement],
    nodes: BTreeMap<NodeKey, Vec<Cid>>,
) -> Result<Vec<StorageReceipt>, CarryError> {
    let own = carrier.leaser.node_key();
    let mut out = Vec::new();
    for (node, shards) in nodes {
        if node == own {
            let (s2, l2, sh, list) = (
                store.clone(),
                carrier.leaser.clone(),
                shards.clone(),
                statements.to_vec(),
            );
            let receipts = blocking(move || {
                let mut out = Vec::new();
                for s in &list {
                    out.extend(l2.hold(&s2, s, &sh)?.into_iter().filter(|r| answers(s, r)));
                }
                Ok(out)
            })
            .await?;
            out.extend(receipts);
            continue;
        }
        let Some(peer) = keys::peer_id(&node) else {
            continue;
        };
        let target = match carrier.swarm.request(peer, ControlRequest::Info).await {
            Ok(ControlResponse::Info(info)) => match info.data_addrs.first() {
                Some(addr) => Target { peer, addr: *addr },
                None => {
                    tracing::debug!(%peer, "a holder has no data-plane address");
                    continue;
                }
            },
            Ok(other) => {
                tracing::debug!(%peer, "unexpected answer to info: {other:?}");
                continue;
            }
            Err(e) => {
                tracing::debug!(%peer, "a holder did not answer info: {e}");
                continue;
            }
        };
        for s in statements {
            match carrier.data.hold(&target, &s.to_bytes(), &shards).await {
                Ok(receipts) => out.extend(receipts.into_iter().filter(|r| answers(s, r))),
                Err(e) => {
                    tracing::warn!(%object, %peer, "could not carry a lease statement: {e}");
                }
            }
        }
    }
    Ok(out)
}
