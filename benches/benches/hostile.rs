//! Load harness: what one node under hostile peers still gives an honest reader.
//!
//! One real node runs in this process (RocksDB, the quinn data plane, libp2p) on loopback with
//! its default limits, holding 64 shards of 1 MiB. An honest reader (its own key, 127.0.0.1)
//! fetches random shards whole, 8 at once, for two phases of `--secs` each: **idle**, then
//! **attack**, during which, from other loopback addresses (other "hosts"):
//!
//! - `conns`: 1,000 data-plane connections under fresh keys, 125 from each of 127.0.0.2-9,
//!   each proven by a fetch of a tiny shard and held (a tiny fetch every 30 s keeps it from
//!   the node's idle timeout);
//! - `loris`: 100 slow-loris uploaders, 5 from each of 127.0.0.10-29, each announcing a 64 MiB
//!   store and sending 1 byte of body per second, opening another when the node cuts it off;
//! - `control`: a libp2p client keeping 64 `Info` / `List` control requests in flight.
//!
//! `cargo bench -p cairn-benches --bench hostile [-- --secs N] [--json] [--attacks LIST]`:
//! `--secs` is each phase's length (default 20), `--json` prints one JSON object at the end,
//! `--attacks conns,loris,control` runs only some attacks (all by default) to see which hurts.
//!
//! Reported: the honest reader's throughput (MiB/s), per-fetch latency p50/p99, failed fetches
//! and the CPU used, per phase, and the throughput ratio; per attack, what the attackers saw
//! (connections accepted, bodies cut off, control requests answered or refused `Busy`) beside
//! the node's metrics (`cairn_data_connections_refused_total`, `cairn_data_connections`,
//! `cairn_data_slow_bodies_total`, `cairn_data_busy_total`).
//!
//! The target: attack throughput >= 0.5x idle and no failed honest read. The process exits
//! non-zero only if an honest read failed: a load harness, not a timed test, so throughput is
//! reported, not asserted. The node and the honest reader share a 2-worker tokio runtime (as
//! `node.rs` runs); the attackers have their own (other hosts: they share this machine's cores,
//! not the node's task queues).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cairn_chunker::cids::{self, Cid};
use cairn_node::RunningNode;
use cairn_node::config::{Config, Size};
use cairn_node::identity;
use cairn_wire::data::{self, Target};
use cairn_wire::protocol::{ControlRequest, DataRequest, DataResponse, ErrorCode};
use cairn_wire::swarm::{Role, Swarm, SwarmError, SwarmLimits};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::runtime::Runtime;
use tokio::time::{Instant, sleep, timeout_at};

const MIB: usize = 1 << 20;
/// Shards the honest reader reads from.
const SHARDS: u64 = 64;
/// Fetches the honest reader keeps in flight.
const READERS: usize = 8;
/// The tiny shard the connection flood fetches to prove each connection.
const TINY: usize = 1024;
/// Connections the flood opens, spread over [`CONN_IPS`] addresses.
const CONNS: usize = 1000;
const CONN_IPS: usize = 8;
/// Handshakes the flood has under way at once.
const CONNS_AT_ONCE: usize = 100;
/// Slow-loris uploaders, spread over [`LORIS_IPS`] addresses.
const LORIS: usize = 100;
const LORIS_IPS: usize = 20;
/// What each slow-loris body announces.
const LORIS_LEN: u64 = 64 << 20;
/// Control requests kept in flight.
const CONTROL_IN_FLIGHT: usize = 64;

struct Args {
    secs: u64,
    json: bool,
    /// The attacks to run: some of `conns,loris,control`.
    attacks: Vec<String>,
}

