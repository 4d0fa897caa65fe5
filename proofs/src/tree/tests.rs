use std::ops::Range;
use std::time::Instant;

use cairn_testkit::data::Xorshift;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::codec::{decode, encode};

/// `n` entries with random roots (sorted, distinct prefixes) and sizes from 1 byte to 2^40.
fn random_entries(n: usize, seed: u64) -> Vec<Entry> {
    let mut rng = Xorshift::new(seed);
    let mut roots: Vec<[u8; 32]> = (0..n)
        .map(|_| {
            let mut r = [0; 32];
            rng.fill(&mut r);
            r
        })
        .collect();
    roots.sort_unstable();
    roots.dedup_by_key(|r| prefix(r));
    assert_eq!(roots.len(), n);
    let entries = roots.into_iter().map(|root| {
        let size = match rng.below(4) {
            0 => 1,
            1 => 1 + rng.below(1_000),
            2 => 1 + rng.below(1 << 26),
            _ => 1 + rng.below(1 << 40),
        };
        Entry { root, size }
    });
    entries.collect()
}

/// The offset of every entry: prefix sums.
fn offsets(entries: &[Entry]) -> Vec<u64> {
    let mut off = 0;
    entries
        .iter()
        .map(|e| {
            let o = off;
            off += e.size;
            o
        })
        .collect()
}

/// `locate` by a linear scan.
fn linear_locate(entries: &[Entry], pos: u64) -> Option<(u64, u64)> {
    let offs = offsets(entries);
    (0u64..)
        .zip(entries.iter().zip(offs))
        .find_map(|(i, (e, o))| (o <= pos && pos - o < e.size).then_some((i, pos - o)))
}

fn verify_in(tree: &CommitTree, proof: &MultiProof) -> Result<Vec<Place>, TreeError> {
    verify_multiproof(&tree.root(), tree.len(), tree.total_bytes(), proof)
}

/// The places `verify_multiproof` must return for `leaves`.
fn expected_places(entries: &[Entry], leaves: &[u64]) -> Vec<Place> {
    let offs = offsets(entries);
    let mut idx = leaves.to_vec();
    idx.sort_unstable();
    idx.dedup();
    let place = |index: u64| Place {
        index,
        entry: entries[index as usize],
        offset: offs[index as usize],
    };
    idx.into_iter().map(place).collect()
}

/// How a cheating builder picks an internal node's separator from the leaf ranges of its left
/// and right subtrees.
type SepRule = fn(&[Entry], Range<usize>, Range<usize>) -> [u8; 16];

/// The spec's rule: the smallest key on the right.
fn first_of_right(e: &[Entry], _: Range<usize>, r: Range<usize>) -> [u8; 16] {
    e[r.start].prefix()
}

/// Just above the largest key on the left.
fn after_last_of_left(e: &[Entry], l: Range<usize>, _: Range<usize>) -> [u8; 16] {
    let mut sep = e[l.end - 1].prefix();
    // Add 1 to the 16-byte key (byte 0 most significant), saturating at all 0xff.
    if let Some(k) = sep.iter().rposition(|&b| b != 0xff) {
        sep[k] += 1;
        sep[k + 1..].fill(0);
    }
    sep
}

/// One or the other, by the position of the node.
fn mixed(e: &[Entry], l: Range<usize>, r: Range<usize>) -> [u8; 16] {
    // The parent's index at its level (a left subtree is always full: 2^level leaves).
    if (l.start / l.len() / 2).is_multiple_of(2) {
        first_of_right(e, l, r)
    } else {
        after_last_of_left(e, l, r)
    }
}

