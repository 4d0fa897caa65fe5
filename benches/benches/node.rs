//! Node benchmarks: shard transfer between a client and a node beside raw quinn, libp2p-stream and
//! plain TCP on loopback in the same run, and RocksDB shard put/get.
//!
//! `cargo bench -p cairn-benches --bench node`. Both ends share this machine's cores, as a
//! devnet does. docs/BENCHMARKS.md records the figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid};
use cairn_node::RunningNode;
use cairn_node::config::{Config, Size};
use cairn_node::identity;
use cairn_node::store::{Store, StoreConfig, StoreMetrics};
use cairn_wire::data::{self, Target};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Runtime;

const MIB: usize = 1 << 20;
const TOTAL: usize = 64 * MIB;

/// Incompressible bytes; distinct seeds give distinct bytes (distinct shards).
fn random(len: usize, seed: u64) -> Vec<u8> {
    cairn_testkit::data::bytes(len, seed)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // As the daemons run; CAIRN_BENCH_EVENT_INTERVAL overrides it to compare settings.
        .event_interval(
            std::env::var("CAIRN_BENCH_EVENT_INTERVAL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(cairn_wire::daemon::EVENT_INTERVAL),
        )
        .enable_all()
        .build()
        .unwrap()
}

/// Raw quinn with the node's libp2p-TLS crypto: `streams` streams each sending TOTAL/streams
/// bytes as 1 MiB `write_chunk`s; the server reads with `read_chunk` and acknowledges.
fn raw_quinn(c: &mut Criterion, rt: &Runtime) {
    // The node's own crypto (AES-GCM first), and libp2p-tls's defaults (ChaCha20 first).
    raw_quinn_with(c, rt, "raw-quinn", |key, peer| {
        cairn_wire::tls::client_config(key, peer, cairn_wire::protocol::DATA_ALPN).unwrap()
    });
    raw_quinn_with(c, rt, "raw-quinn-chacha20", |key, peer| {
        let mut tls = libp2p_tls::make_client_config(key, Some(peer)).unwrap();
        tls.alpn_protocols = vec![cairn_wire::protocol::DATA_ALPN.to_vec()];
        tls
    });
}

fn raw_quinn_with(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    tls: impl Fn(&Keypair, libp2p::PeerId) -> rustls::ClientConfig,
) {
    let conn = raw_quinn_connection(rt, rt, tls);
    let chunk = Bytes::from(random(MIB, 1));
    let mut g = c.benchmark_group("transfer");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    let only_streams: Option<usize> = std::env::args()
        .position(|a| a == "--streams")
        .and_then(|at| std::env::args().nth(at + 1)?.parse().ok());
    for streams in [1usize, 16] {
        if only_streams.is_some_and(|n| n != streams) {
            continue;
        }
        g.bench_function(BenchmarkId::new(name, format!("{streams}-streams")), |b| {
            b.iter(|| rt.block_on(raw_send(&conn, &chunk, TOTAL, streams)))
        });
    }
    // The node fetch's traffic shape without the node: one stream per 1 MiB answer, asked for
    // with a small request, `streams` requests in flight, answers sent from memory and not
    // verified. What the node adds on top (RocksDB, BLAKE3 on both sides, its framing) is the
    // difference between this and `node-fetch-1MiB-shards`.
    if name == "raw-quinn" {
        let only_streams: Option<usize> = std::env::args()
            .position(|a| a == "--streams")
            .and_then(|at| std::env::args().nth(at + 1)?.parse().ok());
        for streams in [1usize, 16] {
            if only_streams.is_some_and(|n| n != streams) {
                continue;
            }
            let id = BenchmarkId::new("raw-quinn-1MiB-requests", format!("{streams}-streams"));
            g.bench_function(id, |b| {
                b.iter(|| {
                    rt.block_on(async {
                        futures::stream::iter(0..TOTAL / MIB)
                            .map(|_| {
                                let conn = conn.clone();
                                tokio::spawn(async move {
                                    let (mut send, mut recv) = conn.open_bi().await.unwrap();
                                    send.write_all(REQUEST).await.unwrap();
                                    send.finish().unwrap();
                                    let mut got = 0;
                                    while let Some(c) = recv.read_chunk(MIB, true).await.unwrap() {
                                        got += c.bytes.len();
                                    }
                                    assert_eq!(got, MIB);
                                })
                            })
                            .buffer_unordered(streams)
                            .for_each(|r| async move { r.unwrap() })
                            .await;
                    })
                })
            });
        }
    }
    g.finish();
}

/// A quinn connection to a raw quinn server on loopback (the node's data-plane endpoint with
/// no node behind it): streams are drained and acknowledged, or answered with a shard-sized
/// reply when they carry [`REQUEST`].
fn raw_quinn_connection(
    rt: &Runtime,
    client_rt: &Runtime,
    tls: impl Fn(&Keypair, libp2p::PeerId) -> rustls::ClientConfig,
) -> quinn::Connection {
    let target = rt.block_on(async {
        let server_key = Keypair::generate_ed25519();
        let ep = data::endpoint(&server_key, "127.0.0.1:0".parse().unwrap(), Some(64)).unwrap();
        let addr = ep.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let conn = incoming.await.unwrap();
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            let mut request = false;
                            while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                                request |= chunk.offset == 0 && chunk.bytes[..] == *REQUEST;
                                black_box(chunk.bytes.len());
                            }
                            if request {
                                // A shard-sized answer, sent from memory.
                                let _ = send.write_chunk(Bytes::from_static(&SHARD)).await;
                            } else {
                                let _ = send.write_all(b"k").await;
                            }
                            let _ = send.finish();
                        });
                    }
                });
            }
        });
        Target {
            peer: server_key.public().to_peer_id(),
            addr,
        }
    });
    let client = client_rt.block_on(async {
        let client_key = Keypair::generate_ed25519();
        let cep = data::endpoint(&client_key, "127.0.0.1:0".parse().unwrap(), None).unwrap();
        (cep, client_key)
    });
    client_rt.block_on(async {
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls(&client.1, target.peer)).unwrap();
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        let mut t = quinn::TransportConfig::default();
        t.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
        t.receive_window(quinn::VarInt::from_u32(64 << 20));
        t.send_window(64 << 20);
        cfg.transport_config(Arc::new(t));
        client
            .0
            .connect_with(cfg, target.addr, "l")
            .unwrap()
            .await
            .unwrap()
    })
}

