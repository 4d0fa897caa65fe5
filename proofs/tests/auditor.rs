//! The auditor's side: which shards it names (never on forged or foreign receipts, never data
//! taken this epoch), omission and declared loss, containment and lateness, equivocation.

mod common;

use std::time::Duration;

use cairn_proofs::Hash32;
use cairn_proofs::audit::{Answer, Auditor, Question};
use cairn_proofs::ledger::{Action, AuditReceipt, Ledger, Verdict};
use cairn_proofs::proof::{Fault, FaultKind, ProveError};
use cairn_proofs::receipt::StorageReceipt;
use common::{KIB, MIB, Prover, config, key, mixed_sizes, node};

fn auditor(n: u8) -> Auditor {
    Auditor::new(node(n), [n; 32], config())
}

fn sorted(mut v: Vec<Hash32>) -> Vec<Hash32> {
    v.sort_unstable();
    v
}

fn answer(p: &Prover, q: &Question) -> Answer {
    match p.prove(&q.challenge) {
        Ok(proof) => Answer::Proof(Box::new(proof)),
        Err(ProveError::Lost { shards, reason }) => Answer::Lost { shards, reason },
        Err(e) => Answer::Refused(e.to_string()),
    }
}

const IN_TIME: Duration = Duration::from_secs(1);

#[test]
fn forged_receipts_do_not_decode_or_verify() {
    let r = StorageReceipt::sign(&key(1), Hash32([7; 32]), MIB, 10, 20);
    let bytes = r.to_bytes();
    assert_eq!(StorageReceipt::from_bytes(&bytes).unwrap(), r);
    // Every byte of the encoding matters: any one changed, the receipt is refused.
    for at in 0..bytes.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= x;
            assert!(
                StorageReceipt::from_bytes(&bad).is_err(),
                "byte {at} ^ {x:#x}"
            );
        }
    }
    // Truncated or extended.
    for len in 0..bytes.len() {
        assert!(StorageReceipt::from_bytes(&bytes[..len]).is_err(), "{len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(StorageReceipt::from_bytes(&longer).is_err());
    // Signed by one node, naming another.
    let claims_2 = StorageReceipt {
        node: node(2),
        ..r.clone()
    };
    assert!(claims_2.verify().is_err());
    assert!(StorageReceipt::from_bytes(&claims_2.to_bytes()).is_err());
    // Another signature (a valid one, of another receipt).
    let other = StorageReceipt::sign(&key(1), Hash32([8; 32]), MIB, 10, 20);
    let swapped = StorageReceipt {
        signature: other.signature,
        ..r.clone()
    };
    assert!(swapped.verify().is_err());
}

/// The auditor names only due shards from valid receipts the prover signed: a forged receipt
/// (a field changed, a signature from another key) or another node's receipt is not named,
/// and is not among the receipts the proof is judged against.
#[test]
fn the_auditor_ignores_forged_and_foreign_receipts() {
    let p = Prover::with_sizes(1, &mixed_sizes(10, 51), 51, 10);
    let roots: Vec<Hash32> = p.roots().into_iter().map(Hash32).collect();
    let genuine: Vec<StorageReceipt> = roots[..3]
        .iter()
        .map(|&s| StorageReceipt::sign(&p.key, s, p.shards[&s.0].size(), 5, 20))
        .collect();
    let size = |i: usize| p.shards[&roots[i].0].size();
    let forged = [
        // Size changed after signing.
        StorageReceipt {
            size: size(3) + 1,
            ..StorageReceipt::sign(&p.key, roots[3], size(3), 5, 20)
        },
        // Another shard's root pasted over a genuine receipt.
        StorageReceipt {
            shard: roots[4],
            ..genuine[0].clone()
        },
        // The prover named, signed by someone else.
        StorageReceipt {
            node: p.node(),
            ..StorageReceipt::sign(&key(7), roots[5], size(5), 5, 20)
        },
        // Lease extended after signing.
        StorageReceipt {
            end: 30,
            start: 5,
            ..StorageReceipt::sign(&p.key, roots[6], size(6), 5, 10)
        },
    ];
    for f in &forged {
        assert!(f.verify().is_err(), "{f:?}");
    }
    // Valid receipts, of other nodes.
    let foreign = [
        StorageReceipt::sign(&key(7), roots[7], size(7), 5, 20),
        StorageReceipt::sign(&key(8), roots[8], size(8), 5, 20),
    ];
    let mut all: Vec<StorageReceipt> = forged.to_vec();
    all.extend(foreign);
    all.extend(genuine.clone());
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &all).unwrap();
    assert_eq!(q.challenge.targets, sorted(roots[..3].to_vec()));
    assert_eq!(
        sorted(q.receipts.iter().map(|r| r.shard).collect()),
        sorted(roots[..3].to_vec())
    );
    assert!(q.receipts.iter().all(|r| genuine.contains(r)));
    assert!(!q.again);
    // And the honest answer passes.
    let j = a.judge(&q, answer(&p, &q), IN_TIME);
    assert!(matches!(j.verdict, Verdict::Pass { .. }), "{j:?}");

    // With only bad receipts, nothing is named.
    let only_bad: Vec<StorageReceipt> = all
        .iter()
        .filter(|r| !genuine.contains(r))
        .cloned()
        .collect();
    let q = a.question(10, p.commitment.clone(), &only_bad).unwrap();
    assert!(q.challenge.targets.is_empty());
    assert!(q.receipts.is_empty());
}

