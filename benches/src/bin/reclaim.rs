//! Reclaim benchmark: how much space a devnet of real `cairn-node` processes gives back after
//! objects are released, and how long that takes.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p cairn-benches --bin reclaim -- \
//!     [--size-mib 1024] [--objects 16] [--release 8] [--nodes 8] [--k 4] [--m 2]
//! ```
//!
//! Epochs are 2 s, the upload hold 3 epochs, the grace 1 epoch and a GC pass runs every
//! second, so a released object's shards may go 6 s after their upload plus 2 s. Uploads
//! `--objects` objects of `--size-mib / --objects` each (leased 1 h), waits until every upload
//! hold has passed, releases `--release` of them with `cairn release` and times, from the
//! release, until the nodes' `used` is what the kept objects need, and until their data
//! directories have shrunk by the bytes collected (RocksDB blob files dropped or rewritten).
//! Every kept object is then read back and verified.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_benches::arg;
use cairn_client::devnet::{Devnet, DevnetConfig};

/// Bytes in the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let size = arg("--size-mib", 1024) << 20;
    let objects = arg("--objects", 16).max(1);
    let released = arg("--release", objects / 2).min(objects);
    let nodes = arg("--nodes", 8) as usize;
    let (k, m) = (arg("--k", 4), arg("--m", 2));
    let exe = std::env::current_exe()?;
    let cairn = exe.with_file_name("cairn");
    let node = exe.with_file_name("cairn-node");
    if !cairn.is_file() || !node.is_file() {
        bail!("build the binaries first: cargo build --release --bins");
    }
    let dir = tempfile::tempdir()?;
    let work = dir.path().to_path_buf();
    eprintln!("starting a {nodes}-node devnet in {} ...", work.display());
    let net = Devnet::start(DevnetConfig {
        nodes,
        dir: work.join("net"),
        node_binary: node,
        capacity: "64GiB".into(),
        converge_timeout: Duration::from_secs(60),
        gateway: None,
        node_args: [
            "--epoch",
            "2s",
            "--lease-epochs",
            "3",
            "--grace-epochs",
            "1",
            "--gc-interval",
            "1s",
            "--scrub-rate",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    })
    .await?;
    let run = |args: &[&str]| {
        let out = Command::new(&cairn)
            .args(args)
            .env("CAIRN_DEVNET", work.join("net"))
            .env("CAIRN_KEY", work.join("key"))
            .output()?;
        if !out.status.success() {
            bail!("cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok::<String, anyhow::Error>(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let used = || -> anyhow::Result<u64> {
        let v: serde_json::Value = serde_json::from_str(&run(&["nodes", "--json"])?)?;
        v["used"].as_u64().context("used in `cairn nodes --json`")
    };
    let disk =
        |net: &Devnet| -> u64 { net.state.nodes.iter().map(|n| dir_bytes(&n.data_dir)).sum() };
    run(&["key", "generate"])?;
    let each = (size / objects) as usize;
    eprintln!(
        "uploading {objects} objects of {} MiB ({k}+{m}) ...",
        each >> 20
    );
    let mut cids = Vec::new();
    for n in 0..objects {
        let file = work.join("object.bin");
        std::fs::write(&file, cairn_testkit::data::bytes(each, 100 + n))?;
        let cid = run(&[
            "put",
            "--k",
            &k.to_string(),
            "--m",
            &m.to_string(),
            "--lease",
            "1h",
            file.to_str().context("path")?,
        ])?
        .trim()
        .to_string();
        std::fs::remove_file(&file)?;
        cids.push(cid);
    }
    let (gone, kept) = cids.split_at(released as usize);
    // Past every upload hold (3 epochs of 2 s) and the grace: only the leases hold now.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let used_before = used()?;
    let disk_before = disk(&net);
    eprintln!("releasing {released} of {objects} objects ...");
    let start = Instant::now();
    let mut args = vec!["release"];
    args.extend(gone.iter().map(String::as_str));
    run(&args)?;
    let fraction = (objects - released) as f64 / objects as f64;
    let want = (used_before as f64 * fraction) as u64;
    // The kept objects' shards are as large as the released ones' (same sizes, same code),
    // to the byte: `used` must come down to exactly `want` give or take the rounding above.
    let used_done = loop {
        let now = used()?;
        if now <= want + objects {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("used is {now}, not {want}, 10 minutes after the release");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let used_after = used()?;
    let freed = used_before - used_after;
    let disk_done = loop {
        let now = disk(&net);
        if disk_before.saturating_sub(now) >= freed * 9 / 10 {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!(
                "the data directories shrank only {} of {freed} bytes",
                disk_before - now
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let disk_after = disk(&net);
    for (n, cid) in kept.iter().enumerate() {
        let out = work.join("back.bin");
        run(&["get", cid, "-o", out.to_str().context("path")?])?;
        let want = cairn_testkit::data::bytes(each, 100 + released + n as u64);
        let got = std::fs::read(&out)?;
        std::fs::remove_file(&out)?;
        if got != want {
            bail!("kept object {cid} did not read back whole");
        }
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "| stored | code | released | used before → after | `used` down after | data dirs before → after | dirs down after |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} MiB in {objects} objects | {k}+{m} | {released} | {:.1} → {:.1} MiB | {:.1} s | {:.1} → {:.1} MiB | {:.1} s |",
        size >> 20,
        mib(used_before),
        mib(used_after),
        used_done.as_secs_f64(),
        mib(disk_before),
        mib(disk_after),
        disk_done.as_secs_f64(),
    );
    net.stop().await;
    Ok(())
}
