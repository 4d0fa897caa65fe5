//! Helpers the node's test files share: nodes in this process, the data-plane client that
//! talks to them, and deterministic shard bytes.

#![allow(dead_code)]

pub(crate) mod devnet;

use std::path::Path;

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid};
use cairn_node::RunningNode;
use cairn_node::config::Config;
use cairn_node::identity;
use cairn_wire::admin::RuntimeInfo;
use cairn_wire::data::{self, Target};

/// A config for a node on 127.0.0.1, every listener on a free port.
pub(crate) fn local_config() -> Config {
    let mut c = Config::default();
    c.network.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
    c.network.data_listen = "127.0.0.1:0".into();
    c.admin.listen = "127.0.0.1:0".into();
    c
}

/// Starts a node in `dir` with `config`: its identity is created on the first start and kept
/// after, so a restart on the same directory is the same node.
pub(crate) async fn start_node(dir: &Path, config: Config) -> RunningNode {
    let key_path = dir.join(identity::KEY_FILE);
    let key = if key_path.exists() {
        identity::load(&key_path).unwrap()
    } else {
        std::fs::create_dir_all(dir).unwrap();
        identity::create(&key_path).unwrap()
    };
    RunningNode::start(dir, &config.check().unwrap(), key, None)
        .await
        .unwrap()
}

/// Where a running node's data plane is.
pub(crate) fn target(node: &RunningNode) -> Target {
    target_of(&node.info)
}

/// Where the node that wrote `info` (its `node.json`) serves its data plane.
pub(crate) fn target_of(info: &RuntimeInfo) -> Target {
    Target {
        peer: info.peer_id.parse().unwrap(),
        addr: info.data_addr,
    }
}

/// A data-plane client with an identity of its own.
pub(crate) fn client() -> data::Client {
    data::Client::bind(libp2p::identity::Keypair::generate_ed25519()).unwrap()
}

/// A shard of `len` deterministic pseudo-random bytes, and its CID.
pub(crate) fn shard(len: usize, seed: u64) -> (Cid, Bytes) {
    let data = cairn_testkit::data::bytes(len, seed);
    (cids::raw(&data), Bytes::from(data))
}
