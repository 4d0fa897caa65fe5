//! `cairn-node`: the storage provider's daemon. `cairn-node init`, then `cairn-node run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cairn_node::config::{Config, Size, Span, template};
use cairn_node::identity;
use cairn_node::node::RunningNode;
use cairn_wire::admin::CONFIG_FILE;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-node",
    version,
    about = "Cairn storage node: keeps erasure-coded shards and serves them to the network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: a node identity (identity.key, mode 0600) and a commented config.toml.
    Init {
        /// Where the node keeps its identity, configuration and RocksDB.
        #[arg(long, env = "CAIRN_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// The data directory created by `cairn-node init`.
        #[arg(long, env = "CAIRN_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// Exit when this process exits (used by `cairn devnet`).
        #[arg(long, hide = true)]
        watch_pid: Option<u32>,
    },
    /// Leave the network: the running node takes no new data and the keepers copy everything
    /// it holds to other nodes; waits until it is safe to stop it. Nothing is deleted, so
    /// stopping earlier loses nothing either: what is not copied yet is repaired.
    Drain {
        /// The data directory of the node (running, or to drain when it next runs).
        #[arg(long, env = "CAIRN_DATA_DIR")]
        data_dir: PathBuf,
        /// Stop draining: the node takes new data again.
        #[arg(long)]
        cancel: bool,
        /// Print the final status as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Stop waiting after this long (the drain goes on in the node), e.g. 30m.
        #[arg(long)]
        timeout: Option<Span>,
    },
}

/// Settings that override config.toml (flags, or CAIRN_* environment variables).
#[derive(Args, Default)]
struct Overrides {
    /// libp2p listen multiaddr(s), e.g. /ip4/0.0.0.0/udp/4001/quic-v1 (repeatable).
    #[arg(long, env = "CAIRN_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// Data-plane UDP address, e.g. 0.0.0.0:4002.
    #[arg(long, env = "CAIRN_DATA_LISTEN")]
    data_listen: Option<String>,
    /// Data-plane address to advertise to peers.
    #[arg(long, env = "CAIRN_DATA_ADVERTISE")]
    data_advertise: Option<String>,
    /// Bootstrap peer multiaddr(s) ending in /p2p/<peer id> (repeatable).
    #[arg(long, env = "CAIRN_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Capacity limit, e.g. 500GiB.
    #[arg(long, env = "CAIRN_CAPACITY")]
    capacity: Option<Size>,
    /// Admin HTTP address, e.g. 127.0.0.1:9101.
    #[arg(long, env = "CAIRN_ADMIN")]
    admin: Option<String>,
    /// Failure-domain label (rack, host, zone).
    #[arg(long, env = "CAIRN_LABEL")]
    label: Option<String>,
    /// Log filter, e.g. info or cairn_node=debug.
    #[arg(long, env = "CAIRN_LOG")]
    log: Option<String>,
    /// fsync every write (true/false).
    #[arg(long, env = "CAIRN_SYNC_WRITES")]
    sync_writes: Option<bool>,
    /// Scrub rate in bytes per second (0 = off), e.g. 32MiB.
    #[arg(long, env = "CAIRN_SCRUB_RATE")]
    scrub_rate: Option<Size>,
    /// Space to keep free on the data directory's disk, e.g. 10GiB.
    #[arg(long, env = "CAIRN_DISK_RESERVE")]
    disk_reserve: Option<Size>,
    /// Storage-proof epoch length, e.g. 1h (every node of a network must agree).
    #[arg(long, env = "CAIRN_EPOCH")]
    epoch: Option<Span>,
    /// Peers audited per epoch.
    #[arg(long, env = "CAIRN_AUDITS_PER_EPOCH")]
    audits_per_epoch: Option<usize>,
    /// Time between two repair passes over the objects this node keeps, e.g. 60s.
    #[arg(long, env = "CAIRN_REPAIR_INTERVAL")]
    repair_interval: Option<Span>,
    /// How long a peer may be unreachable before its shards are rebuilt elsewhere (default 4h).
    #[arg(long, env = "CAIRN_REPAIR_GRACE")]
    repair_grace: Option<Span>,
    /// Rebuild a stripe once fewer than k + this many shards are live (0: m - m/4).
    #[arg(long, env = "CAIRN_REPAIR_MARGIN")]
    repair_margin: Option<usize>,
    /// Rebalancing: nodes more than this fraction of capacity above the mean fill give shards
    /// to nodes as far below it (0: never), e.g. 0.05.
    #[arg(long, env = "CAIRN_REBALANCE_SPREAD")]
    rebalance_spread: Option<f64>,
    /// Epochs a stored shard is held on the strength of its upload alone.
    #[arg(long, env = "CAIRN_LEASE_EPOCHS")]
    lease_epochs: Option<u64>,
    /// Time between garbage-collection passes, e.g. 10m.
    #[arg(long, env = "CAIRN_GC_INTERVAL")]
    gc_interval: Option<Span>,
    /// Epochs past a lease's end before what it held is collected.
    #[arg(long, env = "CAIRN_GRACE_EPOCHS")]
    grace_epochs: Option<u64>,
}

