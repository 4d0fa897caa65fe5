//! `cairn-gateway`: an S3-compatible endpoint over the Cairn network. `init`, then `run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cairn_gateway::config::{CONFIG_FILE, Config};
use cairn_gateway::server::RunningGateway;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-gateway",
    version,
    about = "S3-compatible gateway over the Cairn storage network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory with a commented config.toml (mode 0600) and fresh S3 credentials.
    Init {
        /// Where the gateway keeps its configuration, signing key and catalog.
        #[arg(long, env = "CAIRN_GW_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Serve S3 until SIGINT or SIGTERM.
    Run {
        /// The data directory created by `cairn-gateway init`.
        #[arg(long, env = "CAIRN_GW_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// Exit when this process exits (used by `cairn devnet`).
        #[arg(long, hide = true)]
        watch_pid: Option<u32>,
    },
}

/// Settings that override config.toml (flags, or CAIRN_GW_* environment variables).
#[derive(Args, Default)]
struct Overrides {
    /// S3 listen address, e.g. 0.0.0.0:9000.
    #[arg(long, env = "CAIRN_GW_LISTEN")]
    listen: Option<String>,
    /// Admin HTTP address, e.g. 127.0.0.1:9001.
    #[arg(long, env = "CAIRN_GW_ADMIN")]
    admin: Option<String>,
    /// Base domain for virtual-host-style requests (BUCKET.DOMAIN).
    #[arg(long, env = "CAIRN_GW_DOMAIN")]
    domain: Option<String>,
    /// S3 access key id.
    #[arg(long, env = "CAIRN_GW_ACCESS_KEY")]
    access_key: Option<String>,
    /// S3 secret access key.
    #[arg(long, env = "CAIRN_GW_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Region SigV4 signatures must be scoped to, e.g. us-east-1 ("*": any).
    #[arg(long, env = "CAIRN_GW_REGION")]
    region: Option<String>,
    /// Storage node multiaddr ending in /p2p/<peer id> (repeatable).
    #[arg(long = "peer", env = "CAIRN_GW_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// Join the local devnet in DIR (reads DIR/devnet.json) instead of --peer.
    #[arg(long, env = "CAIRN_DEVNET")]
    devnet: Option<PathBuf>,
    /// Data shards per stripe for new objects.
    #[arg(long)]
    k: Option<u8>,
    /// Parity shards per stripe for new objects.
    #[arg(long)]
    m: Option<u8>,
    /// MiB of verified shards kept in memory between reads (0: no cache).
    #[arg(long, env = "CAIRN_GW_CACHE_MIB")]
    cache_mib: Option<u32>,
    /// Smallest multipart part but the last, in KiB (5120 = 5 MiB, as S3).
    #[arg(long, env = "CAIRN_GW_MIN_PART_KIB")]
    min_part_kib: Option<u32>,
    /// Objects of up to this many KiB are kept whole in their manifest on m+1 nodes (0-64).
    #[arg(long, env = "CAIRN_GW_INLINE_KIB")]
    inline_kib: Option<u32>,
    /// MiB fetched ahead of sequential range readers (0: off).
    #[arg(long, env = "CAIRN_GW_READAHEAD_MIB")]
    readahead_mib: Option<u32>,
    /// Seconds between automatic catalog exports (0: only on POST /export).
    #[arg(long, env = "CAIRN_GW_EXPORT_EVERY_SECS")]
    export_every_secs: Option<u32>,
    /// How long each lease on the catalog's objects lasts, e.g. 30d ("0s": take no leases).
    #[arg(long, env = "CAIRN_GW_LEASE_TERM")]
    lease_term: Option<String>,
    /// Time between lease renewal passes, e.g. 1h.
    #[arg(long, env = "CAIRN_GW_LEASE_RENEW_EVERY")]
    lease_renew_every: Option<String>,
    /// Log filter, e.g. info or cairn_gateway=debug.
    #[arg(long, env = "CAIRN_GW_LOG")]
    log: Option<String>,
}

