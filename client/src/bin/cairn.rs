//! `cairn`: the Cairn command-line tool.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_chunker::manifest::{Location, Source};
use cairn_chunker::{Cid, cids};
use cairn_client::devnet::{Devnet, DevnetConfig, DevnetState};
use cairn_client::get::{Incidents, Manifest, fetch_manifest, read_dataset, read_object_to};
use cairn_client::network::Network;
use cairn_client::output::FileSink;
use cairn_client::put::{Input, Progress, PutOptions, put_dir, put_object};
use cairn_client::{keys, verify};
use cairn_wire::protocol::NodeInfo;
use clap::{Args, Parser, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::json;

/// Whether `path` is a character device or a FIFO (`/dev/null`, a named pipe), which a get
/// writes into as it is rather than replacing.
fn is_device_or_pipe(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_char_device() || t.is_fifo()
    })
}

/// Writes a line to stdout; a closed pipe (`cairn ls | head`) ends the program quietly.
fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cairn: writing output: {e}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(format_args!($($t)*)) };
}

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: peer-to-peer storage for AI training data"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// A node to join through: a multiaddr ending in /p2p/<peer id> (repeatable).
    #[arg(
        long = "peer",
        global = true,
        env = "CAIRN_PEERS",
        value_delimiter = ','
    )]
    peers: Vec<String>,
    /// A devnet directory: its devnet.json lists the nodes.
    #[arg(long, global = true, env = "CAIRN_DEVNET")]
    devnet: Option<PathBuf>,
    /// Machine-readable output on stdout (no progress bars).
    #[arg(long, global = true)]
    json: bool,
    /// The uploader key (default: $CAIRN_KEY, else ~/.config/cairn/key).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the uploader identity that signs what you publish.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Upload a file (an object) or a directory (a dataset); prints its CID.
    Put {
        /// File or directory.
        path: PathBuf,
        #[command(flatten)]
        shape: Shape,
        /// Content type of a single file.
        #[arg(long)]
        content_type: Option<String>,
        /// Where the data came from (URL, DOI...), recorded in the signed provenance.
        #[arg(long)]
        source: Option<String>,
        /// Licence of the data (SPDX id), recorded with --source.
        #[arg(long, requires = "source")]
        license: Option<String>,
        /// Also make the upload visible over S3 in this bucket (created if missing) through the
        /// gateway: a file as s3://BUCKET/PREFIX/NAME, a directory's files as s3://BUCKET/PREFIX/PATH.
        /// Their ETags are their MD5s, as S3 gives them, computed while uploading.
        #[arg(long)]
        bucket: Option<String>,
        /// Key prefix under --bucket.
        #[arg(long, default_value = "", requires = "bucket")]
        prefix: String,
        /// The gateway's admin address (default: the devnet's gateway).
        #[arg(long, env = "CAIRN_GATEWAY", requires = "bucket")]
        gateway: Option<String>,
        /// The gateway's admin token: its secret key (default: the devnet's).
        #[arg(
            long,
            env = "CAIRN_GATEWAY_TOKEN",
            hide_env_values = true,
            requires = "bucket"
        )]
        gateway_token: Option<String>,
    },
    /// Download an object to a file, or a dataset to a directory; every byte is verified.
    Get {
        /// Object or dataset CID.
        cid: String,
        /// Output file or directory (default: ./<CID>); `-` writes an object to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite an existing output.
        #[arg(long)]
        force: bool,
        /// Only bytes START-END (inclusive, like HTTP ranges) of an object.
        #[arg(long)]
        range: Option<String>,
    },
    /// List a dataset's files (or describe an object).
    Ls {
        /// Dataset or object CID.
        cid: String,
    },
    /// Show an object's layout: size, code, every stripe's shards and which nodes hold them.
    Stat {
        /// Object CID.
        cid: String,
    },
    /// List the storage nodes this client sees: label, shards, space used and free.
    Nodes,
    /// Re-fetch and check everything: signature, every shard on every node, parity, BLAKE3.
    Verify {
        /// Object or dataset CID.
        cid: String,
    },
    /// Print a file's raw CID (its BLAKE3, as b3sum), or with --object the CID `put` would give.
    Cid {
        /// File (or directory with --object).
        path: PathBuf,
        /// The manifest CID `cairn put` would produce (nothing is uploaded).
        #[arg(long)]
        object: bool,
        #[command(flatten)]
        shape: Shape,
    },
    /// Start a local network of cairn-node processes on 127.0.0.1 (Ctrl-C stops them all).
    Devnet {
        /// Number of storage nodes.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
        /// Directory for the nodes' data and devnet.json (reused if it exists).
        #[arg(long, default_value = ".cairn-devnet")]
        dir: PathBuf,
        /// Capacity of each node.
        #[arg(long, default_value = "20GiB")]
        capacity: String,
        /// Port of the S3 gateway on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 9000)]
        gateway_port: u16,
        /// Run only the nodes, without the S3 gateway.
        #[arg(long)]
        no_gateway: bool,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a new key (mode 0600).
    Generate,
    /// Print the public key and where the key file is.
    Show,
}

