//! The composition root: opens the store, starts the swarm, the data plane, the admin server and
//! the scrub, and stops them in order.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use cairn_policy::scrub;
use cairn_wire::admin::{RUNTIME_FILE, RuntimeInfo};
use cairn_wire::daemon::{watch_pid, write_atomic};
use cairn_wire::data::{self, DataError};
use cairn_wire::protocol::{
    ControlRequest, ControlResponse, ErrorCode, MAX_HAS, MAX_LIST, MAX_SIGNED, NodeInfo,
    RemoteError, SignedManifest,
};
use cairn_wire::swarm::{Handler, Role, Swarm, SwarmError};

use crate::admin::{self, AdminState};
use crate::config::Checked;
use crate::data::Server;
use crate::metrics::NodeMetrics;
use crate::proofs::{Proofs, ProverError};
use crate::store::{Store, StoreConfig, StoreError};

/// RocksDB directory inside the data directory.
pub const DB_DIR: &str = "db";

/// Errors starting or stopping a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The swarm failed.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The data plane failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The storage-proof state could not be set up.
    #[error(transparent)]
    Proofs(#[from] ProverError),
    /// The identity is not an ed25519 key (Cairn signs receipts and proofs with ed25519).
    #[error("the node identity is not an ed25519 key: create a new one with `cairn-node init`")]
    NotEd25519,
    /// A file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A running node.
pub struct RunningNode {
    /// What it listens on.
    pub info: RuntimeInfo,
    /// The store (for in-process tests).
    pub store: Arc<Store>,
    /// The swarm handle.
    pub swarm: Swarm,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    data_dir: PathBuf,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn advertised(
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    libp2p_ip: Option<IpAddr>,
) -> SocketAddr {
    if let Some(a) = advertise {
        return a;
    }
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let ip = libp2p_ip
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    tracing::warn!(
        "network.data_listen is a wildcard address; advertising {ip}: set network.data_advertise for remote peers"
    );
    SocketAddr::new(ip, listen.port())
}

fn first_ip(addrs: &[libp2p::Multiaddr]) -> Option<IpAddr> {
    addrs.iter().find_map(|a| {
        a.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        })
    })
}

/// What a node says of itself that does not change while it runs.
#[derive(Debug, Clone)]
struct Fixed {
    peer: PeerId,
    label: Option<String>,
    data_addrs: Vec<SocketAddr>,
    data_dir: PathBuf,
    repairs: bool,
}

/// What the node says of itself now (the control plane's `Info`).
fn node_info(
    store: &Store,
    proofs: Option<&Arc<Proofs>>,
    fixed: &Fixed,
    listen: Vec<String>,
) -> NodeInfo {
    let s = store.stats();
    NodeInfo {
        peer_id: fixed.peer.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen,
        data_addrs: fixed.data_addrs.clone(),
        label: fixed.label.clone(),
        capacity: s.capacity,
        used: s.used,
        manifest_bytes: s.manifests,
        shards: s.shards,
        disk_room: s.disk_room(),
        faulty: proofs.map(|p| p.faulty_peers()).unwrap_or_default(),
        epoch_ms: proofs.map(|p| p.config().epochs.length_ms()),
        draining: crate::repair::drain::is_draining(&fixed.data_dir),
        repairs: fixed.repairs,
        spare: s.spare,
    }
}