/// Named shards are capped at `max_targets`, and the pick varies with the nonce.
#[test]
fn at_most_max_targets_are_named() {
    let p = Prover::with_sizes(1, &[2 * KIB; 40], 52, 10);
    let receipts = p.receipts(3, 20);
    let mut a = auditor(9);
    let max = config().max_targets;
    let q1 = a.question(10, p.commitment.clone(), &receipts).unwrap();
    let q2 = a.question(10, p.commitment.clone(), &receipts).unwrap();
    assert_eq!(q1.challenge.targets.len(), max);
    assert_eq!(q1.receipts.len(), max);
    assert_ne!(q1.challenge.nonce, q2.challenge.nonce);
    assert_ne!(q1.challenge.targets, q2.challenge.targets);
}

/// A shard taken in epoch `e` is not demanded in `e`; it is committed from `e + 1` and named
/// from `e + 2` (a lease recorded at an epoch's last moment may miss the next commitment) to
/// its lease's end.
#[test]
fn data_taken_this_epoch_is_not_demanded() {
    let mut p = Prover::with_sizes(1, &[MIB, 5000, 70_000], 61, 10);
    let roots: Vec<Hash32> = p.roots().into_iter().map(Hash32).collect();
    let size = |i: usize| p.shards[&roots[i].0].size();
    let fresh = StorageReceipt::sign(&p.key, roots[0], size(0), 10, 12);
    let ended = StorageReceipt::sign(&p.key, roots[1], size(1), 4, 9);
    let receipts = vec![fresh.clone(), ended.clone()];
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    assert!(q.challenge.targets.is_empty(), "{:?}", q.challenge.targets);
    for (epoch, named) in [(11, false), (12, true), (13, false)] {
        p.commit(epoch);
        let q = a.question(epoch, p.commitment.clone(), &receipts).unwrap();
        let want = if named { vec![roots[0]] } else { vec![] };
        assert_eq!(q.challenge.targets, want, "epoch {epoch}");
        let j = a.judge(&q, answer(&p, &q), IN_TIME);
        assert!(matches!(j.verdict, Verdict::Pass { .. }), "{j:?}");
    }
}