#[derive(Args, Clone)]
struct Shape {
    /// Data shards per stripe (default: 4, or 10 on networks of 14+ nodes).
    #[arg(long)]
    k: Option<u16>,
    /// Parity shards per stripe (default: 2, or 4 on networks of 14+ nodes).
    #[arg(long)]
    m: Option<u16>,
}

impl Shape {
    fn options(&self, nodes: usize) -> PutOptions {
        let mut o = PutOptions::for_network(nodes);
        if let Some(k) = self.k {
            o.params.erasure.k = k;
        }
        if let Some(m) = self.m {
            o.params.erasure.m = m;
        }
        o
    }
}

fn progress_bar(g: &Global, len: u64, what: &str) -> (ProgressBar, Progress) {
    let bar = if g.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(len);
        b.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        b
    };
    let b = bar.clone();
    (bar, Arc::new(move |n| b.inc(n)))
}

fn parse_cid(text: &str) -> anyhow::Result<Cid> {
    cids::parse(text).with_context(|| format!("{text:?} is not a Cairn CID"))
}

async fn network(g: &Global) -> anyhow::Result<Network> {
    let mut peers: Vec<String> = g.peers.clone();
    if peers.is_empty()
        && let Some(dir) = &g.devnet
    {
        let state = DevnetState::read(dir)?;
        peers = state.nodes.iter().map(|n| n.multiaddr.clone()).collect();
    }
    let addrs = peers
        .iter()
        .map(|p| p.parse().with_context(|| format!("--peer {p:?} is not a multiaddr (e.g. /ip4/1.2.3.4/udp/4001/quic-v1/p2p/12D3...)")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Network::connect(&addrs).await?)
}

fn key_path(g: &Global) -> PathBuf {
    g.key.clone().unwrap_or_else(keys::default_path)
}

/// Where a partial download lives until it is complete, so Ctrl-C can remove it.
type Partial = Arc<Mutex<Option<PathBuf>>>;

async fn run(cli: Cli, partial: Partial) -> anyhow::Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Key { action } => {
            let path = key_path(g);
            let key = match action {
                KeyAction::Generate => keys::generate(&path)?,
                KeyAction::Show => keys::load(&path)?,
            };
            if g.json {
                out!(
                    "{}",
                    json!({ "public_key": keys::public_hex(&key), "path": path })
                );
            } else {
                if matches!(action, KeyAction::Generate) {
                    out!(
                        "created {} (mode 0600: keep it secret, back it up)",
                        path.display()
                    );
                }
                out!("public key: {}", keys::public_hex(&key));
                out!("key file:   {}", path.display());
            }
        }
        Command::Put {
            path,
            shape,
            content_type,
            source,
            license,
            bucket,
            prefix,
            gateway,
            gateway_token,
        } => {
            let key = keys::load(&key_path(g))?;
            let net = network(g).await?;
            let mut opts = shape.options(net.nodes().len());
            opts.content_type = content_type.clone();
            // Files published over S3 get the ETag S3 clients expect: their MD5.
            opts.md5 = bucket.is_some();
            opts.source = source.as_ref().map(|uri| Source {
                uri: uri.clone(),
                license: license.clone(),
                digest: None,
                note: None,
            });
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // The gateway to publish to is checked before uploading, not after.
            let target = match bucket {
                Some(b) => Some(gateway_target(
                    g,
                    gateway.as_deref(),
                    gateway_token.as_deref(),
                    b,
                )?),
                None => None,
            };
            let (cid, mut report, summary, md5s, incidents) = if meta.is_dir() {
                let total: u64 = cairn_client::put::walk(path)?.iter().map(|f| f.2).sum();
                let (bar, progress) = progress_bar(g, total, "uploading");
                let r = put_dir(Some(&net), &key, path, &opts, progress).await?;
                bar.finish_and_clear();
                (
                    r.cid,
                    json!({"cid": r.cid.to_string(), "kind": "dataset", "files": r.files, "bytes": r.bytes,
                           "packs": r.packs, "objects": r.objects, "shards": r.shards, "manifest_copies": r.manifest_copies}),
                    format!(
                        "dataset: {} files, {} bytes in {} packs + {} objects, {} shards, manifest on {} nodes",
                        r.files, r.bytes, r.packs, r.objects, r.shards, r.manifest_copies
                    ),
                    r.md5,
                    r.incidents,
                )
            } else {
                let (bar, progress) = progress_bar(g, meta.len(), "uploading");
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let r = put_object(
                    Some(&net),
                    &key,
                    Input::Reader(Box::new(file)),
                    &opts,
                    progress,
                )
                .await?;
                bar.finish_and_clear();
                (
                    r.cid,
                    json!({"cid": r.cid.to_string(), "kind": "object", "size": r.manifest.size,
                           "blake3": r.manifest.blake3.to_hex().to_string(), "k": r.manifest.erasure.k,
                           "m": r.manifest.erasure.m, "shards": r.shards, "manifest_copies": r.manifest_copies}),
                    format!(
                        "object: {} bytes, {}+{}, {} shards, manifest on {} nodes",
                        r.manifest.size,
                        r.manifest.erasure.k,
                        r.manifest.erasure.m,
                        r.shards,
                        r.manifest_copies
                    ),
                    r.md5.map(|m| (String::new(), m)).into_iter().collect(),
                    r.incidents,
                )
            };
            // The upload succeeded; what went wrong on the way is worth an operator's look.
            for (peer, n, first) in cairn_client::get::per_node(&incidents) {
                match n {
                    1 => eprintln!("warning: node {peer}: {first}"),
                    n => eprintln!("warning: node {peer}: {first} (and {} more shards)", n - 1),
                }
            }
            report["failed_nodes"] = incidents
                .iter()
                .map(|(p, w)| json!({"node": p.to_string(), "problem": w}))
                .collect();
            if let Some(target) = target {
                // A single file becomes PREFIX/NAME; a directory's files PREFIX/PATH.
                let name = (!meta.is_dir())
                    .then(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .flatten();
                let s3 = import_into_gateway(&target, prefix, name.as_deref(), &cid, &md5s).await?;
                if !g.json {
                    eprintln!(
                        "visible over S3 as s3://{}/{} ({} keys)",
                        target.bucket,
                        s3["first_key"].as_str().unwrap_or(prefix),
                        s3["objects"]
                    );
                }
                report["s3"] = s3;
            }
            if g.json {
                out!("{report}");
            } else {
                eprintln!("{summary}");
                out!("{cid}");
            }
        }
        Command::Get {
            cid,
            output,
            force,
            range,
        } => {
            let cid = parse_cid(cid)?;
            let net = network(g).await?;
            let fetched = fetch_manifest(&net, &cid).await?;
            let incidents = Incidents::default();
            let out = output
                .clone()
                .unwrap_or_else(|| PathBuf::from(cid.to_string()));
            let written = match &fetched.manifest {
                Manifest::Object(m) => {
                    let range = match range {
                        None => None,
                        Some(r) => Some(parse_range(r, m.size)?),
                    };
                    let len = range.as_ref().map_or(m.size, |r| r.end - r.start);
                    let (bar, progress) = progress_bar(g, len, "downloading");
                    let n = if out == Path::new("-") {
                        // Raw writes to fd 1 (no line buffering), batched by the sink.
                        let stdout = std::io::stdout()
                            .as_fd()
                            .try_clone_to_owned()
                            .context("cannot write to stdout")?;
                        let mut sink = FileSink::new(std::fs::File::from(stdout), "writing output");
                        let n =
                            read_object_to(&net, m, range, &mut sink, progress, &incidents).await?;
                        sink.finish().await?;
                        n
                    } else if is_device_or_pipe(&out) {
                        // `-o /dev/null`, a FIFO: nothing to replace, so no --force and no
                        // temporary file.
                        // A FIFO's open waits for its reader: off the runtime's threads.
                        let path = out.clone();
                        let file = tokio::task::spawn_blocking(move || {
                            std::fs::OpenOptions::new().write(true).open(path)
                        })
                        .await?
                        .with_context(|| format!("cannot open {}", out.display()))?;
                        let mut sink = FileSink::new(file, format!("writing {}", out.display()));
                        let n =
                            read_object_to(&net, m, range, &mut sink, progress, &incidents).await?;
                        sink.finish().await?;
                        n
                    } else {
                        if out.exists() && !force {
                            bail!(cairn_client::error::ClientError::Exists(out.clone()));
                        }
                        let tmp = cairn_client::output::partial_path(&out);
                        *partial.lock().unwrap_or_else(|p| p.into_inner()) = Some(tmp.clone());
                        let file = cairn_client::output::create_partial(&tmp)
                            .with_context(|| format!("cannot create {}", tmp.display()))?;
                        let mut sink = FileSink::new(file, format!("writing {}", tmp.display()));
                        let n =
                            read_object_to(&net, m, range, &mut sink, progress, &incidents).await?;
                        let file = sink.finish().await?;
                        tokio::task::spawn_blocking(move || file.sync_all())
                            .await?
                            .with_context(|| format!("syncing {}", tmp.display()))?;
                        tokio::fs::rename(&tmp, &out).await.with_context(|| {
                            format!("renaming {} to {}", tmp.display(), out.display())
                        })?;
                        partial.lock().unwrap_or_else(|p| p.into_inner()).take();
                        n
                    };
                    bar.finish_and_clear();
                    n
                }
                Manifest::Dataset(d) => {
                    if range.is_some() {
                        bail!("--range applies to objects; {cid} is a dataset");
                    }
                    if out.exists() && !force {
                        bail!(cairn_client::error::ClientError::Exists(out.clone()));
                    }
                    let total = d.entries.values().map(|e| e.size).sum();
                    let (bar, progress) = progress_bar(g, total, "downloading");
                    let n = read_dataset(&net, d, &out, progress, &incidents).await?;
                    bar.finish_and_clear();
                    n
                }
            };
            let incidents: Vec<_> = fetched
                .incidents
                .into_iter()
                .chain(incidents.list())
                .collect();
            for (peer, what) in &incidents {
                eprintln!("warning: node {peer} failed: {what}");
            }
            if g.json {
                let inc: Vec<_> = incidents
                    .iter()
                    .map(|(p, w)| json!({"node": p.to_string(), "problem": w}))
                    .collect();
                out!(
                    "{}",
                    json!({"cid": cid.to_string(), "output": out, "bytes": written, "failed_nodes": inc})
                );
            } else if out != Path::new("-") {
                eprintln!("wrote {written} bytes to {} (verified)", out.display());
            }
        }
        Command::Ls { cid } => {
            let cid = parse_cid(cid)?;
            let net = network(g).await?;
            let fetched = fetch_manifest(&net, &cid).await?;
            match fetched.manifest {
                Manifest::Dataset(d) => {
                    if g.json {
                        let entries: Vec<_> = d
                            .entries
                            .iter()
                            .map(|(p, e)| json!({"path": p, "size": e.size, "blake3": e.blake3.to_hex().to_string(), "location": location(&e.location)}))
                            .collect();
                        out!(
                            "{}",
                            json!({"cid": cid.to_string(), "kind": "dataset", "entries": entries})
                        );
                    } else {
                        for (p, e) in &d.entries {
                            out!("{:>12}  {}  {}", e.size, e.blake3.to_hex(), p);
                        }
                    }
                }
                Manifest::Object(m) => {
                    if g.json {
                        out!(
                            "{}",
                            json!({"cid": cid.to_string(), "kind": "object", "size": m.size, "blake3": m.blake3.to_hex().to_string(), "content_type": m.content_type})
                        );
                    } else {
                        out!("{:>12}  {}  (object {})", m.size, m.blake3.to_hex(), cid);
                    }
                }
            }
        }
        Command::Stat { cid } => {
            let cid = parse_cid(cid)?;
            let net = network(g).await?;
            let fetched = fetch_manifest(&net, &cid).await?;
            let mut signers: Vec<String> =
                fetched.provenance.iter().map(|p| p.signer_hex()).collect();
            signers.sort();
            signers.dedup();
            let Manifest::Object(m) = &fetched.manifest else {
                bail!(
                    "{cid} is a dataset: `cairn ls {cid}` lists its files; stat one of their objects"
                );
            };
            let st = verify::stat_object(&net, &cid, m, signers).await;
            if g.json {
                out!("{}", serde_json::to_string(&st)?);
            } else {
                out!("object   {}", st.cid);
                out!("size     {} bytes, b3sum {}", st.size, st.blake3);
                out!(
                    "code     {} {}+{}, shards up to {} bytes{}",
                    st.code,
                    st.k,
                    st.m,
                    st.shard_size,
                    if st.inline { ", inline" } else { "" }
                );
                out!("signed   {}", st.signers.join(", "));
                out!(
                    "manifest on {} node(s): {}",
                    st.manifest_holders.len(),
                    st.manifest_holders.join(", ")
                );
                for s in &st.stripes {
                    out!(
                        "stripe {} ({} of {} shards live, {} needed)",
                        s.index,
                        s.live,
                        s.shards.len(),
                        s.need
                    );
                    for sh in &s.shards {
                        let holders = if sh.holders.is_empty() {
                            "MISSING".to_string()
                        } else {
                            sh.holders.join(", ")
                        };
                        out!(
                            "  [{:>2}] {} {:>8} B  {}",
                            sh.index,
                            sh.cid,
                            sh.len,
                            holders
                        );
                    }
                }
            }
        }
        Command::Nodes => {
            let net = network(g).await?;
            let mut nodes: Vec<&NodeInfo> = net.nodes().iter().map(|n| &n.info).collect();
            nodes.sort_by(|a, b| (&a.label, &a.peer_id).cmp(&(&b.label, &b.peer_id)));
            let (shards, used, free) = nodes.iter().fold((0, 0, 0), |(s, u, f), n| {
                (s + n.shards, u + n.used, f + n.free())
            });
            let full = nodes.iter().filter(|n| n.free() == 0).count();
            if g.json {
                let list: Vec<_> = nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "peer_id": n.peer_id,
                            "label": n.label,
                            "version": n.version,
                            "data_addrs": n.data_addrs,
                            "shards": n.shards,
                            "used": n.used,
                            "capacity": n.capacity,
                            "disk_room": n.disk_room,
                            "free": n.free(),
                        })
                    })
                    .collect();
                out!(
                    "{}",
                    json!({"nodes": list, "shards": shards, "used": used, "free": free, "full": full})
                );
            } else {
                out!(
                    "{:<52}  {:<12}  {:>8}  {:>11}  {:>11}  {:>11}  version",
                    "node",
                    "label",
                    "shards",
                    "used",
                    "free",
                    "capacity"
                );
                for n in &nodes {
                    out!(
                        "{:<52}  {:<12}  {:>8}  {:>11}  {:>11}  {:>11}  {}{}",
                        n.peer_id,
                        n.label.as_deref().unwrap_or("-"),
                        n.shards,
                        HumanBytes(n.used).to_string(),
                        HumanBytes(n.free()).to_string(),
                        HumanBytes(n.capacity).to_string(),
                        n.version,
                        match n.disk_room {
                            Some(room) if room < n.capacity.saturating_sub(n.used) => {
                                "  (limited by its disk)"
                            }
                            _ => "",
                        }
                    );
                }
                out!(
                    "{} nodes{}: {} shards, {} used, {} free",
                    nodes.len(),
                    if full > 0 {
                        format!(" ({full} full)")
                    } else {
                        String::new()
                    },
                    shards,
                    HumanBytes(used),
                    HumanBytes(free)
                );
            }
        }
        Command::Verify { cid } => {
            let cid = parse_cid(cid)?;
            let net = network(g).await?;
            let report = verify::verify(&net, &cid).await;
            if g.json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                for p in &report.problems {
                    out!("PROBLEM: {p}");
                }
                out!(
                    "{}: {} manifests, {} shard copies, {} stripes checked, {} problems",
                    if report.ok() { "OK" } else { "FAILED" },
                    report.manifests,
                    report.shard_copies,
                    report.stripes,
                    report.problems.len()
                );
            }
            if !report.ok() {
                bail!(
                    "{cid} failed verification ({} problems)",
                    report.problems.len()
                );
            }
        }
        Command::Cid {
            path,
            object,
            shape,
        } => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !object {
                if meta.is_dir() {
                    bail!(
                        "{} is a directory: add --object for the dataset CID `cairn put` would give",
                        path.display()
                    );
                }
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(std::fs::File::open(path)?)?;
                let cid = cids::from_hash(cids::Codec::Raw, &hasher.finalize());
                if g.json {
                    out!(
                        "{}",
                        json!({"cid": cid.to_string(), "blake3": hasher.finalize().to_hex().to_string()})
                    );
                } else {
                    out!("{cid}");
                }
            } else {
                // The same code as `put`, without a network: the CIDs agree by construction.
                let key = ed25519_dalek::SigningKey::from_bytes(&[0u8; 32]);
                let opts = shape.options(0);
                let quiet: Progress = Arc::new(|_| {});
                let cid = if meta.is_dir() {
                    put_dir(None, &key, path, &opts, quiet).await?.cid
                } else {
                    let file = std::fs::File::open(path)?;
                    put_object(None, &key, Input::Reader(Box::new(file)), &opts, quiet)
                        .await?
                        .cid
                };
                if g.json {
                    out!(
                        "{}",
                        json!({"cid": cid.to_string(), "k": opts.params.erasure.k, "m": opts.params.erasure.m})
                    );
                } else {
                    out!("{cid}");
                }
            }
        }
        Command::Devnet {
            nodes,
            dir,
            capacity,
            gateway_port,
            no_gateway,
        } => {
            let gateway = (!*no_gateway).then_some(*gateway_port);
            devnet(*nodes, dir, capacity.clone(), gateway, g.json).await?
        }
    }
    Ok(())
}

