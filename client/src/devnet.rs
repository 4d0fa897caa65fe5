//! A local network on 127.0.0.1: N `cairn-node` processes, each with its own data directory and
//! ports, bootstrapped from the first, described in `DIR/devnet.json`.
//!
//! The state file is what tests and tools use to find the network:
//!
//! ```json
//! { "nodes": [ { "pid": 1234, "peer_id": "12D3Koo…", "multiaddr": "/ip4/127.0.0.1/udp/…/quic-v1/p2p/12D3Koo…",
//!                "admin": "127.0.0.1:…", "data_addr": "127.0.0.1:…", "data_dir": "…/node-0" } ] }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cairn_wire::admin::{CONFIG_FILE, RUNTIME_FILE, read_runtime_info};
use cairn_wire::admin::{Status, http_get};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

/// Name of the state file inside the devnet directory.
pub const STATE_FILE: &str = "devnet.json";

/// One node of a running devnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevnetNode {
    /// Process id.
    pub pid: u32,
    /// libp2p peer id.
    pub peer_id: String,
    /// libp2p multiaddr, with `/p2p/<peer id>`: pass it to `--peer`.
    pub multiaddr: String,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// Data-plane address.
    pub data_addr: SocketAddr,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The node's log file.
    pub log: PathBuf,
}

/// The devnet's S3 gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevnetGateway {
    /// Process id.
    pub pid: u32,
    /// S3 endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// S3 access key id.
    pub access_key: String,
    /// S3 secret access key (also the admin API's bearer token).
    pub secret_key: String,
    /// Admin HTTP address (`/health`, `/metrics`, `POST /import`, `/export`, `/restore`).
    pub admin: SocketAddr,
    /// The gateway's data directory.
    pub data_dir: PathBuf,
    /// The gateway's log file.
    pub log: PathBuf,
}

/// The contents of `devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevnetState {
    /// The nodes, in start order (node 0 is everyone's bootstrap peer).
    pub nodes: Vec<DevnetNode>,
    /// The S3 gateway, when the devnet runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<DevnetGateway>,
}

