//! Buckets: S3's naming rules, and ListBuckets, CreateBucket, HeadBucket, GetBucketLocation
//! and DeleteBucket.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::{Gateway, blocking, now_ms, timestamp};
use crate::catalog::BucketRecord;
use crate::error::Error;

/// S3 bucket naming rules.
pub fn check_bucket_name(name: &str) -> Result<(), Error> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidBucketName(name.to_string()))
    }
}

impl Gateway {
    pub(super) async fn handle_list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.metrics.requests.inc();
        let c = self.catalog.clone();
        let buckets = blocking(move || Ok(c.buckets()?)).await?;
        let buckets = buckets
            .into_iter()
            .map(|(name, r)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(r.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.metrics.requests.inc();
        let name = req.input.bucket;
        check_bucket_name(&name)?;
        let (c, n) = (self.catalog.clone(), name.clone());
        let created = blocking(move || {
            Ok(c.create_bucket(
                &n,
                &BucketRecord {
                    created_ms: now_ms(),
                },
            )?)
        })
        .await?;
        if !created {
            return Err(Error::BucketExists(name).into());
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    pub(super) async fn handle_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.metrics.requests.inc();
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(super) async fn handle_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.metrics.requests.inc();
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    pub(super) async fn handle_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.metrics.requests.inc();
        let name = req.input.bucket;
        // Existence, emptiness and the delete are one step in the catalog, so a PUT racing
        // this either lands first (and the delete is refused) or finds no bucket.
        let (c, n) = (self.catalog.clone(), name);
        blocking(move || Ok(c.delete_bucket(&n)?)).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }
}
