//! Multipart uploads: create, upload a part (or copy one), list, abort, and complete, which
//! joins the parts' stripes into one object's manifest and works out its BLAKE3 from the parts.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_chunker::manifest::{ErasureParams, ObjectManifest, Stripe, hex};
use cairn_chunker::pieces::{PieceHasher, combine};
use cairn_chunker::{Cid, cids};
use cairn_client::put::{PutOptions, publish_manifest_with_receipts};
use cairn_wire::protocol::ManifestKind;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::body::{BodyFrom, Stored, refuse_unread};
use super::checksum::{HashSink, check_md5, declared, read_into};
use super::conditions::{copy_source_none_match, preconditions, write_condition};
use super::headers::{check_key, check_object_headers, metadata_in};
use super::listing::{KeyEncoding, decode_hex, page_size};
use super::uploads;
use super::write::{copy_source, parse_copy_range};
use super::{Gateway, MAX_PARTS, MAX_PUT, blocking, now_ms, timestamp};
use crate::catalog::{Location, ObjectRecord, PartRecord, UploadRecord, WriteCondition};
use crate::error::Error;

impl Gateway {
    pub(super) async fn handle_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        check_key(&input.key)?;
        // Refused here, not at Complete, which would answer 200 and then fail for good.
        check_object_headers(
            input.content_type.as_deref(),
            input.metadata.iter().flatten(),
        )?;
        self.bucket_exists(&input.bucket).await?;
        // The start time first, so ids sort in the order uploads started (as S3 lists one
        // key's uploads, and pages them by "upload ids after the marker"), then 80 random bits.
        let created_ms = now_ms();
        let random = blake3::hash(
            format!(
                "{}/{}/{created_ms}/{:?}",
                input.bucket,
                input.key,
                std::time::Instant::now()
            )
            .as_bytes(),
        );
        let id = format!("{created_ms:012x}{}", hex(&random.as_bytes()[..10]));
        let record = UploadRecord {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            created_ms,
            content_type: input.content_type,
            metadata: metadata_in(input.metadata),
            erasure: Some(self.opts.params.erasure),
        };
        let (c, i) = (self.catalog.clone(), id.clone());
        blocking(move || Ok(c.create_upload(&i, &record)?)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.metrics.requests.inc();
        let from = BodyFrom::client(&req.headers);
        let trailers = req.trailing_headers;
        let mut input = req.input;
        // As for PutObject: what the headers decide is refused before the body is read.
        let checked = async {
            if !(1..=MAX_PARTS).contains(&input.part_number) {
                return Err(Error::InvalidArgument(format!(
                    "part number {} is outside 1..=10000",
                    input.part_number
                )));
            }
            let upload = self
                .upload(&input.upload_id, &input.bucket, &input.key)
                .await?;
            if let Some(len) = input.content_length
                && len as u64 > MAX_PUT
            {
                return Err(Error::EntityTooLarge {
                    size: len as u64,
                    max: MAX_PUT,
                });
            }
            let decl = declared(
                input.checksum_algorithm.as_ref(),
                input.checksum_crc32.clone(),
                input.checksum_crc32c.clone(),
                input.checksum_crc64nvme.clone(),
                input.checksum_sha1.clone(),
                input.checksum_sha256.clone(),
            )?;
            Ok((upload, decl))
        }
        .await;
        let (upload, decl) = match checked {
            Ok(c) => c,
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
        let stored = self
            .store_body(
                body,
                decl,
                trailers,
                &self.part_options(&upload),
                Some(input.part_number),
                from,
            )
            .await?;
        check_md5(input.content_md5.as_ref(), &stored.md5)?;
        self.record_part(&input.upload_id, input.part_number as u32, &stored)
            .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(stored.md5)),
            checksum_crc32: stored.checksum.checksum_crc32,
            checksum_crc32c: stored.checksum.checksum_crc32c,
            checksum_crc64nvme: stored.checksum.checksum_crc64nvme,
            checksum_sha1: stored.checksum.checksum_sha1,
            checksum_sha256: stored.checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    pub(super) async fn handle_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        let upload = self
            .upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        if !(1..=MAX_PARTS).contains(&input.part_number) {
            return Err(Error::InvalidArgument(format!(
                "part number {} is outside 1..=10000",
                input.part_number
            ))
            .into());
        }
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
        let range = input
            .copy_source_range
            .as_deref()
            .map(|r| parse_copy_range(r, src.size))
            .transpose()?;
        if range.as_ref().map_or(src.size, |r| r.end - r.start) > MAX_PUT {
            return Err(Error::EntityTooLarge {
                size: src.size,
                max: MAX_PUT,
            }
            .into());
        }
        // Read the source range (verified) and store it as the part.
        let body = self.body(&src, range, std::time::Instant::now()).await?;
        let decl = declared(None, None, None, None, None, None)?;
        let stored = self
            .store_body(
                body,
                decl,
                None,
                &self.part_options(&upload),
                Some(input.part_number),
                BodyFrom::Network,
            )
            .await?;
        self.record_part(&input.upload_id, input.part_number as u32, &stored)
            .await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(stored.md5)),
                last_modified: Some(timestamp(now_ms())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let (c, i) = (self.catalog.clone(), input.upload_id.clone());
        let parts = blocking(move || Ok(c.parts(&i)?)).await?;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = page_size("max-parts", input.max_parts)?.max(1);
        let after: Vec<_> = parts.into_iter().filter(|(n, _)| *n > marker).collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            is_truncated: Some(truncated),
            next_part_number_marker: page.last().map(|(n, _)| *n as i32),
            max_parts: Some(max as i32),
            parts: Some(
                page.into_iter()
                    .map(|(n, p)| Part {
                        part_number: Some(n as i32),
                        e_tag: Some(ETag::Strong(p.etag)),
                        size: Some(p.size as i64),
                        last_modified: Some(timestamp(p.modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.bucket_exists(&input.bucket).await?;
        let enc = KeyEncoding::of(input.encoding_type.as_ref())?;
        let max = page_size("max-uploads", input.max_uploads)?;
        let (c, b) = (self.catalog.clone(), input.bucket.clone());
        let uploads = blocking(move || Ok(c.uploads(&b)?)).await?;
        let page = uploads::page(
            uploads,
            &uploads::UploadsQuery {
                prefix: input.prefix.as_deref().unwrap_or_default(),
                delimiter: input.delimiter.as_deref(),
                key_marker: input.key_marker.as_deref(),
                upload_id_marker: input.upload_id_marker.as_deref(),
                max,
            },
        );
        let (next_key, next_id) = match page.next.clone() {
            Some((k, id)) => (Some(enc.apply(k)), id),
            None => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix.map(|p| enc.apply(p)),
            delimiter: input.delimiter.map(|d| enc.apply(d)),
            key_marker: input.key_marker.map(|k| enc.apply(k)),
            upload_id_marker: input.upload_id_marker,
            encoding_type: enc.echo(),
            is_truncated: Some(page.next.is_some()),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(max as i32),
            uploads: Some(
                page.uploads
                    .into_iter()
                    .map(|(id, u)| MultipartUpload {
                        key: Some(enc.apply(u.key)),
                        upload_id: Some(id),
                        initiated: Some(timestamp(u.created_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            common_prefixes: Some(
                page.prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc.apply(p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let (c, i) = (self.catalog.clone(), input.upload_id);
        blocking(move || Ok(c.finish_upload(&i, None)?)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn handle_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        let upload = self
            .upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        // Checked now, while a refusal can still be a 412, and again as the object is committed.
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref());
        self.check_write(&input.bucket, &input.key, &condition)
            .await?;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(Error::InvalidPart("list at least one part".into()).into());
        }
        let (c, i) = (self.catalog.clone(), input.upload_id.clone());
        let uploaded: BTreeMap<u32, PartRecord> = blocking(move || Ok(c.parts(&i)?))
            .await?
            .into_iter()
            .collect();
        let mut chosen = Vec::with_capacity(listed.len());
        let mut last = 0i32;
        for (i, p) in listed.iter().enumerate() {
            let n = p
                .part_number
                .ok_or_else(|| Error::InvalidPart("a part has no number".into()))?;
            if n <= last {
                return Err(Error::InvalidPartOrder.into());
            }
            last = n;
            let rec = uploaded
                .get(&(n as u32))
                .ok_or_else(|| Error::InvalidPart(format!("part {n} was not uploaded")))?;
            if let Some(e) = &p.e_tag
                && !e.strong_cmp(&ETag::Strong(rec.etag.clone()))
            {
                return Err(Error::InvalidPart(format!(
                    "part {n}: ETag does not match the uploaded part"
                ))
                .into());
            }
            if i + 1 < listed.len() && rec.size < self.min_part {
                return Err(Error::EntityTooSmall {
                    part: n as u32,
                    size: rec.size,
                    min: self.min_part,
                }
                .into());
            }
            chosen.push(rec.clone());
        }
        // The object's manifest is the parts' stripes in order; its BLAKE3 is read back
        // (verified) from the parts, since hashes of unaligned pieces do not combine.
        let mut stripes = Vec::new();
        let mut size = 0u64;
        let mut md5_concat = Vec::with_capacity(16 * chosen.len());
        let mut params = None;
        let mut parts = Vec::with_capacity(chosen.len());
        // The parts' manifests are fetched many at once (in order): 10,000 parts one after
        // another would keep the response from starting for longer than clients wait.
        let cids: Vec<Cid> = chosen.iter().map(|rec| rec.cid).collect();
        let fetched: Vec<Arc<ObjectManifest>> = futures::stream::iter(cids)
            .map(|cid| {
                let gateway = self.clone();
                async move { gateway.manifest(&cid).await }
            })
            .buffered(MANIFEST_LOOKUPS)
            .try_collect()
            .await?;
        for (rec, m) in chosen.iter().zip(fetched) {
            if m.inline.is_some() && m.size > 0 {
                return Err(Error::Internal("an inline part cannot be combined".into()).into());
            }
            if *params.get_or_insert(m.erasure) != m.erasure {
                return Err(Error::Internal(
                    "parts were written with different erasure parameters".into(),
                )
                .into());
            }
            stripes.extend(m.stripes.iter().cloned());
            size += m.size;
            let raw =
                decode_hex(&rec.etag).ok_or_else(|| Error::Internal("bad part ETag".into()))?;
            md5_concat.extend(raw);
            parts.push(m);
        }
        // Everything a client can get wrong was checked above and is answered with an error
        // status. What is left is the object's BLAKE3 and publishing its manifest. The hash is
        // usually merged from the parts' tree nodes, but parts hashed at the wrong offset are
        // read back, in the worst case all of them (about a second per GiB here, more on a
        // busy network), which can outlast what clients wait for a response to start
        // (boto3: 60 s). So, as S3 does, the 200 goes out now, s3s sends whitespace every
        // 100 ms while this runs, and then the result, or an S3 error document that SDKs check
        // for. Nothing is committed until the end: a failure, or a client that hangs up,
        // leaves the upload open for a retry.
        let etag = format!("{}-{}", hex(&Md5::digest(&md5_concat)), chosen.len());
        let finish = FinishUpload {
            upload,
            id: input.upload_id,
            bucket: input.bucket,
            key: input.key,
            etag,
            parts: chosen.into_iter().zip(parts).collect(),
            size,
            stripes,
            erasure: params.unwrap_or(self.opts.params.erasure),
            condition,
        };
        let gateway = self.clone();
        let future = async move {
            gateway.finish_upload(finish).await.map_err(|e| {
                tracing::error!("completing a multipart upload failed after its 200: {e}");
                // The status said 200: count the failure here, as the status cannot.
                if e.status().is_server_error() {
                    gateway.metrics.server_errors.inc();
                }
                s3s::S3Error::from(e)
            })
        };
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(future)),
            ..Default::default()
        }))
    }
}

impl Gateway {
    fn part_options(&self, upload: &UploadRecord) -> PutOptions {
        // Parts always get stripes, never inline bytes, and the upload's erasure parameters,
        // so Complete can join their stripes.
        let mut o = self.opts.clone();
        if let Some(e) = upload.erasure {
            o.params.erasure = e;
        }
        o.params.inline_limit = 0;
        o.content_type = None;
        o.metadata.clear();
        o
    }

    async fn upload(&self, id: &str, bucket: &str, key: &str) -> Result<UploadRecord, Error> {
        let (c, i) = (self.catalog.clone(), id.to_string());
        let up = blocking(move || Ok(c.upload(&i)?)).await?;
        match up {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => {
                self.bucket_exists(bucket).await?;
                Err(Error::NoSuchUpload(id.to_string()))
            }
        }
    }

    async fn record_part(&self, id: &str, number: u32, stored: &Stored) -> Result<(), Error> {
        let rec = PartRecord {
            cid: stored.cid,
            size: stored.size,
            etag: stored.md5.clone(),
            modified_ms: now_ms(),
            hashed_at: stored.nodes.as_ref().map(|(at, _)| *at),
            nodes: stored.nodes.clone().map(|(_, n)| n).unwrap_or_default(),
        };
        let (c, i) = (self.catalog.clone(), id.to_string());
        blocking(move || Ok(c.put_part(&i, number, &rec)?)).await?;
        // A part is held by its own lease until Complete (or Abort) ends the upload.
        self.renew_soon(vec![stored.cid]);
        Ok(())
    }
}

impl Gateway {
    /// Stores the manifest of a combined (multipart) object and returns its CID. The storage
    /// receipts kept beside the parts' manifests are given to its keepers too, so the object's
    /// shards can be audited by name through it (`cairn audit`) as through any put.
    async fn publish(&self, manifest: &ObjectManifest, parts: &[Cid]) -> Result<Cid, Error> {
        manifest
            .validate()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let bytes = manifest.to_bytes();
        let cid = cids::dag_cbor(&bytes);
        let net = self.net().await;
        let net_ref = &net;
        let mut receipts: Vec<Vec<u8>> = futures::stream::iter(parts.to_vec())
            .map(|part: Cid| async move {
                let got = net_ref.receipts(&part).await;
                (part, got)
            })
            .buffer_unordered(RECEIPT_LOOKUPS)
            .flat_map(|(part, got)| {
                let list = match got {
                    Ok(v) => v.iter().map(|r| r.to_bytes()).collect(),
                    Err(e) => {
                        tracing::warn!(%part, "the part's storage receipts were not found: {e}");
                        Vec::new()
                    }
                };
                futures::stream::iter(list)
            })
            .collect()
            .await;
        receipts.sort_unstable();
        receipts.dedup();
        publish_manifest_with_receipts(
            &net,
            &self.key,
            &cid,
            ManifestKind::Object,
            &bytes,
            &self.opts,
            None,
            &receipts,
        )
        .await?;
        Ok(cid)
    }

    /// The BLAKE3 of the object the parts make, in order. One part is its own object. Parts
    /// hashed at the offset they turned out to have give their tree nodes; a part that was not
    /// (the short last one, or any after parts of other sizes) is read back and hashed at its
    /// offset; only when offsets are not on 1 KiB chunk boundaries is everything read back.
    async fn parts_hash(
        &self,
        parts: &[(PartRecord, Arc<ObjectManifest>)],
        total: u64,
    ) -> Result<blake3::Hash, Error> {
        if let [(_, only)] = parts {
            return Ok(only.blake3);
        }
        let mut nodes = Vec::new();
        let mut reread = Vec::new();
        let mut at = 0u64;
        for (rec, m) in parts {
            if m.size == 0 {
                continue;
            }
            if rec.hashed_at == Some(at) && !rec.nodes.is_empty() {
                nodes.extend_from_slice(&rec.nodes);
            } else {
                reread.push((at, m.clone()));
            }
            at += m.size;
        }
        self.metrics
            .complete_parts_reread
            .inc_by(reread.len() as u64);
        let net = self.net().await;
        let mut pieces_ok = true;
        for (at, m) in reread {
            let Ok(piece) = PieceHasher::new(at, m.size) else {
                pieces_ok = false;
                break;
            };
            let HashSink(piece) = read_into(&net, &m, HashSink(piece)).await?;
            match piece.finish() {
                Ok(n) => nodes.extend(n),
                Err(e) => return Err(Error::Internal(format!("hashing a part: {e}"))),
            }
        }
        if pieces_ok && let Some(hash) = combine(&nodes, total) {
            return Ok(hash);
        }
        // Parts whose offsets are not on chunk boundaries: hash the whole object in order.
        tracing::info!(total, "multipart object re-read whole for its BLAKE3");
        let mut whole = HashSink(blake3::Hasher::new());
        for (_, m) in parts {
            whole = read_into(&net, m, whole).await?;
        }
        Ok(whole.0.finalize())
    }
}

/// Parts whose storage receipts are looked up at once when an upload completes.
const RECEIPT_LOOKUPS: usize = 16;
/// Parts whose manifests are fetched at once when an upload completes.
const MANIFEST_LOOKUPS: usize = 64;

/// A checked CompleteMultipartUpload, ready to be turned into an object.
struct FinishUpload {
    upload: UploadRecord,
    id: String,
    bucket: String,
    key: String,
    etag: String,
    parts: Vec<(PartRecord, Arc<ObjectManifest>)>,
    size: u64,
    stripes: Vec<Stripe>,
    erasure: ErasureParams,
    /// What the key must hold for the object to be committed (`If-None-Match`, `If-Match`).
    condition: WriteCondition,
}

impl Gateway {
    /// The slow half of CompleteMultipartUpload: the object's BLAKE3 from its parts, then its
    /// manifest published and committed to the catalog.
    async fn finish_upload(&self, f: FinishUpload) -> Result<CompleteMultipartUploadOutput, Error> {
        let blake3 = self.parts_hash(&f.parts, f.size).await?;
        let manifest = ObjectManifest {
            version: cairn_chunker::manifest::VERSION,
            size: f.size,
            blake3,
            erasure: f.erasure,
            chunking: cairn_chunker::chunking::Chunking::Fixed,
            stripes: f.stripes,
            inline: if f.size == 0 { Some(Vec::new()) } else { None },
            content_type: f.upload.content_type.clone(),
            metadata: f.upload.metadata.clone(),
        };
        let parts: Vec<Cid> = f.parts.iter().map(|(rec, _)| rec.cid).collect();
        let cid = self.publish(&manifest, &parts).await?;
        let record = ObjectRecord {
            location: Location::Object(cid),
            size: f.size,
            etag: f.etag.clone(),
            content_type: f.upload.content_type,
            metadata: f.upload.metadata,
            modified_ms: now_ms(),
            checksums: BTreeMap::new(),
            signer: self.signer(),
            blake3: manifest.blake3.to_hex().to_string(),
        };
        let (c, i, b, k) = (self.catalog.clone(), f.id, f.bucket.clone(), f.key.clone());
        let cond = f.condition;
        blocking(move || Ok(c.finish_upload_if(&i, Some((&b, &k, &record)), &cond)?)).await?;
        self.renew_soon(vec![cid]);
        Ok(CompleteMultipartUploadOutput {
            bucket: Some(f.bucket),
            key: Some(f.key),
            e_tag: Some(ETag::Strong(f.etag)),
            ..Default::default()
        })
    }
}
