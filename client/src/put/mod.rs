//! Writing: objects (a byte stream) and datasets (a directory tree) onto the network.
//!
//! An object is encoded by the chunker pipeline on its own threads; each stripe's shards are
//! placed on distinct nodes by rendezvous hashing and uploaded in parallel with a bound on the
//! bytes in flight, retrying a failed shard on the next-ranked node, and starting the
//! next-ranked node beside one that has gone silent (killed or frozen nodes are noticed in
//! seconds, not after the transport's timeouts). The signed manifest is
//! stored last, on several nodes: an interrupted upload never leaves a readable half-object.
//!
//! With no network (`None`), the same code computes the CIDs without storing anything
//! (`cairn cid --object`), so the dry run and the real upload always agree.
//!
//! The code, by concern: `options` (how to write), `object` (an object: the encoder's stripes
//! placed and their shards uploaded, bounded by bytes in flight), `store` (one shard or
//! manifest stored on ranked nodes, retried and hedged as `cairn_policy::store::StoreRun`
//! decides; the signed manifest published), `pack` (small files read and packed as the walk
//! goes) and `dataset` (a directory tree: the walk, the uploads of files and packs, the dataset
//! manifest).

use std::sync::{Arc, Mutex};

mod dataset;
mod object;
mod options;
mod pack;
mod store;

pub use dataset::{DatasetReport, put_dir, walk};
pub use object::{Input, ObjectReport, check_room, put_object};
pub use options::PutOptions;
pub use store::{publish_manifest, publish_manifest_with_receipts};

/// Files below this size are packed together into pack objects.
pub const PACK_THRESHOLD: u64 = 256 * 1024;
/// A pack object is closed once it reaches this size (the default of
/// [`PutOptions::pack_target`]).
pub const PACK_TARGET: usize = 64 << 20;
/// A shard store still waiting on a node from which nothing at all has been heard for this long
/// ([`data::Client::silent_for`](cairn_wire::data::Client::silent_for); live nodes answer
/// keep-alives every [`data::KEEP_ALIVE`](cairn_wire::data::KEEP_ALIVE)) gets the next-ranked
/// node started beside it, and the silent node is passed over by later stripes.
pub use cairn_policy::store::SILENT_FOR as STORE_SILENT_FOR;
/// Files and packs [`put_dir`] uploads at once (each object upload also keeps its own
/// stripes in flight).
pub const UPLOADS_IN_FLIGHT: usize = 4;
/// Packs (held whole in memory, up to [`PACK_TARGET`] bytes each) that [`put_dir`] holds at
/// once: being filled, waiting or being uploaded.
pub const PACKS_IN_FLIGHT: usize = 2;

/// Reports progress: called with the number of object bytes just completed.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
