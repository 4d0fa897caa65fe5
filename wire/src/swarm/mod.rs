//! The libp2p side: QUIC transport, Kademlia + identify for discovery, request-response for the
//! control plane. A [`Swarm`] handle talks to one actor task that owns the libp2p swarm.
//!
//! ```text
//!   Swarm (Clone handle) ──bounded mpsc──► actor ── owns libp2p::Swarm ──► QUIC sockets
//!                                           │  ▲
//!        inbound control request ──spawn──► handler (bounded by a semaphore, and per peer)
//!                                              └─ response ──bounded mpsc──┘
//! ```
//!
//! Each peer has a share of the inbound control requests answered ([`fair`]); a peer that
//! floods past it waits for its refusals.
//!
//! Dropping every handle (or cancelling the token) stops the actor, which closes all connections.

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub mod fair;
mod limits;

pub use limits::{
    Host, MAX_ANNOUNCED, MAX_PENDING_INCOMING, MAX_PENDING_PER_IP, MAX_PER_PEER, Scope,
    SwarmLimits, worth_keeping,
};

use crate::protocol::{
    CONTROL_PROTOCOL, ControlRequest, ControlResponse, ErrorCode, IDENTIFY_PROTOCOL, KAD_PROTOCOL,
    MAX_CONTROL_REQUEST, MAX_CONTROL_RESPONSE, RemoteError, read_frame, write_frame,
};

/// Time a control request may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// Inbound control requests handled at once; more are answered `Busy`.
pub const MAX_INBOUND_CONTROL: usize = 64;
/// Refusals held back from flooding peers at once ([`fair::SLOW_BUSY`]); past this they are
/// answered at once.
const MAX_SLOWED: usize = 16_384;

/// Errors from the swarm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The transport or behaviour could not be built.
    #[error("libp2p setup: {0}")]
    Setup(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial failed.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A control request failed.
    #[error("control request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("{peer} refused: {error}")]
    Remote {
        /// The peer.
        peer: PeerId,
        /// Its answer.
        error: RemoteError,
    },
    /// The swarm task has stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// The control-plane codec: length-prefixed DAG-CBOR with size limits.
#[derive(Debug, Clone, Default)]
pub struct ControlCodec;

impl request_response::Codec for ControlCodec {
    type Protocol = StreamProtocol;
    type Request = ControlRequest;
    type Response = ControlResponse;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ControlRequest> {
        Ok(read_frame(io, MAX_CONTROL_REQUEST).await?)
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ControlResponse> {
        Ok(read_frame(io, MAX_CONTROL_RESPONSE).await?)
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: ControlRequest,
    ) -> io::Result<()> {
        Ok(write_frame(io, &req).await?)
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: ControlResponse,
    ) -> io::Result<()> {
        Ok(write_frame(io, &res).await?)
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // The limits come first: a connection they deny reaches no other behaviour.
    limits: libp2p::connection_limits::Behaviour,
    per_address: limits::PerAddress,
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    control: request_response::Behaviour<ControlCodec>,
}

/// Answers inbound control requests.
pub type Handler =
    Arc<dyn Fn(PeerId, ControlRequest) -> BoxFuture<'static, ControlResponse> + Send + Sync>;

/// Role of this swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A storage node: answers Kademlia and control requests.
    Node,
    /// A client: asks, never answers.
    Client,
}

/// A peer the swarm knows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KnownPeer {
    /// Peer id.
    pub peer_id: String,
    /// Known addresses.
    pub addrs: Vec<String>,
    /// Whether a connection is open.
    pub connected: bool,
}

impl KnownPeer {
    /// Whether the peer is in the routing table, that is, a storage node: only peers that
    /// serve Kademlia go in it, and clients run it in client mode. A peer that is only
    /// connected (a CLI, a gateway, a trainer reading shards) has no addresses here.
    pub fn in_routing_table(&self) -> bool {
        !self.addrs.is_empty()
    }
}

enum Command {
    Request {
        peer: PeerId,
        req: ControlRequest,
        reply: oneshot::Sender<Result<ControlResponse, SwarmError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, SwarmError>>,
    },
    Peers(oneshot::Sender<Vec<KnownPeer>>),
    Listening(oneshot::Sender<Vec<Multiaddr>>),
    Bootstrap,
}

/// Handle to the swarm actor. Cheap to clone.
#[derive(Clone)]
pub struct Swarm {
    tx: mpsc::Sender<Command>,
    local: PeerId,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm").field("local", &self.local).finish()
    }
}

fn strip_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => (a, Some(peer)),
        Some(other) => {
            a.push(other);
            (a, None)
        }
        None => (a, None),
    }
}

