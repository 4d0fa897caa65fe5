//! Listing a bucket's keys: one page of a range scan, by prefix, after a marker, grouped into
//! common prefixes by a delimiter.

use rocksdb::{Direction, IteratorMode};

use super::keys::{CF_OBJECTS, dec, object_key};
use super::{Catalog, CatalogError, ObjectRecord};

/// A page of a listing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Objects (key, record), in key order.
    pub objects: Vec<(String, ObjectRecord)>,
    /// Common prefixes (with a delimiter), in order.
    pub prefixes: Vec<String>,
    /// The last key or prefix returned, if the listing was cut short.
    pub next: Option<String>,
}

impl Catalog {
    /// Lists keys of `bucket` starting with `prefix`, strictly after `after`, grouping by
    /// `delimiter`, at most `max` entries (objects + prefixes).
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Listing, CatalogError> {
        let base = object_key(bucket, "");
        let start_key = match after {
            Some(a) if a >= prefix => object_key(bucket, a),
            _ => object_key(bucket, prefix),
        };
        let mut listing = Listing::default();
        let mut last_prefix: Option<String> = None;
        let mut count = 0;
        for item in self.db.iterator_cf(
            self.cf(CF_OBJECTS)?,
            IteratorMode::From(&start_key, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&base) {
                break;
            }
            let key = String::from_utf8_lossy(&k[base.len()..]).into_owned();
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if let Some(d) = delimiter.filter(|d| !d.is_empty())
                && let Some(pos) = key[prefix.len()..].find(d)
            {
                let common = key[..prefix.len() + pos + d.len()].to_string();
                if last_prefix.as_deref() == Some(common.as_str())
                    || after.is_some_and(|a| a.starts_with(&common))
                {
                    continue;
                }
                if count == max {
                    listing.next = listing
                        .objects
                        .last()
                        .map(|(k, _)| k.clone())
                        .max(last_prefix.clone());
                    return Ok(listing);
                }
                last_prefix = Some(common.clone());
                listing.prefixes.push(common);
                count += 1;
                continue;
            }
            if count == max {
                listing.next = Some(
                    listing
                        .objects
                        .last()
                        .map(|(k, _)| k.clone())
                        .max(last_prefix.clone())
                        .unwrap_or_default(),
                );
                return Ok(listing);
            }
            listing.objects.push((key, dec(&v)?));
            count += 1;
        }
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BucketRecord;
    use crate::catalog::testing::rec;

    #[test]
    fn listing_with_prefix_delimiter_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.create_bucket("b", &BucketRecord { created_ms: 0 })
            .unwrap();
        let keys = ["a.txt", "dir/1", "dir/2", "dir/sub/3", "dir2/x", "z"];
        for (i, k) in keys.iter().enumerate() {
            c.put_object("b", k, &rec(i as u8)).unwrap();
        }
        c.create_bucket("bb", &BucketRecord { created_ms: 0 })
            .unwrap();
        c.put_object("bb", "not-in-b", &rec(9)).unwrap();
        let all = c.list("b", "", None, None, 1000).unwrap();
        assert_eq!(
            all.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            keys
        );
        let top = c.list("b", "", Some("/"), None, 1000).unwrap();
        assert_eq!(
            top.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["a.txt", "z"]
        );
        assert_eq!(top.prefixes, ["dir/", "dir2/"]);
        let dir = c.list("b", "dir/", Some("/"), None, 1000).unwrap();
        assert_eq!(
            dir.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["dir/1", "dir/2"]
        );
        assert_eq!(dir.prefixes, ["dir/sub/"]);
        // Pages of two, resuming after the last key.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = c.list("b", "", None, after.as_deref(), 2).unwrap();
            seen.extend(page.objects.iter().map(|(k, _)| k.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, keys);
        // Pages with a delimiter never repeat a prefix.
        let p1 = c.list("b", "", Some("/"), None, 2).unwrap();
        assert_eq!((p1.objects.len(), p1.prefixes.len()), (1, 1));
        let p2 = c.list("b", "", Some("/"), p1.next.as_deref(), 10).unwrap();
        assert_eq!(p2.prefixes, ["dir2/"]);
        assert_eq!(
            p2.objects
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["z"]
        );
        assert!(!c.bucket_is_empty("b").unwrap());
    }
}
