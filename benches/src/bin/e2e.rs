//! End-to-end benchmark: `cairn put` and `cairn get` of a large file and of many small files on
//! a local devnet of real `cairn-node` processes, with where the CPU time goes.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p cairn-benches --bin e2e -- [--size-mib 1024] [--files 10000] [--medium 300]
//! ```
//!
//! Prints a Markdown table (the figures in docs/BENCHMARKS.md come from it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_benches::arg;
use cairn_client::devnet::{Devnet, DevnetConfig};

const TICKS: f64 = 100.0; // USER_HZ

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat are utime and stime; `after` starts at field 3.
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (t(14) + t(15)) / TICKS
}

/// CPU seconds used by this process's waited-for children (the `cairn` commands).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (t(16) + t(17)) / TICKS
}

struct Run {
    what: String,
    wall: Duration,
    client_cpu: f64,
    nodes_cpu: f64,
    bytes: u64,
    files: u64,
}

fn timed(
    what: &str,
    net: &Devnet,
    cmd: &mut Command,
    bytes: u64,
    files: u64,
) -> anyhow::Result<(Run, String)> {
    let nodes_before: f64 = net.state.nodes.iter().map(|n| cpu_of(n.pid)).sum();
    let client_before = children_cpu();
    let start = Instant::now();
    let out = cmd.output().context("running cairn")?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let nodes_after: f64 = net.state.nodes.iter().map(|n| cpu_of(n.pid)).sum();
    Ok((
        Run {
            what: what.to_string(),
            wall,
            client_cpu: children_cpu() - client_before,
            nodes_cpu: nodes_after - nodes_before,
            bytes,
            files,
        },
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn fill(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    // Distinct seeds give distinct files (no accidental duplicates for dedup to skip).
    let mut rng = cairn_testkit::data::Xorshift::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        rng.fill(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Size of the files of the medium-file dataset (over the 256 KiB pack threshold: each is an
/// object of its own, as images or audio clips of a training set would be).
const MEDIUM: u64 = 700 * 1024;

/// Fails unless every file under `a` is under `b` with the same bytes, and `b` has no others.
fn same_tree(a: &Path, b: &Path) -> anyhow::Result<()> {
    fn files(root: &Path) -> anyhow::Result<std::collections::BTreeMap<PathBuf, blake3::Hash>> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(root)?.to_path_buf();
                    out.insert(rel, blake3::hash(&std::fs::read(&p)?));
                }
            }
        }
        Ok(out)
    }
    if files(a)? != files(b)? {
        bail!("{} came back different in {}", a.display(), b.display());
    }
    Ok(())
}

/// Puts the directory `tree` as a dataset (4+2), gets it back beside it, checks every file.
fn dataset_round(
    net: &Devnet,
    run: &dyn Fn(&[&str]) -> Command,
    tree: &Path,
    what: &str,
    files: u64,
    size: u64,
    runs: &mut Vec<Run>,
) -> anyhow::Result<()> {
    let dir = tree.to_str().unwrap_or_default();
    let (r, ds) = timed(
        &format!("put {what}"),
        net,
        &mut run(&["put", dir, "--k", "4", "--m", "2", "--json"]),
        files * size,
        files,
    )?;
    runs.push(r);
    let ds: serde_json::Value = serde_json::from_str(&ds)?;
    eprintln!("dataset: {ds}");
    let ds = ds["cid"].as_str().unwrap_or_default().to_string();
    let out = tree.with_extension("out");
    let (r, _) = timed(
        &format!("get {what}"),
        net,
        &mut run(&["get", &ds, "-o", out.to_str().unwrap_or_default(), "--json"]),
        files * size,
        files,
    )?;
    runs.push(r);
    same_tree(tree, &out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let size = arg("--size-mib", 1024) << 20;
    let files = arg("--files", 10_000);
    let medium = arg("--medium", 300);
    let exe = std::env::current_exe()?;
    let cairn = exe.with_file_name("cairn");
    let node = exe.with_file_name("cairn-node");
    if !cairn.is_file() || !node.is_file() {
        bail!("build the binaries first: cargo build --release --bins");
    }
    let dir = tempfile::tempdir()?;
    let work = dir.path().to_path_buf();
    eprintln!("starting a 6-node devnet in {} ...", work.display());
    let net = Devnet::start(DevnetConfig {
        nodes: 6,
        dir: work.join("net"),
        node_binary: node,
        capacity: "64GiB".into(),
        converge_timeout: Duration::from_secs(60),
        gateway: None,
        node_args: Vec::new(),
    })
    .await?;
    let run = |args: &[&str]| {
        let mut c = Command::new(&cairn);
        c.args(args)
            .env("CAIRN_DEVNET", work.join("net"))
            .env("CAIRN_KEY", work.join("key"));
        c
    };
    run(&["key", "generate"]).output()?;
    let mut runs = Vec::new();

    eprintln!("writing a {} MiB file ...", size >> 20);
    let big = work.join("big.bin");
    fill(&big, size, 7)?;
    let (r, cid) = timed(
        "put 1 file",
        &net,
        run(&[
            "put",
            big.to_str().unwrap_or_default(),
            "--k",
            "4",
            "--m",
            "2",
        ])
        .arg("--json"),
        size,
        1,
    )?;
    runs.push(r);
    let cid: serde_json::Value = serde_json::from_str(&cid)?;
    let cid = cid["cid"].as_str().unwrap_or_default().to_string();
    let out = work.join("big.out");
    let (r, _) = timed(
        "get 1 file",
        &net,
        run(&["get", &cid, "-o", out.to_str().unwrap_or_default()]).arg("--json"),
        size,
        1,
    )?;
    runs.push(r);
    if blake3::hash(&std::fs::read(&big)?) != blake3::hash(&std::fs::read(&out)?) {
        bail!("the large file came back different");
    }
    std::fs::remove_file(&out)?;
    std::fs::remove_file(&big)?;

    eprintln!("writing {files} files of 4 KiB ...");
    let tree: PathBuf = work.join("small");
    for i in 0..files {
        let p = tree.join(format!("d{:03}/f{i:06}.bin", i % 100));
        std::fs::create_dir_all(p.parent().unwrap_or(&tree))?;
        fill(&p, 4096, i + 1)?;
    }
    dataset_round(&net, &run, &tree, "small files", files, 4096, &mut runs)?;

    eprintln!("writing {medium} files of 700 KiB ...");
    let tree: PathBuf = work.join("medium");
    for i in 0..medium {
        let p = tree.join(format!("d{:02}/f{i:05}.bin", i % 10));
        std::fs::create_dir_all(p.parent().unwrap_or(&tree))?;
        fill(&p, MEDIUM, i + 1_000_000)?;
    }
    dataset_round(
        &net,
        &run,
        &tree,
        "700 KiB files",
        medium,
        MEDIUM,
        &mut runs,
    )?;

    println!("| run | wall s | MB/s | files/s | client CPU s | nodes CPU s (6) |");
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        let s = r.wall.as_secs_f64();
        println!(
            "| {} | {:.2} | {:.0} | {} | {:.2} | {:.2} |",
            r.what,
            s,
            r.bytes as f64 / s / 1e6,
            if r.files > 1 {
                format!("{:.0}", r.files as f64 / s)
            } else {
                "-".into()
            },
            r.client_cpu,
            r.nodes_cpu
        );
    }
    net.stop().await;
    Ok(())
}
