//! Capacity and disk space: what the store can still take, and the checks a write passes.

use std::sync::atomic::Ordering;

use cairn_policy::capacity;

use super::{Store, StoreError};

/// Space and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Shards stored.
    pub shards: u64,
    /// Shard bytes stored.
    pub used: u64,
    /// Bytes of manifests and their provenance envelopes kept: they count against capacity
    /// beside `used`.
    pub manifests: u64,
    /// Of those, bytes of copies marked spare ([`Store::mark_spare`]).
    pub spare: u64,
    /// Capacity limit.
    pub capacity: u64,
    /// Bytes free on the filesystem holding the store (`None`: it could not be asked).
    pub disk_available: Option<u64>,
    /// Bytes kept free on that filesystem
    /// ([`StoreConfig::disk_reserve`](super::StoreConfig::disk_reserve)).
    pub disk_reserve: u64,
}

impl StoreStats {
    /// Room on the disk for shards: what is free beyond the reserve (`None`: unknown).
    pub fn disk_room(&self) -> Option<u64> {
        capacity::disk_room(self.disk_available, self.disk_reserve)
    }

    /// Shard bytes the store can still take: the one free-space rule,
    /// [`cairn_policy::capacity::Space::free`].
    pub fn free(&self) -> u64 {
        self.space().free()
    }

    /// The store's space as the policies see it (what its node reports).
    pub fn space(&self) -> capacity::Space {
        capacity::Space {
            capacity: self.capacity,
            used: self.used.saturating_add(self.manifests),
            disk_room: self.disk_room(),
        }
    }
}

/// Free bytes below which a write that failed with an I/O error is taken for a full disk, whatever
/// `storage.disk_reserve` says (a memtable flush needs up to 64 MiB, a compaction more).
pub(super) const FULL_FLOOR: u64 = 256 << 20;

impl Store {
    /// The configured capacity.
    pub fn capacity(&self) -> u64 {
        self.config.capacity
    }

    /// Current counts, and the disk's free space as of now.
    pub fn stats(&self) -> StoreStats {
        let manifests = self.manifest_bytes.load(Ordering::SeqCst);
        StoreStats {
            shards: self.count.load(Ordering::SeqCst),
            used: self.used.load(Ordering::SeqCst).saturating_sub(manifests),
            manifests,
            spare: self.spare_bytes(),
            capacity: self.config.capacity,
            disk_available: self.disk_available(),
            disk_reserve: self.config.disk_reserve,
        }
    }

    /// Bytes free for unprivileged use on the filesystem holding the store (`statvfs`), or
    /// `None` if it cannot be asked.
    pub fn disk_available(&self) -> Option<u64> {
        match rustix::fs::statvfs(&self.path) {
            Ok(s) => Some(s.f_bavail.saturating_mul(s.f_frsize)),
            Err(e) => {
                tracing::debug!(path = %self.path.display(), "statvfs failed: {e}");
                None
            }
        }
    }