impl Args {
    /// Takes what it knows of the command line (cargo adds `--bench`).
    fn parse() -> Result<Self> {
        let args: Vec<String> = std::env::args().collect();
        let value = |name: &str| Some(args.get(args.iter().position(|a| a == name)? + 1)?.clone());
        let secs = value("--secs").map_or(Ok(20), |s| s.parse().context("--secs"))?;
        let attacks = value("--attacks").unwrap_or_else(|| "conns,loris,control".into());
        let attacks: Vec<String> = attacks.split(',').map(|a| a.trim().to_string()).collect();
        let known = |a: &String| REPORT.iter().any(|r| r.split(':').next() == Some(a));
        if let Some(bad) = attacks.iter().find(|a| !known(a)) {
            bail!("unknown attack {bad:?} (known: conns, loris, control)");
        }
        let json = args.iter().any(|a| a == "--json");
        Ok(Self {
            secs,
            json,
            attacks,
        })
    }

    fn on(&self, attack: &str) -> bool {
        self.attacks.iter().any(|a| a == attack)
    }
}

/// A runtime whose threads are named `name` (see [`cpu`]).
fn runtime(name: &str) -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .event_interval(cairn_wire::daemon::EVENT_INTERVAL)
        .enable_all()
        .build()?)
}

/// A small xorshift generator: which shard to read next.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The node, as `node/tests/common` starts one, with room for the test.
async fn start_node(dir: &std::path::Path) -> Result<RunningNode> {
    let key = identity::create(&dir.join(identity::KEY_FILE))?;
    let mut cfg = Config::default();
    cfg.network.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
    cfg.network.data_listen = "127.0.0.1:0".into();
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg.storage.capacity = Size(4 << 30);
    cfg.storage.sync_writes = false;
    cfg.storage.scrub_rate = Size(0);
    Ok(RunningNode::start(dir, &cfg.check()?, key, None).await?)
}

fn client_on(ip: IpAddr) -> Result<data::Client> {
    Ok(data::Client::bind_on(Keypair::generate_ed25519(), ip)?)
}

/// The node's `/metrics` text.
async fn metrics(node: &RunningNode) -> Result<String> {
    let (code, text) =
        cairn_wire::admin::http_get(node.info.admin, "/metrics", Duration::from_secs(5)).await?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    Ok(text)
}

/// The sum of the metric `name` over its labels in `text`, 0 if absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.chars().next()? {
                ' ' => rest,
                '{' => rest.split_once('}')?.1,
                _ => return None,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// CPU seconds this process has used: in all, by the threads named `node` (the node's runtime,
/// with the honest reader) and by those named `attackers`. The rest is RocksDB's and the
/// blocking pools'. (Linux; 0 elsewhere.)
fn cpu() -> [f64; 3] {
    // "pid (name) state ...": utime and stime are the 12th and 13th fields after the name.
    let ticks = |path: std::path::PathBuf| -> Option<(String, f64)> {
        let stat = std::fs::read_to_string(path).ok()?;
        let (head, rest) = stat.rsplit_once(") ")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((head.split_once(" (")?.1.to_string(), t / 100.0))
    };
    let mut cpu = [0.0; 3];
    cpu[0] = ticks("/proc/self/stat".into()).map_or(0.0, |t| t.1);
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    for task in tasks.flatten() {
        match ticks(task.path().join("stat")) {
            Some((name, t)) if name.starts_with("node") => cpu[1] += t,
            Some((name, t)) if name.starts_with("attackers") => cpu[2] += t,
            _ => {}
        }
    }
    cpu
}

/// What the honest reader saw in one phase.
#[derive(Default)]
struct Reads {
    /// CPU seconds used during the phase ([`cpu`]).
    cpu: [f64; 3],
    secs: f64,
    bytes: u64,
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

impl Reads {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.secs.max(1e-9)
    }

    /// The `q` quantile of the latencies, in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len().max(1) - 1) as f64 * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mib_s": self.mib_s(), "fetches": self.latencies.len(), "p50_ms": self.ms(0.5),
            "p99_ms": self.ms(0.99), "failed": self.errors.len(), "errors": self.errors,
            "cpu_s": self.cpu[0], "cpu_node_s": self.cpu[1], "cpu_attackers_s": self.cpu[2],
        })
    }
}

