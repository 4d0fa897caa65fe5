//! How much a node can still take. One rule, used by the store that enforces it, the node
//! that reports it, and the clients that place shards by it.
//!
//! A node promises `capacity` bytes of shards; its disk may hold less. What it can take is the
//! smaller of what the capacity leaves and the disk's room beyond a reserve kept free for
//! RocksDB's compactions, its logs and the operating system.

/// A node's space as it knows or reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Shard bytes it promised to hold at most.
    pub capacity: u64,
    /// Shard bytes it holds.
    pub used: u64,
    /// Room on its disk beyond the reserve ([`disk_room`]); `None` when it could not ask.
    pub disk_room: Option<u64>,
}

impl Space {
    /// Shard bytes it can still take: the smaller of `capacity - used` and the disk's room.
    pub fn free(&self) -> u64 {
        let by_capacity = self.capacity.saturating_sub(self.used);
        self.disk_room
            .map_or(by_capacity, |room| by_capacity.min(room))
    }

    /// Whether `len` more bytes stay within the capacity.
    pub fn capacity_takes(&self, len: u64) -> bool {
        self.used.saturating_add(len) <= self.capacity
    }
}

/// Room on a disk with `available` bytes free for shards, keeping `reserve` free (`None` when
/// the free space is unknown).
pub fn disk_room(available: Option<u64>, reserve: u64) -> Option<u64> {
    available.map(|a| a.saturating_sub(reserve))
}

/// Whether a disk with `available` bytes free can take `len` more and still keep `reserve`.
pub fn disk_takes(available: u64, reserve: u64, len: u64) -> bool {
    available >= len.saturating_add(reserve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_is_the_smaller_of_capacity_and_disk() {
        let s = |capacity, used, disk_room| Space {
            capacity,
            used,
            disk_room,
        };
        assert_eq!(s(100, 40, None).free(), 60);
        assert_eq!(s(100, 40, Some(10)).free(), 10);
        assert_eq!(s(100, 40, Some(1000)).free(), 60);
        // Over capacity (capacity lowered by the operator): nothing, not an underflow.
        assert_eq!(s(100, 140, None).free(), 0);
        assert_eq!(s(100, 40, Some(0)).free(), 0);
    }

    #[test]
    fn the_reserve_is_kept() {
        assert_eq!(disk_room(Some(1000), 300), Some(700));
        assert_eq!(disk_room(Some(100), 300), Some(0));
        assert_eq!(disk_room(None, 300), None);
        assert!(disk_takes(1000, 300, 700));
        assert!(!disk_takes(1000, 300, 701));
        assert!(!disk_takes(1000, u64::MAX, 1), "no overflow");
    }

    #[test]
    fn capacity_takes_up_to_the_limit() {
        let s = Space {
            capacity: 100,
            used: 60,
            disk_room: None,
        };
        assert!(s.capacity_takes(40));
        assert!(!s.capacity_takes(41));
        assert!(!s.capacity_takes(u64::MAX));
    }
}
