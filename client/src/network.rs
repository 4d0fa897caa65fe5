//! Finding the network: join through bootstrap peers (Kademlia, as a client), ask every node it
//! finds for its [`NodeInfo`], and keep one data-plane client for shard bytes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_policy::health::{Health, Locations, StoreFailure};
use cairn_policy::time::Time;

use cairn_chunker::Cid;
use cairn_wire::data::{self, Target};
use cairn_wire::protocol::{
    ControlRequest, ControlResponse, ErrorCode, Holding, MAX_DATA_HAS, NodeInfo, SignedManifest,
};
use cairn_wire::swarm::{Role, Swarm};
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio_util::sync::CancellationToken;

use crate::cache::ShardCache;
use crate::error::ClientError;
use cairn_policy::placement::{self, Candidate};

/// How long a peer may take to answer while joining; a dead peer costs at most this.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a node may take to say which shards it holds before reads go on without it.
pub const LOCATE_TIMEOUT: Duration = Duration::from_secs(3);
pub use cairn_policy::health::{DOWN_FOR, FULL_FOR, LOCATED_FOR};

/// Nodes that must name a node faulty (from their proof ledgers) before a client places no
/// new data on it: the nodes' own default `proofs.fault_quorum`.
pub const FAULTY_QUORUM: usize = 2;

/// Who holds which shards (indices into [`Network::nodes`]).
#[derive(Debug, Clone, Default)]
pub struct Holders {
    /// Nodes with an intact copy.
    pub intact: HashMap<Cid, Vec<usize>>,
    /// Nodes whose copy failed verification (quarantined, never served).
    pub corrupt: HashMap<Cid, Vec<usize>>,
    /// CIDs whose `intact` entry is a guess from placement, not an answer
    /// ([`Network::guess`]).
    pub guessed: HashSet<Cid>,
}

impl Holders {
    /// Nodes with an intact copy of `cid`.
    pub fn intact(&self, cid: &Cid) -> &[usize] {
        self.intact.get(cid).map_or(&[], Vec::as_slice)
    }

    /// Nodes holding a quarantined copy of `cid`.
    pub fn corrupt(&self, cid: &Cid) -> &[usize] {
        self.corrupt.get(cid).map_or(&[], Vec::as_slice)
    }

    /// Whether where `cid` is was guessed rather than asked.
    pub fn is_guess(&self, cid: &Cid) -> bool {
        self.guessed.contains(cid)
    }
}

type Located = Locations<Cid, PeerId>;

/// How a failed store bears on the node's health.
fn store_failure(error: &data::DataError) -> StoreFailure {
    match error {
        data::DataError::Unreachable { .. }
        | data::DataError::Timeout { .. }
        | data::DataError::Stalled { .. } => StoreFailure::Unreachable,
        data::DataError::Remote { error, .. } if error.code == ErrorCode::NoSpace => {
            StoreFailure::NoSpace
        }
        _ => StoreFailure::Other,
    }
}

/// A live node as the client sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Where to send shard bytes (peer id checked in the TLS handshake).
    pub target: Target,
    /// What it said about itself.
    pub info: NodeInfo,
}

impl NodeView {
    /// The node's peer id.
    pub fn peer(&self) -> PeerId {
        self.target.peer
    }
}

/// Where upload tasks report failed stores, so the uploads that follow pass over a node that
/// is gone or full ([`Network::write_candidates`]).
#[derive(Clone)]
pub struct StoreFailures {
    shared: Arc<Shared>,
    /// Peer ids by node index, as in the [`Network`] this came from.
    peers: Arc<[PeerId]>,
}

impl std::fmt::Debug for StoreFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFailures").finish_non_exhaustive()
    }
}

impl StoreFailures {
    /// See [`Network::store_failed`].
    pub fn report(&self, index: usize, error: &data::DataError) {
        let Some(peer) = self.peer(index) else { return };
        let now = self.shared.now();
        if self
            .shared
            .health()
            .store_failed(peer, store_failure(error), now)
        {
            tracing::debug!(%peer, "node failed a store ({error}); passing it over");
        }
    }

    /// Node `index`, found silent during a store, took the shard after all: it was slow, not
    /// gone, and placement may use it again.
    pub fn answered(&self, index: usize) {
        if let Some(peer) = self.peer(index) {
            self.shared.health().answered(&peer);
        }
    }

