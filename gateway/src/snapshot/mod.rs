//! Moving catalog entries to and from dataset manifests on the network.
//!
//! - **Import** makes an uploaded object or dataset (from `cairn put`) visible as S3 keys under a
//!   bucket and prefix, without copying a byte: the records point at the same manifests and packs.
//! - **Export** writes the whole catalog (every bucket, key, ETag, content type, user metadata and
//!   checksum) as signed dataset manifests, so the gateway's own disk holds nothing that cannot
//!   be rebuilt: one manifest when it fits [`EXPORT_PIECE_BYTES`], else pieces and an index
//!   that names them ([`pieces`]). **Restore** rebuilds a catalog from either.
//!
//! A one-manifest export is an ordinary dataset: `cairn get EXPORT_CID -o dir` yields
//! `dir/BUCKET/KEY` for every key that is a valid path, and `dir/.cairn-escaped/BUCKET/<blake3 of
//! key>` for keys that are not (`a//b`, `../x`, or a key that is also another key's directory);
//! so is each piece of a larger one. The S3 bucket and key of every entry are kept in its `meta`,
//! which is what restore reads.
//!
//! Export reads the catalog a page of keys at a time and publishes each piece as it fills, so
//! its memory is a few pieces' worth whatever the catalog's size. Restore fetches and checks
//! every piece before it writes anything, then writes the whole export in one atomic batch: a
//! restore that fails leaves the catalog as it was.

pub mod pieces;

use std::collections::{BTreeMap, BTreeSet};

use cairn_chunker::Cid;
use cairn_chunker::cids::{self, Codec};
use cairn_chunker::manifest::{
    DatasetEntry, DatasetManifest, Location as EntryLocation, MAX_MANIFEST_BYTES, check_path, hex,
};
use cairn_client::get::{Manifest, fetch_manifest};
use cairn_client::network::Network;
use cairn_client::put::publish_manifest;
use cairn_wire::protocol::ManifestKind;
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogError, Location, ObjectRecord};
use crate::error::Error;
use crate::s3::{ExportStatus, Gateway, check_bucket_name, check_key, now_ms};
pub use pieces::{EXPORT_PIECE_BYTES, MORE_BUCKETS_DIR, PIECES_DIR};
use pieces::{PieceRef, Restored, Shape, Splitter};

/// Where an export keeps its list of buckets.
pub const BUCKETS_ENTRY: &str = ".cairn-gateway/buckets.json";
/// Where an export keeps keys that are not valid dataset paths.
pub const ESCAPED_DIR: &str = ".cairn-escaped";
/// Keys read from the catalog at a time while exporting.
const EXPORT_PAGE: usize = 1000;
/// Manifests signed by the gateway's key looked at, newest first, for its latest export. The
/// pieces of an export that failed before its index are newer than the last good index and are
/// passed over, so this is generous (the nodes' limit).
const LATEST_EXPORT_CANDIDATES: u32 = cairn_wire::protocol::MAX_SIGNED;

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
    /// CID of the signed dataset manifest holding the catalog, or of the index naming its pieces.
    pub cid: String,
    /// Buckets exported.
    pub buckets: usize,
    /// Keys exported.
    pub objects: usize,
    /// Bytes those keys hold.
    pub bytes: u64,
    /// Manifests holding the keys: 1 for a one-manifest export, else the index's pieces.
    #[serde(default = "one")]
    pub pieces: usize,
}

fn one() -> usize {
    1
}

/// Refuses, saying what it is, a CID that cannot name `wanted` (a manifest): a raw CID names a
/// file's or a shard's bytes.
fn manifest_cid(cid: &Cid, wanted: &str) -> Result<(), Error> {
    match cids::inspect(cid) {
        Ok((Codec::DagCbor, _)) => Ok(()),
        Ok((Codec::Raw, _)) => Err(Error::InvalidArgument(format!(
            "{cid} is a raw CID, which names the bytes of a file or a shard, not a manifest: \
             {wanted}"
        ))),
        Err(e) => Err(Error::InvalidArgument(format!(
            "{cid} is not a Cairn CID ({e}): {wanted}"
        ))),
    }
}

/// What restore takes, for messages.
const RESTORE_WANTS: &str = "restore takes a catalog export, the dag-cbor CID (bafyr4i…) that \
     POST /export answered or /status shows as last_export";

