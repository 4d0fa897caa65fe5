//! [`MemStore`]: the shard store's in-memory twin, for tests and simulations.

mod leases;
mod manifests;
mod reads;
mod receipts;
mod shards;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use cairn_chunker::cids::Cid;
use cairn_chunker::manifest::MAX_SHARD_SIZE;

use cairn_wire::protocol::{Holding, ManifestKind};

use super::layout::{PIECE_BYTES, piece_bytes, u64_le};
use super::outgoing::PieceSource;
use super::shards::now_ms;
use super::{
    CheckedShard, Committable, ListPage, OutgoingShard, PutOutcome, ReceiptCursor, ScrubReport,
    ShardStore, StoreConfig, StoreError, StoreMetrics, StoreStats,
};

/// A shard store in memory, with the observable behaviour of the RocksDB [`Store`](super::Store)
/// (the contract tests in `store/contract/` hold both to it): shards verified against their
/// CIDs when stored and when read, kept in pieces of [`PIECE_BYTES`] with their outboards, so a
/// range read checks (and can only be failed by) the pieces it needs; corrupt copies
/// quarantined until repaired; capacity, disk room and exact counters; manifests, provenance
/// envelopes and the signed-by index in the same order and limits; the scrub in the same
/// steps. It counts into the same [`StoreMetrics`].
///
/// What it leaves out: durability (nothing outlives the value; [`ShardStore::flush`] does
/// nothing), RocksDB's own failures (I/O errors, its checksums, the lock on the directory),
/// the on-disk formats and their conversion, write latency and fsyncs, and the RocksDB store's
/// concurrency machinery: callers on many threads are safe, but each operation's bookkeeping
/// happens under one lock (hashing outside it), so a test on a `MemStore` says nothing about
/// concurrent writers of one shard waiting for each other, or batches committed as a group. It
/// starts no thread and needs no runtime. The disk is a number that a test or simulation sets
/// ([`MemStore::set_disk_available`]; unknown by default, so only the capacity limits), and it
/// does not shrink as shards are stored.
///
/// Faults are injected with [`MemStore::overwrite_stored`], [`MemStore::lose_piece`],
/// [`MemStore::overwrite_outboard`] and [`MemStore::overwrite_manifest`], as bitrot or a
/// damaged disk would leave a real store. Leases and receipts are kept as the RocksDB store
/// keeps them, in the same orders; a `MemStore` has no older format, so every shard it holds
/// was leased (or not yet) through [`ShardStore::extend_lease`].
pub struct MemStore {
    config: StoreConfig,
    metrics: StoreMetrics,
    /// Named in [`StoreError::DiskFull`] messages.
    path: PathBuf,
    state: Mutex<State>,
}

/// Everything a [`MemStore`] holds, behind its lock.
#[derive(Default)]
struct State {
    /// Held shards by binary CID, in CID byte order (the order of [`ShardStore::list`]).
    shards: BTreeMap<Vec<u8>, Held>,
    /// Manifest bytes by binary manifest CID.
    manifests: HashMap<Vec<u8>, Vec<u8>>,
    /// Provenance envelopes by manifest, then by envelope CID (the order they are served in).
    provenance: HashMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The signed-by index, keyed as the RocksDB store keys it: `signer ‖ time_ms (u64 BE) ‖
    /// manifest CID` -> kind (0 object, 1 dataset).
    signed: BTreeMap<Vec<u8>, u8>,
    /// Storage receipts, keyed as the RocksDB store's `receipts` rows: `manifest CID ‖ shard
    /// root ‖ node key` -> encoded receipt.
    receipts: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The same receipts keyed `node key ‖ manifest CID ‖ shard root`.
    receipts_by_node: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Shard bytes held.
    used: u64,
    /// Bytes of manifests and envelopes held (they count against capacity too).
    manifest_bytes: u64,
    /// Shards held.
    count: u64,
    /// What the disk has free (`None`: unknown).
    disk_available: Option<u64>,
}

/// One held shard. Cloning it copies the row and takes handles on the pieces, not copies.
#[derive(Clone)]
struct Held {
    /// `size: u64 LE ‖ outboard`, as the RocksDB store's `outboards` rows are, so that a
    /// damaged row can be modelled.
    row: Vec<u8>,
    /// The bytes, in pieces of [`PIECE_BYTES`] (the last may be shorter); `None`: lost.
    pieces: Vec<Option<Bytes>>,
    /// When it failed verification (ms since the epoch): quarantined until stored again.
    corrupt: Option<u64>,
    /// Its lease once it has one: `(start, end, size)`, as the RocksDB store's `leases` rows
    /// (the size as it was when the lease was recorded).
    lease: Option<(u64, u64, u64)>,
}

