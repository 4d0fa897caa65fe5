//! Helpers the proof tests share: shards with their outboards, an in-memory prover that holds
//! them, commits to them and answers challenges (honestly, or with the cheating knobs below), a
//! hand-built proof signer for provers that lie, and synthetic 1 MiB shards whose roots are
//! cheap to compute (for nodes of 2^16 and 2^20 shards).
//!
//! Cheating knobs on [`Prover`]:
//! * [`Prover::delete`] and the `delete_fraction_*` helpers: byte ranges the prover no longer
//!   has. A read of a chunk that overlaps them fails; chunks beside them in the same 16 KiB
//!   group can still be proven (the prover is taken to have kept the 32-byte chaining value of
//!   every chunk it threw away: the strongest cheater of this kind, and the one whose failure
//!   rate is exactly `1 - (1 - f)^c`).
//! * [`Prover::flip`]: corrupts a stored byte (the reads return the corrupt group).
//! * [`Prover::omit`]: leaves a shard out of the next commitment without declaring it.
//! * [`Prover::declare`]: declares a shard lost in the next commitment.
//!
//! [`Prover::prove`] answers through [`EpochProof::prove`], which checks every chunk it reads
//! and refuses to sign over a bad one. [`Prover::lie`] builds the same answer by hand and signs
//! it without that check, sending garbage for chunks it cannot read: a prover that lies must be
//! caught by `verify`, not by its own honesty.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use cairn_proofs::challenge::{self, Challenge};
use cairn_proofs::chunk::{self, CHUNK_BYTES, ChunkProof, GROUP_BYTES};
use cairn_proofs::commitment::Commitment;
use cairn_proofs::epoch::ProofConfig;
use cairn_proofs::proof::{EpochProof, Params, ProveError};
use cairn_proofs::receipt::StorageReceipt;
use cairn_proofs::tree::{CommitTree, Entry, MultiProof};
use cairn_proofs::{Hash32, NodeKey, Sig64};
use cairn_testkit::data::{self, Xorshift};
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1 << 20;

/// The deterministic key of node `n`.
pub(crate) fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The public key of node `n`.
pub(crate) fn node(n: u8) -> NodeKey {
    NodeKey::of(&key(n))
}

/// The protocol's parameters with one-minute epochs: c = 32, 2 chunks per named shard, 16
/// named shards at most, a 10 s deadline and 10 s of grace, 3 misses, quorum 2 in 3 epochs.
pub(crate) fn config() -> ProofConfig {
    let c = ProofConfig::with_epoch(std::time::Duration::from_secs(60)).unwrap();
    c.check().unwrap();
    c
}

/// The parameters both sides of an audit use.
pub(crate) fn params() -> Params {
    Params::from(&config())
}

