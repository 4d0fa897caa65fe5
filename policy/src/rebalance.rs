//! Rebalancing: moving shards from the fullest nodes onto the emptiest (a node that just
//! joined, one whose capacity grew), so that new nodes share the load and full ones are not
//! the first to run out.
//!
//! A node's *fill* is its net bytes over its capacity, where net bytes leave out its *spare*
//! copies: copies some other node has taken over (a keeper told it so, with the new holder's
//! receipt), which it keeps only until their current holds end. A move copies a shard to its
//! target first; the old copy stops being renewed only once the target's copy answers (see
//! [`crate::repair::designate`]), and lapses at its holds' end. So nothing is ever dropped
//! before its replacement is stored, and counting spare copies out of the fill stops a
//! balancer from moving ever more off a node whose `used` falls only weeks later.
//!
//! [`Balancer`] works one keeper's pass: the network's mean fill, and which moves bring nodes
//! towards it. A node more than `spread` above the mean gives shards to nodes more than
//! `spread` below it; the moves of a pass are counted at once (the source's fill drops, the
//! target's rises), and a target is never filled past the mean. Between `mean - spread` and
//! `mean + spread` nothing moves: that band is the hysteresis that keeps shards from going back
//! and forth as fills change by a few bytes.
//!
//! Every keeper in charge of some object plans its own moves from the same fills, so each
//! takes only its `share` of a node's distance to the mean per pass (the caller passes one
//! over the number of nodes that can be in charge): together they move about that distance,
//! not a multiple of it. Where a share is smaller than a shard, the shard moves with the
//! probability the share allows, decided by a `luck` number the caller derives from the
//! shard (a hash), so the choice is deterministic and the expected bytes are right.

/// A node's space, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Shard bytes it holds.
    pub used: u64,
    /// Of those, bytes of copies others have taken over (kept until their holds end).
    pub spare: u64,
    /// Its capacity.
    pub capacity: u64,
}

impl Fill {
    /// Bytes it holds for the network: `used` less `spare`.
    pub fn net(&self) -> u64 {
        self.used.saturating_sub(self.spare)
    }
}

/// The moves of one pass over a keeper's objects.
#[derive(Debug, Clone)]
pub struct Balancer {
    net: Vec<u64>,
    capacity: Vec<u64>,
    mean: f64,
    spread: f64,
    budget: u64,
    /// Bytes each node may still give (above the mean) or take (below it) this pass.
    give: Vec<f64>,
    take: Vec<f64>,
}

impl Balancer {
    /// A pass over nodes `fills` (indexed as the caller's view; `None`: takes no part, neither
    /// giving nor taking), moving nodes towards the mean when they are more than `spread`
    /// (a fraction of capacity, such as 0.05) away from it, at most `budget` bytes in all and
    /// at most `share` (in (0, 1]) of each node's distance to the mean.
    pub fn new(fills: &[Option<Fill>], spread: f64, budget: u64, share: f64) -> Self {
        let net: Vec<u64> = fills.iter().map(|f| f.map_or(0, |f| f.net())).collect();
        let capacity: Vec<u64> = fills.iter().map(|f| f.map_or(0, |f| f.capacity)).collect();
        let (held, room) = net
            .iter()
            .zip(&capacity)
            .filter(|(_, c)| **c > 0)
            .fold((0u128, 0u128), |(h, r), (n, c)| {
                (h + u128::from(*n), r + u128::from(*c))
            });
        let mean = if room == 0 {
            0.0
        } else {
            held as f64 / room as f64
        };
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let gap = |i: usize| net[i] as f64 - mean * capacity[i] as f64;
        let give = (0..net.len()).map(|i| (gap(i) * share).max(0.0)).collect();
        let take = (0..net.len()).map(|i| (-gap(i) * share).max(0.0)).collect();
        Self {
            net,
            capacity,
            mean,
            spread: if spread.is_finite() {
                spread.max(0.0)
            } else {
                0.0
            },
            budget,
            give,
            take,
        }
    }

    /// The network's mean fill.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Node `i`'s fill now, counting the moves planned so far (`None` for a node that takes no
    /// part).
    pub fn fill(&self, i: usize) -> Option<f64> {
        let c = *self.capacity.get(i)?;
        (c > 0).then(|| self.net[i] as f64 / c as f64)
    }

    /// Whether node `i` holds enough more than the mean that it gives shards away.
    pub fn gives(&self, i: usize) -> bool {
        self.fill(i)
            .is_some_and(|f| f > self.mean + self.spread && self.spread > 0.0)
    }