impl Held {
    /// Size and outboard, from the row.
    fn outboard(&self) -> Result<(u64, Vec<u8>), StoreError> {
        Ok((u64_le(&self.row)?, self.row[8..].to_vec()))
    }

    /// Pieces `pieces` of a shard of `size` bytes, not verified; `Err(offset)` where a piece is
    /// missing or of the wrong length.
    fn load(&self, size: u64, pieces: Range<usize>) -> Result<Vec<Bytes>, u64> {
        pieces
            .map(|i| {
                let want = piece_bytes(size, i);
                match self.pieces.get(i) {
                    Some(Some(p)) if p.len() as u64 == want.end - want.start => Ok(p.clone()),
                    _ => Err(want.start),
                }
            })
            .collect()
    }

    /// Every stored piece in order, found without the row's size (for when the row is
    /// damaged): the bytes, or `None` if a piece is missing or out of place.
    fn scan(&self) -> Option<Vec<u8>> {
        let mut data = Vec::new();
        for (n, piece) in self.pieces.iter().enumerate() {
            let Some(piece) = piece else {
                // Missing at the end: what is there is all there is.
                return self.pieces[n..].iter().all(Option::is_none).then_some(data);
            };
            if data.len() != n * PIECE_BYTES || data.len() + piece.len() > MAX_SHARD_SIZE as usize {
                return None;
            }
            data.extend_from_slice(piece);
        }
        Some(data)
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("MemStore")
            .field("shards", &state.count)
            .field("used", &state.used)
            .field("capacity", &self.config.capacity)
            .finish_non_exhaustive()
    }
}

/// Pieces as one buffer.
fn join(pieces: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
    for p in pieces {
        out.extend_from_slice(p);
    }
    out
}

impl MemStore {
    /// An empty store with `config`'s capacity and disk reserve (its other settings are about
    /// RocksDB), counting into `metrics`.
    pub fn new(config: StoreConfig, metrics: StoreMetrics) -> Self {
        Self {
            config,
            metrics,
            path: PathBuf::from("(memory)"),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets what the disk has free, as the filesystem would report it (`None`: unknown).
    /// Shards are refused when they would leave less than the configured reserve.
    pub fn set_disk_available(&self, available: Option<u64>) {
        self.state().disk_available = available;
    }

    /// Fault injection: replaces the stored bytes of `cid` with `bytes`, piece by piece, as
    /// bitrot would (the outboard is left alone). `false` if the shard is not held.
    pub fn overwrite_stored(&self, cid: &Cid, bytes: &[u8]) -> bool {
        let mut state = self.state();
        let Some(held) = state.shards.get_mut(&cid.to_bytes()) else {
            return false;
        };
        for (i, piece) in bytes.chunks(PIECE_BYTES).enumerate() {
            if held.pieces.len() <= i {
                held.pieces.resize(i + 1, None);
            }
            held.pieces[i] = Some(Bytes::copy_from_slice(piece));
        }
        true
    }

    /// Fault injection: loses piece `i` of `cid`, as a damaged disk would. `false` if there was
    /// no such piece.
    pub fn lose_piece(&self, cid: &Cid, i: usize) -> bool {
        let mut state = self.state();
        let piece = state
            .shards
            .get_mut(&cid.to_bytes())
            .and_then(|held| held.pieces.get_mut(i));
        piece.is_some_and(|p| p.take().is_some())
    }

    /// Fault injection: replaces the outboard row of `cid` (`size: u64 LE ‖ outboard`, see
    /// `node/DESIGN.md`) with `row`, whatever it holds. `false` if the shard is not held.
    pub fn overwrite_outboard(&self, cid: &Cid, row: &[u8]) -> bool {
        let mut state = self.state();
        let Some(held) = state.shards.get_mut(&cid.to_bytes()) else {
            return false;
        };
        held.row = row.to_vec();
        true
    }

    /// Fault injection: replaces the stored bytes of manifest `cid`. `false` if it is not
    /// held.
    pub fn overwrite_manifest(&self, cid: &Cid, bytes: &[u8]) -> bool {
        let mut state = self.state();
        let Some(stored) = state.manifests.get_mut(&cid.to_bytes()) else {
            return false;
        };
        *stored = bytes.to_vec();
        true
    }
}

impl PieceSource for MemStore {
    fn read_piece(&self, cid: &Cid, key: &[u8], size: u64, i: usize) -> Result<Bytes, StoreError> {
        let loaded = {
            let state = self.state();
            let held = state
                .shards
                .get(key)
                .ok_or(StoreError::NotFound { cid: *cid })?;
            held.load(size, i..i + 1)
        };
        match loaded {
            Ok(mut pieces) => Ok(pieces.swap_remove(0)),
            Err(offset) => Err(self.missing_piece(cid, offset)),
        }
    }

    fn mark_corrupt(&self, cid: &Cid, offset: u64) -> StoreError {
        self.metrics.verification_failures.inc();
        let mut state = self.state();
        if Self::intact_or_gone(&state, cid) {
            tracing::warn!(%cid, "a failed read raced a rewrite or delete of the shard: not quarantined");
            return StoreError::Corrupt { cid: *cid, offset };
        }
        tracing::error!(target: "cairn::_events::corrupt", %cid, offset, "stored shard failed BLAKE3 verification; quarantined");
        if let Some(held) = state.shards.get_mut(&cid.to_bytes()) {
            held.corrupt = Some(now_ms());
        }
        StoreError::Corrupt { cid: *cid, offset }
    }

    fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }
}

/// The in-memory store's own methods, documented where they are defined.
impl ShardStore for MemStore {
    fn stats(&self) -> StoreStats {
        MemStore::stats(self)
    }