/// Runs a catalog call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::from)
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
fn export_paths(keys: &[(&str, &str)]) -> Vec<String> {
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
        manifest_cid(
            cid,
            "import takes the object or dataset CID (bafyr4i…) that `cairn put` printed",
        )?;
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
        // The same checks as an S3 PUT's key: a key a PUT would refuse must not get in by
        // import (a control character would make every listing of the bucket unreadable).
        for (key, r) in &records {
            check_key(key).map_err(|e| {
                Error::InvalidArgument(format!(
                    "cannot import as key {key:?} ({e}); give --prefix or a key name, or rename \
                     the file"
                ))
            })?;
            // And as its headers: S3's 2 KiB of user metadata, a content type a manifest holds.
            crate::s3::check_object_headers(r.content_type.as_deref(), &r.metadata)
                .map_err(|e| Error::InvalidArgument(format!("cannot import {key:?}: {e}")))?;
        }
        let bytes = records.iter().map(|(_, r)| r.size).sum();
        let (c, b, n) = (self.catalog().clone(), bucket.to_string(), records.len());
        let leased: BTreeSet<Cid> = records
            .iter()
            .filter_map(|(_, r)| r.location.cid().copied())
            .collect();
        tokio::task::spawn_blocking(move || c.put_objects(&b, now, &records))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.renew_soon(leased.into_iter().collect());
        tracing::info!(%cid, bucket, prefix, objects = n, "imported");
        Ok(ImportReport {
            buckets: vec![bucket.to_string()],
            objects: n,
            bytes,
            signer,
        })
    }

    /// Writes the whole catalog to the network: as one signed dataset manifest when it fits
    /// [`EXPORT_PIECE_BYTES`], else as pieces and an index that names them ([`pieces`]).
    pub async fn export(&self) -> Result<ExportReport, Error> {
        self.export_in_pieces(EXPORT_PIECE_BYTES).await
    }

    /// [`Gateway::export`] with pieces of at most `piece_bytes` (at most the manifest limit):
    /// tests lower it to export a small catalog in several pieces.
    #[doc(hidden)]
    pub async fn export_in_pieces(&self, piece_bytes: usize) -> Result<ExportReport, Error> {
        let piece_bytes = piece_bytes.min(MAX_MANIFEST_BYTES);
        // Changes made while the export runs make the next periodic export happen.
        let generation = self.catalog().generation();
        let c = self.catalog().clone();
        let buckets = blocking(move || c.buckets()).await?;
        let list: BTreeMap<&str, u64> = buckets
            .iter()
            .map(|(n, r)| (n.as_str(), r.created_ms))
            .collect();
        let mut bucket_files = pieces::bucket_files(&list)?;
        // Room for the bucket list in every piece, so that a catalog that ends in its first
        // piece is exported as one manifest holding both, as before pieces.
        let reserve = pieces::inline_bound(BUCKETS_ENTRY, bucket_files[0].len());
        let mut splitter = Splitter::new(piece_bytes.saturating_sub(reserve));
        let net = self.net().await;
        let mut published: Vec<PieceRef> = Vec::new();
        let (mut objects, mut bytes) = (0usize, 0u64);
        // Bucket by bucket, a page of keys at a time: a page is one consistent read; keys
        // written meanwhile may or may not be in this export, and make the next one happen.
        // Objects of buckets created after the bucket list was read wait for the next one.
        for (bucket, _) in &buckets {
            let mut after: Option<String> = None;
            loop {
                let (c, b, a) = (self.catalog().clone(), bucket.clone(), after.take());
                let page =
                    blocking(move || c.list(&b, "", None, a.as_deref(), EXPORT_PAGE)).await?;
                for (key, record) in page.objects {
                    objects += 1;
                    bytes += record.size;
                    let entry = entry_of(bucket, &key, &record)?;
                    if let Some(full) = splitter.push(bucket.clone(), key, entry) {
                        let n = published.len();
                        published.push(self.publish_piece(&net, full, n).await?);
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        let last = splitter.finish();
        let (cid, pieces) = if published.is_empty() && bucket_files.len() == 1 {
            let d = pieces::single_manifest(last, bucket_files.remove(0));
            (self.publish_dataset(&net, d).await?, 1)
        } else {
            let n = published.len();
            published.push(self.publish_piece(&net, last, n).await?);
            let d = pieces::index_manifest(bucket_files, &published);
            (self.publish_dataset(&net, d).await?, published.len())
        };
        tracing::info!(%cid, buckets = buckets.len(), objects, pieces, "catalog exported");
        // The export is what a lost disk is rebuilt from: leased at once, like any write.
        let mut leased = vec![cid];
        leased.extend(published.iter().map(|p| p.cid));
        let dropped = self.leases().note_export(leased.clone());
        self.renew_soon(leased);
        if !dropped.is_empty() {
            // Older exports than the last few are released by the next sweep.
            let c = self.catalog().clone();
            if let Err(e) = blocking(move || c.unreference(&dropped)).await {
                tracing::warn!("older exports were not noted for release: {e}");
            }
        }
        self.note_export(ExportStatus {
            cid: cid.to_string(),
            time_ms: now_ms(),
            objects,
            generation,
        });
        Ok(ExportReport {
            cid: cid.to_string(),
            buckets: buckets.len(),
            objects,
            bytes,
            pieces,
        })
    }

    /// Publishes piece number `n` of an export.
    async fn publish_piece(
        &self,
        net: &Network,
        piece: pieces::Piece,
        n: usize,
    ) -> Result<PieceRef, Error> {
        let objects = piece.len();
        let cid = self.publish_dataset(net, piece.into_manifest()).await?;
        tracing::debug!(%cid, n, objects, "catalog export piece published");
        Ok(PieceRef { cid, objects })
    }

    /// Signs and stores one manifest of an export.
    async fn publish_dataset(&self, net: &Network, d: DatasetManifest) -> Result<Cid, Error> {
        d.validate()
            .map_err(|e| Error::Internal(format!("export manifest: {e}")))?;
        let encoded = d.to_bytes();
        // The entries are not needed while the bytes go out.
        drop(d);
        if encoded.len() > MAX_MANIFEST_BYTES {
            return Err(Error::Internal(format!(
                "an export manifest encodes to {} bytes, over the {MAX_MANIFEST_BYTES}-byte \
                 manifest limit",
                encoded.len(),
            )));
        }
        let cid = cids::dag_cbor(&encoded);
        publish_manifest(
            net,
            self.signing_key(),
            &cid,
            ManifestKind::Dataset,
            &encoded,
            self.options(),
            None,
        )
        .await?;
        Ok(cid)
    }

    /// The newest catalog export this gateway's key signed that a node still holds: how a
    /// gateway on a fresh disk (with its `gateway.key` kept) finds its catalog again. A
    /// one-manifest export and an index are found alike (both hold the bucket list); pieces,
    /// which do not, are passed over.
    pub async fn latest_export(&self) -> Result<Option<Cid>, Error> {
        let net = self.net().await;
        let me = self.signing_key().verifying_key().to_bytes();
        for found in net.signed_by(&me, LATEST_EXPORT_CANDIDATES).await {
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

    /// [`Gateway::latest_export`] and, for an export in pieces, its pieces: what the renewal
    /// loop leases after a restart, when this process has made no export yet.
    pub async fn latest_export_cids(&self) -> Result<Option<Vec<Cid>>, Error> {
        let Some(cid) = self.latest_export().await? else {
            return Ok(None);
        };
        let net = self.net().await;
        let mut cids = vec![cid];
        if let Manifest::Dataset(d) = fetch_manifest(&net, &cid).await?.manifest
            && let Ok((_, Shape::Index(refs))) = pieces::read_top(&cid, &d)
        {
            cids.extend(refs.iter().map(|r| r.cid));
        }
        Ok(Some(cids))
    }

    /// Rebuilds catalog entries from an export (merging into what is there): every manifest of
    /// it is fetched and checked first, then everything is written in one atomic batch.
    pub async fn restore(&self, cid: &Cid) -> Result<ImportReport, Error> {
        manifest_cid(cid, RESTORE_WANTS)?;
        let net = self.net().await;
        let top = fetch_manifest(&net, cid).await?;
        let Manifest::Dataset(d) = &top.manifest else {
            return Err(Error::InvalidArgument(format!(
                "{cid} is an object manifest (one file's), not a catalog export: {RESTORE_WANTS}; \
                 to serve an object over S3, import it"
            )));
        };
        let signer = top
            .provenance
            .first()
            .map(|p| hex(&p.signer))
            .unwrap_or_default();
        let (list, shape) = pieces::read_top(cid, d)?;
        let now = now_ms();
        let mut restored = Restored::new(list);
        let pieces = match shape {
            Shape::Single => {
                restored.add(&format!("catalog export {cid}"), d, &signer, now)?;
                1
            }
            Shape::Index(refs) => {
                let signers: BTreeSet<Vec<u8>> =
                    top.provenance.iter().map(|p| p.signer.clone()).collect();
                drop(top);
                for (n, piece) in refs.iter().enumerate() {
                    let what = format!(
                        "piece {} ({}) of catalog export {cid}",
                        pieces::piece_path(n),
                        piece.cid
                    );
                    let fetched = fetch_manifest(&net, &piece.cid)
                        .await
                        .map_err(|e| with_context(e.into(), &what))?;
                    let d = pieces::check_piece(cid, n, piece, &signers, &fetched)?;
                    restored.add(&what, d, &signer, now)?;
                }
                refs.len()
            }
        };
        let buckets = restored.bucket_names();
        let (list, records, bytes) = restored.finish();
        let objects = records.len();
        let c = self.catalog().clone();
        let leased: BTreeSet<Cid> = records
            .iter()
            .filter_map(|(_, _, r)| r.location.cid().copied())
            .collect();
        blocking(move || c.put_objects_in_buckets(&list, &records)).await?;
        self.renew_soon(leased.into_iter().collect());
        tracing::info!(%cid, objects, pieces, "catalog restored");
        Ok(ImportReport {
            buckets,
            objects,
            bytes,
            signer,
        })
    }
}

/// `e`, its message prefixed with what was being done.
fn with_context(e: Error, what: &str) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(format!("{what}: {m}")),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
        Error::Internal(m) => Error::Internal(format!("{what}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_paths_escape_what_is_not_a_plain_path() {
        let keys = [
            ("b", "a"),
            ("b", "a/x"),
            ("b", "ok/file.txt"),
            ("b", "../up"),
            ("b", "dir//x"),
            ("c", "a"),
        ];
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
