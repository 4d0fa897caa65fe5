//! Catalog exports in pieces: a catalog too large for one manifest is exported as piece
//! manifests of at most [`EXPORT_PIECE_BYTES`] each, and an index manifest that names them.
//!
//! Every manifest of an export is a dataset manifest signed by the gateway's key.
//!
//! - A catalog whose entries and bucket list fit one piece is exported as one manifest, as every
//!   export was before pieces: its entries (`BUCKET/KEY`, or `.cairn-escaped/BUCKET/<blake3 of
//!   key>`, the S3 bucket, key and attributes in each entry's `meta`) and the bucket list in
//!   [`BUCKETS_ENTRY`].
//! - A larger one is cut, in catalog order (bucket, then key), into **pieces**: each holds entries
//!   exactly as a one-manifest export does, and nothing else (no bucket list). Which entries are
//!   escaped is decided within each piece.
//! - The **index** holds the bucket list in [`BUCKETS_ENTRY`] (so an index is found, and told from
//!   other datasets, exactly as a one-manifest export is), more of it in
//!   `.cairn-gateway/buckets/NNNNNN.json` (1, 2, …) when it is over an inline file's 64 KiB, and
//!   piece `i` (0, 1, …) as the inline file `.cairn-gateway/pieces/NNNNNN` (`i` in at least six
//!   digits) holding the piece's CID as text, with `meta {"objects": "<entries in the piece>"}`.
//!   It holds nothing else.
//!
//! Restore takes an export's CID either way: an index's pieces must all be fetched, be dataset
//! manifests of entries only, hold as many entries as the index says, and be signed by a key that
//! signed the index; the pieces must be numbered 0..n without a gap and name no CID twice, and no
//! key may appear twice. Anything else is refused before the catalog is touched.

use std::collections::{BTreeMap, BTreeSet};

use cairn_chunker::Cid;
use cairn_chunker::cids::{self, Codec};
use cairn_chunker::manifest::{
    DatasetEntry, DatasetManifest, Location as EntryLocation, MAX_INLINE, hex,
};
use cairn_client::get::{Fetched, Manifest};

use super::{BUCKETS_ENTRY, ESCAPED_DIR, export_paths, record_of};
use crate::catalog::ObjectRecord;
use crate::error::Error;
use crate::s3::check_bucket_name;

/// Largest encoded piece of a catalog export (and so largest one-manifest export) the gateway
/// writes. An export's memory is about six times this, whatever the catalog's size: a piece's
/// entries decoded take about 3.4 times their encoding, and encoding them briefly doubles that
/// (measured: a piece of 8 MiB, 17,000 entries, took 49 MB at its peak). About 9,000 keys.
pub const EXPORT_PIECE_BYTES: usize = 4 << 20;
/// Where an index names its pieces.
pub const PIECES_DIR: &str = ".cairn-gateway/pieces";
/// Where an index keeps the bucket list beyond [`BUCKETS_ENTRY`]'s 64 KiB.
pub const MORE_BUCKETS_DIR: &str = ".cairn-gateway/buckets";
/// What every export's own files (not catalog entries) are under.
const OWN_DIR: &str = ".cairn-gateway/";

/// Bytes a dataset manifest takes beyond its entries: the `{v, entries}` map, its keys and
/// the entries map's header.
const MANIFEST_OVERHEAD: usize = 32;
/// Most bytes a CBOR text string's header takes.
const TEXT_HEADER: usize = 9;

/// Bytes `entry` encodes to.
fn encoded_len(entry: &DatasetEntry) -> usize {
    // Dataset entries hold integers, strings, bytes and CIDs only: they always encode.
    serde_ipld_dagcbor::to_vec(entry).map_or(0, |b| b.len())
}

/// An upper bound of the bytes the entry for `(bucket, key)` adds to a piece, whichever path
/// (plain or escaped) it is given.
fn entry_bound(bucket: &str, key: &str, entry: &DatasetEntry) -> usize {
    let plain = bucket.len() + 1 + key.len();
    let escaped = ESCAPED_DIR.len() + 1 + bucket.len() + 1 + 64;
    TEXT_HEADER + plain.max(escaped) + encoded_len(entry)
}

