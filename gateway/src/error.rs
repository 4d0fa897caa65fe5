//! Gateway errors, each mapped to its S3 error code and HTTP status in one exhaustive match.

use s3s::{S3Error, S3ErrorCode};

use crate::catalog::CatalogError;

/// Everything the gateway can answer with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bucket does not exist.
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    /// The key does not exist.
    #[error("no object {key} in bucket {bucket}")]
    NoSuchKey {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The multipart upload does not exist (or was completed/aborted).
    #[error("no multipart upload {0}")]
    NoSuchUpload(String),
    /// CreateBucket of a bucket that exists.
    #[error("bucket {0} already exists")]
    BucketExists(String),
    /// DeleteBucket of a bucket with objects or uploads.
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    /// A bucket name S3 does not allow.
    #[error("invalid bucket name {0:?}: use 3-63 lowercase letters, digits, '.' and '-'")]
    InvalidBucketName(String),
    /// A bad argument.
    #[error("{0}")]
    InvalidArgument(String),
    /// A range outside the object.
    #[error("the requested range is not satisfiable for an object of {0} bytes")]
    InvalidRange(u64),
    /// A conditional request's condition failed.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// If-None-Match / If-Modified-Since matched: the client's copy is current.
    #[error("not modified")]
    NotModified,
    /// Too large for one PUT.
    #[error(
        "object of {size} bytes is over the {max}-byte limit of a single PUT: use multipart upload"
    )]
    EntityTooLarge {
        /// Size sent.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// A part other than the last is under the smallest part size (5 MiB, as S3).
    #[error("part {part} is {size} bytes; every part but the last must be at least {min} bytes")]
    EntityTooSmall {
        /// Part number.
        part: u32,
        /// Its size.
        size: u64,
        /// The smallest part size.
        min: u64,
    },
    /// A part in CompleteMultipartUpload does not match what was uploaded.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// Parts not in ascending order.
    #[error("parts must be listed in ascending order")]
    InvalidPartOrder,
    /// User metadata over S3's limit (sent in headers: refused before the body is read).
    #[error(
        "your metadata headers exceed the maximum allowed metadata size: {size} bytes of \
         x-amz-meta-* keys and values, over {max}"
    )]
    MetadataTooLarge {
        /// Bytes of keys and values sent.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A request body that is not the XML S3 expects (or that XML 1.0 cannot carry).
    #[error("{0}")]
    MalformedXml(String),
    /// A request that names a version of an object (this gateway keeps one version per key).
    #[error("invalid version id {0:?}: versioning is not enabled on this gateway")]
    NoSuchVersion(String),
    /// A checksum or Content-MD5 did not match the body.
    #[error("{0}")]
    BadDigest(String),
    /// The body ended early or could not be read.
    #[error("incomplete body: {0}")]
    IncompleteBody(String),
    /// The client stopped sending the body.
    #[error("{0}: the request was dropped; send the body without pauses and retry")]
    RequestTimeout(String),
    /// The gateway's own disk is full: its catalog cannot take writes.
    #[error(
        "the gateway's own disk is full, so its catalog cannot record the change ({0}); free \
         space on the disk of its data directory (writes resume by themselves once 64 MiB are free)"
    )]
    DiskFull(String),
    /// Not enough of the network answered.
    #[error("storage network unavailable: {0}")]
    Unavailable(String),
    /// A bug or a broken catalog.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The S3 error code.
    pub fn s3_code(&self) -> S3ErrorCode {
        match self {
            Error::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
            Error::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
            Error::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
            Error::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
            Error::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
            Error::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
            Error::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
            Error::InvalidRange(_) => S3ErrorCode::InvalidRange,
            Error::PreconditionFailed(_) => S3ErrorCode::PreconditionFailed,
            Error::NotModified => S3ErrorCode::NotModified,
            Error::EntityTooLarge { .. } => S3ErrorCode::EntityTooLarge,
            Error::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
            Error::InvalidPart(_) => S3ErrorCode::InvalidPart,
            Error::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
            Error::MetadataTooLarge { .. } => S3ErrorCode::MetadataTooLarge,
            Error::MalformedXml(_) => S3ErrorCode::MalformedXML,
            Error::NoSuchVersion(_) => S3ErrorCode::InvalidArgument,
            Error::BadDigest(_) => S3ErrorCode::BadDigest,
            Error::IncompleteBody(_) => S3ErrorCode::IncompleteBody,
            Error::RequestTimeout(_) => S3ErrorCode::RequestTimeout,
            Error::Unavailable(_) | Error::DiskFull(_) => S3ErrorCode::ServiceUnavailable,
            Error::Internal(_) => S3ErrorCode::InternalError,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Error::NoSuchBucket(_) | Error::NoSuchKey { .. } | Error::NoSuchUpload(_) => {
                S::NOT_FOUND
            }
            Error::BucketExists(_) | Error::BucketNotEmpty(_) => S::CONFLICT,
            Error::InvalidBucketName(_)
            | Error::InvalidArgument(_)
            | Error::EntityTooLarge { .. }
            | Error::EntityTooSmall { .. }
            | Error::InvalidPart(_)
            | Error::InvalidPartOrder
            | Error::MetadataTooLarge { .. }
            | Error::MalformedXml(_)
            | Error::NoSuchVersion(_)
            | Error::BadDigest(_)
            | Error::IncompleteBody(_)
            | Error::RequestTimeout(_) => S::BAD_REQUEST,
            Error::InvalidRange(_) => S::RANGE_NOT_SATISFIABLE,
            Error::PreconditionFailed(_) => S::PRECONDITION_FAILED,
            Error::NotModified => S::NOT_MODIFIED,
            Error::Unavailable(_) | Error::DiskFull(_) => S::SERVICE_UNAVAILABLE,
            Error::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for S3Error {
    fn from(e: Error) -> Self {
        let mut err = S3Error::with_message(e.s3_code(), e.to_string());
        err.set_status_code(e.status());
        err
    }
}

impl From<CatalogError> for Error {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NoSuchBucket(b) => Error::NoSuchBucket(b),
            CatalogError::BucketNotEmpty(b) => Error::BucketNotEmpty(b),
            CatalogError::PreconditionFailed(why) => Error::PreconditionFailed(why),
            CatalogError::NoSuchUpload(id) => Error::NoSuchUpload(id),
            CatalogError::DiskFull(e) => Error::DiskFull(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<cairn_client::error::ClientError> for Error {
    fn from(e: cairn_client::error::ClientError) -> Self {
        use cairn_client::error::ClientError as C;
        match e {
            // The body being stored could not be read (its stream failed or ended short).
            C::Read { .. } => Error::IncompleteBody(e.to_string()),
            // What the operator can do about it, as the CLI says it too.
            C::NetworkFull { .. } => Error::Unavailable(format!(
                "{e}; `cairn nodes` shows each node's space (free disk space on the nodes, raise \
                 their storage.capacity, or add nodes)"
            )),
            C::NoPeers
            | C::Unreachable { .. }
            | C::NotEnoughNodes { .. }
            | C::Upload { .. }
            | C::ManifestUpload { .. }
            | C::ManifestUnavailable { .. }
            | C::StripeLost { .. }
            | C::Swarm(_)
            | C::Data(_) => Error::Unavailable(e.to_string()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

/// What to tell a client for an error s3s raises before a request reaches the gateway (a bad
/// signature, an unknown access key, a bucket name or key its parser refuses). s3s sends most of
/// these with no message, or one that does not say what to do.
fn hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "SignatureDoesNotMatch" => {
            "the request's signature does not match: the secret key is wrong, or the request was \
             changed after it was signed; use the secret key the gateway printed when it started \
             (secret_key in its config.toml)"
        }
        "NotSignedUp" | "InvalidAccessKeyId" => {
            "this gateway does not know the access key: use the access key it printed when it \
             started (access_key in its config.toml)"
        }
        "InvalidBucketName" => {
            "invalid bucket name: use 3-63 lowercase letters, digits, '.' and '-', starting and \
             ending with a letter or digit"
        }
        "KeyTooLongError" => "the object key is longer than 1024 bytes",
        "InvalidURI" => "the request's path or query string could not be parsed",
        "MissingContentLength" => "send the body with a Content-Length header",
        "IncompleteBody" => "the body ended before its Content-Length",
        "MethodNotAllowed" => "this method is not allowed on this resource",
        _ => return None,
    })
}

/// XML text as it reads (for logs): the five predefined entities replaced.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// An S3 error document as the gateway sends it: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorDocument {
    /// `<Code>`.
    pub code: String,
    /// `<Message>`, once explained.
    pub message: Option<String>,
}

/// Reads an error document (`<Error><Code>…</Code>[<Message>…</Message>]…</Error>`) and, when
/// it has no message, or one that does not help (`NotSignedUp`), puts in what the client
/// should do. Returns the document and the body to send (`None`: send `body` unchanged).
/// Anything that is not such a document is left alone.
pub(crate) fn explain(body: &[u8]) -> Option<(ErrorDocument, Option<Vec<u8>>)> {
    let text = std::str::from_utf8(body).ok()?;
    let between = |open: &str, close: &str| -> Option<(usize, usize)> {
        let start = text.find(open)? + open.len();
        let end = start + text[start..].find(close)?;
        Some((start, end))
    };
    if !text.contains("<Error>") {
        return None;
    }
    let (c0, c1) = between("<Code>", "</Code>")?;
    let code = unescape(&text[c0..c1]);
    let message = between("<Message>", "</Message>");
    let replace = message.is_none() || code == "NotSignedUp";
    let Some(hint) = hint(&code).filter(|_| replace) else {
        let message = message.map(|(a, b)| unescape(&text[a..b]));
        return Some((ErrorDocument { code, message }, None));
    };
    let mut out = String::with_capacity(text.len() + hint.len() + 20);
    match message {
        Some((a, b)) => {
            out.push_str(&text[..a]);
            out.push_str(hint);
            out.push_str(&text[b..]);
        }
        None => {
            let after_code = c1 + "</Code>".len();
            out.push_str(&text[..after_code]);
            out.push_str("<Message>");
            out.push_str(hint);
            out.push_str("</Message>");
            out.push_str(&text[after_code..]);
        }
    }
    let doc = ErrorDocument {
        code,
        message: Some(hint.to_string()),
    };
    Some((doc, Some(out.into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_errors_get_a_message_and_others_are_left_alone() {
        let bare = br#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code></Error>"#;
        let (doc, body) = explain(bare).unwrap();
        assert_eq!(doc.code, "SignatureDoesNotMatch");
        let body = String::from_utf8(body.unwrap()).unwrap();
        assert!(body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code><Message>the request's signature"#), "{body}");
        assert!(body.ends_with("</Message></Error>"), "{body}");
        assert_eq!(doc.message.as_deref(), hint("SignatureDoesNotMatch"));

        // An unhelpful message is replaced.
        let unhelpful = b"<Error><Code>NotSignedUp</Code><Message>Your account is not signed up</Message><RequestId>1</RequestId></Error>";
        let (_, body) = explain(unhelpful).unwrap();
        let body = String::from_utf8(body.unwrap()).unwrap();
        assert!(!body.contains("signed up"), "{body}");
        assert!(
            body.contains(
                "(access_key in its config.toml)</Message><RequestId>1</RequestId></Error>"
            ),
            "{body}"
        );

        // The gateway's own messages stay.
        let ours = b"<Error><Code>InvalidBucketName</Code><Message>invalid bucket name \"ab\"</Message></Error>";
        let (doc, body) = explain(ours).unwrap();
        assert_eq!(body, None);
        assert_eq!(doc.message.as_deref(), Some("invalid bucket name \"ab\""));
        // A code with no hint and no message is passed on as it is.
        let (doc, body) = explain(b"<Error><Code>Whatever</Code></Error>").unwrap();
        assert_eq!(
            (doc.code.as_str(), doc.message, body),
            ("Whatever", None, None)
        );
        // Messages read as text, for the log.
        let escaped = b"<Error><Code>X</Code><Message>the gateway&apos;s &lt;disk&gt; &amp; more</Message></Error>";
        let (doc, body) = explain(escaped).unwrap();
        assert_eq!(
            (doc.message.as_deref(), body),
            (Some("the gateway's <disk> & more"), None)
        );
        // Not an error document.
        assert_eq!(
            explain(b"<ListBucketResult><Code>x</Code></ListBucketResult>"),
            None
        );
        assert_eq!(explain(b"\xff\xfe"), None);
        assert_eq!(explain(b"<Error><Code>unterminated"), None);
    }

    #[test]
    fn hints_need_no_xml_escaping() {
        for code in [
            "SignatureDoesNotMatch",
            "NotSignedUp",
            "InvalidAccessKeyId",
            "InvalidBucketName",
            "KeyTooLongError",
            "InvalidURI",
            "MissingContentLength",
            "IncompleteBody",
            "MethodNotAllowed",
        ] {
            let h = hint(code).unwrap();
            assert!(!h.contains(['<', '>', '&']), "{code}: {h}");
        }
    }

    /// A body that could not be read is the client's incomplete request, told apart by the
    /// error's type, whatever its text says.
    #[test]
    fn a_body_that_cannot_be_read_is_an_incomplete_body() {
        use cairn_chunker::chunking::ChunkError;
        use cairn_chunker::pipeline::EncodeError;
        use cairn_client::error::ClientError;
        let unread = || std::io::Error::other("the body ended 10 bytes short");
        for e in [
            EncodeError::Io(unread()),
            EncodeError::Chunk(ChunkError::Io(unread())),
        ] {
            let e = Error::from(ClientError::from(e));
            assert!(matches!(e, Error::IncompleteBody(_)), "{e:?}");
            assert!(e.to_string().contains("10 bytes short"), "{e}");
        }
        let e = Error::from(ClientError::from(EncodeError::Params(
            "reading input: not an input error".into(),
        )));
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
    }

    #[test]
    fn every_error_has_a_code_and_status_that_agree() {
        let all = [
            Error::NoSuchBucket("b".into()),
            Error::NoSuchKey {
                bucket: "b".into(),
                key: "k".into(),
            },
            Error::BucketNotEmpty("b".into()),
            Error::InvalidRange(5),
            Error::PreconditionFailed("x".into()),
            Error::NotModified,
            Error::EntityTooLarge { size: 1, max: 0 },
            Error::IncompleteBody("x".into()),
            Error::RequestTimeout("x".into()),
            Error::Unavailable("x".into()),
            Error::DiskFull("x".into()),
        ];
        for e in all {
            let code = e.s3_code();
            if let Some(default) = code.status_code() {
                assert_eq!(default, e.status(), "{code:?}");
            }
        }
    }
}
