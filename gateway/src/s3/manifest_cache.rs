//! Decoded object manifests kept in memory, a bounded number, the least recently used going
//! first, and never all at once (a full cache that emptied itself would send every reader,
//! and a CompleteMultipartUpload of thousands of parts, back to the network together).
//!
//! Two generations: new and used entries go into the young one; when it is full, it becomes
//! the old one (and the old one is dropped); an entry found in the old generation moves to
//! the young one. A generation is full at `per_generation` entries or `max_weight` bytes (an
//! inline object's manifest carries up to 64 KiB of it), so at most twice either is held, and
//! never fewer than the entries of the last full generation.

use std::collections::HashMap;
use std::hash::Hash;

/// A bounded map that forgets what was used least recently, a generation at a time.
#[derive(Debug)]
pub(super) struct Generations<K, V> {
    young: HashMap<K, (V, usize)>,
    old: HashMap<K, (V, usize)>,
    /// The young generation's weight.
    young_weight: usize,
    per_generation: usize,
    max_weight: usize,
}

impl<K: Hash + Eq + Copy, V: Clone> Generations<K, V> {
    /// A cache of up to `2 * per_generation` entries weighing up to `2 * max_weight` (plus
    /// one entry) in all.
    pub(super) fn new(per_generation: usize, max_weight: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            young_weight: 0,
            per_generation: per_generation.max(1),
            max_weight: max_weight.max(1),
        }
    }

    /// The value for `key`, kept as recently used.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        if let Some((v, _)) = self.young.get(key) {
            return Some(v.clone());
        }
        let (v, weight) = self.old.remove(key)?;
        self.insert(*key, v.clone(), weight);
        Some(v)
    }

    /// Keeps `value` for `key`; it weighs `weight` (its bytes, roughly).
    pub(super) fn insert(&mut self, key: K, value: V, weight: usize) {
        if let Some((_, w)) = self.young.remove(&key) {
            self.young_weight -= w;
        } else if !self.young.is_empty()
            && (self.young.len() >= self.per_generation
                || self.young_weight.saturating_add(weight) > self.max_weight)
        {
            self.old = std::mem::take(&mut self.young);
            self.young_weight = 0;
        }
        self.old.remove(&key);
        self.young_weight += weight;
        self.young.insert(key, (value, weight));
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// What the entries held weigh.
    #[cfg(test)]
    pub(super) fn weight(&self) -> usize {
        self.young_weight + self.old.values().map(|(_, w)| w).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_up_forgets_the_least_recently_used_never_everything() {
        let mut c = Generations::new(4, usize::MAX);
        for i in 0..4 {
            c.insert(i, i * 10, 1);
        }
        // 0 is used again; 4..8 come in: 1, 2, 3 age out first, 0 stays.
        assert_eq!(c.get(&0), Some(0));
        for i in 4..8 {
            c.insert(i, i * 10, 1);
        }
        assert!(c.len() <= 8);
        for i in 4..8 {
            assert_eq!(c.get(&i), Some(i * 10), "{i}");
        }
        // Never empty after filling up: the recent half is always there.
        for i in 8..1000 {
            c.insert(i, i, 1);
            assert!(c.len() >= 4 && c.len() <= 8);
            assert_eq!(c.get(&i), Some(i));
            // The one used just before is among the most recent: still there.
            assert!(c.get(&(i - 1)).is_some(), "{i}");
        }
    }

    #[test]
    fn heavy_entries_are_bounded_by_weight_not_only_by_count() {
        // 16,384 entries a generation, 1 MiB: 4,000 inline manifests of 64 KiB must not all
        // stay (a count bound alone would keep 256 MiB of them).
        let mut c = Generations::new(16_384, 1 << 20);
        for i in 0..4000u32 {
            c.insert(i, vec![0u8; 64 << 10], 64 << 10);
            assert!(c.weight() <= 2 << 20, "{i}: {}", c.weight());
            assert!(c.get(&i).is_some(), "{i}");
        }
        assert!(c.len() <= 32, "{}", c.len());
        // Reinserting a key does not count it twice.
        let mut c = Generations::new(16, 100);
        for _ in 0..50 {
            c.insert(1, (), 40);
        }
        assert_eq!((c.len(), c.weight()), (1, 40));
        // One entry heavier than a generation is still kept (until the next comes).
        c.insert(2, (), 500);
        assert!(c.get(&2).is_some());
    }
}
