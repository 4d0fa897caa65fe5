//! The node's admin HTTP server: `GET /health`, `GET /metrics` (Prometheus text), `GET /status`
//! (JSON, [`cairn_wire::admin::Status`]), `GET /proofs` (JSON: this node's commitment and its
//! ledger's records of its peers), `GET /drain` (JSON: how far a drain is,
//! [`crate::repair::drain::DrainStatus`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use cairn_wire::admin::{PeerStatus, Status};
use cairn_wire::daemon::serve_router;
use cairn_wire::swarm::Swarm;
use tokio_util::sync::CancellationToken;

use crate::metrics::NodeMetrics;
use crate::store::Store;

/// Everything the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Arc<Store>,
    /// The swarm.
    pub swarm: Swarm,
    /// Metrics.
    pub metrics: Arc<NodeMetrics>,
    /// Data-plane addresses.
    pub data_addrs: Vec<SocketAddr>,
    /// Label.
    pub label: Option<String>,
    /// Storage proofs, when enabled.
    pub proofs: Option<Arc<crate::proofs::Proofs>>,
    /// Repair (and drain), when enabled.
    pub repair: Option<Arc<crate::repair::Repairer>>,
}

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let peers = s.swarm.peers().await.unwrap_or_default();
    let connected = peers.iter().filter(|p| p.connected).count();
    if let Some(p) = &s.proofs {
        s.metrics.proofs.set_scores(&p.records(None));
    }
    let body = s.metrics.render(s.store.stats(), connected, peers.len());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn status(State(s): State<AdminState>) -> Response {
    let (Ok(peers), Ok(listen)) = (s.swarm.peers().await, s.swarm.listening().await) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "network task stopped\n").into_response();
    };
    let stats = s.store.stats();
    Json(Status {
        peer_id: s.swarm.local_peer_id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen: listen.iter().map(ToString::to_string).collect(),
        data_addrs: s.data_addrs.clone(),
        label: s.label.clone(),
        capacity: stats.capacity,
        used: stats.used,
        manifest_bytes: stats.manifests,
        free: stats.free(),
        disk_available: stats.disk_available,
        disk_reserve: stats.disk_reserve,
        shards: stats.shards,
        connected_peers: peers.iter().filter(|p| p.connected).count(),
        peers: peers.into_iter().map(PeerStatus::from).collect(),
    })
    .into_response()
}

async fn proofs(State(s): State<AdminState>) -> Response {
    let Some(p) = &s.proofs else {
        return (
            StatusCode::NOT_FOUND,
            "storage proofs are off on this node (proofs.enabled = false)\n",
        )
            .into_response();
    };
    let epoch = p.epoch();
    let commitment = match p.commitment(epoch).await {
        Ok(c) => serde_json::json!({
            "epoch": c.commitment.epoch,
            "digest": c.commitment.digest().to_string(),
            "shards": c.commitment.count,
            "bytes": c.commitment.bytes,
            "declared": c.commitment.declared.iter().map(crate::proofs::shard_cid).collect::<Vec<_>>(),
            "recovered": c.commitment.recovered.iter().map(crate::proofs::shard_cid).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    Json(serde_json::json!({
        "peer_id": s.swarm.local_peer_id().to_string(),
        "epoch": epoch,
        "epoch_ms": p.config().epochs.length_ms(),
        "commitment": commitment,
        "records": p.records(None),
    }))
    .into_response()
}

async fn drain(State(s): State<AdminState>) -> Response {
    match &s.repair {
        Some(r) => Json(r.drain_status()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "repair is off on this node (repair.enabled = false): it cannot count a drain\n",
        )
            .into_response(),
    }
}

/// Serves the admin API on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/proofs", get(proofs))
        .route("/drain", get(drain))
        .with_state(state);
    serve_router(listener, app, cancel).await;
}