/// A nonce from a test seed and a counter.
pub(crate) fn nonce(seed: u64, n: u64) -> Hash32 {
    let mut secret = [0; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    challenge::nonce(&secret, 0, &NodeKey([0; 32]), n)
}

/// One shard as a node keeps it: its bytes and its pre-order outboard.
#[derive(Clone)]
pub(crate) struct Shard {
    pub(crate) root: [u8; 32],
    pub(crate) data: Vec<u8>,
    pub(crate) outboard: Vec<u8>,
}

impl Shard {
    pub(crate) fn new(data: Vec<u8>) -> Self {
        let (root, outboard) = cairn_chunker::verified::outboard(&data);
        Shard {
            root: *root.as_bytes(),
            data,
            outboard,
        }
    }

    /// `size` deterministic random bytes from `seed`.
    pub(crate) fn random(size: u64, seed: u64) -> Self {
        Self::new(data::bytes(size as usize, seed))
    }

    pub(crate) fn size(&self) -> u64 {
        self.data.len() as u64
    }

    pub(crate) fn entry(&self) -> Entry {
        Entry {
            root: self.root,
            size: self.size(),
        }
    }

    /// The bytes of the 16 KiB group holding chunk `index`.
    pub(crate) fn group(&self, index: u64) -> &[u8] {
        let start = index * CHUNK_BYTES / GROUP_BYTES * GROUP_BYTES;
        let end = (start + GROUP_BYTES).min(self.size());
        &self.data[start as usize..end as usize]
    }

    /// The honest proof of chunk `index` from the stored bytes (corrupt ones included).
    pub(crate) fn chunk_proof(&self, index: u64) -> ChunkProof {
        chunk::prove(self.size(), index, self.group(index), &self.outboard).unwrap()
    }
}

/// `n` shard sizes: 1 MiB ones, odd sizes up to 3 MiB, tiny ones (1 byte to 2000 bytes) and
/// small ones around the 1 KiB and 16 KiB boundaries, in a deterministic mix.
pub(crate) fn mixed_sizes(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = Xorshift::new(seed);
    (0..n)
        .map(|i| match i % 5 {
            0 => MIB,
            1 => 1 + rng.below(3 * MIB),
            2 => 1 + rng.below(2000),
            3 => [1, 1023, 1024, 1025, 16383, 16384, 16385, 40_000][rng.below(8) as usize],
            _ => 1 + rng.below(200 * KIB),
        })
        .collect()
}

/// The chunks one challenge asks of a commitment, as [`EpochProof::verify`] derives them: the
/// leaves to place, and (shard, chunk index) per wanted chunk, uniform positions first, then
/// each named shard's chunks. Named shards that are declared or not committed ask nothing.
pub(crate) struct Wants {
    pub(crate) leaves: Vec<u64>,
    pub(crate) chunks: Vec<(Entry, u64)>,
}

pub(crate) fn wants(
    tree: &CommitTree,
    declared: &[Hash32],
    challenge: &Challenge,
    params: Params,
) -> Wants {
    let mut leaves = Vec::new();
    let mut chunks = Vec::new();
    for pos in challenge.positions(tree.total_bytes(), params.challenges) {
        let (leaf, offset) = tree.locate(pos).unwrap();
        leaves.push(leaf);
        chunks.push((tree.entries()[leaf as usize], offset / CHUNK_BYTES));
    }
    for t in &challenge.targets {
        if declared.contains(t) {
            continue;
        }
        if let Some(leaf) = tree.find(&t.0) {
            let entry = tree.entries()[leaf as usize];
            leaves.push(leaf);
            for index in challenge.target_chunks(t, entry.size, params.target_chunks) {
                chunks.push((entry, index));
            }
        }
    }
    Wants { leaves, chunks }
}

#[derive(Serialize)]
struct Body<'a> {
    challenge: &'a Challenge,
    places: &'a MultiProof,
    chunks: &'a [ChunkProof],
}

/// Signs an epoch proof's body as the crate does (the digest of the canonical encoding of
/// (challenge, places, chunks), signed under the proof's context), without looking at what it
/// signs. A test checks that this gives the same signature as [`EpochProof::prove`].
pub(crate) fn sign_proof(
    key: &SigningKey,
    challenge: &Challenge,
    places: &MultiProof,
    chunks: &[ChunkProof],
) -> Sig64 {
    let body = serde_ipld_dagcbor::to_vec(&Body {
        challenge,
        places,
        chunks,
    })
    .unwrap();
    let mut h = blake3::Hasher::new_derive_key("cairn-proofs epoch proof digest v1");
    h.update(&(body.len() as u64).to_le_bytes());
    h.update(&body);
    let digest = Hash32(*h.finalize().as_bytes());
    let mut msg = b"cairn-proofs epoch proof v1\0".to_vec();
    msg.extend(serde_ipld_dagcbor::to_vec(&digest).unwrap());
    Sig64(key.sign(&msg).to_bytes())
}

/// An epoch proof of these parts, signed by `key`.
pub(crate) fn build_proof(
    key: &SigningKey,
    challenge: &Challenge,
    places: MultiProof,
    chunks: Vec<ChunkProof>,
) -> EpochProof {
    let signature = sign_proof(key, challenge, &places, &chunks);
    EpochProof {
        version: 1,
        challenge: challenge.clone(),
        places,
        chunks,
        signature,
    }
}

/// `proof` with its challenge, places and chunks re-signed by `key`.
pub(crate) fn resign(key: &SigningKey, proof: &EpochProof) -> EpochProof {
    build_proof(
        key,
        &proof.challenge,
        proof.places.clone(),
        proof.chunks.clone(),
    )
}

