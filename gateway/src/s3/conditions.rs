//! Conditional requests: `If-Match`, `If-None-Match`, `If-Modified-Since` and
//! `If-Unmodified-Since` on reads (and on a copy's source), and the conditions a write asks of
//! the key it writes.

use s3s::dto::*;

use super::{Gateway, blocking};
use crate::catalog::{ETagMatch, ObjectRecord, WriteCondition};
use crate::error::Error;

fn ms_of(t: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

/// Conditional request checks (RFC 9110 order).
pub(super) fn preconditions(
    r: &ObjectRecord,
    if_match: Option<&IfMatch>,
    if_none_match: Option<&IfNoneMatch>,
    if_modified_since: Option<&IfModifiedSince>,
    if_unmodified_since: Option<&IfUnmodifiedSince>,
) -> Result<(), Error> {
    let etag = ETag::Strong(r.etag.clone());
    if let Some(cond) = if_match {
        let ok = cond.is_any() || cond.as_etag().is_some_and(|e| e.strong_cmp(&etag));
        if !ok {
            return Err(Error::PreconditionFailed(
                "If-Match does not match the ETag".into(),
            ));
        }
    } else if let Some(t) = if_unmodified_since
        && r.modified_ms / 1000 > ms_of(t) / 1000
    {
        return Err(Error::PreconditionFailed(
            "modified since If-Unmodified-Since".into(),
        ));
    }
    if let Some(cond) = if_none_match {
        let hit = cond.is_any() || cond.as_etag().is_some_and(|e| e.weak_cmp(&etag));
        if hit {
            return Err(Error::NotModified);
        }
    } else if let Some(t) = if_modified_since
        && r.modified_ms / 1000 <= ms_of(t) / 1000
    {
        return Err(Error::NotModified);
    }
    Ok(())
}

/// A copy's `x-amz-copy-source-if-none-match` on its source: 412 when it matches.
pub(super) fn copy_source_none_match(
    src: &ObjectRecord,
    cond: Option<&CopySourceIfNoneMatch>,
) -> Result<(), Error> {
    let etag = ETag::Strong(src.etag.clone());
    match cond {
        Some(c) if c.is_any() || c.as_etag().is_some_and(|e| e.weak_cmp(&etag)) => Err(
            Error::PreconditionFailed("x-amz-copy-source-if-none-match matched".into()),
        ),
        _ => Ok(()),
    }
}

/// What a conditional write (`If-None-Match: *`, `If-Match`) asks of the key it writes. An
/// `If-None-Match` with an ETag asks nothing of a write.
pub(super) fn write_condition(
    if_match: Option<&IfMatch>,
    if_none_match: Option<&IfNoneMatch>,
) -> WriteCondition {
    WriteCondition {
        absent: if_none_match.is_some_and(ETagCondition::is_any),
        if_match: if_match.map(|c| match c.as_etag() {
            None => ETagMatch::Any,
            Some(ETag::Strong(e)) => ETagMatch::Strong(e.clone()),
            Some(ETag::Weak(_)) => ETagMatch::Weak,
        }),
    }
}

impl Gateway {
    /// Whether `bucket/key` meets a conditional write's `cond` now (412 if not). Only a first
    /// check, before the slow part of the write: the catalog checks again as it writes.
    pub(super) async fn check_write(
        &self,
        bucket: &str,
        key: &str,
        cond: &WriteCondition,
    ) -> Result<(), Error> {
        if cond.is_none() {
            return Ok(());
        }
        let (c, b, k) = (self.catalog.clone(), bucket.to_string(), key.to_string());
        let existing = blocking(move || Ok(c.object(&b, &k)?)).await?;
        cond.check(existing.as_ref())
            .map_err(Error::PreconditionFailed)
    }
}
