//! The encoded size of one node-epoch proof (c = 32, no named shards) for nodes of 2^10,
//! 2^16 and 2^20 shards of 1 MiB: printed, not asserted against the 64 KiB target (run with
//! `--nocapture` to see the figures).
//!
//! No node of 1 TiB is allocated, and the size is not estimated either: the shards are
//! [`common::Synthetic`] ones, real 1 MiB shards whose bytes differ only in their first 8
//! bytes, so each root (the real BLAKE3 of the shard) costs one 1 KiB hash and ten merges. The
//! tree is built over all 2^n real roots, the challenge is derived from the signed commitment,
//! and only the (at most 32) shards it lands on are materialised, with their outboards, for
//! `EpochProof::prove`. The proof is then verified, so the figure is the exact size of a valid
//! proof. A 1 MiB shard's chunks are all 1024 bytes with 10 siblings, so every chunk proof has
//! the same size whatever the data; only the multiproof of the places depends on the tree.

mod common;

use std::collections::BTreeMap;

use cairn_proofs::commitment::Commitment;
use cairn_proofs::proof::{EpochProof, MAX_PROOF_BYTES};
use cairn_proofs::tree::CommitTree;
use common::{MIB, Shard, Synthetic, key, nonce, params, wants};

/// (total, places, chunks) encoded bytes of valid proofs for `nonces` challenges at a node
/// of `n` synthetic 1 MiB shards.
fn sizes(synth: &Synthetic, n: u64, nonces: u64) -> Vec<(usize, usize, usize)> {
    let (entries, ids) = synth.entries(n);
    let by_root: BTreeMap<[u8; 32], u64> = entries.iter().map(|e| e.root).zip(ids).collect();
    let tree = CommitTree::build(entries).unwrap();
    assert_eq!(tree.total_bytes(), n * MIB);
    let k = key(1);
    let commitment = Commitment::sign(&k, 3, &tree, vec![], vec![]).unwrap();
    let params = params();
    (0..nonces)
        .map(|i| {
            let challenge = cairn_proofs::challenge::Challenge::new(
                common::node(9),
                commitment.node,
                3,
                commitment.digest(),
                nonce(n, i),
                vec![],
            );
            // Materialise only the shards the challenge lands on.
            let w = wants(&tree, &[], &challenge, params);
            let shards: BTreeMap<[u8; 32], Shard> = w
                .chunks
                .iter()
                .map(|(e, _)| (e.root, Shard::new(synth.data(by_root[&e.root]))))
                .collect();
            for (root, s) in &shards {
                assert_eq!(&s.root, root, "the synthetic root is the shard's BLAKE3");
            }
            let proof = EpochProof::prove(&k, &commitment, &tree, &challenge, params, |e, i| {
                Ok(shards[&e.root].chunk_proof(i))
            })
            .unwrap();
            proof.verify(&challenge, &commitment, &[], params).unwrap();
            assert_eq!(proof.chunks.len(), 32);
            assert!(
                proof
                    .chunks
                    .iter()
                    .all(|c| c.data.len() == 1024 && c.siblings.len() == 10)
            );
            let total = proof.to_bytes().len();
            let places = serde_ipld_dagcbor::to_vec(&proof.places).unwrap().len();
            let chunks = serde_ipld_dagcbor::to_vec(&proof.chunks).unwrap().len();
            assert!(total < MAX_PROOF_BYTES);
            (total, places, chunks)
        })
        .collect()
}

#[test]
fn proof_sizes_for_nodes_of_2_10_2_16_and_2_20_shards() {
    let synth = Synthetic::new(1);
    let nonces = 8;
    for log in [10u32, 16, 20] {
        let s = sizes(&synth, 1 << log, nonces);
        let (min, max) = (
            s.iter().map(|x| x.0).min().unwrap(),
            s.iter().map(|x| x.0).max().unwrap(),
        );
        let mean = s.iter().map(|x| x.0).sum::<usize>() as f64 / s.len() as f64;
        let places = s.iter().map(|x| x.1).sum::<usize>() as f64 / s.len() as f64;
        let chunks = s[0].2;
        assert!(
            s.iter().all(|x| x.2 == chunks),
            "chunk proofs have one size"
        );
        eprintln!(
            "2^{log} shards of 1 MiB, c = 32, {nonces} challenges: proof {min}..={max} bytes \
             (mean {mean:.0}, {:.1} KiB; places {places:.0}, chunks {chunks}); \
             under 64 KiB: {}",
            mean / 1024.0,
            max < 64 * 1024
        );
    }
}

/// The synthetic shards are what they claim: distinct real shards whose root is their BLAKE3.
#[test]
fn synthetic_roots_are_the_blake3_of_the_shards() {
    let synth = Synthetic::new(2);
    for i in [0u64, 1, 2, 1000, (1 << 20) - 1] {
        assert_eq!(
            synth.root(i),
            *blake3::hash(&synth.data(i)).as_bytes(),
            "{i}"
        );
    }
    assert_ne!(synth.root(0), synth.root(1));
}