fn location(l: &Location) -> serde_json::Value {
    match l {
        Location::Object(c) => json!({"object": c.to_string()}),
        Location::Packed { pack, offset } => json!({"pack": pack.to_string(), "offset": offset}),
        Location::Inline(b) => json!({"inline": b.len()}),
    }
}

/// `START-END` (inclusive), `START-` or `-SUFFIX`, as HTTP ranges.
fn parse_range(text: &str, size: u64) -> anyhow::Result<std::ops::Range<u64>> {
    let bad = || {
        anyhow::anyhow!(
            "--range {text:?}: use START-END (inclusive), START- or -LAST_N within {size} bytes"
        )
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let range = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            size.saturating_sub(n)..size
        }
        (a, "") => a.parse::<u64>().map_err(|_| bad())?..size,
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            a..b.saturating_add(1).min(size)
        }
    };
    if range.start >= range.end {
        return Err(bad());
    }
    Ok(range)
}

async fn devnet(
    nodes: u16,
    dir: &Path,
    capacity: String,
    gateway_port: Option<u16>,
    json: bool,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    let node_binary = exe.with_file_name("cairn-node");
    let gateway = gateway_port.map(|p| (exe.with_file_name("cairn-gateway"), p));
    let dir = std::path::absolute(dir).context("resolving --dir")?;
    if !json {
        eprintln!("starting {nodes} nodes in {} ...", dir.display());
    }
    let mut net = Devnet::start(DevnetConfig {
        nodes: nodes.into(),
        dir: dir.clone(),
        node_binary,
        capacity,
        converge_timeout: Duration::from_secs(60),
        gateway,
    })
    .await?;
    if json {
        out!("{}", serde_json::to_string(&net.state)?);
    } else {
        out!("Cairn devnet: {nodes} nodes on 127.0.0.1, every node sees the others\n");
        out!(
            "  {:<5} {:<8} {:<54} {:<22} admin",
            "node",
            "pid",
            "peer id",
            "data"
        );
        for (i, n) in net.state.nodes.iter().enumerate() {
            out!(
                "  {:<5} {:<8} {:<54} {:<22} http://{}",
                i,
                n.pid,
                n.peer_id,
                n.data_addr,
                n.admin
            );
        }
        out!("\n  bootstrap peer: {}", net.state.nodes[0].multiaddr);
        out!(
            "  state file:     {}",
            dir.join(cairn_client::devnet::STATE_FILE).display()
        );
        out!("  node logs:      {}/node-*/node.log", dir.display());
        if let Some(gw) = &net.state.gateway {
            out!("\nS3 gateway (SigV4, path-style or BUCKET.localhost virtual hosts):");
            out!("  endpoint:   {}", gw.endpoint);
            out!("  access key: {}", gw.access_key);
            out!("  secret key: {}", gw.secret_key);
            out!("  region:     us-east-1 (any region is accepted)");
            out!("  admin:      http://{} (/health, /metrics)", gw.admin);
            out!("  log:        {}", gw.log.display());
            out!(
                "  try:        AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {} s3 ls",
                gw.access_key,
                gw.secret_key,
                gw.endpoint
            );
        }
        out!(
            "\nTry: cairn key generate && cairn --devnet {} put FILE",
            dir.display()
        );
        out!("Ctrl-C stops every node.");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            exited = net.wait_any_exit() => {
                if let Some((which, status)) = exited {
                    eprintln!("{which} exited ({status}); the rest keep running");
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => break,
                        _ = term.recv() => break,
                    }
                }
            }
        }
    }
    eprintln!(
        "stopping {} nodes{} ...",
        net.state.nodes.len(),
        if net.state.gateway.is_some() {
            " and the gateway"
        } else {
            ""
        }
    );
    net.stop().await;
    eprintln!("devnet stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let partial: Partial = Arc::new(Mutex::new(None));
    let is_devnet = matches!(cli.command, Command::Devnet { .. });
    let result = rt.block_on(async {
        if is_devnet {
            // The devnet handles Ctrl-C itself, to stop its nodes.
            return Some(run(cli, partial.clone()).await);
        }
        tokio::select! {
            r = run(cli, partial.clone()) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // A blocking thread stuck in a system call (a FIFO nobody opens) must not keep an
    // interrupted command from exiting.
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            if let Some(p) = partial.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = std::fs::remove_file(p);
            }
            if output_closed(&e) {
                // `cairn get CID -o - | head -c 100`: the reader has what it wanted.
                return ExitCode::SUCCESS;
            }
            eprintln!("cairn: error: {e:#}");
            ExitCode::FAILURE
        }
        None => {
            if let Some(p) = partial.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = std::fs::remove_file(p);
            }
            eprintln!("cairn: interrupted");
            ExitCode::from(130)
        }
    }
}

