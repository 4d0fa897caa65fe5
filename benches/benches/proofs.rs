//! Proof-of-storage benchmarks: one node-epoch proof (c = 32) verified and made, and the
//! epoch commitment built and signed, for nodes of many 1 MiB shards.
//!
//! `cargo bench -p cairn-benches --bench proofs`. The targets: verifying one node's
//! epoch proof in under 1 ms of CPU, and a proof under 64 KiB (the sizes are printed).
//!
//! * The 2^10-shard node holds 1 GiB of random shards: each is generated from its seed and
//!   hashed once for its root, and regenerated (with its outboard) only if a challenge lands
//!   on it.
//! * The 2^16-shard node (64 GiB) holds *synthetic* shards: real 1 MiB shards that differ only
//!   in their first 8 bytes, so every chunk CV but chunk 0's is shared and a root (the real
//!   BLAKE3 of the shard) costs one 1 KiB hash and ten merges. The proofs are real and valid;
//!   verifying one does not depend on what the bytes are.
//! * `prove` is the prover's CPU per epoch, the challenged groups and outboards already in
//!   memory (no disk): locating the positions, the multiproof, 32 chunk proofs (hashing up to
//!   16 KiB each), checking each and signing.
//! * `commit` is `CommitTree::build` and `Commitment::sign` over random roots.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use cairn_proofs::challenge::Challenge;
use cairn_proofs::chunk::{self, CHUNK_BYTES, ChunkProof, GROUP_BYTES};
use cairn_proofs::commitment::Commitment;
use cairn_proofs::epoch::ProofConfig;
use cairn_proofs::proof::{EpochProof, Params};
use cairn_proofs::tree::{CommitTree, Entry, verify_multiproof};
use cairn_proofs::{Hash32, NodeKey};
use cairn_testkit::data::{self, Xorshift};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;

const MIB: u64 = 1 << 20;

/// A shard in memory: its bytes and outboard.
struct Shard {
    data: Vec<u8>,
    outboard: Vec<u8>,
}

impl Shard {
    fn new(data: Vec<u8>) -> ([u8; 32], Self) {
        let (root, outboard) = cairn_chunker::verified::outboard(&data);
        (*root.as_bytes(), Shard { data, outboard })
    }

    fn read(&self, index: u64) -> Result<ChunkProof, String> {
        let start = index * CHUNK_BYTES / GROUP_BYTES * GROUP_BYTES;
        let end = (start + GROUP_BYTES).min(self.data.len() as u64);
        let group = &self.data[start as usize..end as usize];
        chunk::prove(self.data.len() as u64, index, group, &self.outboard)
            .map_err(|e| e.to_string())
    }
}

/// How a node's shards are made.
enum Kind {
    /// Random bytes from seed `i`.
    Random,
    /// The synthetic shards described above.
    Synthetic {
        base: Vec<u8>,
        siblings: Vec<[u8; 32]>,
    },
}

impl Kind {
    fn synthetic(seed: u64) -> Self {
        let base = data::bytes(MIB as usize, seed);
        let (_, s) = Shard::new(base);
        let p = s.read(0).unwrap();
        Kind::Synthetic {
            siblings: p.siblings.iter().map(|h| h.0).collect(),
            base: s.data,
        }
    }

    fn data(&self, i: u64) -> Vec<u8> {
        match self {
            Kind::Random => data::bytes(MIB as usize, 1_000 + i),
            Kind::Synthetic { base, .. } => {
                let mut d = base.clone();
                d[..8].copy_from_slice(&i.to_le_bytes());
                d
            }
        }
    }

    fn root(&self, i: u64) -> [u8; 32] {
        match self {
            Kind::Random => *blake3::hash(&self.data(i)).as_bytes(),
            Kind::Synthetic { base, siblings } => {
                let mut first = base[..CHUNK_BYTES as usize].to_vec();
                first[..8].copy_from_slice(&i.to_le_bytes());
                let mut h = blake3::Hasher::new();
                h.set_input_offset(0);
                h.update(&first);
                let mut cv = h.finalize_non_root();
                let (top, below) = siblings.split_last().unwrap();
                for s in below {
                    cv = merge_subtrees_non_root(&cv, s, Mode::Hash);
                }
                *merge_subtrees_root(&cv, top, Mode::Hash).as_bytes()
            }
        }
    }
}

fn params() -> Params {
    Params::from(&ProofConfig::production())
}

/// A node of `n` 1 MiB shards, committed for epoch 7, with one challenge (naming `named`
/// shards) and its valid proof; only the shards the challenge lands on are in memory.
struct Node {
    key: SigningKey,
    tree: CommitTree,
    commitment: Commitment,
    challenge: Challenge,
    shards: HashMap<[u8; 32], Shard>,
    proof: EpochProof,
}