/// Fetches random shards whole, [`READERS`] at once, until `deadline`.
async fn read_until(
    reader: &data::Client,
    target: Target,
    shards: &Arc<Vec<Cid>>,
    deadline: Instant,
) -> Result<Reads> {
    let started = Instant::now();
    let workers: Vec<_> = (0..READERS)
        .map(|w| {
            let (reader, shards) = (reader.clone(), shards.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) * 0x1234_5678_9abc));
                let mut reads = Reads::default();
                while Instant::now() < deadline {
                    let cid = shards[rng.below(shards.len())];
                    let t = Instant::now();
                    match reader.fetch(&target, &cid, Some(MIB as u64), None).await {
                        Ok(got) if got.len() == MIB => {
                            reads.bytes += MIB as u64;
                            reads.latencies.push(t.elapsed());
                        }
                        Ok(got) => reads.errors.push(format!("{} bytes, not {MIB}", got.len())),
                        Err(e) => reads.errors.push(format!("after {:?}: {e}", t.elapsed())),
                    }
                }
                reads
            })
        })
        .collect();
    let mut all = Reads::default();
    for w in workers {
        let r = w.await?;
        all.bytes += r.bytes;
        all.latencies.extend(r.latencies);
        all.errors.extend(r.errors);
    }
    all.secs = started.elapsed().as_secs_f64();
    Ok(all)
}

/// What the report says of each attack, in order: counters the attackers keep (their
/// failures are expected: counted, not raised) and the node's metrics.
const REPORT: [&str; 3] = [
    "conns: accepted,failed,unfinished,node refused,node held at end",
    "loris: opened,cut off,node slow bodies,ended otherwise,failed opens",
    "control: answered,busy,failed,node data busy",
];

/// The attackers' counters ("conns accepted", ...), and their failures by reason.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<String, u64>>,
    why: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn add_n(&self, what: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(what.into()).or_default() += n;
    }

    fn add(&self, what: &str) {
        self.add_n(what, 1);
    }

    fn get(&self, what: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(what).copied().unwrap_or(0)
    }

    /// Counts `what`, and why it failed at `step` (the first 80 characters).
    fn failed(&self, what: &str, step: &str, e: impl std::fmt::Display) {
        self.add(what);
        let reason: String = format!("{what} ({step}): {e}").chars().take(80).collect();
        let mut why = self.why.lock().unwrap_or_else(|p| p.into_inner());
        *why.entry(reason).or_default() += 1;
    }
}

/// What every attacker knows: where the node is, the tiny shard, when to stop, what to count.
#[derive(Clone)]
struct Ctx {
    target: Target,
    tiny: Cid,
    deadline: Instant,
    tally: Arc<Tally>,
}

/// One connection from a fresh key at `ip`, proven by a tiny fetch and held until the deadline.
/// Returns the client, so the connection outlives the phase until the caller lets it go.
async fn hold_connection(
    ip: IpAddr,
    handshakes: Arc<tokio::sync::Semaphore>,
    ctx: Ctx,
) -> Option<data::Client> {
    let t = &ctx.tally;
    let Ok(Ok(permit)) = timeout_at(ctx.deadline, handshakes.acquire_owned()).await else {
        t.add("conns unfinished");
        return None;
    };
    let proven = async {
        let client = client_on(ip)?;
        client
            .fetch(&ctx.target, &ctx.tiny, Some(TINY as u64), None)
            .await?;
        anyhow::Ok(client)
    };
    let client = match timeout_at(ctx.deadline, proven).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            t.failed("conns failed", "connect", e);
            return None;
        }
        Err(_) => {
            t.add("conns unfinished");
            return None;
        }
    };
    t.add("conns accepted");
    drop(permit);
    // A request now and then, so the node's idle timeout (60 s) does not close it.
    let (end, again) = (ctx.deadline, Duration::from_secs(30));
    while timeout_at(end, sleep(again)).await.is_ok() {
        let _ = timeout_at(end, client.fetch(&ctx.target, &ctx.tiny, None, None)).await;
    }
    Some(client)
}

