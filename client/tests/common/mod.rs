//! A devnet of real `cairn-node` processes and the real `cairn` binary, for CLI tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cairn_client::devnet::{Devnet, DevnetConfig};

pub(crate) fn cairn_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_cairn"));
    assert!(
        bin.with_file_name("cairn-node").is_file(),
        "cairn-node must be built next to cairn: run `cargo build --release --bins` (./scripts/test does)"
    );
    bin
}

pub(crate) struct Net {
    pub(crate) devnet: Option<Devnet>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) key: PathBuf,
}

impl Net {
    pub(crate) async fn start(nodes: usize) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let devnet = Devnet::start(DevnetConfig {
            nodes,
            dir: dir.path().join("net"),
            node_binary: cairn_bin().with_file_name("cairn-node"),
            capacity: "4GiB".into(),
            converge_timeout: Duration::from_secs(60),
            gateway: None,
        })
        .await
        .unwrap();
        let key = dir.path().join("key");
        let net = Net {
            devnet: Some(devnet),
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
        self.devnet.as_ref().unwrap()
    }

    pub(crate) fn devnet_mut(&mut self) -> &mut Devnet {
        self.devnet.as_mut().unwrap()
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

    pub(crate) async fn stop(mut self) {
        if let Some(d) = self.devnet.take() {
            d.stop().await;
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A panicking test still leaves no process behind: kill what is left.
        if let Some(d) = &self.devnet {
            for n in &d.state.nodes {
                if let Some(pid) = rustix::process::Pid::from_raw(n.pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

/// Deterministic pseudo-random bytes.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}
