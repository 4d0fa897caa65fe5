//! Nodes at the edges: one that holds nothing, one that declared everything lost, one whose
//! lost shard came back (recovered), and whom an auditor picks.

mod common;

use std::time::Duration;

use cairn_proofs::Hash32;
use cairn_proofs::audit::{Answer, Auditor};
use cairn_proofs::ledger::Verdict;
use cairn_proofs::proof::{FaultKind, ProveError};
use common::{MIB, Prover, config, mixed_sizes, node};

const IN_TIME: Duration = Duration::from_secs(1);

fn auditor() -> Auditor {
    Auditor::new(node(9), [9; 32], config())
}

/// A node that holds nothing commits to the empty tree (a valid commitment), and must be
/// able to answer the auditors that question it; otherwise every new node is contained, then
/// faulted for `Missed`, for holding nothing.
///
/// Fails as written: `EpochProof::prove` asks `CommitTree::multiproof` for no leaves, which
/// refuses (`TreeError::NoLeaves`), so `prove` returns `ProveError::Tree` (see the report).
#[test]
fn an_empty_node_can_answer_its_auditors() {
    let p = Prover::new(1, vec![], 10);
    assert_eq!((p.commitment.count, p.commitment.bytes), (0, 0));
    p.commitment.verify().unwrap();
    let mut a = auditor();
    let q = a.question(10, p.commitment.clone(), &[]).unwrap();
    let proof = p
        .prove(&q.challenge)
        .expect("an empty node must be able to answer");
    let proven = proof
        .verify(&q.challenge, &q.commitment, &q.receipts, p.params)
        .unwrap();
    assert_eq!(proven.bytes, 0);
    let j = a.judge(&q, Answer::Proof(Box::new(proof)), IN_TIME);
    assert_eq!(
        j.verdict,
        Verdict::Pass {
            bytes: 0,
            declared: 0
        }
    );
}

/// A node that declared every shard it held lost (a dead disk) commits to the empty tree and
/// answers the shards named from its receipts as declared.
///
/// Fails as written, for the same reason as `an_empty_node_can_answer_its_auditors`.
#[test]
fn a_node_that_declared_everything_lost_can_answer() {
    let mut p = Prover::with_sizes(1, &[MIB, 5000, 3], 131, 10);
    let roots = p.roots();
    for &r in &roots {
        p.declare(r);
    }
    p.commit(10);
    assert_eq!(p.commitment.count, 0);
    let receipts = p.receipts(2, 20);
    let mut a = auditor();
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    let named: Vec<Hash32> = roots.iter().map(|&r| Hash32(r)).collect();
    assert_eq!(q.challenge.targets, named);
    let proof = p
        .prove(&q.challenge)
        .expect("a node that declared its losses must be able to answer");
    let j = a.judge(&q, Answer::Proof(Box::new(proof)), IN_TIME);
    assert_eq!(
        j.verdict,
        Verdict::Pass {
            bytes: 0,
            declared: 3
        }
    );
    assert_eq!(j.shards, named);
}

/// A shard declared lost and held again is listed as recovered: every auditor names it
/// (receipt or not), a valid answer counts it as recovered, and a node that lists a shard as
/// recovered without really holding it is caught on it.
#[test]
fn recovered_shards_are_named_and_proven_again() {
    let mut p = Prover::with_sizes(1, &mixed_sizes(8, 141), 141, 10);
    let s = p.roots()[5];
    p.declare(s);
    p.commit(10);
    let receipts = p.receipts(2, 20);
    let mut a = auditor();
    let q = a.question(10, p.commitment.clone(), &receipts).unwrap();
    let j = a.judge(
        &q,
        Answer::Proof(Box::new(p.prove(&q.challenge).unwrap())),
        IN_TIME,
    );
    assert!(
        matches!(j.verdict, Verdict::Pass { declared: 1, .. }),
        "{j:?}"
    );

    // Held again (repaired back onto this node), listed as recovered.
    p.declared.clear();
    p.recovered.insert(s);
    p.commit(11);
    assert_eq!(p.commitment.recovered, vec![Hash32(s)]);
    let q = a.question(11, p.commitment.clone(), &[]).unwrap();
    assert_eq!(
        q.challenge.targets,
        vec![Hash32(s)],
        "named without a receipt"
    );
    let j = a.judge(
        &q,
        Answer::Proof(Box::new(p.prove(&q.challenge).unwrap())),
        IN_TIME,
    );
    assert!(
        matches!(j.verdict, Verdict::Pass { declared: 0, .. }),
        "{j:?}"
    );
    assert_eq!(j.recovered, 1);

    // Listed as recovered, but the bytes are not there.
    let size = p.shards[&s].size();
    p.delete(s, 0..size);
    let q = a.question(11, p.commitment.clone(), &[]).unwrap();
    match p.prove(&q.challenge) {
        Err(ProveError::Lost { shards, .. }) => assert!(shards.contains(&Hash32(s))),
        other => panic!("{other:?}"),
    }
    let j = a.judge(&q, Answer::Proof(Box::new(p.lie(&q.challenge))), IN_TIME);
    assert_eq!(j.verdict, Verdict::Fault(FaultKind::BadChunk));
    assert!(j.shards.contains(&Hash32(s)));
}

/// Auditors pick contained peers first, then at most `audits_per_epoch` others, never
/// themselves; the pick depends on the auditor's secret and the epoch.
#[test]
fn auditors_pick_contained_peers_first_and_never_themselves() {
    let cfg = config();
    let peers: Vec<_> = (1..=20).map(node).collect();
    let a = Auditor::new(node(9), [9; 32], cfg.clone());
    let b = Auditor::new(node(9), [8; 32], cfg.clone());
    let pick = a.pick(5, &peers);
    assert_eq!(pick.len(), cfg.audits_per_epoch);
    assert!(!pick.contains(&node(9)));
    assert_eq!(pick, a.pick(5, &peers));
    assert_ne!(pick, a.pick(6, &peers));
    assert_ne!(pick, b.pick(5, &peers));

    let p = Prover::with_sizes(3, &[5000], 151, 5);
    let mut a = a;
    let q = a.question(5, p.commitment.clone(), &[]).unwrap();
    a.judge(&q, Answer::TimedOut, cfg.deadline + cfg.grace * 2);
    let pick = a.pick(6, &peers);
    assert_eq!(pick[0], p.node());
    assert_eq!(pick.len(), cfg.audits_per_epoch + 1);
    assert_eq!(pick.iter().filter(|&&n| n == p.node()).count(), 1);
}
