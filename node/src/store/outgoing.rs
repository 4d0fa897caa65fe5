//! Whole shards sent a verified piece at a time.

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::verified::{self, OutboardVerifier, ProofError};

use super::layout::piece_count;
use super::{Store, StoreError, StoreMetrics};

impl Store {
    /// Opens a whole shard for sending: its stored outboard, checked against the CID. The
    /// bytes are read a piece at a time and hashed as they are taken from the
    /// [`OutgoingShard`], so a sender can start after the first piece, and a corrupt byte is
    /// still never handed out (it is quarantined when reached).
    ///
    /// A damaged outboard alone does not lose the shard: the outboard is recomputed from the
    /// bytes, and used if they match the CID.
    pub fn open_outgoing(&self, cid: &Cid) -> Result<OutgoingShard, StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let key = cid.to_bytes();
        self.refuse_quarantined(cid, &key)?;
        // The outboard row is how a held shard is found; a damaged one is rebuilt below.
        let stored = match self.outboard(&key, cid) {
            Ok(found) => Some(found),
            Err(e @ StoreError::NotFound { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(%cid, "stored outboard unreadable: {e}");
                None
            }
        };
        let checked = stored.and_then(|(size, ob)| {
            let verifier = OutboardVerifier::new(root, size, &ob).ok()?;
            Some((size, verifier, ob))
        });
        if let Some((size, verifier, outboard)) = checked {
            return Ok(OutgoingShard {
                cid: *cid,
                key,
                size,
                outboard: bytes::Bytes::from(outboard),
                verifier,
                pending: bytes::Bytes::new(),
                next: 0,
            });
        }
        // The CID decides: if the stored bytes hash to it, only the outboard was damaged.
        let data = self.scan_pieces(&key)?.unwrap_or_default();
        let (actual, rebuilt) = verified::outboard(&data);
        if data.is_empty() || actual != root {
            return Err(self.mark_corrupt(cid, 0));
        }
        tracing::warn!(%cid, "stored outboard is damaged; serving a recomputed one");
        let size = data.len() as u64;
        let verifier = OutboardVerifier::new(root, size, &rebuilt).map_err(StoreError::Range)?;
        Ok(OutgoingShard {
            cid: *cid,
            key,
            size,
            outboard: bytes::Bytes::from(rebuilt),
            verifier,
            pending: bytes::Bytes::from(data),
            next: piece_count(size),
        })
    }
}

/// What an [`OutgoingShard`] needs of the store it was opened on: the shard's stored pieces,
/// one at a time, and somewhere to report what it found. Each store implements it; callers
/// see only [`OutgoingShard::next_piece`] and
/// [`ShardStore::next_piece`](super::ShardStore::next_piece).
pub(super) trait PieceSource {
    /// Piece `i` of the shard keyed `key` (`size` bytes), as stored, not yet verified. A piece
    /// missing or damaged in the store quarantines the shard ([`StoreError::Corrupt`]), unless
    /// the shard was deleted since it was opened ([`StoreError::NotFound`]).
    fn read_piece(&self, cid: &Cid, key: &[u8], size: u64, i: usize) -> Result<Bytes, StoreError>;

    /// Records a failed verification at `offset`: the shard is quarantined (unless it was
    /// repaired or deleted meanwhile), and the error to return.
    fn mark_corrupt(&self, cid: &Cid, offset: u64) -> StoreError;

    /// The store's counters.
    fn metrics(&self) -> &StoreMetrics;
}

impl PieceSource for Store {
    fn read_piece(&self, cid: &Cid, key: &[u8], size: u64, i: usize) -> Result<Bytes, StoreError> {
        let piece = self.read_pieces(cid, key, size, i..i + 1)?;
        Ok(Bytes::copy_from_slice(&piece[0]))
    }

    fn mark_corrupt(&self, cid: &Cid, offset: u64) -> StoreError {
        Store::mark_corrupt(self, cid, offset)
    }

    fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }
}

/// A whole shard being sent: see [`Store::open_outgoing`]. Its bytes come out only through
/// [`OutgoingShard::next_piece`], each piece read from the store and verified against the CID
/// first.
#[derive(Debug)]
pub struct OutgoingShard {
    pub(super) cid: Cid,
    pub(super) key: Vec<u8>,
    pub(super) size: u64,
    pub(super) outboard: bytes::Bytes,
    pub(super) verifier: OutboardVerifier,
    /// Read from the store, not yet verified nor handed out: the bytes from
    /// `verifier.verified()` on.
    pub(super) pending: bytes::Bytes,
    /// The next stored piece to read.
    pub(super) next: usize,
}

impl OutgoingShard {
    /// The shard's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The outboard, already checked against the CID.
    pub fn outboard(&self) -> &bytes::Bytes {
        &self.outboard
    }

    /// The next verified piece: whole 16 KiB groups, at most `max` bytes (at least one group)
    /// and never past the end of a stored piece, or `None` once everything was handed out. A
    /// piece that fails verification, or is missing from the store, quarantines the shard and
    /// returns [`StoreError::Corrupt`]; nothing after the last good piece is handed out.
    ///
    /// `store` is the store that opened the shard;
    /// [`ShardStore::next_piece`](super::ShardStore::next_piece) does the same for any store.
    pub fn next_piece(
        &mut self,
        store: &Store,
        max: usize,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        self.next_from(store, max)
    }

    /// [`OutgoingShard::next_piece`], from whichever store opened the shard.
    pub(super) fn next_from(
        &mut self,
        store: &impl PieceSource,
        max: usize,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        if self.verifier.is_done() {
            return Ok(None);
        }
        if self.pending.is_empty() {
            let i = self.next;
            self.pending = store.read_piece(&self.cid, &self.key, self.size, i)?;
            self.next += 1;
        }
        let from = self.verifier.verified();
        let step = max.max(verified::GROUP_BYTES) / verified::GROUP_BYTES * verified::GROUP_BYTES;
        let take = step.min(self.pending.len());
        match self.verifier.check_tail(from, &self.pending[..take]) {
            Ok(ok) if ok > from => {
                if self.verifier.is_done() {
                    store.metrics().reads.inc();
                }
                Ok(Some(self.pending.split_to((ok - from) as usize)))
            }
            // Pieces are whole groups but for the shard's last, so this cannot happen; it must
            // not become a loop that hands out nothing forever.
            Ok(_) => Err(StoreError::Damaged(format!(
                "{}: piece {} did not advance verification",
                self.cid, self.next
            ))),
            Err(ProofError::BadData { start, .. }) => Err(store.mark_corrupt(&self.cid, start)),
            Err(e) => Err(StoreError::Range(e)),
        }
    }
}
