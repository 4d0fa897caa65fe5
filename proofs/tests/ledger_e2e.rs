//! End to end: provers, three auditors and the ledger their receipts fold into, epoch after
//! epoch. An honest node passes every audit; a node that lost 10 % of its bytes stops being
//! placed on once two auditors caught it inside the window, its failed shards are named for
//! repair, and once it declares them and proves the rest it is placed on again.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_proofs::Hash32;
use cairn_proofs::audit::{Answer, Auditor};
use cairn_proofs::ledger::{Action, Ledger, Verdict};
use cairn_proofs::proof::ProveError;
use cairn_proofs::receipt::StorageReceipt;
use common::{Prover, config, key, mixed_sizes, node, wants};

const AUDITORS: [u8; 3] = [11, 12, 13];
const LATENCY: Duration = Duration::from_millis(40);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Behaviour {
    Honest,
    /// Signs garbage for what it lacks.
    Liar,
}

/// One epoch of audits of `p` by every auditor: the receipts folded into `ledger`, and for
/// each auditor (verdict, the shards named for repair, all actions).
fn audit_epoch(
    p: &Prover,
    behaviour: Behaviour,
    receipts: &[StorageReceipt],
    auditors: &mut [Auditor],
    ledger: &mut Ledger,
    epoch: u64,
) -> Vec<(u8, Verdict, Vec<Hash32>, Vec<Action>)> {
    let mut out = Vec::new();
    for (a, &n) in auditors.iter_mut().zip(&AUDITORS) {
        let q = a.question(epoch, p.commitment.clone(), receipts).unwrap();
        // The shards whose challenged chunks are gone, as the test knows them.
        let w = wants(&p.tree, &p.commitment.declared, &q.challenge, p.params);
        let mut gone: Vec<Hash32> = w
            .chunks
            .iter()
            .filter(|(e, i)| p.is_lost(e, *i))
            .map(|(e, _)| Hash32(e.root))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        let ans = match behaviour {
            Behaviour::Liar => Answer::Proof(Box::new(p.lie(&q.challenge))),
            Behaviour::Honest => match p.prove(&q.challenge) {
                Ok(proof) => Answer::Proof(Box::new(proof)),
                Err(ProveError::Lost { shards, reason }) => Answer::Lost { shards, reason },
                Err(e) => panic!("{e}"),
            },
        };
        let j = a.judge(&q, ans, LATENCY);
        if j.verdict.is_fault() {
            let mut named = j.shards.clone();
            named.sort_unstable();
            assert_eq!(named, gone, "epoch {epoch} auditor {n}: the failed shards");
        } else {
            assert!(gone.is_empty(), "epoch {epoch} auditor {n}: {j:?}");
        }
        let r = Auditor::receipt(&key(n), &q, &j, LATENCY, Some(Duration::from_millis(7)));
        let actions = ledger.apply(&r, epoch).unwrap();
        let repair: Vec<Hash32> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Repair { node, shards } => {
                    assert_eq!(*node, p.node());
                    Some(shards.clone())
                }
                _ => None,
            })
            .flatten()
            .collect();
        out.push((n, j.verdict, repair, actions));
    }
    out
}

fn auditors() -> Vec<Auditor> {
    AUDITORS
        .iter()
        .map(|&n| Auditor::new(node(n), [n; 32], config()))
        .collect()
}

#[test]
fn an_honest_node_passes_twenty_epochs_with_three_auditors() {
    let mut p = Prover::with_sizes(1, &mixed_sizes(30, 101), 101, 1);
    let receipts = p.receipts(0, 100);
    let mut auditors = auditors();
    let mut ledger = Ledger::new(&config());
    for epoch in 1..=20 {
        assert!(ledger.tick(epoch).is_empty());
        p.commit(epoch);
        for (n, verdict, repair, actions) in audit_epoch(
            &p,
            Behaviour::Honest,
            &receipts,
            &mut auditors,
            &mut ledger,
            epoch,
        ) {
            assert_eq!(
                verdict,
                Verdict::Pass {
                    bytes: p.committed_bytes(),
                    declared: 0
                },
                "epoch {epoch} auditor {n}"
            );
            assert!(repair.is_empty() && actions.is_empty());
        }
    }
    let rec = ledger.record(&p.node()).unwrap();
    assert_eq!(
        (rec.passes, rec.proven_epochs, rec.faults),
        (60, 20, 0),
        "{rec:?}"
    );
    assert_eq!(rec.proven_byte_epochs, 20 * p.committed_bytes());
    assert!(!rec.faulty && ledger.faulty().is_empty());
    assert!(rec.repair.is_empty());
    assert!(rec.score > 0.9, "{}", rec.score);
    assert_eq!(rec.probe_median_ms(), Some(7));
}

