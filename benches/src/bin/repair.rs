//! Repair benchmark: how long a devnet of real `cairn-node` processes takes to heal after
//! losing nodes, and how many bytes it moves per byte it rebuilds.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p cairn-benches --bin repair -- \
//!     [--size-mib 1024] [--nodes 8] [--k 4] [--m 2] [--grace-secs 3] [--lose 2]
//! ```
//!
//! Uploads one object of `--size-mib`, then `kill -9`s `--lose` nodes at once and waits until
//! `cairn stat` shows every stripe with all its shards on distinct live nodes. Prints the time
//! to full health (the grace period included: before it a silent node counts as restarting),
//! the bytes the lost nodes held, and the repair bytes read and written (the nodes'
//! `cairn_repair_bytes_{in,out}_total`). Reading `k` shards per stripe rebuilds up to `--lose`
//! shards of it, so bytes read per byte rebuilt are `k / lost-shards-per-stripe` at best.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_benches::arg;
use cairn_client::devnet::{Devnet, DevnetConfig};

/// A counter summed over the nodes' `/metrics`, skipping the dead.
async fn counter(net: &Devnet, name: &str, skip: &[usize]) -> u64 {
    let mut sum = 0;
    for (i, n) in net.state.nodes.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let Ok(text) = metrics(n.admin).await else {
            continue;
        };
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    sum
}

/// A node's `/metrics` text.
async fn metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Whether every stripe has all its shards on distinct reachable nodes.
fn healthy(stat: &serde_json::Value) -> bool {
    stat["stripes"].as_array().is_some_and(|stripes| {
        stripes.iter().all(|stripe| {
            let mut used = std::collections::HashSet::new();
            stripe["shards"].as_array().is_some_and(|shards| {
                shards.iter().all(|s| {
                    s["holders"]
                        .as_array()
                        .and_then(|h| h.iter().find(|p| !used.contains(*p)).cloned())
                        .is_some_and(|p| used.insert(p))
                })
            })
        })
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let size = arg("--size-mib", 1024) << 20;
    let nodes = arg("--nodes", 8) as usize;
    let (k, m) = (arg("--k", 4), arg("--m", 2));
    let grace = arg("--grace-secs", 3);
    let lose = arg("--lose", 2) as usize;
    let exe = std::env::current_exe()?;
    let cairn = exe.with_file_name("cairn");
    let node = exe.with_file_name("cairn-node");
    if !cairn.is_file() || !node.is_file() {
        bail!("build the binaries first: cargo build --release --bins");
    }
    let dir = tempfile::tempdir()?;
    let work = dir.path().to_path_buf();
    eprintln!("starting a {nodes}-node devnet in {} ...", work.display());
    let mut net = Devnet::start(DevnetConfig {
        nodes,
        dir: work.join("net"),
        node_binary: node,
        capacity: "64GiB".into(),
        converge_timeout: Duration::from_secs(60),
        gateway: None,
        node_args: [
            "--repair-interval",
            "1s",
            "--repair-grace",
            &format!("{grace}s"),
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
    run(&["key", "generate"])?;
    let file = work.join("object.bin");
    std::fs::write(&file, cairn_testkit::data::bytes(size as usize, 7))?;
    eprintln!("uploading {} MiB ({k}+{m}) ...", size >> 20);
    let cid = run(&[
        "put",
        "--k",
        &k.to_string(),
        "--m",
        &m.to_string(),
        file.to_str().context("path")?,
    ])?
    .trim()
    .to_string();
    let _ = std::fs::remove_file(&file);
    let stat =
        |run: &dyn Fn(&[&str]) -> anyhow::Result<String>| -> anyhow::Result<serde_json::Value> {
            Ok(serde_json::from_str(&run(&["stat", &cid, "--json"])?)?)
        };
    if !healthy(&stat(&run)?) {
        bail!("the object is not whole right after its upload");
    }
    let victims: Vec<usize> = (nodes - lose..nodes).collect();
    let mut lost_bytes = 0;
    for &i in &victims {
        let st = cairn_client::devnet::status(net.state.nodes[i].admin).await?;
        lost_bytes += st.used;
    }
    let (in0, out0) = (
        counter(&net, "cairn_repair_bytes_in_total", &victims).await,
        counter(&net, "cairn_repair_bytes_out_total", &victims).await,
    );
    eprintln!(
        "killing {lose} node(s) holding {} MiB ...",
        lost_bytes >> 20
    );
    let start = Instant::now();
    for &i in &victims {
        net.kill_node(i).await;
    }
    loop {
        if healthy(&stat(&run)?) {
            break;
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("not healed within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let healed = start.elapsed();
    let read = counter(&net, "cairn_repair_bytes_in_total", &victims).await - in0;
    let written = counter(&net, "cairn_repair_bytes_out_total", &victims).await - out0;
    println!(
        "| stored | code | nodes lost | lost bytes | time to full health (grace {grace} s incl.) | repair read | repair written | read per byte rebuilt |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} MiB | {k}+{m} | {lose} of {nodes} | {:.1} MiB | {:.1} s | {:.1} MiB | {:.1} MiB | {:.2} |",
        size >> 20,
        lost_bytes as f64 / (1 << 20) as f64,
        healed.as_secs_f64(),
        read as f64 / (1 << 20) as f64,
        written as f64 / (1 << 20) as f64,
        read as f64 / written.max(1) as f64,
    );
    net.stop().await;
    Ok(())
}
