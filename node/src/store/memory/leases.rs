//! [`MemStore`]: leases, what an epoch commits to, raw group reads and quarantine.

use cairn_chunker::cids::{self, Cid, Codec};

use crate::store::layout::u64_le;
use crate::store::leases::{check_lease, checked_size, due, group_bytes, merged, piece_of};
use crate::store::outgoing::PieceSource;
use crate::store::{Committable, StoreError};

use super::MemStore;

impl MemStore {
    /// Records or extends a held shard's lease (see
    /// [`Store::extend_lease`](crate::store::Store::extend_lease)).
    pub fn extend_lease(&self, cid: &Cid, start: u64, end: u64) -> Result<(u64, u64), StoreError> {
        check_lease(cid, start, end)?;
        let mut state = self.state();
        let held = state
            .shards
            .get_mut(&cid.to_bytes())
            .ok_or(StoreError::NotFound { cid: *cid })?;
        let size = checked_size(cid, u64_le(&held.row)?)?;
        let lease = merged(held.lease.map(|(s, e, _)| (s, e)), start, end);
        if held.lease.map(|(s, e, _)| (s, e)) != Some(lease) {
            held.lease = Some((lease.0, lease.1, size));
        }
        Ok(lease)
    }

    /// A shard's lease; `None` if it is not held or has none.
    pub fn lease(&self, cid: &Cid) -> Result<Option<(u64, u64)>, StoreError> {
        let state = self.state();
        Ok(state
            .shards
            .get(&cid.to_bytes())
            .and_then(|h| h.lease)
            .map(|(s, e, _)| (s, e)))
    }

    /// What the node commits to in `epoch` (see
    /// [`Store::committable`](crate::store::Store::committable)).
    pub fn committable(&self, epoch: u64) -> Result<Committable, StoreError> {
        let state = self.state();
        let mut out = Committable::default();
        for (key, held) in &state.shards {
            let Some((start, end, size)) = held.lease else {
                continue;
            };
            let root = cids::from_bytes(key)
                .map_err(|e| StoreError::Damaged(format!("bad key in leases: {e}")))
                .and_then(|cid| Ok(*cids::digest(&cid, Codec::Raw)?.as_bytes()));
            let root = match root {
                Ok(root) => root,
                Err(e) => {
                    tracing::error!(key = ?&key[..], "skipping a damaged lease row: {e}");
                    continue;
                }
            };
            if !due(start, end, epoch) {
                continue;
            }
            if held.corrupt.is_some() {
                out.quarantined.push(root);
            } else {
                out.entries.push((root, size));
            }
        }
        out.entries.sort_unstable_by_key(|(root, _)| *root);
        out.quarantined.sort_unstable();
        Ok(out)
    }

    /// Group `group` of a held shard as stored, with its size and outboard (see
    /// [`Store::read_group`](crate::store::Store::read_group)).
    pub fn read_group(&self, cid: &Cid, group: u64) -> Result<(u64, Vec<u8>, Vec<u8>), StoreError> {
        let held = self.servable(cid)?;
        let (size, outboard) = held.outboard()?;
        let size = checked_size(cid, size)?;
        let bytes = group_bytes(cid, size, group)?;
        let (piece, within) = piece_of(&bytes);
        let loaded = held
            .load(size, piece..piece + 1)
            .map_err(|at| self.missing_piece(cid, at))?;
        let data = loaded[0]
            .get(within)
            .ok_or_else(|| StoreError::Damaged(format!("{cid}: piece {piece} is short")))?
            .to_vec();
        Ok((size, data, outboard))
    }

    /// Quarantines a held shard a caller found bad (see
    /// [`Store::quarantine`](crate::store::Store::quarantine)).
    pub fn quarantine(&self, cid: &Cid, offset: u64) -> Result<(), StoreError> {
        if !self.state().shards.contains_key(&cid.to_bytes()) {
            return Err(StoreError::NotFound { cid: *cid });
        }
        let _ = PieceSource::mark_corrupt(self, cid, offset);
        Ok(())
    }
}
