//! `cairn devnet`: a local network of `cairn-node` processes (and the S3 gateway) until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cairn_client::devnet::{Devnet, DevnetConfig, STATE_FILE};

use crate::cli::Global;
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Number of storage nodes.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: u16,
    /// Directory for the nodes' data and devnet.json (reused if it exists).
    #[arg(long, default_value = ".cairn-devnet")]
    dir: PathBuf,
    /// Capacity of each node.
    #[arg(long, default_value = "20GiB")]
    capacity: String,
    /// Port of the S3 gateway on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 9000)]
    gateway_port: u16,
    /// Run only the nodes, without the S3 gateway.
    #[arg(long)]
    no_gateway: bool,
    /// Storage-proof epoch length (e.g. 10s), so commitments, audits and the ledger can be
    /// watched (`cairn proofs`); production networks use 1h. Taken when a node's data
    /// directory is first made.
    #[arg(long)]
    epoch: Option<String>,
}

pub(crate) async fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let nodes = args.nodes;
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    let node_binary = exe.with_file_name("cairn-node");
    let gateway =
        (!args.no_gateway).then(|| (exe.with_file_name("cairn-gateway"), args.gateway_port));
    let dir = std::path::absolute(&args.dir).context("resolving --dir")?;
    if !g.json {
        eprintln!("starting {nodes} nodes in {} ...", dir.display());
    }
    let mut net = Devnet::start(DevnetConfig {
        nodes: nodes.into(),
        dir: dir.clone(),
        node_binary,
        capacity: args.capacity.clone(),
        converge_timeout: Duration::from_secs(60),
        gateway,
        node_args: match &args.epoch {
            Some(e) => vec!["--epoch".into(), e.clone()],
            None => Vec::new(),
        },
    })
    .await?;
    if g.json {
        out!("{}", serde_json::to_string(&net.state)?);
    } else {
        describe(&net, &dir);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            exited = net.wait_any_exit() => {
                if let Some((which, status)) = exited {
                    eprintln!("{which} exited ({status}); the rest keep running");
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => break,
                        _ = term.recv() => break,
                    }
                }
            }
        }
    }
    eprintln!(
        "stopping {} nodes{} ...",
        net.state.nodes.len(),
        if net.state.gateway.is_some() {
            " and the gateway"
        } else {
            ""
        }
    );
    net.stop().await;
    eprintln!("devnet stopped");
    Ok(())
}

/// What a person needs to use the devnet: the nodes, the gateway, and what to try.
fn describe(net: &Devnet, dir: &Path) {
    let nodes = net.state.nodes.len();
    out!("Cairn devnet: {nodes} nodes on 127.0.0.1, every node sees the others\n");
    out!(
        "  {:<5} {:<8} {:<54} {:<22} admin",
        "node",
        "pid",
        "peer id",
        "data"
    );
    for (i, n) in net.state.nodes.iter().enumerate() {
        out!(
            "  {:<5} {:<8} {:<54} {:<22} http://{}",
            i,
            n.pid,
            n.peer_id,
            n.data_addr,
            n.admin
        );
    }
    out!("\n  bootstrap peer: {}", net.state.nodes[0].multiaddr);
    out!("  state file:     {}", dir.join(STATE_FILE).display());
    out!("  node logs:      {}/node-*/node.log", dir.display());
    if let Some(gw) = &net.state.gateway {
        out!("\nS3 gateway (SigV4, path-style or BUCKET.localhost virtual hosts):");
        out!("  endpoint:   {}", gw.endpoint);
        out!("  access key: {}", gw.access_key);
        out!("  secret key: {}", gw.secret_key);
        out!("  region:     us-east-1 (any region is accepted)");
        out!("  admin:      http://{} (/health, /metrics)", gw.admin);
        out!("  log:        {}", gw.log.display());
        out!(
            "  try:        AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {} s3 ls",
            gw.access_key,
            gw.secret_key,
            gw.endpoint
        );
    }
    out!(
        "\nTry: cairn key generate && cairn --devnet {} put FILE",
        dir.display()
    );
    out!("Ctrl-C stops every node.");
}