impl DevnetState {
    /// Reads `DIR/devnet.json`.
    pub fn read(dir: &Path) -> Result<Self, DevnetError> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|source| DevnetError::NoState {
            dir: dir.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| DevnetError::Io {
            what: format!("parsing {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }
}

/// Devnet errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevnetError {
    /// `cairn-node` is not where it should be.
    #[error("cairn-node not found at {}", .0.display())]
    NodeBinary(PathBuf),
    /// Another devnet runs in the directory.
    #[error("a devnet is already running in {} (pids {pids:?})", dir.display())]
    AlreadyRunning {
        /// The directory.
        dir: PathBuf,
        /// Live node pids.
        pids: Vec<u32>,
    },
    /// `cairn-gateway` is not where it should be.
    #[error("cairn-gateway not found at {}", .0.display())]
    GatewayBinary(PathBuf),
    /// The directory's state file could not be read (no devnet was started there, say).
    #[error("reading {}: {source}", dir.join(STATE_FILE).display())]
    NoState {
        /// The devnet directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The gateway did not come up.
    #[error("the S3 gateway did not start: {reason} (log: {log})")]
    GatewayFailed {
        /// Why.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A node did not come up.
    #[error("node {index} did not start: {reason} (log: {log})")]
    NodeFailed {
        /// Node index.
        index: usize,
        /// Why.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The nodes did not find each other in time.
    #[error("nodes did not discover each other within {secs}s: {detail}")]
    NotConverged {
        /// Time waited.
        secs: u64,
        /// Peer counts per node.
        detail: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevnetError {
    let what = what.into();
    move |source| DevnetError::Io { what, source }
}

/// Whether a process id is alive.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Directory for node data and `devnet.json`.
    pub dir: PathBuf,
    /// The `cairn-node` binary.
    pub node_binary: PathBuf,
    /// Capacity given to each node.
    pub capacity: String,
    /// How long to wait for the nodes to find each other.
    pub converge_timeout: Duration,
    /// The `cairn-gateway` binary and its S3 port (0: any free port); `None` runs no gateway.
    pub gateway: Option<(PathBuf, u16)>,
    /// More `cairn-node init` flags for every node (e.g. `--epoch 10s`).
    pub node_args: Vec<String>,
}

/// How long a devnet node waits for a silent peer before rebuilding its shards.
pub const DEVNET_REPAIR_GRACE: &str = "1m";

/// A running devnet: its processes and state.
pub struct Devnet {
    /// What `devnet.json` says.
    pub state: DevnetState,
    children: Vec<Child>,
    gateway: Option<Child>,
    dir: PathBuf,
    config: DevnetConfig,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

async fn spawn_node(
    cfg: &DevnetConfig,
    index: usize,
    bootstrap: Option<&str>,
) -> Result<(Child, DevnetNode), DevnetError> {
    let data_dir = cfg.dir.join(format!("node-{index}"));
    let log_path = data_dir.join("node.log");
    if !data_dir.join(CONFIG_FILE).exists() {
        let out = Command::new(&cfg.node_binary)
            .arg("init")
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--data-listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .args([
                "--capacity",
                &cfg.capacity,
                "--label",
                &format!("devnet-{index}"),
            ])
            // A devnet is where nodes are stopped to watch the network heal: a minute of grace
            // (the production default, 4 hours, waits out restarts), unless the caller set one.
            .args(
                (!cfg
                    .node_args
                    .iter()
                    .any(|a| a.starts_with("--repair-grace")))
                .then_some(["--repair-grace", DEVNET_REPAIR_GRACE])
                .into_iter()
                .flatten(),
            )
            .args(&cfg.node_args)
            .output()
            .await
            .map_err(io(format!("running {}", cfg.node_binary.display())))?;
        if !out.status.success() {
            return Err(DevnetError::NodeFailed {
                index,
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                log: log_path,
            });
        }
    }
    let _ = std::fs::remove_file(data_dir.join(RUNTIME_FILE));
    let log =
        std::fs::File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    let log_err = log.try_clone().map_err(io("log file"))?;
    let mut cmd = Command::new(&cfg.node_binary);
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let mut child = cmd
        .spawn()
        .map_err(io(format!("starting {}", cfg.node_binary.display())))?;
    let pid = child.id().unwrap_or(0);
    // The node writes node.json once it listens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(info) = read_runtime_info(&data_dir)
            && info.pid == pid
        {
            let multiaddr = info.listen.first().cloned().unwrap_or_default();
            let node = DevnetNode {
                pid,
                peer_id: info.peer_id,
                multiaddr,
                admin: info.admin,
                data_addr: info.data_addr,
                data_dir,
                log: log_path,
            };
            return Ok((child, node));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            return Err(DevnetError::NodeFailed {
                index,
                reason: format!("exited with {status}: {last}"),
                log: log_path,
            });
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(DevnetError::NodeFailed {
                index,
                reason: "no node.json within 30s".into(),
                log: log_path,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a node's `/status`.
pub async fn status(admin: SocketAddr) -> Result<Status, DevnetError> {
    let (code, body) = http_get(admin, "/status", Duration::from_secs(5))
        .await
        .map_err(io(format!("GET http://{admin}/status")))?;
    if code != 200 {
        return Err(DevnetError::Io {
            what: format!("GET http://{admin}/status"),
            source: std::io::Error::other(format!("HTTP {code}: {body}")),
        });
    }
    serde_json::from_str(&body).map_err(|e| DevnetError::Io {
        what: format!("parsing http://{admin}/status"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

impl Devnet {
    /// Starts the nodes and waits until every node knows every other.
    pub async fn start(cfg: DevnetConfig) -> Result<Self, DevnetError> {
        if !cfg.node_binary.is_file() {
            return Err(DevnetError::NodeBinary(cfg.node_binary.clone()));
        }
        if let Some((gw, _)) = &cfg.gateway
            && !gw.is_file()
        {
            return Err(DevnetError::GatewayBinary(gw.clone()));
        }
        std::fs::create_dir_all(&cfg.dir).map_err(io(format!("creating {}", cfg.dir.display())))?;
        if let Ok(old) = DevnetState::read(&cfg.dir) {
            let pids: Vec<u32> = old
                .nodes
                .iter()
                .map(|n| n.pid)
                .filter(|p| pid_alive(*p))
                .collect();
            if !pids.is_empty() {
                return Err(DevnetError::AlreadyRunning {
                    dir: cfg.dir.clone(),
                    pids,
                });
            }
        }
        let mut devnet = Devnet {
            state: DevnetState {
                nodes: Vec::new(),
                gateway: None,
            },
            children: Vec::new(),
            gateway: None,
            dir: cfg.dir.clone(),
            config: cfg.clone(),
        };
        let mut result = devnet.start_nodes(&cfg).await;
        if result.is_ok()
            && let Some((binary, port)) = &cfg.gateway
        {
            result = devnet.start_gateway(binary, *port).await;
        }
        if let Err(e) = result {
            devnet.stop().await;
            return Err(e);
        }
        devnet.write_state()?;
        Ok(devnet)
    }

    fn write_state(&self) -> Result<(), DevnetError> {
        let json = serde_json::to_vec_pretty(&self.state).unwrap_or_default();
        let path = self.dir.join(STATE_FILE);
        std::fs::write(&path, json).map_err(io(format!("writing {}", path.display())))
    }

    fn signal(&self, index: usize, signal: rustix::process::Signal) {
        if let Some(pid) = self
            .children
            .get(index)
            .and_then(Child::id)
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Stops node `index` cleanly (SIGTERM) and waits for it; its data stays.
    pub async fn stop_node(&mut self, index: usize) {
        self.signal(index, rustix::process::Signal::TERM);
        if let Some(c) = self.children.get_mut(index)
            && tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
        {
            let _ = c.kill().await;
        }
    }

    /// Kills node `index` (SIGKILL: no goodbye, no flush, like a pulled plug) and waits for it;
    /// its data stays.
    pub async fn kill_node(&mut self, index: usize) {
        self.signal(index, rustix::process::Signal::KILL);
        if let Some(c) = self.children.get_mut(index) {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
    }

    /// Freezes node `index` (SIGSTOP): it keeps its sockets but answers nothing, like a hung host.
    pub fn pause_node(&self, index: usize) {
        self.signal(index, rustix::process::Signal::STOP);
    }

    /// Unfreezes node `index` (SIGCONT).
    pub fn resume_node(&self, index: usize) {
        self.signal(index, rustix::process::Signal::CONT);
    }

    /// Starts node `index` again on its data directory (new ports), joining through another
    /// node, and updates `devnet.json`.
    pub async fn restart_node(&mut self, index: usize) -> Result<(), DevnetError> {
        self.stop_node(index).await;
        let bootstrap = self
            .state
            .nodes
            .iter()
            .enumerate()
            .find(|(i, n)| *i != index && pid_alive(n.pid))
            .map(|(_, n)| n.multiaddr.clone());
        let (child, node) = spawn_node(&self.config, index, bootstrap.as_deref()).await?;
        self.children[index] = child;
        self.state.nodes[index] = node;
        self.write_state()
    }

    async fn start_nodes(&mut self, cfg: &DevnetConfig) -> Result<(), DevnetError> {
        let (child, first) = spawn_node(cfg, 0, None).await?;
        let bootstrap = first.multiaddr.clone();
        self.children.push(child);
        self.state.nodes.push(first);
        for i in 1..cfg.nodes {
            let (child, node) = spawn_node(cfg, i, Some(&bootstrap)).await?;
            self.children.push(child);
            self.state.nodes.push(node);
        }
        // Wait until every node's routing table holds every other node.
        let want = cfg.nodes - 1;
        let deadline = tokio::time::Instant::now() + cfg.converge_timeout;
        loop {
            let mut counts = Vec::new();
            for n in &self.state.nodes {
                counts.push(status(n.admin).await.map(|s| s.peers.len()).unwrap_or(0));
            }
            if counts.iter().all(|c| *c >= want) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DevnetError::NotConverged {
                    secs: cfg.converge_timeout.as_secs(),
                    detail: format!("peers known per node: {counts:?}, want {want} each"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn start_gateway(&mut self, binary: &Path, port: u16) -> Result<(), DevnetError> {
        let data_dir = self.dir.join("gateway");
        let log_path = data_dir.join("gateway.log");
        let failed = |reason: String| DevnetError::GatewayFailed {
            reason,
            log: log_path.clone(),
        };
        let listen = format!("127.0.0.1:{port}");
        if !data_dir.join("config.toml").exists() {
            let out = Command::new(binary)
                .arg("init")
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen", &listen, "--admin", "127.0.0.1:0"])
                .output()
                .await
                .map_err(io(format!("running {}", binary.display())))?;
            if !out.status.success() {
                return Err(failed(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
        }
        let (access_key, secret_key) = gateway_credentials(&data_dir.join("config.toml"))?;
        let _ = std::fs::remove_file(data_dir.join("gateway.json"));
        std::fs::create_dir_all(&data_dir)
            .map_err(io(format!("creating {}", data_dir.display())))?;
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("creating {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io("log file"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", &listen, "--admin", "127.0.0.1:0"])
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .env_remove("CAIRN_DEVNET")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for n in &self.state.nodes {
            cmd.args(["--peer", &n.multiaddr]);
        }
        let mut child = cmd
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        let pid = child.id().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(info) = std::fs::read(data_dir.join("gateway.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<GatewayRuntime>(&b).ok())
                .filter(|i| i.pid == pid)
            {
                self.gateway = Some(child);
                self.state.gateway = Some(DevnetGateway {
                    pid,
                    endpoint: info.endpoint,
                    access_key,
                    secret_key,
                    admin: info.admin,
                    data_dir,
                    log: log_path,
                });
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                let last = tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                return Err(failed(format!("exited with {status}: {last}")));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(failed("no gateway.json within 60s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the gateway (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop_gateway(&mut self) {
        if let Some(mut c) = self.gateway.take() {
            stop_child(&mut c).await;
        }
    }

    /// Waits until any process of the devnet exits: which one, and its exit status. `None` when
    /// nothing is left running.
    pub async fn wait_any_exit(&mut self) -> Option<(Process, std::process::ExitStatus)> {
        loop {
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Some((Process::Node(i), status));
                }
            }
            if let Some(c) = self.gateway.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some((Process::Gateway, status));
            }
            if self.children.is_empty() && self.gateway.is_none() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the gateway, then every node: SIGTERM, then SIGKILL after 10 s; removes
    /// `devnet.json`.
    pub async fn stop(mut self) {
        self.stop_gateway().await;
        for c in &self.children {
            if let Some(pid) = c
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
        let _ = std::fs::remove_file(self.dir.join(STATE_FILE));
    }
}

/// A process of the devnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Node by index.
    Node(usize),
    /// The S3 gateway.
    Gateway,
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Process::Node(i) => write!(f, "node {i}"),
            Process::Gateway => f.write_str("the S3 gateway"),
        }
    }
}

/// The part of the gateway's `gateway.json` the devnet reads.
#[derive(Deserialize)]
struct GatewayRuntime {
    pid: u32,
    endpoint: String,
    admin: SocketAddr,
}

/// The S3 key pair from a gateway's `config.toml`.
fn gateway_credentials(path: &Path) -> Result<(String, String), DevnetError> {
    #[derive(Deserialize)]
    struct Keys {
        access_key: String,
        secret_key: String,
    }
    let text = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
    let keys: Keys = toml::from_str(&text).map_err(|e| DevnetError::Io {
        what: format!("parsing {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    Ok((keys.access_key, keys.secret_key))
}

async fn stop_child(c: &mut Child) {
    if let Some(pid) = c
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .is_err()
    {
        let _ = c.kill().await;
    }
}
