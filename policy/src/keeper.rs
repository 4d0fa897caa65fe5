//! Who looks after an object: its keepers, and the one of them in charge.
//!
//! Nodes hold shards without knowing which object a shard belongs to. The nodes that hold an
//! object's manifest know: they are its *keepers*. Every object has one fixed order of all
//! nodes, its *ranking* (unweighted rendezvous hashing of the manifest CID and each node id),
//! so every node, client and the simulator agree on it without talking. Manifests are
//! written to the first `copies` nodes of the ranking that answer (`m + 1` for an object),
//! and read from it in order.
//!
//! Among the live keepers, the first in the ranking is *in charge*: it alone repairs the
//! object's stripes, carries its leases to the shard holders and keeps the manifest at
//! `copies` copies. A keeper that dies is replaced by the next one in the ranking without a
//! vote. Two keepers that briefly both think they are in charge (their views of who is live
//! differ for a pass) may both rebuild a shard: the second copy is a spare, never a conflict,
//! since a shard is named by its content.
//!
//! The ranking is unweighted on purpose: a node's free space changes by the minute, and the
//! keeper in charge must not change with it.

use crate::tag::{mix, tag};

/// A node's half of every keeper score: compute it once per node when ranking many objects.
pub fn node_tag(node: &[u8]) -> u64 {
    tag("cairn keepers node v2", node)
}

/// An object's half of every keeper score.
pub fn object_tag(object: &[u8]) -> u64 {
    tag("cairn keepers object v2", object)
}

/// A node's rank key for an object from their tags: higher ranks first.
pub fn score_tagged(object: u64, node: u64) -> u64 {
    mix(object ^ node)
}

/// A node's rank key for an object: higher ranks first.
pub fn score(object: &[u8], node: &[u8]) -> u64 {
    score_tagged(object_tag(object), node_tag(node))
}

/// Indices of `nodes` (their ids) in the object's ranking, first first. Ties (equal ids) keep
/// their input order.
pub fn ranking<I: AsRef<[u8]>>(object: &[u8], nodes: &[I]) -> Vec<usize> {
    let tags: Vec<u64> = nodes.iter().map(|n| node_tag(n.as_ref())).collect();
    ranking_tagged(object, &tags)
}

