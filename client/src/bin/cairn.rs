//! `cairn`: the Cairn command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cairn_client::devnet::{Devnet, DevnetConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: peer-to-peer storage for AI training data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local network of cairn-node processes on 127.0.0.1 (Ctrl-C stops them all).
    Devnet {
        /// Number of storage nodes.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
        /// Directory for the nodes' data and devnet.json (reused if it exists).
        #[arg(long, default_value = ".cairn-devnet")]
        dir: PathBuf,
        /// Capacity of each node.
        #[arg(long, default_value = "20GiB")]
        capacity: String,
        /// Print devnet.json to stdout once the network is up (for scripts).
        #[arg(long)]
        json: bool,
    },
}

async fn devnet(nodes: u16, dir: PathBuf, capacity: String, json: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    let node_binary = exe.with_file_name("cairn-node");
    let dir = std::path::absolute(&dir).context("resolving --dir")?;
    if !json {
        eprintln!("starting {nodes} nodes in {} ...", dir.display());
    }
    let mut net = Devnet::start(DevnetConfig {
        nodes: nodes.into(),
        dir: dir.clone(),
        node_binary,
        capacity,
        converge_timeout: Duration::from_secs(60),
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string(&net.state)?);
    } else {
        println!("Cairn devnet: {nodes} nodes on 127.0.0.1, every node sees the others\n");
        println!(
            "  {:<5} {:<8} {:<54} {:<22} admin",
            "node", "pid", "peer id", "data"
        );
        for (i, n) in net.state.nodes.iter().enumerate() {
            println!(
                "  {:<5} {:<8} {:<54} {:<22} http://{}",
                i, n.pid, n.peer_id, n.data_addr, n.admin
            );
        }
        println!("\n  bootstrap peer: {}", net.state.nodes[0].multiaddr);
        println!(
            "  state file:     {}",
            dir.join(cairn_client::devnet::STATE_FILE).display()
        );
        println!("  node logs:      {}/node-*/node.log", dir.display());
        println!("\nCtrl-C stops every node.");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            exited = net.wait_any_exit() => {
                if let Some((i, status)) = exited {
                    eprintln!("node {i} exited ({status}); the rest keep running");
                    // Keep waiting for a signal; the exited child stays reaped.
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => break,
                        _ = term.recv() => break,
                    }
                }
            }
        }
    }
    eprintln!("stopping {} nodes ...", net.state.nodes.len());
    net.stop().await;
    eprintln!("devnet stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Devnet {
                nodes,
                dir,
                capacity,
                json,
            } => devnet(nodes, dir, capacity, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
