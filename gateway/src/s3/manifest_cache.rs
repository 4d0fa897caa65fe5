//! Decoded object manifests kept in memory, a bounded number, the least recently used going
//! first, and never all at once (a full cache that emptied itself would send every reader,
//! and a CompleteMultipartUpload of thousands of parts, back to the network together).
//!
//! Two generations: new and used entries go into the young one; when it is full, it becomes
//! the old one (and the old one is dropped); an entry found in the old generation moves to
//! the young one. At most `2 * per_generation` entries are held, at least the
//! `per_generation` most recently used.

use std::collections::HashMap;
use std::hash::Hash;

/// A bounded map that forgets what was used least recently, a generation at a time.
#[derive(Debug)]
pub(super) struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    per_generation: usize,
}

impl<K: Hash + Eq + Copy, V: Clone> Generations<K, V> {
    /// A cache of up to `2 * per_generation` entries.
    pub(super) fn new(per_generation: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            per_generation: per_generation.max(1),
        }
    }

    /// The value for `key`, kept as recently used.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let v = self.old.remove(key)?;
        self.insert(*key, v.clone());
        Some(v)
    }

    /// Keeps `value` for `key`.
    pub(super) fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.per_generation && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_up_forgets_the_least_recently_used_never_everything() {
        let mut c = Generations::new(4);
        for i in 0..4 {
            c.insert(i, i * 10);
        }
        // 0 is used again; 4..8 come in: 1, 2, 3 age out first, 0 stays.
        assert_eq!(c.get(&0), Some(0));
        for i in 4..8 {
            c.insert(i, i * 10);
        }
        assert!(c.len() <= 8);
        for i in 4..8 {
            assert_eq!(c.get(&i), Some(i * 10), "{i}");
        }
        // Never empty after filling up: the recent half is always there.
        for i in 8..1000 {
            c.insert(i, i);
            assert!(c.len() >= 4 && c.len() <= 8);
            assert_eq!(c.get(&i), Some(i));
            // The one used just before is among the most recent: still there.
            assert!(c.get(&(i - 1)).is_some(), "{i}");
        }
    }
}
