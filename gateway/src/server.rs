//! The running gateway: its start (catalog, key, network, listeners), the network refresh loop
//! and the periodic catalog export. S3 connections are in [`crate::http`], the admin API in
//! [`crate::admin`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::network::Network;
use cairn_client::put::PutOptions;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminState, serve_admin};
use crate::auth::AuthPolicy;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{CATALOG_DIR, Checked, KEY_FILE, RUNTIME_FILE};
use crate::host::Host;
use crate::http::serve_s3;
use crate::metrics::GatewayMetrics;
use crate::s3::Gateway;
use crate::s3::{ExportStatus, ReadSettings};

/// How often the gateway re-discovers the network (nodes that joined or left).
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The catalog could not be opened.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The network could not be joined.
    #[error(
        "cannot join the storage network: {0} (check `peers` in config.toml, or pass --peer / --devnet)"
    )]
    Network(String),
    /// The signing key could not be read or created.
    #[error("gateway key: {0}")]
    Key(String),
    /// A listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another process using it? change `{field}` or pass --{field})"
    )]
    Bind {
        /// Config field.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A replaced disk's catalog could not be brought back from the network.
    #[error("{0}")]
    Restore(String),
    /// Other I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What `gateway.json` holds while the gateway runs (read by `cairn devnet` and scripts).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// Process id.
    pub pid: u32,
    /// S3 endpoint URL.
    pub endpoint: String,
    /// S3 listen address.
    pub listen: SocketAddr,
    /// Admin API address.
    pub admin: SocketAddr,
    /// Hex ed25519 key the gateway signs manifests with.
    pub signer: String,
}

