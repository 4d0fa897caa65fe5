//! The command line: global flags, the commands, and what every command needs from them (the
//! network to join, the key to sign with).

use std::path::PathBuf;

use anyhow::Context;
use cairn_chunker::{Cid, cids};
use cairn_client::devnet::DevnetState;
use cairn_client::keys;
use cairn_client::network::Network;
use cairn_client::put::PutOptions;
use clap::{Args, Parser, Subcommand};

use crate::{audit, cid, devnet, get, key, lease, ls, proofs, put, stat, verify};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: peer-to-peer storage for AI training data"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args)]
pub(crate) struct Global {
    /// A node to join through: a multiaddr ending in /p2p/<peer id> (repeatable).
    #[arg(
        long = "peer",
        global = true,
        env = "CAIRN_PEERS",
        value_delimiter = ','
    )]
    pub(crate) peers: Vec<String>,
    /// A devnet directory: its devnet.json lists the nodes.
    #[arg(long, global = true, env = "CAIRN_DEVNET")]
    pub(crate) devnet: Option<PathBuf>,
    /// Machine-readable output on stdout (no progress bars).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The uploader key (default: $CAIRN_KEY, else ~/.config/cairn/key).
    #[arg(long, global = true)]
    pub(crate) key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Manage the uploader identity that signs what you publish.
    Key(key::Args),
    /// Upload a file (an object) or a directory (a dataset); prints its CID.
    Put(put::Args),
    /// Download an object to a file, or a dataset to a directory; every byte is verified.
    Get(get::Args),
    /// List a dataset's files (or describe an object).
    Ls(ls::Args),
    /// Show an object's layout: size, code, every stripe's shards and which nodes hold them.
    Stat(stat::Args),
    /// List the storage nodes this client sees: label, shards, space used and free.
    Nodes,
    /// Re-fetch and check everything: signature, every shard on every node, parity, BLAKE3.
    Verify(verify::Args),
    /// Challenge the nodes holding an object's shards to prove, now, that they still hold
    /// them (the storage receipts kept with its manifest name which node promised which).
    Audit(audit::Args),
    /// Hold objects or datasets for a while longer, under your key's lease (--lease 30d).
    Renew(lease::RenewArgs),
    /// End your key's lease on objects or datasets: once no lease holds them, nodes delete them.
    Release(lease::ReleaseArgs),
    /// Storage proofs: each node's record (proven epochs, faults, score, shards to repair), as
    /// the other nodes' ledgers keep it.
    Proofs(proofs::Args),
    /// Print a file's raw CID (its BLAKE3, as b3sum), or with --object the CID `put` would give.
    Cid(cid::Args),
    /// Start a local network of cairn-node processes on 127.0.0.1 (Ctrl-C stops them all).
    Devnet(devnet::Args),
}

// The erasure code of an upload (`put`, `cid --object`).
#[derive(Args, Clone)]
pub(crate) struct Shape {
    /// Data shards per stripe (default: 4, or 10 on networks of 14+ nodes).
    #[arg(long)]
    k: Option<u16>,
    /// Parity shards per stripe (default: 2, or 4 on networks of 14+ nodes).
    #[arg(long)]
    m: Option<u16>,
}

impl Shape {
    /// Upload options for a network of `nodes`, with the code asked for.
    pub(crate) fn options(&self, nodes: usize) -> PutOptions {
        let mut o = PutOptions::for_network(nodes);
        if let Some(k) = self.k {
            o.params.erasure.k = k;
        }
        if let Some(m) = self.m {
            o.params.erasure.m = m;
        }
        o
    }
}

impl Global {
    /// Joins the network given by `--peer`, else by `--devnet`.
    pub(crate) async fn network(&self) -> anyhow::Result<Network> {
        let mut peers: Vec<String> = self.peers.clone();
        if peers.is_empty()
            && let Some(dir) = &self.devnet
        {
            let state = DevnetState::read(dir)?;
            peers = state.nodes.iter().map(|n| n.multiaddr.clone()).collect();
        }
        let addrs = peers
            .iter()
            .map(|p| p.parse().with_context(|| format!("--peer {p:?} is not a multiaddr (e.g. /ip4/1.2.3.4/udp/4001/quic-v1/p2p/12D3...)")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Network::connect(&addrs).await?)
    }

    /// The uploader key's file.
    pub(crate) fn key_path(&self) -> PathBuf {
        self.key.clone().unwrap_or_else(keys::default_path)
    }
}

/// A CID given on the command line.
pub(crate) fn parse_cid(text: &str) -> anyhow::Result<Cid> {
    cids::parse(text).with_context(|| format!("{text:?} is not a Cairn CID"))
}
