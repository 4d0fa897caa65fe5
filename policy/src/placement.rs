//! Where shards go: weighted rendezvous (highest-random-weight) hashing. Pure functions, no I/O,
//! so the simulator can drive the very same code.
//!
//! Every node gets a score for a key (a shard or manifest CID): `weight / -ln(u)`, where `u` in
//! (0, 1) mixes a 64-bit tag of the key with a 64-bit tag of the node (each the first bytes of a
//! BLAKE3 derived key, the node's computed once in [`Candidate::new`]) and `weight` is the
//! node's free capacity. The node with the highest score is first choice; a node's share of
//! keys is proportional to its weight, and adding or removing a node only moves the keys it
//! wins or held. Within a stripe, each shard takes the best-scoring node not already used by
//! the stripe, and prefers a failure-domain label not yet used, so losing a node (or a labelled
//! rack) costs each stripe at most one shard.
//!
//! A ranking is lazy ([`Ranking`]): scoring every node is linear, and only as much of the
//! order as a caller reads is sorted, so taking the best few of ten thousand nodes costs a
//! scan rather than a sort.

use std::collections::HashSet;

use cairn_chunker::Cid;

use crate::tag::{mix, tag};

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    id: Vec<u8>,
    tag: u64,
    /// Free bytes: the weight.
    pub free: u64,
    /// Failure-domain label.
    pub label: Option<String>,
}

impl Candidate {
    /// A node with stable identity `id` (the peer id's bytes), `free` bytes and a label.
    pub fn new(id: Vec<u8>, free: u64, label: Option<String>) -> Self {
        let tag = tag("cairn placement node v2", &id);
        Candidate {
            id,
            tag,
            free,
            label,
        }
    }

    /// Its identity.
    pub fn id(&self) -> &[u8] {
        &self.id
    }
}

/// The key's half of every score.
fn key_tag(key: &[u8]) -> u64 {
    tag("cairn placement key v2", key)
}

/// `u` in (0, 1) for a key and a node: 53 random bits, never 0 or 1.
fn unit(key: u64, node: &Candidate) -> f64 {
    ((mix(key ^ node.tag) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn score_tagged(key: u64, node: &Candidate) -> f64 {
    let u = unit(key, node);
    // A node with no free space still ranks (last), so reads can find what it holds.
    let weight = (node.free.max(1)) as f64;
    weight / -u.ln()
}

/// Score of `node` for `key`: higher is better.
pub fn score(key: &[u8], node: &Candidate) -> f64 {
    score_tagged(key_tag(key), node)
}

/// Node indices best first for a key, sorted only as far as they are read. Ties (equal scores)
/// go to the lower index, so the order is total and the same on every machine.
///
/// The first [`FIRST`] come from one scan that keeps the best so far and skips the logarithm
/// for a node whose score cannot reach them (`-ln(u) >= 1 - u`, so `weight / (1 - u)` bounds
/// its score); reading further scores every node and sorts in growing batches.
#[derive(Debug, Clone)]
pub struct Ranking<'a> {
    key: u64,
    nodes: &'a [Candidate],
    /// The best [`FIRST`] (or fewer), best first.
    first: Vec<(f64, usize)>,
    /// Every node scored, once read past `first`; `scored[..sorted]` is in final order.
    scored: Vec<(f64, usize)>,
    sorted: usize,
    next: usize,
}

/// How many of a ranking one scan finds.
pub const FIRST: usize = 8;

fn better(a: &(f64, usize), b: &(f64, usize)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl<'a> Ranking<'a> {
    /// Ranks `nodes` for `key`.
    pub fn new(key: &[u8], nodes: &'a [Candidate]) -> Self {
        let key = key_tag(key);
        let head = nodes.len().min(FIRST);
        let mut first: Vec<(f64, usize)> = nodes[..head]
            .iter()
            .enumerate()
            .map(|(i, n)| (score_tagged(key, n), i))
            .collect();
        first.sort_unstable_by(better);
        // A strict bound, with room for rounding: a node below it cannot tie either.
        let mut bar = first.last().map_or(0.0, |w| w.0) * (1.0 - 1e-9);
        for (i, n) in nodes.iter().enumerate().skip(head) {
            let u = unit(key, n);
            if (n.free.max(1) as f64) < bar * (1.0 - u) {
                continue;
            }
            let s = (score_tagged(key, n), i);
            let at = first.partition_point(|x| better(x, &s).is_lt());
            if at < FIRST {
                first.insert(at, s);
                first.truncate(FIRST);
                bar = first[FIRST - 1].0 * (1.0 - 1e-9);
            }
        }
        Ranking {
            key,
            nodes,
            first,
            scored: Vec::new(),
            sorted: 0,
            next: 0,
        }
    }

    /// Sorts the next batch (as large as what is sorted already, at least [`FIRST`]): the best
    /// of the rest selected in linear time, then only they are sorted.
    fn extend(&mut self) {
        if self.scored.is_empty() {
            let key = self.key;
            self.scored = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (score_tagged(key, n), i))
                .collect();
        }
        let rest = &mut self.scored[self.sorted..];
        let batch = self.sorted.max(FIRST).min(rest.len());
        if batch < rest.len() {
            rest.select_nth_unstable_by(batch - 1, better);
        }
        rest[..batch].sort_unstable_by(better);
        self.sorted += batch;
    }
}

impl Iterator for Ranking<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next < self.first.len() {
            self.next += 1;
            return Some(self.first[self.next - 1].1);
        }
        if self.next == self.nodes.len() {
            return None;
        }
        while self.next >= self.sorted {
            self.extend();
        }
        self.next += 1;
        Some(self.scored[self.next - 1].1)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.nodes.len() - self.next;
        (left, Some(left))
    }
}