/// A chunk proof of the right shape for chunk `index` of a shard of `size` bytes (the chunk's
/// length, one sibling per level) and random content.
pub(crate) fn garbage_chunk(size: u64, index: u64, seed: u64) -> ChunkProof {
    let mut rng = Xorshift::new(seed);
    let len = (size - index * CHUNK_BYTES).min(CHUNK_BYTES);
    let depth = chunk::depth(size, index).unwrap();
    ChunkProof {
        data: rng.bytes(len as usize),
        siblings: (0..depth)
            .map(|_| {
                let mut h = [0; 32];
                rng.fill(&mut h);
                Hash32(h)
            })
            .collect(),
    }
}

/// An in-memory prover: the shards it holds, what it lost, and its commitment for one epoch.
pub(crate) struct Prover {
    pub(crate) key: SigningKey,
    pub(crate) shards: BTreeMap<[u8; 32], Shard>,
    /// Byte ranges of each shard the prover no longer has.
    pub(crate) deleted: BTreeMap<[u8; 32], Vec<Range<u64>>>,
    /// Shards left out of the commitment without a word.
    pub(crate) omitted: BTreeSet<[u8; 32]>,
    /// Shards the commitment declares lost.
    pub(crate) declared: BTreeSet<[u8; 32]>,
    /// Shards the commitment lists as recovered (held again after being declared lost).
    pub(crate) recovered: BTreeSet<[u8; 32]>,
    pub(crate) params: Params,
    pub(crate) tree: CommitTree,
    pub(crate) commitment: Commitment,
}

impl Prover {
    /// Node `n` holding `shards`, committed for `epoch`.
    pub(crate) fn new(n: u8, shards: Vec<Shard>, epoch: u64) -> Self {
        let key = key(n);
        let tree = CommitTree::build(Vec::new()).unwrap();
        let commitment = Commitment::sign(&key, epoch, &tree, vec![], vec![]).unwrap();
        let mut p = Prover {
            key,
            shards: shards.into_iter().map(|s| (s.root, s)).collect(),
            deleted: BTreeMap::new(),
            omitted: BTreeSet::new(),
            declared: BTreeSet::new(),
            recovered: BTreeSet::new(),
            params: params(),
            tree,
            commitment,
        };
        p.commit(epoch);
        p
    }

    /// Node `n` holding random shards of `sizes` (seeded by `seed`), committed for `epoch`.
    pub(crate) fn with_sizes(n: u8, sizes: &[u64], seed: u64, epoch: u64) -> Self {
        let shards = (0u64..)
            .zip(sizes)
            .map(|(i, &size)| Shard::random(size, seed.wrapping_mul(1_000_003).wrapping_add(i)))
            .collect();
        Self::new(n, shards, epoch)
    }

    pub(crate) fn node(&self) -> NodeKey {
        NodeKey::of(&self.key)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.commitment.epoch
    }

    /// The roots of every shard held (committed or not), ascending.
    pub(crate) fn roots(&self) -> Vec<[u8; 32]> {
        self.shards.keys().copied().collect()
    }

    /// Signs a new commitment for `epoch`: every shard held, less the omitted and declared
    /// ones, listing the recovered ones.
    pub(crate) fn commit(&mut self, epoch: u64) {
        let entries: Vec<Entry> = self
            .shards
            .values()
            .filter(|s| !self.omitted.contains(&s.root) && !self.declared.contains(&s.root))
            .map(Shard::entry)
            .collect();
        // BTreeMap order is root order: ascending.
        self.tree = CommitTree::build(entries).unwrap();
        let declared = self.declared.iter().map(|&r| Hash32(r)).collect();
        let recovered = self.recovered.iter().map(|&r| Hash32(r)).collect();
        self.commitment =
            Commitment::sign(&self.key, epoch, &self.tree, declared, recovered).unwrap();
    }

