//! [`MemStore`]: verified reads, `has`, listings and the scrub.

use std::ops::{Bound, Range};

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::verified::{self, OutboardVerifier, ProofError};

use crate::store::layout::{PIECE_BYTES, piece_bytes, piece_count, u64_le};
use crate::store::outgoing::PieceSource;
use crate::store::{ListPage, OutgoingShard, ScrubReport, StoreError};
use cairn_wire::protocol::Holding;

use super::{Held, MemStore, join};

impl MemStore {
    /// A held shard that is not quarantined, as it is now (or why not).
    pub(super) fn servable(&self, cid: &Cid) -> Result<Held, StoreError> {
        let state = self.state();
        let held = state
            .shards
            .get(&cid.to_bytes())
            .ok_or(StoreError::NotFound { cid: *cid })?;
        if held.corrupt.is_some() {
            return Err(StoreError::Corrupt {
                cid: *cid,
                offset: 0,
            });
        }
        Ok(held.clone())
    }

    /// A piece found missing or damaged at `offset` by a reader: the shard is quarantined,
    /// unless it was deleted since the reader found it (then it is simply not found).
    pub(super) fn missing_piece(&self, cid: &Cid, offset: u64) -> StoreError {
        if !self.state().shards.contains_key(&cid.to_bytes()) {
            return StoreError::NotFound { cid: *cid };
        }
        PieceSource::mark_corrupt(self, cid, offset)
    }

