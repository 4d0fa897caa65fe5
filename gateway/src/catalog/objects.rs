//! Objects: one key's record read, written (a conditional write checked and written as one
//! step) and deleted; many written at once, atomically (import, restore); all read (export).

use rocksdb::{IteratorMode, WriteBatch};

use cairn_chunker::Cid;

use super::keys::{CF_BUCKETS, CF_OBJECTS, CF_PARTS, dec, enc, object_key};
use super::{BucketRecord, Catalog, CatalogError, ObjectRecord, PartRecord, WriteCondition};

impl Catalog {
    /// An object's record.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, CatalogError> {
        self.db
            .get_pinned_cf(self.cf(CF_OBJECTS)?, object_key(bucket, key))?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Stores an object's record (replacing any), if its bucket still exists.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), CatalogError> {
        self.put_object_if(bucket, key, record, &WriteCondition::default())
    }

    /// Stores an object's record (replacing any), if its bucket still exists and the key's
    /// current object meets `cond`, checked and written as one step: of writes racing with
    /// `If-None-Match: *` on a new key, one lands and the others fail with
    /// [`CatalogError::PreconditionFailed`].
    pub fn put_object_if(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        cond: &WriteCondition,
    ) -> Result<(), CatalogError> {
        let k = object_key(bucket, key);
        let _guard = self.share_buckets();
        self.require_bucket(bucket)?;
        let _key = self.lock_key(&k);
        self.check_condition(&k, cond)?;
        let mut batch = WriteBatch::default();
        self.note_replaced(&mut batch, &k, record.location.cid())?;
        batch.put_cf(self.cf(CF_OBJECTS)?, k, enc(record));
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        self.changed();
        Ok(())
    }

    /// Stores many records in one atomic batch, creating `bucket` if it is missing.
    pub fn put_objects(
        &self,
        bucket: &str,
        created_ms: u64,
        records: &[(String, ObjectRecord)],
    ) -> Result<(), CatalogError> {
        let mut batch = rocksdb::WriteBatch::default();
        let buckets = self.cf(CF_BUCKETS)?;
        let _guard = self.share_buckets();
        if self.db.get_pinned_cf(buckets, bucket)?.is_none() {
            batch.put_cf(buckets, bucket, enc(&BucketRecord { created_ms }));
        }
        let objects = self.cf(CF_OBJECTS)?;
        let keys: Vec<Vec<u8>> = records.iter().map(|(k, _)| object_key(bucket, k)).collect();
        let _keys = self.lock_keys(&keys.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for (k, (_, record)) in keys.iter().zip(records) {
            self.note_replaced(&mut batch, k, record.location.cid())?;
            batch.put_cf(objects, k, enc(record));
        }
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        self.changed();
        Ok(())
    }

    /// Removes an object's record; true if there was one.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, CatalogError> {
        let cf = self.cf(CF_OBJECTS)?;
        let k = object_key(bucket, key);
        let _key = self.lock_key(&k);
        let mut batch = WriteBatch::default();
        let existed = self.note_replaced(&mut batch, &k, None)?;
        batch.delete_cf(cf, k);
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        if existed {
            self.changed();
        }
        Ok(existed)
    }

    /// Every object of every bucket (for export).
    pub fn all_objects(&self) -> Result<Vec<(String, String, ObjectRecord)>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OBJECTS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let split = k
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| CatalogError::Damaged("object key without bucket".into()))?;
            out.push((
                String::from_utf8_lossy(&k[..split]).into_owned(),
                String::from_utf8_lossy(&k[split + 1..]).into_owned(),
                dec(&v)?,
            ));
        }
        Ok(out)
    }

    /// Every manifest CID a record references: objects and packs of every key, and the parts
    /// of open multipart uploads (what the gateway keeps leased). Read a record at a time.
    pub fn referenced_cids(&self) -> Result<Vec<Cid>, CatalogError> {
        let mut out = std::collections::BTreeSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OBJECTS)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            let r: ObjectRecord = dec(&v)?;
            out.extend(r.location.cid().copied());
        }
        for item in self.db.iterator_cf(self.cf(CF_PARTS)?, IteratorMode::Start) {
            let (_, v) = item?;
            let p: PartRecord = dec(&v)?;
            out.insert(p.cid);
        }
        Ok(out.into_iter().collect())
    }

    /// Stores `(bucket, key, record)`s of several buckets in one atomic batch, creating the
    /// `(bucket, created_ms)`s that are missing: all of it lands, or none (restoring an export:
    /// a restore that fails leaves the catalog as it was).
    pub fn put_objects_in_buckets(
        &self,
        buckets: &[(String, u64)],
        records: &[(String, String, ObjectRecord)],
    ) -> Result<(), CatalogError> {
        let mut batch = WriteBatch::default();
        let (bucket_cf, objects) = (self.cf(CF_BUCKETS)?, self.cf(CF_OBJECTS)?);
        let _guard = self.share_buckets();
        for (bucket, created_ms) in buckets {
            if self.db.get_pinned_cf(bucket_cf, bucket)?.is_none() {
                let record = BucketRecord {
                    created_ms: *created_ms,
                };
                batch.put_cf(bucket_cf, bucket, enc(&record));
            }
        }
        // A key lands only in a bucket that exists or is created here.
        let mut checked: std::collections::BTreeSet<&str> =
            buckets.iter().map(|(b, _)| b.as_str()).collect();
        for (bucket, _, _) in records {
            if checked.insert(bucket) {
                self.require_bucket(bucket)?;
            }
        }
        let keys: Vec<Vec<u8>> = records.iter().map(|(b, k, _)| object_key(b, k)).collect();
        let _keys = self.lock_keys(&keys.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for (k, (_, _, record)) in keys.iter().zip(records) {
            self.note_replaced(&mut batch, k, record.location.cid())?;
            batch.put_cf(objects, k, enc(record));
        }
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        self.changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ETagMatch;
    use crate::catalog::testing::{rec, upload_of};

    /// A conditional write checks its condition and writes as one step: of writers racing on
    /// one key, each of which saw it absent (or at one ETag), exactly one lands.
    #[test]
    fn racing_conditional_writes_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Catalog::open(dir.path()).unwrap());
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        let absent = WriteCondition {
            absent: true,
            ..Default::default()
        };
        let is = |e: &str| WriteCondition {
            if_match: Some(ETagMatch::Strong(e.into())),
            ..Default::default()
        };
        for trial in 0..50u8 {
            let key = format!("k{trial}");
            let race = |cond: WriteCondition, base: u8| {
                let start = std::sync::Arc::new(std::sync::Barrier::new(8));
                let writers: Vec<_> = (0..8u8)
                    .map(|i| {
                        let (c, k, cond, start) =
                            (c.clone(), key.clone(), cond.clone(), start.clone());
                        std::thread::spawn(move || {
                            start.wait();
                            match c.put_object_if("b", &k, &rec(base + i), &cond) {
                                Ok(()) => Some(base + i),
                                Err(CatalogError::PreconditionFailed(_)) => None,
                                Err(e) => panic!("{e}"),
                            }
                        })
                    })
                    .collect();
                let won: Vec<u8> = writers
                    .into_iter()
                    .filter_map(|w| w.join().unwrap())
                    .collect();
                assert_eq!(won.len(), 1, "trial {trial}: {won:?}");
                assert_eq!(c.object("b", &key).unwrap(), Some(rec(won[0])));
                won[0]
            };
            let first = race(absent.clone(), 0);
            race(is(&first.to_string()), 100);
        }
        // Conditions on their own.
        c.put_object("b", "x", &rec(1)).unwrap();
        let any = WriteCondition {
            if_match: Some(ETagMatch::Any),
            ..Default::default()
        };
        let weak = WriteCondition {
            if_match: Some(ETagMatch::Weak),
            ..Default::default()
        };
        let failed = |r| matches!(r, Err(CatalogError::PreconditionFailed(_)));
        assert!(failed(c.put_object_if("b", "x", &rec(2), &absent)));
        assert!(failed(c.put_object_if("b", "x", &rec(2), &is("2"))));
        assert!(failed(c.put_object_if("b", "x", &rec(2), &weak)));
        assert!(failed(c.put_object_if("b", "none", &rec(2), &any)));
        assert_eq!(
            c.object("b", "x").unwrap(),
            Some(rec(1)),
            "refused writes change nothing"
        );
        c.put_object_if("b", "x", &rec(2), &any).unwrap();
        c.put_object_if("b", "x", &rec(3), &is("2")).unwrap();
        assert!(failed(c.put_object_if(
            "b",
            "x",
            &rec(4),
            &WriteCondition {
                absent: true,
                if_match: Some(ETagMatch::Any),
            }
        )));
        // A refused Complete leaves its upload open.
        let up = upload_of("x");
        c.create_upload("u", &up).unwrap();
        assert!(failed(c.finish_upload_if(
            "u",
            Some(("b", "x", &rec(5))),
            &absent
        )));
        assert!(c.upload("u").unwrap().is_some());
        assert_eq!(c.object("b", "x").unwrap(), Some(rec(3)));
        c.finish_upload_if("u", Some(("b", "x", &rec(5))), &is("3"))
            .unwrap();
        assert!(c.upload("u").unwrap().is_none());
        assert_eq!(c.object("b", "x").unwrap(), Some(rec(5)));
    }
}
