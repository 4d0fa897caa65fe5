//! The `cairn` CLI against a real devnet of `cairn-node` processes on 127.0.0.1.

mod common;

use std::collections::BTreeMap;

use common::{Net, noise, write};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_a_64_mib_file_and_a_directory_of_2000_small_files() {
    let net = Net::start(6).await;

    // A 64 MiB file: put, get back byte-identical; cid agrees with BLAKE3 and with put.
    let data = noise(64 << 20, 1);
    let file = net.path("big.bin");
    write(&file, &data);
    let put = json(&net.ok(&["--json", "put", file.to_str().unwrap()]));
    let cid = put["cid"].as_str().unwrap().to_string();
    assert_eq!(put["size"], 64u64 << 20);
    assert_eq!((put["k"].as_u64(), put["m"].as_u64()), (Some(4), Some(2)));
    assert_eq!(put["blake3"], blake3::hash(&data).to_hex().to_string());
    // The nodes hold it: 64 MiB at 4+2 is 96 MiB of shards, and each node's free space is
    // what its capacity leaves, or less if its disk holds less.
    let nodes = json(&net.ok(&["--json", "nodes"]));
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 6, "{nodes}");
    assert_eq!(nodes["used"], 96u64 << 20, "{nodes}");
    assert_eq!(nodes["shards"], 96, "{nodes}");
    for n in list {
        // Manifests take capacity too (the object's, on its keepers).
        let (used, capacity, free) = (
            n["used"].as_u64().unwrap() + n["manifest_bytes"].as_u64().unwrap(),
            n["capacity"].as_u64().unwrap(),
            n["free"].as_u64().unwrap(),
        );
        let room = n["disk_room"]
            .as_u64()
            .expect("nodes report their disk's room");
        assert_eq!(free, room.min(capacity - used), "{n}");
    }
    let table = net.ok(&["nodes"]);
    assert!(
        table.contains("6 nodes: 96 shards, 96.00 MiB used"),
        "{table}"
    );
    let out = net.path("big.out");
    net.ok(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(
        std::fs::read(&out).unwrap() == data,
        "64 MiB file differs after get"
    );
    let raw = net.ok(&["cid", file.to_str().unwrap()]);
    assert_eq!(
        raw.trim(),
        cairn_chunker::cids::raw(&data).to_string(),
        "cairn cid must equal b3sum's digest"
    );
    assert_eq!(
        net.ok(&["cid", "--object", file.to_str().unwrap()]).trim(),
        cid
    );
    // A range, and refusing to overwrite.
    let part = net.path("part.out");
    net.ok(&[
        "get",
        &cid,
        "--range",
        "1000000-3999999",
        "-o",
        part.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&part).unwrap() == data[1_000_000..4_000_000]);
    let again = net.cairn(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // 2000 small files in nested directories.
    let root = net.path("dataset");
    let mut files = BTreeMap::new();
    for i in 0..2000u64 {
        let rel = format!("shard-{:02}/sample-{i:05}.txt", i % 17);
        let bytes = noise(100 + (i as usize * 37) % 8000, i + 100);
        write(&root.join(&rel), &bytes);
        files.insert(rel, bytes);
    }
    let put = json(&net.ok(&["--json", "put", root.to_str().unwrap()]));
    let ds = put["cid"].as_str().unwrap().to_string();
    assert_eq!(put["files"], 2000);
    // ~8 MB of small files become one pack: a handful of stripes, not thousands of shards.
    let shards = put["shards"].as_u64().unwrap();
    assert!(shards <= 30, "2000 small files used {shards} shards");
    assert_eq!(
        net.ok(&["cid", "--object", root.to_str().unwrap()]).trim(),
        ds
    );
    let listed = json(&net.ok(&["--json", "ls", &ds]));
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2000);
    let out_dir = net.path("dataset-out");
    net.ok(&["get", &ds, "-o", out_dir.to_str().unwrap()]);
    for (rel, bytes) in &files {
        assert!(
            std::fs::read(out_dir.join(rel)).unwrap() == *bytes,
            "{rel} differs"
        );
    }
    let verify = net.cairn(&["verify", &ds]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    net.stop().await;
}

/// A dataset with two packs of small files, files stored as objects of their own, empty files
/// and nested directories: uploaded and read back several files at a time, identical, with the
/// same CID as computed offline. Then an object read into a device and into a pipe that its
/// reader closes early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_dataset_round_trips_and_reads_go_to_devices_and_pipes() {
    let net = Net::start(6).await;
    let root = net.path("mixed");
    let mut files = BTreeMap::new();
    // 270 files just under the pack threshold: more than one 64 MiB pack.
    for i in 0..270u64 {
        let rel = format!("small/{:02}/f{i:04}.bin", i % 7);
        files.insert(rel, noise(255 * 1024 + i as usize, i));
    }
    // Files of their own, from just over the threshold to several stripes.
    for (i, size) in [256 * 1024, 300_000, 1 << 20, 3 << 20, 4 << 20, 9_000_001]
        .into_iter()
        .enumerate()
    {
        files.insert(format!("large/l{i}.bin"), noise(size, 1000 + i as u64));
    }
    for i in 0..3 {
        files.insert(format!("empty/e{i}"), Vec::new());
    }
    // Names that differ only in their extension, read at the same time: each is written
    // through a partial file of its own.
    for (i, name) in ["same.bin", "same.txt", "same"].into_iter().enumerate() {
        files.insert(format!("large/{name}"), noise(2 << 20, 500 + i as u64));
    }
    // The walk's last file is a large one: the pack being filled is stored after it.
    files.insert("zz-last.bin".to_string(), noise(2 << 20, 99));
    for (rel, bytes) in &files {
        write(&root.join(rel), bytes);
    }
    let put = json(&net.ok(&["--json", "put", root.to_str().unwrap()]));
    let ds = put["cid"].as_str().unwrap().to_string();
    assert_eq!(put["files"], files.len(), "{put}");
    assert_eq!(put["packs"], 2, "{put}");
    assert_eq!(put["objects"], 10, "{put}");
    assert_eq!(
        put["bytes"],
        files.values().map(|b| b.len() as u64).sum::<u64>(),
        "{put}"
    );
    // Uploads finish in any order; the dataset (and so its CID) does not depend on it.
    assert_eq!(
        net.ok(&["cid", "--object", root.to_str().unwrap()]).trim(),
        ds
    );
    let out_dir = net.path("mixed-out");
    let got = json(&net.ok(&["--json", "get", &ds, "-o", out_dir.to_str().unwrap()]));
    assert_eq!(got["bytes"], put["bytes"], "{got}");
    let mut found = 0;
    let mut stack = vec![out_dir.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&out_dir).unwrap().to_str().unwrap();
            let want = files
                .get(rel)
                .unwrap_or_else(|| panic!("get wrote {rel}, which is not in the dataset"));
            assert!(std::fs::read(&path).unwrap() == *want, "{rel} differs");
            found += 1;
        }
    }
    assert_eq!(found, files.len(), "files missing after get");

    // An object into /dev/null: a device is written into, not replaced, so no --force.
    let large = root.join("large/l5.bin");
    let cid = json(&net.ok(&["--json", "put", large.to_str().unwrap()]))["cid"]
        .as_str()
        .unwrap()
        .to_string();
    let null = json(&net.ok(&["--json", "get", &cid, "-o", "/dev/null"]));
    assert_eq!(null["bytes"], 9_000_001, "{null}");
    // A full disk (/dev/full answers every write with ENOSPC): a failure that says so.
    let full = net.cairn(&["get", &cid, "-o", "/dev/full"]);
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success(), "{err}");
    assert!(
        err.contains("writing /dev/full: ") && err.contains("the disk is full"),
        "{err}"
    );
    // Into a pipe whose reader stops after 1000 bytes (`| head -c 1000`): the reader got the
    // object's first bytes, and cairn ends quietly.
    let mut child = std::process::Command::new(common::cairn_bin())
        .args(["get", &cid, "-o", "-"])
        .env("CAIRN_DEVNET", net.dir.path().join("net"))
        .env("CAIRN_KEY", &net.key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = vec![0u8; 1000];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    assert!(head == files["large/l5.bin"][..1000], "first bytes differ");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "a closed pipe is not a failure: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_two_of_six_nodes_may_stop_but_not_three() {
    let net = Net::start(6).await;
    let data = noise(9 << 20, 2);
    let cid = net.put_bytes(&data, &["--k", "4", "--m", "2"]);

    // Frozen nodes (SIGSTOP) hold their sockets but answer nothing: the worst kind of failure.
    for pair in [(0, 1), (2, 5), (3, 4)] {
        net.devnet().pause_node(pair.0);
        net.devnet().pause_node(pair.1);
        let out = net.path(&format!("out-{}-{}", pair.0, pair.1));
        let got = net.cairn(&["get", &cid, "-o", out.to_str().unwrap()]);
        net.devnet().resume_node(pair.0);
        net.devnet().resume_node(pair.1);
        assert!(
            got.status.success(),
            "nodes {pair:?} stopped: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(
            std::fs::read(&out).unwrap() == data,
            "nodes {pair:?} stopped: bytes differ"
        );
    }
    // The manifest went to m + 1 = 3 nodes. Three nodes down, one of them still holding the
    // manifest: the object cannot be read and the error names the missing shards. All three
    // manifest holders down: the error says the manifest is unavailable.
    let stat = json(&net.ok(&["--json", "stat", &cid]));
    let index_of = |peer: &Value| {
        let peer = peer.as_str().unwrap();
        let nodes = &net.devnet().state.nodes;
        nodes.iter().position(|n| n.peer_id == peer).unwrap()
    };
    let manifest_on: Vec<usize> = stat["manifest_holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(index_of)
        .collect();
    assert_eq!(manifest_on.len(), 3, "{stat}");
    let keep = manifest_on[0];
    let shards_gone: Vec<usize> = (0..6).filter(|&n| n != keep).take(3).collect();
    for (down, expect) in [
        (shards_gone, ["cannot be read", "missing"]),
        (manifest_on, ["manifest", "not available"]),
    ] {
        for &n in &down {
            net.devnet().pause_node(n);
        }
        let out = net.path("out-3");
        let got = net.cairn(&["get", &cid, "-o", out.to_str().unwrap()]);
        for &n in &down {
            net.devnet().resume_node(n);
        }
        assert!(!got.status.success(), "nodes {down:?} down must fail");
        let err = String::from_utf8_lossy(&got.stderr);
        assert!(expect.iter().all(|e| err.contains(e)), "{down:?}: {err}");
        let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("cairn-partial"))
            .collect();
        assert!(
            !out.exists() && left.is_empty(),
            "no partial output left behind: {left:?}"
        );
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_shard_on_disk_is_routed_around_and_named() {
    let net = Net::start(6).await;
    let data = noise(5 << 20, 3);
    let cid = net.put_bytes(&data, &[]);
    // Which node holds data shard 0 of stripe 0 (the object's first MiB)?
    let stat = json(&net.ok(&["--json", "stat", &cid]));
    let holder = stat["stripes"][0]["shards"][0]["holders"][0]
        .as_str()
        .unwrap()
        .to_string();
    let index = net
        .devnet()
        .state
        .nodes
        .iter()
        .position(|n| n.peer_id == holder)
        .unwrap();
    // Stop it cleanly (flushes into blob files), flip a byte of the shard on disk, restart.
    let mut net = net;
    net.devnet_mut().stop_node(index).await;
    let db = net.devnet().state.nodes[index].data_dir.join("db");
    let needle = &data[500_000..500_064];
    let mut flipped = false;
    for entry in std::fs::read_dir(&db).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "blob") {
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(pos) = bytes.windows(64).position(|w| w == needle) {
                bytes[pos + 7] ^= 0x20;
                std::fs::write(&path, bytes).unwrap();
                flipped = true;
            }
        }
    }
    assert!(flipped, "shard bytes not found in the node's blob files");
    net.devnet_mut().restart_node(index).await.unwrap();

    let out = net.path("out");
    let got = net.cairn(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        std::fs::read(&out).unwrap() == data,
        "get must return the original bytes"
    );
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(err.contains(&holder), "the bad node must be named: {err}");
    let verify = net.cairn(&["verify", &cid]);
    assert!(
        !verify.status.success(),
        "verify must fail while a copy is corrupt"
    );
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report.contains(&holder) && report.contains("orrupt"),
        "{report}"
    );
    net.stop().await;
}

