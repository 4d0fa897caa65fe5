//! S3 benchmark: the Cairn gateway on a 6-node devnet beside a local-filesystem S3 server
//! (`s3s-fs`, the baseline), driven by the same `aws-sdk-s3` client in the same run.
//!
//! ```sh
//! # the baseline, built outside the workspace's lockfile:
//! cargo install s3s-fs --version 0.14.1 --features binary --root ~/.cache/cairn/s3s-fs
//! cargo build --release --bins
//! cargo run --release -p cairn-benches --bin s3bench -- [--objects 3] [--size-mib 256] [--big-gib 10]
//! ```
//!
//! Measures, per server: PUT and GET throughput of large objects, time to first byte of 1 MiB
//! range GETs from 32 concurrent clients (p50/p99), 16 KiB object GETs and PUTs per second, and
//! the server's peak resident memory. `--big-gib N` also streams one N GiB object through the
//! gateway (from and to disk) and reports the gateway's peak memory. Prints a Markdown table.
//! `--rounds N` runs both servers side by side and measures them in turn, N rounds in alternating
//! order, and prints each round's ratios and their median: on a shared VM whose speed drifts,
//! the paired figures are the ones to compare. `--keep-log FILE` keeps the gateway's log, and the
//! nodes' logs as `FILE.node0` … (run with
//! `CAIRN_GW_LOG=info,cairn_gateway=debug CAIRN_LOG=info,cairn_node::data=debug` for per-read
//! timings on both sides).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use cairn_client::devnet::{Devnet, DevnetConfig};

struct Args {
    objects: usize,
    size_mib: usize,
    ranges_per_client: usize,
    clients: usize,
    small: usize,
    big_gib: u64,
    s3s_fs: PathBuf,
    keep_log: Option<PathBuf>,
    rounds: usize,
}