/// Node indices ordered best first for `key`.
pub fn rank(key: &[u8], nodes: &[Candidate]) -> Vec<usize> {
    Ranking::new(key, nodes).collect()
}

/// Chooses a node for each shard of a stripe: distinct nodes, and distinct labels while labels
/// allow. Returns, for every shard, its nodes in order of preference (the first is the choice;
/// the rest are retries if the upload there fails, never a node another shard chose).
///
/// Errors with the number of nodes needed when there are fewer nodes than shards.
pub fn place_stripe(shards: &[Cid], nodes: &[Candidate]) -> Result<Vec<Vec<usize>>, usize> {
    place_stripe_with(shards, nodes, usize::MAX)
}

/// [`place_stripe`] with at most `retries` retries per shard: the same choices and the same
/// first retries, without ordering every node (what the simulator and large networks use).
pub fn place_stripe_with(
    shards: &[Cid],
    nodes: &[Candidate],
    retries: usize,
) -> Result<Vec<Vec<usize>>, usize> {
    if nodes.len() < shards.len() {
        return Err(shards.len());
    }
    let mut used_nodes = HashSet::new();
    let mut used_labels = HashSet::new();
    let labels_suffice = nodes.iter().all(|n| n.label.is_some()) && {
        // Enough distinct labels: stop counting as soon as there are.
        let mut distinct = HashSet::new();
        nodes
            .iter()
            .filter_map(|n| n.label.as_ref())
            .any(|l| distinct.insert(l) && distinct.len() >= shards.len())
    };
    let mut choices = Vec::with_capacity(shards.len());
    for cid in shards {
        let mut ranking = Ranking::new(&cid.to_bytes(), nodes);
        // Read until a node that is free and of a fresh label; the nodes passed over stay in
        // the order read, for the fallback and the retries.
        let mut read = Vec::new();
        let mut pick = None;
        for i in ranking.by_ref() {
            read.push(i);
            if !used_nodes.contains(&i)
                && (!labels_suffice || !used_labels.contains(&nodes[i].label))
            {
                pick = Some(i);
                break;
            }
        }
        let pick = pick
            .or_else(|| read.iter().copied().find(|i| !used_nodes.contains(i)))
            .unwrap_or(read[0]);
        used_nodes.insert(pick);
        used_labels.insert(nodes[pick].label.clone());
        choices.push((pick, read, ranking));
    }
    // Retry lists: after the choice, nodes no shard of this stripe chose, best first.
    let chosen: HashSet<usize> = choices.iter().map(|(p, _, _)| *p).collect();
    Ok(choices
        .into_iter()
        .map(|(pick, read, ranking)| {
            std::iter::once(pick)
                .chain(
                    read.into_iter()
                        .chain(ranking)
                        .filter(|i| !chosen.contains(i))
                        .take(retries),
                )
                .collect()
        })
        .collect())
}