impl Swarm {
    /// Starts the swarm: listens on `listen` (empty for clients) and joins through `bootstrap`,
    /// under `limits`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        keypair: Keypair,
        role: Role,
        listen: &[Multiaddr],
        bootstrap: &[Multiaddr],
        handler: Option<Handler>,
        agent: String,
        limits: SwarmLimits,
        cancel: CancellationToken,
    ) -> Result<Self, SwarmError> {
        let local = keypair.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_quic()
            .with_behaviour(|key| {
                let identify = identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                        .with_agent_version(agent.clone()),
                );
                let mut kcfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
                kcfg.set_query_timeout(Duration::from_secs(10));
                kcfg.set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
                let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), kcfg);
                kad.set_mode(Some(match role {
                    Role::Node => kad::Mode::Server,
                    Role::Client => kad::Mode::Client,
                }));
                let support = match role {
                    Role::Node => ProtocolSupport::Full,
                    Role::Client => ProtocolSupport::Outbound,
                };
                let control = request_response::Behaviour::with_codec(
                    ControlCodec,
                    [(StreamProtocol::new(CONTROL_PROTOCOL), support)],
                    request_response::Config::default()
                        .with_request_timeout(CONTROL_TIMEOUT)
                        .with_max_concurrent_streams(MAX_INBOUND_CONTROL),
                );
                let connection_limits = libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_pending_incoming(Some(limits::MAX_PENDING_INCOMING))
                    .with_max_established_incoming(Some(limits.max_incoming))
                    .with_max_established_per_peer(Some(limits::MAX_PER_PEER));
                Ok(Behaviour {
                    limits: libp2p::connection_limits::Behaviour::new(connection_limits),
                    per_address: limits::PerAddress::new(limits.max_per_ip),
                    identify,
                    kad,
                    control,
                })
            })
            .map_err(|e| SwarmError::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| SwarmError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        // Wait for the listeners so callers can read the real addresses (port 0).
        let mut listening = Vec::new();
        while listening.len() < listen.len() {
            match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => listening.push(address),
                Ok(SwarmEvent::ListenerError { error, .. })
                | Ok(SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                }) => {
                    return Err(SwarmError::Setup(error.to_string()));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(SwarmError::Setup(
                        "listeners did not start within 10s".into(),
                    ));
                }
            }
        }
        for addr in bootstrap {
            let (bare, peer) = strip_p2p(addr);
            if let Some(peer) = peer
                && peer != local
            {
                swarm.behaviour_mut().kad.add_address(&peer, bare);
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, "bootstrap dial failed: {e}");
            }
        }
        let (tx, rx) = mpsc::channel(256);
        let actor = Actor {
            swarm,
            rx,
            pending: HashMap::new(),
            dials: HashMap::new(),
            listening,
            handler,
            inbound: Arc::new(Semaphore::new(MAX_INBOUND_CONTROL)),
            responses: mpsc::channel(MAX_INBOUND_CONTROL),
            refusals: mpsc::channel(MAX_SLOWED),
            hosts: HashMap::new(),
            bootstrapped: false,
            share: fair::ControlShare::default(),
            slowed: 0,
            seen: HashMap::new(),
            accept_private: limits.accept_private_addresses,
        };
        let token = cancel.clone();
        tokio::spawn(async move { actor.run(token).await });
        Ok(Self { tx, local, cancel })
    }

    /// This swarm's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SwarmError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SwarmError::Stopped)?;
        rx.await.map_err(|_| SwarmError::Stopped)
    }

    /// Sends a control request and waits for the answer (or [`CONTROL_TIMEOUT`]).
    pub async fn request(
        &self,
        peer: PeerId,
        req: ControlRequest,
    ) -> Result<ControlResponse, SwarmError> {
        match self
            .call(|reply| Command::Request { peer, req, reply })
            .await??
        {
            ControlResponse::Error(error) => Err(SwarmError::Remote { peer, error }),
            other => Ok(other),
        }
    }

    /// Dials a multiaddr ending in `/p2p/<peer id>` and waits until connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, SwarmError> {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.call(|reply| Command::Dial {
                addr: addr.clone(),
                reply,
            }),
        )
        .await
        .map_err(|_| SwarmError::Dial {
            addr: addr.to_string(),
            reason: "no connection within 10s".into(),
        })??
    }

    /// Peers in the routing table or connected.
    pub async fn peers(&self) -> Result<Vec<KnownPeer>, SwarmError> {
        self.call(Command::Peers).await
    }

    /// Addresses this swarm listens on, with `/p2p/<peer id>`.
    pub async fn listening(&self) -> Result<Vec<Multiaddr>, SwarmError> {
        self.call(Command::Listening).await
    }

    /// Starts a Kademlia bootstrap (peer discovery) round.
    pub async fn bootstrap(&self) -> Result<(), SwarmError> {
        self.tx
            .send(Command::Bootstrap)
            .await
            .map_err(|_| SwarmError::Stopped)
    }

    /// Stops the actor.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// A handler's answer on its way back to the actor: to whom (and at which address), where,