/// A shard the node signed a receipt for, left out of its commitment, is `Omitted` when
/// named; the same shard declared lost is not a fault (the proof passes listing it), and in a
/// ledger the declared loss leaves the node placeable while the caught one (quorum 1) does not.
#[test]
fn targeted_challenges_catch_omission_and_declaring_is_cheaper() {
    let sizes = [MIB, 300 * KIB, 4000, 2 * MIB + 3, 77_777];
    let mut omits = Prover::with_sizes(1, &sizes, 71, 10);
    let victim = omits.roots()[2];
    omits.omit(victim);
    omits.commit(10);
    let mut declares = Prover::with_sizes(1, &sizes, 71, 10);
    declares.declare(victim);
    declares.commit(10);
    assert_eq!(omits.tree.root(), declares.tree.root(), "the same tree");
    assert_eq!(declares.commitment.declared, vec![Hash32(victim)]);
    let receipts = omits.receipts(5, 20);
    assert_eq!(receipts, declares.receipts(5, 20));

    // Omitted: the proof verifies up to the named shard it cannot place.
    let mut a = auditor(9);
    let q = a.question(10, omits.commitment.clone(), &receipts).unwrap();
    assert!(q.challenge.targets.contains(&Hash32(victim)));
    let proof = omits.prove(&q.challenge).unwrap();
    let fault = proof
        .verify(&q.challenge, &q.commitment, &q.receipts, omits.params)
        .unwrap_err();
    assert_eq!(
        fault,
        Fault {
            kind: FaultKind::Omitted,
            shards: vec![Hash32(victim)]
        }
    );
    let caught = a.judge(&q, Answer::Proof(Box::new(proof)), IN_TIME);
    assert_eq!(caught.verdict, Verdict::Fault(FaultKind::Omitted));
    assert_eq!(caught.shards, vec![Hash32(victim)]);
    let caught_receipt = Auditor::receipt(&key(9), &q, &caught, IN_TIME, None);

    // Declared: the same question passes, listing the shard.
    let mut b = auditor(9);
    let q = b
        .question(10, declares.commitment.clone(), &receipts)
        .unwrap();
    assert!(q.challenge.targets.contains(&Hash32(victim)));
    let proof = declares.prove(&q.challenge).unwrap();
    let proven = proof
        .verify(&q.challenge, &q.commitment, &q.receipts, declares.params)
        .unwrap();
    assert_eq!(proven.declared, vec![Hash32(victim)]);
    assert!(!proven.shards.contains(&Hash32(victim)));
    assert_eq!(proven.bytes, declares.committed_bytes());
    let declared = b.judge(&q, Answer::Proof(Box::new(proof)), IN_TIME);
    assert_eq!(
        declared.verdict,
        Verdict::Pass {
            bytes: declares.committed_bytes(),
            declared: 1
        }
    );
    assert_eq!(declared.shards, vec![Hash32(victim)]);
    let declared_receipt = Auditor::receipt(&key(9), &q, &declared, IN_TIME, None);

    // In ledgers that trust one auditor: both name the shard for repair, only the caught
    // node is faulty, and its score is lower.
    let prover = omits.node();
    let mut l_declared = Ledger::with_quorum(3, 1);
    let mut l_caught = Ledger::with_quorum(3, 1);
    let repair = Action::Repair {
        node: prover,
        shards: vec![Hash32(victim)],
    };
    assert_eq!(
        l_declared.apply(&declared_receipt, 10).unwrap(),
        vec![repair.clone()]
    );
    assert_eq!(
        l_caught.apply(&caught_receipt, 10).unwrap(),
        vec![repair, Action::StopPlacing { node: prover }]
    );
    let (d, c) = (
        l_declared.record(&prover).unwrap(),
        l_caught.record(&prover).unwrap(),
    );
    assert!(!d.faulty && c.faulty);
    assert!(d.score > c.score, "{} vs {}", d.score, c.score);
    assert_eq!(d.declared, 1);
    assert!(l_declared.faulty().is_empty());
    assert_eq!(l_caught.faulty(), vec![prover]);

    // A receipt whose size disagrees with the committed size is an omission too.
    let mut c = auditor(9);
    let wrong = StorageReceipt::sign(
        &declares.key,
        Hash32(declares.roots()[0]),
        declares.shards[&declares.roots()[0]].size() + 1,
        5,
        20,
    );
    let q = c
        .question(
            10,
            declares.commitment.clone(),
            std::slice::from_ref(&wrong),
        )
        .unwrap();
    let fault = declares
        .prove(&q.challenge)
        .unwrap()
        .verify(&q.challenge, &q.commitment, &q.receipts, declares.params)
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Omitted);
    assert_eq!(fault.shards, vec![wrong.shard]);
}