/// A tree built level by level here, from the spec, without `build`'s checks: separators by
/// `rule`, and, with `lie = Some((level, node, extra))`, one node claiming `extra` bytes more
/// than its children hold. Also returns the separators (`seps[l][p]`: node `p` at level
/// `l + 1`), to prove with.
fn raw_tree(
    entries: Vec<Entry>,
    rule: SepRule,
    lie: Option<(usize, usize, u64)>,
) -> (CommitTree, Vec<Vec<[u8; 16]>>) {
    let mut level: Vec<Node> = entries.iter().map(Node::leaf).collect();
    let mut spans: Vec<Range<usize>> = (0..entries.len()).map(|i| i..i + 1).collect();
    let (mut levels, mut seps) = (Vec::new(), Vec::new());
    loop {
        if let Some((l, i, extra)) = lie
            && l == levels.len()
        {
            level[i].bytes += extra;
        }
        if level.len() <= 1 {
            levels.push(level);
            break;
        }
        let (mut up, mut up_spans, mut level_seps) = (Vec::new(), Vec::new(), Vec::new());
        for p in 0..level.len().div_ceil(2) {
            let (a, b) = (2 * p, 2 * p + 1);
            if b < level.len() {
                let sep = rule(&entries, spans[a].clone(), spans[b].clone());
                up.push(Node::parent(&level[a], &level[b], &sep).unwrap());
                up_spans.push(spans[a].start..spans[b].end);
                level_seps.push(sep);
            } else {
                up.push(level[a]);
                up_spans.push(spans[a].clone());
                level_seps.push([0; 16]);
            }
        }
        levels.push(level);
        seps.push(level_seps);
        (level, spans) = (up, up_spans);
    }
    let top = levels.last().unwrap().first().copied();
    let tree = CommitTree {
        entries,
        root: top.map_or_else(empty_root, |t| Hash32(t.hash)),
        total: top.map_or(0, |t| t.bytes),
        levels,
    };
    (tree, seps)
}

#[test]
fn build_agrees_with_the_spec_built_here() {
    for n in (0..=40).chain([1000]) {
        let entries = random_entries(n, n as u64);
        let tree = CommitTree::build(entries.clone()).unwrap();
        let (raw, _) = raw_tree(entries, first_of_right, None);
        assert_eq!(tree.root(), raw.root(), "n = {n}");
        assert_eq!(tree.levels, raw.levels, "n = {n}");
        assert_eq!(tree.total_bytes(), raw.total_bytes());
    }
    let empty = CommitTree::build(Vec::new()).unwrap();
    assert_eq!(empty.root(), digest("cairn-proofs tree empty v1", &[]));
    assert_eq!((empty.len(), empty.total_bytes()), (0, 0));
    // One entry: the root is its leaf hash.
    let e = Entry {
        root: [7; 32],
        size: 9,
    };
    let one = CommitTree::build(vec![e]).unwrap();
    let leaf = digest(
        "cairn-proofs tree leaf v1",
        &[&[7; 32], &9u64.to_le_bytes()],
    );
    assert_eq!(one.root(), leaf);
}

#[test]
fn build_locate_find_and_single_proofs() {
    for (seed, n) in [0u64, 1, 2, 3, 5, 8, 1000].into_iter().enumerate() {
        let entries = random_entries(n as usize, 100 + seed as u64);
        let tree = CommitTree::build(entries.clone()).unwrap();
        let offs = offsets(&entries);
        let total: u64 = entries.iter().map(|e| e.size).sum();
        assert_eq!((tree.len(), tree.is_empty()), (n, n == 0));
        assert_eq!((tree.entries(), tree.total_bytes()), (&entries[..], total));
        for (i, e) in (0u64..).zip(&entries) {
            assert_eq!(tree.find(&e.root), Some(i));
            let mut other = e.root;
            other[31] ^= 1;
            assert_eq!(tree.find(&other), None);
            let proof = tree.multiproof(&[i]).unwrap();
            let places = verify_in(&tree, &proof).unwrap();
            assert_eq!(places, expected_places(&entries, &[i]));
            let off = offs[i as usize];
            for pos in [
                off.saturating_sub(1),
                off,
                off + e.size / 2,
                off + e.size - 1,
            ] {
                assert_eq!(tree.locate(pos), linear_locate(&entries, pos), "pos {pos}");
            }
            assert_eq!(tree.locate(off), Some((i, 0)));
            assert_eq!(tree.locate(off + e.size - 1), Some((i, e.size - 1)));
        }
        assert_eq!(tree.locate(total), None);
        assert_eq!(tree.locate(u64::MAX), None);
        if n == 0 {
            assert_eq!(tree.multiproof(&[]), Err(TreeError::NoLeaves));
            assert!(matches!(
                tree.multiproof(&[0]),
                Err(TreeError::IndexOutOfRange { index: 0, count: 0 })
            ));
        }
    }
}

