//! Helpers for the store's tests.

use std::path::Path;

use cairn_chunker::cids::{self, Cid};

use super::layout::{CF_SHARDS, piece_key};
use super::*;

pub(super) fn open(dir: &Path, capacity: u64) -> Store {
    Store::open(
        dir,
        StoreConfig {
            capacity,
            sync_writes: false,
            rocksdb_checksums: false,
            disk_reserve: 0,
        },
        StoreMetrics::default(),
    )
    .unwrap()
}

/// Epochs of one second: epoch `e` is signed at `e * 1000` ms.
pub(super) fn epochs() -> cairn_proofs::epoch::Epochs {
    cairn_proofs::epoch::Epochs::new(std::time::Duration::from_secs(1)).unwrap()
}

pub(super) fn shard(len: usize, seed: u8) -> (Cid, Vec<u8>) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect();
    (cids::raw(&data), data)
}

/// Replaces the stored bytes of `cid` behind the store's back, as bitrot would.
pub(super) fn overwrite_stored(store: &Store, cid: &Cid, bytes: &[u8]) {
    let shards = store.cf(CF_SHARDS).unwrap();
    for (i, piece) in bytes.chunks(PIECE_BYTES).enumerate() {
        store
            .db
            .put_cf(shards, piece_key(&cid.to_bytes(), i), piece)
            .unwrap();
    }
}

/// Takes every piece of an outgoing shard: the bytes handed out, and how it ended.
pub(super) fn drain<S: ShardStore + ?Sized>(
    store: &S,
    cid: &Cid,
) -> (Vec<u8>, Result<(), StoreError>) {
    let mut shard = match store.open_outgoing(cid) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut out = Vec::new();
    loop {
        // Not a multiple of a group: pieces round down to whole groups.
        match store.next_piece(&mut shard, 100_000) {
            Ok(Some(p)) => {
                assert!(p.len() <= 100_000);
                out.extend_from_slice(&p);
            }
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// An object manifest (a small object, 2+1 shards) as `(CID, bytes)`.
pub(super) fn manifest(seed: u64) -> (Cid, Vec<u8>) {
    let mut params = cairn_chunker::pipeline::EncodeParams::with_shape(2, 1);
    params.threads = 1;
    let data = bytes::Bytes::from(cairn_testkit::data::bytes(10_000, seed));
    let mut encoder = cairn_chunker::pipeline::Encoder::from_bytes(data, params).unwrap();
    for stripe in encoder.by_ref() {
        stripe.unwrap();
    }
    let m = encoder.finish().unwrap();
    (m.cid(), m.to_bytes())
}

impl Store {
    /// Closes the store and opens it again with the same settings.
    pub(super) fn reopen_for_test(self) -> Store {
        let (path, config, metrics) =
            (self.path.clone(), self.config.clone(), self.metrics.clone());
        drop(self);
        Store::open(&path, config, metrics).unwrap()
    }
}