/// Answers control requests. `listen` is filled once the swarm is listening.
fn control_handler(
    store: Arc<Store>,
    proofs: Option<Arc<Proofs>>,
    fixed: Arc<Fixed>,
    listen: Arc<std::sync::OnceLock<Vec<String>>>,
) -> Handler {
    Arc::new(move |from, req| {
        let store = store.clone();
        let fixed = fixed.clone();
        let proofs = proofs.clone();
        let listen = listen.get().cloned().unwrap_or_default();
        async move {
            let failure =
                |code, message: String| ControlResponse::Error(RemoteError { code, message });
            match req {
                ControlRequest::Info => {
                    ControlResponse::Info(node_info(&store, proofs.as_ref(), &fixed, listen))
                }
                ControlRequest::Has(cids) if cids.len() > MAX_HAS => failure(
                    ErrorCode::BadRequest,
                    format!("at most {MAX_HAS} CIDs per has request"),
                ),
                ControlRequest::Has(cids) => {
                    match tokio::task::spawn_blocking(move || store.has(&cids)).await {
                        Ok(Ok(v)) => ControlResponse::Has(v),
                        Ok(Err(e)) => failure(ErrorCode::Internal, e.to_string()),
                        Err(e) => failure(ErrorCode::Internal, e.to_string()),
                    }
                }
                ControlRequest::Signed { signer, .. } if signer.len() != 32 => failure(
                    ErrorCode::BadRequest,
                    format!(
                        "a signer is a 32-byte ed25519 key, not {} bytes",
                        signer.len()
                    ),
                ),
                ControlRequest::Signed { signer, limit } => {
                    let limit = limit.clamp(1, MAX_SIGNED) as usize;
                    match tokio::task::spawn_blocking(move || store.signed_by(&signer, limit)).await
                    {
                        Ok(Ok(v)) => ControlResponse::Signed(
                            v.into_iter()
                                .map(|(cid, time_ms, kind)| SignedManifest { cid, time_ms, kind })
                                .collect(),
                        ),
                        Ok(Err(e)) => failure(ErrorCode::Internal, e.to_string()),
                        Err(e) => failure(ErrorCode::Internal, e.to_string()),
                    }
                }
                req @ (ControlRequest::Commitment { .. }
                | ControlRequest::Prove { .. }
                | ControlRequest::AuditReceipts(_)
                | ControlRequest::Records { .. }) => match &proofs {
                    Some(p) => p.handle(from, req).await,
                    None => failure(
                        ErrorCode::BadRequest,
                        "this node does not take part in storage proofs (proofs.enabled = false)"
                            .into(),
                    ),
                },
                ControlRequest::List { after, limit } => {
                    let limit = limit.clamp(1, MAX_LIST) as usize;
                    match tokio::task::spawn_blocking(move || store.list(after.as_ref(), limit))
                        .await
                    {
                        Ok(Ok((items, more))) => ControlResponse::List {
                            shards: items
                                .into_iter()
                                .filter(|(_, _, bad)| !bad)
                                .map(|(c, n, _)| (c, n))
                                .collect(),
                            more,
                        },
                        Ok(Err(e)) => failure(ErrorCode::Internal, e.to_string()),
                        Err(e) => failure(ErrorCode::Internal, e.to_string()),
                    }
                }
            }
        }
        .boxed()
    })
}

/// `bytes` in GiB, for people.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

async fn scrub(store: Arc<Store>, rate: u64, start: Duration, cancel: CancellationToken) {
    if !scrub::enabled(rate) {
        return;
    }
    tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(start) => {} }
    let mut cursor = None;
    let mut pass_started = tokio::time::Instant::now();
    loop {
        let started = tokio::time::Instant::now();
        let s = store.clone();
        let step = tokio::task::spawn_blocking(move || s.scrub_step(cursor.as_ref(), rate)).await;
        let report = match step {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!("scrub failed: {e}");
                tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(scrub::AFTER_ERROR) => continue }
            }
            Err(_) => return,
        };
        for cid in &report.corrupt {
            tracing::error!(%cid, "scrub found a corrupt shard");
        }
        cursor = report.next;
        if cursor.is_none() {
            tracing::debug!(
                secs = pass_started.elapsed().as_secs(),
                "scrub pass complete"
            );
            pass_started = tokio::time::Instant::now();
        }
        let wait = scrub::rest(report.bytes, report.checked, started.elapsed(), rate);
        tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
    }
}

/// What signs the node's storage receipts, with its identity key.
fn leaser(keypair: &Keypair, cfg: &Checked) -> Result<Arc<crate::leases::Leaser>, std::io::Error> {
    let key = cairn_wire::keys::signing_key(keypair)
        .ok_or_else(|| std::io::Error::other("the node key is not an ed25519 key"))?;
    Ok(Arc::new(crate::leases::Leaser::new(
        key,
        cfg.proofs.epochs,
        cfg.config.proofs.lease_epochs,
    )))
}

