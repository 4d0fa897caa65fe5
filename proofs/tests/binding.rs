//! What a proof is bound to: one challenge (nonce, epoch, auditor, commitment) and one node.
//! Replays, proofs lent between nodes and proofs signed by the wrong key all fail.

mod common;

use cairn_proofs::Hash32;
use cairn_proofs::audit::Auditor;
use cairn_proofs::challenge::Challenge;
use cairn_proofs::commitment::Commitment;
use cairn_proofs::proof::{EpochProof, Fault, FaultKind, ProveError};
use common::{Prover, build_proof, config, key, mixed_sizes, node, nonce, resign};

fn kind(r: Result<cairn_proofs::proof::Proven, Fault>) -> FaultKind {
    r.expect_err("the proof must not verify").kind
}

fn is_wrong_commitment(k: &FaultKind) -> bool {
    matches!(k, FaultKind::WrongCommitment(_))
}

/// A valid proof for nonce A does not answer nonce B, another epoch's challenge, another
/// auditor's, or one over another commitment; re-labelling it with the new challenge breaks
/// the signature, and the prover re-signing its old chunks under the new challenge is caught
/// by the places or the chunks.
#[test]
fn replays_fail() {
    let mut p = Prover::with_sizes(1, &mixed_sizes(20, 21), 21, 10);
    let params = p.params;
    let a = p.challenge(2, nonce(21, 0), vec![]);
    let proof = p.prove(&a).unwrap();
    proof.verify(&a, &p.commitment, &[], params).unwrap();
    let c10 = p.commitment.clone();

    // Another nonce.
    let b = p.challenge(2, nonce(21, 1), vec![]);
    assert_eq!(
        kind(proof.verify(&b, &c10, &[], params)),
        FaultKind::WrongChallenge
    );
    // Another auditor, same nonce.
    let other_auditor = p.challenge(3, nonce(21, 0), vec![]);
    assert_eq!(
        kind(proof.verify(&other_auditor, &c10, &[], params)),
        FaultKind::WrongChallenge
    );
    // Another epoch: the node commits to the same shards for epoch 11.
    p.commit(11);
    let c11 = p.commitment.clone();
    assert_ne!(c11.digest(), c10.digest());
    let next = p.challenge(2, nonce(21, 0), vec![]);
    assert_eq!(
        kind(proof.verify(&next, &c11, &[], params)),
        FaultKind::WrongChallenge
    );
    // The old challenge with the new commitment (or any commitment it does not name).
    assert!(is_wrong_commitment(&kind(proof.verify(
        &a,
        &c11,
        &[],
        params
    ))));
    // Another commitment in the same epoch (the node's second one), named by the challenge.
    p.omit(p.roots()[0]);
    p.commit(10);
    let c10b = p.commitment.clone();
    let over_b = p.challenge(2, nonce(21, 0), vec![]);
    assert_eq!(
        kind(proof.verify(&over_b, &c10b, &[], params)),
        FaultKind::WrongChallenge
    );
    assert!(is_wrong_commitment(&kind(proof.verify(
        &a,
        &c10b,
        &[],
        params
    ))));

    // The old proof relabelled with the new question: the signature no longer holds.
    for new in [&b, &other_auditor] {
        let relabelled = EpochProof {
            challenge: new.clone(),
            ..proof.clone()
        };
        assert_eq!(
            kind(relabelled.verify(new, &c10, &[], params)),
            FaultKind::Unsigned
        );
        // The prover itself re-signs its old places and chunks under the new challenge:
        // other positions, so other chunks (or other shards) are asked.
        let resigned = build_proof(&p.key, new, proof.places.clone(), proof.chunks.clone());
        let k = kind(resigned.verify(new, &c10, &[], params));
        assert!(
            matches!(k, FaultKind::BadChunk | FaultKind::Places(_)),
            "{k:?}"
        );
    }
    // And the honest answer to B is fine.
    let mut q = Prover::with_sizes(1, &mixed_sizes(20, 21), 21, 10);
    q.commit(10);
    assert_eq!(q.commitment, c10);
    q.prove(&b).unwrap().verify(&b, &c10, &[], params).unwrap();
}