#[test]
fn build_refuses_bad_input() {
    let e = |b: u8, size| Entry {
        root: [b; 32],
        size,
    };
    let bad = |v: Vec<Entry>| CommitTree::build(v).unwrap_err();
    assert_eq!(
        bad(vec![e(1, 5), e(2, 0)]),
        TreeError::ZeroSize { index: 1 }
    );
    assert_eq!(
        bad(vec![e(2, 5), e(1, 5)]),
        TreeError::NotIncreasing { index: 1 }
    );
    assert_eq!(
        bad(vec![e(1, 5), e(1, 5)]),
        TreeError::NotIncreasing { index: 1 }
    );
    // Distinct roots, but the same 16-byte prefix.
    let mut twin = e(1, 5);
    twin.root[20] = 9;
    assert_eq!(
        bad(vec![e(1, 5), twin]),
        TreeError::NotIncreasing { index: 1 }
    );
    assert_eq!(bad(vec![e(1, u64::MAX), e(2, 1)]), TreeError::Overflow);
    // Exactly u64::MAX bytes is fine.
    let t = CommitTree::build(vec![e(1, u64::MAX - 1), e(2, 1)]).unwrap();
    assert_eq!(t.total_bytes(), u64::MAX);
    assert_eq!(t.locate(u64::MAX - 1), Some((1, 0)));
    let p = t.multiproof(&[1]).unwrap();
    assert_eq!(verify_in(&t, &p).unwrap()[0].offset, u64::MAX - 1);
    // A cheater's entry of size 0 does not verify either.
    let (t, seps) = raw_tree(vec![e(1, 5), e(2, 0), e(3, 4)], first_of_right, None);
    let prove = |i| t.prove_with(&[i], |l, p| seps[l][p]).unwrap();
    assert_eq!(
        verify_in(&t, &prove(1)),
        Err(TreeError::ZeroSize { index: 1 })
    );
    assert_eq!(verify_in(&t, &prove(2)).unwrap()[0].offset, 5);
}

#[test]
fn multiproofs_verify() {
    let mut rng = Xorshift::new(7);
    for n in [1000u64, 777, 13] {
        let entries = random_entries(n as usize, n);
        let tree = CommitTree::build(entries.clone()).unwrap();
        for k in [1, 2, 32] {
            for _ in 0..20 {
                let mut leaves: Vec<u64> = (0..k).map(|_| rng.below(n)).collect();
                leaves.push(leaves[0]);
                let proof = tree.multiproof(&leaves).unwrap();
                let places = verify_in(&tree, &proof).unwrap();
                assert_eq!(places, expected_places(&entries, &leaves));
                assert_eq!(proof.entries().unwrap().len(), places.len());
                // Canonical: the order of the request does not matter.
                leaves.sort_unstable();
                assert_eq!(tree.multiproof(&leaves).unwrap(), proof);
                let bytes = encode(&proof);
                assert_eq!(
                    decode::<MultiProof>("proof", &bytes, 1 << 20).unwrap(),
                    proof
                );
            }
        }
        // Every leaf at once: no siblings at all.
        let all: Vec<u64> = (0..n).collect();
        let proof = tree.multiproof(&all).unwrap();
        assert!(proof.siblings.is_empty());
        assert_eq!(proof.separators.len(), (n as usize - 1) * SEP_LEN);
        assert_eq!(
            verify_in(&tree, &proof).unwrap(),
            expected_places(&entries, &all)
        );
    }
}