    /// Bytes the pass may still move.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Plans moving a shard of `len` bytes off node `from`: the first of `targets` (in the
    /// caller's order of preference; nodes that may hold it, its stripe's nodes left out)
    /// that is more than `spread` below the mean and stays at or below the mean with the
    /// shard, within both nodes' shares (or, where a share is less than the shard, when
    /// `luck`, uniform over `u64`, falls within it). Counts the move and returns its target,
    /// or `None` when `from` does not give, the budget is spent, or no target wants it.
    pub fn pick(
        &mut self,
        from: usize,
        len: u64,
        luck: u64,
        targets: impl IntoIterator<Item = usize>,
    ) -> Option<usize> {
        if !self.gives(from) || len > self.budget || len == 0 {
            return None;
        }
        let chance = (luck >> 11) as f64 / (1u64 << 53) as f64;
        let allows = |left: f64| left >= len as f64 || chance < left / len as f64;
        if !allows(self.give[from]) {
            return None;
        }
        let low = self.mean - self.spread;
        let to = targets.into_iter().find(|&t| {
            t != from
                && self.fill(t).is_some_and(|f| f < low)
                && (self.net[t].saturating_add(len)) as f64 / self.capacity[t] as f64 <= self.mean
                && allows(self.take[t])
        })?;
        self.net[from] = self.net[from].saturating_sub(len);
        self.net[to] += len;
        self.give[from] = (self.give[from] - len as f64).max(0.0);
        self.take[to] = (self.take[to] - len as f64).max(0.0);
        self.budget -= len;
        Some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(used: u64, spare: u64, capacity: u64) -> Option<Fill> {
        Some(Fill {
            used,
            spare,
            capacity,
        })
    }

    #[test]
    fn a_new_node_takes_shards_until_the_mean_and_no_further() {
        // Six nodes at 60 %, two new ones empty: the mean is 45 %.
        let mut fills = vec![fill(600, 0, 1000); 6];
        fills.extend([fill(0, 0, 1000), fill(0, 0, 1000)]);
        let mut b = Balancer::new(&fills, 0.05, u64::MAX, 1.0);
        assert!((b.mean() - 0.45).abs() < 1e-9);
        assert!(b.gives(0) && !b.gives(6));
        let mut moved = [0u64; 8];
        // Sources in turn, 10-byte shards, offered to every node.
        'outer: loop {
            let mut any = false;
            for from in 0..6 {
                if let Some(to) = b.pick(from, 10, 0, 0..8) {
                    moved[to] += 10;
                    any = true;
                }
            }
            if !any {
                break 'outer;
            }
        }
        // Sources stop at mean + spread (50 %) at the latest; targets never pass the mean.
        for (i, took) in moved.iter().enumerate() {
            let f = b.fill(i).unwrap();
            if i < 6 {
                assert_eq!(*took, 0, "a full node took a shard");
                assert!(f >= 0.45, "{i}: {f}");
            } else {
                assert!(*took > 0);
                assert!(f <= 0.45, "{i}: {f}");
            }
        }
        // Nothing more moves once everyone is within the band.
        assert!((0..8).all(|i| !b.gives(i)));
        assert_eq!(b.pick(0, 10, 0, 0..8), None);
    }

    #[test]
    fn spare_copies_do_not_count_and_nothing_moves_within_the_band() {
        // Node 0 holds 700 but 300 of it is spare: its net fill is 40 %, at the mean.
        let fills = [fill(700, 300, 1000), fill(400, 0, 1000), fill(400, 0, 1000)];
        let mut b = Balancer::new(&fills, 0.05, u64::MAX, 1.0);
        assert!((b.mean() - 0.4).abs() < 1e-9);
        assert_eq!(b.pick(0, 10, 0, 0..3), None);
        // Without the spare, node 0 would give.
        let fills = [fill(700, 0, 1000), fill(400, 0, 1000), fill(100, 0, 1000)];
        let mut b = Balancer::new(&fills, 0.05, u64::MAX, 1.0);
        assert_eq!(b.pick(0, 10, 0, [1, 2]), Some(2), "node 1 is at the mean");
    }

    #[test]
    fn the_budget_bounds_a_pass_and_absent_nodes_take_no_part() {
        let fills = [fill(900, 0, 1000), None, fill(0, 0, 1000)];
        let mut b = Balancer::new(&fills, 0.05, 25, 1.0);
        assert_eq!(b.pick(0, 10, 0, [1, 2]), Some(2));
        assert_eq!(b.pick(0, 10, 0, [1, 2]), Some(2));
        assert_eq!(b.pick(0, 10, 0, [1, 2]), None, "20 of 25 bytes spent");
        assert_eq!(b.budget(), 5);
        assert_eq!(b.fill(1), None);
        // A spread of 0 turns rebalancing off.
        let mut off = Balancer::new(&fills, 0.0, u64::MAX, 1.0);
        assert_eq!(off.pick(0, 10, 0, [2]), None);
        // A shard larger than the room below the mean does not go.
        let mut big = Balancer::new(&[fill(900, 0, 1000), fill(0, 0, 1000)], 0.05, u64::MAX, 1.0);
        assert_eq!(big.pick(0, 600, 0, [1]), None);
        assert_eq!(big.pick(0, 400, 0, [1]), Some(1));
    }

    #[test]
    fn keepers_sharing_a_pass_move_about_the_distance_to_the_mean_together() {
        // Ten keepers plan from the same fills, each with a tenth share: node 0 is 400 above
        // the mean of 500, node 1 400 below it. Shards of 10; luck from a simple hash.
        let fills = [fill(900, 0, 1000), fill(100, 0, 1000)];
        let mut moved = 0u64;
        let mut shard = 0u64;
        for _keeper in 0..10 {
            let mut b = Balancer::new(&fills, 0.05, u64::MAX, 0.1);
            for _ in 0..100 {
                shard += 1;
                let luck = shard.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                if b.pick(0, 10, luck, [1]).is_some() {
                    moved += 10;
                }
            }
        }
        // Without shares each keeper would move 400 (4,000 in all).
        assert_eq!(moved, 400, "each keeper moves its 40");
        // A share smaller than a shard moves it by chance, about as often as the share allows.
        let mut moved = 0u64;
        for keeper in 0..1000u64 {
            let mut b = Balancer::new(&fills, 0.05, u64::MAX, 0.01);
            let luck = (keeper + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if b.pick(0, 10, luck, [1]).is_some() {
                moved += 10;
            }
        }
        // Each keeper's share is 4 bytes of a 10-byte shard: 40 % of the keepers move one.
        assert!((3000..5000).contains(&moved), "{moved}");
    }
}