/// `behaviour` at a node that lost 10 % of its bytes in 16 KiB groups: StopPlacing exactly
/// when the second distinct auditor's fault lands inside the window (not with the first),
/// Repair naming exactly the shards whose challenged chunks were gone; then the node declares
/// every shard it lost, passes from then on, and ResumePlacing comes once the faults leave the
/// window.
fn lossy(behaviour: Behaviour, seed: u64) {
    let cfg = config();
    let mut p = Prover::with_sizes(2, &mixed_sizes(30, seed), seed, 1);
    p.delete_fraction_groups(0.10, seed);
    let receipts = p.receipts(0, 100);
    let mut auditors = auditors();
    let mut ledger = Ledger::new(&cfg);
    let mut stopped_at = None;
    let mut faulted: Vec<(u64, u8)> = Vec::new();
    let mut repaired: BTreeSet<Hash32> = BTreeSet::new();
    for epoch in 1..=2 {
        assert!(ledger.tick(epoch).is_empty());
        p.commit(epoch);
        for (n, verdict, repair, actions) in
            audit_epoch(&p, behaviour, &receipts, &mut auditors, &mut ledger, epoch)
        {
            if verdict.is_fault() {
                faulted.push((epoch, n));
                assert!(!repair.is_empty(), "a fault names shards for repair");
            }
            repaired.extend(repair);
            let distinct: BTreeSet<u8> = faulted
                .iter()
                .filter(|(e, _)| e + cfg.fault_window > epoch)
                .map(|f| f.1)
                .collect();
            let stops = actions.contains(&Action::StopPlacing { node: p.node() });
            if stopped_at.is_none() {
                assert_eq!(
                    stops,
                    distinct.len() >= cfg.fault_quorum,
                    "epoch {epoch} auditor {n}: {faulted:?}"
                );
                if stops {
                    stopped_at = Some(epoch);
                }
            } else {
                assert!(!stops, "stopped once");
            }
        }
    }
    eprintln!("{behaviour:?}: faults {faulted:?}, stopped in epoch {stopped_at:?}");
    assert_eq!(stopped_at, Some(1), "{faulted:?}");
    assert_eq!(ledger.faulty(), vec![p.node()]);
    let rec = ledger.record(&p.node()).unwrap();
    assert_eq!(rec.repair, repaired);
    // Every shard named for repair lost bytes; none that lost nothing is named.
    for s in &repaired {
        assert!(p.deleted.contains_key(&s.0), "{s} lost nothing");
    }

    // The node declares every shard it lost and commits to the rest.
    let lost: Vec<[u8; 32]> = p.deleted.keys().copied().collect();
    for r in lost {
        p.declare(r);
    }
    let mut resumed_at = None;
    for epoch in 3..=8 {
        let mut actions = ledger.tick(epoch);
        p.commit(epoch);
        for (n, verdict, repair, acts) in
            audit_epoch(&p, behaviour, &receipts, &mut auditors, &mut ledger, epoch)
        {
            let Verdict::Pass { bytes, declared } = verdict else {
                panic!("epoch {epoch} auditor {n}: {verdict:?}");
            };
            assert_eq!(bytes, p.committed_bytes());
            assert_eq!(
                declared as usize,
                repair.len(),
                "declared shards go to repair"
            );
            actions.extend(acts);
        }
        if actions.contains(&Action::ResumePlacing { node: p.node() }) {
            assert!(resumed_at.is_none());
            resumed_at = Some(epoch);
        }
    }
    // The first epoch whose window (itself and the two before) holds faults of fewer than two
    // auditors: 5 when both epochs 1 and 2 had a quorum.
    let expected = (3..).find(|&e: &u64| {
        let window: BTreeSet<u8> = faulted
            .iter()
            .filter(|(f, _)| f + cfg.fault_window > e)
            .map(|f| f.1)
            .collect();
        window.len() < cfg.fault_quorum
    });
    assert_eq!(resumed_at, expected);
    assert!(ledger.faulty().is_empty());
}

#[test]
fn a_node_that_lost_10_percent_and_admits_it_is_stopped_and_repaired() {
    lossy(Behaviour::Honest, 111);
}

#[test]
fn a_node_that_lost_10_percent_and_lies_is_stopped_and_repaired() {
    lossy(Behaviour::Liar, 112);
}
