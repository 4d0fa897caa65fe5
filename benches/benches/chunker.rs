//! Chunker benchmarks: the parts of the encode pipeline and the pipeline itself.
//!
//! `cargo bench -p cairn-benches --bench chunker`. Throughput is in input (object) bytes.
//! docs/BENCHMARKS.md records the figures and the pipeline-vs-parts target.

use std::hint::black_box;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bao_tree::io::outboard::PreOrderMemOutboard;
use cairn_chunker::chunking::{CdcChunker, Chunking};
use cairn_chunker::erasure::ErasureCode;
use cairn_chunker::pipeline::{EncodeParams, Encoder};
use cairn_chunker::verified;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const MIB: usize = 1 << 20;

/// Incompressible bytes; distinct seeds give distinct bytes.
fn random(len: usize, seed: u64) -> Vec<u8> {
    cairn_testkit::data::bytes(len, seed)
}

/// A reader over shared bytes, so each pipeline iteration starts without copying the input.
struct SharedReader {
    data: Arc<Vec<u8>>,
    pos: usize,
}

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn memcpy(c: &mut Criterion) {
    let src = random(256 * MIB, 1);
    let mut dst = vec![0u8; 256 * MIB];
    let mut g = c.benchmark_group("memcpy");
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function("256MiB", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.finish();
}

/// Distinct 1 MiB buffers totalling 64 MiB: larger than the caches, as data streaming through
/// the pipeline is. The "streaming" figures are the ones the pipeline target uses.
fn working_set(seed: u64) -> Vec<Vec<u8>> {
    (0..64).map(|i| random(MIB, seed + i)).collect()
}

fn hashing(c: &mut Criterion) {
    let shards = working_set(100);
    let mut g = c.benchmark_group("blake3");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("hash/1MiB-hot", |b| {
        b.iter(|| blake3::hash(black_box(&shards[0])))
    });
    g.bench_function("hash+outboard/1MiB-hot", |b| {
        b.iter(|| verified::outboard(black_box(&shards[0])))
    });
    g.bench_function("bao-tree-outboard/1MiB-hot", |b| {
        b.iter(|| {
            PreOrderMemOutboard::<Vec<u8>>::create(black_box(&shards[0]), verified::BLOCK_SIZE)
        })
    });
    g.throughput(Throughput::Bytes(64 * MIB as u64));
    g.bench_function("hash/64x1MiB-streaming", |b| {
        b.iter(|| shards.iter().map(|s| blake3::hash(s)).collect::<Vec<_>>())
    });
    g.bench_function("hash+outboard/64x1MiB-streaming", |b| {
        b.iter(|| {
            shards
                .iter()
                .map(|s| verified::outboard(s).0)
                .collect::<Vec<_>>()
        })
    });
    // Two threads hashing at once: how much of a second core this machine really gives.
    g.bench_function("hash+outboard/64x1MiB-streaming-2-threads", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                let (a, z) = shards.split_at(32);
                let t = scope.spawn(|| {
                    a.iter()
                        .map(|s| verified::outboard(s).0)
                        .collect::<Vec<_>>()
                });
                let mut out: Vec<_> = z.iter().map(|s| verified::outboard(s).0).collect();
                out.extend(t.join().unwrap());
                out
            })
        })
    });
    g.throughput(Throughput::Bytes(MIB as u64));
    let shard = &shards[0];
    let (root, ob) = verified::outboard(shard);
    let mut proof = Vec::with_capacity(MIB + 8192);
    g.bench_function("encode-proof/1MiB-hot", |b| {
        b.iter(|| {
            proof.clear();
            verified::encode_range(&root, shard, &ob, 0..MIB as u64, &mut proof).unwrap();
        })
    });
    proof.clear();
    verified::encode_range(&root, shard, &ob, 0..MIB as u64, &mut proof).unwrap();
    g.bench_function("verify-proof/1MiB-hot", |b| {
        b.iter(|| {
            verified::verify_range(&root, MIB as u64, 0..MIB as u64, black_box(&proof)).unwrap()
        })
    });
    g.finish();
}