impl Node {
    fn new(kind: &Kind, n: u64, named: usize) -> Self {
        let mut entries: Vec<(Entry, u64)> = (0..n)
            .map(|i| {
                (
                    Entry {
                        root: kind.root(i),
                        size: MIB,
                    },
                    i,
                )
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.0.root);
        let ids: HashMap<[u8; 32], u64> = entries.iter().map(|(e, i)| (e.root, *i)).collect();
        let tree = CommitTree::build(entries.iter().map(|e| e.0).collect()).unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        let commitment = Commitment::sign(&key, 7, &tree, vec![], vec![]).unwrap();
        let targets = tree
            .entries()
            .iter()
            .step_by(tree.entries().len() / named.max(1))
            .take(named)
            .map(|e| Hash32(e.root))
            .collect();
        let challenge = Challenge::new(
            NodeKey::of(&SigningKey::from_bytes(&[9; 32])),
            commitment.node,
            7,
            commitment.digest(),
            Hash32([42; 32]),
            targets,
        );
        // Which shards the proof reads: a first pass records them.
        let mut wanted = Vec::new();
        let _ = EpochProof::prove(&key, &commitment, &tree, &challenge, params(), |e, _| {
            wanted.push(e.root);
            Err("not loaded yet".into())
        });
        let shards: HashMap<[u8; 32], Shard> = wanted
            .into_iter()
            .map(|r| {
                let (root, s) = Shard::new(kind.data(ids[&r]));
                assert_eq!(root, r);
                (root, s)
            })
            .collect();
        let proof = EpochProof::prove(&key, &commitment, &tree, &challenge, params(), |e, i| {
            shards[&e.root].read(i)
        })
        .unwrap();
        proof
            .verify(&challenge, &commitment, &[], params())
            .unwrap();
        Node {
            key,
            tree,
            commitment,
            challenge,
            shards,
            proof,
        }
    }

    fn prove(&self) -> EpochProof {
        EpochProof::prove(
            &self.key,
            &self.commitment,
            &self.tree,
            &self.challenge,
            params(),
            |e, i| self.shards[&e.root].read(i),
        )
        .unwrap()
    }
}

fn epoch_proofs(c: &mut Criterion) {
    let synthetic = Kind::synthetic(5);
    let nodes = [
        ("2^10", Node::new(&Kind::Random, 1 << 10, 0)),
        ("2^16", Node::new(&synthetic, 1 << 16, 0)),
        ("2^16+16-named", Node::new(&synthetic, 1 << 16, 16)),
    ];
    let mut g = c.benchmark_group("epoch-proof");
    for (name, node) in &nodes {
        eprintln!(
            "epoch proof, {name} shards of 1 MiB, c = 32: {} bytes ({:.1} KiB), {} chunks, \
             from {} shards",
            node.proof.to_bytes().len(),
            node.proof.to_bytes().len() as f64 / 1024.0,
            node.proof.chunks.len(),
            node.shards.len(),
        );
        g.bench_function(BenchmarkId::new("verify", name), |b| {
            b.iter(|| {
                black_box(&node.proof)
                    .verify(&node.challenge, &node.commitment, &[], params())
                    .unwrap()
            })
        });
        // The parts of `verify`: the places (the multiproof against the commitment) and the
        // chunk proofs; the rest is the signature over the re-encoded body and bookkeeping.
        g.bench_function(BenchmarkId::new("verify-places", name), |b| {
            b.iter(|| {
                verify_multiproof(
                    &node.commitment.root,
                    node.commitment.count,
                    node.commitment.bytes,
                    black_box(&node.proof.places),
                )
                .unwrap()
            })
        });
        let places = verify_multiproof(
            &node.commitment.root,
            node.commitment.count,
            node.commitment.bytes,
            &node.proof.places,
        )
        .unwrap();
        let chunks: Vec<(Entry, u64)> = node
            .challenge
            .positions(node.commitment.bytes, params().challenges)
            .into_iter()
            .map(|pos| {
                let p = places.iter().rev().find(|p| p.offset <= pos).unwrap();
                (p.entry, (pos - p.offset) / CHUNK_BYTES)
            })
            .collect();
        g.bench_function(BenchmarkId::new("verify-uniform-chunks", name), |b| {
            b.iter(|| {
                for ((e, i), p) in chunks.iter().zip(black_box(&node.proof.chunks)) {
                    chunk::verify(&e.root, e.size, *i, p).unwrap();
                }
            })
        });
        g.bench_function(BenchmarkId::new("prove", name), |b| b.iter(|| node.prove()));
        let bytes = node.proof.to_bytes();
        g.bench_function(BenchmarkId::new("decode+verify", name), |b| {
            b.iter(|| {
                EpochProof::from_bytes(black_box(&bytes))
                    .unwrap()
                    .verify(&node.challenge, &node.commitment, &[], params())
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// `n` entries with random roots, sorted, of 1 MiB each.
fn random_entries(n: usize) -> Vec<Entry> {
    let mut rng = Xorshift::new(3);
    let mut v: Vec<Entry> = (0..n)
        .map(|_| {
            let mut root = [0; 32];
            rng.fill(&mut root);
            Entry { root, size: MIB }
        })
        .collect();
    v.sort_unstable_by_key(|e| e.root);
    v
}

fn commitments(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[1; 32]);
    let mut g = c.benchmark_group("commitment");
    g.sample_size(10);
    for log in [16u32, 20] {
        let entries = random_entries(1 << log);
        g.bench_function(BenchmarkId::new("build+sign", format!("2^{log}")), |b| {
            b.iter_batched(
                || entries.clone(),
                |e| {
                    let tree = CommitTree::build(e).unwrap();
                    Commitment::sign(&key, 7, &tree, vec![], vec![]).unwrap()
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = epoch_proofs, commitments
}
criterion_main!(benches);