impl RunningNode {
    /// Starts a node over `data_dir` with a checked configuration and its identity.
    pub async fn start(
        data_dir: &Path,
        cfg: &Checked,
        keypair: Keypair,
        watch: Option<u32>,
    ) -> Result<Self, NodeError> {
        let c = &cfg.config;
        let metrics = NodeMetrics::new();
        let store_cfg = StoreConfig {
            capacity: c.storage.capacity.0,
            sync_writes: c.storage.sync_writes,
            rocksdb_checksums: c.storage.rocksdb_checksums,
            disk_reserve: c.storage.disk_reserve.0,
        };
        let db = data_dir.join(DB_DIR);
        let store = {
            let m = metrics.store.clone();
            tokio::task::spawn_blocking(move || Store::open(&db, store_cfg, m))
                .await
                .map_err(|e| NodeError::Io {
                    what: "opening the store".into(),
                    source: std::io::Error::other(e),
                })??
        };
        let stats = store.stats();
        if let Some(room) = stats.disk_room()
            && stats.capacity.saturating_sub(stats.space().used) > room
        {
            tracing::warn!(
                "storage.capacity ({}) promises more than the disk holds: {} free, {} of it kept \
                 free (storage.disk_reserve); the node offers, and takes, only what the disk holds",
                gib(stats.capacity),
                gib(stats.disk_available.unwrap_or(0)),
                gib(stats.disk_reserve)
            );
        }
        let store = Arc::new(store);
        let cancel = CancellationToken::new();
        let peer = keypair.public().to_peer_id();
        let proofs = if c.proofs.enabled {
            let key = cairn_wire::keys::signing_key(&keypair).ok_or(NodeError::NotEd25519)?;
            Some(Proofs::new(
                key,
                cfg.proofs.clone(),
                store.clone(),
                data_dir,
                metrics.proofs.clone(),
            )?)
        } else {
            None
        };

        let endpoint = data::endpoint(
            &keypair,
            cfg.data_listen,
            Some(c.network.max_streams_per_peer),
        )?;
        let data_local = endpoint.local_addr().map_err(|source| NodeError::Io {
            what: "data-plane socket".into(),
            source,
        })?;
        let data_addr = advertised(data_local, cfg.data_advertise, first_ip(&cfg.listen));

        let admin_listener = tokio::net::TcpListener::bind(cfg.admin)
            .await
            .map_err(|source| NodeError::Io {
                what: format!("binding the admin HTTP server to {}", cfg.admin),
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| NodeError::Io {
                what: "admin socket".into(),
                source,
            })?;

        // The swarm needs the handler before it starts; the handler needs the listen addresses,
        // which are only known after: share them through a cell set right after start.
        let listen_cell: Arc<std::sync::OnceLock<Vec<String>>> =
            Arc::new(std::sync::OnceLock::new());
        let fixed = Arc::new(Fixed {
            peer,
            label: c.node.label.clone(),
            data_addrs: vec![data_addr],
            data_dir: data_dir.to_path_buf(),
            repairs: c.repair.enabled,
        });
        let handler = control_handler(
            store.clone(),
            proofs.clone(),
            fixed.clone(),
            listen_cell.clone(),
        );
        let swarm = Swarm::start(
            keypair.clone(),
            Role::Node,
            &cfg.listen,
            &cfg.bootstrap,
            Some(handler),
            format!("cairn-node/{}", env!("CARGO_PKG_VERSION")),
            cairn_wire::swarm::SwarmLimits {
                max_incoming: u32::try_from(c.network.max_connections).unwrap_or(u32::MAX),
                max_per_ip: u32::try_from(c.network.max_connections_per_ip).unwrap_or(u32::MAX),
                accept_private_addresses: c.network.accept_private_addresses,
            },
            cancel.child_token(),
        )
        .await?;
        let listen: Vec<String> = swarm
            .listening()
            .await?
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = listen_cell.set(listen.clone());

        let mut tasks = JoinSet::new();
        if let Some(p) = &proofs {
            // Audits read peers' shards (service probes) from the node's own endpoint.
            let client = data::Client::new(endpoint.clone(), keypair.clone(), 8);
            tasks.spawn(p.clone().run(swarm.clone(), client, cancel.child_token()));
        }
        let leaser = leaser(&keypair, cfg).map_err(|source| NodeError::Io {
            what: "the node key for storage receipts".into(),
            source,
        })?;
        let repairer = if c.repair.enabled {
            let info: crate::repair::InfoFn = {
                let (store, proofs, fixed) = (store.clone(), proofs.clone(), fixed.clone());
                let listen = listen.clone();
                Arc::new(move || node_info(&store, proofs.as_ref(), &fixed, listen.clone()))
            };
            let repairer = crate::repair::Repairer::new(
                peer,
                store.clone(),
                swarm.clone(),
                data::Client::new(endpoint.clone(), keypair.clone(), 8),
                leaser.clone(),
                c.repair.clone(),
                info,
                metrics.repair.clone(),
                data_dir,
            );
            tasks.spawn(repairer.clone().run(cancel.child_token()));
            Some(repairer)
        } else {
            None
        };
        let limits = crate::data::conns::Limits {
            max_connections: c.network.max_connections,
            max_per_ip: c.network.max_connections_per_ip,
            idle_timeout: c.network.idle_timeout.0,
            min_body_rate: c.network.min_body_rate.0,
        };
        let server = Server::new(store.clone(), metrics.clone(), leaser.clone(), limits);
        // A keeper that takes a new lease statement carries it to the shard holders at once.
        let _ = server.carrier.set(crate::holds::Carrier {
            swarm: swarm.clone(),
            data: data::Client::new(endpoint.clone(), keypair.clone(), 8),
            leaser,
        });
        let _ = server.data_dir.set(fixed.data_dir.clone());
        tasks.spawn(server.run(endpoint, cancel.child_token()));
        if c.leases.enabled {
            tasks.spawn(crate::gc::run(
                store.clone(),
                cfg.proofs.epochs,
                c.leases.grace_epochs,
                c.leases.gc_interval.0,
                metrics.gc.clone(),
                cancel.child_token(),
            ));
        }
        let state = AdminState {
            store: store.clone(),
            swarm: swarm.clone(),
            metrics: metrics.clone(),
            data_addrs: vec![data_addr],
            label: c.node.label.clone(),
            proofs: proofs.clone(),
            repair: repairer,
        };
        tasks.spawn(admin::serve(admin_listener, state, cancel.child_token()));
        tasks.spawn(scrub(
            store.clone(),
            c.storage.scrub_rate.0,
            Duration::from_secs(c.storage.scrub_start_secs),
            cancel.child_token(),
        ));
        if let Some(pid) = watch {
            tasks.spawn(watch_pid(pid, cancel.clone()));
        }

        let info = RuntimeInfo {
            pid: std::process::id(),
            peer_id: peer.to_string(),
            listen,
            data_addr,
            admin: admin_addr,
        };
        let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        write_atomic(&data_dir.join(RUNTIME_FILE), &json).map_err(|source| NodeError::Io {
            what: format!("writing {}", data_dir.join(RUNTIME_FILE).display()),
            source,
        })?;
        tracing::info!(
            target: "cairn::_events::started",
            peer = %info.peer_id,
            listen = ?info.listen,
            data = %info.data_addr,
            admin = %info.admin,
            "cairn-node running"
        );
        Ok(Self {
            info,
            store,
            swarm,
            cancel,
            tasks,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// A token that fires when the node stops (e.g. its watched process died).
    pub fn stopped(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops everything, flushes RocksDB, removes the runtime file.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.cancel.cancel();
        self.swarm.shutdown();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| NodeError::Io {
                what: "flushing the store".into(),
                source: std::io::Error::other(e),
            })??;
        let _ = std::fs::remove_file(self.data_dir.join(RUNTIME_FILE));
        tracing::info!(target: "cairn::_events::stopped", "cairn-node stopped cleanly");
        Ok(())
    }
}