impl Overrides {
    fn apply(self, c: &mut Config) {
        if !self.listen.is_empty() {
            c.network.listen = self.listen;
        }
        if let Some(v) = self.data_listen {
            c.network.data_listen = v;
        }
        if let Some(v) = self.data_advertise {
            c.network.data_advertise = Some(v);
        }
        if !self.bootstrap.is_empty() {
            c.network.bootstrap = self.bootstrap;
        }
        if let Some(v) = self.capacity {
            c.storage.capacity = v;
        }
        if let Some(v) = self.admin {
            c.admin.listen = v;
        }
        if let Some(v) = self.label {
            c.node.label = Some(v);
        }
        if let Some(v) = self.log {
            c.node.log = v;
        }
        if let Some(v) = self.sync_writes {
            c.storage.sync_writes = v;
        }
        if let Some(v) = self.scrub_rate {
            c.storage.scrub_rate = v;
        }
        if let Some(v) = self.disk_reserve {
            c.storage.disk_reserve = v;
        }
        if let Some(v) = self.epoch {
            c.proofs.epoch = v;
        }
        if let Some(v) = self.audits_per_epoch {
            c.proofs.audits_per_epoch = v;
        }
        if let Some(v) = self.repair_interval {
            c.repair.interval = v;
        }
        if let Some(v) = self.repair_grace {
            c.repair.grace = v;
        }
        if let Some(v) = self.repair_margin {
            c.repair.margin = v;
        }
        if let Some(v) = self.rebalance_spread {
            c.repair.rebalance_spread = v;
        }
        if let Some(v) = self.lease_epochs {
            c.proofs.lease_epochs = v;
        }
        if let Some(v) = self.gc_interval {
            c.leases.gc_interval = v;
        }
        if let Some(v) = self.grace_epochs {
            c.leases.grace_epochs = v;
        }
    }
}

fn init(data_dir: &Path, overrides: Overrides) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let config_path = data_dir.join(CONFIG_FILE);
    if config_path.exists() {
        bail!(
            "{} already exists: this data directory is already initialised",
            config_path.display()
        );
    }
    let mut config = Config::default();
    overrides.apply(&mut config);
    config.check()?;
    let key = identity::create(&data_dir.join(identity::KEY_FILE))?;
    std::fs::write(&config_path, template(&config))
        .with_context(|| format!("writing {}", config_path.display()))?;
    println!("initialised {}", data_dir.display());
    println!("  peer id:  {}", key.public().to_peer_id());
    println!(
        "  identity: {} (mode 0600: back it up, keep it secret)",
        data_dir.join(identity::KEY_FILE).display()
    );
    println!("  config:   {}", config_path.display());
    println!(
        "start it with: cairn-node run --data-dir {}",
        data_dir.display()
    );
    Ok(())
}

