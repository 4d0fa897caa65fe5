//! A devnet of real `cairn-node` processes and the real `cairn` binary, for CLI tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cairn_client::devnet::{Devnet, DevnetConfig};
use cairn_testkit::process::KillOnDrop;

/// The `cairn` binary; `cairn-node` must have been built beside it.
pub(crate) fn cairn_bin() -> PathBuf {
    cairn_testkit::bins::sibling("cairn-node");
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

/// A devnet in a temporary directory, and a key. Every process working in the directory is
/// killed when this is dropped, also when the test panics (paused and restarted nodes too).
pub(crate) struct Net {
    // First, so the processes are gone before their directory is removed.
    cleanup: KillOnDrop,
    pub(crate) devnet: Devnet,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) key: PathBuf,
}

impl Net {
    pub(crate) async fn start(nodes: usize) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let cleanup = KillOnDrop::mentioning(dir.path());
        let devnet = Devnet::start(DevnetConfig {
            nodes,
            dir: dir.path().join("net"),
            node_binary: cairn_testkit::bins::sibling("cairn-node"),
            capacity: "4GiB".into(),
            converge_timeout: Duration::from_secs(60),
            gateway: None,
            node_args: Vec::new(),
        })
        .await
        .unwrap();
        let key = dir.path().join("key");
        let net = Net {
            cleanup,
            devnet,
            dir,
            key,
        };
        let out = net.cairn(&["key", "generate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }

    pub(crate) fn devnet(&self) -> &Devnet {
        &self.devnet
    }

    pub(crate) fn devnet_mut(&mut self) -> &mut Devnet {
        &mut self.devnet
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `cairn ARGS` against this devnet with this test's key.
    pub(crate) fn cairn(&self, args: &[&str]) -> Output {
        Command::new(cairn_bin())
            .args(args)
            .env("CAIRN_DEVNET", self.dir.path().join("net"))
            .env("CAIRN_KEY", &self.key)
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

    /// Writes `data` to `f.bin` and runs `cairn put` on it with `args`; returns the object's CID.
    pub(crate) fn put_bytes(&self, data: &[u8], args: &[&str]) -> String {
        let file = self.path("f.bin");
        write(&file, data);
        let mut all = vec!["put", file.to_str().unwrap()];
        all.extend_from_slice(args);
        self.ok(&all).trim().to_string()
    }

    pub(crate) async fn stop(self) {
        self.devnet.stop().await;
    }
}

/// Deterministic pseudo-random bytes.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    cairn_testkit::data::bytes(len, seed)
}

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}
