//! The `cairn-node` binary as an operator uses it: init, run, admin HTTP, bad config, a second
//! node on the same directory, SIGTERM, and `kill -9` in the middle of writes.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use cairn_chunker::cids;
use cairn_testkit::process::ChildGuard;
use cairn_wire::admin::http_get;
use cairn_wire::admin::read_runtime_info;
use common::{client, target_of};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-node");

fn init(dir: &Path) {
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--data-listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node process, killed if the test panics so failures leave nothing behind.
fn run(dir: &Path, extra: &[&str]) -> ChildGuard {
    ChildGuard(
        Command::new(BIN)
            .args(["run", "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn wait_ready(dir: &Path, child: &mut Child) -> cairn_wire::admin::RuntimeInfo {
    let (every, timeout) = (Duration::from_millis(50), Duration::from_secs(30));
    cairn_testkit::wait::until(timeout, every, "the node starts", || {
        if let Ok(info) = read_runtime_info(dir)
            && info.pid == child.id()
        {
            return Some(info);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("node exited early with {status}");
        }
        None
    })
}

fn term(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

#[test]
fn init_writes_private_identity_and_commented_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let mode = std::fs::metadata(dir.path().join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    for key in ["listen", "bootstrap", "capacity", "[admin]", "label", "log"] {
        assert!(config.contains(key), "config lacks {key}");
    }
    assert!(
        config.lines().filter(|l| l.starts_with('#')).count() > 10,
        "config should explain itself"
    );
    // A second init refuses to overwrite.
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already"));
}

#[test]
fn bad_config_names_the_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let path = dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("capacity = \"100GiB\"", "capacity = \"lots\"");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("capacity") && err.contains("500GiB"), "{err}");

    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("capacity = \"lots\"", "capacity = \"1GiB\""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .args(["--admin", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.listen"));

    let missing = dir.path().join("nope");
    let out = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cairn-node init"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_second_instance_and_clean_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let mut node = run(dir.path(), &[]);
    let info = wait_ready(dir.path(), &mut node);

    let (code, body) = http_get(info.admin, "/health", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, metrics) = http_get(info.admin, "/metrics", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 200);
    for m in [
        "cairn_shards_stored",
        "cairn_shard_bytes_stored",
        "cairn_capacity_bytes",
        "cairn_shard_reads_total",
        "cairn_shard_writes_total",
        "cairn_data_bytes_in_total",
        "cairn_data_bytes_out_total",
        "cairn_verification_failures_total",
        "cairn_connected_peers",
        "cairn_disk_available_bytes",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}");
    }
    let (code, status) = http_get(info.admin, "/status", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["peer_id"], info.peer_id);
    assert_eq!(status["capacity"], 100u64 << 30);
    // The disk's free space is known, and "free" is no more than it has room for.
    let disk = status["disk_available"].as_u64().unwrap();
    let reserve = status["disk_reserve"].as_u64().unwrap();
    assert_eq!(reserve, 1 << 30);
    let free = status["free"].as_u64().unwrap();
    assert!(
        free <= disk.saturating_sub(reserve) && free <= 100 << 30,
        "{status}"
    );
    assert!(
        status["listen"][0]
            .as_str()
            .unwrap()
            .ends_with(&info.peer_id)
    );

    // A second node on the same data directory: a clear error, and the first keeps running.
    let out = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(
        http_get(info.admin, "/health", Duration::from_secs(5))
            .await
            .unwrap()
            .0,
        200
    );

    term(&node);
    let status = tokio::task::spawn_blocking(move || node.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM should exit cleanly, got {status}"
    );
    assert!(
        !dir.path().join("node.json").exists(),
        "runtime file removed on clean exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_never_leaves_a_bad_shard() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let client = client();
    let mut written: Vec<(cids::Cid, Bytes)> = Vec::new();
    for round in 0..3u8 {
        let mut node = run(dir.path(), &["--sync-writes", "false"]);
        let info = wait_ready(dir.path(), &mut node);
        let t = target_of(&info);
        // Everything acknowledged before is still there and intact.
        for (cid, data) in &written {
            assert_eq!(
                &client.fetch(&t, cid, None, None).await.unwrap(),
                data,
                "round {round}"
            );
        }
        // Write concurrently and kill -9 in the middle.
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..8u32)
            .map(|w| {
                let (client, t, acked) = (client.clone(), t, acked.clone());
                tokio::spawn(async move {
                    for i in 0..1000u32 {
                        // Every writer, shard and round its own bytes.
                        let seed = u64::from(round) << 48 | u64::from(w) << 32 | u64::from(i);
                        let data = cairn_testkit::data::bytes(200_000 + i as usize, seed);
                        let cid = cids::raw(&data);
                        match client.store(&t, &cid, Bytes::from(data.clone())).await {
                            Ok(_) => acked.lock().unwrap().push((cid, Bytes::from(data))),
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        node.kill().unwrap();
        node.wait().unwrap();
        // Requests in flight to the dead node would wait for the QUIC idle timeout: stop them.
        for w in writers {
            w.abort();
        }
        written.extend(acked.lock().unwrap().drain(..));
        assert!(!written.is_empty());
    }
    // Open the store directly after the last kill: every shard it lists verifies, the used-space
    // counter equals the listed sizes, and every acknowledged shard is among them.
    let store = cairn_node::store::Store::open(
        &dir.path().join("db"),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    let mut listed = std::collections::HashMap::new();
    let mut after = None;
    loop {
        let (page, more) = store.list(after.as_ref(), 500).unwrap();
        after = page.last().map(|(c, _, _)| *c);
        for (cid, len, corrupt) in page {
            assert!(!corrupt);
            assert_eq!(store.read_shard(&cid).unwrap().len() as u64, len);
            listed.insert(cid, len);
        }
        if !more {
            break;
        }
    }
    let stats = store.stats();
    assert_eq!(stats.used, listed.values().sum::<u64>());
    assert_eq!(stats.shards, listed.len() as u64);
    for (cid, data) in &written {
        assert_eq!(
            listed.get(cid),
            Some(&(data.len() as u64)),
            "acknowledged shard {cid} lost"
        );
    }
}