fn args() -> anyhow::Result<Args> {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let mut a = Args {
        objects: 3,
        size_mib: 256,
        ranges_per_client: 16,
        clients: 32,
        small: 1000,
        big_gib: 0,
        s3s_fs: home.join(".cache/cairn/s3s-fs/bin/s3s-fs"),
        keep_log: None,
        rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--objects" => a.objects = val()?.parse()?,
            "--size-mib" => a.size_mib = val()?.parse()?,
            "--ranges" => a.ranges_per_client = val()?.parse()?,
            "--clients" => a.clients = val()?.parse()?,
            "--small" => a.small = val()?.parse()?,
            "--big-gib" => a.big_gib = val()?.parse()?,
            "--s3s-fs" => a.s3s_fs = val()?.into(),
            "--keep-log" => a.keep_log = Some(val()?.into()),
            "--rounds" => a.rounds = val()?.parse::<usize>()?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn client(endpoint: &str, access: &str, secret: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access, secret, None, None, "bench"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        // Measure the servers, not the client's CRC32 of every byte.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    cairn_testkit::data::bytes(len, seed)
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default, Debug)]
struct Figures {
    put_mbs: f64,
    get_mbs: f64,
    range_p50: Duration,
    range_p99: Duration,
    /// p99 without each client's first request (all clients start at once).
    range_p99_running: Duration,
    range_mbs: f64,
    small_put_per_s: f64,
    small_get_per_s: f64,
    peak_rss_mib: f64,
}

async fn measure(s3: &Client, a: &Args, pid: u32, bucket: &str) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let size = a.size_mib << 20;
    s3.create_bucket().bucket(bucket).send().await?;

    // Large PUTs, distinct bytes per object (no deduplication to help).
    let bodies: Vec<Bytes> = (0..a.objects)
        .map(|i| Bytes::from(random(size, 1 + i as u64)))
        .collect();
    let t = Instant::now();
    for (i, b) in bodies.iter().enumerate() {
        s3.put_object()
            .bucket(bucket)
            .key(format!("big/{i}"))
            .body(ByteStream::from(b.clone()))
            .send()
            .await
            .context("large PUT")?;
    }
    f.put_mbs = (a.objects * size) as f64 / t.elapsed().as_secs_f64() / 1e6;

    // Large GETs, two passes.
    let t = Instant::now();
    let mut total = 0usize;
    for _pass in 0..2 {
        for i in 0..a.objects {
            let mut out = s3
                .get_object()
                .bucket(bucket)
                .key(format!("big/{i}"))
                .send()
                .await
                .context("large GET")?;
            while let Some(chunk) = out.body.try_next().await? {
                total += chunk.len();
            }
        }
    }
    if total != 2 * a.objects * size {
        bail!("large GETs returned {total} bytes");
    }
    f.get_mbs = total as f64 / t.elapsed().as_secs_f64() / 1e6;

    // 1 MiB range GETs from concurrent clients; time to first byte.
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..a.clients {
        let (s3, bucket) = (s3.clone(), bucket.to_string());
        let (objects, n) = (a.objects, a.ranges_per_client);
        tasks.spawn(async move {
            let mut rng = cairn_testkit::data::Xorshift::new(c as u64);
            let mut ttfb = Vec::with_capacity(n);
            for seq in 0..n {
                let x = rng.next_u64();
                let obj = (x % objects as u64) as usize;
                let start = (x >> 16) % (size as u64 - (1 << 20));
                let sent = Instant::now();
                let mut out = s3
                    .get_object()
                    .bucket(&bucket)
                    .key(format!("big/{obj}"))
                    .range(format!("bytes={start}-{}", start + (1 << 20) - 1))
                    .send()
                    .await?;
                let mut got = 0;
                let mut first = None;
                while let Some(chunk) = out.body.try_next().await? {
                    first.get_or_insert_with(|| sent.elapsed());
                    got += chunk.len();
                }
                if got != 1 << 20 {
                    anyhow::bail!("range GET returned {got} bytes");
                }
                ttfb.push((first.unwrap_or_else(|| sent.elapsed()), seq, sent));
            }
            Ok::<_, anyhow::Error>(ttfb)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    f.range_mbs = (all.len() << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    all.sort();
    for (d, seq, sent) in all.iter().rev().take(10) {
        eprintln!(
            "  slow: {} request #{seq} sent at {:.0} ms",
            ms(*d),
            (*sent - t).as_secs_f64() * 1e3
        );
    }
    let running: Vec<Duration> = all
        .iter()
        .filter(|(_, seq, _)| *seq > 0)
        .map(|(d, _, _)| *d)
        .collect();
    f.range_p99_running = percentile(&running, 0.99);
    let all: Vec<Duration> = all.into_iter().map(|(d, _, _)| d).collect();
    f.range_p50 = percentile(&all, 0.50);
    f.range_p99 = percentile(&all, 0.99);

    // 16 KiB objects, 32 requests in flight.
    let small = Arc::new(random(16 << 10, 99));
    let run = |get: bool| {
        let (s3, bucket) = (s3.clone(), bucket.to_string());
        let small = small.clone();
        let (n, clients) = (a.small, a.clients);
        async move {
            let t = Instant::now();
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients {
                let (s3, small, next) = (s3.clone(), small.clone(), next.clone());
                let bucket = bucket.clone();
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return Ok::<_, anyhow::Error>(());
                        }
                        let key = format!("small/{i:06}");
                        if get {
                            let out = s3.get_object().bucket(&bucket).key(key).send().await?;
                            let b = out.body.collect().await?.into_bytes();
                            if b.len() != small.len() {
                                anyhow::bail!("small GET returned {} bytes", b.len());
                            }
                        } else {
                            let mut body = small.as_ref().clone();
                            body[..8].copy_from_slice(&(i as u64).to_le_bytes());
                            s3.put_object()
                                .bucket(&bucket)
                                .key(key)
                                .body(ByteStream::from(body))
                                .send()
                                .await?;
                        }
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            Ok::<_, anyhow::Error>(n as f64 / t.elapsed().as_secs_f64())
        }
    };
    f.small_put_per_s = run(false).await?;
    f.small_get_per_s = run(true).await?;
    f.peak_rss_mib = peak_rss_mib(pid);
    Ok(f)
}

/// Streams an N GiB file through the gateway (multipart PUT from disk, GET counted) and returns
/// (put MB/s, get MB/s).
async fn big_object(s3: &Client, work: &Path, gib: u64) -> anyhow::Result<(f64, f64)> {
    let path = work.join("big-object.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&path)?);
        let block = random(64 << 20, 7);
        let mut h = blake3::Hasher::new();
        for i in 0..gib * 16 {
            let mut b = block.clone();
            b[..8].copy_from_slice(&i.to_le_bytes());
            h.update(&b);
            f.write_all(&b)?;
        }
        f.flush()?;
    }
    let size = gib << 30;
    // Over 5 GiB must be multipart (as on S3): 64 MiB parts, read from the file.
    let part: u64 = 64 << 20;
    let t = Instant::now();
    let id = s3
        .create_multipart_upload()
        .bucket("bench")
        .key("huge")
        .send()
        .await?
        .upload_id()
        .context("no upload id")?
        .to_string();
    let mut done = aws_sdk_s3::types::CompletedMultipartUpload::builder();
    for (n, offset) in (0..size).step_by(part as usize).enumerate() {
        let body = ByteStream::read_from()
            .path(&path)
            .offset(offset)
            .length(aws_sdk_s3::primitives::Length::Exact(
                part.min(size - offset),
            ))
            .build()
            .await?;
        let etag = s3
            .upload_part()
            .bucket("bench")
            .key("huge")
            .upload_id(&id)
            .part_number(n as i32 + 1)
            .body(body)
            .send()
            .await
            .context("big PUT part")?
            .e_tag()
            .unwrap_or_default()
            .to_string();
        done = done.parts(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n as i32 + 1)
                .e_tag(etag)
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket("bench")
        .key("huge")
        .upload_id(&id)
        .multipart_upload(done.build())
        .send()
        .await
        .context("big PUT complete")?;
    let put = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    let _ = std::fs::remove_file(&path);
    let t = Instant::now();
    let mut out = s3.get_object().bucket("bench").key("huge").send().await?;
    let mut n = 0u64;
    while let Some(chunk) = out.body.try_next().await? {
        n += chunk.len() as u64;
    }
    if n != size {
        bail!("big GET returned {n} of {size} bytes");
    }
    Ok((put, size as f64 / t.elapsed().as_secs_f64() / 1e6))
}

/// Starts `s3s-fs` over `root` on a free port: the process and a client to it.
async fn start_baseline(a: &Args, root: &Path) -> anyhow::Result<(tokio::process::Child, Client)> {
    std::fs::create_dir_all(root)?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let baseline = tokio::process::Command::new(&a.s3s_fs)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "BASELINEKEY",
            "--secret-key",
            "baseline-secret",
        ])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting s3s-fs")?;
    let base = client(
        &format!("http://127.0.0.1:{port}"),
        "BASELINEKEY",
        "baseline-secret",
    );
    for _ in 0..100 {
        if base.list_buckets().send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((baseline, base))
}

/// Starts a 6-node devnet with the gateway in `dir`, from the binaries beside this one.
async fn start_devnet(dir: PathBuf) -> anyhow::Result<Devnet> {
    let exe = std::env::current_exe()?;
    eprintln!(
        "starting a 6-node devnet with the gateway in {} ...",
        dir.display()
    );
    let net = Devnet::start(DevnetConfig {
        nodes: 6,
        dir,
        node_binary: exe.with_file_name("cairn-node"),
        capacity: "200GiB".into(),
        converge_timeout: Duration::from_secs(60),
        gateway: Some((exe.with_file_name("cairn-gateway"), 0)),
        node_args: Vec::new(),
    })
    .await?;
    Ok(net)
}

/// `--rounds N`: both servers run side by side and are measured in turn, N rounds in
/// alternating order (each round in fresh buckets), so a drift in this shared VM's speed
/// favours neither. Prints each round's ratio (Cairn / s3s-fs) per figure and their median.
async fn paired(a: &Args, work: &Path) -> anyhow::Result<()> {
    let (mut baseline, base) = start_baseline(a, &work.join("s3s-fs")).await?;
    let base_pid = baseline.id().unwrap_or(0);
    let net = start_devnet(work.join("net")).await?;
    let gw = net.state.gateway.clone().context("no gateway")?;
    let cairn = client(&gw.endpoint, &gw.access_key, &gw.secret_key);
    let mut rounds = Vec::new();
    let mut failed = None;
    for r in 0..a.rounds {
        let bucket = format!("bench{r}");
        eprintln!("round {}/{} ...", r + 1, a.rounds);
        let pair = if r % 2 == 0 {
            let b = measure(&base, a, base_pid, &bucket).await;
            (b, measure(&cairn, a, gw.pid, &bucket).await)
        } else {
            let c = measure(&cairn, a, gw.pid, &bucket).await;
            (measure(&base, a, base_pid, &bucket).await, c)
        };
        match pair {
            (Ok(b), Ok(c)) => rounds.push((b, c)),
            (Err(e), _) | (_, Err(e)) => {
                failed = Some(e);
                break;
            }
        }
    }
    net.stop().await;
    let _ = baseline.kill().await;
    if let Some(e) = failed {
        return Err(e);
    }
    type Figure = fn(&Figures) -> f64;
    let rows: [(&str, Figure); 8] = [
        ("PUT large objects", |f| f.put_mbs),
        ("GET large objects", |f| f.get_mbs),
        ("1 MiB range GETs, aggregate", |f| f.range_mbs),
        ("range GET time to first byte p50", |f| {
            f.range_p50.as_secs_f64()
        }),
        ("range GET time to first byte p99", |f| {
            f.range_p99.as_secs_f64()
        }),
        ("(p99 without each client's first request)", |f| {
            f.range_p99_running.as_secs_f64()
        }),
        ("16 KiB PUTs per second", |f| f.small_put_per_s),
        ("16 KiB GETs per second", |f| f.small_get_per_s),
    ];
    println!(
        "Cairn gateway (6 nodes, 4+2) / s3s-fs (local disk), {} paired rounds: {} x {} MiB objects, \
         {} clients x {} ranges, {} small objects",
        rounds.len(),
        a.objects,
        a.size_mib,
        a.clients,
        a.ranges_per_client,
        a.small
    );
    let header: String = (1..=rounds.len())
        .map(|r| format!(" round {r} |"))
        .collect();
    println!("\n| figure |{header} median |");
    println!("|---|{}---|", "---|".repeat(rounds.len()));
    for (name, get) in rows {
        let mut ratios: Vec<f64> = rounds
            .iter()
            .map(|(b, c)| get(c) / get(b).max(1e-9))
            .collect();
        let cells: String = ratios.iter().map(|r| format!(" {r:.2}x |")).collect();
        ratios.sort_by(f64::total_cmp);
        println!("| {name} |{cells} {:.2}x |", ratios[ratios.len() / 2]);
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    if !a.s3s_fs.is_file() {
        bail!(
            "{} not found: cargo install s3s-fs --version 0.14.1 --features binary --root ~/.cache/cairn/s3s-fs (or pass --s3s-fs PATH)",
            a.s3s_fs.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let work = dir.path().to_path_buf();

    if a.rounds > 1 {
        return paired(&a, &work).await;
    }

    // Baseline: s3s-fs over a local directory.
    let fs_root = work.join("s3s-fs");
    let (mut baseline, base) = start_baseline(&a, &fs_root).await?;
    eprintln!("measuring s3s-fs (baseline) ...");
    let base_pid = baseline.id().unwrap_or(0);
    let bf = measure(&base, &a, base_pid, "bench").await?;
    let _ = baseline.kill().await;
    let _ = std::fs::remove_dir_all(&fs_root);

    let net = start_devnet(work.join("net")).await?;
    let gw = net.state.gateway.clone().context("no gateway")?;
    let cairn = client(&gw.endpoint, &gw.access_key, &gw.secret_key);
    eprintln!("measuring the Cairn gateway ...");
    let result = measure(&cairn, &a, gw.pid, "bench").await;
    let big = if a.big_gib > 0 && result.is_ok() {
        eprintln!(
            "streaming a {} GiB object through the gateway ...",
            a.big_gib
        );
        Some(big_object(&cairn, &work, a.big_gib).await)
    } else {
        None
    };
    let big_rss = peak_rss_mib(gw.pid);
    let node_logs: Vec<PathBuf> = net.state.nodes.iter().map(|n| n.log.clone()).collect();
    net.stop().await;
    if let Some(to) = &a.keep_log {
        std::fs::copy(&gw.log, to)
            .with_context(|| format!("copying the gateway log to {}", to.display()))?;
        for (i, log) in node_logs.iter().enumerate() {
            let dest = PathBuf::from(format!("{}.node{i}", to.display()));
            std::fs::copy(log, &dest)
                .with_context(|| format!("copying node {i}'s log to {}", dest.display()))?;
        }
    }
    let cf = result?;

    println!(
        "| {} x {} MiB objects, {} clients x {} ranges, {} small objects | s3s-fs (local disk) | Cairn gateway (6 nodes, 4+2) | ratio |",
        a.objects, a.size_mib, a.clients, a.ranges_per_client, a.small
    );
    println!("|---|---|---|---|");
    let row = |what: &str, b: f64, c: f64, unit: &str| {
        println!("| {what} | {b:.0} {unit} | {c:.0} {unit} | {:.2}x |", c / b);
    };
    row("PUT large objects", bf.put_mbs, cf.put_mbs, "MB/s");
    row("GET large objects", bf.get_mbs, cf.get_mbs, "MB/s");
    row(
        "1 MiB range GETs, aggregate",
        bf.range_mbs,
        cf.range_mbs,
        "MB/s",
    );
    println!(
        "| 1 MiB range GET, time to first byte p50 | {} | {} | {:.2}x |",
        ms(bf.range_p50),
        ms(cf.range_p50),
        cf.range_p50.as_secs_f64() / bf.range_p50.as_secs_f64().max(1e-9)
    );
    println!(
        "| 1 MiB range GET, time to first byte p99 | {} | {} | {:.2}x |",
        ms(bf.range_p99),
        ms(cf.range_p99),
        cf.range_p99.as_secs_f64() / bf.range_p99.as_secs_f64().max(1e-9)
    );
    println!(
        "| (the same p99 without each client's first request) | {} | {} | {:.2}x |",
        ms(bf.range_p99_running),
        ms(cf.range_p99_running),
        cf.range_p99_running.as_secs_f64() / bf.range_p99_running.as_secs_f64().max(1e-9)
    );
    row(
        "16 KiB PUTs",
        bf.small_put_per_s,
        cf.small_put_per_s,
        "obj/s",
    );
    row(
        "16 KiB GETs",
        bf.small_get_per_s,
        cf.small_get_per_s,
        "obj/s",
    );
    row("server peak RSS", bf.peak_rss_mib, cf.peak_rss_mib, "MiB");
    if let Some(big) = big {
        let (put, get) = big?;
        println!(
            "\n{} GiB object through the gateway: PUT {put:.0} MB/s, GET {get:.0} MB/s, gateway peak RSS {big_rss:.0} MiB",
            a.big_gib
        );
    }
    Ok(())
}