/// Containment: a timeout holds the node and the same question is asked again; three in a row
/// are a fault; a valid answer to the question asked again clears it (earning nothing);
/// unreachable is offline, not contained.
#[test]
fn containment_asks_the_same_question_until_answered_or_missed() {
    let cfg = config();
    let p = Prover::with_sizes(1, &mixed_sizes(8, 81), 81, 10);
    let receipts = p.receipts(5, 20);
    let prover = p.node();
    let timeout = cfg.deadline + cfg.grace + Duration::from_millis(1);

    // Three timeouts in a row.
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    assert!(!q.challenge.targets.is_empty());
    let j = a.judge(&q, Answer::TimedOut, timeout);
    assert_eq!(j.verdict, Verdict::Contained { misses: 1 });
    assert!(a.is_contained(&prover));
    assert_eq!(a.pick(11, &[node(2), prover, node(3)])[0], prover);
    let q2 = a.question_again(&prover).unwrap();
    assert!(q2.again);
    assert_eq!(q2.challenge, q.challenge, "the same question");
    assert_eq!(q2.commitment, q.commitment);
    assert_eq!(q2.receipts, q.receipts);
    let j = a.judge(&q2, Answer::TimedOut, timeout);
    assert_eq!(j.verdict, Verdict::Contained { misses: 2 });
    let q3 = a.question_again(&prover).unwrap();
    assert_eq!(q3.challenge, q.challenge);
    let j = a.judge(&q3, Answer::Refused("busy".into()), IN_TIME);
    assert_eq!(j.verdict, Verdict::Fault(FaultKind::Missed(3)));
    assert!(!a.is_contained(&prover));
    assert!(a.question_again(&prover).is_none());

    // One timeout, then a valid answer to the question asked again: cleared, not a pass.
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    assert_eq!(
        a.judge(&q, Answer::TimedOut, timeout).verdict,
        Verdict::Contained { misses: 1 }
    );
    let again = a.question_again(&prover).unwrap();
    let j = a.judge(&again, answer(&p, &again), IN_TIME);
    assert_eq!(j.verdict, Verdict::Cleared);
    assert!(!a.is_contained(&prover));
    // A fresh question afterwards is a fresh one, and passes.
    let fresh = a.question(10, p.commitment.clone(), &receipts).unwrap();
    assert_ne!(fresh.challenge, q.challenge);
    assert!(matches!(
        a.judge(&fresh, answer(&p, &fresh), IN_TIME).verdict,
        Verdict::Pass { .. }
    ));

    // A valid proof after the deadline + grace is a timeout.
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    assert_eq!(
        a.judge(&q, answer(&p, &q), timeout).verdict,
        Verdict::Contained { misses: 1 }
    );
    assert!(a.is_contained(&prover));

    // Unreachable: offline, no containment, no fault.
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    let j = a.judge(&q, Answer::Unreachable, timeout);
    assert_eq!(j.verdict, Verdict::Offline);
    assert!(!a.is_contained(&prover));
    assert!(a.question_again(&prover).is_none());
    // An invalid answer during containment is a fault at once.
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    a.judge(&q, Answer::TimedOut, timeout);
    let again = a.question_again(&prover).unwrap();
    let other = p.challenge(9, common::nonce(81, 0), vec![]);
    let wrong = p.prove(&other).unwrap();
    assert_eq!(
        a.judge(&again, Answer::Proof(Box::new(wrong)), IN_TIME)
            .verdict,
        Verdict::Fault(FaultKind::WrongChallenge)
    );
    assert!(!a.is_contained(&prover));
}

