//! What nodes store is checked by whoever reads it: a devnet of real `cairn-node` processes,
//! the real `cairn` CLI, and the nodes' RocksDB edited between runs (a provenance envelope's
//! signature, then a manifest's bytes) must make `cairn verify` and `cairn get` fail, and say
//! why.
//!
//! It lives with the node because it opens the nodes' RocksDB directly (the client crate does
//! not depend on RocksDB, even in its tests). The `cairn` binary must have been built:
//! `cargo build --release --workspace --bins`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cairn_client::devnet::{Devnet, DevnetConfig};
use cairn_testkit::process::KillOnDrop;

/// A devnet of `cairn-node` processes in a temporary directory, and an uploader's key; every
/// process working in the directory is killed when this is dropped, a failing test included.
struct Net {
    // First, so the processes are gone before their directory is removed.
    _cleanup: KillOnDrop,
    devnet: Devnet,
    dir: tempfile::TempDir,
    cairn: PathBuf,
}

impl Net {
    async fn start(nodes: usize) -> Net {
        let cairn = cairn_testkit::bins::sibling("cairn");
        let dir = tempfile::tempdir().unwrap();
        let cleanup = KillOnDrop::mentioning(dir.path());
        let devnet = Devnet::start(DevnetConfig {
            nodes,
            dir: dir.path().join("net"),
            node_binary: env!("CARGO_BIN_EXE_cairn-node").into(),
            capacity: "4GiB".into(),
            converge_timeout: Duration::from_secs(60),
            gateway: None,
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `cairn ARGS` against this devnet with this test's key.
    fn cairn(&self, args: &[&str]) -> Output {
        Command::new(&self.cairn)
            .args(args)
            .env("CAIRN_DEVNET", self.path("net"))
            .env("CAIRN_KEY", self.path("key"))
            .output()
            .unwrap()
    }

    /// Runs `cairn ARGS`, asserts success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
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
    async fn with_nodes_stopped(&mut self, mut edit: impl FnMut(&Path)) {
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

    async fn stop(self) {
        self.devnet.stop().await;
    }
}

/// The node's database at `path`, every column family it has (whatever this version keeps).
fn open_db(path: &Path) -> rocksdb::DB {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    rocksdb::DB::open_cf(&opts, path, cfs).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_manifest_or_signature_fails_verify() {
    let mut net = Net::start(6).await;
    let data = cairn_testkit::data::bytes(3 << 20, 4);
    let file = net.path("f.bin");
    std::fs::write(&file, &data).unwrap();
    let cid_text = net.ok(&["put", file.to_str().unwrap()]).trim().to_string();
    assert!(net.cairn(&["verify", &cid_text]).status.success());
    let cid = cairn_chunker::cids::parse(&cid_text).unwrap();
    let key = cid.to_bytes();

    // Tamper with every stored copy's signature: flip a byte of each provenance envelope.
    let mut touched = 0;
    net.with_nodes_stopped(|db_path| {
        let db = open_db(db_path);
        let prov = db.cf_handle("provenance").unwrap();
        let items: Vec<_> = db
            .prefix_iterator_cf(prov, &key)
            .map(|r| r.unwrap())
            .filter(|(k, _)| k.starts_with(&key))
            .collect();
        for (k, v) in items {
            let mut v = v.to_vec();
            let n = v.len();
            v[n - 5] ^= 0x01; // inside the signature bytes, at the end of the envelope
            db.put_cf(prov, k, v).unwrap();
            touched += 1;
        }
    })
    .await;
    assert!(touched >= 1);
    let verify = net.cairn(&["verify", &cid_text]);
    assert!(!verify.status.success());
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(report.contains("signature"), "{report}");
    let get = net.cairn(&["get", &cid_text, "-o", net.path("x").to_str().unwrap()]);
    assert!(!get.status.success());
    assert!(String::from_utf8_lossy(&get.stderr).contains("tampered"));

    // Now the manifest bytes themselves: a node serving altered bytes is caught by the CID.
    net.with_nodes_stopped(|db_path| {
        let db = open_db(db_path);
        let manifests = db.cf_handle("manifests").unwrap();
        if let Some(v) = db.get_cf(manifests, &key).unwrap() {
            let mut v = v.to_vec();
            let n = v.len();
            v[n / 2] ^= 0x01;
            db.put_cf(manifests, &key, v).unwrap();
        }
    })
    .await;
    let verify = net.cairn(&["verify", &cid_text]);
    assert!(!verify.status.success());
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report.contains("not available") || report.contains("corrupt"),
        "{report}"
    );
    net.stop().await;
}
