//! Writing and deleting shards, and quarantining corrupt ones.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::MAX_SHARD_SIZE;
use cairn_chunker::verified;
use rocksdb::WriteBatch;

use super::layout::{
    CF_CORRUPT, CF_LEASES, CF_META, CF_OUTBOARDS, CF_SHARDS, KEY_COUNT, KEY_USED, PIECE_BYTES,
    delta, join, piece_count, piece_key, u64_le,
};
use super::{Store, StoreError, StoreMetrics};

/// A shard whose bytes [`Store::check_shard`] found to match its CID, with its outboard: all
/// [`Store::commit_shard`] needs. It can only be made by checking.
#[derive(Debug)]
pub struct CheckedShard {
    pub(super) cid: Cid,
    pub(super) data: Bytes,
    pub(super) outboard: Vec<u8>,
    /// Whether its commit waits for the disk (`storage.sync_writes`) itself.
    pub(super) sync: bool,
}

impl CheckedShard {
    /// Commits without waiting for the disk: for a caller that makes a synced write to the same
    /// store after this one and before it promises anything (a synced RocksDB write fsyncs
    /// every live write-ahead log not yet synced, older ones from before a memtable switch
    /// too, so this write is on disk when that one returns). The upload path does: the shard,
    /// then its upload hold (`write_holds`, always synced), then the receipt: one fsync where
    /// there were two.
    pub fn synced_by_next_write(mut self) -> Self {
        self.sync = false;
        self
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Newly stored.
    Stored,
    /// Already held and intact; nothing written.
    AlreadyHeld,
    /// A copy known to be corrupt was replaced by these verified bytes.
    Repaired,
}

/// A shard marked busy by [`Store::claim`]; dropping it lets the next caller for that shard in.
pub(super) struct Claim<'a> {
    store: &'a Store,
    key: Vec<u8>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut busy = self.store.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.key);
        drop(busy);
        self.store.settled.notify_all();
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks bytes offered for storage against their CID (a shard CID, 1..=`MAX_SHARD_SIZE`
/// bytes, hashing to it) and computes their outboard; a mismatch counts as a rejected write.
/// The same check for every store.
pub(super) fn verify_new_shard(
    cid: &Cid,
    data: &[u8],
    metrics: &StoreMetrics,
) -> Result<Vec<u8>, StoreError> {
    let expected = cids::digest(cid, Codec::Raw)?;
    if data.is_empty() || data.len() > MAX_SHARD_SIZE as usize {
        return Err(StoreError::BadSize { len: data.len() });
    }
    let (root, outboard) = verified::outboard(data);
    if root != expected {
        metrics.rejected_writes.inc();
        return Err(StoreError::HashMismatch { cid: *cid });
    }
    Ok(outboard)
}

impl Store {
    /// Verifies `data` against `cid` and stores it with its outboard, atomically.
    pub fn put_shard(&self, cid: &Cid, data: &[u8]) -> Result<PutOutcome, StoreError> {
        let outboard = self.verify_new_shard(cid, data)?;
        self.commit(cid, data, &outboard)
    }

    /// The CPU half of [`Store::put_shard`]: checks `data` against `cid` and computes its
    /// outboard, without touching the database. Run it where CPU work is bounded, and
    /// [`Store::commit_shard`] (disk work, an fsync by default) where I/O is.
    pub fn check_shard(&self, cid: &Cid, data: Bytes) -> Result<CheckedShard, StoreError> {
        let outboard = self.verify_new_shard(cid, &data)?;
        Ok(CheckedShard {
            cid: *cid,
            data,
            outboard,
            sync: true,
        })
    }

    /// The disk half of [`Store::put_shard`]: stores a shard [`Store::check_shard`] accepted.
    pub fn commit_shard(&self, shard: CheckedShard) -> Result<PutOutcome, StoreError> {
        self.commit_with(&shard.cid, &shard.data, &shard.outboard, shard.sync)
    }

    fn verify_new_shard(&self, cid: &Cid, data: &[u8]) -> Result<Vec<u8>, StoreError> {
        verify_new_shard(cid, data, &self.metrics)
    }

    /// Waits until no other caller is writing or deleting the shard keyed `key`, then marks it
    /// busy until the returned guard drops.
    pub(super) fn claim(&self, key: &[u8]) -> Claim<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while busy.contains(key) {
            busy = self.settled.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(key.to_vec());
        Claim {
            store: self,
            key: key.to_vec(),
        }
    }

    fn commit(&self, cid: &Cid, data: &[u8], outboard: &[u8]) -> Result<PutOutcome, StoreError> {
        self.commit_with(cid, data, outboard, true)
    }

    fn commit_with(
        &self,
        cid: &Cid,
        data: &[u8],
        outboard: &[u8],
        sync: bool,
    ) -> Result<PutOutcome, StoreError> {
        let key = cid.to_bytes();
        let (outboards, shards, corrupt, meta) = (
            self.cf(CF_OUTBOARDS)?,
            self.cf(CF_SHARDS)?,
            self.cf(CF_CORRUPT)?,
            self.cf(CF_META)?,
        );
        let _claim = self.claim(&key);
        self.unspare(&key);
        let held = self.db.get_pinned_cf(outboards, &key)?.is_some();
        let was_corrupt = held && self.db.get_pinned_cf(corrupt, &key)?.is_some();
        if held && !was_corrupt {
            return Ok(PutOutcome::AlreadyHeld);
        }
        let len = data.len() as u64;
        if !held {
            // Reserve the space first, so that writes in flight together never exceed capacity.
            self.take_capacity(len, false)?;
        }
        let mut ob_value = Vec::with_capacity(8 + outboard.len());
        ob_value.extend_from_slice(&len.to_le_bytes());
        ob_value.extend_from_slice(outboard);
        let mut batch = WriteBatch::default();
        for (i, piece) in data.chunks(PIECE_BYTES).enumerate() {
            batch.put_cf(shards, piece_key(&key, i), piece);
        }
        batch.put_cf(outboards, &key, &ob_value);
        batch.delete_cf(corrupt, &key);
        if !held {
            batch.merge_cf(meta, KEY_USED, delta(len as i64));
            batch.merge_cf(meta, KEY_COUNT, delta(1));
        }
        // A repair rewrites the whole shard too, so it needs the disk room a new shard does.
        let mut opts = self.write_opts();
        if !sync {
            opts.set_sync(false);
        }
        let written = self.with_disk_room(len, || {
            self.db
                .write_opt(batch, &opts)
                .map_err(|e| self.write_failed(e, len))
        });
        if let Err(e) = written {
            if !held {
                self.give_capacity(len, false);
            }
            return Err(e);
        }
        if !held {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        self.metrics.writes.inc();
        Ok(if was_corrupt {
            PutOutcome::Repaired
        } else {
            PutOutcome::Stored
        })
    }

    /// Removes a shard (and its lease and holds) and gives its space back.
    pub fn delete_shard(&self, cid: &Cid) -> Result<bool, StoreError> {
        let key = cid.to_bytes();
        let _claim = self.claim(&key);
        Ok(self.delete_claimed(cid, WriteBatch::default())?.is_some())
    }

    /// [`Store::delete_shard`] for a caller holding the shard's claim, writing `batch` (more
    /// deletes) with it: the shard's size if it was held (and so deleted), `None` if not.
    pub(super) fn delete_claimed(
        &self,
        cid: &Cid,
        mut batch: WriteBatch,
    ) -> Result<Option<u64>, StoreError> {
        let key = cid.to_bytes();
        let (outboards, shards, corrupt, meta) = (
            self.cf(CF_OUTBOARDS)?,
            self.cf(CF_SHARDS)?,
            self.cf(CF_CORRUPT)?,
            self.cf(CF_META)?,
        );
        let Some(ob) = self.db.get_pinned_cf(outboards, &key)? else {
            return Ok(None);
        };
        self.unspare(&key);
        let len = u64_le(&ob)?;
        if len == 0 || len > u64::from(MAX_SHARD_SIZE) {
            // A damaged size would throw the counters off for good: leave it to the operator.
            return Err(StoreError::Damaged(format!(
                "shard {cid} has an impossible size ({len} bytes) in its outboard entry"
            )));
        }
        drop(ob);
        for i in 0..piece_count(len.min(u64::from(MAX_SHARD_SIZE))) {
            batch.delete_cf(shards, piece_key(&key, i));
        }
        batch.delete_cf(outboards, &key);
        batch.delete_cf(corrupt, &key);
        // The promise goes with the bytes: a shard stored again is leased again.
        batch.delete_cf(self.cf(CF_LEASES)?, &key);
        self.delete_holds(&key, &mut batch)?;
        batch.merge_cf(meta, KEY_USED, delta(-(len as i64)));
        batch.merge_cf(meta, KEY_COUNT, delta(-1));
        self.db
            .write_opt(batch, &self.write_opts())
            .map_err(|e| self.write_failed(e, 0))?;
        self.give_capacity(len, false);
        let _ = self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(1))
            });
        Ok(Some(len))
    }

    pub(super) fn is_corrupt(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(CF_CORRUPT)?, key)?.is_some())
    }

    /// A quarantined shard is refused on every read path until it is stored again.
    pub(super) fn refuse_quarantined(&self, cid: &Cid, key: &[u8]) -> Result<(), StoreError> {
        if self.is_corrupt(key)? {
            return Err(StoreError::Corrupt {
                cid: *cid,
                offset: 0,
            });
        }
        Ok(())
    }

    /// Records a failed verification: never served again until repaired.
    pub(super) fn mark_corrupt(&self, cid: &Cid, offset: u64) -> StoreError {
        self.metrics.verification_failures.inc();
        let key = cid.to_bytes();
        // Under the claim no write or delete of the shard is under way. A reader (the scrub,
        // say, hashing a large shard) that found bad bytes may have raced a repair or a delete
        // of them: look again before quarantining, or a repaired copy would be refused again.
        let _claim = self.claim(&key);
        if self.intact_or_gone(cid, &key) {
            tracing::warn!(%cid, "a failed read raced a rewrite or delete of the shard: not quarantined");
            return StoreError::Corrupt { cid: *cid, offset };
        }
        tracing::error!(target: "cairn::_events::corrupt", %cid, offset, "stored shard failed BLAKE3 verification; quarantined");
        let res = self.cf(CF_CORRUPT).and_then(|cf| {
            Ok(self.db.put_cf_opt(
                cf,
                cid.to_bytes(),
                now_ms().to_le_bytes(),
                &self.write_opts(),
            )?)
        });
        if let Err(e) = res {
            tracing::error!(%cid, "could not record corrupt shard: {e}");
        }
        StoreError::Corrupt { cid: *cid, offset }
    }

    /// Whether the shard is no longer held, or its stored bytes and outboard now both match its
    /// CID (read afresh, whatever a caller saw).
    fn intact_or_gone(&self, cid: &Cid, key: &[u8]) -> bool {
        let held = self
            .cf(CF_OUTBOARDS)
            .and_then(|cf| Ok(self.db.get_pinned_cf(cf, key)?.is_some()));
        match held {
            Ok(false) => return true,
            Err(_) => return false,
            Ok(true) => {}
        }
        let (Ok(root), Ok((size, stored))) =
            (cids::digest(cid, Codec::Raw), self.outboard(key, cid))
        else {
            return false;
        };
        match self.load_pieces(key, size, 0..piece_count(size)) {
            Ok(Ok(pieces)) => {
                let (actual, outboard) = verified::outboard(&join(&pieces));
                actual == root && outboard == stored
            }
            _ => false,
        }
    }
}
