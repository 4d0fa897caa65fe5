//! Multipart uploads and their parts: recorded, listed, and ended (completed into an object, or
//! aborted) in one atomic step that a racing part or a second end cannot get around.

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::keys::{CF_OBJECTS, CF_PARTS, CF_UPLOADS, dec, enc, object_key, part_key};
use super::{Catalog, CatalogError, ObjectRecord, PartRecord, UploadRecord, WriteCondition};

impl Catalog {
    /// Records a new multipart upload.
    pub fn create_upload(&self, id: &str, record: &UploadRecord) -> Result<(), CatalogError> {
        let _guard = self.share_buckets();
        self.require_bucket(&record.bucket)?;
        self.db
            .put_cf_opt(self.cf(CF_UPLOADS)?, id, enc(record), &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        Ok(())
    }

    /// A multipart upload.
    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, CatalogError> {
        self.db
            .get_pinned_cf(self.cf(CF_UPLOADS)?, id)?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Uploads in progress for a bucket: (id, record).
    pub fn uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_UPLOADS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let r: UploadRecord = dec(&v)?;
            if r.bucket == bucket {
                out.push((String::from_utf8_lossy(&k).into_owned(), r));
            }
        }
        // By key, then by id: ids begin with their start time, so one key's uploads are in
        // the order they started, as S3 lists them.
        out.sort_by(|a, b| (a.1.key.as_str(), a.0.as_str()).cmp(&(b.1.key.as_str(), b.0.as_str())));
        Ok(out)
    }

    /// Records a part (replacing an earlier upload of the same number), if the upload is still
    /// open: a part that finishes after its upload was completed or aborted is not left behind.
    pub fn put_part(&self, id: &str, number: u32, record: &PartRecord) -> Result<(), CatalogError> {
        let _open = self.lock_keys(&[id.as_bytes()]);
        if self.upload(id)?.is_none() {
            return Err(CatalogError::NoSuchUpload(id.to_string()));
        }
        let (cf, k) = (self.cf(CF_PARTS)?, part_key(id, number));
        let mut batch = WriteBatch::default();
        // A part uploaded again under its number drops the one before (a record that does not
        // decode is replaced without a note, as an object's is).
        if let Some(old) = self.db.get_pinned_cf(cf, &k)?
            && let Ok(old) = dec::<PartRecord>(&old)
            && old.cid != record.cid
        {
            self.note_unreferenced(&mut batch, &old.cid)?;
        }
        batch.put_cf(cf, k, enc(record));
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        Ok(())
    }