/// Sends `total` bytes over `streams` concurrent streams as 1 MiB `write_chunk`s.
async fn raw_send(conn: &quinn::Connection, chunk: &Bytes, total: usize, streams: usize) {
    let per = total / MIB / streams;
    let tasks = (0..streams).map(|_| {
        let (conn, chunk) = (conn.clone(), chunk.clone());
        async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            for _ in 0..per {
                send.write_chunk(chunk.clone()).await.unwrap();
            }
            send.finish().unwrap();
            recv.read_to_end(1).await.unwrap();
        }
    });
    futures::future::join_all(tasks).await;
}

/// What `raw-quinn-1MiB-requests` sends to ask for a shard-sized answer.
const REQUEST: &[u8] = b"fetch one shard, please";
/// The answer to it.
static SHARD: [u8; MIB] = [7; MIB];

fn plain_tcp(c: &mut Criterion, rt: &Runtime) {
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; MIB];
                    let mut got = 0;
                    while got < TOTAL {
                        got += s.read(&mut buf).await.unwrap();
                    }
                    s.write_all(b"k").await.unwrap();
                });
            }
        });
        addr
    });
    let chunk = random(MIB, 2);
    let mut g = c.benchmark_group("transfer");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("plain-tcp", "1-stream"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                for _ in 0..TOTAL / MIB {
                    s.write_all(&chunk).await.unwrap();
                }
                let mut k = [0u8; 1];
                s.read_exact(&mut k).await.unwrap();
            })
        })
    });
    g.finish();
}