/// An inline file of an export's own.
fn inline(bytes: Vec<u8>, meta: BTreeMap<String, String>) -> DatasetEntry {
    DatasetEntry {
        size: bytes.len() as u64,
        blake3: blake3::hash(&bytes),
        location: EntryLocation::Inline(bytes),
        meta,
    }
}

/// The bytes an inline file of `len` bytes at `path` adds to a manifest, at most.
pub(crate) fn inline_bound(path: &str, len: usize) -> usize {
    TEXT_HEADER + path.len() + encoded_len(&inline(vec![0; len], BTreeMap::new()))
}

/// Catalog entries, in catalog order, cut into pieces that encode to at most `budget` bytes.
#[derive(Debug)]
pub(crate) struct Splitter {
    budget: usize,
    current: Vec<(String, String, DatasetEntry)>,
    /// An upper bound of what `current` encodes to, as a dataset manifest.
    bytes: usize,
}

impl Splitter {
    /// Pieces of at most `budget` encoded bytes.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            current: Vec::new(),
            bytes: MANIFEST_OVERHEAD,
        }
    }

    /// Adds the entry of `(bucket, key)`; hands back the piece it did not fit in, now full.
    /// A piece takes one entry even when that alone is over the budget (an entry is at most
    /// about 80 KiB: 64 KiB inline, 8 KiB of metadata, a 1 KiB key), so every entry is exported.
    pub(crate) fn push(
        &mut self,
        bucket: String,
        key: String,
        entry: DatasetEntry,
    ) -> Option<Piece> {
        let add = entry_bound(&bucket, &key, &entry);
        let full = (!self.current.is_empty() && self.bytes + add > self.budget).then(|| {
            self.bytes = MANIFEST_OVERHEAD;
            Piece {
                entries: std::mem::take(&mut self.current),
            }
        });
        self.bytes += add;
        self.current.push((bucket, key, entry));
        full
    }

    /// The last piece (empty if nothing was pushed since the last full one).
    pub(crate) fn finish(self) -> Piece {
        Piece {
            entries: self.current,
        }
    }
}

/// The entries of one piece, in catalog order.
#[derive(Debug)]
pub(crate) struct Piece {
    entries: Vec<(String, String, DatasetEntry)>,
}

impl Piece {
    /// Entries in the piece.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The piece as a dataset manifest, each entry under its export path.
    pub(crate) fn into_manifest(self) -> DatasetManifest {
        let keys: Vec<(&str, &str)> = self
            .entries
            .iter()
            .map(|(b, k, _)| (b.as_str(), k.as_str()))
            .collect();
        let paths = export_paths(&keys);
        let mut d = DatasetManifest::new();
        for (path, (_, _, entry)) in paths.into_iter().zip(self.entries) {
            d.entries.insert(path, entry);
        }
        d
    }
}

/// The bucket list, `{name: created_ms}`, as JSON files of at most [`MAX_INLINE`] bytes each
/// (an inline file's limit): the first is [`BUCKETS_ENTRY`], an index keeps the others under
/// [`MORE_BUCKETS_DIR`]. There is always a first file, `{}` for no bucket.
pub(crate) fn bucket_files(buckets: &BTreeMap<&str, u64>) -> Result<Vec<Vec<u8>>, Error> {
    let json = |m: &BTreeMap<&str, u64>| {
        let b = serde_json::to_vec(m).map_err(|e| Error::Internal(e.to_string()))?;
        if b.len() as u64 > MAX_INLINE {
            return Err(Error::Internal(format!(
                "a bucket list file came out {} bytes, over {MAX_INLINE}",
                b.len()
            )));
        }
        Ok(b)
    };
    let (mut files, mut current, mut bytes) = (Vec::new(), BTreeMap::new(), 2);
    for (name, created) in buckets {
        // `"name":created,` with the name escaped (bucket names need no escaping: this is
        // room for any), the time in at most 20 digits.
        let add = serde_json::to_string(name).map_or(0, |s| s.len()) + 22;
        if !current.is_empty() && bytes + add > MAX_INLINE as usize {
            files.push(json(&current)?);
            current.clear();
            bytes = 2;
        }
        bytes += add;
        current.insert(*name, *created);
    }
    files.push(json(&current)?);
    Ok(files)
}

