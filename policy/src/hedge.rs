//! When a read asks another node beside a slow one.
//!
//! Reads ask the best-ranked holder first, nodes recently down last ([`read_order`]). A node
//! that has not answered within [`HEDGE_AFTER`] gets the next one asked beside it (a frozen
//! node would otherwise hold the read until the transport's timeouts); whichever answers first
//! counts ([`OneAtATime`]). A holder that sent nothing at all in that time is treated as down
//! for a while ([`holder_counts_as_down`]), so the next reads go around it.

use std::time::Duration;

/// How long a read waits on a node before asking another beside it.
pub const HEDGE_AFTER: Duration = Duration::from_millis(1500);

/// Nodes in `ranked` order, with the ones `is_down` last (a stable sort: rank decides within
/// each group).
pub fn read_order(mut ranked: Vec<usize>, is_down: impl Fn(usize) -> bool) -> Vec<usize> {
    ranked.sort_by_key(|&i| is_down(i));
    ranked
}

/// Whether a holder that was asked for a shard and sent nothing within [`HEDGE_AFTER`] is
/// treated as down. Not when the reader has gone meanwhile: then nobody waited for it.
pub fn holder_counts_as_down(bytes_sent: u64, reader_waiting: bool) -> bool {
    bytes_sent == 0 && reader_waiting
}

/// Asks nodes one at a time in a given order, adding the next whenever nothing is being asked
/// (the last one failed) or [`HEDGE_AFTER`] passed without an answer.
#[derive(Debug, Clone)]
pub struct OneAtATime {
    order: std::vec::IntoIter<usize>,
    waiting: Vec<usize>,
}

/// What a hedge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hedge {
    /// The nodes that had not answered (they are still being asked).
    pub slow: Vec<usize>,
    /// The node now asked beside them.
    pub next: usize,
}

impl OneAtATime {
    /// Asks the nodes in `order`.
    pub fn new(order: Vec<usize>) -> Self {
        Self {
            order: order.into_iter(),
            waiting: Vec::new(),
        }
    }

    /// The node to ask now when nothing is being asked (`None`: nothing left, or a request is
    /// still running). `idle`: whether no request is running.
    pub fn next_if_idle(&mut self, idle: bool) -> Option<usize> {
        if !idle {
            return None;
        }
        let i = self.order.next()?;
        self.waiting.push(i);
        Some(i)
    }

    /// Node `i` answered (well or badly): it no longer counts as slow.
    pub fn answered(&mut self, i: usize) {
        self.waiting.retain(|&w| w != i);
    }

    /// [`HEDGE_AFTER`] passed with no answer: the next node to ask beside the slow ones, if
    /// any is left. The slow ones are no longer waited on for the next hedge.
    pub fn hedge(&mut self) -> Option<Hedge> {
        let next = self.order.next()?;
        let slow = std::mem::replace(&mut self.waiting, vec![next]);
        Some(Hedge { slow, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_nodes_are_asked_last_in_rank_order() {
        let order = read_order(vec![4, 1, 3, 0, 2], |i| i == 1 || i == 0);
        assert_eq!(order, vec![4, 3, 2, 1, 0]);
    }

    #[test]
    fn one_at_a_time_then_hedges_when_slow() {
        let mut a = OneAtATime::new(vec![7, 8, 9]);
        assert_eq!(a.next_if_idle(true), Some(7));
        assert_eq!(a.next_if_idle(false), None, "7 is still being asked");
        // 7 is slow: 8 is asked beside it.
        assert_eq!(
            a.hedge(),
            Some(Hedge {
                slow: vec![7],
                next: 8
            })
        );
        // 8 fails quickly; with 7 still running nothing new starts until the next hedge.
        a.answered(8);
        assert_eq!(a.next_if_idle(false), None);
        assert_eq!(
            a.hedge(),
            Some(Hedge {
                slow: vec![],
                next: 9
            })
        );
        assert_eq!(a.hedge(), None, "nobody left");
        assert_eq!(a.next_if_idle(true), None);
    }

    #[test]
    fn a_failed_node_brings_in_the_next_without_waiting() {
        let mut a = OneAtATime::new(vec![1, 2]);
        assert_eq!(a.next_if_idle(true), Some(1));
        a.answered(1);
        assert_eq!(a.next_if_idle(true), Some(2));
    }

    #[test]
    fn a_silent_holder_counts_as_down_only_while_someone_waits() {
        assert!(holder_counts_as_down(0, true));
        assert!(!holder_counts_as_down(1, true));
        assert!(!holder_counts_as_down(0, false));
    }
}