impl Overrides {
    fn apply(self, c: &mut Config) -> anyhow::Result<()> {
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.admin {
            c.admin = v;
        }
        if let Some(v) = self.domain {
            c.domain = v;
        }
        if let Some(v) = self.access_key {
            c.access_key = v;
        }
        if let Some(v) = self.secret_key {
            c.secret_key = v;
        }
        if let Some(v) = self.region {
            c.region = v;
        }
        if !self.peers.is_empty() {
            c.peers = self.peers;
        }
        if let Some(dir) = self.devnet {
            let state = cairn_client::devnet::DevnetState::read(&dir).with_context(|| {
                format!(
                    "no devnet in {}: start one with `cairn devnet --dir {}`",
                    dir.display(),
                    dir.display()
                )
            })?;
            c.peers = state.nodes.iter().map(|n| n.multiaddr.clone()).collect();
        }
        if let Some(v) = self.k {
            c.k = v;
        }
        if let Some(v) = self.m {
            c.m = v;
        }
        if let Some(v) = self.cache_mib {
            c.cache_mib = v;
        }
        if let Some(v) = self.readahead_mib {
            c.readahead_mib = v;
        }
        if let Some(v) = self.min_part_kib {
            c.min_part_kib = v;
        }
        if let Some(v) = self.inline_kib {
            c.inline_kib = v;
        }
        if let Some(v) = self.export_every_secs {
            c.export_every_secs = v;
        }
        if let Some(v) = self.lease_term {
            c.lease_term = v;
        }
        if let Some(v) = self.lease_renew_every {
            c.lease_renew_every = v;
        }
        if let Some(v) = self.log {
            c.log = v;
        }
        Ok(())
    }
}

fn init(data_dir: &Path, overrides: Overrides) -> anyhow::Result<()> {
    let path = data_dir.join(CONFIG_FILE);
    if path.exists() {
        bail!(
            "{} already exists: this data directory is already initialised",
            path.display()
        );
    }
    let mut config = Config::new_random().context("generating credentials from /dev/urandom")?;
    overrides.apply(&mut config)?;
    config.check()?;
    config.write(data_dir)?;
    println!("initialised {}", data_dir.display());
    println!(
        "  config:     {} (mode 0600: it holds the secret key)",
        path.display()
    );
    println!("  access key: {}", config.access_key);
    println!(
        "start it with: cairn-gateway run --data-dir {}",
        data_dir.display()
    );
    Ok(())
}

async fn run(data_dir: &Path, overrides: Overrides, watch_pid: Option<u32>) -> anyhow::Result<()> {
    let path = data_dir.join(CONFIG_FILE);
    if !path.exists() {
        bail!(
            "{} not found: run `cairn-gateway init --data-dir {}` first",
            path.display(),
            data_dir.display()
        );
    }
    let mut config = Config::load(data_dir)?;
    overrides.apply(&mut config)?;
    let checked = config.check()?;
    init_logging(&config.log);
    let gw = RunningGateway::start(data_dir, &checked, watch_pid).await?;
    println!(
        "cairn-gateway serving S3 at http://{} (access key {}) | admin http://{}",
        gw.listen, config.access_key, gw.admin
    );
    let stop = gw.cancel_token();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = stop.cancelled() => {}
        }
        stop.cancel();
    });
    gw.wait().await;
    Ok(())
}

fn init_logging(filter: &str) {
    let mut filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    // s3s logs every refused request (a client's bad signature, a bucket name it rejects) as an
    // ERROR; the gateway logs them itself, at debug for client errors (server.rs, `explained`).
    if !filter.contains("s3s") {
        filter.push_str(",s3s=off");
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            data_dir,
            overrides,
        } => init(&data_dir, overrides),
        Command::Run {
            data_dir,
            overrides,
            watch_pid,
        } => match cairn_wire::daemon::runtime() {
            Ok(rt) => rt.block_on(run(&data_dir, overrides, watch_pid)),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-gateway: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
