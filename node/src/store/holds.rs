//! Holds: who a held shard is kept for, and until when.
//!
//! A shard holder keeps, per shard, one *hold* per (object, owner) a lease statement named
//! ([`Store::apply_statement`]), plus the *upload hold* the node took itself when the shard was
//! stored ([`Store::hold_upload`]: object empty, owner all zero, `signed_ms` 0). The shard's
//! lease row (`leases`) is kept at the latest end over its holds
//! ([`cairn_policy::lease::effective_end`], a release counting as ended in the epoch it was
//! signed), never below the lease's start. Unlike before holds, a lease can shrink: a release
//! by the shard's only owner brings it down to the release's epoch. A storage receipt signed
//! for a longer lease before that is void by the owner's own signature (the release), and the
//! node answers the release with a receipt for the shorter lease.
//!
//! A keeper (a node holding an object's manifest) keeps the owners' latest statements on the
//! object in `object-leases` ([`Store::keep_statement`]).
//!
//! Garbage collection (`collect.rs`: [`Store::collect_shards`], [`Store::collect_objects`])
//! deletes shards and manifests whose holds or statements all ended `grace` epochs ago.
//!
//! These are inherent methods of the RocksDB [`Store`] only: [`MemStore`](super::MemStore)
//! keeps leases but no holds, statements or garbage collection (its [`ShardStore::hold_upload`]
//! is the plain lease extension).
//!
//! [`ShardStore::hold_upload`]: super::ShardStore::hold_upload

use cairn_chunker::cids::Cid;
use cairn_policy::lease;
use cairn_proofs::epoch::Epochs;
use cairn_proofs::lease::LeaseStatement;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::layout::{
    CF_HOLDS, CF_LEASES, CF_MANIFESTS, CF_OBJECT_LEASES, CF_OUTBOARDS, lease_row, parse_lease_row,
    u64_le,
};
use super::leases::checked_size;
use super::{Store, StoreError};

/// A held shard's size and lease row (first and last epoch), if it has one.
type ShardLease = (u64, Option<(u64, u64)>);

/// The owner of upload holds: no key (all zero).
pub const UPLOAD_OWNER: [u8; 32] = [0; 32];

/// One hold on a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The object it is held for (a manifest CID's bytes); empty for the upload hold.
    pub object: Vec<u8>,
    /// Whose hold: the owner's key, [`UPLOAD_OWNER`] for the upload hold.
    pub owner: [u8; 32],
    /// The last epoch it runs through; 0 if released.
    pub end: u64,
    /// When the statement was signed (unix ms); 0 for the upload hold.
    pub signed_ms: u64,
}

impl Hold {
    /// The epoch it runs through, a release counting as ended in the epoch it was signed.
    pub fn runs_through(&self, epochs: Epochs) -> u64 {
        lease::hold_end(self.end, epochs.at(self.signed_ms))
    }
}

/// What [`Store::apply_statement`] left on a shard: its lease and size, and whether the
/// statement changed its hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The lease's first epoch.
    pub start: u64,
    /// The lease's last epoch (the latest end over the holds).
    pub end: u64,
    /// The shard's size.
    pub size: u64,
    /// Whether the hold was written (`false`: the statement was no newer than the kept one).
    pub changed: bool,
}

/// The `holds` key: `shard CID ‖ u8 object length ‖ object ‖ owner`.
fn hold_key(shard: &[u8], object: &[u8], owner: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(shard.len() + 1 + object.len() + 32);
    k.extend_from_slice(shard);
    k.push(object.len() as u8);
    k.extend_from_slice(object);
    k.extend_from_slice(owner);
    k
}

/// A hold row: `end ‖ signed_ms`, `u64 LE` each.
fn hold_row(end: u64, signed_ms: u64) -> [u8; 16] {
    let mut row = [0u8; 16];
    row[..8].copy_from_slice(&end.to_le_bytes());
    row[8..].copy_from_slice(&signed_ms.to_le_bytes());
    row
}