/// A slow-loris uploader at `ip`: stores announcing [`LORIS_LEN`] bytes whose body comes at
/// 1 byte per second, one after another, until the deadline.
async fn slow_loris(ip: IpAddr, seed: u64, ctx: Ctx) {
    let client = match client_on(ip) {
        Ok(c) => c,
        Err(e) => return ctx.tally.failed("loris failed opens", "bind", e),
    };
    let mut n = 0u64;
    while Instant::now() < ctx.deadline {
        n += 1;
        let (mut send, mut recv) =
            match timeout_at(ctx.deadline, client.raw_stream(&ctx.target)).await {
                Err(_) => break,
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    ctx.tally.failed("loris failed opens", "open", e);
                    let _ = timeout_at(ctx.deadline, sleep(Duration::from_secs(1))).await;
                    continue;
                }
            };
        let cid = cids::raw(&[seed.to_le_bytes(), n.to_le_bytes()].concat());
        let header = cairn_wire::protocol::encode_frame(&DataRequest::Store {
            cid,
            len: LORIS_LEN,
        });
        if let Err(e) = send.write_all(&header).await {
            ctx.tally.failed("loris failed opens", "header", e);
            continue;
        }
        ctx.tally.add("loris opened");
        let answer = recv.read_to_end(64 << 10);
        tokio::pin!(answer);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut writing = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(ctx.deadline) => return,
                got = &mut answer => {
                    let cut = got.ok().and_then(|a| {
                        cairn_wire::protocol::decode_body::<DataResponse>(a.get(4..)?).ok()
                    });
                    match cut {
                        Some(DataResponse::Error(e)) if e.message.contains("too slowly") => {
                            ctx.tally.add("loris cut off");
                        }
                        Some(DataResponse::Error(e)) => ctx.tally.failed("loris ended otherwise", "answer", e),
                        other => ctx.tally.failed("loris ended otherwise", "ended", format!("{other:?}")),
                    }
                    break;
                }
                _ = tick.tick(), if writing => {
                    // Refused (stopped) once the node gives up: its answer follows.
                    writing = send.write_all(&[7]).await.is_ok();
                }
            }
        }
    }
}

/// A libp2p client keeping [`CONTROL_IN_FLIGHT`] control requests in flight until the deadline.
async fn control_flood(addr: Multiaddr, peer: PeerId, ctx: Ctx) {
    let started = Swarm::start(
        Keypair::generate_ed25519(),
        Role::Client,
        &[],
        &[],
        None,
        "load".into(),
        SwarmLimits::default(),
        Default::default(),
    )
    .await;
    let swarm = match started {
        Ok(s) => s,
        Err(e) => return ctx.tally.failed("control failed", "swarm", e),
    };
    if let Err(e) = swarm.dial(addr).await {
        swarm.shutdown();
        return ctx.tally.failed("control failed", "dial", e);
    }
    let workers = (0..CONTROL_IN_FLIGHT).map(|w| {
        let (swarm, ctx) = (swarm.clone(), ctx.clone());
        async move {
            let mut i = w;
            loop {
                i += 1;
                let req = if i % 2 == 0 {
                    ControlRequest::Info
                } else {
                    ControlRequest::List {
                        after: None,
                        limit: 1000,
                    }
                };
                match timeout_at(ctx.deadline, swarm.request(peer, req)).await {
                    Err(_) => break,
                    Ok(Ok(_)) => ctx.tally.add("control answered"),
                    Ok(Err(SwarmError::Remote { error, .. })) if error.code == ErrorCode::Busy => {
                        ctx.tally.add("control busy")
                    }
                    Ok(Err(e)) => {
                        ctx.tally.failed("control failed", "request", e);
                    }
                };
            }
        }
    });
    futures::future::join_all(workers).await;
    swarm.shutdown();
}