/// libp2p QUIC + libp2p-stream: the alternative for the bulk path.
fn libp2p_stream(c: &mut Criterion, rt: &Runtime) {
    use libp2p::StreamProtocol;
    const PROTO: StreamProtocol = StreamProtocol::new("/cairn-bench/bulk/1");
    let make = || {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_quic()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build()
    };
    let (mut control, peer) = rt.block_on(async {
        let mut server = make();
        server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                server.select_next_some().await
            {
                break address;
            }
        };
        let peer = *server.local_peer_id();
        let mut incoming = server.behaviour().new_control().accept(PROTO).unwrap();
        tokio::spawn(async move {
            loop {
                server.select_next_some().await;
            }
        });
        tokio::spawn(async move {
            while let Some((_, mut stream)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; MIB];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                black_box(n);
                            }
                        }
                    }
                    let _ = stream.write_all(b"k").await;
                    let _ = stream.close().await;
                });
            }
        });
        let mut client = make();
        let control = client.behaviour().new_control();
        client
            .dial(addr.with(libp2p::multiaddr::Protocol::P2p(peer)))
            .unwrap();
        tokio::spawn(async move {
            loop {
                client.select_next_some().await;
            }
        });
        (control, peer)
    });
    let chunk = random(MIB, 3);
    let mut g = c.benchmark_group("transfer");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    let only_streams: Option<usize> = std::env::args()
        .position(|a| a == "--streams")
        .and_then(|at| std::env::args().nth(at + 1)?.parse().ok());
    for streams in [1usize, 16] {
        if only_streams.is_some_and(|n| n != streams) {
            continue;
        }
        g.bench_function(
            BenchmarkId::new("libp2p-stream", format!("{streams}-streams")),
            |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let per = TOTAL / MIB / streams;
                        let tasks = (0..streams).map(|_| {
                            let mut control = control.clone();
                            let chunk = &chunk;
                            async move {
                                let mut s = control.open_stream(peer, PROTO).await.unwrap();
                                for _ in 0..per {
                                    s.write_all(chunk).await.unwrap();
                                }
                                s.close().await.unwrap();
                                let mut k = Vec::new();
                                s.read_to_end(&mut k).await.unwrap();
                            }
                        });
                        futures::future::join_all(tasks).await;
                    })
                })
            },
        );
    }
    g.finish();
    let _ = &mut control;
}

/// A running node (in this process, on `rt`) holding [`TOTAL`] bytes of fresh 1 MiB shards,
/// flushed to blob files, and a client to it. The directory must outlive the node.
fn node_with_shards(
    rt: &Runtime,
    client_rt: &Runtime,
) -> (
    tempfile::TempDir,
    RunningNode,
    data::Client,
    Target,
    Vec<(Cid, Bytes)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let node = rt.block_on(async {
        let key = identity::create(&dir.path().join(identity::KEY_FILE)).unwrap();
        let mut cfg = Config::default();
        cfg.network.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
        cfg.network.data_listen = "127.0.0.1:0".into();
        cfg.network.max_streams_per_peer = 64;
        cfg.admin.listen = "127.0.0.1:0".into();
        cfg.storage.sync_writes = false;
        cfg.storage.scrub_rate = Size(0);
        RunningNode::start(dir.path(), &cfg.check().unwrap(), key, None)
            .await
            .unwrap()
    });
    let target = Target {
        peer: node.info.peer_id.parse().unwrap(),
        addr: node.info.data_addr,
    };
    let client =
        client_rt.block_on(async { data::Client::bind(Keypair::generate_ed25519()).unwrap() });
    let shards: Vec<(Cid, Bytes)> = (0..TOTAL / MIB)
        .map(|i| {
            let d = random(MIB, 100 + i as u64);
            (cids::raw(&d), Bytes::from(d))
        })
        .collect();
    client_rt.block_on(async {
        for (cid, d) in &shards {
            client.store(&target, cid, d.clone()).await.unwrap();
        }
    });
    // Out of the memtable (it holds 64 MiB): a serving node reads shards from blob files.
    node.store.flush().unwrap();
    (dir, node, client, target, shards)
}

/// Fetches every shard, `streams` at a time, each verified as it arrives.
async fn fetch_all(client: &data::Client, target: Target, shards: &[(Cid, Bytes)], streams: usize) {
    // Each fetch runs as a task on the runtime's workers, as the raw quinn receiver does (and
    // as the gateway's reads do), not on block_on's own thread, which every packet would have
    // to wake.
    let cids: Vec<Cid> = shards.iter().map(|(cid, _)| *cid).collect();
    futures::stream::iter(cids)
        .map(|cid| {
            let client = client.clone();
            tokio::spawn(async move { client.fetch(&target, &cid, Some(MIB as u64), None).await })
        })
        .buffer_unordered(streams)
        .for_each(|r| async move {
            black_box(r.unwrap().unwrap());
        })
        .await;
}