#[test]
fn tampered_proofs_fail() {
    let n = 300u64;
    let tree = CommitTree::build(random_entries(n as usize, 3)).unwrap();
    let mut rng = Xorshift::new(11);
    let mut leaves: Vec<u64> = (0..32).map(|_| rng.below(n)).collect();
    leaves.push(n - 1);
    let proof = tree.multiproof(&leaves).unwrap();
    verify_in(&tree, &proof).unwrap();
    let fails = |p: &MultiProof| verify_in(&tree, p).is_err();
    type Field = fn(&mut MultiProof) -> &mut Vec<u8>;
    let fields: [Field; 3] = [
        |p| &mut p.entries,
        |p| &mut p.siblings,
        |p| &mut p.separators,
    ];
    for field in fields {
        let len = field(&mut proof.clone()).len();
        assert!(len > 0);
        for i in 0..len {
            for bit in [0x01, 0x80] {
                let mut p = proof.clone();
                field(&mut p)[i] ^= bit;
                assert!(fails(&p), "byte {i} of {len} flipped by {bit}");
            }
        }
        let mut p = proof.clone();
        field(&mut p).pop();
        assert!(matches!(verify_in(&tree, &p), Err(TreeError::Malformed(_))));
    }
    // Sibling byte counts one more or one less.
    for k in 0..proof.siblings.len() / NODE_LEN {
        for delta in [1u64, u64::MAX] {
            let mut p = proof.clone();
            let at = k * NODE_LEN + 32..(k + 1) * NODE_LEN;
            let b = u64::from_le_bytes(p.siblings[at.clone()].try_into().unwrap());
            p.siblings[at].copy_from_slice(&b.wrapping_add(delta).to_le_bytes());
            assert!(fails(&p));
        }
    }
    // Dropped and extra siblings and separators.
    let edit = |f: fn(&mut MultiProof)| {
        let mut p = proof.clone();
        f(&mut p);
        verify_in(&tree, &p).unwrap_err()
    };
    let missing_sibling = |e| matches!(e, TreeError::MissingSibling { .. });
    let missing_sep = |e| matches!(e, TreeError::MissingSeparator { .. });
    assert!(missing_sibling(edit(|p| drop(
        p.siblings.drain(..NODE_LEN)
    ))));
    assert!(missing_sibling(edit(|p| p
        .siblings
        .truncate(p.siblings.len() - NODE_LEN))));
    assert!(missing_sep(edit(|p| drop(p.separators.drain(..SEP_LEN)))));
    assert!(missing_sep(edit(|p| p
        .separators
        .truncate(p.separators.len() - SEP_LEN))));
    let extra = |p: &mut MultiProof| p.siblings.extend_from_within(..NODE_LEN);
    assert_eq!(edit(extra), TreeError::ExtraSiblings { extra: 1 });
    let extra = |p: &mut MultiProof| p.separators.extend_from_within(..SEP_LEN);
    assert_eq!(edit(extra), TreeError::ExtraSeparators { extra: 1 });
    // Indices moved, dropped, repeated or swapped; no leaves at all.
    for j in 0..proof.indices.len() {
        for delta in [1, u64::MAX] {
            let mut p = proof.clone();
            p.indices[j] = p.indices[j].wrapping_add(delta);
            assert!(fails(&p));
        }
        let mut p = proof.clone();
        p.indices.remove(j);
        p.entries.drain(j * ENTRY_LEN..(j + 1) * ENTRY_LEN);
        assert!(fails(&p));
    }
    let mut p = proof.clone();
    p.indices.swap(0, 1);
    assert!(matches!(
        verify_in(&tree, &p),
        Err(TreeError::IndicesNotIncreasing { .. })
    ));
    p.indices[0] = p.indices[1];
    assert!(matches!(
        verify_in(&tree, &p),
        Err(TreeError::IndicesNotIncreasing { .. })
    ));
    let none = MultiProof {
        indices: vec![],
        entries: vec![],
        siblings: vec![],
        separators: vec![],
    };
    assert_eq!(verify_in(&tree, &none), Err(TreeError::NoLeaves));
    // Wrong count, total or root.
    let (root, total) = (tree.root(), tree.total_bytes());
    for count in [
        0,
        1,
        n / 2,
        n - 1,
        n + 1,
        n + 2,
        2 * n,
        1 << 20,
        MAX_ENTRIES + 1,
    ] {
        assert!(
            verify_multiproof(&root, count, total, &proof).is_err(),
            "count {count}"
        );
    }
    for t in [0, total - 1, total + 1, u64::MAX] {
        assert!(verify_multiproof(&root, n, t, &proof).is_err());
    }
    for i in 0..32 {
        let mut r = root;
        r.0[i] ^= 4;
        assert_eq!(
            verify_multiproof(&r, n, total, &proof),
            Err(TreeError::RootMismatch)
        );
    }
    // A leaf index out of range.
    assert!(matches!(
        tree.multiproof(&[3, n]),
        Err(TreeError::IndexOutOfRange {
            index: 300,
            count: 300
        })
    ));
    let mut p = tree.multiproof(&[n - 1]).unwrap();
    p.indices[0] = n;
    assert!(matches!(
        verify_in(&tree, &p),
        Err(TreeError::IndexOutOfRange { .. })
    ));
}

