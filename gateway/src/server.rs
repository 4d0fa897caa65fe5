//! The running gateway: S3 over HTTP, the admin API, and the network refresh loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_chunker::Cid;
use cairn_client::network::Network;
use cairn_client::put::PutOptions;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError};
use crate::config::{CATALOG_DIR, Checked, KEY_FILE, RUNTIME_FILE};
use crate::host::Host;
use crate::metrics::GatewayMetrics;
use crate::s3::Gateway;
use crate::s3::{ExportStatus, ReadSettings};
use crate::stall::{SEND_STALL_TIMEOUT, Watched};

/// How often the gateway re-discovers the network (nodes that joined or left).
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Time an S3 client has to send a request's head (request line and headers), counted from when
/// the gateway starts waiting for it, so an idle keep-alive connection is closed after this too.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
/// on a network too small for 4+2, as many data shards as fit beside 2 (or 1) parity shards.
fn put_options(cfg: &Checked, nodes: usize) -> PutOptions {
    let mut o = PutOptions::for_network(nodes);
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
        let gateway = Gateway::new(net, catalog, key, opts, metrics, reads);
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
            b.build()
        };
        tasks.spawn(serve_s3(
            s3_listener,
            service,
            gateway.metrics().clone(),
            cancel.child_token(),
        ));
        let state = AdminState {
            gateway: gateway.clone(),
            token: Arc::from(cfg.config.secret_key.as_str()),
        };
        tasks.spawn(serve_admin(admin_listener, state, cancel.child_token()));
        tasks.spawn(refresh(gateway.clone(), cfg.clone(), cancel.child_token()));
        if let Some(pid) = watch {
            tasks.spawn(cairn_node::node::watch_pid(pid, cancel.clone()));
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
        cairn_node::node::write_atomic(&path, &json).map_err(|source| StartError::Io {
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

/// An error answer, logged (client errors at debug, the gateway's own failures as warnings) and
/// given a message that says what to do where s3s sent none (see [`crate::error::explain`]).
/// s3s's own logging of these is turned off (`cairn-gateway`'s log filter), because it logs a
/// client's bad signature or bucket name as an ERROR of the gateway.
fn explained(
    resp: http::Response<s3s::Body>,
    method: &http::Method,
    path: &str,
) -> http::Response<s3s::Body> {
    let status = resp.status();
    let (mut parts, body) = resp.into_parts();
    let Some((doc, new_body)) = body.bytes().and_then(|b| crate::error::explain(&b)) else {
        if status.is_server_error() {
            tracing::warn!(%method, path, %status, "S3 request failed");
        }
        return http::Response::from_parts(parts, body);
    };
    let message = doc.message.as_deref().unwrap_or("");
    if status.is_server_error() {
        tracing::warn!(%method, path, %status, code = %doc.code, "S3 request failed: {message}");
    } else {
        tracing::debug!(%method, path, %status, code = %doc.code, "S3 request refused: {message}");
    }
    match new_body {
        Some(new_body) => {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            http::Response::from_parts(parts, s3s::Body::from(new_body))
        }
        None => http::Response::from_parts(parts, body),
    }
}

/// `POST /bucket/key?uploadId=…` without a part number: CompleteMultipartUpload.
fn is_complete_multipart<B>(req: &http::Request<B>) -> bool {
    let query = req.uri().query().unwrap_or_default();
    let has = |name: &str| {
        query
            .split('&')
            .any(|kv| kv.split('=').next() == Some(name))
    };
    req.method() == http::Method::POST && has("uploadId") && !has("partNumber")
}

/// A response body passed through unchanged, except for one repair on CompleteMultipartUpload.
///
/// Complete answers 200 at once and sends whitespace until its result is ready (see
/// `Gateway::complete_multipart_upload`). When it fails at that point, s3s 0.14.1 sends its
/// error document with a second `<?xml …?>` declaration after the one that opened the body,
/// which is not well-formed XML: aws-sdk and botocore then see an unparseable body instead of
/// the S3 error code. `repair` drops a declaration that opens any frame but the first.
struct OneXmlDeclaration {
    inner: s3s::Body,
    repair: bool,
    first: bool,
}

impl OneXmlDeclaration {
    fn new(inner: s3s::Body, repair: bool) -> Self {
        Self {
            inner,
            repair,
            first: true,
        }
    }
}

impl hyper::body::Body for OneXmlDeclaration {
    type Data = bytes::Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        let Some(Ok(frame)) = polled else {
            return std::task::Poll::Ready(polled);
        };
        if !self.repair {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        let frame = match frame.into_data() {
            Ok(data) if !std::mem::replace(&mut self.first, false) => {
                hyper::body::Frame::data(without_declaration(data))
            }
            Ok(data) => hyper::body::Frame::data(data),
            Err(other) => other,
        };
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.repair {
            // A repair shortens the body.
            hyper::body::SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

/// `data` without a leading `<?xml …?>` declaration.
fn without_declaration(data: bytes::Bytes) -> bytes::Bytes {
    if data.starts_with(b"<?xml")
        && let Some(end) = data.windows(2).position(|w| w == b"?>")
    {
        return data.slice(end + 2..);
    }
    data
}

/// Counts an S3 connection in the `connections` gauge for as long as it lives.
struct OpenConnection(Arc<GatewayMetrics>);

impl OpenConnection {
    fn new(metrics: Arc<GatewayMetrics>) -> Self {
        metrics.connections.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

async fn serve_s3(
    listener: tokio::net::TcpListener,
    service: s3s::service::S3Service,
    metrics: Arc<GatewayMetrics>,
    cancel: CancellationToken,
) {
    let mut http = ConnBuilder::new(TokioExecutor::new());
    // hyper enforces no header timeout without a timer: a client that opened connections and
    // never finished a request would hold each one (a socket and a task) forever.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some(socket) = cairn_node::admin::accept(&listener, &cancel, "S3").await {
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let counted_metrics = metrics.clone();
        let counted =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let complete = is_complete_multipart(&req);
                let (method, path) = (req.method().clone(), req.uri().path().to_owned());
                let fut = hyper::service::Service::call(&service, req);
                let metrics = counted_metrics.clone();
                async move {
                    let resp = fut.await;
                    if resp.as_ref().map_or(true, |r| r.status().as_u16() >= 400) {
                        metrics.errors.inc();
                    }
                    if resp.as_ref().map_or(true, |r| r.status().is_server_error()) {
                        metrics.server_errors.inc();
                    }
                    resp.map(|r| {
                        let r = if r.status().as_u16() >= 400 {
                            explained(r, &method, &path)
                        } else {
                            r
                        };
                        r.map(|body| OneXmlDeclaration::new(body, complete))
                    })
                }
            });
        let (http, watcher) = (http.clone(), graceful.watcher());
        let open = OpenConnection::new(metrics.clone());
        tokio::spawn(async move {
            let metrics = open.0.clone();
            // hyper first reads to tell HTTP/1 from HTTP/2, with no deadline of its own: a
            // connection that never sends a byte is dropped here instead.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(HEADER_READ_TIMEOUT, socket.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                return;
            }
            // A client that stops reading its response would hold the connection, its task and
            // the response's read-ahead forever: it gets SEND_STALL_TIMEOUT.
            let (socket, progress) = Watched::new(socket);
            let conn = watcher.watch(
                http.serve_connection(TokioIo::new(socket), counted)
                    .into_owned(),
            );
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("S3 connection ended: {e}");
                },
                () = progress.stalled(SEND_STALL_TIMEOUT) => {
                    tracing::info!(
                        "closing an S3 connection: its client has read nothing for {}s",
                        SEND_STALL_TIMEOUT.as_secs()
                    );
                    metrics.stalled_clients.inc();
                }
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("S3 connections still open after 10s; closing"),
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

#[derive(Clone)]
struct AdminState {
    gateway: Gateway,
    token: Arc<str>,
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
        Err(Box::new(admin_error(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer <secret_key from the gateway's config.toml>`",
        )))
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

async fn import(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Json(req): Json<ImportRequest>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
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

async fn export(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    match s.gateway.export().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => gateway_error(e),
    }
}

async fn restore(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Json(req): Json<RestoreRequest>,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
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

async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AdminState,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        // A dataset's ETags come with its import: room for a few hundred thousand files.
        .route(
            "/import",
            post(import).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/export", post(export))
        .route("/restore", post(restore))
        .with_state(state);
    cairn_node::admin::serve_router(listener, app, cancel).await;
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

    #[test]
    fn only_complete_multipart_is_repaired() {
        let req = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
        };
        assert!(is_complete_multipart(&req("POST", "/b/k?uploadId=abc")));
        assert!(is_complete_multipart(&req("POST", "/b/k?x=1&uploadId")));
        assert!(!is_complete_multipart(&req("POST", "/b/k?uploads")));
        assert!(!is_complete_multipart(&req("POST", "/b/k?uploadIdx=1")));
        assert!(!is_complete_multipart(&req(
            "PUT",
            "/b/k?partNumber=2&uploadId=abc"
        )));
        assert!(!is_complete_multipart(&req("GET", "/b/k?uploadId=abc")));
        assert!(!is_complete_multipart(&req("POST", "/b?delete")));
    }

    #[test]
    fn a_declaration_is_dropped_only_where_it_opens_the_data() {
        let decl =
            bytes::Bytes::from_static(b"<?xml version=\"1.0\"?><Error><Code>X</Code></Error>");
        assert_eq!(
            &without_declaration(decl)[..],
            b"<Error><Code>X</Code></Error>"
        );
        let plain = bytes::Bytes::from_static(b"<Result>?></Result>");
        assert_eq!(without_declaration(plain.clone()), plain);
        let unterminated = bytes::Bytes::from_static(b"<?xml version");
        assert_eq!(without_declaration(unterminated.clone()), unterminated);
    }
}