    /// Node `index` went silent during a store (nothing heard for
    /// [`crate::put::STORE_SILENT_FOR`]): it is left out like an unreachable node, for
    /// [`DOWN_FOR`].
    pub fn silent(&self, index: usize) {
        if let Some(peer) = self.peer(index) {
            let now = self.shared.now();
            self.shared.health().down(peer, now);
            tracing::info!(%peer, "node went silent during a store; passing it over");
        }
    }

    fn peer(&self, index: usize) -> Option<PeerId> {
        self.peers.get(index).copied()
    }
}

/// A connection to a Cairn network: a view of its nodes over one libp2p client and one
/// data-plane client. [`Network::refresh`] makes a new view that keeps both (and their QUIC
/// connections, congestion state and lookup caches).
pub struct Network {
    shared: Arc<Shared>,
    nodes: Vec<NodeView>,
    /// Peer id -> index into `nodes`.
    index: HashMap<PeerId, usize>,
    /// Verified whole shards kept between reads (long-lived clients only).
    cache: Option<Arc<ShardCache>>,
}

/// What every view of one network shares.
struct Shared {
    swarm: Swarm,
    data: data::Client,
    cancel: CancellationToken,
    /// The clock the policies' [`Time`] counts from (tokio's, so paused-clock tests drive it).
    origin: tokio::time::Instant,
    /// Nodes that recently failed to answer (skipped by lookups for [`DOWN_FOR`], so that with
    /// a node gone every read does not wait out its timeout again) or refused a shard for lack
    /// of space (offered no shards for [`FULL_FOR`]).
    health: Mutex<Health<PeerId>>,
    /// Recently located shards: CID -> nodes that held it intact, and when that was learnt.
    located: Mutex<Located>,
}