/// A piece as its index names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PieceRef {
    /// The piece's dataset manifest.
    pub(crate) cid: Cid,
    /// Entries it holds.
    pub(crate) objects: usize,
}

/// Where an index names piece `i`.
pub(crate) fn piece_path(i: usize) -> String {
    format!("{PIECES_DIR}/{i:06}")
}

/// Where an index keeps bucket list file `i` (from 1; file 0 is [`BUCKETS_ENTRY`]).
fn more_buckets_path(i: usize) -> String {
    format!("{MORE_BUCKETS_DIR}/{i:06}.json")
}

/// The one-manifest export of a catalog that fits one piece: its entries and the bucket list.
pub(crate) fn single_manifest(piece: Piece, buckets: Vec<u8>) -> DatasetManifest {
    let mut d = piece.into_manifest();
    d.entries
        .insert(BUCKETS_ENTRY.to_string(), inline(buckets, BTreeMap::new()));
    d
}

/// The index of an export in pieces.
pub(crate) fn index_manifest(bucket_files: Vec<Vec<u8>>, pieces: &[PieceRef]) -> DatasetManifest {
    let mut d = DatasetManifest::new();
    for (i, file) in bucket_files.into_iter().enumerate() {
        let path = if i == 0 {
            BUCKETS_ENTRY.to_string()
        } else {
            more_buckets_path(i)
        };
        d.entries.insert(path, inline(file, BTreeMap::new()));
    }
    for (i, p) in pieces.iter().enumerate() {
        let meta = BTreeMap::from([("objects".to_string(), p.objects.to_string())]);
        d.entries
            .insert(piece_path(i), inline(p.cid.to_string().into_bytes(), meta));
    }
    d
}

/// What the manifest an export's CID names is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Entries and the bucket list in one manifest.
    Single,
    /// An index: its pieces, in order.
    Index(Vec<PieceRef>),
}

/// `n` from `path` if `path` is exactly `dir/NNNNNN` + `suffix` as the exporter writes it
/// (at least six digits, no extra leading zeros), so that no two paths name one number.
fn numbered(path: &str, dir: &str, suffix: &str) -> Option<usize> {
    let digits = path
        .strip_prefix(dir)?
        .strip_prefix('/')?
        .strip_suffix(suffix)?;
    let n: usize = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())??;
    (format!("{dir}/{n:06}{suffix}") == path).then_some(n)
}