#[test]
fn copies_of_one_shard_fail() {
    let mut entries = random_entries(60, 5);
    for _ in 0..3 {
        entries.insert(23, entries[23]);
    }
    let copies = 23..27u64;
    let n = entries.len() as u64;
    let mut rng = Xorshift::new(13);
    let rules: [(bool, SepRule); 3] = [
        (true, first_of_right),
        (false, after_last_of_left),
        (false, mixed),
    ];
    for (honest, rule) in rules {
        let (tree, seps) = raw_tree(entries.clone(), rule, None);
        let prove = |leaves: &[u64]| tree.prove_with(leaves, |l, p| seps[l][p]).unwrap();
        let verifies = |leaves: &[u64]| verify_in(&tree, &prove(leaves)).is_ok();
        let passing: Vec<u64> = copies.clone().filter(|&c| verifies(&[c])).collect();
        assert!(passing.len() <= 1, "copies {passing:?} verify");
        for c in copies.clone().filter(|c| !passing.contains(c)) {
            let err = verify_in(&tree, &prove(&[c])).unwrap_err();
            assert!(matches!(err, TreeError::Separator { index, .. } if index == c));
            for _ in 0..10 {
                let others: Vec<u64> = (0..8).map(|_| rng.below(n)).chain([c]).collect();
                assert!(!verifies(&others));
            }
        }
        for a in copies.clone() {
            for b in copies.clone().filter(|&b| b > a) {
                assert!(!verifies(&[a, b, 0, n - 1]));
            }
        }
        if honest {
            // The honest rule over a list with copies: all but the last copy fail, every other
            // entry still verifies (so the failures above are the copies' own).
            assert_eq!(passing, [26]);
            let others: Vec<u64> = (0..n).filter(|i| !copies.contains(i)).collect();
            assert_eq!(
                verify_in(&tree, &prove(&others)).unwrap().len(),
                others.len()
            );
        }
    }
}

#[test]
fn lying_sums_give_no_overlapping_places() {
    let entries = random_entries(40, 8);
    let true_total: u64 = entries.iter().map(|e| e.size).sum();
    // A node over leaves 12..16 claiming 1000 bytes more; leaf 5 claiming 7 more than its size.
    for (lie, liars) in [((2, 3, 1000), 12..16u64), ((0, 5, 7), 5..6)] {
        let (tree, seps) = raw_tree(entries.clone(), first_of_right, Some(lie));
        assert_ne!(tree.total_bytes(), true_total);
        let prove = |leaves: &[u64]| tree.prove_with(leaves, |l, p| seps[l][p]).unwrap();
        let mut places = Vec::new();
        for i in 0..40 {
            let result = verify_in(&tree, &prove(&[i]));
            assert_eq!(result.is_err(), liars.contains(&i), "leaf {i}");
            places.extend(result.unwrap_or_default());
            // Nothing verifies against the true total.
            let p = prove(&[i]);
            assert!(verify_multiproof(&tree.root(), 40, true_total, &p).is_err());
        }
        for w in places.windows(2) {
            assert!(w[0].offset + w[0].entry.size <= w[1].offset);
        }
        let last = places.last().unwrap();
        assert!(last.offset + last.entry.size <= tree.total_bytes());
        let all: Vec<u64> = (0..40).collect();
        assert!(verify_in(&tree, &prove(&all)).is_err());
    }
}

#[test]
fn entries_encode_with_their_root_as_bytes() {
    let e = Entry {
        root: [3; 32],
        size: 70_000,
    };
    let b = encode(&e);
    // A map of two keys: "root" -> 32-byte string, "size" -> a 4-byte integer.
    assert_eq!(b.len(), 1 + 5 + 2 + 32 + 5 + 5);
    assert_eq!(decode::<Entry>("entry", &b, 100).unwrap(), e);
}

/// The CBOR size of a multiproof for 32 leaves picked as audits pick them (uniform byte
/// positions), in trees of 2^10, 2^16 and 2^20 entries.
#[test]
fn proof_sizes() {
    for log in [10u32, 16, 20] {
        let entries = random_entries(1 << log, log.into());
        let start = Instant::now();
        let tree = CommitTree::build(entries).unwrap();
        let built = start.elapsed();
        let mut rng = Xorshift::new(99);
        let leaves: Vec<u64> = (0..32)
            .map(|_| tree.locate(rng.below(tree.total_bytes())).unwrap().0)
            .collect();
        let proof = tree.multiproof(&leaves).unwrap();
        let start = Instant::now();
        assert_eq!(verify_in(&tree, &proof).unwrap().len(), proof.indices.len());
        let verified = start.elapsed();
        eprintln!(
            "2^{log} entries: 32 sampled leaves ({} distinct): multiproof {} bytes CBOR \
             ({} siblings, {} separators); build {built:.2?}, verify {verified:.2?}",
            proof.indices.len(),
            encode(&proof).len(),
            proof.siblings.len() / NODE_LEN,
            proof.separators.len() / SEP_LEN,
        );
    }
}