/// A hold read back from its key's tail (after the shard CID) and row.
fn parse_hold(tail: &[u8], row: &[u8]) -> Result<Hold, StoreError> {
    let damaged = || StoreError::Damaged(format!("a hold of {} + {} bytes", tail.len(), row.len()));
    let (&len, rest) = tail.split_first().ok_or_else(damaged)?;
    let len = len as usize;
    if rest.len() != len + 32 || row.len() != 16 {
        return Err(damaged());
    }
    let mut owner = [0u8; 32];
    owner.copy_from_slice(&rest[len..]);
    Ok(Hold {
        object: rest[..len].to_vec(),
        owner,
        end: u64_le(&row[..8])?,
        signed_ms: u64_le(&row[8..])?,
    })
}

/// The `object-leases` key: `object CID ‖ owner`.
fn statement_key(object: &[u8], owner: &[u8; 32]) -> Vec<u8> {
    [object, &owner[..]].concat()
}

impl Store {
    /// Every hold on the shard keyed `key`, by object and owner.
    pub(super) fn holds_of_key(&self, key: &[u8]) -> Result<Vec<Hold>, StoreError> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_HOLDS)?,
            IteratorMode::From(key, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(key) {
                break;
            }
            out.push(parse_hold(&k[key.len()..], &v)?);
        }
        Ok(out)
    }

    /// The hold of `(object, owner)` on the shard keyed `key`, if it has one: a point read,
    /// however many objects share the shard.
    fn hold_of(
        &self,
        key: &[u8],
        object: &[u8],
        owner: &[u8; 32],
    ) -> Result<Option<Hold>, StoreError> {
        let k = hold_key(key, object, owner);
        match self.db.get_pinned_cf(self.cf(CF_HOLDS)?, &k)? {
            Some(row) => Ok(Some(parse_hold(&k[key.len()..], &row)?)),
            None => Ok(None),
        }
    }

    /// Whether the shard keyed `key` has any hold (one seek).
    fn has_holds(&self, key: &[u8]) -> Result<bool, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_HOLDS)?);
        it.seek(key);
        it.status()?;
        Ok(it.key().is_some_and(|k| k.starts_with(key)))
    }

    /// The shard keyed `key`: its size and lease row, `None` if it is not held.
    fn shard_lease(&self, cid: &Cid, key: &[u8]) -> Result<Option<ShardLease>, StoreError> {
        let Some(ob) = self.db.get_pinned_cf(self.cf(CF_OUTBOARDS)?, key)? else {
            return Ok(None);
        };
        let size = checked_size(cid, u64_le(&ob)?)?;
        drop(ob);
        let lease = match self.db.get_pinned_cf(self.cf(CF_LEASES)?, key)? {
            Some(row) => {
                let (s, e, _) = parse_lease_row(&row)?;
                Some((s, e))
            }
            None => None,
        };
        Ok(Some((size, lease)))
    }

    /// The kept hold of `(object, owner)` on a shard leased as `lease`; for the upload hold of
    /// a shard leased before holds existed (a lease, no hold at all), that lease as an
    /// open-ended upload hold (see [`Store::holds_for_update`]).
    fn kept_hold(
        &self,
        key: &[u8],
        object: &[u8],
        owner: &[u8; 32],
        lease: Option<(u64, u64)>,
    ) -> Result<Option<Hold>, StoreError> {
        let kept = self.hold_of(key, object, owner)?;
        if kept.is_none()
            && object.is_empty()
            && *owner == UPLOAD_OWNER
            && lease.is_some()
            && !self.has_holds(key)?
        {
            return Ok(Some(Hold {
                object: Vec::new(),
                owner: UPLOAD_OWNER,
                end: u64::MAX,
                signed_ms: 0,
            }));
        }
        Ok(kept)
    }

    /// Writes one hold that did not shrink and the lease row it makes: the lease's end is the
    /// latest over the holds, and the others are as they were, so it is the kept end or this
    /// hold's, whichever is later (never below `start`). A write of one row, however many
    /// objects share the shard.
    fn write_grown_hold(
        &self,
        key: &[u8],
        hold: &Hold,
        start: u64,
        kept_end: Option<u64>,
        size: u64,
        epochs: Epochs,
    ) -> Result<(u64, u64), StoreError> {
        let end = kept_end
            .unwrap_or(0)
            .max(hold.runs_through(epochs))
            .max(start);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_HOLDS)?,
            hold_key(key, &hold.object, &hold.owner),
            hold_row(hold.end, hold.signed_ms),
        );
        batch.put_cf(self.cf(CF_LEASES)?, key, lease_row(start, end, size));
        // Always written, synced: the upload path commits a shard unsynced and relies on this
        // write to make it durable before its receipt is signed (`synced_by_next_write`).
        self.db
            .write_opt(batch, &self.write_opts())
            .map_err(|e| self.write_failed(e, 0))?;
        Ok((start, end))
    }

    /// Every hold on a shard (none if it is not held, or held from before holds).
    pub fn holds(&self, shard: &Cid) -> Result<Vec<Hold>, StoreError> {
        self.holds_of_key(&shard.to_bytes())
    }

    /// Adds deletes of every hold on the shard keyed `key` to `batch`.
    pub(super) fn delete_holds(
        &self,
        key: &[u8],
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        let holds = self.cf(CF_HOLDS)?;
        let it = self
            .db
            .iterator_cf(holds, IteratorMode::From(key, Direction::Forward));
        for item in it {
            let (k, _) = item?;
            if !k.starts_with(key) {
                break;
            }
            batch.delete_cf(holds, k);
        }
        Ok(())
    }

    /// The holds of a shard about to gain one, its lease row, and its size; the lease row of a
    /// shard with no hold yet (leased before holds) becomes its upload hold. `None` if the
    /// shard is not held.
    #[allow(clippy::type_complexity)]
    fn holds_for_update(
        &self,
        cid: &Cid,
        key: &[u8],
    ) -> Result<Option<(Vec<Hold>, Option<(u64, u64)>, u64)>, StoreError> {
        let Some((size, lease)) = self.shard_lease(cid, key)? else {
            return Ok(None);
        };
        let mut holds = self.holds_of_key(key)?;
        // A shard with a lease but no hold was stored before holds existed: its owners could
        // not have signed a statement, so it is held open-ended (never collected on its own),
        // like data from before leases. An upgrade deletes nothing.
        if holds.is_empty() && lease.is_some() {
            holds.push(Hold {
                object: Vec::new(),
                owner: UPLOAD_OWNER,
                end: u64::MAX,
                signed_ms: 0,
            });
        }
        Ok(Some((holds, lease, size)))
    }

    /// Writes `holds` (all of them: unchanged ones are rewritten as they are) and the lease row
    /// they make: `start`, and the latest end over the holds, never below `start`.
    fn write_holds(
        &self,
        key: &[u8],
        holds: &[Hold],
        start: u64,
        size: u64,
        epochs: Epochs,
    ) -> Result<(u64, u64), StoreError> {
        let end = lease::effective_end(holds.iter().map(|h| h.runs_through(epochs)))
            .unwrap_or(start)
            .max(start);
        let cf = self.cf(CF_HOLDS)?;
        let mut batch = WriteBatch::default();
        for h in holds {
            batch.put_cf(
                cf,
                hold_key(key, &h.object, &h.owner),
                hold_row(h.end, h.signed_ms),
            );
        }
        batch.put_cf(self.cf(CF_LEASES)?, key, lease_row(start, end, size));
        // Always written, synced: the upload path commits a shard unsynced and relies on this
        // write to make it durable before its receipt is signed (`synced_by_next_write`).
        self.db
            .write_opt(batch, &self.write_opts())
            .map_err(|e| self.write_failed(e, 0))?;
        Ok((start, end))
    }

    /// Records the upload hold on a held shard: leased from `start` through `end`, or the
    /// upload hold it has extended to the later end (the lease keeps its earliest start).
    /// Returns the lease now held, durably. [`StoreError::NotFound`] if the shard is not held,
    /// [`StoreError::BadLease`] if `end < start`.
    pub fn hold_upload(
        &self,
        cid: &Cid,
        start: u64,
        end: u64,
        epochs: Epochs,
    ) -> Result<(u64, u64), StoreError> {
        super::leases::check_lease(cid, start, end)?;
        let key = cid.to_bytes();
        let _claim = self.claim(&key);
        let (size, lease) = self
            .shard_lease(cid, &key)?
            .ok_or(StoreError::NotFound { cid: *cid })?;
        // Only the upload hold changes, and only ever later: one row is read and written,
        // however many objects hold the shard.
        let mut hold = self
            .kept_hold(&key, &[], &UPLOAD_OWNER, lease)?
            .unwrap_or(Hold {
                object: Vec::new(),
                owner: UPLOAD_OWNER,
                end,
                signed_ms: 0,
            });
        hold.end = hold.end.max(end);
        let start = lease.map_or(start, |(s, _)| s.min(start));
        self.write_grown_hold(&key, &hold, start, lease.map(|(_, e)| e), size, epochs)
    }

    /// Applies a verified lease statement to a held shard: its owner's hold for the object is
    /// set to the statement if the statement supersedes the one kept (nothing is written
    /// otherwise), and the lease to the latest end over the shard's holds, which a release may
    /// shrink. `None` if the shard is not held, or not leased yet (nothing to hold it under).
    pub fn apply_statement(
        &self,
        shard: &Cid,
        statement: &LeaseStatement,
        epochs: Epochs,
    ) -> Result<Option<Applied>, StoreError> {
        let key = shard.to_bytes();
        let _claim = self.claim(&key);
        let Some((size, Some((start, end)))) = self.shard_lease(shard, &key)? else {
            return Ok(None);
        };
        // A renewal means a keeper keeps this very copy: it is not spare (any more).
        if !statement.is_release() {
            self.unspare(&key);
        }
        let owner = statement.owner.0;
        let wanted = Hold {
            object: statement.object.clone(),
            owner,
            end: statement.end,
            signed_ms: statement.signed_ms,
        };
        let kept = self.kept_hold(&key, &statement.object, &owner, Some((start, end)))?;
        let changed = kept
            .as_ref()
            .is_none_or(|h| (wanted.signed_ms, wanted.end) > (h.signed_ms, h.end));
        if !changed {
            return Ok(Some(Applied {
                start,
                end,
                size,
                changed,
            }));
        }
        // A hold that grows (a new one, a renewal) moves the lease's end by itself: one row.
        // One that shrinks (a release) needs the latest end over all the others, and a shard
        // leased before holds existed gets its lease written down as its upload hold first.
        let grows = kept
            .as_ref()
            .is_none_or(|h| wanted.runs_through(epochs) >= h.runs_through(epochs))
            && self.has_holds(&key)?;
        let (start, end) = if grows {
            self.write_grown_hold(&key, &wanted, start, Some(end), size, epochs)?
        } else {
            let Some((mut holds, _, _)) = self.holds_for_update(shard, &key)? else {
                return Ok(None);
            };
            match holds
                .iter_mut()
                .find(|h| h.object == statement.object && h.owner == owner)
            {
                Some(h) => *h = wanted,
                None => holds.push(wanted),
            }
            self.write_holds(&key, &holds, start, size, epochs)?
        };
        Ok(Some(Applied {
            start,
            end,
            size,
            changed,
        }))
    }

    /// Keeps a verified statement beside the manifest it names, if it supersedes the one kept
    /// for its owner (or none is): `true` if written. [`StoreError::NotFound`] if the node does
    /// not hold that manifest (or the statement names no CID).
    pub fn keep_statement(&self, statement: &LeaseStatement) -> Result<bool, StoreError> {
        let object = Cid::try_from(&statement.object[..])
            .map_err(|e| StoreError::Damaged(format!("a lease statement names no CID ({e})")))?;
        let key = object.to_bytes();
        let _claim = self.claim(&key);
        if self
            .db
            .get_pinned_cf(self.cf(CF_MANIFESTS)?, &key)?
            .is_none()
        {
            return Err(StoreError::NotFound { cid: object });
        }
        let cf = self.cf(CF_OBJECT_LEASES)?;
        let skey = statement_key(&key, &statement.owner.0);
        if let Some(kept) = self.db.get_pinned_cf(cf, &skey)?
            && let Ok(kept) = LeaseStatement::from_bytes(&kept)
            && !statement.supersedes(&kept)
        {
            return Ok(false);
        }
        let bytes = statement.to_bytes();
        let len = (bytes.len() + skey.len()) as u64;
        self.with_disk_room(len, || {
            self.db
                .put_cf_opt(cf, &skey, &bytes, &self.write_opts())
                .map_err(|e| self.write_failed(e, len))
        })?;
        Ok(true)
    }

    /// The statements kept for an object, by owner (damaged rows are passed over).
    pub fn statements(&self, object: &Cid) -> Result<Vec<LeaseStatement>, StoreError> {
        self.statements_of(object, false)
    }

    /// [`Store::statements`]; `strict`: a statement that does not parse is
    /// [`StoreError::Damaged`] (garbage collection: it might be the one that keeps the object).
    pub(super) fn statements_of(
        &self,
        object: &Cid,
        strict: bool,
    ) -> Result<Vec<LeaseStatement>, StoreError> {
        let key = object.to_bytes();
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_OBJECT_LEASES)?,
            IteratorMode::From(&key, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&key) {
                break;
            }
            if k.len() != key.len() + 32 {
                continue;
            }
            match LeaseStatement::from_bytes(&v) {
                Ok(s) => out.push(s),
                Err(e) if strict => {
                    return Err(StoreError::Damaged(format!("a kept lease statement: {e}")));
                }
                Err(e) => tracing::warn!(%object, "a kept lease statement is damaged: {e}"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use cairn_chunker::cids;
    use cairn_chunker::manifest::Provenance;
    use cairn_proofs::NodeKey;
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::store::testing::{epochs, open, shard};

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    impl Store {
        pub(in crate::store) fn has_shard(&self, cid: &Cid) -> bool {
            matches!(
                self.has(&[*cid]).unwrap()[0],
                cairn_wire::protocol::Holding::Intact(_)
            )
        }
    }

    fn object(seed: u8) -> Vec<u8> {
        cids::dag_cbor(&[seed; 10]).to_bytes()
    }

    #[test]
    fn the_lease_is_the_latest_hold_and_a_release_ends_only_its_owners() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard(30_000, 1);
        store.put_shard(&cid, &data).unwrap();
        assert_eq!(store.hold_upload(&cid, 10, 20, epochs()).unwrap(), (10, 20));
        let (a, b) = (key(1), key(2));
        let x = object(1);
        // A renews to 100: the lease grows.
        let ra = LeaseStatement::sign(&a, &x, 100, 11_000);
        let got = store.apply_statement(&cid, &ra, epochs()).unwrap().unwrap();
        assert_eq!(
            (got.start, got.end, got.size, got.changed),
            (10, 100, 30_000, true)
        );
        // The same statement again changes nothing.
        let again = store.apply_statement(&cid, &ra, epochs()).unwrap().unwrap();
        assert!(!again.changed);
        assert_eq!(again.end, 100);
        // B holds it for the same object, to 60; then A releases at epoch 30.
        let rb = LeaseStatement::sign(&b, &x, 60, 12_000);
        assert_eq!(
            store
                .apply_statement(&cid, &rb, epochs())
                .unwrap()
                .unwrap()
                .end,
            100
        );
        let release = LeaseStatement::release(&a, &x, 30_000);
        let after = store
            .apply_statement(&cid, &release, epochs())
            .unwrap()
            .unwrap();
        assert_eq!(after.end, 60, "B's hold stands");
        assert_eq!(store.lease(&cid).unwrap(), Some((10, 60)));
        // An older statement of A's does not undo the release.
        let stale = LeaseStatement::sign(&a, &x, 500, 20_000);
        assert!(
            !store
                .apply_statement(&cid, &stale, epochs())
                .unwrap()
                .unwrap()
                .changed
        );
        // B releases too: the lease falls to the latest release epoch (the upload hold ended).
        let rb2 = LeaseStatement::release(&b, &x, 40_000);
        assert_eq!(
            store
                .apply_statement(&cid, &rb2, epochs())
                .unwrap()
                .unwrap()
                .end,
            40
        );
        let holds = store.holds(&cid).unwrap();
        assert_eq!(holds.len(), 3, "{holds:?}");
        assert!(holds.iter().any(|h| h.owner == UPLOAD_OWNER && h.end == 20));
        assert!(
            holds
                .iter()
                .any(|h| h.owner == NodeKey::of(&a).0 && h.end == 0)
        );
        // A shard not held takes no hold.
        let (other, _) = shard(1_000, 9);
        assert_eq!(store.apply_statement(&other, &ra, epochs()).unwrap(), None);
    }

    #[test]
    fn a_release_of_one_object_leaves_another_objects_hold_on_a_shared_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard(30_000, 2);
        store.put_shard(&cid, &data).unwrap();
        store.hold_upload(&cid, 1, 2, epochs()).unwrap();
        let a = key(1);
        for (obj, end) in [(object(1), 80), (object(2), 90)] {
            let s = LeaseStatement::sign(&a, &obj, end, 3_000);
            store.apply_statement(&cid, &s, epochs()).unwrap();
        }
        let rel = LeaseStatement::release(&a, &object(2), 4_000);
        assert_eq!(
            store
                .apply_statement(&cid, &rel, epochs())
                .unwrap()
                .unwrap()
                .end,
            80
        );
        // Nothing collectable while object 1's hold runs; then it is, after the grace.
        assert_eq!(
            store
                .collect_shards(85, 5, epochs(), 100, None)
                .unwrap()
                .items,
            0
        );
        assert_eq!(
            store
                .collect_shards(86, 5, epochs(), 100, None)
                .unwrap()
                .items,
            1
        );
        assert!(!store.has_shard(&cid));
        assert_eq!(store.stats().used, 0);
        assert!(
            store.holds(&cid).unwrap().is_empty(),
            "holds go with the shard"
        );
    }

    #[test]
    fn collection_is_exact_at_the_grace_boundary_and_bounded_by_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let mut held = Vec::new();
        for seed in 1..=5u8 {
            let (cid, data) = shard(20_000, seed);
            store.put_shard(&cid, &data).unwrap();
            store.hold_upload(&cid, 1, 10, epochs()).unwrap();
            held.push(cid);
        }
        // One is renewed by an owner.
        let s = LeaseStatement::sign(&key(3), &object(1), 50, 2_000);
        store.apply_statement(&held[0], &s, epochs()).unwrap();
        // A shard held from before leases (open-ended) is never collected.
        let (old, old_data) = shard(20_000, 9);
        store.put_shard(&old, &old_data).unwrap();
        store.extend_lease(&old, 0, u64::MAX).unwrap();
        assert_eq!(
            store
                .collect_shards(13, 3, epochs(), 100, None)
                .unwrap()
                .items,
            0
        );
        let first = store.collect_shards(14, 3, epochs(), 3, None).unwrap();
        assert_eq!((first.items, first.bytes, first.more), (3, 60_000, true));
        let second = store
            .collect_shards(14, 3, epochs(), 3, first.next.as_deref())
            .unwrap();
        assert_eq!((second.items, second.more), (1, false));
        assert!(store.has_shard(&held[0]));
        assert!(store.has_shard(&old));
        assert_eq!(store.stats().used, 40_000);
    }

    #[test]
    fn a_shard_leased_before_holds_keeps_that_lease_as_its_upload_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (cid, data) = shard(20_000, 4);
        store.put_shard(&cid, &data).unwrap();
        store.extend_lease(&cid, 5, 700).unwrap();
        let s = LeaseStatement::sign(&key(1), &object(1), 100, 6_000);
        let got = store.apply_statement(&cid, &s, epochs()).unwrap().unwrap();
        // Held open-ended: an upgrade never collects what was stored before holds.
        assert_eq!((got.start, got.end), (5, u64::MAX));
        let rel = LeaseStatement::release(&key(1), &object(1), 7_000);
        assert_eq!(
            store
                .apply_statement(&cid, &rel, epochs())
                .unwrap()
                .unwrap()
                .end,
            u64::MAX
        );
    }

    #[test]
    fn keepers_keep_the_latest_statement_per_owner_and_collect_ended_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (manifest, bytes) = crate::store::testing::manifest(3);
        let statement = LeaseStatement::sign(&key(1), &manifest.to_bytes(), 20, 1_000);
        // Not kept here: refused.
        assert!(matches!(
            store.keep_statement(&statement),
            Err(StoreError::NotFound { .. })
        ));
        // Its uploader (the envelope's signer) is key 1.
        let envelope = Provenance::sign(manifest, &key(1), 1_000, None).to_bytes();
        store
            .put_manifest(
                &manifest,
                cairn_wire::protocol::ManifestKind::Object,
                &bytes,
                &[envelope],
            )
            .unwrap();
        assert!(store.keep_statement(&statement).unwrap());
        assert!(!store.keep_statement(&statement).unwrap(), "idempotent");
        let older = LeaseStatement::sign(&key(1), &manifest.to_bytes(), 90, 500);
        assert!(!store.keep_statement(&older).unwrap());
        let other = LeaseStatement::sign(&key(2), &manifest.to_bytes(), 30, 1_000);
        assert!(store.keep_statement(&other).unwrap());
        assert_eq!(store.statements(&manifest).unwrap().len(), 2);
        // A stranger's ended statement alone never makes a manifest collectable.
        let (lone, lone_bytes) = crate::store::testing::manifest(5);
        let envelope = Provenance::sign(lone, &key(1), 1_000, None).to_bytes();
        store
            .put_manifest(
                &lone,
                cairn_wire::protocol::ManifestKind::Object,
                &lone_bytes,
                &[envelope],
            )
            .unwrap();
        let stranger = LeaseStatement::release(&key(3), &lone.to_bytes(), 1_000);
        assert!(store.keep_statement(&stranger).unwrap());
        // Collected once every statement ended the grace ago (the stranger's lone release
        // collects nothing).
        assert_eq!(store.collect_objects(32, 2, epochs(), 10).unwrap().items, 0);
        let lone_size = {
            let (m, envs) = store.get_manifest(&lone).unwrap();
            (m.len() + envs.iter().map(Vec::len).sum::<usize>()) as u64
        };
        assert!(store.stats().manifests > lone_size);
        assert_eq!(store.collect_objects(33, 2, epochs(), 10).unwrap().items, 1);
        assert!(matches!(
            store.get_manifest(&manifest),
            Err(StoreError::NotFound { .. })
        ));
        // Its manifest and envelope give their capacity back, on disk too.
        assert_eq!(store.stats().manifests, lone_size);
        let store = store.reopen_for_test();
        assert_eq!(store.stats().manifests, lone_size);
        assert!(store.statements(&manifest).unwrap().is_empty());
        store.get_manifest(&lone).unwrap();
    }

    #[test]
    fn a_manifest_no_statement_names_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        let (manifest, bytes) = crate::store::testing::manifest(4);
        store
            .put_manifest(
                &manifest,
                cairn_wire::protocol::ManifestKind::Object,
                &bytes,
                &[],
            )
            .unwrap();
        assert_eq!(
            store
                .collect_objects(u64::MAX, 0, epochs(), 10)
                .unwrap()
                .items,
            0
        );
        store.get_manifest(&manifest).unwrap();
    }
}
