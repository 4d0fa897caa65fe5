//! Soundness: a node that lost part of its committed bytes fails an epoch as often as the
//! sampling says it must, whether it admits the loss (`prove` returns `Lost`) or lies (sends
//! garbage for what it lacks, and `verify` catches it); a node whose bytes are corrupt fails
//! with `BadChunk` naming the shard.

mod common;

use cairn_proofs::Hash32;
use cairn_proofs::chunk::{CHUNK_BYTES, GROUP_BYTES};
use cairn_proofs::proof::{FaultKind, ProveError};
use common::{MIB, Prover, mixed_sizes, nonce, sign_proof};

/// The honest answer and the hand-built one are the same proof, byte for byte, when nothing is
/// lost: the lying prover differs from the honest one only where it lacks data, and
/// `sign_proof` signs exactly as the crate does.
#[test]
fn the_hand_built_proof_is_the_honest_proof_when_nothing_is_lost() {
    let p = Prover::with_sizes(1, &mixed_sizes(25, 1), 1, 5);
    for n in 0..20 {
        let targets = if n % 2 == 0 {
            vec![]
        } else {
            p.roots().iter().take(3).map(|&r| Hash32(r)).collect()
        };
        let ch = p.challenge(9, nonce(1, n), targets);
        let honest = p.prove(&ch).unwrap();
        let lie = p.lie(&ch);
        assert_eq!(lie, honest);
        assert_eq!(lie.to_bytes(), honest.to_bytes());
        assert_eq!(
            sign_proof(&p.key, &ch, &honest.places, &honest.chunks),
            honest.signature
        );
        honest
            .verify(&ch, &p.commitment, &p.receipts(1, 9), p.params)
            .unwrap();
    }
}

#[derive(Debug, Clone, Copy)]
enum Loss {
    /// Random 1 KiB chunks.
    Chunks,
    /// Random whole 16 KiB groups.
    Groups,
    /// Whole shards at the end of the commitment.
    Tail,
}

/// Runs `epochs` challenges (distinct nonces) at a node that lost `f` of its committed bytes
/// and checks:
/// * the honest prover's `Lost` rate is `1 - (1 - f)^32` within 5 sigma (binomial), with `f`
///   the exact fraction lost;
/// * the lying prover's proof fails `verify` with `BadChunk` in every epoch the honest one
///   could not prove, naming exactly the shards the honest one named, and in the epochs the
///   honest one could (every fourth checked) it is the honest proof and passes: its fault
///   rate is the same.
fn soundness(loss: Loss, f: f64, epochs: u64, seed: u64) {
    let mut p = Prover::with_sizes(1, &mixed_sizes(40, seed), seed, 7);
    let exact = match loss {
        Loss::Chunks => p.delete_fraction_chunks(f, seed),
        Loss::Groups => p.delete_fraction_groups(f, seed),
        Loss::Tail => p.delete_fraction_tail(f),
    };
    let unit = match loss {
        Loss::Chunks => CHUNK_BYTES,
        Loss::Groups => GROUP_BYTES,
        Loss::Tail => 3 * MIB,
    } as f64;
    // One unit past the goal at most.
    assert!(
        exact >= f && exact <= f + unit / p.committed_bytes() as f64,
        "{exact}"
    );
    assert!(p.committed_bytes() > 16 * MIB, "{}", p.committed_bytes());
    let c = p.params.challenges;
    assert_eq!(c, 32);
    let expected = 1.0 - (1.0 - exact).powi(c as i32);
    let (mut lost, mut faults, mut passed, mut checked) = (0u64, 0u64, 0u64, 0u64);
    for n in 0..epochs {
        let ch = p.challenge(2, nonce(seed, n), vec![]);
        let honest = p.prove(&ch);
        // When the honest prover could answer, the liar sends the same proof: check that on
        // every fourth such epoch only, to keep the test fast.
        if honest.is_ok() {
            passed += 1;
            if passed % 4 != 1 {
                continue;
            }
        }
        let lie = p.lie(&ch);
        let verdict = lie.verify(&ch, &p.commitment, &[], p.params);
        match (&honest, &verdict) {
            (Ok(proof), Ok(proven)) => {
                checked += 1;
                assert_eq!(proof, &lie, "epoch {n}");
                assert_eq!(proven.bytes, p.committed_bytes());
            }
            (Err(ProveError::Lost { shards, .. }), Err(fault)) => {
                lost += 1;
                faults += 1;
                assert_eq!(fault.kind, FaultKind::BadChunk, "epoch {n}");
                let mut a = shards.clone();
                let mut b = fault.shards.clone();
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b, "epoch {n}: the fault names the lost shards");
            }
            other => panic!("epoch {n}: honest and lying answers disagree: {other:?}"),
        }
    }
    let n = epochs as f64;
    let mean = n * expected;
    let sigma = (n * expected * (1.0 - expected)).sqrt();
    eprintln!(
        "{loss:?} f = {exact:.5}: {lost}/{epochs} epochs failed, expected {mean:.1} +- {sigma:.1} \
         (p = {expected:.4})"
    );
    assert!(
        (lost as f64 - mean).abs() <= 5.0 * sigma + 1.0,
        "{lost} failures in {epochs} epochs, expected {mean:.1} +- 5 x {sigma:.1}"
    );
    assert_eq!(faults, lost);
    assert_eq!(lost + passed, epochs);
    assert_eq!(checked, passed.div_ceil(4));
}

