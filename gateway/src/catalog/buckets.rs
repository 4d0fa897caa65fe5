//! Buckets: created, read, listed, and deleted only while they hold no object or upload.

use rocksdb::{Direction, IteratorMode};

use super::keys::{CF_BUCKETS, CF_OBJECTS, dec, enc, object_key};
use super::{BucketRecord, Catalog, CatalogError};

impl Catalog {
    /// Creates a bucket; false if it existed.
    pub fn create_bucket(&self, name: &str, record: &BucketRecord) -> Result<bool, CatalogError> {
        let cf = self.cf(CF_BUCKETS)?;
        let _guard = self.lock_buckets();
        if self.db.get_pinned_cf(cf, name)?.is_some() {
            return Ok(false);
        }
        self.db
            .put_cf_opt(cf, name, enc(record), &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        self.changed();
        Ok(true)
    }

    /// A bucket's record.
    pub fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, CatalogError> {
        self.db
            .get_pinned_cf(self.cf(CF_BUCKETS)?, name)?
            .map(|b| dec(&b))
            .transpose()
    }

    /// All buckets, by name.
    pub fn buckets(&self) -> Result<Vec<(String, BucketRecord)>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_BUCKETS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), dec(&v)?));
        }
        Ok(out)
    }

    /// Whether a bucket holds any object or upload.
    pub fn bucket_is_empty(&self, name: &str) -> Result<bool, CatalogError> {
        let prefix = object_key(name, "");
        let mut it = self.db.iterator_cf(
            self.cf(CF_OBJECTS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        if let Some(item) = it.next()
            && item?.0.starts_with(&prefix)
        {
            return Ok(false);
        }
        Ok(self.uploads(name)?.is_empty())
    }

    /// Deletes a bucket, refusing while it holds objects or uploads.
    pub fn delete_bucket(&self, name: &str) -> Result<(), CatalogError> {
        let _guard = self.lock_buckets();
        self.require_bucket(name)?;
        if !self.bucket_is_empty(name)? {
            return Err(CatalogError::BucketNotEmpty(name.to_string()));
        }
        self.db
            .delete_cf_opt(self.cf(CF_BUCKETS)?, name, &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        self.changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::testing::rec;

    #[test]
    fn keys_land_only_in_live_buckets_and_changes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let g0 = c.generation();
        assert!(matches!(
            c.put_object("gone", "k", &rec(1)),
            Err(CatalogError::NoSuchBucket(_))
        ));
        assert!(matches!(
            c.delete_bucket("gone"),
            Err(CatalogError::NoSuchBucket(_))
        ));
        assert_eq!(c.generation(), g0, "failed writes change nothing");
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        c.put_object("b", "k", &rec(1)).unwrap();
        assert!(matches!(
            c.delete_bucket("b"),
            Err(CatalogError::BucketNotEmpty(_))
        ));
        let g1 = c.generation();
        assert!(g1 > g0);
        assert!(c.delete_object("b", "k").unwrap());
        assert!(!c.delete_object("b", "k").unwrap());
        let g2 = c.generation();
        assert_eq!(g2, g1 + 1, "only a real delete counts");
        c.delete_bucket("b").unwrap();
        assert!(c.generation() > g2);
        // A PUT that checked the bucket before it was deleted cannot land the key now.
        assert!(matches!(
            c.put_object("b", "late", &rec(2)),
            Err(CatalogError::NoSuchBucket(_))
        ));
        assert!(c.object("b", "late").unwrap().is_none());
    }

    #[test]
    fn a_bucket_deleted_while_objects_are_put_is_deleted_empty_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Catalog::open(dir.path()).unwrap());
        for round in 0..50 {
            let bucket = format!("race-{round}");
            c.create_bucket(&bucket, &BucketRecord { created_ms: 0 })
                .unwrap();
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let (c, bucket) = (c.clone(), bucket.clone());
                    std::thread::spawn(move || {
                        let mut landed = Vec::new();
                        for i in 0..20 {
                            let key = format!("k{w}-{i}");
                            match c.put_object(&bucket, &key, &rec(1)) {
                                Ok(()) => landed.push(key),
                                Err(CatalogError::NoSuchBucket(_)) => break,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        landed
                    })
                })
                .collect();
            // Delete as soon as the bucket empties out, racing the writers.
            let mut deleted = false;
            for _ in 0..200 {
                let keys: Vec<String> = c
                    .list(&bucket, "", None, None, 1000)
                    .unwrap()
                    .objects
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                for k in keys {
                    let _ = c.delete_object(&bucket, &k);
                }
                match c.delete_bucket(&bucket) {
                    Ok(()) => {
                        deleted = true;
                        break;
                    }
                    Err(CatalogError::BucketNotEmpty(_)) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
            let landed: Vec<String> = writers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect();
            if deleted {
                // Nothing lives on in the deleted bucket, whatever landed before the delete.
                for k in &landed {
                    assert!(c.object(&bucket, k).unwrap().is_none(), "{bucket}/{k}");
                }
                assert!(matches!(
                    c.put_object(&bucket, "after", &rec(1)),
                    Err(CatalogError::NoSuchBucket(_))
                ));
            } else {
                assert!(c.bucket_is_empty(&bucket).is_ok());
            }
        }
    }
}