/// Whether `e` is stdout (or the output pipe) having been closed by its reader.
fn output_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<cairn_client::error::ClientError>(),
            Some(cairn_client::error::ClientError::Io { what, source })
                if what == "writing output" && source.kind() == std::io::ErrorKind::BrokenPipe
        )
    })
}

/// Where `cairn put --bucket` publishes.
struct GatewayTarget {
    admin: std::net::SocketAddr,
    token: String,
    bucket: String,
}

fn gateway_target(
    g: &Global,
    admin: Option<&str>,
    token: Option<&str>,
    bucket: &str,
) -> anyhow::Result<GatewayTarget> {
    let devnet = g
        .devnet
        .as_ref()
        .and_then(|d| DevnetState::read(d).ok())
        .and_then(|s| s.gateway);
    let admin = match (admin, &devnet) {
        (Some(a), _) => a
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| {
                format!("--gateway {a:?}: use the admin address, e.g. 127.0.0.1:9001")
            })?,
        (None, Some(d)) => d.admin,
        (None, None) => bail!(
            "--bucket needs a gateway: pass --gateway ADMIN_ADDR --gateway-token SECRET, or --devnet DIR of a devnet that runs one"
        ),
    };
    let token = match (token, &devnet) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.secret_key.clone(),
        (None, None) => bail!(
            "--bucket needs the gateway's secret key: pass --gateway-token or set CAIRN_GATEWAY_TOKEN"
        ),
    };
    Ok(GatewayTarget {
        admin,
        token,
        bucket: bucket.to_string(),
    })
}