fn erasure(c: &mut Criterion) {
    let pool = working_set(200);
    for (k, m) in [(4usize, 2usize), (10, 4)] {
        // As many stripes as fit the 64 MiB working set, encoded one after another.
        let stripes: Vec<Vec<&[u8]>> = pool
            .chunks_exact(k)
            .map(|c| c.iter().map(Vec::as_slice).collect())
            .collect();
        let mut g = c.benchmark_group(format!("rs-{k}+{m}"));
        g.throughput(Throughput::Bytes((stripes.len() * k * MIB) as u64));
        for code in ErasureCode::ALL {
            let mut coder = code.coder(k, m).unwrap();
            let mut parity: Vec<Vec<Vec<u8>>> =
                stripes.iter().map(|_| vec![vec![0u8; MIB]; m]).collect();
            g.bench_function(BenchmarkId::new("encode-streaming", code), |b| {
                b.iter(|| {
                    for (data, parity) in stripes.iter().zip(parity.iter_mut()) {
                        coder.encode(black_box(data), parity).unwrap();
                    }
                })
            });
        }
        // Reconstruction of one stripe (hot), losing one data shard or m of them.
        g.throughput(Throughput::Bytes((k * MIB) as u64));
        for code in ErasureCode::ALL {
            let mut coder = code.coder(k, m).unwrap();
            let mut parity = vec![vec![0u8; MIB]; m];
            coder.encode(&stripes[0], &mut parity).unwrap();
            let all: Vec<Vec<u8>> = stripes[0]
                .iter()
                .map(|d| d.to_vec())
                .chain(parity)
                .collect();
            for lost in [1, m] {
                g.bench_function(
                    BenchmarkId::new(format!("reconstruct-{lost}-lost"), code),
                    |b| {
                        b.iter_batched_ref(
                            || {
                                let mut shards: Vec<Option<Vec<u8>>> =
                                    all.iter().cloned().map(Some).collect();
                                for s in shards.iter_mut().take(lost) {
                                    *s = None;
                                }
                                shards
                            },
                            |shards| coder.reconstruct_data(shards).unwrap(),
                            criterion::BatchSize::LargeInput,
                        )
                    },
                );
            }
        }
        g.finish();
    }
}

fn chunking(c: &mut Criterion) {
    let input = random(64 * MIB, 3);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("fastcdc-avg256KiB/64MiB", |b| {
        b.iter(|| {
            CdcChunker::new(&input[..], 64 * 1024, 256 * 1024, MIB as u32)
                .unwrap()
                .map(|c| c.unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let input = Arc::new(random(256 * MIB, 4));
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    let cases = [
        (
            "10+4/fixed",
            ErasureCode::ReedSolomonGf8,
            Chunking::Fixed,
            10,
            4,
        ),
        (
            "10+4/fixed",
            ErasureCode::LeopardGf16,
            Chunking::Fixed,
            10,
            4,
        ),
        (
            "4+2/fixed",
            ErasureCode::ReedSolomonGf8,
            Chunking::Fixed,
            4,
            2,
        ),
        (
            "10+4/cdc-avg256KiB",
            ErasureCode::ReedSolomonGf8,
            Chunking::content_defined(256 * 1024),
            10,
            4,
        ),
    ];
    let shared = bytes::Bytes::from(input.as_ref().clone());
    for (name, code, chunking, k, m) in cases {
        let mut params = EncodeParams::with_shape(k, m);
        params.erasure.code = code;
        params.chunking = chunking;
        if matches!(chunking, Chunking::Fixed) && code == ErasureCode::ReedSolomonGf8 {
            // Input already in memory: shards are slices of it, no copy.
            g.bench_function(BenchmarkId::new(format!("{name}/from-bytes"), code), |b| {
                b.iter(|| {
                    let mut enc = Encoder::from_bytes(shared.clone(), params.clone()).unwrap();
                    let mut shards = 0;
                    for stripe in enc.by_ref() {
                        shards += stripe.unwrap().shards.len();
                    }
                    black_box(shards);
                    enc.finish().unwrap()
                })
            });
        }
        g.bench_function(BenchmarkId::new(format!("{name}/from-reader"), code), |b| {
            b.iter(|| {
                let reader = SharedReader {
                    data: input.clone(),
                    pos: 0,
                };
                let mut enc = Encoder::new(reader, params.clone()).unwrap();
                let mut shards = 0;
                for stripe in enc.by_ref() {
                    shards += stripe.unwrap().shards.len();
                }
                black_box(shards);
                enc.finish().unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, memcpy, hashing, erasure, chunking, pipeline);
criterion_main!(benches);
