//! Object writes: PutObject, CopyObject (a new catalog entry for bytes already stored),
//! DeleteObject and DeleteObjects, and parsing a copy's source.

use std::ops::Range;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::body::{BodyFrom, refuse_unread};
use super::checksum::{check_md5, checksum_map, declared};
use super::conditions::{copy_source_none_match, preconditions, write_condition};
use super::headers::{check_key, check_object_headers, metadata_in, no_versions, xml_unsafe};
use super::{Gateway, MAX_PUT, blocking, now_ms, timestamp};
use crate::catalog::{Location, ObjectRecord};
use crate::error::Error;

pub(super) fn copy_source(src: &CopySource) -> Result<(String, String), Error> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            no_versions(version_id.as_deref())?;
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(Error::InvalidArgument(
            "only bucket/key copy sources are supported".into(),
        )),
    }
}

pub(super) fn parse_copy_range(r: &str, size: u64) -> Result<Range<u64>, Error> {
    let bad = || Error::InvalidArgument(format!("bad x-amz-copy-source-range {r:?}"));
    let spec = r.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(Error::InvalidRange(size));
    }
    Ok(a..b + 1)
}

impl Gateway {
    pub(super) async fn handle_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.metrics.requests.inc();
        let from = BodyFrom::client(&req.headers);
        let trailers = req.trailing_headers;
        let mut input = req.input;
        // Everything the headers decide is checked before the body is read, so that a body
        // sure to be refused is never stored (a 5xx after storing it would also have the client
        // send it again). The write condition is checked again as the record is written (the
        // key may change while the body is stored).
        let cond = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref());
        let checked = async {
            check_key(&input.key)?;
            check_object_headers(
                input.content_type.as_deref(),
                input.metadata.iter().flatten(),
            )?;
            self.bucket_exists(&input.bucket).await?;
            if let Some(len) = input.content_length
                && len as u64 > MAX_PUT
            {
                return Err(Error::EntityTooLarge {
                    size: len as u64,
                    max: MAX_PUT,
                });
            }
            self.check_write(&input.bucket, &input.key, &cond).await?;
            declared(
                input.checksum_algorithm.as_ref(),
                input.checksum_crc32.clone(),
                input.checksum_crc32c.clone(),
                input.checksum_crc64nvme.clone(),
                input.checksum_sha1.clone(),
                input.checksum_sha256.clone(),
            )
        }
        .await;
        let decl = match checked {
            Ok(decl) => decl,
            Err(e) => {
                let body = input.body.take();
                return Err(refuse_unread(e, body, input.content_length, from)
                    .await
                    .into());
            }
        };
        let Some(body) = input.body else {
            return Err(Error::IncompleteBody("no body".into()).into());
        };
        let mut opts = self.opts.clone();
        opts.content_type = input.content_type.clone();
        opts.metadata = metadata_in(input.metadata.clone());
        let stored = self
            .store_body(body, decl, trailers, &opts, None, from)
            .await?;
        if stored.size > MAX_PUT {
            return Err(Error::EntityTooLarge {
                size: stored.size,
                max: MAX_PUT,
            }
            .into());
        }
        check_md5(input.content_md5.as_ref(), &stored.md5)?;
        let record = ObjectRecord {
            location: Location::Object(stored.cid),
            size: stored.size,
            etag: stored.md5.clone(),
            content_type: input.content_type,
            metadata: metadata_in(input.metadata),
            modified_ms: now_ms(),
            checksums: checksum_map(&stored.checksum),
            signer: self.signer(),
            blake3: stored.blake3.to_hex().to_string(),
        };
        let (c, b, k) = (self.catalog.clone(), input.bucket, input.key);
        blocking(move || Ok(c.put_object_if(&b, &k, &record, &cond)?)).await?;
        self.renew_soon(vec![stored.cid]);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(stored.md5)),
            checksum_crc32: stored.checksum.checksum_crc32,
            checksum_crc32c: stored.checksum.checksum_crc32c,
            checksum_crc64nvme: stored.checksum.checksum_crc64nvme,
            checksum_sha1: stored.checksum.checksum_sha1,
            checksum_sha256: stored.checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    pub(super) async fn handle_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        check_key(&input.key)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if replace {
            check_object_headers(
                input.content_type.as_deref(),
                input.metadata.iter().flatten(),
            )?;
        }
        self.bucket_exists(&input.bucket).await?;
        let (sb, sk) = copy_source(&input.copy_source)?;
        let src = self.record(&sb, &sk).await?;
        preconditions(
            &src,
            input.copy_source_if_match.as_ref(),
            None,
            // As HTTP has it, a modified-since date is not looked at beside an ETag list.
            input
                .copy_source_if_modified_since
                .as_ref()
                .filter(|_| input.copy_source_if_none_match.is_none()),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| match e {
            Error::NotModified => Error::PreconditionFailed("copy source not modified".into()),
            other => other,
        })?;
        copy_source_none_match(&src, input.copy_source_if_none_match.as_ref())?;
        let mut record = src.clone();
        record.modified_ms = now_ms();
        if replace {
            record.content_type = input.content_type;
            record.metadata = metadata_in(input.metadata);
        }
        // The bytes are already on the network under their CID: a copy is a new catalog entry.
        let out_etag = record.etag.clone();
        let modified = record.modified_ms;
        let (c, b, k) = (self.catalog.clone(), input.bucket, input.key);
        let cid = record.location.cid().copied();
        blocking(move || Ok(c.put_object(&b, &k, &record)?)).await?;
        self.renew_soon(cid.into_iter().collect());
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(out_etag)),
                last_modified: Some(timestamp(modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        no_versions(input.version_id.as_deref())?;
        self.bucket_exists(&input.bucket).await?;
        let (c, b, k) = (self.catalog.clone(), input.bucket, input.key);
        blocking(move || Ok(c.delete_object(&b, &k)?)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn handle_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.bucket_exists(&input.bucket).await?;
        if input.delete.objects.len() > 1000 {
            return Err(
                Error::InvalidArgument("at most 1000 keys per DeleteObjects".into()).into(),
            );
        }
        // A key XML cannot carry could not be named in the result either (and no such key is
        // ever stored); a version other than the current one is not this gateway's to delete.
        for o in &input.delete.objects {
            if o.key.chars().any(xml_unsafe) {
                return Err(Error::MalformedXml(format!(
                    "the key {:?} holds a character XML 1.0 cannot carry",
                    o.key
                ))
                .into());
            }
            no_versions(o.version_id.as_deref())?;
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let keys: Vec<String> = input.delete.objects.into_iter().map(|o| o.key).collect();
        let (c, b) = (self.catalog.clone(), input.bucket);
        let deleted = blocking(move || {
            for k in &keys {
                c.delete_object(&b, k)?;
            }
            Ok(keys)
        })
        .await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then(|| {
                deleted
                    .into_iter()
                    .map(|k| DeletedObject {
                        key: Some(k),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }))
    }
}
