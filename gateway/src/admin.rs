//! The gateway's admin API: `/health`, `/metrics`, `/status`, and `POST /import|/export|/restore`.
//!
//! # Who may call what
//!
//! The token is the `secret_key` of the gateway's `config.toml`, sent as
//! `Authorization: Bearer <secret_key>`.
//!
//! - `/health` answers anyone, always: it says only `ok` (for load balancers and supervisors).
//! - `POST /import`, `/export` and `/restore` change the catalog or publish it: they always need
//!   the token. It is checked before anything else about the request, by a layer in front of
//!   the handlers: a caller without it gets 401 whatever it sent, and its body is not read, let
//!   alone parsed (so it learns nothing from parse errors).
//! - `/metrics` and `/status` show the gateway's signing key, its nodes, its erasure
//!   parameters, its traffic and the CID of its last export (from which anyone on the network
//!   can read every bucket and key name). They answer without the token only when the admin
//!   listener is bound to a loopback address (127.0.0.0/8, `::1`; the default is
//!   127.0.0.1:9001), which only processes on the gateway's own machine reach. Bound anywhere
//!   else (`0.0.0.0`, `::`, a LAN address) they need the token too; Prometheus sends it with
//!   `authorization: {credentials: <secret_key>}` (type Bearer) in the scrape config. The
//!   choice follows the address actually bound ([`reads_are_public`]); there is no setting to
//!   open them on a public address. Even on loopback, a request whose `Host` is not a loopback
//!   name needs the token, so a web page that rebinds its domain to 127.0.0.1 reads nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Json, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_chunker::Cid;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::s3::Gateway;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) gateway: Gateway,
    pub(crate) token: Arc<str>,
    /// `/metrics` and `/status` answer without the token: [`reads_are_public`] of the address
    /// the admin listener is bound to.
    pub(crate) public_reads: bool,
}

/// Whether `/metrics` and `/status` answer without the token on an admin listener bound to
/// `addr`: only on a loopback address (127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`), which
/// only the gateway's own machine reaches. Unspecified addresses (`0.0.0.0`, `::`) listen on
/// every interface, so they are not.
pub fn reads_are_public(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// `POST /import` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRequest {
    /// Bucket (created if missing).
    pub bucket: String,
    /// Key prefix for a dataset's paths.
    #[serde(default)]
    pub prefix: String,
    /// Key for a single object (default: the prefix).
    #[serde(default)]
    pub key: Option<String>,
    /// Object or dataset CID.
    pub cid: String,
    /// MD5s (hex) the uploader computed, shown as the S3 ETags: by dataset path, or under `""`
    /// for a single object. Files without one get their BLAKE3 as ETag.
    #[serde(default)]
    pub etags: BTreeMap<String, String>,
}

/// `POST /restore` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// CID of a catalog export.
    #[serde(default)]
    pub cid: Option<String>,
    /// Restore the newest export signed by this gateway's key instead.
    #[serde(default)]
    pub latest: bool,
}

fn admin_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison of the token.
    let ok = given.is_some_and(|g| {
        g.len() == state.token.len()
            && g.bytes()
                .zip(state.token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        let mut r = admin_error(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer <secret_key from the gateway's config.toml>`",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Box::new(r))
    }
}

/// The layer in front of `/metrics` and `/status` on a loopback listener: they answer without
/// the token only a request that names a loopback host (`localhost`, `127.0.0.1`, `[::1]`, with
/// or without a port) or none. A web page in a browser on the gateway's machine can have its
/// own domain resolve to 127.0.0.1 (DNS rebinding) and so reach the port, but its requests then
/// carry that domain as `Host`: they need the token.
async fn loopback_host_or_token(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("?"));
    if host.is_none_or(is_loopback_host) {
        return next.run(req).await;
    }
    match authorized(&s, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => *r,
    }
}

/// Whether a `Host` header names this machine by a loopback name or address.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]` or `[::1]:9001`.
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The layer in front of every route that needs the token: a request without it is answered
/// 401 here, before its handler (and so before its body is read or parsed).
async fn require_token(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    match authorized(&s, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(r) => *r,
    }
}

fn parse_cid(s: &str) -> Result<Cid, Box<Response>> {
    s.parse().map_err(|e| {
        Box::new(admin_error(
            StatusCode::BAD_REQUEST,
            format!("{s:?} is not a CID: {e}"),
        ))
    })
}

fn gateway_error(e: crate::error::Error) -> Response {
    admin_error(e.status(), e)
}

async fn import(State(s): State<AdminState>, Json(req): Json<ImportRequest>) -> Response {
    let cid = match parse_cid(&req.cid) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match s
        .gateway
        .import(
            &req.bucket,
            &req.prefix,
            req.key.as_deref(),
            &cid,
            &req.etags,
        )
        .await
    {
        Ok(report) => Json(report).into_response(),
        Err(e) => gateway_error(e),
    }
}

async fn export(State(s): State<AdminState>) -> Response {
    match s.gateway.export().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => gateway_error(e),
    }
}

