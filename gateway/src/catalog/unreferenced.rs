//! CIDs that a record stopped referencing: a deleted or overwritten key's object, an aborted
//! upload's parts, a completed upload's parts (the final object names their stripes, not their
//! manifests), a part uploaded again under its number. Each is noted in the same atomic batch
//! as the change that dropped it, so a crash loses none; the gateway's release sweep later
//! releases those that no record references any more (the same bytes may be under another
//! key) and forgets the rest (`crate::leases`).
//!
//! Each note is a row of its own, `CID ‖ sequence number`, so a note written while a sweep
//! deals with an older one for the same CID is never forgotten with it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use rocksdb::{Direction, IteratorMode, WriteBatch};

use cairn_chunker::Cid;

use super::keys::{CF_OBJECTS, CF_PARTS, CF_UNREFERENCED, dec};
use super::{Catalog, CatalogError, ObjectRecord, PartRecord};
use crate::s3::now_ms;

/// A CID that lost a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The CID.
    pub cid: Cid,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Its row, for [`Catalog::forget_unreferenced`].
    pub key: Vec<u8>,
}

impl Catalog {
    /// Notes in `batch` that `cid` lost a reference.
    pub(super) fn note_unreferenced(
        &self,
        batch: &mut WriteBatch,
        cid: &Cid,
    ) -> Result<(), CatalogError> {
        let seq = self.note_seq.fetch_add(1, Ordering::Relaxed);
        let mut key = cid.to_bytes();
        key.extend_from_slice(&seq.to_le_bytes());
        batch.put_cf(self.cf(CF_UNREFERENCED)?, key, now_ms().to_le_bytes());
        Ok(())
    }

    /// Notes in `batch` that the object at `object_key` (if any) loses its reference, unless
    /// `keeps` names the same CID. Returns whether there was an object. A record that does not
    /// decode is replaced without a note (its CID is not known): its object is then held only
    /// until the gateway's last renewal of it ends.
    pub(super) fn note_replaced(
        &self,
        batch: &mut WriteBatch,
        object_key: &[u8],
        keeps: Option<&Cid>,
    ) -> Result<bool, CatalogError> {
        let Some(old) = self.db.get_pinned_cf(self.cf(CF_OBJECTS)?, object_key)? else {
            return Ok(false);
        };
        match dec::<ObjectRecord>(&old) {
            Ok(record) => {
                if let Some(cid) = record.location.cid()
                    && Some(cid) != keeps
                {
                    self.note_unreferenced(batch, cid)?;
                }
            }
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(object_key),
                "a damaged catalog record was replaced; its object cannot be released and is \
                 collected when the gateway's lease on it ends: {e}"
            ),
        }
        Ok(true)
    }

    /// Notes that `cids` lost a reference held outside the records (catalog exports the
    /// gateway no longer keeps).
    pub fn unreference(&self, cids: &[Cid]) -> Result<(), CatalogError> {
        let mut batch = WriteBatch::default();
        for cid in cids {
            self.note_unreferenced(&mut batch, cid)?;
        }
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))
    }

    /// Up to `limit` notes, in row order from `from` (inclusive; `None`: the first), and the
    /// row to go on from next time (`None`: these were the last). Rows that do not decode are
    /// dropped.
    pub fn unreferenced(
        &self,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Note>, Option<Vec<u8>>), CatalogError> {
        let cf = self.cf(CF_UNREFERENCED)?;
        let mode = match from {
            Some(k) => IteratorMode::From(k, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let mut next = None;
        for item in self.db.iterator_cf(cf, mode) {
            let (k, v) = item?;
            if out.len() >= limit {
                next = Some(k.to_vec());
                break;
            }
            let at_ms = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            match k
                .len()
                .checked_sub(8)
                .and_then(|n| Cid::try_from(&k[..n]).ok())
            {
                Some(cid) => out.push(Note {
                    cid,
                    at_ms,
                    key: k.to_vec(),
                }),
                None => damaged.push(k),
            }
        }
        for k in damaged {
            self.db.delete_cf(cf, k)?;
        }
        Ok((out, next))
    }

    /// Which of `cids` a record references (objects, packs, parts of open uploads): one read
    /// of the catalog, a record at a time. A record that does not decode fails it (it might
    /// reference any of them).
    pub fn which_referenced(&self, cids: &HashSet<Cid>) -> Result<HashSet<Cid>, CatalogError> {
        let mut found = HashSet::new();
        if cids.is_empty() {
            return Ok(found);
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_OBJECTS)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            let r: ObjectRecord = dec(&v)?;
            if let Some(c) = r.location.cid()
                && cids.contains(c)
            {
                found.insert(*c);
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_PARTS)?, IteratorMode::Start) {
            let (_, v) = item?;
            let p: PartRecord = dec(&v)?;
            if cids.contains(&p.cid) {
                found.insert(p.cid);
            }
        }
        Ok(found)
    }

    /// How many notes wait for the release sweep.
    pub fn unreferenced_count(&self) -> Result<u64, CatalogError> {
        let cf = self.cf(CF_UNREFERENCED)?;
        let mut n = 0;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Forgets these notes (by [`Note::key`]): released, referenced again, or stale.
    pub fn forget_unreferenced(&self, keys: &[Vec<u8>]) -> Result<(), CatalogError> {
        let cf = self.cf(CF_UNREFERENCED)?;
        let mut batch = WriteBatch::default();
        for k in keys {
            batch.delete_cf(cf, k);
        }
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))
    }
}