/// Node B cannot pass off node A's proof: not as it is, not re-signed by B over A's
/// commitment (the commitment is A's), and a proof of A's signed by another key is unsigned.
/// A commitment naming A but signed by B is refused before any question is asked.
#[test]
fn proofs_are_bound_to_the_node() {
    let a = Prover::with_sizes(1, &mixed_sizes(15, 31), 31, 10);
    let mut b = Prover::with_sizes(2, &mixed_sizes(15, 32), 32, 10);
    let params = a.params;
    let ch_a = a.challenge(9, nonce(31, 0), vec![]);
    let proof_a = a.prove(&ch_a).unwrap();
    proof_a.verify(&ch_a, &a.commitment, &[], params).unwrap();

    // The auditor asks B (over B's commitment); B answers with A's proof.
    let ch_b = b.challenge(9, nonce(31, 0), vec![]);
    assert_eq!(
        kind(proof_a.verify(&ch_b, &b.commitment, &[], params)),
        FaultKind::WrongChallenge
    );
    // B re-signs A's proof as its own answer: the places are over A's tree, not B's.
    let stolen = build_proof(
        &b.key,
        &ch_b,
        proof_a.places.clone(),
        proof_a.chunks.clone(),
    );
    assert!(matches!(
        kind(stolen.verify(&ch_b, &b.commitment, &[], params)),
        FaultKind::Places(_)
    ));
    // B hands the auditor A's commitment as its own: a challenge to B over it.
    let ch_b_over_a = Challenge::new(
        node(9),
        b.node(),
        10,
        a.commitment.digest(),
        nonce(31, 1),
        vec![],
    );
    // B cannot prove over it with the crate (it is not B's commitment)...
    let refused = EpochProof::prove(
        &b.key,
        &a.commitment,
        &a.tree,
        &ch_b_over_a,
        params,
        |e, i| a.read(e, i),
    );
    assert!(
        matches!(refused, Err(ProveError::NotMine(_))),
        "{refused:?}"
    );
    // ...and when B builds that proof from A's data and signs it, the commitment is A's.
    b.tree = a.tree.clone();
    b.commitment = a.commitment.clone();
    b.shards = a.shards.clone();
    let forged = b.lie(&ch_b_over_a);
    assert!(is_wrong_commitment(&kind(forged.verify(
        &ch_b_over_a,
        &a.commitment,
        &[],
        params
    ))));

    // A's proof re-signed by another key: not signed by the challenged node.
    for signer in [2, 3] {
        let bad = resign(&key(signer), &proof_a);
        assert_eq!(
            kind(bad.verify(&ch_a, &a.commitment, &[], params)),
            FaultKind::Unsigned
        );
    }
    // A's own key still works (the re-signing helper is faithful).
    resign(&a.key, &proof_a)
        .verify(&ch_a, &a.commitment, &[], params)
        .unwrap();

    // A commitment claiming node A, signed by B.
    let impostor = Commitment::sign(&key(2), 10, &a.tree, vec![], vec![]).unwrap();
    let claims_a = Commitment {
        node: a.node(),
        ..impostor
    };
    assert!(claims_a.verify().is_err());
    assert!(Commitment::from_bytes(&claims_a.to_bytes()).is_err());
    let mut auditor = Auditor::new(node(9), [9; 32], config());
    let fault = auditor.question(10, claims_a, &[]).unwrap_err();
    assert!(is_wrong_commitment(&fault.kind), "{fault:?}");
    // The genuine one is fine, and the question goes to the node that signed it.
    let q = auditor.question(10, a.commitment.clone(), &[]).unwrap();
    assert_eq!(q.challenge.prover, a.node());
    assert_eq!(q.challenge.commitment, a.commitment.digest());
}

