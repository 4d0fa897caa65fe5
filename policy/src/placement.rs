//! Where shards go: weighted rendezvous (highest-random-weight) hashing. Pure functions, no I/O,
//! so the simulator can drive the very same code.
//!
//! Every node gets a score for a key (a shard or manifest CID): `weight / -ln(u)`, where `u` in
//! (0, 1) comes from BLAKE3(key ‖ node id) and `weight` is the node's free capacity. The node
//! with the highest score is first choice; a node's share of keys is proportional to its
//! weight, and adding or removing a node only moves the keys it wins or held. Within a stripe,
//! each shard takes the best-scoring node not already used by the stripe, and prefers a
//! failure-domain label not yet used, so losing a node (or a labelled rack) costs each stripe at
//! most one shard.

use std::collections::HashSet;

use cairn_chunker::Cid;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Stable node identity (the peer id's bytes).
    pub id: Vec<u8>,
    /// Free bytes: the weight.
    pub free: u64,
    /// Failure-domain label.
    pub label: Option<String>,
}

/// Score of `node` for `key`: higher is better.
pub fn score(key: &[u8], node: &Candidate) -> f64 {
    let mut h = blake3::Hasher::new_derive_key("cairn placement v1");
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(&node.id);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    // u in (0, 1): 53 random bits, never 0 or 1.
    let u = ((u64::from_le_bytes(first) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    // A node with no free space still ranks (last), so reads can find what it holds.
    let weight = (node.free.max(1)) as f64;
    weight / -u.ln()
}

/// Node indices ordered best first for `key`.
pub fn rank(key: &[u8], nodes: &[Candidate]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (score(key, n), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// Chooses a node for each shard of a stripe: distinct nodes, and distinct labels while labels
/// allow. Returns, for every shard, its nodes in order of preference (the first is the choice;
/// the rest are retries if the upload there fails, never a node another shard chose).
///
/// Errors with the number of nodes needed when there are fewer nodes than shards.
pub fn place_stripe(shards: &[Cid], nodes: &[Candidate]) -> Result<Vec<Vec<usize>>, usize> {
    if nodes.len() < shards.len() {
        return Err(shards.len());
    }
    let mut used_nodes = HashSet::new();
    let mut used_labels = HashSet::new();
    let distinct_labels: HashSet<_> = nodes.iter().filter_map(|n| n.label.as_ref()).collect();
    let labels_suffice =
        nodes.iter().all(|n| n.label.is_some()) && distinct_labels.len() >= shards.len();
    let mut choices = Vec::with_capacity(shards.len());
    for cid in shards {
        let order = rank(&cid.to_bytes(), nodes);
        let pick = order
            .iter()
            .copied()
            .find(|&i| {
                !used_nodes.contains(&i)
                    && (!labels_suffice || !used_labels.contains(&nodes[i].label))
            })
            .or_else(|| order.iter().copied().find(|i| !used_nodes.contains(i)))
            .unwrap_or(order[0]);
        used_nodes.insert(pick);
        used_labels.insert(nodes[pick].label.clone());
        choices.push((pick, order));
    }
    // Retry lists: after the choice, nodes no shard of this stripe chose, best first.
    let chosen: HashSet<usize> = choices.iter().map(|(p, _)| *p).collect();
    Ok(choices
        .into_iter()
        .map(|(pick, order)| {
            std::iter::once(pick)
                .chain(order.into_iter().filter(|i| !chosen.contains(i)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize, labels: Option<usize>) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                id: format!("node-{i}").into_bytes(),
                free: 1 << 30,
                label: labels.map(|l| format!("rack-{}", i % l)),
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
