//! Listings: ListObjects and ListObjectsV2 pages over the catalog (prefixes, delimiters,
//! markers and continuation tokens), page sizes, and keys percent-encoded when asked.

use cairn_chunker::manifest::hex;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::{Gateway, blocking, timestamp};
use crate::catalog::ObjectRecord;
use crate::error::Error;

impl Gateway {
    pub(super) async fn handle_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.metrics.requests.inc();
        let input = req.input;
        let after = match &input.continuation_token {
            Some(t) => Some(decode_token(t).ok_or_else(|| {
                Error::InvalidArgument("the continuation token is not valid".into())
            })?),
            None => input.start_after.clone(),
        };
        let enc = KeyEncoding::of(input.encoding_type.as_ref())?;
        let page = self
            .page(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                after,
                input.max_keys,
                enc,
            )
            .await?;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc.apply(page.prefix)),
            max_keys: Some(page.max as i32),
            key_count: Some((page.contents.len() + page.prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(|a| enc.apply(a)),
            delimiter: input.delimiter.map(|d| enc.apply(d)),
            encoding_type: enc.echo(),
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next.as_deref().map(encode_token),
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.metrics.requests.inc();
        let input = req.input;
        let enc = KeyEncoding::of(input.encoding_type.as_ref())?;
        let page = self
            .page(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                input.marker.clone(),
                input.max_keys,
                enc,
            )
            .await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc.apply(page.prefix)),
            marker: input.marker.map(|m| enc.apply(m)),
            max_keys: Some(page.max as i32),
            delimiter: input.delimiter.map(|d| enc.apply(d)),
            encoding_type: enc.echo(),
            is_truncated: Some(page.next.is_some()),
            next_marker: page.next.map(|m| enc.apply(m)),
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }

    /// One page of a listing (both ListObjects versions).
    async fn page(
        &self,
        bucket: &str,
        prefix: Option<String>,
        delimiter: Option<String>,
        after: Option<String>,
        max_keys: Option<i32>,
        enc: KeyEncoding,
    ) -> Result<Page, Error> {
        self.bucket_exists(bucket).await?;
        let max = page_size("max-keys", max_keys)?;
        let prefix = prefix.unwrap_or_default();
        if max == 0 {
            // Nothing asked, nothing more to give: S3 answers an empty, complete page (a
            // truncated one with no token would have a pager ask again forever).
            return Ok(Page {
                max,
                prefix,
                contents: Vec::new(),
                prefixes: Vec::new(),
                next: None,
            });
        }
        let (c, b, p) = (self.catalog.clone(), bucket.to_string(), prefix.clone());
        let listing =
            blocking(move || Ok(c.list(&b, &p, delimiter.as_deref(), after.as_deref(), max)?))
                .await?;
        Ok(Page {
            max,
            prefix,
            contents: listing
                .objects
                .iter()
                .map(|(k, r)| object_entry(enc.apply(k.clone()), r))
                .collect(),
            prefixes: listing
                .prefixes
                .into_iter()
                .map(|p| CommonPrefix {
                    prefix: Some(enc.apply(p)),
                })
                .collect(),
            next: listing.next,
        })
    }
}

/// How a listing writes keys, prefixes, delimiters and markers: as they are, or percent-encoded
/// when the request asked for `encoding-type=url`, as S3 does (botocore always asks, and decodes
/// what the response says is encoded).
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyEncoding {
    url: bool,
}

impl KeyEncoding {
    /// The encoding a request asked for: none, or `url`; anything else is S3's 400
    /// `InvalidArgument`.
    pub(super) fn of(requested: Option<&EncodingType>) -> Result<Self, Error> {
        match requested {
            None => Ok(KeyEncoding { url: false }),
            Some(e) if e.as_str().eq_ignore_ascii_case(EncodingType::URL) => {
                Ok(KeyEncoding { url: true })
            }
            Some(e) => Err(Error::InvalidArgument(format!(
                "Invalid Encoding Method specified in Request: {:?} (the only one is \"url\")",
                e.as_str()
            ))),
        }
    }

    /// `s` as the listing carries it: with `url`, every byte but A-Z a-z 0-9 `-._~` and '/' as
    /// `%XX` (a space as `%20`, '+' as `%2B`).
    pub(super) fn apply(self, s: String) -> String {
        let keep =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/');
        if !self.url || s.bytes().all(keep) {
            return s;
        }
        let mut out = String::with_capacity(s.len() * 3);
        for b in s.bytes() {
            if keep(b) {
                out.push(char::from(b));
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
        out
    }

    /// The `EncodingType` the response declares: only the one it is encoded with.
    pub(super) fn echo(self) -> Option<EncodingType> {
        self.url
            .then(|| EncodingType::from_static(EncodingType::URL))
    }
}

/// A listing page in S3 terms.
struct Page {
    max: usize,
    prefix: String,
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    /// The last key or prefix returned, when there is more.
    next: Option<String>,
}

fn object_entry(key: String, r: &ObjectRecord) -> Object {
    Object {
        key: Some(key),
        size: Some(r.size as i64),
        e_tag: Some(ETag::Strong(r.etag.clone())),
        last_modified: Some(timestamp(r.modified_ms)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

/// A listing's page size (`max-keys`, `max-parts`): 1000 when not given, at most 1000, and a
/// negative one refused as S3 refuses it.
pub(super) fn page_size(name: &str, asked: Option<i32>) -> Result<usize, Error> {
    match asked {
        None => Ok(1000),
        Some(n) if n < 0 => Err(Error::InvalidArgument(format!(
            "{name} must be a number from 0 to 2147483647, not {n}"
        ))),
        Some(n) => Ok(n.min(1000) as usize),
    }
}

fn encode_token(key: &str) -> String {
    hex(key.as_bytes())
}

fn decode_token(token: &str) -> Option<String> {
    String::from_utf8(decode_hex(token)?).ok()
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_percent_encode_keys_as_s3_does_when_asked() {
        let url = KeyEncoding { url: true };
        for (key, listed) in [
            ("plain/x-y_z.~", "plain/x-y_z.~"),
            ("a+b.txt", "a%2Bb.txt"),
            ("e f", "e%20f"),
            ("c%2Fd", "c%252Fd"),
            ("test_file(3).png", "test_file%283%29.png"),
            ("\u{e9}\t\u{1}", "%C3%A9%09%01"),
        ] {
            assert_eq!(url.apply(key.into()), listed);
            assert_eq!(KeyEncoding { url: false }.apply(key.into()), key);
        }
        let of = |e: &str| KeyEncoding::of(Some(&EncodingType::from(e.to_string())));
        assert!(of("url").unwrap().url && of("URL").unwrap().url);
        assert!(matches!(of("base64"), Err(Error::InvalidArgument(_))));
        assert!(!KeyEncoding::of(None).unwrap().url);
    }
}