/// A challenge for another node, or over a commitment the node did not make, is refused by
/// the prover; a proof over a challenge naming shards is bound to the shards named.
#[test]
fn provers_refuse_questions_that_are_not_theirs() {
    let a = Prover::with_sizes(1, &mixed_sizes(10, 41), 41, 10);
    let params = a.params;
    let for_b = Challenge::new(
        node(9),
        node(2),
        10,
        a.commitment.digest(),
        nonce(41, 0),
        vec![],
    );
    assert!(matches!(a.prove(&for_b), Err(ProveError::NotMine(_))));
    let wrong_digest = Challenge::new(node(9), a.node(), 10, Hash32([7; 32]), nonce(41, 0), vec![]);
    assert!(matches!(
        a.prove(&wrong_digest),
        Err(ProveError::WrongCommitment { .. })
    ));
    let wrong_epoch = Challenge::new(
        node(9),
        a.node(),
        11,
        a.commitment.digest(),
        nonce(41, 0),
        vec![],
    );
    assert!(matches!(
        a.prove(&wrong_epoch),
        Err(ProveError::WrongCommitment { .. })
    ));
    // Named shards are part of the question.
    let named = a.challenge(9, nonce(41, 0), vec![Hash32(a.roots()[3])]);
    let plain = a.challenge(9, nonce(41, 0), vec![]);
    let proof = a.prove(&named).unwrap();
    proof
        .verify(&named, &a.commitment, &a.receipts(1, 20), params)
        .unwrap();
    // c uniform chunks, then `target_chunks` of the named shard.
    assert_eq!(
        proof.chunks.len(),
        (params.challenges + params.target_chunks) as usize
    );
    assert_eq!(
        kind(proof.verify(&plain, &a.commitment, &[], params)),
        FaultKind::WrongChallenge
    );
}

/// A proof must place exactly the shards it was asked about: one more place (a valid path
/// of a committed shard nothing was asked of) is refused, as is one fewer.
#[test]
fn proofs_place_exactly_the_shards_asked_about() {
    let a = Prover::with_sizes(1, &mixed_sizes(30, 42), 42, 10);
    let params = a.params;
    let ch = a.challenge(9, nonce(42, 0), vec![]);
    let honest = a.prove(&ch).unwrap();
    let w = common::wants(&a.tree, &[], &ch, params);
    let asked: std::collections::BTreeSet<u64> = w.leaves.iter().copied().collect();
    let extra = (0..a.tree.len()).find(|i| !asked.contains(i)).unwrap();
    let mut more = w.leaves.clone();
    more.push(extra);
    let padded = build_proof(
        &a.key,
        &ch,
        a.tree.multiproof(&more).unwrap(),
        honest.chunks.clone(),
    );
    assert!(matches!(
        kind(padded.verify(&ch, &a.commitment, &[], params)),
        FaultKind::Places(_)
    ));
    let fewer: Vec<u64> = asked.iter().skip(1).copied().collect();
    let short = build_proof(
        &a.key,
        &ch,
        a.tree.multiproof(&fewer).unwrap(),
        honest.chunks.clone(),
    );
    assert!(matches!(
        kind(short.verify(&ch, &a.commitment, &[], params)),
        FaultKind::Places(_)
    ));
    // One chunk fewer, or one more.
    let mut chunks = honest.chunks.clone();
    chunks.pop();
    let k = kind(
        build_proof(&a.key, &ch, honest.places.clone(), chunks).verify(
            &ch,
            &a.commitment,
            &[],
            params,
        ),
    );
    assert!(matches!(k, FaultKind::Malformed(_)), "{k:?}");
    let mut chunks = honest.chunks.clone();
    chunks.push(honest.chunks[0].clone());
    let k = kind(
        build_proof(&a.key, &ch, honest.places.clone(), chunks).verify(
            &ch,
            &a.commitment,
            &[],
            params,
        ),
    );
    assert!(matches!(k, FaultKind::Malformed(_)), "{k:?}");
}
