//! Which nodes a client leaves out for a while, and where it last found shards.
//!
//! A node that did not answer is skipped by lookups and passed over by placement for
//! [`DOWN_FOR`], so that with a node gone every read and upload does not wait out its timeout
//! again; after that it is asked again. A node that refused a shard for lack of space is
//! offered no shards for [`FULL_FOR`], whatever free space it last reported. A node that went
//! silent and then answered after all was slow, not gone, and is back at once.
//!
//! Peers are any key (`PeerId` in the client, a small integer in tests and the simulator).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::time::Time;

/// How long a node that did not answer is left out of lookups before it is asked again.
pub const DOWN_FOR: Duration = Duration::from_secs(15);
/// How long a node that refused a shard for lack of space is offered no more (its reported
/// free space is that old at most once the view is refreshed).
pub const FULL_FOR: Duration = Duration::from_secs(30);
/// How long where a shard was found is remembered (a long-lived client such as the gateway reads
/// the same objects again and again; a stale entry only costs a failed fetch and a rebuild).
pub const LOCATED_FOR: Duration = Duration::from_secs(30);
/// Most shard locations remembered; past it the memory starts over.
pub const LOCATED_MAX: usize = 1 << 18;

/// Why a store on a node failed, as far as health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Not reached, timed out, or stalled: the node may be gone.
    Unreachable,
    /// The node said it has no room.
    NoSpace,
    /// Anything else (bad request, corrupt data): says nothing about the node's health.
    Other,
}

/// What a client remembers of nodes that failed it.
#[derive(Debug, Clone)]
pub struct Health<P> {
    down: HashMap<P, Time>,
    full: HashMap<P, Time>,
}

impl<P> Default for Health<P> {
    fn default() -> Self {
        Self {
            down: HashMap::new(),
            full: HashMap::new(),
        }
    }
}

impl<P: Eq + Hash + Clone> Health<P> {
    /// `peer` did not answer (or went silent) at `now`: left out for [`DOWN_FOR`].
    pub fn down(&mut self, peer: P, now: Time) {
        self.down.insert(peer, now);
    }

    /// `peer` answered: it is up, whatever it was before.
    pub fn answered(&mut self, peer: &P) {
        self.down.remove(peer);
    }

    /// A store on `peer` failed at `now` with `failure`. Returns whether the node is now left
    /// out (an unreachable or full node is; other failures change nothing).
    pub fn store_failed(&mut self, peer: P, failure: StoreFailure, now: Time) -> bool {
        match failure {
            StoreFailure::Unreachable => self.down.insert(peer, now),
            StoreFailure::NoSpace => self.full.insert(peer, now),
            StoreFailure::Other => return false,
        };
        true
    }

    /// Whether `peer` failed to answer within the last [`DOWN_FOR`].
    pub fn is_down(&self, peer: &P, now: Time) -> bool {
        self.down
            .get(peer)
            .is_some_and(|&since| now.since(since) < DOWN_FOR)
    }

    /// Whether `peer` refused a shard for lack of space within the last [`FULL_FOR`].
    pub fn is_full(&self, peer: &P, now: Time) -> bool {
        self.full
            .get(peer)
            .is_some_and(|&since| now.since(since) < FULL_FOR)
    }

    /// Whether new shards may be offered to `peer`: neither down nor full.
    pub fn takes_writes(&self, peer: &P, now: Time) -> bool {
        !self.is_down(peer, now) && !self.is_full(peer, now)
    }

    /// The peers down at `now`; forgets the ones whose time is up.
    pub fn down_now(&mut self, now: Time) -> Vec<P> {
        self.down.retain(|_, since| now.since(*since) < DOWN_FOR);
        self.down.keys().cloned().collect()
    }
}

/// Where shards were last found intact, and when.
#[derive(Debug, Clone)]
pub struct Locations<K, P> {
    found: HashMap<K, (Vec<P>, Time)>,
    max: usize,
}