/// Reads `DIR/gateway.json`.
pub fn read_runtime_info(data_dir: &Path) -> std::io::Result<RuntimeInfo> {
    let bytes = std::fs::read(data_dir.join(RUNTIME_FILE))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A gateway serving S3 and its admin API.
pub struct RunningGateway {
    /// The S3 address actually bound.
    pub listen: SocketAddr,
    /// The admin address actually bound.
    pub admin: SocketAddr,
    /// The gateway (shared with the servers).
    pub gateway: Gateway,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    data_dir: PathBuf,
}

impl std::fmt::Debug for RunningGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningGateway")
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

fn load_or_create_key(path: &Path) -> Result<ed25519_dalek::SigningKey, StartError> {
    if path.exists() {
        cairn_client::keys::load(path).map_err(|e| StartError::Key(e.to_string()))
    } else {
        cairn_client::keys::generate(path).map_err(|e| StartError::Key(e.to_string()))
    }
}

/// Erasure parameters for new objects: the configured ones, else 4+2 (10+4 from 14 nodes), else
/// on a network too small for 4+2, as many data shards as fit beside 2 (or 1) parity shards;
/// objects up to `inline_kib` go whole into their manifest.
fn put_options(cfg: &Checked, nodes: usize) -> PutOptions {
    let mut o = PutOptions::for_network(nodes);
    o.params.inline_limit = u64::from(cfg.config.inline_kib) << 10;
    let e = &mut o.params.erasure;
    if nodes >= 2 && nodes < usize::from(e.k + e.m) {
        let m = if nodes >= 4 { 2 } else { 1 };
        e.m = m;
        e.k = nodes as u16 - m;
    }
    if cfg.config.k > 0 {
        o.params.erasure.k = u16::from(cfg.config.k);
        o.params.erasure.m = u16::from(cfg.config.m);
    }
    o
}

/// What to tell the operator when the network no longer suits the erasure parameters the
/// gateway chose at its start (`None` when they were configured, or still suit it).
fn erasure_advice(cfg: &Checked, nodes: usize, uses: (u16, u16)) -> Option<String> {
    if cfg.config.k > 0 {
        return None;
    }
    let e = put_options(cfg, nodes).params.erasure;
    let (k, m) = uses;
    if usize::from(k + m) > nodes {
        Some(format!(
            "new objects are written as {k}+{m} and need {} nodes, but only {nodes} answer: \
             writes fail until nodes return (restarting the gateway would pick {}+{})",
            k + m,
            e.k,
            e.m
        ))
    } else if (e.k, e.m) != uses {
        Some(format!(
            "the network has {nodes} nodes now, which suits {}+{}; new objects are still written \
             as {k}+{m}, chosen at the gateway's start: restart it, or set k and m in its config",
            e.k, e.m
        ))
    } else {
        None
    }
}

impl RunningGateway {
    /// Opens the catalog, joins the network and starts serving. `watch` makes the gateway exit
    /// when that process does.
    pub async fn start(
        data_dir: &Path,
        cfg: &Checked,
        watch: Option<u32>,
    ) -> Result<Self, StartError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::Io {
            what: format!("creating {}", data_dir.display()),
            source,
        })?;
        // A catalog that does not exist yet beside a key that does: the disk was replaced and
        // the identity kept, so the newest export is restored before serving.
        let fresh_catalog = !data_dir.join(CATALOG_DIR).exists();
        let kept_key = data_dir.join(KEY_FILE).exists();
        let catalog = Arc::new(Catalog::open(&data_dir.join(CATALOG_DIR))?);
        let key = load_or_create_key(&data_dir.join(KEY_FILE))?;
        let net = Network::connect(&cfg.peers)
            .await
            .map_err(|e| StartError::Network(e.to_string()))?;
        let metrics = GatewayMetrics::new();
        metrics.nodes.set(net.nodes().len() as i64);
        let opts = put_options(cfg, net.nodes().len());
        tracing::info!(
            nodes = net.nodes().len(),
            k = opts.params.erasure.k,
            m = opts.params.erasure.m,
            "joined the network"
        );
        let reads = ReadSettings {
            cache_bytes: u64::from(cfg.config.cache_mib) << 20,
            readahead_bytes: u64::from(cfg.config.readahead_mib) << 20,
        };
        let gateway = Gateway::new(net, catalog, key, opts, metrics, reads)
            .with_leases(cfg.leases)
            .with_min_part(u64::from(cfg.config.min_part_kib) << 10);
        if fresh_catalog
            && kept_key
            && let Err(e) = recover_catalog(&gateway).await
        {
            // Leave the disk as it was found, so the next start tries again.
            drop(gateway);
            let _ = std::fs::remove_dir_all(data_dir.join(CATALOG_DIR));
            return Err(e);
        }

        let s3_listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| StartError::Bind {
                field: "listen",
                addr: cfg.listen,
                source,
            })?;
        let admin_listener = tokio::net::TcpListener::bind(cfg.admin)
            .await
            .map_err(|source| StartError::Bind {
                field: "admin",
                addr: cfg.admin,
                source,
            })?;
        let listen = s3_listener.local_addr().map_err(|source| StartError::Io {
            what: "S3 listener".into(),
            source,
        })?;
        let admin = admin_listener
            .local_addr()
            .map_err(|source| StartError::Io {
                what: "admin listener".into(),
                source,
            })?;

        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(gateway.clone());
            b.set_auth(s3s::auth::SimpleAuth::from_single(
                cfg.config.access_key.clone(),
                cfg.config.secret_key.clone(),
            ));
            b.set_host(Host::new(&cfg.config.domain));
            // Ranges s3s cannot parse are served, once their signature is verified, by the
            // same gateway behind a service that checks none (see `compat::ClampedRange`).
            let mut unsigned = s3s::service::S3ServiceBuilder::new(gateway.clone());
            unsigned.set_host(Host::new(&cfg.config.domain));
            b.set_route(crate::compat::ClampedRange::new(unsigned.build()));
            b.build()
        };
        tasks.spawn(serve_s3(
            s3_listener,
            service,
            gateway.metrics().clone(),
            Arc::new(AuthPolicy::from_config(&cfg.config)),
            cancel.child_token(),
        ));
        let state = AdminState {
            gateway: gateway.clone(),
            token: Arc::from(cfg.config.secret_key.as_str()),
            public_reads: crate::admin::reads_are_public(&admin),
        };
        tasks.spawn(serve_admin(admin_listener, state, cancel.child_token()));
        tasks.spawn(refresh(gateway.clone(), cfg.clone(), cancel.child_token()));
        if let Some(pid) = watch {
            tasks.spawn(cairn_wire::daemon::watch_pid(pid, cancel.clone()));
        }
        // Runs with leases off too: it then only clears the catalog's notes.
        tasks.spawn(release_periodically(
            gateway.clone(),
            cfg.leases.every,
            cancel.child_token(),
        ));
        if cfg.leases.enabled() {
            tasks.spawn(renew_periodically(
                gateway.clone(),
                cfg.leases.every,
                cancel.child_token(),
            ));
        } else {
            tracing::warn!(
                "lease_term is 0s: the gateway takes no leases, so the nodes collect what it \
                 stores once its upload hold (proofs.lease_epochs) has passed"
            );
        }
        if cfg.config.export_every_secs > 0 {
            tasks.spawn(export_periodically(
                gateway.clone(),
                Duration::from_secs(u64::from(cfg.config.export_every_secs)),
                cancel.child_token(),
            ));
        }

        let info = RuntimeInfo {
            pid: std::process::id(),
            endpoint: format!("http://{listen}"),
            listen,
            admin,
            signer: cairn_chunker::manifest::hex(&gateway.signing_key().verifying_key().to_bytes()),
        };
        let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        let path = data_dir.join(RUNTIME_FILE);
        cairn_wire::daemon::write_atomic(&path, &json).map_err(|source| StartError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        tracing::info!(target: "cairn::_events::started", endpoint = %info.endpoint, admin = %admin, "cairn-gateway serving S3");
        Ok(Self {
            listen,
            admin,
            gateway,
            cancel,
            tasks,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// A token that stops the gateway when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs until the token is cancelled (by a signal, `watch`, or a caller), then stops.
    pub async fn wait(mut self) {
        self.cancel.cancelled().await;
        while self.tasks.join_next().await.is_some() {}
        let _ = std::fs::remove_file(self.data_dir.join(RUNTIME_FILE));
        tracing::info!(target: "cairn::_events::stopped", "cairn-gateway stopped cleanly");
    }

    /// Stops serving and waits for the servers to finish.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.wait().await;
    }
}

/// Restores the newest catalog export signed by this gateway's key. Finding none is normal for
/// a new gateway; finding one that cannot be restored stops the start, because serving (and
/// soon exporting) an empty catalog would hide the real one.
async fn recover_catalog(gateway: &Gateway) -> Result<(), StartError> {
    let found = gateway
        .latest_export()
        .await
        .map_err(|e| StartError::Restore(format!("looking for earlier catalog exports: {e}")))?;
    let Some(cid) = found else {
        tracing::info!("new catalog: no earlier export signed by this gateway's key was found");
        return Ok(());
    };
    tracing::info!(%cid, "empty catalog beside a kept gateway.key: restoring the newest export");
    let report = gateway.restore(&cid).await.map_err(|e| {
        StartError::Restore(format!(
            "restoring catalog export {cid}: {e}; fix the network and start again, or start with \
             a new data directory and no gateway.key to begin an empty catalog"
        ))
    })?;
    gateway.note_export(ExportStatus {
        cid: cid.to_string(),
        time_ms: crate::s3::now_ms(),
        objects: report.objects,
        generation: gateway.catalog().generation(),
    });
    tracing::info!(%cid, objects = report.objects, buckets = report.buckets.len(), "catalog restored");
    Ok(())
}

/// Exports the catalog every `every` when it changed since the last export.
async fn export_periodically(gateway: Gateway, every: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let generation = gateway.catalog().generation();
        if gateway
            .last_export()
            .is_some_and(|e| e.generation == generation)
            || (generation == 0 && gateway.last_export().is_none())
        {
            continue;
        }
        match gateway.export().await {
            Ok(_) => {
                gateway.metrics().exports.inc();
            }
            Err(e) => {
                gateway.metrics().export_failures.inc();
                tracing::warn!("automatic catalog export failed (will retry): {e}");
            }
        }
    }
}