/// The real thing: a client storing to and fetching from a running node (RocksDB, BLAKE3
/// verification on both sides, the data-plane protocol).
fn node_transfer(c: &mut Criterion, rt: &Runtime) {
    let (_dir, node, client, target, shards) = node_with_shards(rt, rt);
    let mut g = c.benchmark_group("transfer");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    let only_streams: Option<usize> = std::env::args()
        .position(|a| a == "--streams")
        .and_then(|at| std::env::args().nth(at + 1)?.parse().ok());
    for streams in [1usize, 16] {
        if only_streams.is_some_and(|n| n != streams) {
            continue;
        }
        g.bench_function(
            BenchmarkId::new("node-fetch-1MiB-shards", format!("{streams}-streams")),
            |b| b.iter(|| rt.block_on(fetch_all(&client, target, &shards, streams))),
        );
    }
    // Stores of fresh shards (a store of a held shard is a no-op): CIDs differ each iteration.
    let mut round = 0u64;
    let only_streams: Option<usize> = std::env::args()
        .position(|a| a == "--streams")
        .and_then(|at| std::env::args().nth(at + 1)?.parse().ok());
    for streams in [1usize, 16] {
        if only_streams.is_some_and(|n| n != streams) {
            continue;
        }
        g.bench_function(
            BenchmarkId::new("node-store-1MiB-shards", format!("{streams}-streams")),
            |b| {
                b.iter_batched(
                    || {
                        round += 1;
                        shards
                            .iter()
                            .map(|(_, d)| {
                                let mut v = d.to_vec();
                                v[..8].copy_from_slice(&round.to_le_bytes());
                                (cids::raw(&v), Bytes::from(v))
                            })
                            .collect::<Vec<_>>()
                    },
                    |fresh| {
                        rt.block_on(async {
                            futures::stream::iter(&fresh)
                                .map(|(cid, d)| client.store(&target, cid, d.clone()))
                                .buffer_unordered(streams)
                                .for_each(|r| async move {
                                    r.unwrap();
                                })
                                .await;
                        })
                    },
                    criterion::BatchSize::PerIteration,
                )
            },
        );
    }
    g.finish();
    rt.block_on(node.shutdown()).unwrap();
}

/// An unlimited store in `dir`, fsync per write batch or not, RocksDB's own checksums or not.
fn open_store(dir: &std::path::Path, sync_writes: bool, rocksdb_checksums: bool) -> Store {
    let config = StoreConfig {
        capacity: u64::MAX,
        sync_writes,
        rocksdb_checksums,
        disk_reserve: 0,
    };
    Store::open(dir, config, StoreMetrics::default()).unwrap()
}

fn rocksdb(c: &mut Criterion) {
    let mut g = c.benchmark_group("rocksdb");
    g.throughput(Throughput::Bytes(MIB as u64));
    for sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), sync, false);
        let base = random(MIB, 7);
        let mut n = 0u64;
        g.bench_function(
            BenchmarkId::new("put-1MiB", if sync { "fsync" } else { "no-fsync" }),
            |b| {
                b.iter_batched(
                    || {
                        n += 1;
                        let mut v = base.clone();
                        v[..8].copy_from_slice(&n.to_le_bytes());
                        (cids::raw(&v), v)
                    },
                    |(cid, v)| store.put_shard(&cid, &v).unwrap(),
                    criterion::BatchSize::LargeInput,
                )
            },
        );
    }
    // Small shards written by several streams at once, fsync on (the node's default): what a
    // burst of small S3 PUTs asks of each node. Shards are committed concurrently, so RocksDB
    // can put several of them in one WAL write and fsync.
    const SMALL: usize = 16 << 10;
    g.throughput(Throughput::Bytes(SMALL as u64));
    for writers in [1u64, 8] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), true, false);
        let base = random(SMALL, 9);
        let next = std::sync::atomic::AtomicU64::new(0);
        g.bench_function(
            BenchmarkId::new("put-16KiB-fsync", format!("{writers}-writers")),
            |b| {
                b.iter_custom(|iters| {
                    let started = std::time::Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..writers {
                            s.spawn(|| {
                                for _ in 0..iters.div_ceil(writers) {
                                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    let mut v = base.clone();
                                    v[..8].copy_from_slice(&n.to_le_bytes());
                                    store.put_shard(&cids::raw(&v), &v).unwrap();
                                }
                            });
                        }
                    });
                    started.elapsed()
                })
            },
        );
    }
    for checksums in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cids: Vec<Cid> = {
            let store = open_store(dir.path(), false, checksums);
            (0..256u64)
                .map(|i| {
                    let v = random(MIB, 1000 + i);
                    let cid = cids::raw(&v);
                    store.put_shard(&cid, &v).unwrap();
                    cid
                })
                .collect()
        };
        // Reopen so reads come from blob files, not the memtable.
        let store = open_store(dir.path(), false, checksums);
        let mut i = 0usize;
        let name = if checksums {
            "rocksdb-checksums"
        } else {
            "blake3-only"
        };
        g.throughput(Throughput::Bytes(MIB as u64));
        g.bench_function(BenchmarkId::new("get-verified-1MiB", name), |b| {
            b.iter(|| {
                i = (i * 7 + 13) % cids.len();
                store.read_range(&cids[i], None).unwrap()
            })
        });
        // A training job's small random read: 16 KiB at a random 16 KiB-aligned offset of a
        // 1 MiB shard, with its proof (what a node serves for a range fetch).
        const RANGE: u64 = 16 << 10;
        g.throughput(Throughput::Bytes(RANGE));
        g.bench_function(BenchmarkId::new("get-range-16KiB", name), |b| {
            b.iter(|| {
                i = (i * 7 + 13) % cids.len();
                let at = (i as u64 * 37 % (MIB as u64 / RANGE)) * RANGE;
                store.read_range(&cids[i], Some(at..at + RANGE)).unwrap()
            })
        });
    }
    g.finish();
}