impl<K, P> Default for Locations<K, P> {
    fn default() -> Self {
        Self::with_max(LOCATED_MAX)
    }
}

impl<K, P> Locations<K, P> {
    /// A memory of at most `max` shards.
    pub fn with_max(max: usize) -> Self {
        Self {
            found: HashMap::new(),
            max,
        }
    }
}

impl<K: Eq + Hash + Clone, P: Eq + Clone> Locations<K, P> {
    /// The holders of `key` found within the last [`LOCATED_FOR`], if any.
    pub fn recall(&self, key: &K, now: Time) -> Option<&[P]> {
        let (peers, when) = self.found.get(key)?;
        (now.since(*when) < LOCATED_FOR).then_some(peers.as_slice())
    }

    /// Makes room for `incoming` new entries: past [`LOCATED_MAX`] the memory starts over
    /// (cheaper than tracking age, and a forgotten location costs one lookup).
    pub fn make_room(&mut self, incoming: usize) {
        if self.found.len() + incoming > self.max {
            self.found.clear();
        }
    }

    /// `key` was found on `peers` at `now`.
    pub fn found(&mut self, key: K, peers: Vec<P>, now: Time) {
        self.found.insert(key, (peers, now));
    }

    /// `peer` did not serve `key`: it is no longer remembered as a holder.
    pub fn missed(&mut self, key: &K, peer: &P) {
        if let Some((peers, _)) = self.found.get_mut(key) {
            peers.retain(|p| p != peer);
        }
    }

    /// How many shards are remembered.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Time {
        Time::from_millis(s * 1000)
    }

    #[test]
    fn a_silent_node_is_left_out_for_down_for_then_asked_again() {
        let mut h = Health::default();
        h.down(1, at(100));
        assert!(h.is_down(&1, at(100)));
        assert!(h.is_down(&1, at(114)));
        assert!(!h.is_down(&1, at(115)), "asked again after DOWN_FOR");
        assert!(!h.is_down(&2, at(100)));
        assert_eq!(h.down_now(at(114)), vec![1]);
        assert!(h.down_now(at(115)).is_empty());
    }

    #[test]
    fn an_answer_brings_a_node_back_at_once() {
        let mut h = Health::default();
        h.down(1, at(0));
        h.answered(&1);
        assert!(!h.is_down(&1, at(1)));
        assert!(h.takes_writes(&1, at(1)));
    }

    #[test]
    fn store_failures_sort_nodes_by_what_went_wrong() {
        let mut h = Health::default();
        assert!(h.store_failed(1, StoreFailure::Unreachable, at(0)));
        assert!(h.store_failed(2, StoreFailure::NoSpace, at(0)));
        assert!(!h.store_failed(3, StoreFailure::Other, at(0)));
        assert!(h.is_down(&1, at(1)) && !h.is_full(&1, at(1)));
        assert!(h.is_full(&2, at(1)) && !h.is_down(&2, at(1)));
        assert!(h.takes_writes(&3, at(1)));
        // A full node is offered nothing for FULL_FOR, longer than a down node's DOWN_FOR,
        // but is still read from: full is not down.
        assert!(!h.takes_writes(&2, at(29)));
        assert!(h.takes_writes(&2, at(30)));
        assert!(h.takes_writes(&1, at(15)));
    }

    #[test]
    fn locations_expire_forget_misses_and_start_over_when_full() {
        let mut l = Locations::with_max(2);
        l.found("a", vec![1, 2], at(0));
        assert_eq!(l.recall(&"a", at(29)), Some(&[1, 2][..]));
        assert_eq!(l.recall(&"a", at(30)), None, "stale after LOCATED_FOR");
        l.missed(&"a", &1);
        assert_eq!(l.recall(&"a", at(1)), Some(&[2][..]));
        l.found("b", vec![3], at(0));
        l.make_room(1);
        assert!(l.is_empty(), "over the cap: starts over");
        l.found("c", vec![3], at(0));
        l.make_room(1);
        assert_eq!(l.len(), 1, "up to the cap: kept");
    }
}