    /// Storage receipts this node signed for every shard it holds, for epochs `start..=end`.
    pub(crate) fn receipts(&self, start: u64, end: u64) -> Vec<StorageReceipt> {
        self.shards
            .values()
            .map(|s| StorageReceipt::sign(&self.key, Hash32(s.root), s.size(), start, end))
            .collect()
    }

    /// A challenge from auditor `auditor` over the current commitment.
    pub(crate) fn challenge(&self, auditor: u8, nonce: Hash32, targets: Vec<Hash32>) -> Challenge {
        Challenge::new(
            node(auditor),
            self.node(),
            self.epoch(),
            self.commitment.digest(),
            nonce,
            targets,
        )
    }

    // Cheating knobs.

    /// Forgets `range` of shard `root`.
    pub(crate) fn delete(&mut self, root: [u8; 32], range: Range<u64>) {
        self.deleted.entry(root).or_default().push(range);
    }

    /// Corrupts byte `offset` of shard `root` on "disk".
    pub(crate) fn flip(&mut self, root: [u8; 32], offset: u64) {
        self.shards.get_mut(&root).unwrap().data[offset as usize] ^= 0x5a;
    }

    /// Leaves `root` out of the next commitment, undeclared.
    pub(crate) fn omit(&mut self, root: [u8; 32]) {
        self.omitted.insert(root);
    }

    /// Declares `root` lost in the next commitment.
    pub(crate) fn declare(&mut self, root: [u8; 32]) {
        self.declared.insert(root);
    }

    /// Committed bytes.
    pub(crate) fn committed_bytes(&self) -> u64 {
        self.tree.total_bytes()
    }

    /// Deletes committed 1 KiB chunks chosen uniformly at random (without replacement) until
    /// at least `f` of the committed bytes are gone; returns the exact fraction lost.
    pub(crate) fn delete_fraction_chunks(&mut self, f: f64, seed: u64) -> f64 {
        self.delete_units(f, seed, CHUNK_BYTES)
    }

    /// As [`Prover::delete_fraction_chunks`], in whole 16 KiB groups.
    pub(crate) fn delete_fraction_groups(&mut self, f: f64, seed: u64) -> f64 {
        self.delete_units(f, seed, GROUP_BYTES)
    }

    /// Deletes whole committed shards from the end of the commitment (the highest roots)
    /// until at least `f` of the committed bytes are gone; returns the exact fraction lost.
    /// Only a sample that really spans all committed bytes catches this as often as `f` says.
    pub(crate) fn delete_fraction_tail(&mut self, f: f64) -> f64 {
        let total = self.committed_bytes();
        let mut gone = 0;
        let entries: Vec<Entry> = self.tree.entries().iter().rev().copied().collect();
        for e in entries {
            if gone as f64 >= f * total as f64 {
                break;
            }
            self.delete(e.root, 0..e.size);
            gone += e.size;
        }
        gone as f64 / total as f64
    }

    fn delete_units(&mut self, f: f64, seed: u64, unit: u64) -> f64 {
        let mut units: Vec<([u8; 32], Range<u64>)> = Vec::new();
        for e in self.tree.entries() {
            for start in (0..e.size).step_by(unit as usize) {
                units.push((e.root, start..(start + unit).min(e.size)));
            }
        }
        let total = self.committed_bytes();
        let goal = (f * total as f64).ceil() as u64;
        let mut rng = Xorshift::new(seed);
        let mut gone = 0;
        // A partial Fisher-Yates shuffle: the first k units are a uniform sample.
        let mut k = 0;
        while gone < goal {
            let j = k + rng.below((units.len() - k) as u64) as usize;
            units.swap(k, j);
            let (root, range) = units[k].clone();
            gone += range.end - range.start;
            self.delete(root, range);
            k += 1;
        }
        gone as f64 / total as f64
    }

    /// Whether any byte of chunk `index` of shard `root` is deleted.
    pub(crate) fn is_lost(&self, entry: &Entry, index: u64) -> bool {
        let start = index * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(entry.size);
        self.deleted
            .get(&entry.root)
            .is_some_and(|rs| rs.iter().any(|r| r.start < end && start < r.end))
    }