    /// A verified-streaming proof stream for `range` of a shard (whole shard if `None`), built
    /// from verified bytes only (see [`Store::read_range`](super::super::Store::read_range)).
    pub fn read_range(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let held = self.servable(cid)?;
        let (size, outboard) = held.outboard()?;
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
        let loaded = held
            .load(size, pieces)
            .map_err(|at| self.missing_piece(cid, at))?;
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
            }) => Err(PieceSource::mark_corrupt(self, cid, offset)),
            Err(e) => Err(StoreError::Range(e)),
        }
    }

    /// The whole shard, verified against its CID.
    pub fn read_shard(&self, cid: &Cid) -> Result<Vec<u8>, StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let held = self.servable(cid)?;
        let (size, _) = held.outboard()?;
        let loaded = held
            .load(size, 0..piece_count(size))
            .map_err(|at| self.missing_piece(cid, at))?;
        let data = join(&loaded);
        if blake3::hash(&data) != root {
            return Err(PieceSource::mark_corrupt(self, cid, 0));
        }
        self.metrics.reads.inc();
        Ok(data)
    }

    /// Opens a whole shard for sending (see
    /// [`Store::open_outgoing`](super::super::Store::open_outgoing)); its pieces are taken
    /// with [`ShardStore::next_piece`](super::super::ShardStore::next_piece).
    pub fn open_outgoing(&self, cid: &Cid) -> Result<OutgoingShard, StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let key = cid.to_bytes();
        let held = self.servable(cid)?;
        // The outboard row is how a held shard is found; a damaged one is rebuilt below.
        let stored = held
            .outboard()
            .inspect_err(|e| tracing::warn!(%cid, "stored outboard unreadable: {e}"))
            .ok()
            .and_then(|(size, ob)| {
                let verifier = OutboardVerifier::new(root, size, &ob).ok()?;
                Some((size, verifier, ob))
            });
        if let Some((size, verifier, outboard)) = stored {
            return Ok(OutgoingShard {
                cid: *cid,
                key,
                size,
                outboard: Bytes::from(outboard),
                verifier,
                pending: Bytes::new(),
                next: 0,
            });
        }
        // The CID decides: if the stored bytes hash to it, only the outboard was damaged.
        let data = held.scan().unwrap_or_default();
        let (actual, rebuilt) = verified::outboard(&data);
        if data.is_empty() || actual != root {
            return Err(PieceSource::mark_corrupt(self, cid, 0));
        }
        tracing::warn!(%cid, "stored outboard is damaged; serving a recomputed one");
        let size = data.len() as u64;
        let verifier = OutboardVerifier::new(root, size, &rebuilt).map_err(StoreError::Range)?;
        Ok(OutgoingShard {
            cid: *cid,
            key,
            size,
            outboard: Bytes::from(rebuilt),
            verifier,
            pending: Bytes::from(data),
            next: piece_count(size),
        })
    }

    /// For each CID: held intact (and its length), held but quarantined, or absent; manifest
    /// CIDs are answered from the manifests, re-hashed.
    pub fn has(&self, cids: &[Cid]) -> Result<Vec<Holding>, StoreError> {
        let state = self.state();
        let mut out = Vec::with_capacity(cids.len());
        for cid in cids {
            let key = cid.to_bytes();
            let mut holding = match state.shards.get(&key) {
                Some(held) if held.corrupt.is_none() => Holding::Intact(u64_le(&held.row)?),
                Some(_) => Holding::Corrupt,
                None => Holding::Absent,
            };
            // Manifest CIDs are answered from the manifests, re-hashed.
            if cid.codec() == cids::CODEC_DAG_CBOR
                && let Some(bytes) = state.manifests.get(&key)
            {
                holding = if cids::dag_cbor(bytes) == *cid {
                    Holding::Intact(bytes.len() as u64)
                } else {
                    Holding::Corrupt
                };
            }
            out.push(holding);
        }
        Ok(out)
    }

    /// Held shards in CID byte order, after `after`, at most `limit`: `(cid, length,
    /// corrupt)`.
    pub fn list(&self, after: Option<&Cid>, limit: usize) -> Result<ListPage, StoreError> {
        let state = self.state();
        let start = after.map_or(Bound::Unbounded, |c| Bound::Excluded(c.to_bytes()));
        let mut out = Vec::new();
        for (key, held) in state.shards.range((start, Bound::Unbounded)) {
            if out.len() == limit {
                return Ok((out, true));
            }
            // A damaged row is skipped (and logged), as the RocksDB store does.
            let row = cids::from_bytes(key)
                .map_err(|e| StoreError::Damaged(format!("bad key in outboards: {e}")))
                .and_then(|cid| Ok((cid, u64_le(&held.row)?)));
            let (cid, size) = match row {
                Ok(row) => row,
                Err(e) => {
                    tracing::error!(key = ?&key[..], "skipping a damaged shard row: {e}");
                    continue;
                }
            };
            out.push((cid, size, held.corrupt.is_some()));
        }
        Ok((out, false))
    }

    /// Verifies shards from `cursor` on, until about `max_bytes` were read.
    pub fn scrub_step(
        &self,
        cursor: Option<&Cid>,
        max_bytes: u64,
    ) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let (batch, more) = self.list(cursor, 64)?;
        let mut last = None;
        for (cid, size, corrupt) in batch {
            last = Some(cid);
            if corrupt {
                continue;
            }
            let verdict = (|| {
                let root = cids::digest(&cid, Codec::Raw)?;
                let held = self.state().shards.get(&cid.to_bytes()).cloned();
                let (loaded, stored) = match held {
                    Some(held) => (held.load(size, 0..piece_count(size)), held.outboard()),
                    // Deleted since it was listed: the RocksDB store finds no pieces either.
                    None => (Err(0), Err(StoreError::NotFound { cid })),
                };
                Ok::<_, StoreError>(match loaded {
                    Ok(pieces) => {
                        report.bytes += size;
                        let (actual, outboard) = verified::outboard(&join(&pieces));
                        actual == root && stored?.1 == outboard
                    }
                    Err(_) => false,
                })
            })();
            report.checked += 1;
            match verdict {
                Ok(true) => {}
                Ok(false) => {
                    let _ = PieceSource::mark_corrupt(self, &cid, 0);
                    report.corrupt.push(cid);
                }
                Err(e) => {
                    tracing::error!(%cid, "scrub could not check a shard: {e}");
                    report.unreadable.push((cid, e.to_string()));
                }
            }
            if report.bytes >= max_bytes {
                break;
            }
        }
        self.metrics.scrubbed_bytes.inc_by(report.bytes);
        let finished_batch = last.is_none() || (!more && report.bytes < max_bytes);
        report.next = if finished_batch { None } else { last };
        Ok(report)
    }
}