/// Runs the chosen attacks until the deadline; returns the clients holding connections.
async fn attack(args: &Args, control: (Multiaddr, PeerId), ctx: Ctx) -> Vec<data::Client> {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(CONNS_AT_ONCE));
    let holders: Vec<_> = (0..CONNS * usize::from(args.on("conns")))
        .map(|i| {
            let ip = IpAddr::from([127, 0, 0, 2 + (i % CONN_IPS) as u8]);
            tokio::spawn(hold_connection(ip, handshakes.clone(), ctx.clone()))
        })
        .collect();
    let mut others: Vec<_> = (0..LORIS * usize::from(args.on("loris")))
        .map(|i| {
            let ip = IpAddr::from([127, 0, 0, 10 + (i % LORIS_IPS) as u8]);
            tokio::spawn(slow_loris(ip, i as u64, ctx.clone()))
        })
        .collect();
    if args.on("control") {
        others.push(tokio::spawn(control_flood(control.0, control.1, ctx)));
    }
    let mut held = Vec::new();
    for h in holders {
        held.extend(h.await.ok().flatten());
    }
    futures::future::join_all(others).await;
    held
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hostile: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs both phases and prints the report; `false` if an honest read failed.
fn run() -> Result<bool> {
    cairn_node::malloc::tune();
    let args = Args::parse()?;
    let phase = Duration::from_secs(args.secs);
    let (rt, attack_rt) = (runtime("node")?, runtime("attackers")?);
    let dir = tempfile::tempdir()?;
    let node = rt.block_on(start_node(dir.path()))?;
    let target = Target {
        peer: node.info.peer_id.parse()?,
        addr: node.info.data_addr,
    };
    let listen = node
        .info
        .listen
        .iter()
        .find(|a| a.starts_with("/ip4/127.0.0.1/"))
        .context("the node listens on no 127.0.0.1 libp2p address")?
        .parse::<Multiaddr>()?;
    let control = (listen, target.peer);

    let ip: IpAddr = "127.0.0.1".parse()?;
    let reader = rt.block_on(async { client_on(ip) })?;
    let store = |data: Vec<u8>| {
        let cid = cids::raw(&data);
        let reader = reader.clone();
        rt.block_on(async move { reader.store(&target, &cid, Bytes::from(data)).await })?;
        anyhow::Ok(cid)
    };
    let shards = (0..SHARDS)
        .map(|i| store(cairn_testkit::data::bytes(MIB, 100 + i)))
        .collect::<Result<Vec<_>>>()?;
    let tiny = store(cairn_testkit::data::bytes(TINY, 1))?;
    // Out of the memtable: a serving node reads shards from blob files.
    node.store.flush()?;
    let shards = Arc::new(shards);

    // Warm-up (connection, congestion window, caches), then the two phases.
    let warm = Instant::now() + Duration::from_secs(2);
    rt.block_on(read_until(&reader, target, &shards, warm))?;
    let since = |c: [f64; 3]| {
        let now = cpu();
        std::array::from_fn(|i| now[i] - c[i])
    };
    let at = cpu();
    let mut idle = rt.block_on(read_until(&reader, target, &shards, Instant::now() + phase))?;
    idle.cpu = since(at);

    let before = rt.block_on(metrics(&node))?;
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + phase;
    let ctx = Ctx {
        target,
        tiny,
        deadline,
        tally: tally.clone(),
    };
    let task = attack(&args, control, ctx);
    let at = cpu();
    // The attackers' runtime is driven from a thread of its own while this one reads.
    let (loaded, held) = std::thread::scope(|s| {
        let handle = s.spawn(|| attack_rt.block_on(task));
        let loaded = rt.block_on(read_until(&reader, target, &shards, deadline));
        (loaded, handle.join())
    });
    let mut loaded = loaded?;
    loaded.cpu = since(at);
    let held = held.map_err(|_| anyhow::anyhow!("the attackers panicked"))?;
    let after = rt.block_on(metrics(&node))?;
    let delta = |name: &str| (metric(&after, name) - metric(&before, name)) as u64;
    for c in &held {
        c.close();
    }
    drop(held);

    let held_at_end = metric(&after, "cairn_data_connections") as u64;
    for (what, n) in [
        (
            "conns node refused",
            delta("cairn_data_connections_refused_total"),
        ),
        ("conns node held at end", held_at_end),
        (
            "loris node slow bodies",
            delta("cairn_data_slow_bodies_total"),
        ),
        ("control node data busy", delta("cairn_data_busy_total")),
    ] {
        tally.add_n(what, n);
    }
    let ratio = loaded.mib_s() / idle.mib_s().max(1e-9);
    let failed = idle.errors.len() + loaded.errors.len();
    let holds = ratio >= 0.5 && failed == 0;

    println!(
        "hostile peers against one node, {} s per phase; attacks: {}",
        args.secs,
        args.attacks.join(",")
    );
    println!("{:<28}{:>12}{:>12}", "honest reader", "idle", "attack");
    type Row = (&'static str, fn(&Reads) -> String);
    let rows: [Row; 8] = [
        ("throughput (MiB/s)", |r| format!("{:.1}", r.mib_s())),
        ("fetches", |r| r.latencies.len().to_string()),
        ("latency p50 (ms)", |r| format!("{:.1}", r.ms(0.5))),
        ("latency p99 (ms)", |r| format!("{:.1}", r.ms(0.99))),
        ("failed honest reads", |r| r.errors.len().to_string()),
        ("CPU used (s)", |r| format!("{:.1}", r.cpu[0])),
        ("  node+reader runtime (s)", |r| format!("{:.1}", r.cpu[1])),
        ("  attackers' runtime (s)", |r| format!("{:.1}", r.cpu[2])),
    ];
    for (what, f) in rows {
        println!("{what:<28}{:>12}{:>12}", f(&idle), f(&loaded));
    }
    println!("attack / idle throughput    {ratio:>12.2}x");
    let mut attacks = serde_json::Map::new();
    for (attack, keys) in REPORT.iter().filter_map(|r| r.split_once(": ")) {
        let what = match attack {
            "conns" => format!("{CONNS} connections"),
            "loris" => format!("{LORIS} slow-loris uploaders"),
            _ => format!("{CONTROL_IN_FLIGHT} control requests in flight"),
        };
        if !args.on(attack) {
            continue;
        }
        let counts = keys
            .split(',')
            .map(|k| (k, tally.get(&format!("{attack} {k}"))));
        let text: Vec<String> = counts.clone().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{attack} ({what}): {}", text.join(", "));
        let counts = counts.map(|(k, v)| (k.replace(' ', "_"), v.into()));
        attacks.insert(attack.into(), serde_json::Value::Object(counts.collect()));
    }
    let why = tally.why.lock().map(|w| w.clone()).unwrap_or_default();
    for (reason, count) in &why {
        println!("  attackers' failures: {count} x {reason}");
    }
    for e in idle.errors.iter().chain(&loaded.errors).take(10) {
        println!("  failed honest read: {e}");
    }
    let verdict = if holds { "HOLDS" } else { "MISSED" };
    println!("target (attack >= 0.5x idle, no failed honest read): {verdict}");
    if args.json {
        let j = serde_json::json!({
            "secs": args.secs, "idle": idle.json(), "attack": loaded.json(), "ratio": ratio,
            "attacks": attacks, "attacker_failures": why, "target_holds": holds,
        });
        println!("{j}");
    }
    rt.block_on(node.shutdown())?;
    Ok(failed == 0)
}