// Under a millisecond per epoch in release. With 2500 epochs at f = 1 % (p = 0.275) 5 sigma
// is +-112 around 688: c = 24 (p = 0.214, 536 expected) or c = 40 (p = 0.331, 828) would be
// caught. With 1000 epochs at f = 10 % (p = 0.966) 5 sigma is +-29 around 966: c = 25
// (p = 0.928, 928) would be caught.

#[test]
fn losing_1_percent_in_chunks_fails_27_percent_of_epochs() {
    soundness(Loss::Chunks, 0.01, 2500, 11);
}

#[test]
fn losing_1_percent_in_groups_fails_27_percent_of_epochs() {
    soundness(Loss::Groups, 0.01, 2500, 12);
}

#[test]
fn losing_10_percent_in_chunks_fails_97_percent_of_epochs() {
    soundness(Loss::Chunks, 0.10, 1000, 13);
}

#[test]
fn losing_10_percent_in_groups_fails_97_percent_of_epochs() {
    soundness(Loss::Groups, 0.10, 1000, 14);
}

/// Losing the shards at one end of the commitment is caught as often: the sample spans all
/// committed bytes, not some of them.
#[test]
fn losing_the_last_shards_fails_as_often() {
    soundness(Loss::Tail, 0.10, 1000, 15);
}

/// A node that deletes a single chunk is caught whenever a challenge lands on it, and only
/// the challenged chunk matters: garbage in any one of the 32 answers fails `verify`.
#[test]
fn garbage_in_any_one_answer_is_caught() {
    let p = Prover::with_sizes(1, &mixed_sizes(10, 3), 3, 7);
    let ch = p.challenge(2, nonce(3, 0), vec![]);
    let honest = p.prove(&ch).unwrap();
    for i in 0..honest.chunks.len() {
        let mut chunks = honest.chunks.clone();
        // Flip one bit of the data, or of one sibling.
        let c = &mut chunks[i];
        if i % 2 == 0 || c.siblings.is_empty() {
            let at = (i * 37) % c.data.len();
            c.data[at] ^= 1;
        } else {
            let s = i % c.siblings.len();
            c.siblings[s].0[i % 32] ^= 0x80;
        }
        let bad = common::build_proof(&p.key, &ch, honest.places.clone(), chunks);
        let fault = bad.verify(&ch, &p.commitment, &[], p.params).unwrap_err();
        assert_eq!(fault.kind, FaultKind::BadChunk, "chunk {i}");
        assert_eq!(fault.shards.len(), 1, "chunk {i}");
    }
}

/// A prover whose copy of a shard is corrupt (one byte flipped in every 16 KiB group) cannot
/// prove it honestly (`Lost`), and when it signs over the corrupt chunks anyway `verify` says
/// `BadChunk` naming that shard and only that shard: named in a targeted challenge, and hit
/// by the uniform sample.
#[test]
fn flipped_bytes_fail_with_bad_chunk_naming_the_shard() {
    let mut p = Prover::with_sizes(1, &[MIB, 3 * MIB + 17, 40_000, 1000, 2 * MIB], 4, 7);
    let roots = p.roots();
    let victim = *p
        .shards
        .values()
        .find(|s| s.size() == 3 * MIB + 17)
        .map(|s| &s.root)
        .unwrap();
    let size = p.shards[&victim].size();
    for g in (0..size).step_by(GROUP_BYTES as usize) {
        p.flip(
            victim,
            g + (g / GROUP_BYTES * 97) % GROUP_BYTES.min(size - g),
        );
    }
    let receipts = p.receipts(1, 9);
    // Targeted: the victim is named; other shards named too pass.
    let targets: Vec<Hash32> = roots.iter().map(|&r| Hash32(r)).collect();
    for n in 0..10 {
        let ch = p.challenge(2, nonce(4, n), targets.clone());
        match p.prove(&ch) {
            Err(ProveError::Lost { shards, .. }) => assert_eq!(shards, vec![Hash32(victim)]),
            other => panic!("{other:?}"),
        }
        let fault = p
            .lie(&ch)
            .verify(&ch, &p.commitment, &receipts, p.params)
            .unwrap_err();
        assert_eq!(fault.kind, FaultKind::BadChunk);
        assert_eq!(fault.shards, vec![Hash32(victim)]);
    }
    // Uniform only: the victim holds most bytes, so most epochs land on it; those fail
    // naming it, the others pass.
    let (mut hit, mut passed) = (0, 0);
    for n in 0..40 {
        let ch = p.challenge(2, nonce(5, n), vec![]);
        let lands = common::wants(&p.tree, &[], &ch, p.params)
            .chunks
            .iter()
            .any(|(e, _)| e.root == victim);
        match p.lie(&ch).verify(&ch, &p.commitment, &[], p.params) {
            Ok(_) => {
                assert!(!lands, "epoch {n}");
                passed += 1;
            }
            Err(fault) => {
                assert!(lands, "epoch {n}");
                assert_eq!(fault.kind, FaultKind::BadChunk);
                assert_eq!(fault.shards, vec![Hash32(victim)]);
                hit += 1;
            }
        }
    }
    assert!(hit > 30, "{hit} {passed}");
}