impl Shared {
    fn now(&self) -> Time {
        Time::after(self.origin.elapsed())
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health<PeerId>> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn located(&self) -> std::sync::MutexGuard<'_, Located> {
        self.located.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where shards were found and which nodes are down (locked in that order).
    fn memory(
        &self,
    ) -> (
        std::sync::MutexGuard<'_, Located>,
        std::sync::MutexGuard<'_, Health<PeerId>>,
    ) {
        let located = self.located();
        let health = self.health();
        (located, health)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Network {
    /// Joins through `peers` (multiaddrs ending in `/p2p/<peer id>`), discovers the other nodes
    /// and asks each for its info. Fails if no node answers.
    pub async fn connect(peers: &[Multiaddr]) -> Result<Self, ClientError> {
        if peers.is_empty() {
            return Err(ClientError::NoPeers);
        }
        let cancel = CancellationToken::new();
        let key = libp2p::identity::Keypair::generate_ed25519();
        let swarm = Swarm::start(
            key.clone(),
            Role::Client,
            &[],
            &[],
            None,
            format!("cairn/{}", env!("CARGO_PKG_VERSION")),
            cairn_wire::swarm::SwarmLimits::default(),
            cancel.child_token(),
        )
        .await?;
        // Any early return below stops the swarm.
        let guard = cancel.drop_guard();
        // Dial every given peer at once; a dead one costs one short timeout, not one each.
        let dials = futures::future::join_all(peers.iter().map(|addr| {
            let swarm = swarm.clone();
            async move {
                match tokio::time::timeout(JOIN_TIMEOUT, swarm.dial(addr.clone())).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "{addr}: no answer within {}s",
                        JOIN_TIMEOUT.as_secs()
                    )),
                }
            }
        }))
        .await;
        let mut problems: Vec<String> = dials.iter().filter_map(|r| r.clone().err()).collect();
        let joined = dials.iter().filter(|r| r.is_ok()).count();
        if joined == 0 {
            return Err(ClientError::Unreachable { problems });
        }
        // Let Kademlia find the rest: wait until the set of known peers stops growing.
        let _ = swarm.bootstrap().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut known = 0;
        let mut stable_since = tokio::time::Instant::now();
        loop {
            let now = swarm.peers().await?.len();
            if now != known {
                known = now;
                stable_since = tokio::time::Instant::now();
            }
            if stable_since.elapsed() > Duration::from_millis(400)
                || tokio::time::Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let nodes = survey(&swarm, &mut problems).await?;
        let data = data::Client::bind(key)?;
        Ok(Self::view(
            Arc::new(Shared {
                swarm,
                data,
                cancel: guard.disarm(),
                origin: tokio::time::Instant::now(),
                health: Mutex::new(Health::default()),
                located: Mutex::new(Locations::default()),
            }),
            nodes,
            None,
        ))
    }

    /// A fresh view of the network over the same connections: asks the swarm for the peers it
    /// knows now (after a Kademlia bootstrap) and each of them for its info. Where shards were
    /// found, which nodes are down and the shard cache carry over. Fails if no node answers.
    pub async fn refresh(&self) -> Result<Network, ClientError> {
        let _ = self.shared.swarm.bootstrap().await;
        let mut problems = Vec::new();
        let nodes = survey(&self.shared.swarm, &mut problems).await?;
        Ok(Self::view(self.shared.clone(), nodes, self.cache.clone()))
    }

    fn view(shared: Arc<Shared>, nodes: Vec<NodeView>, cache: Option<Arc<ShardCache>>) -> Self {
        shared.data.warm(nodes.iter().map(|n| n.target).collect());
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.peer(), i))
            .collect();
        Self {
            shared,
            nodes,
            index,
            cache,
        }
    }

    /// Keeps verified whole shards in `cache` between reads (and lets read-ahead fill it).
    /// The cache outlives the network, so a reconnect can hand the same one on.
    pub fn with_cache(mut self, cache: Arc<ShardCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The shard cache, if one was given.
    pub fn cache(&self) -> Option<&Arc<ShardCache>> {
        self.cache.as_ref()
    }

    /// The nodes that answered.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// The data-plane client.
    pub fn data(&self) -> &data::Client {
        &self.shared.data
    }

    /// The nodes as placement candidates (same order as [`Network::nodes`]), with the free
    /// space each reported: where `put` placed shards and manifests, so where reads look.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .map(|n| Candidate::new(n.peer().to_bytes(), n.info.free(), n.info.label.clone()))
            .collect()
    }

    /// Whether node `index` failed to answer within the last [`DOWN_FOR`].
    pub fn is_down(&self, index: usize) -> bool {
        let now = self.shared.now();
        let health = self.shared.health();
        self.nodes
            .get(index)
            .is_some_and(|n| health.is_down(&n.peer(), now))
    }

    /// [`Network::candidates`] for placing new shards: a node that recently failed to answer
    /// ([`DOWN_FOR`]) or refused a shard for lack of space ([`FULL_FOR`]) is offered with no
    /// free space, so placement passes it over instead of trying it first again; so is a node
    /// that at least [`FAULTY_QUORUM`] other nodes' proof ledgers hold faulty.
    pub fn write_candidates(&self) -> Vec<Candidate> {
        let mut candidates = self.candidates();
        let now = self.shared.now();
        let health = self.shared.health();
        let faulty = self.faulty();
        for (c, n) in candidates.iter_mut().zip(&self.nodes) {
            if !health.takes_writes(&n.peer(), now)
                || faulty.contains(&n.info.peer_id)
                || n.info.draining
            {
                c.free = 0;
            }
        }
        candidates
    }

    /// Nodes that at least [`FAULTY_QUORUM`] of the nodes that answered name faulty (a node's
    /// word about itself does not count).
    pub fn faulty(&self) -> std::collections::BTreeSet<String> {
        let reports: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                n.info
                    .faulty
                    .iter()
                    .filter(|p| **p != n.info.peer_id)
                    .cloned()
                    .collect()
            })
            .collect();
        cairn_proofs::ledger::named_by_quorum(&reports, FAULTY_QUORUM)
    }

    /// Tells the network view that node `index` failed to store a shard with `error`: a node
    /// that could not be reached or did not answer is left out for [`DOWN_FOR`], one that
    /// was out of space gets no shards for [`FULL_FOR`]. Other failures change nothing.
    pub fn store_failed(&self, index: usize, error: &data::DataError) {
        self.store_failures().report(index, error);
    }

    /// A handle for upload tasks to report failed stores with ([`Network::store_failed`]).
    pub fn store_failures(&self) -> StoreFailures {
        StoreFailures {
            shared: self.shared.clone(),
            peers: self
                .nodes
                .iter()
                .map(NodeView::peer)
                .collect::<Vec<_>>()
                .into(),
        }
    }

    /// Sends a control request to a node and waits (at most `timeout`) for its answer.
    pub async fn control(
        &self,
        peer: libp2p::PeerId,
        req: ControlRequest,
        timeout: std::time::Duration,
    ) -> Result<ControlResponse, cairn_wire::swarm::SwarmError> {
        match tokio::time::timeout(timeout, self.shared.swarm.request(peer, req)).await {
            Ok(r) => r,
            Err(_) => Err(cairn_wire::swarm::SwarmError::Request {
                peer,
                reason: format!("no answer within {}s", timeout.as_secs_f64()),
            }),
        }
    }

    /// Every node's proof ledger (of `node` only, when given): `(reporter peer id, its epoch,
    /// its records)` for each node that answered.
    pub async fn records(
        &self,
        node: Option<&str>,
    ) -> Vec<(String, u64, Vec<cairn_wire::protocol::RecordView>)> {
        let asks = self.nodes.iter().map(|n| {
            let swarm = self.shared.swarm.clone();
            let (peer, node) = (n.peer(), node.map(str::to_string));
            async move {
                let ask = swarm.request(peer, ControlRequest::Records { node });
                match tokio::time::timeout(LOCATE_TIMEOUT, ask).await {
                    Ok(Ok(ControlResponse::Records { epoch, records })) => {
                        Some((peer.to_string(), epoch, records))
                    }
                    other => {
                        tracing::debug!(%peer, "no proof records: {other:?}");
                        None
                    }
                }
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Manifests signed by `signer` (an ed25519 public key) that any node holds, newest first,
    /// at most `limit`. How a gateway with a fresh disk finds its latest catalog export.
    pub async fn signed_by(&self, signer: &[u8], limit: u32) -> Vec<SignedManifest> {
        let asks = self.nodes.iter().map(|n| {
            let swarm = self.shared.swarm.clone();
            let (peer, signer) = (n.peer(), signer.to_vec());
            async move {
                let ask = swarm.request(peer, ControlRequest::Signed { signer, limit });
                match tokio::time::timeout(LOCATE_TIMEOUT, ask).await {
                    Ok(Ok(ControlResponse::Signed(v))) => v,
                    other => {
                        tracing::debug!(%peer, "no list of signed manifests: {other:?}");
                        Vec::new()
                    }
                }
            }
        });
        let mut all: Vec<SignedManifest> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        all.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then(a.cid.cmp(&b.cid)));
        all.dedup_by(|a, b| a.cid == b.cid);
        all.truncate(limit as usize);
        all
    }

    /// Tells the lookup caches that node `index` did not serve `cid`: the remembered location is
    /// dropped, and an `unreachable` node is left out of lookups for [`DOWN_FOR`].
    pub fn fetch_failed(&self, index: usize, cid: &Cid, unreachable: bool) {
        let Some(peer) = self.nodes.get(index).map(NodeView::peer) else {
            return;
        };
        self.shared.located().missed(cid, &peer);
        if unreachable {
            let now = self.shared.now();
            self.shared.health().down(peer, now);
        }
    }

    /// Live nodes remembered (within [`LOCATED_FOR`]) as holding `cid`, if any.
    fn remembered(
        &self,
        located: &Located,
        health: &Health<PeerId>,
        cid: &Cid,
        now: Time,
    ) -> Option<Vec<usize>> {
        let peers = located.recall(cid, now)?;
        let mut live: Vec<usize> = peers
            .iter()
            .filter(|p| !health.is_down(p, now))
            .filter_map(|p| self.index.get(p).copied())
            .collect();
        live.sort_unstable();
        (!live.is_empty()).then_some(live)
    }

    /// Holders of the shards of some stripes (each given as its stored shards' CIDs, in
    /// manifest order) without asking anyone: where a shard was found recently, else the node
    /// placement chooses for it now, which is where `put` stored it unless the nodes' free
    /// space has reordered them since. Guesses are marked ([`Holders::guessed`]): a reader that
    /// misses confirms with [`Network::locate`]. A guess that falls on a node that is down is
    /// left out.
    pub fn guess(&self, stripes: &[Vec<Cid>]) -> Holders {
        let mut holders = Holders::default();
        let candidates = self.candidates();
        let now = self.shared.now();
        let (located, health) = self.shared.memory();
        for cids in stripes {
            let mut placed = None;
            for (j, cid) in cids.iter().enumerate() {
                if holders.intact.contains_key(cid) {
                    continue;
                }
                if let Some(live) = self.remembered(&located, &health, cid, now) {
                    holders.intact.insert(*cid, live);
                    continue;
                }
                let placed =
                    placed.get_or_insert_with(|| placement::place_stripe(cids, &candidates).ok());
                if let Some(&node) = placed.as_ref().and_then(|p| p.get(j)?.first())
                    && !health.is_down(&self.nodes[node].peer(), now)
                {
                    holders.intact.insert(*cid, vec![node]);
                    holders.guessed.insert(*cid);
                }
            }
        }
        holders
    }

    /// Which nodes hold each CID, asking every node (or remembering an answer from the last
    /// [`LOCATED_FOR`]). Unreachable nodes hold nothing.
    pub async fn locate(&self, cids: &[Cid]) -> Holders {
        let mut holders = Holders::default();
        let cids: Vec<Cid> = {
            let now = self.shared.now();
            let (located, health) = self.shared.memory();
            cids.iter()
                .copied()
                .filter(|cid| match self.remembered(&located, &health, cid, now) {
                    Some(live) => {
                        holders.intact.insert(*cid, live);
                        false
                    }
                    None => true,
                })
                .collect()
        };
        if cids.is_empty() {
            return holders;
        }
        // Owned work items: a future borrowing through nested closures here would not be
        // provably `Send` to callers that spawn it (a rustc higher-ranked lifetime limitation).
        let mut asks: Vec<(usize, PeerId, Vec<Cid>)> = Vec::new();
        let skip: Vec<PeerId> = {
            let now = self.shared.now();
            self.shared.health().down_now(now)
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if skip.contains(&n.peer()) {
                continue;
            }
            for batch in cids.chunks(MAX_DATA_HAS) {
                asks.push((i, n.peer(), batch.to_vec()));
            }
        }
        // Asked on the data plane: one QUIC stream on a connection reads use anyway, several
        // times cheaper under load than a libp2p request (47 ms p50 with 32 readers here).
        let started = Instant::now();
        let answers = futures::stream::iter(asks)
            .map(|(i, peer, batch)| {
                let target = self.nodes[i].target;
                async move {
                    let answer =
                        tokio::time::timeout(LOCATE_TIMEOUT, self.data().has(&target, &batch))
                            .await;
                    (i, peer, batch, answer)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        tracing::debug!(
            shards = cids.len(),
            ms = started.elapsed().as_millis() as u64,
            "asked the nodes where shards are"
        );
        for (i, peer, batch, answer) in answers {
            let answered = matches!(answer, Ok(Ok(_)));
            if answered {
                self.shared.health().answered(&peer);
            } else {
                tracing::debug!(%peer, "no shard list from node; leaving it out for {}s", DOWN_FOR.as_secs());
                let now = self.shared.now();
                self.shared.health().down(peer, now);
            }
            if let Ok(Ok(states)) = answer {
                for (cid, state) in batch.iter().zip(states) {
                    match state {
                        Holding::Intact(_) => holders.intact.entry(*cid).or_default().push(i),
                        Holding::Corrupt => holders.corrupt.entry(*cid).or_default().push(i),
                        Holding::Absent => {}
                    }
                }
            }
        }
        for v in holders
            .intact
            .values_mut()
            .chain(holders.corrupt.values_mut())
        {
            v.sort_unstable();
        }
        let now = self.shared.now();
        let mut located = self.shared.located();
        located.make_room(cids.len());
        for cid in &cids {
            if let Some(nodes) = holders.intact.get(cid) {
                let peers = nodes.iter().map(|&i| self.nodes[i].peer()).collect();
                located.found(*cid, peers, now);
            }
        }
        holders
    }
}

/// Asks every peer the swarm knows for its info; the nodes that answered, by peer id.
async fn survey(swarm: &Swarm, problems: &mut Vec<String>) -> Result<Vec<NodeView>, ClientError> {
    let peer_ids: Vec<PeerId> = swarm
        .peers()
        .await?
        .iter()
        .filter_map(|p| p.peer_id.parse().ok())
        .collect();
    let infos = futures::stream::iter(peer_ids)
        .map(|peer| {
            let swarm = swarm.clone();
            async move {
                let answer =
                    tokio::time::timeout(JOIN_TIMEOUT, swarm.request(peer, ControlRequest::Info))
                        .await;
                (
                    peer,
                    answer.unwrap_or_else(|_| {
                        Err(cairn_wire::swarm::SwarmError::Request {
                            peer,
                            reason: format!("no answer within {}s", JOIN_TIMEOUT.as_secs()),
                        })
                    }),
                )
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let mut nodes = Vec::new();
    for (peer, answer) in infos {
        match answer {
            Ok(ControlResponse::Info(info)) => {
                if let Some(addr) = info.data_addrs.first().copied() {
                    nodes.push(NodeView {
                        target: Target { peer, addr },
                        info,
                    });
                }
            }
            Ok(other) => problems.push(format!("{peer}: unexpected answer {other:?}")),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if nodes.is_empty() {
        return Err(ClientError::Unreachable {
            problems: std::mem::take(problems),
        });
    }
    nodes.sort_by(|a, b| a.info.peer_id.cmp(&b.info.peer_id));
    Ok(nodes)
}
