//! A devnet of real `cairn-node` processes for the node's end-to-end tests, driven with the
//! real `cairn` CLI, whose RocksDB a test may edit while the nodes are stopped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cairn_client::devnet::{Devnet, DevnetConfig};
use cairn_testkit::process::KillOnDrop;

/// A devnet of `cairn-node` processes in a temporary directory, and an uploader's key; every
/// process working in the directory is killed when this is dropped, a failing test included.
pub(crate) struct Net {
    // First, so the processes are gone before their directory is removed.
    _cleanup: KillOnDrop,
    pub(crate) devnet: Devnet,
    dir: tempfile::TempDir,
    cairn: PathBuf,
}

impl Net {
    pub(crate) async fn start(nodes: usize) -> Net {
        Self::start_with(nodes, Vec::new()).await
    }

    /// A devnet whose nodes are made with more `cairn-node init` flags.
    pub(crate) async fn start_with(nodes: usize, node_args: Vec<String>) -> Net {
        Self::start_sized(nodes, "4GiB", node_args).await
    }

    /// [`Net::start_with`] with every node's capacity set to `capacity` (such as "32MiB").
    pub(crate) async fn start_sized(nodes: usize, capacity: &str, node_args: Vec<String>) -> Net {
        let cairn = cairn_testkit::bins::sibling("cairn");
        let dir = tempfile::tempdir().unwrap();
        let cleanup = KillOnDrop::mentioning(dir.path());
        let devnet = Devnet::start(DevnetConfig {
            nodes,
            dir: dir.path().join("net"),
            node_binary: env!("CARGO_BIN_EXE_cairn-node").into(),
            capacity: capacity.into(),
            converge_timeout: Duration::from_secs(60),
            gateway: None,
            node_args,
        })
        .await
        .unwrap();
        let net = Net {
            _cleanup: cleanup,
            devnet,
            dir,
            cairn,
        };
        net.ok(&["key", "generate"]);
        net
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `cairn ARGS` against this devnet with this test's key.
    pub(crate) fn cairn(&self, args: &[&str]) -> Output {
        Command::new(&self.cairn)
            .args(args)
            .env("CAIRN_DEVNET", self.path("net"))
            .env("CAIRN_KEY", self.path("key"))
            .output()
            .unwrap()
    }

    /// Runs `cairn ARGS` against this devnet signing with the key at `key` (another owner).
    pub(crate) fn cairn_as(&self, key: &Path, args: &[&str]) -> Output {
        Command::new(&self.cairn)
            .args(args)
            .env("CAIRN_DEVNET", self.path("net"))
            .env("CAIRN_KEY", key)
            .output()
            .unwrap()
    }

    /// Runs `cairn ARGS`, asserts success, returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.cairn(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops every node (cleanly: RocksDB closed, so the test may open it), runs `edit` on each
    /// node's database directory, and starts them all again.
    pub(crate) async fn with_nodes_stopped(&mut self, mut edit: impl FnMut(&Path)) {
        let dbs: Vec<PathBuf> = (self.devnet.state.nodes.iter())
            .map(|n| n.data_dir.join("db"))
            .collect();
        for i in 0..dbs.len() {
            self.devnet.stop_node(i).await;
        }
        for db in &dbs {
            edit(db);
        }
        for i in 0..dbs.len() {
            self.devnet.restart_node(i).await.unwrap();
        }
    }

    /// Stops node `index` cleanly, runs `edit` on its database directory, starts it again.
    pub(crate) async fn with_node_stopped(&mut self, index: usize, edit: impl FnOnce(&Path)) {
        let db = self.devnet.state.nodes[index].data_dir.join("db");
        self.devnet.stop_node(index).await;
        edit(&db);
        self.devnet.restart_node(index).await.unwrap();
    }

    /// The index of the node with this peer id.
    pub(crate) fn index_of(&self, peer: &str) -> usize {
        self.devnet
            .state
            .nodes
            .iter()
            .position(|n| n.peer_id == peer)
            .unwrap_or_else(|| panic!("{peer} is not a node of this devnet"))
    }

    pub(crate) async fn stop(self) {
        self.devnet.stop().await;
    }
}

/// The node's database at `path`, every column family it has (whatever this version keeps).
pub(crate) fn open_db(path: &Path) -> rocksdb::DB {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    rocksdb::DB::open_cf(&opts, path, cfs).unwrap()
}
