//! The RocksDB layout (the table in the catalog's docs): column family names, object and part
//! keys laid out to sort as S3 lists them, and records encoded as DAG-CBOR.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CatalogError;

pub(super) const CF_BUCKETS: &str = "buckets";
pub(super) const CF_OBJECTS: &str = "objects";
pub(super) const CF_UPLOADS: &str = "uploads";
pub(super) const CF_PARTS: &str = "parts";
pub(super) const CF_UNREFERENCED: &str = "unreferenced";

pub(super) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // Records hold strings, integers, maps and CIDs only.
    serde_ipld_dagcbor::to_vec(v).unwrap_or_else(|e| unreachable!("catalog records encode: {e}"))
}

pub(super) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, CatalogError> {
    serde_ipld_dagcbor::from_slice(b).map_err(|e| CatalogError::Damaged(e.to_string()))
}

pub(super) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(super) fn part_key(upload: &str, part: u32) -> Vec<u8> {
    let mut k = upload.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(format!("{part:05}").as_bytes());
    k
}