fn transport(c: &mut Criterion) {
    // As the binaries do, before any thread starts (raw quinn runs under it too).
    cairn_node::malloc::tune();
    let rt = runtime();
    raw_quinn(c, &rt);
    libp2p_stream(c, &rt);
    plain_tcp(c, &rt);
    node_transfer(c, &rt);
}

criterion_group!(benches, transport, rocksdb);

fn main() {
    if let Some(at) = std::env::args().position(|a| a == "--ratio") {
        let rounds = std::env::args()
            .nth(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(20);
        let only = std::env::args()
            .position(|a| a == "--only")
            .and_then(|at| std::env::args().nth(at + 1));
        ratio(
            rounds,
            std::env::args().any(|a| a == "--pinned"),
            only.as_deref(),
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// UDP datagrams this machine has sent so far (`/proc/net/snmp`), 0 where unreadable.
fn udp_out() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far, in seconds.
#[allow(unsafe_code)]
fn cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain integers, for which all-zero is valid, and `getrusage` writes
    // exactly one `rusage` into the live local it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A one-worker runtime whose threads (worker and blocking pool) run on CPU `cpu` only.
#[allow(unsafe_code)]
fn pinned_runtime(cpu: usize) -> Runtime {
    assert!(
        std::thread::available_parallelism().map_or(0, |n| n.get()) > 1,
        "--pinned needs two CPUs"
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(if cpu == 0 {
            "server-side"
        } else {
            "client-side"
        })
        .event_interval(cairn_wire::daemon::EVENT_INTERVAL)
        .on_thread_start(move || {
            // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is the empty set;
            // `CPU_SET` sets one bit inside it (`cpu` is 0 or 1, far below CPU_SETSIZE); and
            // `sched_setaffinity(0, ..)` reads exactly `size_of::<cpu_set_t>()` bytes from a
            // live local and changes only the calling thread's affinity.
            let ok = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
            };
            assert!(ok, "could not pin a thread to CPU {cpu}");
        })
        .enable_all()
        .build()
        .unwrap()
}

/// `cargo bench -p cairn-benches --bench node -- --ratio [ROUNDS] [--pinned]`: the target, node
/// fetch against raw quinn, measured as a paired comparison. Each round moves [`TOTAL`] bytes
/// both ways back to back (order alternating, so a drift in this shared VM's speed favours
/// neither), and the round's ratio is node / raw. Single criterion runs here swing by ±25 %
/// from one minute to the next, which is larger than the effects being measured; pairing the
/// two within seconds cancels most of that.
///
/// By default both ends share the machine's cores (one runtime, as the criterion benchmarks
/// run). With `--pinned`, the serving side (raw quinn's receiver, the node) runs on CPU 0 and
/// the client side on CPU 1, each a one-worker runtime with its blocking threads on the same
/// CPU: two one-core machines, as a transfer between two nodes is, where each side pays only
/// for its own work.
///
/// `--only raw` or `--only node` runs just that side for the rounds (for a profiler) and prints
/// its median throughput and CPU time per MiB; `--streams 1` or `--streams 16` runs one of the
/// two settings.
fn ratio(rounds: usize, pinned: bool, only: Option<&str>) {
    cairn_node::malloc::tune();
    let (rt, client_rt) = if pinned {
        (pinned_runtime(0), pinned_runtime(1))
    } else {
        (runtime(), runtime())
    };
    // Shared: everything on one runtime. (The second is then idle.)
    let crt = if pinned { &client_rt } else { &rt };
    let conn = raw_quinn_connection(&rt, crt, |key, peer| {
        cairn_wire::tls::client_config(key, peer, cairn_wire::protocol::DATA_ALPN).unwrap()
    });
    let (_dir, node, client, target, shards) = node_with_shards(&rt, crt);
    let shards = Arc::new(shards);
    let chunk = Bytes::from(random(MIB, 1));
    let mib = (TOTAL / MIB) as f64;
    let sides = if pinned {
        "server side on CPU 0, client side on CPU 1"
    } else {
        "both sides sharing the CPUs"
    };
    println!("node fetch / raw quinn, {rounds} paired rounds of {mib} MiB each way, {sides}");
    let only_streams: Option<usize> = std::env::args()
        .position(|a| a == "--streams")
        .and_then(|at| std::env::args().nth(at + 1)?.parse().ok());
    for streams in [1usize, 16] {
        if only_streams.is_some_and(|n| n != streams) {
            continue;
        }
        // Both run as tasks on the client side's runtime (not on this thread).
        let raw = || {
            let (conn, chunk) = (conn.clone(), chunk.clone());
            let t = std::time::Instant::now();
            crt.block_on(crt.spawn(async move { raw_send(&conn, &chunk, TOTAL, streams).await }))
                .unwrap();
            mib / t.elapsed().as_secs_f64()
        };
        let fetch = || {
            let (client, shards) = (client.clone(), shards.clone());
            let t = std::time::Instant::now();
            crt.block_on(
                crt.spawn(async move { fetch_all(&client, target, &shards, streams).await }),
            )
            .unwrap();
            mib / t.elapsed().as_secs_f64()
        };
        // Warm-up: connections, congestion windows, allocator.
        raw();
        fetch();
        if let Some(side) = only {
            let (wall, cpu, dgrams) = (std::time::Instant::now(), cpu_seconds(), udp_out());
            let mut v: Vec<f64> = (0..rounds)
                .map(|_| if side == "raw" { raw() } else { fetch() })
                .collect();
            let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
            let dgrams = udp_out() - dgrams;
            v.sort_by(f64::total_cmp);
            println!(
                "{streams:>2} stream(s): {side} only, median {:.0} MiB/s, {:.2} ms of CPU per MiB, \
                 {:.2} CPUs busy, {:.0} UDP datagrams per MiB (both ways)",
                v[v.len() / 2],
                cpu * 1000.0 / (mib * rounds as f64),
                cpu / wall,
                dgrams as f64 / (mib * rounds as f64),
            );
            continue;
        }
        let (mut raws, mut nodes, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let (q, n) = if r % 2 == 0 {
                let q = raw();
                (q, fetch())
            } else {
                let n = fetch();
                (raw(), n)
            };
            raws.push(q);
            nodes.push(n);
            ratios.push(n / q);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let ratio_of_medians = med(&mut nodes) / med(&mut raws);
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize] * 100.0;
        let at_least_70 = ratios.iter().filter(|r| **r >= 0.7).count();
        println!(
            "{streams:>2} stream(s): raw quinn median {:.0} MiB/s, node fetch median {:.0} MiB/s; \
             paired ratio median {:.0} % (quartiles {:.0}-{:.0} %, range {:.0}-{:.0} %), \
             ratio of medians {:.0} %, rounds at or above 70 %: {at_least_70}/{rounds}",
            med(&mut raws),
            med(&mut nodes),
            q(0.5),
            q(0.25),
            q(0.75),
            q(0.0),
            q(1.0),
            ratio_of_medians * 100.0,
        );
    }
    rt.block_on(node.shutdown()).unwrap();
}
