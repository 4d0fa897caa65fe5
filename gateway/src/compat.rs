//! Where s3s and S3 differ on the wire, repaired around s3s: a range whose end is past what s3s
//! parses ([`ClampedRange`]), and XML answers that must carry characters s3s writes raw
//! ([`repair_xml`]).

use bytes::Bytes;

/// The largest range end s3s parses (`i64::MAX`); S3 clamps any larger end to the object.
const LARGEST_END: u64 = i64::MAX as u64;

/// The `Range` to serve instead of `headers`' own when its end is past what s3s parses (s3s
/// refuses `bytes=0-18446744073709551615`, and any end beyond `i64::MAX`, as a bad header): the
/// same range ending at `i64::MAX`, which the gateway clamps to the object's size and answers
/// 206, as S3 does. `None` for every other range, left for s3s to judge.
fn clamped_range(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let spec = headers
        .get(http::header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Too many digits for a u64 is past the limit too.
    if !digits(first) || !digits(last) || last.parse::<u64>().is_ok_and(|l| l <= LARGEST_END) {
        return None;
    }
    http::HeaderValue::from_str(&format!("bytes={first}-{LARGEST_END}")).ok()
}

/// Query parameters that carry a presigned URL's signature.
const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Serves a GET or HEAD whose range s3s cannot parse (see [`clamped_range`]).
///
/// s3s verifies a request's signature before it parses the headers, and the `Range` header is
/// usually signed, so it cannot be changed on the way in. This route is called by s3s after the
/// signature (and so the `Range` it covers) was verified; it hands the request, range clamped
/// and signature removed, to `unsigned`: the same gateway behind an s3s service that checks no
/// signature, which nothing else can reach.
pub(crate) struct ClampedRange {
    unsigned: s3s::service::S3Service,
}

impl ClampedRange {
    /// A route answering through `unsigned` (a service of the same gateway without auth).
    pub(crate) fn new(unsigned: s3s::service::S3Service) -> Self {
        Self { unsigned }
    }
}

#[async_trait::async_trait]
impl s3s::route::S3Route for ClampedRange {
    fn is_match(
        &self,
        method: &http::Method,
        _uri: &http::Uri,
        headers: &http::HeaderMap,
        _extensions: &mut http::Extensions,
    ) -> bool {
        (method == http::Method::GET || method == http::Method::HEAD)
            && clamped_range(headers).is_some()
    }

    // `check_access` is s3s's default: the request must have been signed with valid credentials.

    async fn call(
        &self,
        req: s3s::S3Request<s3s::Body>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::Body>> {
        let mut headers = req.headers;
        if let Some(range) = clamped_range(&headers) {
            headers.insert(http::header::RANGE, range);
        }
        headers.remove(http::header::AUTHORIZATION);
        let mut uri = http::uri::Parts::from(req.uri);
        if let Some(pq) = &uri.path_and_query {
            let kept: Vec<&str> = pq
                .query()
                .unwrap_or_default()
                .split('&')
                .filter(|kv| {
                    // Named as s3s reads names: `X%2DAmz%2DSignature` is `X-Amz-Signature`.
                    let name =
                        crate::auth::decode_component(kv.split('=').next().unwrap_or_default());
                    !kv.is_empty() && !PRESIGN_PARAMS.contains(&name.as_str())
                })
                .collect();
            let rebuilt = if kept.is_empty() {
                pq.path().to_string()
            } else {
                format!("{}?{}", pq.path(), kept.join("&"))
            };
            uri.path_and_query = Some(
                rebuilt
                    .parse()
                    .map_err(|e| s3s::s3_error!(e, InvalidURI, "rebuilding the request URI"))?,
            );
        }
        let uri = http::Uri::from_parts(uri)
            .map_err(|e| s3s::s3_error!(e, InvalidURI, "rebuilding the request URI"))?;
        let mut inner = http::Request::new(req.input);
        *inner.method_mut() = req.method;
        *inner.uri_mut() = uri;
        *inner.headers_mut() = headers;
        let resp =
            self.unsigned.call(inner).await.map_err(|e| {
                s3s::s3_error!(InternalError, "serving a clamped range failed: {e:?}")
            })?;
        let (parts, body) = resp.into_parts();
        let mut out = s3s::S3Response::new(body);
        out.status = Some(parts.status);
        out.headers = parts.headers;
        Ok(out)
    }
}

/// Whether a response is an XML document s3s wrote (a listing, a result, an error), as opposed
/// to an object's own bytes, which are never changed: every object answer (GetObject, and so
/// an object stored as `application/xml`) carries an `ETag` header, and no s3s document does.
pub(crate) fn is_s3s_xml(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/xml"))
        && !headers.contains_key(http::header::ETAG)
}

/// `data` (a piece of an XML document) with the characters s3s writes raw made safe: a CR
/// becomes `&#13;` (an XML parser reads a raw CR as LF, so a key `a\rb` would list as `a\nb`),
/// and a control character XML 1.0 cannot carry at all (a NUL in an echoed key) becomes U+FFFD,
/// so the document stays well-formed. Control bytes never occur inside a UTF-8 sequence, so a
/// piece can be repaired on its own.
pub(crate) fn xml_safe(data: Bytes) -> Bytes {
    let unsafe_byte = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n');
    if !data.iter().any(|&b| unsafe_byte(b)) {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + 16);
    for &b in data.iter() {
        match b {
            b'\r' => out.extend_from_slice(b"&#13;"),
            b if unsafe_byte(b) => out.extend_from_slice("\u{fffd}".as_bytes()),
            b => out.push(b),
        }
    }
    Bytes::from(out)
}

/// `resp` with its XML document made safe by [`xml_safe`] when s3s wrote one whole (every
/// document but CompleteMultipartUpload's, which streams and is repaired frame by frame).
pub(crate) fn repair_xml(resp: http::Response<s3s::Body>) -> http::Response<s3s::Body> {
    if !is_s3s_xml(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Some(doc) = body.bytes() else {
        return http::Response::from_parts(parts, body);
    };
    let safe = xml_safe(doc.clone());
    if safe.len() == doc.len() {
        return http::Response::from_parts(parts, body);
    }
    if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(safe.len()),
        );
    }
    http::Response::from_parts(parts, s3s::Body::from(safe))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_after(value: &str) -> String {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RANGE, value.parse().unwrap());
        match clamped_range(&h) {
            Some(v) => v.to_str().unwrap().to_string(),
            None => value.to_string(),
        }
    }

    #[test]
    fn a_range_end_past_what_s3s_parses_is_clamped() {
        assert_eq!(
            range_after("bytes=0-18446744073709551615"),
            "bytes=0-9223372036854775807"
        );
        assert_eq!(
            range_after("bytes=5-99999999999999999999999"),
            "bytes=5-9223372036854775807"
        );
        for kept in [
            "bytes=0-9223372036854775807",
            "bytes=0-99",
            "bytes=-18446744073709551615",
            "bytes=7-",
            "bytes=a-18446744073709551615",
            "bytes=0-1,5-18446744073709551615",
            "items=0-18446744073709551615",
        ] {
            assert_eq!(range_after(kept), kept);
        }
    }

    #[test]
    fn xml_answers_carry_cr_and_no_illegal_character() {
        let doc = Bytes::from_static(b"<Key>a\rb\0c\td\ne</Key>");
        assert_eq!(
            &xml_safe(doc)[..],
            "<Key>a&#13;b\u{fffd}c\td\ne</Key>".as_bytes()
        );
        let plain = Bytes::from_static("<Key>ä/b</Key>".as_bytes());
        assert_eq!(xml_safe(plain.clone()), plain);
    }

    #[test]
    fn only_documents_without_an_etag_are_s3s_xml() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            "application/xml".parse().unwrap(),
        );
        assert!(is_s3s_xml(&h));
        h.insert(http::header::ETAG, "\"abc\"".parse().unwrap());
        assert!(!is_s3s_xml(&h));
        let mut other = http::HeaderMap::new();
        other.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_s3s_xml(&other));
    }
}
