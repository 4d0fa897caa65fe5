//! Leases (how long the node promised to hold each shard), what it commits to in an epoch, and
//! the raw reads and quarantine a storage proof needs.
//!
//! A lease is `(start, end)` in epochs: the shard was taken in epoch `start` and is held through
//! epoch `end`; it is due (challengeable) in epochs `start < e <= end`, as
//! `cairn_proofs::receipt::StorageReceipt::due_in` says. Leases only grow: extending one keeps
//! the earliest start and the latest end, so a receipt once signed stays true.

use std::collections::HashSet;
use std::ops::Range;

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::MAX_SHARD_SIZE;
use cairn_chunker::verified;
use rocksdb::{IteratorMode, ReadOptions};

use super::layout::{CF_CORRUPT, CF_LEASES, CF_OUTBOARDS, PIECE_BYTES, lease_row, parse_lease_row};
use super::{Store, StoreError};

/// What a node commits to in one epoch (see [`ShardStore::committable`](super::ShardStore::committable)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committable {
    /// Every held, intact shard due in the epoch: `(BLAKE3 root, size)`, sorted by root.
    pub entries: Vec<([u8; 32], u64)>,
    /// Roots of quarantined shards whose leases make them due in the epoch (sorted): lost, and
    /// to be declared so.
    pub quarantined: Vec<[u8; 32]>,
}

/// Whether a lease makes its shard due in `epoch` (taken in an earlier epoch, not yet over).
pub(super) fn due(start: u64, end: u64, epoch: u64) -> bool {
    start < epoch && epoch <= end
}

/// A lease merged with the one asked for: the earliest start, the latest end.
pub(super) fn merged(held: Option<(u64, u64)>, start: u64, end: u64) -> (u64, u64) {
    match held {
        Some((s, e)) => (s.min(start), e.max(end)),
        None => (start, end),
    }
}

/// Refuses a lease that ends before it starts.
pub(super) fn check_lease(cid: &Cid, start: u64, end: u64) -> Result<(), StoreError> {
    if end < start {
        return Err(StoreError::BadLease {
            cid: *cid,
            start,
            end,
        });
    }
    Ok(())
}

/// The bytes of 16 KiB group `group` of a shard of `size` bytes, or the error naming it.
pub(super) fn group_bytes(cid: &Cid, size: u64, group: u64) -> Result<Range<u64>, StoreError> {
    let g = verified::GROUP_BYTES as u64;
    let groups = size.div_ceil(g);
    if group >= groups {
        return Err(StoreError::NoSuchGroup {
            cid: *cid,
            group,
            groups,
        });
    }
    Ok(group * g..((group + 1) * g).min(size))
}

/// The stored piece holding `bytes` (a group: never across two pieces), and where in the piece
/// they are.
pub(super) fn piece_of(bytes: &Range<u64>) -> (usize, Range<usize>) {
    let piece = (bytes.start / PIECE_BYTES as u64) as usize;
    let at = (bytes.start % PIECE_BYTES as u64) as usize;
    (piece, at..at + (bytes.end - bytes.start) as usize)
}

/// The shard's size from its outboard row, refused if no shard can have it.
pub(super) fn checked_size(cid: &Cid, size: u64) -> Result<u64, StoreError> {
    if size == 0 || size > u64::from(MAX_SHARD_SIZE) {
        return Err(StoreError::Damaged(format!(
            "shard {cid} has an impossible size ({size} bytes) in its outboard entry"
        )));
    }
    Ok(size)
}

impl Store {
    /// Records a lease on a held shard, or extends the one it has (earliest start, latest end);
    /// returns the lease now held. [`StoreError::NotFound`] if the shard is not held,
    /// [`StoreError::BadLease`] if `end < start`. Durable when it returns (a receipt may be
    /// signed for it).
    pub fn extend_lease(&self, cid: &Cid, start: u64, end: u64) -> Result<(u64, u64), StoreError> {
        check_lease(cid, start, end)?;
        let key = cid.to_bytes();
        let (outboards, leases) = (self.cf(CF_OUTBOARDS)?, self.cf(CF_LEASES)?);
        // Under the shard's claim: no write or delete of it runs meanwhile, so a lease is never
        // left behind for a shard that is gone.
        let _claim = self.claim(&key);
        let ob = self
            .db
            .get_pinned_cf(outboards, &key)?
            .ok_or(StoreError::NotFound { cid: *cid })?;
        let size = checked_size(cid, super::layout::u64_le(&ob)?)?;
        drop(ob);
        let held = match self.db.get_pinned_cf(leases, &key)? {
            Some(row) => {
                let (s, e, _) = parse_lease_row(&row)?;
                Some((s, e))
            }
            None => None,
        };
        let lease = merged(held, start, end);
        if held != Some(lease) {
            self.db
                .put_cf_opt(
                    leases,
                    &key,
                    lease_row(lease.0, lease.1, size),
                    &self.write_opts(),
                )
                .map_err(|e| self.write_failed(e, 0))?;
        }
        Ok(lease)
    }

