//! A devnet of real `cairn-node` processes with a real `cairn-gateway`, and a real `aws-sdk-s3`
//! client pointed at it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use cairn_client::devnet::{Devnet, DevnetConfig, DevnetGateway};
use cairn_testkit::process::KillOnDrop;
use cairn_testkit::wait::Deadline;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `cairn-gateway` binary; `cairn-node` and `cairn` must have been built beside it.
pub(crate) fn gateway_bin() -> PathBuf {
    cairn_testkit::bins::sibling("cairn-node");
    cairn_testkit::bins::sibling("cairn");
    PathBuf::from(env!("CARGO_BIN_EXE_cairn-gateway"))
}

/// A devnet with a gateway in a temporary directory. Every process working in the directory
/// (nodes, the devnet's gateway, gateways a test runs on a data directory inside it) is killed
/// when this is dropped, also when the test panics.
pub(crate) struct Net {
    // First, so the processes are gone before their directory is removed.
    cleanup: KillOnDrop,
    pub(crate) devnet: Devnet,
    pub(crate) dir: tempfile::TempDir,
}

impl Net {
    /// `nodes` storage nodes and a gateway on a free port.
    pub(crate) async fn start(nodes: usize) -> Net {
        Self::start_with(nodes, "8GiB").await
    }

    /// `nodes` storage nodes run with `node_args`, and no gateway (tests run their own with
    /// [`init_gateway`] and [`run_gateway`]).
    pub(crate) async fn start_nodes(nodes: usize, node_args: &[&str]) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let cleanup = KillOnDrop::mentioning(dir.path());
        let bin = gateway_bin();
        let devnet = Devnet::start(DevnetConfig {
            nodes,
            dir: dir.path().join("net"),
            node_binary: bin.with_file_name("cairn-node"),
            capacity: "8GiB".into(),
            converge_timeout: Duration::from_secs(60),
            gateway: None,
            node_args: node_args.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .unwrap();
        Net {
            cleanup,
            devnet,
            dir,
        }
    }

    /// Like [`Net::start`], each node with `capacity`.
    pub(crate) async fn start_with(nodes: usize, capacity: &str) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let cleanup = KillOnDrop::mentioning(dir.path());
        let bin = gateway_bin();
        let devnet = Devnet::start(DevnetConfig {
            nodes,
            dir: dir.path().join("net"),
            node_binary: bin.with_file_name("cairn-node"),
            capacity: capacity.into(),
            converge_timeout: Duration::from_secs(60),
            gateway: Some((bin, 0)),
            node_args: Vec::new(),
        })
        .await
        .unwrap();
        Net {
            cleanup,
            devnet,
            dir,
        }
    }

    pub(crate) fn gateway(&self) -> &DevnetGateway {
        self.devnet
            .state
            .gateway
            .as_ref()
            .expect("the devnet runs a gateway")
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.gateway().endpoint
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap()
    }

    /// An S3 client with the devnet's credentials (path-style).
    pub(crate) fn s3(&self) -> Client {
        let gw = self.gateway();
        client(&gw.endpoint, &gw.access_key, &gw.secret_key, true)
    }

    pub(crate) fn devnet_dir(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    /// Runs the `cairn` CLI against this devnet.
    pub(crate) fn cairn(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(gateway_bin().with_file_name("cairn"))
            .args(args)
            .env("CAIRN_DEVNET", self.devnet_dir())
            .env("CAIRN_KEY", self.dir.path().join("uploader.key"))
            .output()
            .unwrap()
    }

    /// [`Net::cairn`], which must succeed (its stderr is the failure message).
    pub(crate) fn cairn_ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.cairn(args);
        assert!(
            out.status.success(),
            "cairn {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A client-library view of the devnet's nodes (for what a test does beside S3).
    pub(crate) async fn network(&self) -> cairn_client::network::Network {
        let peers: Vec<libp2p::Multiaddr> = self
            .devnet
            .state
            .nodes
            .iter()
            .map(|n| n.multiaddr.parse().unwrap())
            .collect();
        cairn_client::network::Network::connect(&peers)
            .await
            .unwrap()
    }

    pub(crate) async fn stop(self) {
        self.devnet.stop().await;
    }
}

/// An `aws-sdk-s3` client for `endpoint`.
pub(crate) fn client(endpoint: &str, access: &str, secret: &str, path_style: bool) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access, secret, None, None, "cairn-test"))
        .endpoint_url(endpoint)
        .force_path_style(path_style)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// HTTP status and S3 error code of a failed SDK call.