/// Renews, at once and then every `every`, the leases on every CID the catalog references
/// and on its last exports, where they end within half a term (all of them on the first pass,
/// since a new process knows of no renewal).
async fn renew_periodically(gateway: Gateway, every: Duration, cancel: CancellationToken) {
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
        first = false;
        // After a restart the newest export is known only to the network.
        gateway.know_latest_export().await;
        let read_at = crate::s3::now_ms();
        let cids = match gateway.referenced().await {
            Ok(c) => c,
            Err(e) => {
                gateway.metrics().lease_failures.inc();
                tracing::warn!("lease renewal could not read the catalog (will retry): {e}");
                continue;
            }
        };
        let total = cids.len();
        let renewed = tokio::select! {
            _ = cancel.cancelled() => return,
            n = gateway.renew_leases(cids, false, Some(read_at)) => n,
        };
        tracing::info!(referenced = total, renewed, "lease renewal pass");
    }
}

/// Releases what the catalog stopped referencing, in sweeps (see `s3::release`).
async fn release_periodically(gateway: Gateway, every: Duration, cancel: CancellationToken) {
    let mut pause = crate::s3::release_pause(every, Duration::ZERO);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let started = std::time::Instant::now();
        let swept = tokio::select! {
            _ = cancel.cancelled() => return,
            s = gateway.release_unreferenced() => s,
        };
        match swept {
            Ok(s) if s.released + s.referenced + s.dropped + s.failed > 0 => tracing::info!(
                target: "cairn::_events::release",
                released = s.released,
                referenced_again = s.referenced,
                dropped = s.dropped,
                failed = s.failed,
                deferred = s.deferred,
                pending = s.pending,
                "release sweep: leases on deleted and overwritten objects ended"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(
                "the release sweep failed (deleted objects stay leased until it works; it \
                 retries): {e}"
            ),
        }
        pause = crate::s3::release_pause(every, started.elapsed());
    }
}