    /// The lease of a shard: `None` if it is not held, or held under no lease (taken, and not
    /// yet leased).
    pub fn lease(&self, cid: &Cid) -> Result<Option<(u64, u64)>, StoreError> {
        match self.db.get_pinned_cf(self.cf(CF_LEASES)?, cid.to_bytes())? {
            Some(row) => {
                let (start, end, _) = parse_lease_row(&row)?;
                Ok(Some((start, end)))
            }
            None => Ok(None),
        }
    }

    /// What the node commits to in `epoch`: every held shard whose lease makes it due
    /// (`start < epoch <= end`), intact ones as `(root, size)` sorted by root, quarantined ones
    /// by root. One walk over the small `leases` rows (and the few `corrupt` ones), from one
    /// snapshot; no piece or outboard is read. A damaged lease row is logged and passed over.
    pub fn committable(&self, epoch: u64) -> Result<Committable, StoreError> {
        let snapshot = self.db.snapshot();
        let options = || {
            let mut ro = ReadOptions::default();
            ro.set_snapshot(&snapshot);
            ro
        };
        let mut corrupt = HashSet::new();
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_CORRUPT)?, options(), IteratorMode::Start)
        {
            corrupt.insert(item?.0.to_vec());
        }
        let mut out = Committable::default();
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_LEASES)?, options(), IteratorMode::Start)
        {
            let (key, row) = item?;
            let entry = parse_lease_row(&row).and_then(|lease| {
                let cid = cids::from_bytes(&key)
                    .map_err(|e| StoreError::Damaged(format!("bad key in leases: {e}")))?;
                Ok((*cids::digest(&cid, Codec::Raw)?.as_bytes(), lease))
            });
            let (root, (start, end, size)) = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(key = ?&key[..], "skipping a damaged lease row: {e}");
                    continue;
                }
            };
            if !due(start, end, epoch) {
                continue;
            }
            if corrupt.contains(&key[..]) {
                out.quarantined.push(root);
            } else {
                out.entries.push((root, size));
            }
        }
        // Raw CIDs share their prefix, so their order is their roots' already.
        out.entries.sort_unstable_by_key(|(root, _)| *root);
        out.quarantined.sort_unstable();
        Ok(out)
    }

    /// Group `group` (16 KiB, the last may be short) of a held shard, as stored, with the
    /// shard's size and whole outboard: `(size, group bytes, outboard)`. Reads only the one
    /// stored piece holding the group, and does not verify it (the caller checks the proof it
    /// builds, and calls [`Store::quarantine`] if it fails). A quarantined shard is
    /// [`StoreError::Corrupt`], one not held [`StoreError::NotFound`], a group past the end
    /// [`StoreError::NoSuchGroup`]; a piece missing from the store quarantines the shard.
    pub fn read_group(&self, cid: &Cid, group: u64) -> Result<(u64, Vec<u8>, Vec<u8>), StoreError> {
        let key = cid.to_bytes();
        self.refuse_quarantined(cid, &key)?;
        let (size, outboard) = self.outboard(&key, cid)?;
        let size = checked_size(cid, size)?;
        let bytes = group_bytes(cid, size, group)?;
        let (piece, within) = piece_of(&bytes);
        let loaded = self.read_pieces(cid, &key, size, piece..piece + 1)?;
        let data = loaded[0]
            .get(within)
            .ok_or_else(|| StoreError::Damaged(format!("{cid}: piece {piece} is short")))?
            .to_vec();
        Ok((size, data, outboard))
    }

    /// Quarantines a held shard whose bytes a caller found bad at `offset` (its own storage
    /// proof did not verify), as a read that finds corrupt bytes does: the shard is re-read
    /// under its claim and quarantined unless its bytes and outboard now verify (it was
    /// repaired meanwhile). [`StoreError::NotFound`] if it is not held.
    pub fn quarantine(&self, cid: &Cid, offset: u64) -> Result<(), StoreError> {
        if self
            .db
            .get_pinned_cf(self.cf(CF_OUTBOARDS)?, cid.to_bytes())?
            .is_none()
        {
            return Err(StoreError::NotFound { cid: *cid });
        }
        let _ = self.mark_corrupt(cid, offset);
        Ok(())
    }
}