/// what.
type Answer = (
    PeerId,
    Option<Host>,
    ResponseChannel<ControlResponse>,
    ControlResponse,
);
/// A refusal held back from a flooding peer ([`fair::SLOW_BUSY`]), on its way back.
type Refusal = (ResponseChannel<ControlResponse>, ControlResponse);

struct Actor {
    swarm: libp2p::Swarm<Behaviour>,
    rx: mpsc::Receiver<Command>,
    pending:
        HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<ControlResponse, SwarmError>>)>,
    dials: HashMap<PeerId, Vec<oneshot::Sender<Result<PeerId, SwarmError>>>>,
    listening: Vec<Multiaddr>,
    handler: Option<Handler>,
    inbound: Arc<Semaphore>,
    responses: (mpsc::Sender<Answer>, mpsc::Receiver<Answer>),
    /// Their own channel, so that held-back refusals never queue before honest answers.
    refusals: (mpsc::Sender<Refusal>, mpsc::Receiver<Refusal>),
    /// The address each connection came from, for the per-address share of control requests.
    hosts: HashMap<libp2p::swarm::ConnectionId, Host>,
    bootstrapped: bool,
    /// Each peer's share of the inbound control requests.
    share: fair::ControlShare<PeerId, Host>,
    /// Refusals being held back from peers that flood.
    slowed: usize,
    /// How far away each connected peer is, as the address of its last connection says: it may
    /// announce addresses no nearer than that ([`worth_keeping`]).
    seen: HashMap<PeerId, Scope>,
    /// [`SwarmLimits::accept_private_addresses`].
    accept_private: bool,
}

/// Gaps (seconds) between the extra Kademlia bootstraps a swarm makes after it starts.
const EARLY_BOOTSTRAPS: [u64; 4] = [2, 4, 8, 16];

