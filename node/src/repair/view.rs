//! The keeper's view of the network for one pass: every storage node it knows of, whether it
//! answers, where its data plane is, its free space and label, and whether it is leaving or
//! held faulty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use cairn_policy::placement::Candidate;
use cairn_policy::repair::{Liveness, NodeState};
use cairn_policy::time::Time;
use cairn_wire::data::Target;
use cairn_wire::protocol::{ControlRequest, ControlResponse, NodeInfo};
use cairn_wire::swarm::Swarm;
use libp2p::PeerId;

/// Time a peer has to answer `Info`.
const INFO_TIMEOUT: Duration = Duration::from_secs(3);
/// Nodes that must name a node faulty before its copies count as lost (as clients do).
pub const FAULTY_QUORUM: usize = 2;

/// One storage node as the keeper sees it this pass.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its peer id.
    pub peer: PeerId,
    /// Its data plane, when it answered.
    pub target: Option<Target>,
    /// What it said of itself, when it answered.
    pub info: Option<NodeInfo>,
    /// Up, suspect (silent within the grace period) or lost.
    pub state: NodeState,
    /// Named faulty by a quorum of nodes.
    pub faulty: bool,
}

impl Node {
    /// Whether it answered this pass.
    pub fn up(&self) -> bool {
        self.state == NodeState::Up && self.target.is_some()
    }

    /// Whether it is leaving the network.
    pub fn draining(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.draining)
    }

    /// Whether it may take new shards and manifests: up, not leaving, not faulty.
    pub fn takes_data(&self) -> bool {
        self.up() && !self.draining() && !self.faulty
    }

    /// Whether it can be the keeper in charge of an object: it takes data and runs repair.
    pub fn can_lead(&self) -> bool {
        self.takes_data() && self.info.as_ref().is_some_and(|i| i.repairs)
    }
}

/// Every node of one pass, this node first.
#[derive(Debug, Clone)]
pub struct View {
    /// The nodes; index 0 is this node.
    pub nodes: Vec<Node>,
    by_peer: HashMap<PeerId, usize>,
}

impl View {
    /// The index of `peer`, if it is known.
    pub fn index(&self, peer: &PeerId) -> Option<usize> {
        self.by_peer.get(peer).copied()
    }

    /// The nodes' ids, as rankings take them.
    pub fn ids(&self) -> Vec<Vec<u8>> {
        self.nodes.iter().map(|n| n.peer.to_bytes()).collect()
    }

    /// Adds a node known only from a receipt (a holder this node never saw answer): it is
    /// silent from now on, so it is lost after the grace period like any other.
    pub fn add_unknown(
        &mut self,
        peer: PeerId,
        liveness: &mut Liveness<PeerId>,
        now: Time,
    ) -> usize {
        if let Some(i) = self.index(&peer) {
            return i;
        }
        liveness.silent(&peer, now);
        let i = self.nodes.len();
        self.nodes.push(Node {
            peer,
            target: None,
            info: None,
            state: liveness.state(&peer, now),
            faulty: false,
        });
        self.by_peer.insert(peer, i);
        i
    }

    /// The nodes as placement candidates: those that take data with the free space they
    /// reported, the others with none (placement still ranks them, last).
    pub fn candidates(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .map(|n| {
                Candidate::new(
                    n.peer.to_bytes(),
                    if n.takes_data() {
                        n.info.as_ref().map_or(0, NodeInfo::free)
                    } else {
                        0
                    },
                    n.info.as_ref().and_then(|i| i.label.clone()),
                )
            })
            .collect()
    }
}

/// Asks every peer in the routing table (and every node seen before) for its `Info`, and
/// updates `liveness`: a node that answers is up, one that does not is silent since the first
/// pass it failed. `me` is this node's own `Info`.
pub async fn refresh(
    swarm: &Swarm,
    me: NodeInfo,
    my_peer: PeerId,
    seen: &mut BTreeMap<PeerId, ()>,
    liveness: &mut Liveness<PeerId>,
    now: Time,
) -> View {
    let mut peers: HashSet<PeerId> = match swarm.peers().await {
        Ok(list) => list
            .iter()
            .filter_map(|p| p.peer_id.parse::<PeerId>().ok())
            .collect(),
        Err(_) => HashSet::new(),
    };
    peers.extend(seen.keys().copied());
    peers.remove(&my_peer);
    let asks = peers.into_iter().map(|peer| async move {
        let answer =
            tokio::time::timeout(INFO_TIMEOUT, swarm.request(peer, ControlRequest::Info)).await;
        match answer {
            Ok(Ok(ControlResponse::Info(info))) => (peer, Some(info)),
            _ => (peer, None),
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut nodes = vec![Node {
        peer: my_peer,
        target: me.data_addrs.first().map(|&addr| Target {
            peer: my_peer,
            addr,
        }),
        info: Some(me),
        state: NodeState::Up,
        faulty: false,
    }];
    for (peer, info) in answers {
        // A storage node advertises a data plane; a client that answered is not one.
        let is_node = info.as_ref().is_some_and(|i| !i.data_addrs.is_empty());
        match info {
            Some(_) if !is_node => continue,
            Some(_) => {
                seen.insert(peer, ());
                liveness.answered(&peer);
            }
            None if seen.contains_key(&peer) => liveness.silent(&peer, now),
            // Never seen answering: not known to be a storage node.
            None => continue,
        }
        let target = info
            .as_ref()
            .and_then(|i| i.data_addrs.first())
            .map(|&addr| Target { peer, addr });
        nodes.push(Node {
            peer,
            target,
            info,
            state: liveness.state(&peer, now),
            faulty: false,
        });
    }
    // Faulty: named by a quorum of the nodes that answered (this node included).
    let mut named: HashMap<String, usize> = HashMap::new();
    for n in &nodes {
        if let Some(i) = &n.info {
            for f in i.faulty.iter().collect::<HashSet<_>>() {
                *named.entry(f.clone()).or_default() += 1;
            }
        }
    }
    for n in &mut nodes {
        n.faulty = named
            .get(&n.peer.to_string())
            .is_some_and(|&c| c >= FAULTY_QUORUM);
    }
    let by_peer = nodes.iter().enumerate().map(|(i, n)| (n.peer, i)).collect();
    View { nodes, by_peer }
}
