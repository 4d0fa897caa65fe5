//! Garbage collection in the store: deleting shards no hold covers any more and manifests
//! whose owners' statements all ended, `grace` epochs after the end, each rechecked under its
//! claim (nothing renewed meanwhile is lost); then giving the space back ([`Store::reclaim`]).
//!
//! A pass walks the small `leases` rows in key order with a cursor ([`Collected::next`]), so
//! shards a batch found still held (renewed between the walk and the recheck) cannot bring the
//! walk back to them again. A row that does not parse is never a reason to delete: the shard
//! stays, the row is counted in [`Collected::damaged`] and logged, and the pass goes on.

use cairn_chunker::cids::{self, Cid};
use cairn_chunker::manifest::Provenance;
use cairn_policy::lease;
use cairn_proofs::epoch::Epochs;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::collections::HashMap;

use cairn_proofs::lease::LeaseStatement;

use super::layout::{
    CF_LEASES, CF_MANIFESTS, CF_META, CF_OBJECT_LEASES, CF_PROVENANCE, CF_RECEIPTS,
    CF_RECEIPTS_BY_NODE, CF_SIGNED, KEY_MANIFEST_BYTES, delta, parse_lease_row,
};
use super::{Store, StoreError};

/// What one garbage-collection step deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Shards (or manifests) deleted.
    pub items: u64,
    /// Bytes given back (shards only).
    pub bytes: u64,
    /// Whether candidates were left for the next step (the batch was full).
    pub more: bool,
    /// Where the next step goes on (shards: the walk continues from this key).
    pub next: Option<Vec<u8>>,
    /// Rows that did not parse: what they describe was kept.
    pub damaged: u64,
}

