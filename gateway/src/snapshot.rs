//! Moving catalog entries to and from dataset manifests on the network.
//!
//! - **Import** makes an uploaded object or dataset (from `cairn put`) visible as S3 keys under a
//!   bucket and prefix, without copying a byte: the records point at the same manifests and packs.
//! - **Export** writes the whole catalog (every bucket, key, ETag, content type, user metadata and
//!   checksum) as one signed dataset manifest, so the gateway's own disk holds nothing that cannot
//!   be rebuilt. **Restore** rebuilds a catalog from such an export.
//!
//! An export is an ordinary dataset: `cairn get EXPORT_CID -o dir` yields `dir/BUCKET/KEY` for
//! every key that is a valid path, and `dir/.cairn-escaped/BUCKET/<blake3 of key>` for keys that
//! are not (`a//b`, `../x`, or a key that is also another key's directory). The S3 bucket and key
//! of every entry are kept in its `meta`, which is what restore reads.

use std::collections::{BTreeMap, BTreeSet};

use cairn_chunker::Cid;
use cairn_chunker::manifest::{
    DatasetEntry, DatasetManifest, Location as EntryLocation, check_path, hex,
};
use cairn_client::get::{Manifest, fetch_manifest};
use cairn_client::put::publish_manifest;
use cairn_node::protocol::ManifestKind;
use serde::{Deserialize, Serialize};

use crate::catalog::{Location, ObjectRecord};
use crate::error::Error;
use crate::s3::{ExportStatus, Gateway, check_bucket_name, now_ms};

/// Where an export keeps its list of buckets.
pub const BUCKETS_ENTRY: &str = ".cairn-gateway/buckets.json";
/// Where an export keeps keys that are not valid dataset paths.
pub const ESCAPED_DIR: &str = ".cairn-escaped";

/// What an import or restore did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    /// Buckets written to.
    pub buckets: Vec<String>,
    /// Keys created or replaced.
    pub objects: usize,
    /// Bytes those keys hold.
    pub bytes: u64,
    /// The hex ed25519 key that signed the imported manifest.
    pub signer: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportReport {
    /// CID of the signed dataset manifest holding the catalog.
    pub cid: String,
    /// Buckets exported.
    pub buckets: usize,
    /// Keys exported.
    pub objects: usize,
    /// Bytes those keys hold.
    pub bytes: u64,
}

/// An MD5 in hex, as S3 shows a single-part object's ETag.
fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn join_key(prefix: &str, path: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}/{path}")
    }
}

fn location_of(l: &EntryLocation) -> Location {
    match l {
        EntryLocation::Object(c) => Location::Object(*c),
        EntryLocation::Packed { pack, offset } => Location::Slice {
            object: *pack,
            offset: *offset,
        },
        EntryLocation::Inline(b) => Location::Inline(b.clone()),
    }
}