    /// The parts of an upload, by number.
    pub fn parts(&self, id: &str) -> Result<Vec<(u32, PartRecord)>, CatalogError> {
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_PARTS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let number = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| CatalogError::Damaged("bad part key".into()))?;
            out.push((number, dec(&v)?));
        }
        Ok(out)
    }

    /// Ends an upload: removes it and its parts, and (if given) stores the final object, in one
    /// atomic batch.
    pub fn finish_upload(
        &self,
        id: &str,
        object: Option<(&str, &str, &ObjectRecord)>,
    ) -> Result<(), CatalogError> {
        self.finish_upload_if(id, object, &WriteCondition::default())
    }

    /// [`Catalog::finish_upload`], storing the object only if the key's current object meets
    /// `cond` (checked and written as one step, as [`Catalog::put_object_if`]). When it does
    /// not, nothing changes: the upload stays open.
    pub fn finish_upload_if(
        &self,
        id: &str,
        object: Option<(&str, &str, &ObjectRecord)>,
        cond: &WriteCondition,
    ) -> Result<(), CatalogError> {
        let _guard = self.share_buckets();
        // The upload's lock (and the key's): of a Complete and an Abort racing, or two
        // Completes, one ends the upload and the other finds it gone.
        let target = object.map(|(bucket, key, _)| object_key(bucket, key));
        let mut locked = vec![id.as_bytes()];
        locked.extend(target.as_deref());
        let _locks = self.lock_keys(&locked);
        if self.upload(id)?.is_none() {
            return Err(CatalogError::NoSuchUpload(id.to_string()));
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_UPLOADS)?, id);
        // Every part's manifest loses its reference, completed or not: a completed object's
        // manifest names the parts' stripes themselves (the sweep keeps any that a record
        // still names, such as a one-part object's).
        for (n, part) in self.parts(id)? {
            batch.delete_cf(self.cf(CF_PARTS)?, part_key(id, n));
            self.note_unreferenced(&mut batch, &part.cid)?;
        }
        if let (Some((bucket, _, record)), Some(k)) = (object, target) {
            self.require_bucket(bucket)?;
            self.check_condition(&k, cond)?;
            self.note_replaced(&mut batch, &k, record.location.cid())?;
            batch.put_cf(self.cf(CF_OBJECTS)?, k, enc(record));
        }
        self.db
            .write_opt(batch, &Self::wo())
            .map_err(|e| self.write_failed(e))?;
        if object.is_some() {
            self.changed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_chunker::Cid;

    use super::*;
    use crate::catalog::BucketRecord;
    use crate::catalog::testing::{rec, upload_of};

    #[test]
    fn uploads_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let up = upload_of("k");
        assert!(matches!(
            c.create_upload("u1", &up),
            Err(CatalogError::NoSuchBucket(_))
        ));
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        c.create_upload("u1", &up).unwrap();
        let part = |n: u32| {
            let mut h =
                cairn_chunker::pieces::PieceHasher::new(u64::from(n - 1) * 5120, 5120).unwrap();
            h.update(&[n as u8; 5120]);
            PartRecord {
                cid: cairn_chunker::cids::dag_cbor(&[n as u8]),
                size: 5120,
                etag: n.to_string(),
                modified_ms: 0,
                hashed_at: (n != 10).then_some(u64::from(n - 1) * 5120),
                nodes: if n != 10 { h.finish().unwrap() } else { vec![] },
            }
        };
        for n in [3u32, 1, 2, 10] {
            c.put_part("u1", n, &part(n)).unwrap();
        }
        let parts = c.parts("u1").unwrap();
        assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 10]);
        for (n, p) in &parts {
            assert_eq!(p, &part(*n), "part records round-trip, tree nodes included");
        }
        // A part recorded before parts carried tree nodes still reads, without them.
        #[derive(serde::Serialize)]
        struct OldPart {
            cid: Cid,
            size: u64,
            etag: String,
            modified_ms: u64,
        }
        let old = OldPart {
            cid: part(4).cid,
            size: 5,
            etag: "e".into(),
            modified_ms: 7,
        };
        let read: PartRecord = dec(&enc(&old)).unwrap();
        assert_eq!((read.size, read.hashed_at, read.nodes.len()), (5, None, 0));
        // An upload recorded before uploads kept their erasure parameters still reads.
        #[derive(serde::Serialize)]
        struct OldUpload {
            bucket: String,
            key: String,
            created_ms: u64,
            content_type: Option<String>,
            metadata: BTreeMap<String, String>,
        }
        let old = OldUpload {
            bucket: "b".into(),
            key: "k".into(),
            created_ms: 1,
            content_type: None,
            metadata: BTreeMap::new(),
        };
        let read: UploadRecord = dec(&enc(&old)).unwrap();
        assert_eq!((read.key.as_str(), read.erasure), ("k", None));
        assert_eq!(c.uploads("b").unwrap().len(), 1);
        assert!(!c.bucket_is_empty("b").unwrap());
        c.finish_upload("u1", Some(("b", "k", &rec(1)))).unwrap();
        assert!(c.parts("u1").unwrap().is_empty());
        assert!(c.upload("u1").unwrap().is_none());
        assert_eq!(c.object("b", "k").unwrap(), Some(rec(1)));
    }

    /// An upload ended by one request (Complete or Abort) is gone for every other: a Complete
    /// racing an Abort does not create the object after the Abort answered, and a part that
    /// finishes late is not left behind.
    #[test]
    fn an_ended_upload_takes_no_more_parts_and_cannot_end_twice() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        let up = upload_of("k");
        let part = PartRecord {
            cid: cairn_chunker::cids::dag_cbor(b"p"),
            size: 5,
            etag: "e".into(),
            modified_ms: 0,
            hashed_at: None,
            nodes: vec![],
        };
        c.create_upload("u", &up).unwrap();
        c.put_part("u", 1, &part).unwrap();
        // Aborted.
        c.finish_upload("u", None).unwrap();
        let gone = |r| matches!(r, Err(CatalogError::NoSuchUpload(_)));
        assert!(gone(c.put_part("u", 2, &part)));
        assert!(gone(c.finish_upload("u", Some(("b", "k", &rec(1))))));
        assert!(gone(c.finish_upload("u", None)));
        assert_eq!(c.object("b", "k").unwrap(), None);
        assert!(c.parts("u").unwrap().is_empty());
        // Completed once, then not again.
        c.create_upload("v", &up).unwrap();
        c.finish_upload("v", Some(("b", "k", &rec(2)))).unwrap();
        assert!(gone(c.finish_upload("v", Some(("b", "k", &rec(3))))));
        assert_eq!(c.object("b", "k").unwrap(), Some(rec(2)));
    }
}
