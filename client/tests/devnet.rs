//! `cairn devnet` as a newcomer runs it: starts the nodes, every node sees the others,
//! devnet.json describes them, Ctrl-C leaves no process behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_client::devnet::{DevnetState, pid_alive, status};
use cairn_testkit::process::{ChildGuard, KillOnDrop};
use common::cairn_bin as cairn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_starts_converges_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // If the test panics: the devnet is killed, and its nodes and gateway at once (rather than
    // when they notice the devnet's pid is gone).
    let _nodes = KillOnDrop::mentioning(dir.path());
    let mut child = ChildGuard(
        Command::new(cairn())
            .args([
                "devnet",
                "--nodes",
                "4",
                "--gateway-port",
                "0",
                "--json",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // --json prints devnet.json once every node sees every other.
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    let reader = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("devnet did not come up")
        .unwrap();
    let printed: DevnetState = serde_json::from_str(&line).unwrap();
    let on_disk = DevnetState::read(dir.path()).unwrap();
    assert_eq!(printed, on_disk);
    assert_eq!(on_disk.nodes.len(), 4);

    let ids: Vec<String> = on_disk.nodes.iter().map(|n| n.peer_id.clone()).collect();
    for n in &on_disk.nodes {
        assert!(pid_alive(n.pid));
        assert!(
            n.multiaddr.starts_with("/ip4/127.0.0.1/udp/") && n.multiaddr.ends_with(&n.peer_id)
        );
        assert!(n.data_dir.join("identity.key").is_file());
        // A devnet waits a minute for a silent node (the production default is 4 hours).
        let config = std::fs::read_to_string(n.data_dir.join("config.toml")).unwrap();
        assert!(config.contains("grace = \"1m\""), "{config}");
        let s = status(n.admin).await.unwrap();
        assert_eq!(s.peer_id, n.peer_id);
        // Nodes also see clients (the gateway); every other node must be among the peers.
        let mut seen: Vec<String> = s
            .peers
            .iter()
            .map(|p| p.peer_id.clone())
            .filter(|p| ids.contains(p))
            .collect();
        seen.push(s.peer_id.clone());
        seen.sort();
        let mut all = ids.clone();
        all.sort();
        assert_eq!(seen, all, "node {} must see every other node", n.peer_id);
    }

    // The S3 gateway runs beside the nodes.
    let gw = on_disk
        .gateway
        .clone()
        .expect("devnet.json names the gateway");
    assert!(pid_alive(gw.pid));
    assert!(gw.endpoint.starts_with("http://127.0.0.1:"));
    assert!(gw.access_key.len() >= 16 && gw.secret_key.len() >= 32);
    let (code, _) = cairn_wire::admin::http_get(gw.admin, "/health", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 200);

    // A second devnet in the same directory is refused while this one runs.
    let out = Command::new(cairn())
        .args(["devnet", "--nodes", "2", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));

    // Ctrl-C.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "devnet exit: {status}");
    for n in &on_disk.nodes {
        assert!(!pid_alive(n.pid), "node {} survived Ctrl-C", n.pid);
    }
    assert!(!pid_alive(gw.pid), "the gateway survived Ctrl-C");
    assert!(!dir.path().join("devnet.json").exists());
}

#[test]
fn devnet_without_node_binary_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of cairn alone in a directory has no cairn-node beside it.
    let lonely = dir.path().join("cairn");
    std::fs::copy(cairn(), &lonely).unwrap();
    let out = Command::new(&lonely)
        .args(["devnet", "--dir"])
        .arg(dir.path().join("net"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cargo build --release --bins"), "{err}");
}
