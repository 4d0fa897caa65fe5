//! ListMultipartUploads pages, as S3 cuts them: uploads in key order (and, for one key, in id
//! order, which is the order they started: ids begin with their start time), those under
//! `prefix`, after (`key-marker`, `upload-id-marker`),
//! keys with `delimiter` past the prefix rolled into common prefixes, at most `max-uploads`
//! entries (an upload or a common prefix each), and the markers of the next page.

use crate::catalog::UploadRecord;

/// One page.
#[derive(Debug, Default, PartialEq)]
pub(super) struct UploadsPage {
    /// Uploads listed: (upload id, record).
    pub uploads: Vec<(String, UploadRecord)>,
    /// Common prefixes, in order.
    pub prefixes: Vec<String>,
    /// Where the next page starts (`NextKeyMarker`, `NextUploadIdMarker`), when there is one.
    pub next: Option<(String, Option<String>)>,
}

/// What a page asks for.
#[derive(Debug, Default)]
pub(super) struct UploadsQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    pub key_marker: Option<&'a str>,
    pub upload_id_marker: Option<&'a str>,
    pub max: usize,
}

/// Cuts a page out of `uploads`, which are in key order and, within a key, in id order (as
/// `Catalog::uploads` returns them). The markers are compared, not looked up, so a page after
/// an upload that has since been aborted or completed starts in the right place.
pub(super) fn page(uploads: Vec<(String, UploadRecord)>, q: &UploadsQuery<'_>) -> UploadsPage {
    let mut out = UploadsPage::default();
    if q.max == 0 {
        return out;
    }
    // After the key marker: later keys, and for the marker's own key the uploads whose ids
    // sort after the upload-id marker (S3 ignores an upload-id marker without a key marker).
    let delimiter = q.delimiter.filter(|d| !d.is_empty());
    let mut last: Option<(String, Option<String>)> = None;
    let mut count = 0;
    for (id, u) in uploads {
        if !u.key.starts_with(q.prefix) {
            continue;
        }
        if let Some(km) = q.key_marker {
            if u.key.as_str() < km {
                continue;
            }
            if u.key == km && q.upload_id_marker.is_none_or(|idm| id.as_str() <= idm) {
                continue;
            }
        }
        let rolled = delimiter.and_then(|d| {
            let rest = &u.key[q.prefix.len()..];
            rest.find(d)
                .map(|pos| u.key[..q.prefix.len() + pos + d.len()].to_string())
        });
        if let Some(common) = rolled {
            // A common prefix at or before the key marker was listed on an earlier page.
            if q.key_marker.is_some_and(|km| common.as_str() <= km)
                || out.prefixes.last() == Some(&common)
            {
                continue;
            }
            if count == q.max {
                out.next = last;
                return out;
            }
            count += 1;
            last = Some((common.clone(), None));
            out.prefixes.push(common);
            continue;
        }
        if count == q.max {
            out.next = last;
            return out;
        }
        count += 1;
        last = Some((u.key.clone(), Some(id.clone())));
        out.uploads.push((id, u));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(key: &str, created_ms: u64) -> UploadRecord {
        UploadRecord {
            bucket: "b".into(),
            key: key.into(),
            created_ms,
            content_type: None,
            metadata: Default::default(),
            erasure: None,
        }
    }

    fn all() -> Vec<(String, UploadRecord)> {
        [
            ("u1", "a", 1),
            ("u5", "a", 2),
            ("u9", "a", 3),
            ("u2", "b/1", 1),
            ("u3", "b/2", 1),
            ("u4", "c", 1),
        ]
        .into_iter()
        .map(|(id, k, t)| (id.to_string(), up(k, t)))
        .collect()
    }

    fn ids(p: &UploadsPage) -> Vec<&str> {
        p.uploads.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Every entry, page by page, following the markers as a client does.
    fn walk(q: UploadsQuery<'_>) -> (Vec<String>, usize) {
        let (mut seen, mut pages) = (Vec::new(), 0);
        let (mut km, mut idm): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = page(
                all(),
                &UploadsQuery {
                    key_marker: km.as_deref(),
                    upload_id_marker: idm.as_deref(),
                    ..q
                },
            );
            pages += 1;
            seen.extend(page.uploads.iter().map(|(id, _)| id.clone()));
            seen.extend(page.prefixes.iter().cloned());
            match page.next {
                Some((k, i)) => (km, idm) = (Some(k), i),
                None => return (seen, pages),
            }
        }
    }

    #[test]
    fn pages_follow_the_markers_through_uploads_of_one_key() {
        let q = UploadsQuery {
            max: 2,
            ..Default::default()
        };
        let first = page(all(), &q);
        assert_eq!(ids(&first), ["u1", "u5"]);
        assert_eq!(first.next, Some(("a".into(), Some("u5".into()))));
        let (seen, pages) = walk(q);
        assert_eq!(seen, ["u1", "u5", "u9", "u2", "u3", "u4"]);
        // The upload a page ended on is gone (aborted) before the next page is asked for: the
        // next page still starts right after it.
        let rest: Vec<_> = all().into_iter().filter(|(id, _)| id != "u5").collect();
        let next = page(
            rest,
            &UploadsQuery {
                key_marker: Some("a"),
                upload_id_marker: Some("u5"),
                max: 2,
                ..Default::default()
            },
        );
        assert_eq!(ids(&next), ["u9", "u2"]);
        assert_eq!(pages, 3);
        // The last page is not truncated.
        let one = UploadsQuery {
            max: 6,
            ..Default::default()
        };
        assert_eq!(page(all(), &one).next, None);
    }

    #[test]
    fn delimiters_roll_keys_into_prefixes_that_count_once() {
        let q = UploadsQuery {
            delimiter: Some("/"),
            max: 3,
            ..Default::default()
        };
        let p = page(all(), &q);
        assert_eq!(ids(&p), ["u1", "u5", "u9"]);
        assert!(p.prefixes.is_empty());
        let (seen, _) = walk(UploadsQuery {
            delimiter: Some("/"),
            max: 1,
            ..Default::default()
        });
        assert_eq!(seen, ["u1", "u5", "u9", "b/", "u4"]);
        // Under a prefix, the delimiter applies past it.
        let under = page(
            all(),
            &UploadsQuery {
                prefix: "b/",
                delimiter: Some("/"),
                max: 10,
                ..Default::default()
            },
        );
        assert_eq!(ids(&under), ["u2", "u3"]);
    }

    #[test]
    fn markers_alone_and_odd_values_are_read_as_s3_reads_them() {
        // An upload-id marker without a key marker is ignored.
        let p = page(
            all(),
            &UploadsQuery {
                upload_id_marker: Some("u1"),
                max: 10,
                ..Default::default()
            },
        );
        assert_eq!(p.uploads.len(), 6);
        // A key marker alone starts after every upload of that key.
        let p = page(
            all(),
            &UploadsQuery {
                key_marker: Some("a"),
                max: 10,
                ..Default::default()
            },
        );
        assert_eq!(ids(&p), ["u2", "u3", "u4"]);
        // An id marker naming no upload of the key: those of the key whose ids sort after it.
        let p = page(
            all(),
            &UploadsQuery {
                key_marker: Some("a"),
                upload_id_marker: Some("u4"),
                max: 10,
                ..Default::default()
            },
        );
        assert_eq!(ids(&p), ["u5", "u9", "u2", "u3", "u4"]);
        // max 0: an empty page, not truncated.
        assert_eq!(
            page(all(), &UploadsQuery::default()),
            UploadsPage::default()
        );
    }
}
