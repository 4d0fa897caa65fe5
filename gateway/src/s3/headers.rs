//! What a request names and declares, checked before any body is read: the key, the version,
//! user metadata and the content type; and the metadata a read answers with.

use std::collections::BTreeMap;

use cairn_chunker::cids;
use s3s::dto::*;

use crate::catalog::{Location, ObjectRecord};
use crate::error::Error;

/// Keys S3 takes: 1 to 1024 bytes, and only characters XML 1.0 can carry (no control
/// character but tab, LF and CR), so that every listing that holds them can be read.
pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 1024 || key.chars().any(xml_unsafe) {
        return Err(Error::InvalidArgument(format!(
            "invalid object key {key:?}: 1..=1024 bytes, and no control character but tab, \
             LF and CR (XML cannot carry them in listings)"
        )));
    }
    Ok(())
}

/// Most user metadata (`x-amz-meta-*` keys and values, in bytes) a write may carry: S3's limit.
pub const MAX_USER_METADATA: usize = 2 << 10;

/// The limits on what a write carries in its headers, checked before its body is read: user
/// metadata (S3's 2 KiB, `MetadataTooLarge`) and the content type (what a manifest holds). Every
/// path that writes them (PutObject, CopyObject with `REPLACE`, CreateMultipartUpload) checks
/// them, and so does an import (a restore takes what an older gateway exported as it is).
pub(crate) fn check_object_headers<'a>(
    content_type: Option<&str>,
    metadata: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), Error> {
    let size: usize = metadata.into_iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        return Err(Error::MetadataTooLarge {
            size,
            max: MAX_USER_METADATA,
        });
    }
    if let Some(ct) = content_type
        && ct.len() > cairn_chunker::manifest::MAX_CONTENT_TYPE
    {
        return Err(Error::InvalidArgument(format!(
            "Content-Type is {} bytes, over the {}-byte limit",
            ct.len(),
            cairn_chunker::manifest::MAX_CONTENT_TYPE
        )));
    }
    Ok(())
}

/// This gateway keeps one version of each key, the one S3 calls `null`: a request for any other
/// version is refused as S3 refuses it on a bucket without versioning.
pub(super) fn no_versions(version_id: Option<&str>) -> Result<(), Error> {
    match version_id {
        None | Some("null") => Ok(()),
        Some(v) => Err(Error::NoSuchVersion(v.to_string())),
    }
}

/// Characters XML 1.0 cannot carry (most C0 controls, U+FFFE, U+FFFF): a key holding one can
/// be neither stored nor echoed in an XML answer.
pub(super) fn xml_unsafe(c: char) -> bool {
    matches!(
        c,
        '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'
    )
}

pub(super) fn metadata_out(r: &ObjectRecord) -> Metadata {
    let mut m: Metadata = r
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match &r.location {
        Location::Object(c) => {
            m.insert("cairn-cid".into(), c.to_string());
        }
        Location::Slice { object, offset } => {
            m.insert("cairn-cid".into(), object.to_string());
            m.insert("cairn-offset".into(), offset.to_string());
        }
        Location::Inline(bytes) => {
            m.insert("cairn-cid".into(), cids::raw(bytes).to_string());
        }
    }
    m.insert("cairn-signer".into(), r.signer.clone());
    if !r.blake3.is_empty() {
        m.insert("cairn-blake3".into(), r.blake3.clone());
    }
    m
}

pub(super) fn metadata_in(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("cairn-"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_xml_cannot_carry_are_refused() {
        for ok in ["a", "tab\there", "line\nbreak\r", "\u{7f}\u{e9}\u{fffd}"] {
            assert!(check_key(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "nul\0", "bell\u{7}", "esc\u{1b}", "\u{b}", "\u{ffff}"] {
            assert!(
                matches!(check_key(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        assert!(check_key(&"k".repeat(1025)).is_err());
    }
}
