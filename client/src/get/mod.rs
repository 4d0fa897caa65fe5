//! Reading: manifests (checked against their CID and signature), objects and byte ranges
//! (every byte verified, parity used when a node is gone, slow nodes hedged), datasets.
//!
//! The code, by concern: `manifest` (fetching a manifest from the best-ranked nodes, hedged,
//! and checking it), `shards` (asking a shard's holders for it, whole or streamed, and where
//! shards are), `rebuild` (a stripe rebuilt from parity, shared by the pieces that need it),
//! `pieces` (one piece of a stripe: from the cache, a holder, or a rebuild racing a slow
//! holder), `object` (objects and ranges in order, fetched ahead as far as the output allows;
//! read-ahead into the cache), `sink` (where read bytes go), `dataset` (a dataset's inline
//! files, packs and object files written under a directory) and `incidents` (what went wrong,
//! and on which node).

mod dataset;
mod incidents;
mod manifest;
mod object;
mod pieces;
mod rebuild;
mod shards;
mod sink;

pub use dataset::{FILES_IN_FLIGHT, MAX_PACK, PACKS_IN_FLIGHT, read_dataset};
pub use incidents::{Incidents, per_node};
pub use manifest::{Fetched, Manifest, fetch_manifest, object_manifest};
pub use object::{prefetch, read_object, read_object_to, read_object_to_vec};
pub use sink::{Sink, WriteSink};

/// Stripes fetched at once while reading (each holds up to `k` shards in memory).
pub const STRIPES_IN_FLIGHT: usize = 4;
/// Most bytes of stripes a read fetches ahead of its output: stripes of more than a quarter of
/// this (large shards, large `k`) are read fewer at a time, down to one.
pub const READ_AHEAD_BYTES: u64 = 256 << 20;
/// A shard that has not arrived after this long gets a parity fallback started beside it.
pub use cairn_policy::hedge::HEDGE_AFTER;