/// [`ranking`] for nodes given by their [`node_tag`]s.
pub fn ranking_tagged(object: &[u8], tags: &[u64]) -> Vec<usize> {
    let o = object_tag(object);
    let mut scored: Vec<(u64, usize)> = tags
        .iter()
        .enumerate()
        .map(|(i, &t)| (score_tagged(o, t), i))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// [`wanted`] over the object's ranking of nodes given by their tags, in one scan instead of a
/// sort: the first `copies` nodes of the ranking that are `live`, in ranking order.
pub fn wanted_tagged(
    object: &[u8],
    tags: &[u64],
    live: impl Fn(usize) -> bool,
    copies: usize,
) -> Vec<usize> {
    let o = object_tag(object);
    let mut best: Vec<(u64, usize)> = Vec::with_capacity(copies + 1);
    for (i, &t) in tags.iter().enumerate() {
        if copies == 0 {
            break;
        }
        let s = score_tagged(o, t);
        // Ranked after the last kept (a lower score, or a tie with a higher index): not wanted.
        if best.len() == copies && best.last().is_some_and(|w| w.0 >= s) {
            continue;
        }
        if !live(i) {
            continue;
        }
        let at = best.partition_point(|w| w.0 > s || (w.0 == s && w.1 < i));
        best.insert(at, (s, i));
        best.truncate(copies);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// The keeper in charge: the first node in `order` that is live and holds the manifest.
pub fn in_charge(
    order: &[usize],
    live: impl Fn(usize) -> bool,
    holds: impl Fn(usize) -> bool,
) -> Option<usize> {
    order.iter().copied().find(|&i| live(i) && holds(i))
}

/// Whether `me` is in charge, knowing only about the nodes ranked above it: it is when none of
/// them is both live and holding the manifest (and `me` holds it). A node asks only those.
pub fn am_in_charge(
    order: &[usize],
    me: usize,
    live: impl Fn(usize) -> bool,
    holds: impl Fn(usize) -> bool,
) -> bool {
    for &i in order {
        if i == me {
            return true;
        }
        if live(i) && holds(i) {
            return false;
        }
    }
    false
}

/// The nodes that should hold the manifest: the first `copies` live nodes of `order`.
pub fn wanted(order: &[usize], live: impl Fn(usize) -> bool, copies: usize) -> Vec<usize> {
    order
        .iter()
        .copied()
        .filter(|&i| live(i))
        .take(copies)
        .collect()
}

/// Of [`wanted`], those that do not hold the manifest yet: where the keeper in charge copies it.
pub fn copies_to_make(
    order: &[usize],
    live: impl Fn(usize) -> bool,
    holds: impl Fn(usize) -> bool,
    copies: usize,
) -> Vec<usize> {
    wanted(order, live, copies)
        .into_iter()
        .filter(|&i| !holds(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("node-{i}").into_bytes()).collect()
    }

    #[test]
    fn the_ranking_is_a_stable_permutation_that_does_not_depend_on_input_order() {
        let nodes = ids(20);
        let order = ranking(b"object", &nodes);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        // Reversed input: the same nodes in the same order.
        let reversed: Vec<Vec<u8>> = nodes.iter().rev().cloned().collect();
        let again: Vec<&Vec<u8>> = ranking(b"object", &reversed)
            .into_iter()
            .map(|i| &reversed[i])
            .collect();
        let first: Vec<&Vec<u8>> = order.iter().map(|&i| &nodes[i]).collect();
        assert_eq!(first, again);
        // Another object, another order.
        assert_ne!(ranking(b"other", &nodes), order);
    }

    #[test]
    fn removing_a_node_keeps_everyone_elses_order() {
        let nodes = ids(12);
        let order = ranking(b"obj", &nodes);
        let gone = order[0];
        let rest: Vec<Vec<u8>> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, n)| n.clone())
            .collect();
        let after: Vec<&Vec<u8>> = ranking(b"obj", &rest)
            .into_iter()
            .map(|i| &rest[i])
            .collect();
        let before: Vec<&Vec<u8>> = order[1..].iter().map(|&i| &nodes[i]).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn the_first_live_holder_is_in_charge_and_knows_it() {
        let order = vec![3, 1, 4, 0, 2];
        let live = |i: usize| i != 3;
        let holds = |i: usize| i != 1;
        assert_eq!(in_charge(&order, live, holds), Some(4));
        assert!(am_in_charge(&order, 4, live, holds));
        // 0 and 2 are live holders too, but 4 ranks above them.
        assert!(!am_in_charge(&order, 0, live, holds));
        assert!(!am_in_charge(&order, 2, live, holds));
        // 1 is live and ranks above 4 but lacks the manifest: not in charge until it has it.
        assert_eq!(in_charge(&order, live, |i| i == 1 || i == 4), Some(1));
        // Nobody live holds it: nobody is in charge.
        assert_eq!(in_charge(&order, live, |_| false), None);
        // A node not in the order is never in charge.
        assert!(!am_in_charge(&order, 9, live, holds));
    }

    #[test]
    fn wanted_in_one_scan_is_wanted_over_the_ranking() {
        let nodes = ids(200);
        let tags: Vec<u64> = nodes.iter().map(|n| node_tag(n)).collect();
        for (obj, copies) in [
            (b"a".as_slice(), 3),
            (b"b", 5),
            (b"c", 1),
            (b"d", 0),
            (b"e", 300),
        ] {
            let order = ranking(obj, &nodes);
            assert_eq!(order, ranking_tagged(obj, &tags));
            let live = |i: usize| i % 3 != 1;
            assert_eq!(
                wanted_tagged(obj, &tags, live, copies),
                wanted(&order, live, copies),
                "{copies}"
            );
        }
        // Equal ids (equal tags): the lower index first, as the ranking has it.
        let same = vec![7u64; 5];
        assert_eq!(wanted_tagged(b"x", &same, |_| true, 3), vec![0, 1, 2]);
    }

    #[test]
    fn copies_go_to_the_first_live_nodes_that_lack_them() {
        let order = vec![5, 2, 7, 0, 1];
        let live = |i: usize| i != 2;
        assert_eq!(wanted(&order, live, 3), vec![5, 7, 0]);
        assert_eq!(copies_to_make(&order, live, |i| i == 5, 3), vec![7, 0]);
        assert!(copies_to_make(&order, live, |_| true, 3).is_empty());
        // Fewer live nodes than copies: all of them.
        assert_eq!(wanted(&order, |i| i == 1, 3), vec![1]);
    }
}