async fn run(data_dir: &Path, overrides: Overrides, watch_pid: Option<u32>) -> anyhow::Result<()> {
    let config_path = data_dir.join(CONFIG_FILE);
    if !config_path.exists() {
        bail!(
            "{} not found: run `cairn-node init --data-dir {}` first",
            config_path.display(),
            data_dir.display()
        );
    }
    let mut config = Config::load(&config_path)?;
    overrides.apply(&mut config);
    let checked = config.check()?;
    init_logging(&config.node.log);
    let key = identity::load(&data_dir.join(identity::KEY_FILE))?;
    let node = RunningNode::start(data_dir, &checked, key, watch_pid).await?;
    println!(
        "cairn-node {} running: libp2p {} | data {} | admin http://{}",
        node.info.peer_id,
        node.info.listen.join(" "),
        node.info.data_addr,
        node.info.admin
    );
    let stopped = node.stopped();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = stopped.cancelled() => {}
    }
    node.shutdown().await?;
    Ok(())
}

async fn drain(
    data_dir: &Path,
    cancel: bool,
    json: bool,
    timeout: Option<Span>,
) -> anyhow::Result<()> {
    use cairn_node::repair::drain::{DrainStatus, marker};
    if !data_dir.join(CONFIG_FILE).exists() {
        bail!(
            "{} is not a node's data directory (no {CONFIG_FILE}): pass the --data-dir the node runs with",
            data_dir.display()
        );
    }
    let mark = marker(data_dir);
    if cancel {
        match std::fs::remove_file(&mark) {
            Ok(()) => println!("drain cancelled: the node takes new data again"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("the node was not draining")
            }
            Err(e) => return Err(e).with_context(|| format!("removing {}", mark.display())),
        }
        return Ok(());
    }
    let running = cairn_wire::admin::read_runtime_info(data_dir).ok();
    // A node that runs without repair could not count its drain: say so before marking it.
    if let Some(info) = &running
        && let Ok((404, body)) =
            cairn_wire::admin::http_get(info.admin, "/drain", std::time::Duration::from_secs(5))
                .await
    {
        bail!(
            "{}; set repair.enabled = true in its config.toml and restart it",
            body.trim()
        );
    }
    std::fs::write(&mark, b"draining: written by `cairn-node drain`; remove it (or run `cairn-node drain --cancel`) to take data again\n")
        .with_context(|| format!("writing {}", mark.display()))?;
    let info = running.with_context(|| {
        format!(
            "the node at {} is not running: it drains once started (`cairn-node run --data-dir {}`)",
            data_dir.display(),
            data_dir.display()
        )
    })?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} draining: {pos}/{len} shards held elsewhere {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = std::time::Instant::now();
    loop {
        let status: Option<DrainStatus> = match cairn_wire::admin::http_get(
            info.admin,
            "/drain",
            std::time::Duration::from_secs(5),
        )
        .await
        {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            Ok((code, body)) => bail!("the node's /drain answered {code}: {}", body.trim()),
            Err(e) => bail!(
                "cannot reach the node's admin server at {} ({e}): is it running? The drain goes on when it runs",
                info.admin
            ),
        };
        if let Some(st) = status.filter(|s| s.draining && s.passes > 0) {
            bar.set_length(st.shards);
            bar.set_position(st.shards_elsewhere);
            bar.set_message(format!(
                "; {}/{} manifests",
                st.manifests_elsewhere, st.manifests
            ));
            if st.safe {
                bar.finish_and_clear();
                if json {
                    println!("{}", serde_json::to_string(&st)?);
                } else {
                    println!(
                        "drained: all {} shards and {} manifests are held by other nodes; safe to stop this node",
                        st.shards, st.manifests
                    );
                }
                return Ok(());
            }
        }
        if let Some(t) = timeout
            && started.elapsed() > t.0
        {
            bar.abandon();
            bail!(
                "not drained after {t}: the drain goes on in the node; run `cairn-node drain` again to follow it"
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    // Before any thread starts: shard-sized buffers stay in malloc's heaps.
    cairn_node::malloc::tune();
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
        Command::Drain {
            data_dir,
            cancel,
            json,
            timeout,
        } => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(drain(&data_dir, cancel, json, timeout)),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-node: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