    /// Takes `len` bytes of capacity (counted in `used`, and in `manifest_bytes` for a
    /// manifest), or says the node is full. The caller gives them back with
    /// [`Store::give_capacity`] if its write fails.
    pub(super) fn take_capacity(&self, len: u64, manifest: bool) -> Result<(), StoreError> {
        let capacity = self.config.capacity;
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                let space = capacity::Space {
                    capacity,
                    used,
                    disk_room: None,
                };
                space.capacity_takes(len).then_some(used + len)
            })
            .map_err(|used| StoreError::NoSpace {
                used,
                capacity,
                needed: len,
            })?;
        if manifest {
            self.manifest_bytes.fetch_add(len, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Gives back `len` bytes of capacity taken by [`Store::take_capacity`] or held by
    /// something deleted.
    pub(super) fn give_capacity(&self, len: u64, manifest: bool) {
        let less = |v: u64| Some(v.saturating_sub(len));
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less);
        if manifest {
            let _ = self
                .manifest_bytes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, less);
        }
    }

    /// Fails fast, before any bytes arrive, if `len` more bytes would not fit.
    pub fn check_space(&self, len: u64) -> Result<(), StoreError> {
        let used = self.used.load(Ordering::SeqCst);
        let space = capacity::Space {
            capacity: self.config.capacity,
            used,
            disk_room: None,
        };
        if !space.capacity_takes(len) {
            return Err(StoreError::NoSpace {
                used,
                capacity: self.config.capacity,
                needed: len,
            });
        }
        self.check_disk(len)
    }

    /// Refuses `len` more bytes if they would eat into the disk's reserve.
    fn check_disk(&self, len: u64) -> Result<(), StoreError> {
        let Some(available) = self.disk_available() else {
            return Ok(());
        };
        if !capacity::disk_takes(available, self.config.disk_reserve, len) {
            return Err(self.disk_full(available, len));
        }
        if self.disk_full.swap(false, Ordering::SeqCst) {
            tracing::info!(
                available,
                "disk space is available again: taking new shards"
            );
        }
        Ok(())
    }

    /// Runs `write` (of about `len` bytes) if the disk has room for it beside the writes already
    /// in flight, counting it among them while it runs.
    pub(super) fn with_disk_room<T>(
        &self,
        len: u64,
        write: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let beside = self.writing.fetch_add(len, Ordering::SeqCst);
        let result = self
            .check_disk(len.saturating_add(beside))
            .and_then(|()| write());
        self.writing.fetch_sub(len, Ordering::SeqCst);
        result
    }

    /// The error for a full disk, logged once until the disk has room again.
    fn disk_full(&self, available: u64, needed: u64) -> StoreError {
        let reserve = self.config.disk_reserve;
        if !self.disk_full.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                path = %self.path.display(),
                available,
                reserve,
                "the disk is full: refusing new shards until space is freed (free disk space, \
                 lower storage.disk_reserve, or set storage.capacity to what the disk can hold)"
            );
        }
        StoreError::DiskFull {
            path: self.path.clone(),
            available,
            reserve,
            needed,
        }
    }

    /// A failed write: [`StoreError::DiskFull`] when it failed with an I/O error and the disk
    /// no longer has room for it and the writes beside it, keeping the reserve (at least
    /// [`FULL_FLOOR`]: RocksDB's own flushes and compactions fail first, and with it the
    /// writes after them, while some room is left), else the database's error. The reserve
    /// check before a write can lose a race with other users of the disk; RocksDB's errors
    /// do not carry ENOSPC as a type, so the disk is asked.
    pub(super) fn write_failed(&self, e: rocksdb::Error, needed: u64) -> StoreError {
        let available = self.disk_available();
        let beside = needed.saturating_add(self.writing.load(Ordering::SeqCst));
        let keep = self.config.disk_reserve.max(FULL_FLOOR);
        let full = available.is_some_and(|a| !capacity::disk_takes(a, keep, beside));
        if e.kind() == rocksdb::ErrorKind::IOError && full {
            self.disk_full(available.unwrap_or(0), needed)
        } else {
            StoreError::Db(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::*;
    use crate::store::*;
    use cairn_wire::protocol::ManifestKind;

    #[test]
    fn stats_apply_the_free_space_rule_with_the_reserve() {
        let stats = StoreStats {
            shards: 1,
            used: 20,
            manifests: 10,
            spare: 0,
            capacity: 100,
            disk_available: Some(60),
            disk_reserve: 20,
        };
        assert_eq!((stats.disk_room(), stats.free()), (Some(40), 40));
    }

    #[test]
    fn a_full_disk_is_logged_once_and_leaves_no_write_counted_in_flight() {
        // What the disk-full contract test (store/contract/) cannot see from outside.
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 1 << 30);
        let available = store.stats().disk_available.expect("statvfs works here");
        store.config.disk_reserve = available + (1 << 40);
        let (cid, data) = shard(60_000, 9);
        match store.put_shard(&cid, &data).unwrap_err() {
            StoreError::DiskFull {
                reserve, needed, ..
            } => assert_eq!((reserve, needed), (available + (1 << 40), 60_000)),
            other => panic!("expected DiskFull, got {other:?}"),
        }
        assert!(store.disk_full.load(Ordering::SeqCst));
        let d = cairn_chunker::DatasetManifest::new();
        assert!(matches!(
            store.put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[]),
            Err(StoreError::DiskFull { .. })
        ));
        assert_eq!(store.writing.load(Ordering::SeqCst), 0);
        // Room again: the flag is cleared, so the next full disk is logged again.
        store.config.disk_reserve = 0;
        store.put_shard(&cid, &data).unwrap();
        assert!(!store.disk_full.load(Ordering::SeqCst));
        assert_eq!(store.writing.load(Ordering::SeqCst), 0);
    }
}