/// A catalog record for a dataset entry; `meta` from an export restores what S3 showed.
fn record_of(entry: &DatasetEntry, signer: &str, now: u64) -> ObjectRecord {
    let meta = &entry.meta;
    let mut metadata = BTreeMap::new();
    let mut checksums = BTreeMap::new();
    for (k, v) in meta {
        if let Some(name) = k.strip_prefix("meta:") {
            metadata.insert(name.to_string(), v.clone());
        } else if let Some(name) = k.strip_prefix("checksum:") {
            checksums.insert(name.to_string(), v.clone());
        }
    }
    let blake3 = entry.blake3.to_hex().to_string();
    ObjectRecord {
        location: location_of(&entry.location),
        size: entry.size,
        // Files imported without an MD5 (see `import`'s `etags`) show their BLAKE3, which is as
        // strong a validator.
        etag: meta.get("etag").cloned().unwrap_or_else(|| blake3.clone()),
        content_type: meta.get("content-type").cloned(),
        metadata,
        modified_ms: meta
            .get("modified-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(now),
        checksums,
        signer: meta
            .get("signer")
            .cloned()
            .unwrap_or_else(|| signer.to_string()),
        blake3,
    }
}

fn entry_of(bucket: &str, key: &str, r: &ObjectRecord) -> Result<DatasetEntry, Error> {
    let location = match &r.location {
        Location::Object(c) => EntryLocation::Object(*c),
        Location::Slice { object, offset } => EntryLocation::Packed {
            pack: *object,
            offset: *offset,
        },
        Location::Inline(b) => EntryLocation::Inline(b.clone()),
    };
    let blake3 = match &r.location {
        Location::Inline(b) => blake3::hash(b),
        _ => blake3::Hash::from_hex(&r.blake3)
            .map_err(|_| Error::Internal(format!("catalog record {bucket}/{key} has no BLAKE3")))?,
    };
    let mut meta = BTreeMap::from([
        ("s3-bucket".to_string(), bucket.to_string()),
        ("s3-key".to_string(), key.to_string()),
        ("etag".to_string(), r.etag.clone()),
        ("modified-ms".to_string(), r.modified_ms.to_string()),
        ("signer".to_string(), r.signer.clone()),
    ]);
    if let Some(ct) = &r.content_type {
        meta.insert("content-type".into(), ct.clone());
    }
    for (k, v) in &r.metadata {
        meta.insert(format!("meta:{k}"), v.clone());
    }
    for (k, v) in &r.checksums {
        meta.insert(format!("checksum:{k}"), v.clone());
    }
    Ok(DatasetEntry {
        size: r.size,
        blake3,
        location,
        meta,
    })
}

/// Dataset paths for `(bucket, key)` pairs: `bucket/key` where that is a valid path that is not
/// also a directory of another path, an escaped path otherwise.
fn export_paths(keys: &[(String, String)]) -> Vec<String> {
    let plain: Vec<Option<String>> = keys
        .iter()
        .map(|(b, k)| {
            let p = format!("{b}/{k}");
            check_path(&p).is_ok().then_some(p)
        })
        .collect();
    let set: BTreeSet<&str> = plain.iter().flatten().map(String::as_str).collect();
    plain
        .iter()
        .zip(keys)
        .map(|(p, (bucket, key))| {
            let clash = p.as_deref().is_none_or(|p| {
                let dir = format!("{p}/");
                set.range(dir.as_str()..)
                    .next()
                    .is_some_and(|q| q.starts_with(&dir))
                    || p.match_indices('/').any(|(i, _)| set.contains(&p[..i]))
            });
            match p {
                Some(p) if !clash => p.clone(),
                _ => format!(
                    "{ESCAPED_DIR}/{bucket}/{}",
                    blake3::hash(key.as_bytes()).to_hex()
                ),
            }
        })
        .collect()
}

impl Gateway {
    /// Makes object or dataset `cid` visible under `bucket`: a dataset's files as `prefix + path`,
    /// an object as `key` (or `prefix` when no key is given). Creates the bucket if needed.
    pub async fn import(
        &self,
        bucket: &str,
        prefix: &str,
        key: Option<&str>,
        cid: &Cid,
        etags: &BTreeMap<String, String>,
    ) -> Result<ImportReport, Error> {
        check_bucket_name(bucket)?;
        if let Some((path, etag)) = etags.iter().find(|(_, e)| !is_md5_hex(e)) {
            return Err(Error::InvalidArgument(format!(
                "the ETag given for {path:?} is {etag:?}: an ETag to import is an MD5, 32 hex digits"
            )));
        }
        let net = self.net().await;
        let fetched = fetch_manifest(&net, cid).await?;
        let signer = fetched
            .provenance
            .first()
            .map(|p| hex(&p.signer))
            .unwrap_or_default();
        let now = now_ms();
        let records: Vec<(String, ObjectRecord)> = match &fetched.manifest {
            Manifest::Dataset(d) => {
                if let Some(path) = etags.keys().find(|p| !d.entries.contains_key(*p)) {
                    return Err(Error::InvalidArgument(format!(
                        "an ETag is given for {path:?}, which dataset {cid} does not have"
                    )));
                }
                d.entries
                    .iter()
                    .map(|(path, entry)| {
                        let mut r = record_of(entry, &signer, now);
                        if let Some(e) = etags.get(path) {
                            r.etag = e.to_ascii_lowercase();
                        }
                        (join_key(prefix, path), r)
                    })
                    .collect()
            }
            Manifest::Object(m) => {
                if let Some(path) = etags.keys().find(|p| !p.is_empty()) {
                    return Err(Error::InvalidArgument(format!(
                        "an ETag is given for {path:?}, but {cid} is an object: give its ETag under \"\""
                    )));
                }
                let key = key
                    .map(str::to_string)
                    .unwrap_or_else(|| prefix.to_string());
                let record = ObjectRecord {
                    location: match &m.inline {
                        Some(b) => Location::Inline(b.clone()),
                        None => Location::Object(*cid),
                    },
                    size: m.size,
                    etag: etags
                        .get("")
                        .map_or_else(|| m.blake3.to_hex().to_string(), |e| e.to_ascii_lowercase()),
                    content_type: m.content_type.clone(),
                    metadata: m.metadata.clone(),
                    modified_ms: now,
                    checksums: BTreeMap::new(),
                    signer: signer.clone(),
                    blake3: m.blake3.to_hex().to_string(),
                };
                vec![(key, record)]
            }
        };
        for (key, _) in &records {
            if key.is_empty() || key.len() > 1024 {
                return Err(Error::InvalidArgument(format!(
                    "cannot import as key {key:?}: keys are 1-1024 bytes (give --prefix or a key name)"
                )));
            }
        }
        let bytes = records.iter().map(|(_, r)| r.size).sum();
        let (c, b, n) = (self.catalog().clone(), bucket.to_string(), records.len());
        tokio::task::spawn_blocking(move || c.put_objects(&b, now, &records))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        tracing::info!(%cid, bucket, prefix, objects = n, "imported");
        Ok(ImportReport {
            buckets: vec![bucket.to_string()],
            objects: n,
            bytes,
            signer,
        })
    }

    /// Writes the whole catalog to the network as one signed dataset manifest.
    pub async fn export(&self) -> Result<ExportReport, Error> {
        // Changes made while the export runs make the next periodic export happen.
        let generation = self.catalog().generation();
        let c = self.catalog().clone();
        let (buckets, objects) =
            tokio::task::spawn_blocking(move || Ok::<_, Error>((c.buckets()?, c.all_objects()?)))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
        let list: BTreeMap<&str, u64> = buckets
            .iter()
            .map(|(n, r)| (n.as_str(), r.created_ms))
            .collect();
        let list = serde_json::to_vec(&list).map_err(|e| Error::Internal(e.to_string()))?;
        if list.len() as u64 > cairn_chunker::manifest::MAX_INLINE {
            return Err(Error::Internal("too many buckets to export".into()));
        }
        let keys: Vec<(String, String)> = objects
            .iter()
            .map(|(b, k, _)| (b.clone(), k.clone()))
            .collect();
        let paths = export_paths(&keys);
        let mut dataset = DatasetManifest::new();
        let mut bytes = 0;
        for ((bucket, key, record), path) in objects.iter().zip(paths) {
            bytes += record.size;
            dataset.entries.insert(path, entry_of(bucket, key, record)?);
        }
        dataset.entries.insert(
            BUCKETS_ENTRY.to_string(),
            DatasetEntry {
                size: list.len() as u64,
                blake3: blake3::hash(&list),
                location: EntryLocation::Inline(list),
                meta: BTreeMap::new(),
            },
        );
        dataset
            .validate()
            .map_err(|e| Error::Internal(format!("export manifest: {e}")))?;
        let encoded = dataset.to_bytes();
        if encoded.len() > cairn_chunker::manifest::MAX_MANIFEST_BYTES {
            return Err(Error::Internal(format!(
                "the catalog encodes to {} bytes, over the {}-byte manifest limit",
                encoded.len(),
                cairn_chunker::manifest::MAX_MANIFEST_BYTES
            )));
        }
        let cid = dataset.cid();
        let net = self.net().await;
        publish_manifest(
            &net,
            self.signing_key(),
            &cid,
            ManifestKind::Dataset,
            &encoded,
            self.options(),
            None,
        )
        .await?;
        tracing::info!(%cid, buckets = buckets.len(), objects = objects.len(), "catalog exported");
        self.note_export(ExportStatus {
            cid: cid.to_string(),
            time_ms: now_ms(),
            objects: objects.len(),
            generation,
        });
        Ok(ExportReport {
            cid: cid.to_string(),
            buckets: buckets.len(),
            objects: objects.len(),
            bytes,
        })
    }

    /// The newest catalog export this gateway's key signed that a node still holds: how a
    /// gateway on a fresh disk (with its `gateway.key` kept) finds its catalog again.
    pub async fn latest_export(&self) -> Result<Option<Cid>, Error> {
        let net = self.net().await;
        let me = self.signing_key().verifying_key().to_bytes();
        for found in net.signed_by(&me, 32).await {
            if found.kind != ManifestKind::Dataset {
                continue;
            }
            match fetch_manifest(&net, &found.cid).await {
                Ok(f) => {
                    if let Manifest::Dataset(d) = &f.manifest
                        && d.entries.contains_key(BUCKETS_ENTRY)
                    {
                        return Ok(Some(found.cid));
                    }
                }
                Err(e) => {
                    tracing::warn!(cid = %found.cid, "skipping an export that cannot be read: {e}")
                }
            }
        }
        Ok(None)
    }

    /// Rebuilds catalog entries from an export (merging into what is there).
    pub async fn restore(&self, cid: &Cid) -> Result<ImportReport, Error> {
        let net = self.net().await;
        let fetched = fetch_manifest(&net, cid).await?;
        let Manifest::Dataset(d) = &fetched.manifest else {
            return Err(Error::InvalidArgument(format!(
                "{cid} is an object, not a catalog export"
            )));
        };
        let signer = fetched
            .provenance
            .first()
            .map(|p| hex(&p.signer))
            .unwrap_or_default();
        let list = match d.entries.get(BUCKETS_ENTRY).map(|e| &e.location) {
            Some(EntryLocation::Inline(b)) => b,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{cid} is not a catalog export (no {BUCKETS_ENTRY}); to serve an ordinary dataset, import it"
                )));
            }
        };
        let list: BTreeMap<String, u64> = serde_json::from_slice(list)
            .map_err(|e| Error::InvalidArgument(format!("{BUCKETS_ENTRY}: {e}")))?;
        let now = now_ms();
        let mut by_bucket: BTreeMap<String, Vec<(String, ObjectRecord)>> = BTreeMap::new();
        for (path, entry) in &d.entries {
            if path == BUCKETS_ENTRY {
                continue;
            }
            let (Some(bucket), Some(key)) = (entry.meta.get("s3-bucket"), entry.meta.get("s3-key"))
            else {
                return Err(Error::InvalidArgument(format!(
                    "export entry {path:?} has no s3-bucket/s3-key"
                )));
            };
            check_bucket_name(bucket)?;
            by_bucket
                .entry(bucket.clone())
                .or_default()
                .push((key.clone(), record_of(entry, &signer, now)));
        }
        let mut report = ImportReport {
            buckets: list.keys().cloned().collect(),
            objects: 0,
            bytes: 0,
            signer,
        };
        for (bucket, created) in &list {
            check_bucket_name(bucket)?;
            let records = by_bucket.remove(bucket).unwrap_or_default();
            report.objects += records.len();
            report.bytes += records.iter().map(|(_, r)| r.size).sum::<u64>();
            let (c, b, t) = (self.catalog().clone(), bucket.clone(), *created);
            tokio::task::spawn_blocking(move || c.put_objects(&b, t, &records))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
        }
        if let Some(bucket) = by_bucket.keys().next() {
            return Err(Error::InvalidArgument(format!(
                "export has objects in bucket {bucket} but does not list it"
            )));
        }
        tracing::info!(%cid, objects = report.objects, "catalog restored");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_paths_escape_what_is_not_a_plain_path() {
        let keys: Vec<(String, String)> = [
            ("b", "a"),
            ("b", "a/x"),
            ("b", "ok/file.txt"),
            ("b", "../up"),
            ("b", "dir//x"),
            ("c", "a"),
        ]
        .iter()
        .map(|(b, k)| (b.to_string(), k.to_string()))
        .collect();
        let paths = export_paths(&keys);
        assert!(paths[0].starts_with(".cairn-escaped/b/"), "{paths:?}");
        assert!(paths[1].starts_with(".cairn-escaped/b/"), "{paths:?}");
        assert_eq!(paths[2], "b/ok/file.txt");
        assert!(paths[3].starts_with(".cairn-escaped/b/"));
        assert!(paths[4].starts_with(".cairn-escaped/b/"));
        assert_eq!(paths[5], "c/a");
        let unique: BTreeSet<&String> = paths.iter().collect();
        assert_eq!(unique.len(), paths.len());
    }

    #[test]
    fn records_survive_an_entry_round_trip() {
        let r = ObjectRecord {
            location: Location::Inline(b"hello".to_vec()),
            size: 5,
            etag: "5d41402abc4b2a76b9719d911017c592".into(),
            content_type: Some("text/plain".into()),
            metadata: BTreeMap::from([("owner".to_string(), "ml-team".to_string())]),
            modified_ms: 1_700_000_000_123,
            checksums: BTreeMap::from([("crc32".to_string(), "NhCmhg==".to_string())]),
            signer: "ab".repeat(32),
            blake3: blake3::hash(b"hello").to_hex().to_string(),
        };
        let e = entry_of("bkt", "k", &r).unwrap();
        assert_eq!(e.meta["s3-key"], "k");
        assert_eq!(record_of(&e, "other", 1), r);
    }

    #[test]
    fn import_keys_join_prefix_and_path() {
        assert_eq!(join_key("", "a/b"), "a/b");
        assert_eq!(join_key("p/", "a"), "p/a");
        assert_eq!(join_key("p", "a"), "p/a");
    }
}