impl Store {
    /// Deletes at most `limit` held shards whose lease (the latest end over their holds) ended
    /// `grace` epochs before epoch `now`, each rechecked under its claim; a shard any hold
    /// still covers is never deleted. Walks the small `leases` rows.
    /// `from`: the [`Collected::next`] of the step before (`None`: from the start).
    pub fn collect_shards(
        &self,
        now: u64,
        grace: u64,
        epochs: Epochs,
        limit: usize,
        from: Option<&[u8]>,
    ) -> Result<Collected, StoreError> {
        let mut candidates = Vec::new();
        let mut out = Collected::default();
        let mode = match from {
            Some(k) => IteratorMode::From(k, Direction::Forward),
            None => IteratorMode::Start,
        };
        for item in self.db.iterator_cf(self.cf(CF_LEASES)?, mode) {
            let (key, row) = item?;
            let Ok((_, end, _)) = parse_lease_row(&row) else {
                out.damaged += 1;
                damaged("a shard's lease row", &key);
                continue;
            };
            if lease::collectable(end, now, grace) {
                if candidates.len() == lease::batch_len(candidates.len() + 1, limit) {
                    out.more = true;
                    out.next = Some(key.to_vec());
                    break;
                }
                candidates.push(key.to_vec());
            }
        }
        for key in candidates {
            let Ok(cid) = cids::from_bytes(&key) else {
                out.damaged += 1;
                damaged("a shard's key", &key);
                continue;
            };
            let _claim = self.claim(&key);
            // Again, under the claim: renewed meanwhile, or stored again, it stays.
            let Some(row) = self.db.get_pinned_cf(self.cf(CF_LEASES)?, &key)? else {
                continue;
            };
            let Ok((_, end, _)) = parse_lease_row(&row) else {
                continue;
            };
            drop(row);
            let holds = match self.holds_of_key(&key) {
                Ok(h) => h,
                Err(StoreError::Damaged(why)) => {
                    out.damaged += 1;
                    damaged(&format!("a hold ({why})"), &key);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let by_holds = lease::effective_end(holds.iter().map(|h| h.runs_through(epochs)));
            let live = !lease::collectable(end, now, grace)
                || by_holds.is_some_and(|e| !lease::collectable(e, now, grace));
            if live {
                continue;
            }
            match self.delete_claimed(&cid, WriteBatch::default()) {
                Ok(Some(size)) => {
                    out.items += 1;
                    out.bytes += size;
                }
                Ok(None) => {}
                Err(StoreError::Damaged(why)) => {
                    out.damaged += 1;
                    damaged(&format!("its outboard or size ({why})"), &key);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes at most `limit` manifests whose owners' statements (at least one) all ended
    /// `grace` epochs before epoch `now`, with their provenance, receipts and statements. A
    /// manifest no statement was ever kept for is kept (data from before leases).
    pub fn collect_objects(
        &self,
        now: u64,
        grace: u64,
        epochs: Epochs,
        limit: usize,
    ) -> Result<Collected, StoreError> {
        let mut ends: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
        let mut order = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OBJECT_LEASES)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let Some(object) = k.len().checked_sub(32).map(|n| k[..n].to_vec()) else {
                continue;
            };
            let Ok(s) = LeaseStatement::from_bytes(&v) else {
                continue;
            };
            let entry = ends.entry(object.clone()).or_insert_with(|| {
                order.push(object);
                Vec::new()
            });
            entry.push(lease::hold_end(s.end, epochs.at(s.signed_ms)));
        }
        let mut out = Collected::default();
        for object in order {
            if !lease::object_collectable(&ends[&object], now, grace) {
                continue;
            }
            if out.items as usize == limit {
                out.more = true;
                break;
            }
            let Ok(cid) = Cid::try_from(&object[..]) else {
                out.damaged += 1;
                damaged("a kept statement's object", &object);
                continue;
            };
            match self.collect_object(&cid, now, grace, epochs) {
                Ok(true) => out.items += 1,
                Ok(false) => {}
                Err(StoreError::Damaged(why)) => {
                    out.damaged += 1;
                    damaged(&format!("a manifest's rows ({why})"), &object);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes one object's manifest, provenance, signed-by rows, receipts and statements if
    /// its statements still all ended `grace` epochs before `now` (rechecked under its claim).
    fn collect_object(
        &self,
        cid: &Cid,
        now: u64,
        grace: u64,
        epochs: Epochs,
    ) -> Result<bool, StoreError> {
        let key = cid.to_bytes();
        let _claim = self.claim(&key);
        let statements = self.statements_of(cid, true)?;
        let ends: Vec<u64> = statements
            .iter()
            .map(|s| lease::hold_end(s.end, epochs.at(s.signed_ms)))
            .collect();
        if !lease::object_collectable(&ends, now, grace) {
            return Ok(false);
        }
        // Anyone may sign a statement: a stranger's can keep a manifest, never end it. It
        // goes only when one of its own signers (a provenance envelope's key) has said so.
        let signers: Vec<Vec<u8>> = self
            .envelopes(&key)?
            .iter()
            .filter_map(|e| Provenance::from_bytes(e).ok())
            .filter(|p| p.manifest == *cid)
            .map(|p| p.signer)
            .collect();
        if !statements
            .iter()
            .any(|s| signers.iter().any(|k| k[..] == s.owner.0[..]))
        {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let mut freed = self
            .db
            .get_pinned_cf(self.cf(CF_MANIFESTS)?, &key)?
            .map_or(0, |m| m.len() as u64);
        batch.delete_cf(self.cf(CF_MANIFESTS)?, &key);
        let prefixed = |cf: &str, batch: &mut WriteBatch, f: &mut dyn FnMut(&[u8], &[u8])| {
            let handle = self.cf(cf)?;
            let it = self
                .db
                .iterator_cf(handle, IteratorMode::From(&key, Direction::Forward));
            for item in it {
                let (k, v) = item?;
                if !k.starts_with(&key) {
                    break;
                }
                f(&k, &v);
                batch.delete_cf(handle, &k);
            }
            Ok::<(), StoreError>(())
        };
        let mut signed = Vec::new();
        prefixed(CF_PROVENANCE, &mut batch, &mut |_, v| {
            freed += v.len() as u64;
            if let Ok(p) = Provenance::from_bytes(v) {
                let mut k = p.signer.clone();
                #[allow(clippy::big_endian_bytes)] // the signed-by key, see put_manifest
                k.extend_from_slice(&p.time_ms.to_be_bytes());
                k.extend_from_slice(&key);
                signed.push(k);
            }
        })?;
        let mut by_node = Vec::new();
        prefixed(CF_RECEIPTS, &mut batch, &mut |k, _| {
            let rest = &k[key.len()..];
            if rest.len() == 64 {
                by_node.push([&rest[32..], &key[..], &rest[..32]].concat());
            }
        })?;
        prefixed(CF_OBJECT_LEASES, &mut batch, &mut |_, _| {})?;
        for k in signed {
            batch.delete_cf(self.cf(CF_SIGNED)?, k);
        }
        for k in by_node {
            batch.delete_cf(self.cf(CF_RECEIPTS_BY_NODE)?, k);
        }
        batch.merge_cf(
            self.cf(CF_META)?,
            KEY_MANIFEST_BYTES,
            delta(-(freed as i64)),
        );
        self.db
            .write_opt(batch, &self.write_opts())
            .map_err(|e| self.write_failed(e, 0))?;
        self.give_capacity(freed, true);
        Ok(true)
    }
}

impl Store {
    /// Gives the space of deleted shards back to the filesystem, at a cost bounded by what it
    /// frees. Returns the `shards` blob-file bytes before and after.
    ///
    /// 1. Flushes every column family: the write-ahead log holds each shard's bytes until all
    ///    of them are flushed, and the small ones fill (and so flush) slowly.
    /// 2. Compacts the `shards` column family with blob garbage collection off, so the
    ///    deletes' tombstones meet the keys they delete: blob files none of whose shards are
    ///    left are dropped, and only the small key-and-blob-index tables are rewritten.
    /// 3. Only if the blob files then hold at least as many dead bytes as live ones, compacts
    ///    again moving every live shard out of them (so each byte rewritten frees at least one).
    ///    Below that, RocksDB's own blob garbage collection moves the oldest files' live shards
    ///    once they are half dead.
    pub fn reclaim(&self) -> Result<(u64, u64), StoreError> {
        let cf = self.cf(super::layout::CF_SHARDS)?;
        let int = |name: &str| -> Result<u64, StoreError> {
            Ok(self.db.property_int_value_cf(cf, name)?.unwrap_or(0))
        };
        let before = int("rocksdb.total-blob-file-size")?;
        let all = super::layout::ALL_CFS
            .iter()
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>, _>>()?;
        self.db
            .flush_cfs_opt(&all, &rocksdb::FlushOptions::default())?;
        let compact = || {
            let mut options = rocksdb::CompactOptions::default();
            options.set_bottommost_level_compaction(
                rocksdb::BottommostLevelCompaction::ForceOptimized,
            );
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
        };
        // Set back even if the compaction failed: compaction itself reports no error.
        self.db
            .set_options_cf(cf, &[("enable_blob_garbage_collection", "false")])?;
        compact();
        self.db
            .set_options_cf(cf, &[("enable_blob_garbage_collection", "true")])?;
        let garbage = int("rocksdb.live-blob-file-garbage-size")?;
        let total = int("rocksdb.live-blob-file-size")?;
        if garbage > 0 && garbage.saturating_mul(2) >= total {
            self.db
                .set_options_cf(cf, &[("blob_garbage_collection_age_cutoff", "1.0")])?;
            compact();
            let cutoff = super::layout::BLOB_GC_AGE_CUTOFF.to_string();
            self.db
                .set_options_cf(cf, &[("blob_garbage_collection_age_cutoff", &cutoff)])?;
        }
        Ok((before, int("rocksdb.total-blob-file-size")?))
    }
}

/// Logs a row garbage collection kept because it does not parse.
fn damaged(what: &str, key: &[u8]) {
    let name = cids::from_bytes(key).map_or_else(|_| format!("key {key:02x?}"), |c| c.to_string());
    tracing::warn!(
        "garbage collection kept {name}: {what} does not parse (damaged on disk?); it is never \
         collected until the row is repaired or the shard deleted by hand"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::CF_HOLDS;
    use crate::store::testing::{epochs, open, shard};

    /// A damaged row keeps its shard and is counted once; the walk goes on past it and past
    /// every batch, so one bad row never stops collection.
    #[test]
    fn damaged_rows_are_kept_and_counted_and_the_walk_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let mut held = Vec::new();
        for seed in 1..=6u8 {
            let (cid, data) = shard(10_000, seed);
            store.put_shard(&cid, &data).unwrap();
            store.hold_upload(&cid, 1, 10, epochs()).unwrap();
            held.push(cid);
        }
        held.sort_by_key(|c| c.to_bytes());
        let db = &store.db;
        let bad_hold = [held[1].to_bytes(), vec![0xff]].concat();
        db.put_cf(store.cf(CF_HOLDS).unwrap(), bad_hold, b"x")
            .unwrap();
        db.put_cf(store.cf(CF_LEASES).unwrap(), held[3].to_bytes(), b"short")
            .unwrap();
        let (mut items, mut damaged, mut steps) = (0, 0, 0);
        let mut from: Option<Vec<u8>> = None;
        loop {
            let c = store
                .collect_shards(14, 3, epochs(), 1, from.as_deref())
                .unwrap();
            items += c.items;
            damaged += c.damaged;
            steps += 1;
            assert!(steps < 20, "the walk does not end");
            match c.next {
                Some(next) if c.more => from = Some(next),
                _ => break,
            }
        }
        assert_eq!((items, damaged), (4, 2));
        for (i, cid) in held.iter().enumerate() {
            assert_eq!(store.has_shard(cid), i == 1 || i == 3, "shard {i}");
        }
    }

    /// A statement that does not parse might be the live one: its manifest stays, however
    /// ended the others are.
    #[test]
    fn a_damaged_statement_keeps_its_manifest() {
        use cairn_chunker::manifest::Provenance;
        use cairn_proofs::lease::LeaseStatement;
        use ed25519_dalek::SigningKey;

        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let signer = SigningKey::from_bytes(&[1; 32]);
        let mut manifests = Vec::new();
        for seed in [3, 4] {
            let (manifest, bytes) = crate::store::testing::manifest(seed);
            let envelope = Provenance::sign(manifest, &signer, 1_000, None).to_bytes();
            store
                .put_manifest(
                    &manifest,
                    cairn_wire::protocol::ManifestKind::Object,
                    &bytes,
                    &[envelope],
                )
                .unwrap();
            let ended = LeaseStatement::release(&signer, &manifest.to_bytes(), 1_000);
            assert!(store.keep_statement(&ended).unwrap());
            manifests.push(manifest);
        }
        // Another owner's statement on the first, damaged on disk.
        let row = [manifests[0].to_bytes(), vec![9; 32]].concat();
        store
            .db
            .put_cf(store.cf(CF_OBJECT_LEASES).unwrap(), row, b"garbage")
            .unwrap();
        let c = store.collect_objects(100, 2, epochs(), 10).unwrap();
        assert_eq!((c.items, c.damaged), (1, 1));
        store.get_manifest(&manifests[0]).unwrap();
        assert!(matches!(
            store.get_manifest(&manifests[1]),
            Err(StoreError::NotFound { .. })
        ));
    }
}
