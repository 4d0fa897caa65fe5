//! Verified reads: range proofs and whole shards, `has` and listings.

use std::collections::HashMap;
use std::ops::Range;

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::MAX_SHARD_SIZE;
use cairn_chunker::verified::{self, ProofError};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use cairn_wire::protocol::Holding;

use super::layout::{
    CF_CORRUPT, CF_MANIFESTS, CF_OUTBOARDS, CF_SHARDS, PIECE_BYTES, join, piece_bytes, piece_count,
    piece_key, u64_le,
};
use super::{Store, StoreError};

/// A page of [`Store::list`]: `(cid, length, corrupt)` entries and whether more follow.
pub type ListPage = (Vec<(Cid, u64, bool)>, bool);

impl Store {
    /// Pieces `pieces` of a held shard of `size` bytes, not yet verified. `Ok(Err(offset))`:
    /// a piece is missing, of the wrong length or reported corrupt by RocksDB (`offset` is
    /// where it starts); the caller decides what that means.
    pub(super) fn load_pieces(
        &self,
        key: &[u8],
        size: u64,
        pieces: Range<usize>,
    ) -> Result<Result<Vec<rocksdb::DBPinnableSlice<'_>>, u64>, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(self.config.rocksdb_checksums);
        let keys: Vec<Vec<u8>> = pieces.clone().map(|i| piece_key(key, i)).collect();
        let got = self
            .db
            .batched_multi_get_cf_opt(self.cf(CF_SHARDS)?, &keys, true, &ro);
        let mut out = Vec::with_capacity(keys.len());
        for (i, piece) in pieces.zip(got) {
            let want = piece_bytes(size, i);
            match piece {
                Ok(Some(p)) if p.len() as u64 == want.end - want.start => out.push(p),
                Ok(_) => return Ok(Err(want.start)),
                Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => return Ok(Err(want.start)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Ok(out))
    }

    /// [`Store::load_pieces`] for a read: a missing or damaged piece quarantines the shard,
    /// unless the shard was deleted since the reader found it (then it is simply not found).
    pub(super) fn read_pieces(
        &self,
        cid: &Cid,
        key: &[u8],
        size: u64,
        pieces: Range<usize>,
    ) -> Result<Vec<rocksdb::DBPinnableSlice<'_>>, StoreError> {
        match self.load_pieces(key, size, pieces)? {
            Ok(loaded) => Ok(loaded),
            Err(_)
                if self
                    .db
                    .get_pinned_cf(self.cf(CF_OUTBOARDS)?, key)?
                    .is_none() =>
            {
                Err(StoreError::NotFound { cid: *cid })
            }
            Err(offset) => Err(self.mark_corrupt(cid, offset)),
        }
    }

