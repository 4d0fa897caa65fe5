//! The store's contract: one suite of tests, run against every [`ShardStore`] implementation
//! ([`Store`] on RocksDB in a temporary directory, and [`MemStore`]), so that both behave the
//! same way. Tests of what only RocksDB has (formats on disk, their conversion, the directory
//! lock, rows damaged in ways only a database can be) stay beside the RocksDB code.
//!
//! Each test is a generic function over [`Subject`]: a store, with the ways to damage it that
//! the tests need. [`contract!`] runs each one against both stores.

use std::path::Path;

use cairn_chunker::cids::Cid;

use super::layout::{CF_MANIFESTS, CF_OUTBOARDS, CF_SHARDS, piece_key};
use super::outgoing::PieceSource;
use super::testing::{self, shard};
use super::*;

/// A store under test, with the faults the tests inject. [`PieceSource`] gives the tests its
/// counters, and a way to report a corrupt read as a reader that loaded bad bytes would.
trait Subject: ShardStore + PieceSource + Sized {
    /// An empty store of `capacity` bytes (in `dir` if it needs a directory), on a disk with
    /// room beyond its reserve.
    fn fresh(dir: &Path, capacity: u64) -> Self;

    /// The same store closed and opened again: what it held is still there.
    fn reopen(self) -> Self;

    /// Replaces the stored bytes of `cid`, piece by piece, as bitrot would.
    fn overwrite_stored(&self, cid: &Cid, bytes: &[u8]);

    /// Loses piece `i` of `cid`.
    fn lose_piece(&self, cid: &Cid, i: usize);

    /// Replaces the outboard row of `cid` (`size: u64 LE ‖ outboard`).
    fn overwrite_outboard(&self, cid: &Cid, row: &[u8]);

    /// Replaces the stored bytes of manifest `cid`.
    fn overwrite_manifest(&self, cid: &Cid, bytes: &[u8]);

    /// Leaves the disk less room than the reserve asks for, as when a disk fills up.
    fn fill_disk(&mut self);

    /// Gives the disk room again.
    fn free_disk(&mut self);
}

impl Subject for Store {
    fn fresh(dir: &Path, capacity: u64) -> Self {
        testing::open(dir, capacity)
    }

    fn reopen(self) -> Self {
        self.reopen_for_test()
    }

    fn overwrite_stored(&self, cid: &Cid, bytes: &[u8]) {
        testing::overwrite_stored(self, cid, bytes);
    }

    fn lose_piece(&self, cid: &Cid, i: usize) {
        let shards = self.cf(CF_SHARDS).unwrap();
        self.db
            .delete_cf(shards, piece_key(&cid.to_bytes(), i))
            .unwrap();
    }

    fn overwrite_outboard(&self, cid: &Cid, row: &[u8]) {
        let outboards = self.cf(CF_OUTBOARDS).unwrap();
        self.db.put_cf(outboards, cid.to_bytes(), row).unwrap();
    }

    fn overwrite_manifest(&self, cid: &Cid, bytes: &[u8]) {
        let manifests = self.cf(CF_MANIFESTS).unwrap();
        self.db.put_cf(manifests, cid.to_bytes(), bytes).unwrap();
    }

    fn fill_disk(&mut self) {
        let available = self.disk_available().expect("statvfs works here");
        self.config.disk_reserve = available + (1 << 40);
    }

    fn free_disk(&mut self) {
        self.config.disk_reserve = 0;
    }
}

/// The disk reserve of the in-memory stores under test.
const MEMORY_RESERVE: u64 = 1 << 30;

impl Subject for MemStore {
    fn fresh(_dir: &Path, capacity: u64) -> Self {
        // A reserve, so that the rule that keeps it free is held to the contract too.
        let config = StoreConfig {
            capacity,
            disk_reserve: MEMORY_RESERVE,
            ..StoreConfig::default()
        };
        let store = MemStore::new(config, StoreMetrics::default());
        store.set_disk_available(Some(MEMORY_RESERVE + (1 << 40)));
        store
    }

    fn reopen(self) -> Self {
        self
    }

    fn overwrite_stored(&self, cid: &Cid, bytes: &[u8]) {
        assert!(MemStore::overwrite_stored(self, cid, bytes));
    }

    fn lose_piece(&self, cid: &Cid, i: usize) {
        MemStore::lose_piece(self, cid, i);
    }

    fn overwrite_outboard(&self, cid: &Cid, row: &[u8]) {
        assert!(MemStore::overwrite_outboard(self, cid, row));
    }

    fn overwrite_manifest(&self, cid: &Cid, bytes: &[u8]) {
        assert!(MemStore::overwrite_manifest(self, cid, bytes));
    }

    fn fill_disk(&mut self) {
        self.set_disk_available(Some(MEMORY_RESERVE - 1));
    }

    fn free_disk(&mut self) {
        self.set_disk_available(Some(MEMORY_RESERVE + (1 << 40)));
    }
}

/// Runs each contract test against both stores: `on_rocksdb::<test>` and `in_memory::<test>`.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        /// The contract, held against the RocksDB store.
        mod on_rocksdb {
            $(#[test]
            fn $test() {
                super::$test::<crate::store::Store>();
            })*
        }

        /// The contract, held against the in-memory store.
        mod in_memory {
            $(#[test]
            fn $test() {
                super::$test::<crate::store::MemStore>();
            })*
        }
    };
}

mod leases;
mod manifests;
mod reads;
mod receipts;
mod script;
mod shards;

/// The harness itself: a fault injected is one the store sees.
#[test]
fn memory_store_faults_hit_only_what_it_holds() {
    let store = MemStore::new(StoreConfig::default(), StoreMetrics::default());
    let (cid, data) = shard(200_000, 2);
    assert!(!store.overwrite_stored(&cid, &data));
    assert!(!store.lose_piece(&cid, 0));
    assert!(!store.overwrite_outboard(&cid, &[]));
    assert!(!store.overwrite_manifest(&cid, &[]));
    store.put_shard(&cid, &data).unwrap();
    assert!(store.lose_piece(&cid, 1));
    assert!(!store.lose_piece(&cid, 1), "lost already");
    assert!(!store.lose_piece(&cid, 2), "a 200 kB shard has two pieces");
}
