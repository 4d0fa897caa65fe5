//! One shard from its holders: whole, or a range streamed (the next holder asked for the rest
//! when one fails part-way), with the holders known, guessed or looked up.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use cairn_chunker::Cid;
use cairn_chunker::manifest::{ObjectManifest, ShardRef};

use super::Incidents;
use crate::network::{Holders, Network};

/// The nodes holding `cid` intact: from `holders`, or asked now when `holders` has none (a
/// shard left out of a lookup because it was cached may have been evicted since).
async fn holders_of(net: &Network, holders: &Holders, cid: &Cid) -> Vec<usize> {
    match holders.intact(cid) {
        [] => net
            .locate(std::slice::from_ref(cid))
            .await
            .intact(cid)
            .to_vec(),
        some => some.to_vec(),
    }
}

/// The nodes to ask for one shard, in turn: its known or guessed holders, then, once a guess
/// has missed, the holders a lookup finds. No node is asked twice.
struct Tries<'a> {
    net: &'a Network,
    cid: Cid,
    queue: std::collections::VecDeque<usize>,
    tried: Vec<usize>,
    /// The queue is a guess ([`Network::guess`]): a lookup follows when it runs dry.
    guess: bool,
}

impl<'a> Tries<'a> {
    async fn new(net: &'a Network, holders: &Holders, cid: Cid) -> Self {
        Self {
            net,
            cid,
            queue: holders_of(net, holders, &cid).await.into(),
            tried: Vec::new(),
            guess: holders.is_guess(&cid),
        }
    }

    async fn next(&mut self) -> Option<usize> {
        loop {
            match self.queue.pop_front() {
                Some(i) if self.tried.contains(&i) => continue,
                Some(i) => {
                    self.tried.push(i);
                    return Some(i);
                }
                None if self.guess => {
                    self.guess = false;
                    let found = self.net.locate(std::slice::from_ref(&self.cid)).await;
                    self.queue = found.intact(&self.cid).iter().copied().collect();
                }
                None => return None,
            }
        }
    }

    /// Records that node `i` did not serve the shard and returns what to report. A guessed
    /// node that simply does not hold it is no incident.
    fn failed(&self, i: usize, e: cairn_wire::data::DataError, incidents: &Incidents) -> String {
        let absent = matches!(
            &e,
            cairn_wire::data::DataError::Remote { error, .. }
                if error.code == cairn_wire::protocol::ErrorCode::NotFound
        );
        if self.guess && absent {
            tracing::debug!(cid = %self.cid, node = %self.net.nodes()[i].peer(), "guessed holder does not have the shard");
            return e.to_string();
        }
        fetch_failed(self.net, i, &self.cid, e, incidents)
    }
}

/// Fetches one whole shard from the first holder that serves it intact (the cache first).
pub(super) async fn fetch_shard(
    net: &Network,
    holders: &Holders,
    shard: ShardRef,
    incidents: &Incidents,
) -> Result<Bytes, Vec<String>> {
    if let Some(s) = net.cache().and_then(|c| c.cached(&shard.cid)) {
        return Ok(s.to_bytes());
    }
    let mut problems = Vec::new();
    let mut tries = Tries::new(net, holders, shard.cid).await;
    while let Some(i) = tries.next().await {
        let node = &net.nodes()[i];
        match net
            .data()
            .fetch(&node.target, &shard.cid, Some(u64::from(shard.len)), None)
            .await
        {
            Ok(b) => return Ok(b),
            Err(e) => problems.push(tries.failed(i, e, incidents)),
        }
    }
    Err(problems)
}

/// Records a failed fetch from node `i` and returns what to report.
fn fetch_failed(
    net: &Network,
    i: usize,
    cid: &Cid,
    e: cairn_wire::data::DataError,
    incidents: &Incidents,
) -> String {
    incidents.record(net.nodes()[i].peer(), format!("shard {cid}: {e}"));
    let unreachable = matches!(
        e,
        cairn_wire::data::DataError::Unreachable { .. }
            | cairn_wire::data::DataError::Timeout { .. }
            | cairn_wire::data::DataError::Stalled { .. }
    );
    net.fetch_failed(i, cid, unreachable);
    e.to_string()
}

/// Streams `range` of a shard to `sink` from the first holder that serves it intact; when a
/// holder fails part-way, the next one is asked for the rest only. `asking` is set to the node
/// being asked (`usize::MAX` between nodes), so a hedge can tell which node is slow. `head`: a
/// reader waits on these first bytes, so a range asks for its head in the node's fast lane.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_shard(
    net: &Network,
    holders: &Holders,
    shard: ShardRef,
    range: Range<u64>,
    sink: &(dyn Fn(Bytes) + Sync),
    asking: &AtomicUsize,
    head: bool,
    incidents: &Incidents,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let delivered = AtomicU64::new(0);
    let counted = |b: Bytes| {
        delivered.fetch_add(b.len() as u64, Ordering::Relaxed);
        sink(b);
    };
    let mut tries = Tries::new(net, holders, shard.cid).await;
    while let Some(i) = tries.next().await {
        // What a failed holder delivered is verified and passed on: ask the next for the rest.
        let at = range.start + delivered.load(Ordering::Relaxed);
        if at >= range.end {
            return Ok(());
        }
        let node = &net.nodes()[i];
        let whole = at == 0 && range.end == u64::from(shard.len);
        asking.store(i, Ordering::Relaxed);
        let r = if head && !whole {
            net.data()
                .fetch_head_first(
                    &node.target,
                    &shard.cid,
                    u64::from(shard.len),
                    at..range.end,
                    &counted,
                )
                .await
        } else {
            net.data()
                .fetch_streaming(
                    &node.target,
                    &shard.cid,
                    Some(u64::from(shard.len)),
                    (!whole).then_some(at..range.end),
                    &counted,
                )
                .await
        };
        asking.store(usize::MAX, Ordering::Relaxed);
        match r {
            Ok(_) => return Ok(()),
            Err(e) => problems.push(tries.failed(i, e, incidents)),
        }
    }
    Err(problems)
}

/// Where the stored shards of these stripes are, without asking ([`Network::guess`]).
pub(super) fn guess(
    net: &Network,
    manifest: &ObjectManifest,
    stripes: impl Iterator<Item = usize>,
) -> Holders {
    let cids: Vec<Vec<Cid>> = stripes
        .map(|s| {
            manifest.stripes[s]
                .stored_shards()
                .map(|(_, r)| r.cid)
                .collect()
        })
        .collect();
    net.guess(&cids)
}