    fn check_space(&self, len: u64) -> Result<(), StoreError> {
        MemStore::check_space(self, len)
    }

    fn put_shard(&self, cid: &Cid, data: &[u8]) -> Result<PutOutcome, StoreError> {
        MemStore::put_shard(self, cid, data)
    }

    fn check_shard(&self, cid: &Cid, data: Bytes) -> Result<CheckedShard, StoreError> {
        MemStore::check_shard(self, cid, data)
    }

    fn commit_shard(&self, shard: CheckedShard) -> Result<PutOutcome, StoreError> {
        MemStore::commit_shard(self, shard)
    }

    fn delete_shard(&self, cid: &Cid) -> Result<bool, StoreError> {
        MemStore::delete_shard(self, cid)
    }

    fn read_range(
        &self,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        MemStore::read_range(self, cid, range)
    }

    fn read_shard(&self, cid: &Cid) -> Result<Vec<u8>, StoreError> {
        MemStore::read_shard(self, cid)
    }

    fn open_outgoing(&self, cid: &Cid) -> Result<OutgoingShard, StoreError> {
        MemStore::open_outgoing(self, cid)
    }

    fn next_piece(
        &self,
        shard: &mut OutgoingShard,
        max: usize,
    ) -> Result<Option<Bytes>, StoreError> {
        shard.next_from(self, max)
    }

    fn has(&self, cids: &[Cid]) -> Result<Vec<Holding>, StoreError> {
        MemStore::has(self, cids)
    }

    fn list(&self, after: Option<&Cid>, limit: usize) -> Result<ListPage, StoreError> {
        MemStore::list(self, after, limit)
    }

    fn scrub_step(&self, cursor: Option<&Cid>, max_bytes: u64) -> Result<ScrubReport, StoreError> {
        MemStore::scrub_step(self, cursor, max_bytes)
    }

    fn put_manifest(
        &self,
        cid: &Cid,
        kind: ManifestKind,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        MemStore::put_manifest(self, cid, kind, bytes, envelopes)
    }

    fn get_manifest(&self, cid: &Cid) -> Result<(Vec<u8>, Vec<Vec<u8>>), StoreError> {
        MemStore::get_manifest(self, cid)
    }

    fn signed_by(
        &self,
        signer: &[u8],
        limit: usize,
    ) -> Result<Vec<(Cid, u64, ManifestKind)>, StoreError> {
        MemStore::signed_by(self, signer, limit)
    }

    fn extend_lease(&self, cid: &Cid, start: u64, end: u64) -> Result<(u64, u64), StoreError> {
        MemStore::extend_lease(self, cid, start, end)
    }

    fn lease(&self, cid: &Cid) -> Result<Option<(u64, u64)>, StoreError> {
        MemStore::lease(self, cid)
    }

    fn committable(&self, epoch: u64) -> Result<Committable, StoreError> {
        MemStore::committable(self, epoch)
    }

    fn read_group(&self, cid: &Cid, group: u64) -> Result<(u64, Vec<u8>, Vec<u8>), StoreError> {
        MemStore::read_group(self, cid, group)
    }

    fn quarantine(&self, cid: &Cid, offset: u64) -> Result<(), StoreError> {
        MemStore::quarantine(self, cid, offset)
    }

    fn put_receipts(&self, manifest: &Cid, receipts: &[Vec<u8>]) -> Result<usize, StoreError> {
        MemStore::put_receipts(self, manifest, receipts)
    }

    fn receipts_for(&self, manifest: &Cid) -> Result<Vec<Vec<u8>>, StoreError> {
        MemStore::receipts_for(self, manifest)
    }

    fn receipts_page(
        &self,
        manifest: &Cid,
        after: Option<ReceiptCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        MemStore::receipts_page(self, manifest, after, limit)
    }

    fn receipts_of(&self, node: &[u8; 32], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        MemStore::receipts_of(self, node, limit)
    }

    /// Nothing to make durable.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