/// The bucket list and shape of export `cid` from the manifest it names, checked: a bucket list
/// of valid names, and for an index, pieces numbered 0..n, each a distinct manifest CID.
pub(crate) fn read_top(
    cid: &Cid,
    d: &DatasetManifest,
) -> Result<(BTreeMap<String, u64>, Shape), Error> {
    let bad = |why: String| Error::InvalidArgument(format!("catalog export {cid}: {why}"));
    let parse_list = |path: &str, bytes: &[u8]| -> Result<BTreeMap<String, u64>, Error> {
        serde_json::from_slice(bytes).map_err(|e| bad(format!("{path}: {e}")))
    };
    let mut buckets = match d.entries.get(BUCKETS_ENTRY).map(|e| &e.location) {
        Some(EntryLocation::Inline(b)) => parse_list(BUCKETS_ENTRY, b)?,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{cid} is a dataset but not a catalog export (it has no {BUCKETS_ENTRY}); to \
                 serve an ordinary dataset over S3, import it"
            )));
        }
    };
    let (mut pieces, mut more, mut others) = (BTreeMap::new(), BTreeMap::new(), 0usize);
    for (path, entry) in &d.entries {
        if path == BUCKETS_ENTRY {
            continue;
        }
        if !path.starts_with(OWN_DIR) {
            others += 1;
            continue;
        }
        let EntryLocation::Inline(bytes) = &entry.location else {
            return Err(bad(format!("{path} is not an inline file")));
        };
        if let Some(n) = numbered(path, PIECES_DIR, "") {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| bad(format!("{path} does not hold a CID")))?;
            let piece = cids::parse(text).map_err(|e| bad(format!("{path}: {e}")))?;
            if !matches!(cids::inspect(&piece), Ok((Codec::DagCbor, _))) {
                return Err(bad(format!(
                    "{path} names {piece}, which is not a manifest CID"
                )));
            }
            let objects: usize = entry
                .meta
                .get("objects")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| bad(format!("{path} has no entry count (meta \"objects\")")))?;
            pieces.insert(
                n,
                PieceRef {
                    cid: piece,
                    objects,
                },
            );
        } else if let Some(n) = numbered(path, MORE_BUCKETS_DIR, ".json")
            && n > 0
        {
            more.insert(n, parse_list(path, bytes)?);
        } else {
            return Err(bad(format!(
                "{path} is not a file a catalog export has (written by a newer gateway?)"
            )));
        }
    }
    if pieces.is_empty() && !more.is_empty() {
        return Err(bad(format!(
            "it has {MORE_BUCKETS_DIR}/ but no pieces: only an index keeps more buckets there"
        )));
    }
    if let Some(gap) = (1..).zip(more.keys()).find(|(want, n)| want != *n) {
        return Err(bad(format!(
            "bucket list file {} is missing",
            more_buckets_path(gap.0)
        )));
    }
    for (path, list) in more.into_values().enumerate() {
        for (name, created) in list {
            if buckets.insert(name.clone(), created).is_some() {
                return Err(bad(format!(
                    "bucket {name} is listed twice (again in {})",
                    more_buckets_path(path + 1)
                )));
            }
        }
    }
    for name in buckets.keys() {
        check_bucket_name(name).map_err(|e| bad(format!("its bucket list: {e}")))?;
    }
    if pieces.is_empty() {
        return Ok((buckets, Shape::Single));
    }
    if others > 0 {
        return Err(bad(format!(
            "it names pieces and also holds {others} catalog entries of its own: an index holds \
             only its bucket list and its pieces"
        )));
    }
    if let Some((want, _)) = (0..).zip(pieces.keys()).find(|(want, n)| want != *n) {
        return Err(bad(format!(
            "{} is missing: an index numbers its pieces from 0 without a gap",
            piece_path(want)
        )));
    }
    let mut seen = BTreeSet::new();
    for (n, p) in &pieces {
        if !seen.insert(p.cid) {
            return Err(bad(format!(
                "{} names piece {} again: a piece is named once",
                piece_path(*n),
                p.cid
            )));
        }
    }
    Ok((buckets, Shape::Index(pieces.into_values().collect())))
}

/// Checks piece `n` of export `index` as fetched: a dataset manifest of catalog entries only,
/// as many as the index says, signed by one of `signers` (the keys that signed the index).
pub(crate) fn check_piece<'f>(
    index: &Cid,
    n: usize,
    piece: &PieceRef,
    signers: &BTreeSet<Vec<u8>>,
    fetched: &'f Fetched,
) -> Result<&'f DatasetManifest, Error> {
    let what = format!(
        "piece {} ({}) of catalog export {index}",
        piece_path(n),
        piece.cid
    );
    let bad = |why: String| Error::InvalidArgument(format!("{what} {why}"));
    if fetched.cid != piece.cid {
        return Err(bad(format!("was fetched as {}", fetched.cid)));
    }
    // The fetch verified every envelope it kept; checked again here, where it decides.
    let signed = fetched
        .provenance
        .iter()
        .any(|p| signers.contains(&p.signer) && p.verify_for(&piece.cid).is_ok());
    if !signed {
        let by: Vec<String> = fetched.provenance.iter().map(|p| hex(&p.signer)).collect();
        let index_by: Vec<String> = signers.iter().map(|s| hex(s)).collect();
        return Err(bad(format!(
            "is not signed by the key that signed the index ({}) but by {}: refusing a piece \
             the exporter did not write",
            index_by.join(", "),
            if by.is_empty() {
                "no one".to_string()
            } else {
                by.join(", ")
            }
        )));
    }
    let Manifest::Dataset(d) = &fetched.manifest else {
        return Err(bad("is an object manifest, not a piece of entries".into()));
    };
    if let Some(path) = d.entries.keys().find(|p| p.starts_with(OWN_DIR)) {
        return Err(bad(format!(
            "holds {path}: a piece holds catalog entries only"
        )));
    }
    if d.entries.len() != piece.objects {
        return Err(bad(format!(
            "holds {} entries, but the index says {}",
            d.entries.len(),
            piece.objects
        )));
    }
    Ok(d)
}