async fn restore(State(s): State<AdminState>, Json(req): Json<RestoreRequest>) -> Response {
    let cid = match (&req.cid, req.latest) {
        (Some(c), false) => match parse_cid(c) {
            Ok(c) => c,
            Err(r) => return *r,
        },
        (None, true) => match s.gateway.latest_export().await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return admin_error(
                    StatusCode::NOT_FOUND,
                    "no catalog export signed by this gateway's key was found on the network",
                );
            }
            Err(e) => return gateway_error(e),
        },
        _ => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "send {\"cid\": \"bafy...\"} or {\"latest\": true}",
            );
        }
    };
    match s.gateway.restore(&cid).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => gateway_error(e),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        {
            s.gateway.metrics().observe_cache(s.gateway.cache().stats());
            s.gateway.metrics().render()
        },
    )
        .into_response()
}

async fn status(State(s): State<AdminState>) -> Response {
    let net = s.gateway.net().await;
    let nodes: Vec<String> = net.nodes().iter().map(|n| n.peer().to_string()).collect();
    let e = &s.gateway.options().params.erasure;
    Json(serde_json::json!({
        "nodes": nodes,
        "k": e.k,
        "m": e.m,
        "signer": cairn_chunker::manifest::hex(&s.gateway.signing_key().verifying_key().to_bytes()),
        "last_export": s.gateway.last_export(),
        "catalog_generation": s.gateway.catalog().generation(),
    }))
    .into_response()
}

pub(crate) async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AdminState,
    cancel: CancellationToken,
) {
    let token = from_fn_with_state(state.clone(), require_token);
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status));
    let reads = if state.public_reads {
        reads.route_layer(from_fn_with_state(state.clone(), loopback_host_or_token))
    } else {
        reads.route_layer(token.clone())
    };
    let changes = Router::new()
        // A dataset's ETags come with its import: room for a few hundred thousand files.
        .route(
            "/import",
            post(import).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/export", post(export))
        .route("/restore", post(restore))
        .route_layer(token);
    tracing::info!(
        public_reads = state.public_reads,
        "admin API: /metrics and /status {}",
        if state.public_reads {
            "answer without the token (loopback listener)"
        } else {
            "need the bearer token (the listener is not on a loopback address)"
        }
    );
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .merge(reads)
        .merge(changes)
        .with_state(state);
    cairn_wire::daemon::serve_router(listener, app, cancel).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_hosts_read_without_the_token() {
        for host in [
            "localhost",
            "LOCALHOST:9001",
            "127.0.0.1",
            "127.0.0.1:9001",
            "127.8.9.1:1",
            "[::1]",
            "[::1]:9001",
        ] {
            assert!(super::is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9001",
            "10.0.0.5:9001",
            "[::2]:9001",
            "localhost.evil.example",
            "",
            "?",
        ] {
            assert!(!super::is_loopback_host(host), "{host}");
        }
    }

    use super::*;

    #[test]
    fn only_loopback_listeners_serve_metrics_and_status_without_the_token() {
        for public in [
            "127.0.0.1:9001",
            "127.5.6.7:0",
            "[::1]:9001",
            "[::ffff:127.0.0.1]:9001",
        ] {
            assert!(reads_are_public(&public.parse().unwrap()), "{public}");
        }
        for private in [
            "0.0.0.0:9001",
            "[::]:9001",
            "10.0.0.5:9001",
            "192.168.1.20:9001",
            "203.0.113.7:9001",
            "[2001:db8::1]:9001",
            "[::ffff:10.0.0.5]:9001",
        ] {
            assert!(!reads_are_public(&private.parse().unwrap()), "{private}");
        }
    }
}