/// Where a rebuilt (or moved) shard goes: the nodes not in `exclude` (those holding any shard
/// of its stripe, and any that must not take data), best-scoring first, those whose label the
/// stripe does not use yet before the others. The same rule as [`place_stripe`], for one
/// shard of a stripe that is already placed.
pub fn place_repair(
    shard: &Cid,
    nodes: &[Candidate],
    exclude: &HashSet<usize>,
    used_labels: &HashSet<Option<String>>,
) -> Vec<usize> {
    let order: Vec<usize> = rank(&shard.to_bytes(), nodes)
        .into_iter()
        .filter(|i| !exclude.contains(i))
        .collect();
    let fresh = |i: &usize| nodes[*i].label.is_some() && !used_labels.contains(&nodes[*i].label);
    order
        .iter()
        .copied()
        .filter(fresh)
        .chain(order.iter().copied().filter(|i| !fresh(i)))
        .collect()
}

/// The first node of [`place_repair`]'s order that `fits`, reading no further than needed:
/// the best node of a fresh label that fits, else the best of any label that fits.
pub fn place_repair_first(
    shard: &Cid,
    nodes: &[Candidate],
    exclude: &HashSet<usize>,
    used_labels: &HashSet<Option<String>>,
    fits: impl Fn(usize) -> bool,
) -> Option<usize> {
    let fresh = |i: usize| nodes[i].label.is_some() && !used_labels.contains(&nodes[i].label);
    // Without labels no node is fresh: the first that fits is the answer.
    let labelled = nodes.iter().any(|n| n.label.is_some());
    let mut fallback = None;
    for i in Ranking::new(&shard.to_bytes(), nodes) {
        if exclude.contains(&i) || !fits(i) {
            continue;
        }
        if fresh(i) || !labelled {
            return Some(i);
        }
        fallback.get_or_insert(i);
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize, labels: Option<usize>) -> Vec<Candidate> {
        (0..n)
            .map(|i| {
                Candidate::new(
                    format!("node-{i}").into_bytes(),
                    1 << 30,
                    labels.map(|l| format!("rack-{}", i % l)),
                )
            })
            .collect()
    }

    fn cids(n: usize, seed: u8) -> Vec<Cid> {
        (0..n)
            .map(|i| cairn_chunker::cids::raw(&[seed, i as u8]))
            .collect()
    }

    #[test]
    fn a_repair_avoids_the_stripes_nodes_and_prefers_new_labels() {
        let ns = nodes(8, Some(4));
        let shard = cairn_chunker::cids::raw(b"shard");
        let all = place_repair(&shard, &ns, &HashSet::new(), &HashSet::new());
        assert_eq!(all, rank(&shard.to_bytes(), &ns));
        let exclude: HashSet<usize> = all[..3].iter().copied().collect();
        let used: HashSet<Option<String>> = all[..3].iter().map(|&i| ns[i].label.clone()).collect();
        let order = place_repair(&shard, &ns, &exclude, &used);
        assert_eq!(order.len(), 5);
        assert!(order.iter().all(|i| !exclude.contains(i)));
        // Labels the stripe does not use come first.
        let first_used = order.iter().position(|&i| used.contains(&ns[i].label));
        let last_fresh = order.iter().rposition(|&i| !used.contains(&ns[i].label));
        if let (Some(u), Some(f)) = (first_used, last_fresh) {
            assert!(f < u, "{order:?}");
        }
    }

    #[test]
    fn a_lazy_ranking_is_the_full_sort() {
        let ns = nodes(300, Some(7));
        for seed in 0..20 {
            let key = cids(1, seed)[0].to_bytes();
            let mut sorted: Vec<(f64, usize)> = ns
                .iter()
                .enumerate()
                .map(|(i, n)| (score(&key, n), i))
                .collect();
            sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let full: Vec<usize> = sorted.into_iter().map(|(_, i)| i).collect();
            assert_eq!(rank(&key, &ns), full);
            let first: Vec<usize> = Ranking::new(&key, &ns).take(13).collect();
            assert_eq!(first, full[..13]);
        }
        assert_eq!(Ranking::new(b"k", &[]).next(), None);
    }

    #[test]
    fn bounded_placements_agree_with_the_full_ones() {
        for labels in [None, Some(3), Some(40)] {
            let ns = nodes(120, labels);
            for seed in 0..20 {
                let shards = cids(6, seed);
                let full = place_stripe(&shards, &ns).unwrap();
                let short = place_stripe_with(&shards, &ns, 4).unwrap();
                for (f, s) in full.iter().zip(&short) {
                    assert_eq!(s.len(), 5);
                    assert_eq!(f[..5], s[..], "labels {labels:?}");
                }
                let exclude: HashSet<usize> = full.iter().map(|o| o[0]).take(4).collect();
                let used = exclude.iter().map(|&i| ns[i].label.clone()).collect();
                let fits = |i: usize| !i.is_multiple_of(3);
                let order = place_repair(&shards[5], &ns, &exclude, &used);
                assert_eq!(
                    place_repair_first(&shards[5], &ns, &exclude, &used, fits),
                    order.into_iter().find(|&i| fits(i)),
                    "labels {labels:?}"
                );
            }
        }
    }

    #[test]
    fn stripes_use_distinct_nodes_and_labels() {
        let ns = nodes(12, Some(6));
        for seed in 0..50 {
            let placed = place_stripe(&cids(6, seed), &ns).unwrap();
            let picks: HashSet<usize> = placed.iter().map(|p| p[0]).collect();
            assert_eq!(picks.len(), 6);
            let labels: HashSet<_> = placed.iter().map(|p| ns[p[0]].label.clone()).collect();
            assert_eq!(labels.len(), 6, "one shard per rack");
            for p in &placed {
                // Retries never land on a node another shard of the stripe uses.
                assert!(p[1..].iter().all(|i| !picks.contains(i)));
            }
        }
        assert_eq!(place_stripe(&cids(7, 0), &nodes(6, None)), Err(7));
    }

    #[test]
    fn placement_is_deterministic_and_weighted() {
        let mut ns = nodes(4, None);
        let keys = cids(4000, 9);
        assert_eq!(
            rank(&keys[0].to_bytes(), &ns),
            rank(&keys[0].to_bytes(), &ns)
        );
        ns[0].free = 3 << 30; // three times the weight of the others
        let mut wins = [0usize; 4];
        for k in &keys {
            wins[rank(&k.to_bytes(), &ns)[0]] += 1;
        }
        // Expected share 3/6 = 50 % for node 0, 1/6 each for the others.
        assert!((1800..2200).contains(&wins[0]), "{wins:?}");
        for w in &wins[1..] {
            assert!((500..840).contains(w), "{wins:?}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let ns = nodes(8, None);
        let keys = cids(1000, 3);
        let before: Vec<usize> = keys.iter().map(|k| rank(&k.to_bytes(), &ns)[0]).collect();
        let fewer: Vec<Candidate> = ns[..7].to_vec();
        for (k, b) in keys.iter().zip(before) {
            let after = rank(&k.to_bytes(), &fewer)[0];
            if b != 7 {
                assert_eq!(after, b, "a key not on the removed node moved");
            }
        }
    }
}
