//! [`MemStore`]: writing and deleting shards, space and counters.

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::MAX_SHARD_SIZE;
use cairn_chunker::verified;
use cairn_policy::capacity;

use crate::store::layout::{piece_bytes, piece_count, u64_le};
use crate::store::shards::verify_new_shard;
use crate::store::{CheckedShard, PutOutcome, StoreError, StoreStats};

use super::{Held, MemStore, State, join};

impl MemStore {
    /// Current counts, and the disk's free space as last set.
    pub fn stats(&self) -> StoreStats {
        let state = self.state();
        StoreStats {
            shards: state.count,
            used: state.used,
            manifests: state.manifest_bytes,
            spare: 0,
            capacity: self.config.capacity,
            disk_available: state.disk_available,
            disk_reserve: self.config.disk_reserve,
        }
    }

    /// Fails fast, before any bytes arrive, if `len` more bytes would not fit.
    pub fn check_space(&self, len: u64) -> Result<(), StoreError> {
        let state = self.state();
        if !space(self.config.capacity, state.taken()).capacity_takes(len) {
            return Err(StoreError::NoSpace {
                used: state.taken(),
                capacity: self.config.capacity,
                needed: len,
            });
        }
        self.check_disk(&state, len)
    }

    /// Refuses `len` more bytes if they would eat into the disk's reserve.
    pub(super) fn check_disk(&self, state: &State, len: u64) -> Result<(), StoreError> {
        let Some(available) = state.disk_available else {
            return Ok(());
        };
        let reserve = self.config.disk_reserve;
        if !capacity::disk_takes(available, reserve, len) {
            return Err(StoreError::DiskFull {
                path: self.path.clone(),
                available,
                reserve,
                needed: len,
            });
        }
        Ok(())
    }

    /// Verifies `data` against `cid` and stores it with its outboard.
    pub fn put_shard(&self, cid: &Cid, data: &[u8]) -> Result<PutOutcome, StoreError> {
        let outboard = verify_new_shard(cid, data, &self.metrics)?;
        let len = data.len() as u64;
        self.commit(cid, len, || Bytes::copy_from_slice(data), &outboard)
    }

    /// The CPU half of [`MemStore::put_shard`]: checks `data` against `cid` and computes its
    /// outboard, storing nothing.
    pub fn check_shard(&self, cid: &Cid, data: Bytes) -> Result<CheckedShard, StoreError> {
        let outboard = verify_new_shard(cid, &data, &self.metrics)?;
        Ok(CheckedShard {
            cid: *cid,
            data,
            outboard,
            sync: true,
        })
    }

    /// The storing half of [`MemStore::put_shard`]: stores a shard that a check accepted.
    pub fn commit_shard(&self, shard: CheckedShard) -> Result<PutOutcome, StoreError> {
        // Nothing to sync in memory.
        let CheckedShard {
            cid,
            data,
            outboard,
            ..
        } = shard;
        self.commit(&cid, data.len() as u64, || data, &outboard)
    }

    /// Stores a verified shard of `len` bytes (`data` makes its bytes, only if they are to be
    /// written).
    fn commit(
        &self,
        cid: &Cid,
        len: u64,
        data: impl FnOnce() -> Bytes,
        outboard: &[u8],
    ) -> Result<PutOutcome, StoreError> {
        let key = cid.to_bytes();
        let mut state = self.state();
        // A repaired shard keeps its lease.
        let (was_corrupt, lease) = match state.shards.get(&key) {
            Some(held) if held.corrupt.is_none() => return Ok(PutOutcome::AlreadyHeld),
            Some(held) => (true, held.lease),
            None => (false, None),
        };
        let capacity = self.config.capacity;
        if !was_corrupt && !space(capacity, state.taken()).capacity_takes(len) {
            return Err(StoreError::NoSpace {
                used: state.taken(),
                capacity,
                needed: len,
            });
        }
        // A repair rewrites the whole shard too, so it needs the disk room a new shard does.
        self.check_disk(&state, len)?;
        let data = data();
        let pieces = (0..piece_count(len))
            .map(|i| {
                let r = piece_bytes(len, i);
                Some(data.slice(r.start as usize..r.end as usize))
            })
            .collect();
        let mut row = Vec::with_capacity(8 + outboard.len());
        row.extend_from_slice(&len.to_le_bytes());
        row.extend_from_slice(outboard);
        let held = Held {
            row,
            pieces,
            corrupt: None,
            lease,
        };
        state.shards.insert(key, held);
        if !was_corrupt {
            state.used += len;
            state.count += 1;
        }
        self.metrics.writes.inc();
        Ok(if was_corrupt {
            PutOutcome::Repaired
        } else {
            PutOutcome::Stored
        })
    }

    /// Removes a shard (and its lease) and gives its space back; `false` if it was not held.
    pub fn delete_shard(&self, cid: &Cid) -> Result<bool, StoreError> {
        let key = cid.to_bytes();
        let mut state = self.state();
        let Some(held) = state.shards.get(&key) else {
            return Ok(false);
        };
        let len = u64_le(&held.row)?;
        if len == 0 || len > u64::from(MAX_SHARD_SIZE) {
            // As in the RocksDB store: a damaged size would throw the counters off for good.
            return Err(StoreError::Damaged(format!(
                "shard {cid} has an impossible size ({len} bytes) in its outboard entry"
            )));
        }
        state.shards.remove(&key);
        state.used = state.used.saturating_sub(len);
        state.count = state.count.saturating_sub(1);
        Ok(true)
    }

    /// Whether the shard is no longer held, or its stored bytes and outboard both match its
    /// CID.
    pub(super) fn intact_or_gone(state: &State, cid: &Cid) -> bool {
        let Some(held) = state.shards.get(&cid.to_bytes()) else {
            return true;
        };
        let (Ok(root), Ok((size, stored))) = (cids::digest(cid, Codec::Raw), held.outboard())
        else {
            return false;
        };
        match held.load(size, 0..piece_count(size)) {
            Ok(pieces) => {
                let (actual, outboard) = verified::outboard(&join(&pieces));
                actual == root && outboard == stored
            }
            Err(_) => false,
        }
    }
}

/// A store's capacity and use, as the capacity rules take them.
pub(super) fn space(capacity: u64, used: u64) -> capacity::Space {
    capacity::Space {
        capacity,
        used,
        disk_room: None,
    }
}