    /// Reads chunk `index` of a shard and builds its proof from the stored group and outboard:
    /// fails if the chunk is deleted (or the shard is not held at all).
    pub(crate) fn read(&self, entry: &Entry, index: u64) -> Result<ChunkProof, String> {
        if self.is_lost(entry, index) {
            return Err(format!("chunk {index} is gone"));
        }
        let shard = self
            .shards
            .get(&entry.root)
            .ok_or_else(|| "no such shard".to_string())?;
        chunk::prove(shard.size(), index, shard.group(index), &shard.outboard)
            .map_err(|e| e.to_string())
    }

    /// The honest answer: [`EpochProof::prove`] reading through [`Prover::read`].
    pub(crate) fn prove(&self, challenge: &Challenge) -> Result<EpochProof, ProveError> {
        EpochProof::prove(
            &self.key,
            &self.commitment,
            &self.tree,
            challenge,
            self.params,
            |e, i| self.read(e, i),
        )
    }

    /// The lying answer: the same proof, built and signed by hand with no self-check; chunks
    /// it cannot read are replaced by garbage of the right shape, corrupt chunks are sent as
    /// read.
    pub(crate) fn lie(&self, challenge: &Challenge) -> EpochProof {
        let w = wants(
            &self.tree,
            &self.commitment.declared,
            challenge,
            self.params,
        );
        let places = self.tree.multiproof(&w.leaves).unwrap();
        let chunks = (0u64..)
            .zip(&w.chunks)
            .map(|(n, (e, i))| {
                self.read(e, *i)
                    .unwrap_or_else(|_| garbage_chunk(e.size, *i, n))
            })
            .collect();
        build_proof(&self.key, challenge, places, chunks)
    }
}

/// 1 MiB shards that differ only in their first 8 bytes (shard `i` holds `i` there), so that
/// every chunk CV but chunk 0's is shared and a shard's root costs one 1 KiB hash and ten
/// merges: nodes of 2^16 or 2^20 real shards (real bytes whose BLAKE3 is the root) without
/// hashing 64 GiB or 1 TiB. Only the shards a challenge lands on are ever materialised.
pub(crate) struct Synthetic {
    base: Vec<u8>,
    /// Chunk 0's siblings, bottom-up (the same for every shard).
    siblings: Vec<ChainingValue>,
}

impl Synthetic {
    pub(crate) fn new(seed: u64) -> Self {
        let base = data::bytes(MIB as usize, seed);
        let (_, outboard) = cairn_chunker::verified::outboard(&base);
        let p = chunk::prove(MIB, 0, &base[..GROUP_BYTES as usize], &outboard).unwrap();
        Synthetic {
            base,
            siblings: p.siblings.iter().map(|s| s.0).collect(),
        }
    }

    /// Shard `i`'s bytes.
    pub(crate) fn data(&self, i: u64) -> Vec<u8> {
        let mut d = self.base.clone();
        d[..8].copy_from_slice(&i.to_le_bytes());
        d
    }

    /// Shard `i`'s root: `blake3(data(i))`, from chunk 0 up.
    pub(crate) fn root(&self, i: u64) -> [u8; 32] {
        let mut first = [0u8; CHUNK_BYTES as usize];
        first.copy_from_slice(&self.base[..CHUNK_BYTES as usize]);
        first[..8].copy_from_slice(&i.to_le_bytes());
        let mut h = blake3::Hasher::new();
        h.set_input_offset(0);
        h.update(&first);
        let mut cv = h.finalize_non_root();
        let (top, below) = self.siblings.split_last().unwrap();
        for s in below {
            cv = merge_subtrees_non_root(&cv, s, Mode::Hash);
        }
        *merge_subtrees_root(&cv, top, Mode::Hash).as_bytes()
    }

    /// The sorted entries of shards `0..n`, and which shard each entry is.
    pub(crate) fn entries(&self, n: u64) -> (Vec<Entry>, Vec<u64>) {
        let mut v: Vec<(Entry, u64)> = (0..n)
            .map(|i| {
                (
                    Entry {
                        root: self.root(i),
                        size: MIB,
                    },
                    i,
                )
            })
            .collect();
        v.sort_unstable_by_key(|(e, _)| e.root);
        v.into_iter().unzip()
    }
}