/// A valid proof after the deadline but inside the grace is `Late`: nothing earned, the node
/// held in containment and asked again; `max_contained` late answers in a row are a fault.
///
/// Fails against `Auditor::judge` as written: a late valid proof is judged by `miss`, which
/// returns `Verdict::Contained { misses }`, so `Verdict::Late` is never produced (see the
/// report).
#[test]
fn a_valid_proof_within_the_grace_is_late() {
    let cfg = config();
    let p = Prover::with_sizes(1, &mixed_sizes(8, 82), 82, 10);
    let receipts = p.receipts(5, 20);
    let late = cfg.deadline + cfg.grace / 2;
    let mut a = auditor(9);
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    // Exactly at the deadline is in time.
    let mut b = auditor(9);
    let qb = b.question(10, p.commitment.clone(), &receipts).unwrap();
    assert!(matches!(
        b.judge(&qb, answer(&p, &qb), cfg.deadline).verdict,
        Verdict::Pass { .. }
    ));

    let j = a.judge(&q, answer(&p, &q), late);
    assert_eq!(j.verdict, Verdict::Late);
    assert!(a.is_contained(&p.node()), "a late answer is asked again");
    let again = a.question_again(&p.node()).unwrap();
    assert_eq!(again.challenge, q.challenge);
    assert_eq!(
        a.judge(&again, answer(&p, &again), late).verdict,
        Verdict::Late
    );
    let again = a.question_again(&p.node()).unwrap();
    assert_eq!(
        a.judge(&again, answer(&p, &again), late).verdict,
        Verdict::Fault(FaultKind::Missed(3))
    );
}

/// Two different commitments from one node for one epoch: the second is equivocation. The
/// same one again, or one for another epoch, is fine.
#[test]
fn two_commitments_for_one_epoch_are_equivocation() {
    let mut p = Prover::with_sizes(1, &mixed_sizes(6, 91), 91, 10);
    let first = p.commitment.clone();
    let mut a = auditor(9);
    a.question(10, first.clone(), &[]).unwrap();
    a.question(10, first.clone(), &[]).unwrap();
    p.omit(p.roots()[0]);
    p.commit(10);
    let second = p.commitment.clone();
    assert!(first.equivocates(&second));
    let fault = a.question(10, second.clone(), &[]).unwrap_err();
    assert_eq!(
        fault,
        Fault {
            kind: FaultKind::Equivocation,
            shards: vec![]
        }
    );
    // It stays equivocation, and the first is still accepted.
    assert_eq!(
        a.question(10, second.clone(), &[]).unwrap_err().kind,
        FaultKind::Equivocation
    );
    a.question(10, first, &[]).unwrap();
    // Another auditor that saw only the second has no reason to complain.
    auditor(8).question(10, second.clone(), &[]).unwrap();
    // Another epoch.
    p.commit(11);
    a.question(11, p.commitment.clone(), &[]).unwrap();
    // A commitment for another epoch than asked is wrong, not equivocation.
    let k = a.question(12, p.commitment.clone(), &[]).unwrap_err().kind;
    assert!(matches!(k, FaultKind::WrongCommitment(_)), "{k:?}");
    // The fault becomes a receipt that makes the node faulty in a quorum-1 ledger.
    let r: AuditReceipt = Auditor::fault_receipt(&key(9), p.node(), 10, second.digest(), fault);
    let mut l = Ledger::with_quorum(3, 1);
    assert_eq!(
        l.apply(&r, 10).unwrap(),
        vec![Action::StopPlacing { node: p.node() }]
    );
}