impl Actor {
    async fn run(mut self, cancel: CancellationToken) {
        // Nodes that start together learn of each other only through a bootstrap made after
        // the others joined: repeat it early in life (2, 6, 14, 30 s), then Kademlia's own
        // periodic one (60 s) takes over.
        let mut early = EARLY_BOOTSTRAPS.iter().map(|s| Duration::from_secs(*s));
        let mut next = early.next().map(|d| Box::pin(tokio::time::sleep(d)));
        let mut tidy = tokio::time::interval(Duration::from_secs(5));
        tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(()) = futures::future::OptionFuture::from(next.as_mut()), if next.is_some() => {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    next = early.next().map(|d| Box::pin(tokio::time::sleep(d)));
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some((peer, host, channel, response)) = self.responses.1.recv() => {
                    self.share.done(peer, host);
                    let _ = self.swarm.behaviour_mut().control.send_response(channel, response);
                }
                Some((channel, response)) = self.refusals.1.recv() => {
                    self.slowed -= 1;
                    let _ = self.swarm.behaviour_mut().control.send_response(channel, response);
                }
                _ = tidy.tick() => self.tidy(Instant::now()),
                event = self.swarm.select_next_some() => self.event(event),
            }
        }
        tracing::debug!("swarm actor stopped");
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Request { peer, req, reply } => {
                let id = self.swarm.behaviour_mut().control.send_request(&peer, req);
                self.pending.insert(id, (peer, reply));
            }
            Command::Dial { addr, reply } => {
                let (bare, peer) = strip_p2p(&addr);
                let Some(peer) = peer else {
                    let _ = reply.send(Err(SwarmError::Dial {
                        addr: addr.to_string(),
                        reason: "the address must end in /p2p/<peer id>".into(),
                    }));
                    return;
                };
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                self.swarm.behaviour_mut().kad.add_address(&peer, bare);
                match self.swarm.dial(addr.clone()) {
                    Ok(()) => self.dials.entry(peer).or_default().push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(SwarmError::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Peers(reply) => {
                let mut peers: HashMap<PeerId, KnownPeer> = HashMap::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        let id = *entry.node.key.preimage();
                        peers.insert(
                            id,
                            KnownPeer {
                                peer_id: id.to_string(),
                                addrs: entry.node.value.iter().map(ToString::to_string).collect(),
                                connected: false,
                            },
                        );
                    }
                }
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for id in connected {
                    peers
                        .entry(id)
                        .or_insert_with(|| KnownPeer {
                            peer_id: id.to_string(),
                            addrs: Vec::new(),
                            connected: true,
                        })
                        .connected = true;
                }
                let mut list: Vec<KnownPeer> = peers.into_values().collect();
                list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(list);
            }
            Command::Listening(reply) => {
                let local = *self.swarm.local_peer_id();
                let _ = reply.send(
                    self.listening
                        .iter()
                        .map(|a| a.clone().with(Protocol::P2p(local)))
                        .collect(),
                );
            }
            Command::Bootstrap => {
                let _ = self.swarm.behaviour_mut().kad.bootstrap();
            }
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } if !self.listening.contains(&address) => {
                self.listening.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if let Some(ip) = limits::ip_of(endpoint.get_remote_address()) {
                    self.hosts.insert(connection_id, Host::of(ip));
                }
                match Scope::of(endpoint.get_remote_address()) {
                    Some(scope) => self.seen.insert(peer_id, scope),
                    None => self.seen.remove(&peer_id),
                };
                if let Some(waiters) = self.dials.remove(&peer_id) {
                    for w in waiters {
                        let _ = w.send(Ok(peer_id));
                    }
                }
                if !self.bootstrapped {
                    self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.hosts.remove(&connection_id);
                if num_established == 0 {
                    self.seen.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                if let Some(waiters) = self.dials.remove(&peer) {
                    for w in waiters {
                        let _ = w.send(Err(SwarmError::Dial {
                            addr: peer.to_string(),
                            reason: error.to_string(),
                        }));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let kad_proto = StreamProtocol::new(KAD_PROTOCOL);
                if info.protocols.contains(&kad_proto) {
                    let seen = self.seen.get(&peer_id).copied();
                    let kept = worth_keeping(&info.listen_addrs, seen, self.accept_private);
                    if kept.len() < info.listen_addrs.len() {
                        tracing::debug!(
                            peer = %peer_id,
                            announced = info.listen_addrs.len(),
                            kept = kept.len(),
                            "left out addresses a peer announced (unreachable, or nearer than the peer)"
                        );
                    }
                    for addr in kept {
                        let (bare, _) = strip_p2p(&addr);
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, bare);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Control(event)) => self.control(event),
            _ => {}
        }
    }

    /// Forgets peers idle lately.
    fn tidy(&mut self, now: Instant) {
        self.share.prune(now);
    }

    fn control(&mut self, event: request_response::Event<ControlRequest, ControlResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message,
            } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let busy = |m: &str| {
                        ControlResponse::Error(RemoteError {
                            code: ErrorCode::Busy,
                            message: m.into(),
                        })
                    };
                    let Some(handler) = self.handler.clone() else {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .control
                            .send_response(channel, busy("this peer answers no control requests"));
                        return;
                    };
                    let host = self.hosts.get(&connection_id).copied();
                    let refusal = match self.share.admit(peer, host, Instant::now()) {
                        fair::Admit::Yes => match self.inbound.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let tx = self.responses.0.clone();
                                tokio::spawn(async move {
                                    // A handler that panics still answers, and gives its
                                    // peer's place back.
                                    let handled = async move { handler(peer, request).await };
                                    let response = AssertUnwindSafe(handled)
                                        .catch_unwind()
                                        .await
                                        .unwrap_or_else(|_| {
                                            ControlResponse::Error(RemoteError {
                                                code: ErrorCode::Internal,
                                                message: "the request failed on this node".into(),
                                            })
                                        });
                                    drop(permit);
                                    let _ = tx.send((peer, host, channel, response)).await;
                                });
                                return;
                            }
                            Err(_) => {
                                self.share.done(peer, host);
                                "too many control requests"
                            }
                        },
                        fair::Admit::Busy(why) => why,
                        fair::Admit::BusyLater { why, started } => {
                            if started {
                                tracing::warn!(
                                    %peer,
                                    "{} control requests refused within {} s: its refusals wait \
                                     {} s each for the next {} s",
                                    fair::SLOW_AFTER,
                                    fair::WINDOW.as_secs(),
                                    fair::SLOW_BUSY.as_secs(),
                                    fair::SLOW_FOR.as_secs()
                                );
                            }
                            // Held back by a timer task; the streams a peer may open bound how
                            // many wait (and a refusal that cannot wait goes out now).
                            if self.slowed < MAX_SLOWED {
                                self.slowed += 1;
                                let tx = self.refusals.0.clone();
                                let answer = busy(why);
                                tokio::spawn(async move {
                                    tokio::time::sleep(fair::SLOW_BUSY).await;
                                    let _ = tx.send((channel, answer)).await;
                                });
                                return;
                            }
                            why
                        }
                    };
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .control
                        .send_response(channel, busy(refusal));
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((_, reply)) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some((_, reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(SwarmError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound control request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