/// Catalog records gathered from an export and checked, before any is written.
#[derive(Debug)]
pub(crate) struct Restored {
    buckets: BTreeMap<String, u64>,
    records: BTreeMap<(String, String), ObjectRecord>,
    bytes: u64,
}

/// Restored records: the buckets to create, the `(bucket, key, record)`s, and the bytes
/// they hold.
pub(crate) type RestoredRecords = (Vec<(String, u64)>, Vec<(String, String, ObjectRecord)>, u64);

impl Restored {
    /// Records for an export listing `buckets`.
    pub(crate) fn new(buckets: BTreeMap<String, u64>) -> Self {
        Self {
            buckets,
            records: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// Adds the catalog entries of `d` (`source` names it in errors; `signer` signed it),
    /// passing over a one-manifest export's bucket list. Every entry must name a listed bucket
    /// and a key no other entry of the export names.
    pub(crate) fn add(
        &mut self,
        source: &str,
        d: &DatasetManifest,
        signer: &str,
        now: u64,
    ) -> Result<(), Error> {
        let bad = |why: String| Error::InvalidArgument(format!("{source}: {why}"));
        for (path, entry) in &d.entries {
            if path == BUCKETS_ENTRY {
                continue;
            }
            let (Some(bucket), Some(key)) = (entry.meta.get("s3-bucket"), entry.meta.get("s3-key"))
            else {
                return Err(bad(format!("entry {path:?} has no s3-bucket/s3-key")));
            };
            if !self.buckets.contains_key(bucket) {
                return Err(bad(format!(
                    "entry {path:?} is in bucket {bucket}, which the export does not list"
                )));
            }
            if let Err(e) = crate::s3::check_key(key) {
                return Err(bad(format!("entry {path:?}: {e}")));
            }
            let record = record_of(entry, signer, now);
            let size = record.size;
            if self
                .records
                .insert((bucket.clone(), key.clone()), record)
                .is_some()
            {
                return Err(bad(format!(
                    "key {key:?} of bucket {bucket} is in the export twice (again as {path:?})"
                )));
            }
            self.bytes += size;
        }
        Ok(())
    }

    /// Names of the buckets listed.
    pub(crate) fn bucket_names(&self) -> Vec<String> {
        self.buckets.keys().cloned().collect()
    }

    /// Everything gathered, for the catalog.
    pub(crate) fn finish(self) -> RestoredRecords {
        let records = self
            .records
            .into_iter()
            .map(|((b, k), r)| (b, k, r))
            .collect();
        (self.buckets.into_iter().collect(), records, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use cairn_chunker::Provenance;
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::catalog::Location;
    use crate::snapshot::entry_of;

    /// `n` catalog records over three buckets, with keys of every shape an export must handle
    /// (plain paths, a key that is another's directory, keys that are not paths, long keys).
    fn catalog(n: usize) -> Vec<(String, String, ObjectRecord)> {
        let mut out: Vec<(String, String, ObjectRecord)> = (0..n)
            .map(|i| {
                let bucket = ["alpha", "beta", "gamma"][i % 3].to_string();
                let key = match i % 7 {
                    0 => format!("dir/{i}"),
                    1 => format!("dir/{i}/leaf"),
                    2 => format!("../up/{i}"),
                    3 => format!("a//b/{i}"),
                    4 => format!("{i}-{}", "x".repeat(i % 900)),
                    5 => format!("ünïcode/{i}"),
                    _ => format!("k{i:05}"),
                };
                let record = ObjectRecord {
                    location: match i % 3 {
                        0 => Location::Object(cids::dag_cbor(&i.to_le_bytes())),
                        1 => Location::Slice {
                            object: cids::dag_cbor(b"pack"),
                            offset: i as u64 * 10,
                        },
                        _ => Location::Inline(vec![i as u8; i % 50]),
                    },
                    size: if i % 3 == 2 {
                        (i % 50) as u64
                    } else {
                        i as u64
                    },
                    etag: format!("{i:032x}"),
                    content_type: (i % 2 == 0).then(|| "application/x-tar".to_string()),
                    metadata: BTreeMap::from([("i".to_string(), i.to_string())]),
                    modified_ms: 1_700_000_000_000 + i as u64,
                    checksums: BTreeMap::new(),
                    signer: "ab".repeat(32),
                    blake3: match i % 3 {
                        2 => blake3::hash(&vec![i as u8; i % 50]).to_hex().to_string(),
                        _ => blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
                    },
                };
                (bucket, key, record)
            })
            .collect();
        // A key that is also another key's directory, in one piece or across two.
        for (b, k) in [("alpha", "dir/0"), ("alpha", "dir/0/x"), ("beta", "dir")] {
            let r = out[0].2.clone();
            out.push((b.to_string(), k.to_string(), r));
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out.dedup_by(|a, b| (&a.0, &a.1) == (&b.0, &b.1));
        out
    }

    fn split(records: &[(String, String, ObjectRecord)], budget: usize) -> Vec<Piece> {
        let mut s = Splitter::new(budget);
        let mut pieces = Vec::new();
        for (b, k, r) in records {
            pieces.extend(s.push(b.clone(), k.clone(), entry_of(b, k, r).unwrap()));
        }
        pieces.push(s.finish());
        pieces
    }

    fn listed(records: &[(String, String, ObjectRecord)]) -> BTreeMap<String, u64> {
        records.iter().map(|(b, _, _)| (b.clone(), 5)).collect()
    }

    #[test]
    fn a_large_catalog_is_cut_into_pieces_within_the_budget_and_restores_whole() {
        let records = catalog(2000);
        let budget = 64 << 10;
        let pieces = split(&records, budget);
        assert!(pieces.len() >= 5, "{} pieces", pieces.len());
        let last = pieces.len() - 1;
        let mut restored = Restored::new(listed(&records));
        let mut in_order = Vec::new();
        for (i, piece) in pieces.into_iter().enumerate() {
            let n = piece.len();
            assert!(n > 0, "piece {i} is empty");
            let d = piece.into_manifest();
            d.validate().unwrap();
            let bytes = d.to_bytes();
            assert!(bytes.len() <= budget, "piece {i}: {} bytes", bytes.len());
            // Pieces but the last are full: the next entry would not have fitted (paths are
            // counted at their longest, escaped or not, so a piece may fall short by that).
            assert!(
                i == last || bytes.len() > budget / 2,
                "piece {i}: {} bytes",
                bytes.len()
            );
            assert_eq!(d.entries.len(), n);
            let d = DatasetManifest::from_bytes(&bytes).unwrap();
            in_order.extend(d.entries.values().map(|e| e.meta["s3-key"].clone()));
            restored
                .add(&format!("piece {i}"), &d, "cd".repeat(32).as_str(), 1)
                .unwrap();
        }
        assert_eq!(in_order.len(), records.len());
        let (buckets, back, bytes) = restored.finish();
        assert_eq!(buckets, listed(&records).into_iter().collect::<Vec<_>>());
        assert_eq!(back, records, "every record comes back as it was");
        assert_eq!(bytes, records.iter().map(|(_, _, r)| r.size).sum::<u64>());
    }

    #[test]
    fn a_catalog_that_fits_is_one_manifest_as_before_pieces() {
        let records = catalog(40);
        let pieces = split(&records, EXPORT_PIECE_BYTES);
        assert_eq!(pieces.len(), 1);
        let list: BTreeMap<&str, u64> = [("alpha", 5), ("beta", 5), ("gamma", 5)].into();
        let files = bucket_files(&list).unwrap();
        assert_eq!(files.len(), 1);
        let d = single_manifest(pieces.into_iter().next().unwrap(), files[0].clone());
        // What the export wrote before pieces: every entry at its path, and the bucket list.
        let keys: Vec<(&str, &str)> = records
            .iter()
            .map(|(b, k, _)| (b.as_str(), k.as_str()))
            .collect();
        let mut before = DatasetManifest::new();
        for (path, (b, k, r)) in export_paths(&keys).into_iter().zip(&records) {
            before.entries.insert(path, entry_of(b, k, r).unwrap());
        }
        let list = serde_json::to_vec(&list).unwrap();
        before.entries.insert(
            BUCKETS_ENTRY.into(),
            DatasetEntry {
                size: list.len() as u64,
                blake3: blake3::hash(&list),
                location: EntryLocation::Inline(list),
                meta: BTreeMap::new(),
            },
        );
        assert_eq!(d, before);
        assert!(d.entries.keys().any(|p| p.starts_with(".cairn-escaped/")));
        let (buckets, shape) = read_top(&d.cid(), &d).unwrap();
        assert_eq!((buckets.len(), shape), (3, Shape::Single));
    }

    #[test]
    fn an_index_names_its_pieces_and_reads_back() {
        let pieces: Vec<PieceRef> = (0..3)
            .map(|i| PieceRef {
                cid: cids::dag_cbor(&[i]),
                objects: 100 + usize::from(i),
            })
            .collect();
        // More buckets than one inline file holds.
        let names: Vec<String> = (0..3000)
            .map(|i| format!("bucket-{i:05}-{}", "n".repeat(40)))
            .collect();
        let list: BTreeMap<&str, u64> = names
            .iter()
            .map(|n| (n.as_str(), 1_700_000_000_000))
            .collect();
        let files = bucket_files(&list).unwrap();
        assert!(files.len() > 2, "{} files", files.len());
        assert!(files.iter().all(|f| f.len() as u64 <= MAX_INLINE));
        let d = index_manifest(files, &pieces);
        d.validate().unwrap();
        assert!(d.entries.contains_key(".cairn-gateway/pieces/000002"));
        let d = DatasetManifest::from_bytes(&d.to_bytes()).unwrap();
        let (buckets, shape) = read_top(&d.cid(), &d).unwrap();
        assert_eq!(shape, Shape::Index(pieces));
        assert_eq!(buckets.len(), names.len());
        assert!(names.iter().all(|n| buckets[n] == 1_700_000_000_000));
    }

    #[test]
    fn malformed_indexes_are_refused() {
        let good: Vec<PieceRef> = (0..3)
            .map(|i| PieceRef {
                cid: cids::dag_cbor(&[i]),
                objects: 1,
            })
            .collect();
        let list = bucket_files(&[("alpha", 1)].into()).unwrap();
        let index = || index_manifest(list.clone(), &good);
        let refused = |d: DatasetManifest, says: &str| {
            let e = read_top(&d.cid(), &d).expect_err(says).to_string();
            assert!(e.contains(says), "{e} (wanted {says:?})");
        };
        let mut d = index();
        d.entries.remove(&piece_path(1));
        refused(d, "pieces/000001 is missing");
        let mut d = index();
        let again = d.entries[&piece_path(0)].clone();
        d.entries.insert(piece_path(2), again);
        refused(d, "names piece");
        let mut d = index();
        let first = d.entries.remove(&piece_path(0)).unwrap();
        d.entries.insert(format!("{PIECES_DIR}/0"), first);
        refused(d, "pieces/0 is not a file a catalog export has");
        let mut d = index();
        let raw = cids::raw(b"file").to_string().into_bytes();
        d.entries.insert(
            piece_path(1),
            inline(raw, [("objects".into(), "1".into())].into()),
        );
        refused(d, "not a manifest CID");
        let mut d = index();
        d.entries.insert(
            piece_path(1),
            inline(b"bafy-not-a-cid".to_vec(), BTreeMap::new()),
        );
        refused(d, "pieces/000001");
        let mut d = index();
        d.entries.get_mut(&piece_path(0)).unwrap().meta.clear();
        refused(d, "no entry count");
        let mut d = index();
        let entry = entry_of("alpha", "k", &catalog(1)[0].2).unwrap();
        d.entries.insert("alpha/k".into(), entry);
        refused(d, "also holds 1 catalog entries");
        let mut d = index();
        d.entries.insert(
            ".cairn-gateway/future".into(),
            inline(vec![], BTreeMap::new()),
        );
        refused(d, "newer gateway");
        let mut d = index();
        d.entries.remove(BUCKETS_ENTRY);
        refused(d, "not a catalog export");
        let mut d = index();
        d.entries.insert(
            BUCKETS_ENTRY.into(),
            inline(b"{\"Bad_Name\": 1}".to_vec(), BTreeMap::new()),
        );
        refused(d, "invalid bucket name");
        let mut d = index();
        d.entries.insert(
            more_buckets_path(2),
            inline(b"{}".to_vec(), BTreeMap::new()),
        );
        refused(d, "buckets/000001.json is missing");
        let mut d = index();
        d.entries.insert(
            more_buckets_path(1),
            inline(b"{\"alpha\": 2}".to_vec(), BTreeMap::new()),
        );
        refused(d, "bucket alpha is listed twice");
    }

    fn fetched(cid: Cid, manifest: Manifest, keys: &[&SigningKey]) -> Fetched {
        Fetched {
            cid,
            manifest,
            provenance: keys
                .iter()
                .map(|k| Provenance::sign(cid, k, 7, None))
                .collect(),
            holders: vec![],
            incidents: vec![],
        }
    }

    #[test]
    fn a_piece_must_be_signed_by_the_index_signer_and_hold_what_the_index_says() {
        let gateway = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let signers = BTreeSet::from([gateway.verifying_key().to_bytes().to_vec()]);
        let index = cids::dag_cbor(b"index");
        let records = catalog(30);
        let d = split(&records, EXPORT_PIECE_BYTES)
            .pop()
            .unwrap()
            .into_manifest();
        let piece = PieceRef {
            cid: d.cid(),
            objects: d.entries.len(),
        };
        let ok = fetched(piece.cid, Manifest::Dataset(d.clone()), &[&other, &gateway]);
        assert_eq!(check_piece(&index, 4, &piece, &signers, &ok).unwrap(), &d);
        let refused = |f: Fetched, p: &PieceRef, says: &str| {
            let e = check_piece(&index, 4, p, &signers, &f)
                .expect_err(says)
                .to_string();
            assert!(e.contains(says), "{e} (wanted {says:?})");
            assert!(e.contains("pieces/000004"), "{e}");
        };
        // Signed by someone else: forged.
        let forged = fetched(piece.cid, Manifest::Dataset(d.clone()), &[&other]);
        refused(
            forged,
            &piece,
            "is not signed by the key that signed the index",
        );
        // An envelope that claims the gateway's key but does not verify.
        let mut tampered = fetched(piece.cid, Manifest::Dataset(d.clone()), &[&gateway]);
        tampered.provenance[0].time_ms += 1;
        refused(tampered, &piece, "is not signed by the key");
        // Another count than the index's.
        let mut wrong = piece.clone();
        wrong.objects += 1;
        let f = fetched(piece.cid, Manifest::Dataset(d.clone()), &[&gateway]);
        refused(f, &wrong, "but the index says");
        // A piece that is itself an export.
        let mut nested = d.clone();
        nested.entries.insert(
            BUCKETS_ENTRY.into(),
            inline(b"{}".to_vec(), BTreeMap::new()),
        );
        let p = PieceRef {
            cid: nested.cid(),
            objects: nested.entries.len(),
        };
        refused(
            fetched(p.cid, Manifest::Dataset(nested), &[&gateway]),
            &p,
            "entries only",
        );
    }

    #[test]
    fn a_key_in_two_pieces_or_an_unlisted_bucket_is_refused() {
        let records = catalog(300);
        let pieces: Vec<DatasetManifest> = split(&records, 16 << 10)
            .into_iter()
            .map(Piece::into_manifest)
            .collect();
        assert!(pieces.len() > 2);
        let mut r = Restored::new(listed(&records));
        r.add("piece 0", &pieces[0], "", 1).unwrap();
        let e = r.add("piece 2", &pieces[0], "", 1).unwrap_err().to_string();
        assert!(e.starts_with("piece 2: key") && e.contains("twice"), "{e}");
        // The first piece holds the first bucket's keys.
        let mut unlisted = listed(&records);
        unlisted.remove("alpha");
        let e = Restored::new(unlisted)
            .add("piece 0", &pieces[0], "", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("which the export does not list"), "{e}");
    }
}
