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
}