fn small_tree() -> (CommitTree, Vec<Entry>) {
    let entries = random_entries(50, 21);
    (CommitTree::build(entries.clone()).unwrap(), entries)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..400),
        count in prop_oneof![0u64..70, any::<u64>()],
        total in any::<u64>(),
        root in any::<[u8; 32]>(),
    ) {
        if let Ok(p) = serde_ipld_dagcbor::from_slice::<MultiProof>(&bytes) {
            let _ = verify_multiproof(&Hash32(root), count, total, &p);
        }
    }

    #[test]
    fn arbitrary_proofs_never_panic(
        indices in vec(prop_oneof![0u64..70, any::<u64>()], 0..8),
        records in (0usize..12, 0usize..40, 0usize..20),
        ragged in any::<bool>(),
        fill in any::<u64>(),
        count in prop_oneof![0u64..70, any::<u64>()],
        total in any::<u64>(),
    ) {
        let mut indices = indices;
        indices.sort_unstable();
        indices.dedup();
        let mut rng = Xorshift::new(fill);
        let odd = usize::from(ragged);
        let p = MultiProof {
            entries: rng.bytes(records.0.min(indices.len()) * ENTRY_LEN + odd),
            indices,
            siblings: rng.bytes(records.1 * NODE_LEN),
            separators: rng.bytes(records.2 * SEP_LEN),
        };
        let bytes = encode(&p);
        prop_assert_eq!(decode::<MultiProof>("proof", &bytes, 1 << 16).unwrap(), p.clone());
        let _ = verify_multiproof(&Hash32([0; 32]), count, total, &p);
    }

    #[test]
    fn mutated_proofs_never_verify(
        leaves in vec(0u64..50, 1..6),
        edits in vec((0usize..4, any::<usize>(), 1u8..=255), 1..4),
    ) {
        let (tree, _) = small_tree();
        let proof = tree.multiproof(&leaves).unwrap();
        let mut p = proof.clone();
        for (field, at, x) in edits {
            match field {
                0 => { let n = p.entries.len(); p.entries[at % n] ^= x; }
                1 if !p.siblings.is_empty() => { let n = p.siblings.len(); p.siblings[at % n] ^= x; }
                2 if !p.separators.is_empty() => { let n = p.separators.len(); p.separators[at % n] ^= x; }
                _ => { let n = p.indices.len(); p.indices[at % n] ^= u64::from(x); }
            }
        }
        prop_assume!(p != proof);
        prop_assert!(verify_in(&tree, &p).is_err());
    }

    #[test]
    fn random_trees_round_trip(
        sizes in vec(1u64..1 << 40, 0..120),
        seed in any::<u64>(),
        picks in vec(any::<prop::sample::Index>(), 1..10),
    ) {
        let mut entries = random_entries(sizes.len(), seed);
        for (e, s) in entries.iter_mut().zip(&sizes) {
            e.size = *s;
        }
        let tree = CommitTree::build(entries.clone()).unwrap();
        prop_assert_eq!(tree.total_bytes(), sizes.iter().sum::<u64>());
        if entries.is_empty() {
            prop_assert_eq!(tree.root(), empty_root());
            prop_assert!(tree.multiproof(&[0]).is_err());
        } else {
            let leaves: Vec<u64> = picks.iter().map(|i| i.index(entries.len()) as u64).collect();
            let bytes = encode(&tree.multiproof(&leaves).unwrap());
            let proof = decode::<MultiProof>("proof", &bytes, 1 << 20).unwrap();
            let places = verify_in(&tree, &proof).unwrap();
            for p in &places {
                prop_assert_eq!(tree.locate(p.offset), Some((p.index, 0)));
            }
            prop_assert_eq!(places, expected_places(&entries, &leaves));
        }
    }
}