#[test]
fn key_commands_and_offline_cid() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let run = |args: &[&str]| {
        std::process::Command::new(common::cairn_bin())
            .args(args)
            .env("CAIRN_KEY", &key)
            .env_remove("CAIRN_DEVNET")
            .output()
            .unwrap()
    };
    let gen_out = run(&["--json", "key", "generate"]);
    assert!(gen_out.status.success());
    let shown = run(&["--json", "key", "show"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&gen_out.stdout))["public_key"],
        json(&String::from_utf8_lossy(&shown.stdout))["public_key"]
    );
    assert!(
        !run(&["key", "generate"]).status.success(),
        "generate must not overwrite"
    );
    // No network: a clear error with the fix.
    let f = dir.path().join("f");
    std::fs::write(&f, b"hello").unwrap();
    let put = run(&["put", f.to_str().unwrap()]);
    assert!(!put.status.success());
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("--peer"),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    // cid works offline and equals BLAKE3.
    let cid = run(&["cid", f.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&cid.stdout).trim(),
        cairn_chunker::cids::raw(b"hello").to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_has_one_deadline() {
    // How a budget is spent (time on the output not counted) is checked by get.rs's unit
    // tests; here, that the CLI's reads go through it: a budget already spent fails at once,
    // naming the flag that sets it, and leaves no output; a long one reads as usual.
    let net = Net::start(6).await;
    let data = noise(3 << 20, 40);
    let cid = net.put_bytes(&data, &[]);
    let out = net.path("deadline.out");
    let got = net.cairn(&["get", &cid, "--timeout", "0s", "-o", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success(), "a get with no time left succeeded");
    assert!(
        err.contains("gave up after waiting") && err.contains("its --timeout"),
        "{err}"
    );
    assert!(!out.exists(), "a failed get left its output");
    net.ok(&["get", &cid, "--timeout", "1h", "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data);
    let bad = net.cairn(&[
        "get",
        &cid,
        "--timeout",
        "soon",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a duration"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