/// Refreshes the view of the network periodically so nodes that joined or left are seen. The
/// refresh keeps the QUIC connections (and their congestion state) and the shard locations;
/// only if no known node answers does it join again from the configured peers.
async fn refresh(gateway: Gateway, cfg: Checked, cancel: CancellationToken) {
    let mut advised = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
        let current = gateway.net().await;
        let fresh = match current.refresh().await {
            Ok(net) => Ok(net),
            Err(e) => {
                tracing::warn!(
                    "no known node answered ({e}); joining again from the configured peers"
                );
                Network::connect(&cfg.peers).await
            }
        };
        drop(current);
        match fresh {
            Ok(net) => {
                let before = gateway.net().await.nodes().len();
                if net.nodes().len() != before {
                    tracing::info!(before, now = net.nodes().len(), "network view changed");
                }
                gateway.metrics().nodes.set(net.nodes().len() as i64);
                let e = gateway.options().params.erasure;
                let advice = erasure_advice(&cfg, net.nodes().len(), (e.k, e.m));
                if advice.is_some() && advice != advised {
                    tracing::warn!("{}", advice.as_deref().unwrap_or_default());
                }
                advised = advice;
                gateway.set_net(net).await;
            }
            Err(e) => tracing::warn!("network refresh failed (keeping the previous view): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_hears_when_the_network_outgrows_the_erasure_parameters() {
        let mut config = crate::config::Config::new_random().unwrap();
        config.peers = vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()];
        let cfg = config.check().unwrap();
        // Started on 6 nodes: 4+2, which still suits 6 to 13 nodes.
        assert_eq!(erasure_advice(&cfg, 6, (4, 2)), None);
        assert_eq!(erasure_advice(&cfg, 13, (4, 2)), None);
        let grown = erasure_advice(&cfg, 14, (4, 2)).unwrap();
        assert!(
            grown.contains("suits 10+4") && grown.contains("restart"),
            "{grown}"
        );
        let shrunk = erasure_advice(&cfg, 5, (4, 2)).unwrap();
        assert!(shrunk.contains("writes fail"), "{shrunk}");
        // Configured parameters are the operator's choice: nothing to say.
        let mut fixed = cfg.clone();
        fixed.config.k = 4;
        fixed.config.m = 2;
        assert_eq!(erasure_advice(&fixed, 14, (4, 2)), None);
    }
}