#[cfg(test)]
mod tests {
    use cairn_chunker::Cid;

    use crate::catalog::testing::{rec, upload_of};
    use crate::catalog::{
        BucketRecord, Catalog, Location, ObjectRecord, PartRecord, WriteCondition,
    };

    fn cid(n: u8) -> Cid {
        cairn_chunker::cids::dag_cbor(&[n])
    }

    fn record(location: Location) -> ObjectRecord {
        ObjectRecord { location, ..rec(0) }
    }

    fn part(c: Cid) -> PartRecord {
        PartRecord {
            cid: c,
            size: 1,
            etag: "p".into(),
            modified_ms: 1,
            hashed_at: None,
            nodes: Vec::new(),
        }
    }

    fn noted(c: &Catalog) -> Vec<Cid> {
        let mut v: Vec<Cid> = c
            .unreferenced(None, 100)
            .unwrap()
            .0
            .into_iter()
            .map(|n| n.cid)
            .collect();
        v.sort();
        v
    }

    fn sorted(mut v: Vec<Cid>) -> Vec<Cid> {
        v.sort();
        v
    }

    #[test]
    fn only_what_a_record_references_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.create_bucket("b", &BucketRecord { created_ms: 1 })
            .unwrap();
        c.put_object("b", "k", &rec(1)).unwrap();
        c.create_upload("u", &upload_of("m")).unwrap();
        c.put_part("u", 1, &part(cid(2))).unwrap();
        let asked: std::collections::HashSet<Cid> = [cid(1), cid(2), cid(3)].into();
        assert_eq!(c.which_referenced(&asked).unwrap(), [cid(1), cid(2)].into());
        assert!(c.which_referenced(&Default::default()).unwrap().is_empty());
    }

    #[test]
    fn every_change_that_drops_a_reference_notes_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.create_bucket("b", &BucketRecord { created_ms: 1 })
            .unwrap();
        let obj = rec;

        // A new key drops nothing; writing the same bytes again drops nothing either.
        c.put_object("b", "k", &obj(1)).unwrap();
        c.put_object("b", "k", &obj(1)).unwrap();
        assert_eq!(noted(&c), vec![]);
        // Overwrite, conditional overwrite, delete.
        c.put_object("b", "k", &obj(2)).unwrap();
        assert_eq!(noted(&c), vec![cid(1)]);
        let any = WriteCondition {
            if_match: Some(crate::catalog::ETagMatch::Any),
            ..Default::default()
        };
        c.put_object_if("b", "k", &obj(3), &any).unwrap();
        assert_eq!(noted(&c), sorted(vec![cid(1), cid(2)]));
        assert!(c.delete_object("b", "k").unwrap());
        assert!(!c.delete_object("b", "k").unwrap());
        assert_eq!(noted(&c), sorted(vec![cid(1), cid(2), cid(3)]));
        // A failed condition drops nothing.
        c.put_object("b", "j", &obj(4)).unwrap();
        let absent = WriteCondition {
            absent: true,
            ..Default::default()
        };
        assert!(c.put_object_if("b", "j", &obj(5), &absent).is_err());
        assert!(!noted(&c).contains(&cid(4)));
        // Inline bytes have no CID; a slice's pack does.
        c.put_object("b", "i", &record(Location::Inline(vec![1])))
            .unwrap();
        c.put_object("b", "i", &obj(6)).unwrap();
        c.put_objects(
            "b",
            1,
            &[(
                "i".into(),
                record(Location::Slice {
                    object: cid(7),
                    offset: 0,
                }),
            )],
        )
        .unwrap();
        assert!(noted(&c).contains(&cid(6)));
        c.put_objects_in_buckets(&[], &[("b".into(), "i".into(), obj(8))])
            .unwrap();
        assert!(noted(&c).contains(&cid(7)));

        // Parts: one uploaded again, the rest dropped when the upload ends either way.
        let before = noted(&c).len();
        let upload = upload_of("m");
        c.create_upload("u1", &upload).unwrap();
        c.put_part("u1", 1, &part(cid(20))).unwrap();
        c.put_part("u1", 1, &part(cid(21))).unwrap();
        c.put_part("u1", 2, &part(cid(22))).unwrap();
        assert!(noted(&c).contains(&cid(20)));
        c.finish_upload("u1", None).unwrap();
        assert!(noted(&c).contains(&cid(21)) && noted(&c).contains(&cid(22)));
        c.create_upload("u2", &upload).unwrap();
        c.put_part("u2", 1, &part(cid(23))).unwrap();
        c.finish_upload("u2", Some(("b", "j", &obj(24)))).unwrap();
        // The completed upload's part and the key's old object.
        assert_eq!(noted(&c).len(), before + 5);
        assert!(noted(&c).contains(&cid(23)) && noted(&c).contains(&cid(4)));

        // A CID noted again while its older note is dealt with keeps the newer one.
        let (all, next) = c.unreferenced(None, 100).unwrap();
        assert_eq!(next, None);
        c.unreference(&[all[0].cid]).unwrap();
        let keys: Vec<Vec<u8>> = all.iter().map(|n| n.key.clone()).collect();
        c.forget_unreferenced(&keys).unwrap();
        assert_eq!(noted(&c), vec![all[0].cid]);
        // Pages go on from where the last stopped.
        c.unreference(&[cid(98), cid(99)]).unwrap();
        let (first, next) = c.unreferenced(None, 2).unwrap();
        let (rest, end) = c.unreferenced(next.as_deref(), 2).unwrap();
        assert_eq!((first.len(), rest.len(), end), (2, 1, None));
        let keys: Vec<Vec<u8>> = first.iter().chain(&rest).map(|n| n.key.clone()).collect();
        c.forget_unreferenced(&keys).unwrap();
        assert_eq!(noted(&c), vec![]);
        assert_eq!(c.unreferenced_count().unwrap(), 0);
    }

    #[test]
    fn notes_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Catalog::open(dir.path()).unwrap();
            c.create_bucket("b", &BucketRecord { created_ms: 1 })
                .unwrap();
            c.put_object("b", "k", &rec(1)).unwrap();
            c.delete_object("b", "k").unwrap();
        }
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(noted(&c), vec![cid(1)]);
        assert_eq!(c.unreferenced_count().unwrap(), 1);
    }
}