pub(crate) fn failure<E: aws_sdk_s3::error::ProvideErrorMetadata, R: std::fmt::Debug>(
    r: Result<R, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (u16, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e);
            (status, code.unwrap_or("").to_string())
        }
    }
}

/// The S3 error message of a failed call ("" when it has none).
pub(crate) fn message<E: ProvideErrorMetadata, R>(
    r: &Result<R, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> String {
    match r {
        Ok(_) => String::new(),
        Err(e) => e.message().unwrap_or("").to_string(),
    }
}

/// The bytes of `bucket/key` (or of `range` of it), which must be readable.
pub(crate) async fn get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Option<&str>,
) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_range(range.map(str::to_string))
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The hex MD5 of `b` (a single PUT's ETag, unquoted).
pub(crate) fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes(len: usize, seed: u64) -> Vec<u8> {
    cairn_testkit::data::bytes(len, seed)
}

/// A raw HTTP/1.1 exchange (for what SDKs refuse to send): returns status, head and body.
pub(crate) async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("the gateway answered within 30 s");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let body = buf.get(split + 4..).unwrap_or_default().to_vec();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head, body)
}

/// The gateway still answers `/health`.
pub(crate) async fn healthy(admin: SocketAddr) -> bool {
    matches!(
        cairn_wire::admin::http_get(admin, "/health", Duration::from_secs(5)).await,
        Ok((200, _))
    )
}

/// A presigned PUT of `bucket/key`, valid for 5 minutes.
pub(crate) async fn presigned_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::presigning::PresignedRequest {
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(300))
            .unwrap();
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .presigned(cfg)
        .await
        .unwrap()
}

/// Starts a multipart upload of `bucket/key`; its upload id.
pub(crate) async fn start_upload(s3: &Client, bucket: &str, key: &str) -> String {
    s3.create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id()
        .expect("an upload id")
        .to_string()
}

/// Uploads part `n` of upload `id`; its ETag.
pub(crate) async fn upload_part(
    s3: &Client,
    (bucket, key, id): (&str, &str, &str),
    n: i32,
    body: Vec<u8>,
) -> String {
    s3.upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .unwrap()
        .e_tag()
        .expect("an ETag")
        .to_string()
}

/// The value of a Prometheus counter or gauge from the gateway's `/metrics`.
pub(crate) async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let (code, text) = cairn_wire::admin::http_get(admin, "/metrics", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 200);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}")) as u64
}

/// `cairn-gateway init` in `dir` with these keys, listening on free ports.
pub(crate) fn init_gateway(dir: &std::path::Path, access: &str, secret: &str) {
    init_gateway_at(dir, "127.0.0.1:0", access, secret);
}

/// [`init_gateway`] with the admin listener on `admin`.
pub(crate) fn init_gateway_at(dir: &std::path::Path, admin: &str, access: &str, secret: &str) {
    let init = std::process::Command::new(gateway_bin())
        .args(["init", "--data-dir", dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin", admin])
        .args(["--access-key", access, "--secret-key", secret])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
}

/// `cairn-gateway run` on `dir` against the devnet's nodes (with `extra` arguments), once it
/// serves.
pub(crate) async fn run_gateway(
    net: &Net,
    dir: &std::path::Path,
    extra: &[&str],
) -> (tokio::process::Child, cairn_gateway::server::RuntimeInfo) {
    run_gateway_with(net, dir, extra, &[]).await
}

/// [`run_gateway`] with `env` set for the gateway process.
pub(crate) async fn run_gateway_with(
    net: &Net,
    dir: &std::path::Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> (tokio::process::Child, cairn_gateway::server::RuntimeInfo) {
    let _ = std::fs::remove_file(dir.join(cairn_gateway::config::RUNTIME_FILE));
    let log = dir.join("gateway.log");
    let mut run = tokio::process::Command::new(gateway_bin());
    run.args(["run", "--data-dir", dir.to_str().unwrap()])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for n in &net.devnet.state.nodes {
        run.args(["--peer", &n.multiaddr]);
    }
    let mut child = run.spawn().unwrap();
    let deadline = Deadline::after(
        Duration::from_secs(60),
        format!("the gateway on {} serves", dir.display()),
    );
    let info = loop {
        if let Ok(info) = cairn_gateway::server::read_runtime_info(dir) {
            break info;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("gateway on {} exited ({status}): {err}", dir.display());
        }
        deadline.check_with(format_args!(
            "log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (child, info)
}