async fn import_into_gateway(
    t: &GatewayTarget,
    prefix: &str,
    name: Option<&str>,
    cid: &Cid,
    md5s: &BTreeMap<String, [u8; 16]>,
) -> anyhow::Result<serde_json::Value> {
    let key = name.map(|n| {
        if prefix.is_empty() || prefix.ends_with('/') {
            format!("{prefix}{n}")
        } else {
            format!("{prefix}/{n}")
        }
    });
    let etags: BTreeMap<&str, String> = md5s
        .iter()
        .map(|(path, m)| (path.as_str(), cairn_chunker::manifest::hex(m)))
        .collect();
    let body = json!({"bucket": t.bucket, "prefix": prefix, "key": key, "cid": cid.to_string(),
                      "etags": etags});
    let (code, text) = cairn_wire::admin::http_request(
        t.admin,
        "POST",
        "/import",
        &[
            ("Authorization", &format!("Bearer {}", t.token)),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
        Duration::from_secs(120),
    )
    .await
    .with_context(|| format!("reaching the gateway at http://{}", t.admin))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": text}));
    if code != 200 {
        bail!(
            "the upload ({cid}) succeeded, but the gateway refused to publish it: HTTP {code}: {}",
            v["error"].as_str().unwrap_or("")
        );
    }
    v["bucket"] = json!(t.bucket);
    v["first_key"] = json!(key.unwrap_or_else(|| prefix.to_string()));
    Ok(v)
}