    /// Every stored piece of a shard, in order, found by key rather than by the size in its
    /// outboard row (for when that row is damaged): the bytes, or `None` if a piece is missing
    /// or unreadable.
    pub(super) fn scan_pieces(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(self.config.rocksdb_checksums);
        let first = piece_key(key, 0);
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_SHARDS)?,
            ro,
            IteratorMode::From(&first, Direction::Forward),
        );
        let mut data = Vec::new();
        for (n, item) in iter.enumerate() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if k.len() != key.len() + 2 || !k.starts_with(key) {
                break;
            }
            #[allow(clippy::big_endian_bytes)] // see piece_key
            let i = u16::from_be_bytes([k[key.len()], k[key.len() + 1]]) as usize;
            if i != n
                || data.len() != n * PIECE_BYTES
                || data.len() + v.len() > MAX_SHARD_SIZE as usize
            {
                return Ok(None);
            }
            data.extend_from_slice(&v);
        }
        Ok(Some(data))
    }

    /// Size and outboard of a held shard.
    pub(super) fn outboard(&self, key: &[u8], cid: &Cid) -> Result<(u64, Vec<u8>), StoreError> {
        let ob = self
            .db
            .get_pinned_cf(self.cf(CF_OUTBOARDS)?, key)?
            .ok_or(StoreError::NotFound { cid: *cid })?;
        Ok((u64_le(&ob)?, ob[8..].to_vec()))
    }

    /// A verified-streaming proof stream for `range` of a shard (whole shard if `None`): the
    /// bytes are checked against the CID while the proof is built, so a corrupt copy is refused
    /// (and quarantined) instead of served. Only the pieces the proof needs are read. Returns
    /// the shard size and the proof stream.
    pub fn read_range(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let key = cid.to_bytes();
        self.refuse_quarantined(cid, &key)?;
        let (size, outboard) = self.outboard(&key, cid)?;
        let range = range.unwrap_or(0..size);
        // A bad range is the asker's mistake: refuse it before touching the pieces.
        if range.start >= range.end || range.end > size {
            return Err(StoreError::Range(ProofError::BadRange {
                start: range.start,
                end: range.end,
                size,
            }));
        }
        let need = verified::needed_bytes(size, range.clone());
        let pieces = (need.start / PIECE_BYTES as u64) as usize
            ..(need.end.div_ceil(PIECE_BYTES as u64) as usize).min(piece_count(size));
        let offset = piece_bytes(size, pieces.start).start;
        let loaded = self.read_pieces(cid, &key, size, pieces)?;
        let mut proof = Vec::new();
        match verified::encode_range_window(
            &root, size, offset, &loaded, &outboard, range, &mut proof,
        ) {
            Ok(()) => {
                self.metrics.reads.inc();
                Ok((size, proof))
            }
            Err(ProofError::CorruptSource { offset })
            | Err(ProofError::OutboardSize {
                expected: offset, ..
            }) => Err(self.mark_corrupt(cid, offset)),
            Err(e) => Err(StoreError::Range(e)),
        }
    }

    /// The whole shard, verified against its CID.
    pub fn read_shard(&self, cid: &Cid) -> Result<Vec<u8>, StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let key = cid.to_bytes();
        self.refuse_quarantined(cid, &key)?;
        let (size, _) = self.outboard(&key, cid)?;
        let data = join(&self.read_pieces(cid, &key, size, 0..piece_count(size))?);
        if blake3::hash(&data) != root {
            return Err(self.mark_corrupt(cid, 0));
        }
        self.metrics.reads.inc();
        Ok(data)
    }

    /// For each CID: held intact (and its length), held but quarantined, or absent.
    ///
    /// Shard CIDs (raw codec) are looked up among shards; manifest CIDs (DAG-CBOR) among
    /// manifests, whose bytes are re-hashed, so a damaged manifest answers `Corrupt`.
    pub fn has(&self, cids: &[Cid]) -> Result<Vec<Holding>, StoreError> {
        let (outboards, corrupt) = (self.cf(CF_OUTBOARDS)?, self.cf(CF_CORRUPT)?);
        let keys: Vec<Vec<u8>> = cids.iter().map(Cid::to_bytes).collect();
        let obs = self.db.batched_multi_get_cf(outboards, &keys, false);
        let bad = self.db.batched_multi_get_cf(corrupt, &keys, false);
        let mut out: Vec<Holding> = obs
            .into_iter()
            .zip(bad)
            .map(|(ob, bad)| match (ob?, bad?) {
                (Some(ob), None) => Ok(Holding::Intact(u64_le(&ob)?)),
                (Some(_), Some(_)) => Ok(Holding::Corrupt),
                (None, _) => Ok(Holding::Absent),
            })
            .collect::<Result<_, StoreError>>()?;
        // Each manifest is re-hashed once per call, however often it is asked for.
        let mut seen: HashMap<&Cid, Holding> = HashMap::new();
        for (i, cid) in cids.iter().enumerate() {
            if cid.codec() != cids::CODEC_DAG_CBOR {
                continue;
            }
            if let Some(known) = seen.get(cid) {
                out[i] = *known;
                continue;
            }
            if let Some(bytes) = self.db.get_pinned_cf(self.cf(CF_MANIFESTS)?, &keys[i])? {
                out[i] = if cids::dag_cbor(&bytes) == *cid {
                    Holding::Intact(bytes.len() as u64)
                } else {
                    Holding::Corrupt
                };
                seen.insert(cid, out[i]);
            }
        }
        Ok(out)
    }

    /// Held shards in CID byte order, after `after`: `(cid, length, corrupt)`.
    pub fn list(&self, after: Option<&Cid>, limit: usize) -> Result<ListPage, StoreError> {
        let start = after.map(Cid::to_bytes);
        let mode = match &start {
            Some(k) => IteratorMode::From(k, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_OUTBOARDS)?, mode) {
            let (key, value) = item?;
            if start.as_deref() == Some(&key[..]) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            // A damaged row is skipped (and logged), so it cannot stop listings or the scrub.
            let row = cids::from_bytes(&key)
                .map_err(|e| StoreError::Damaged(format!("bad key in outboards: {e}")))
                .and_then(|cid| Ok((cid, u64_le(&value)?)));
            let (cid, size) = match row {
                Ok(row) => row,
                Err(e) => {
                    tracing::error!(key = ?&key[..], "skipping a damaged shard row: {e}");
                    continue;
                }
            };
            let corrupt = self.is_corrupt(&key)?;
            out.push((cid, size, corrupt));
        }
        Ok((out, false))
    }
}
