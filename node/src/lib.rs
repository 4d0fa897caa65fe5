//! # cairn-node: the storage provider's daemon
//!
//! A node keeps shards in RocksDB, proves nothing yet (storage proofs come with `cairn-proofs`),
//! finds its peers with Kademlia over libp2p-QUIC, and moves verified shards over a QUIC data
//! plane keyed to its libp2p identity.
//!
//! ```text
//!                        ┌──────────────────────── cairn-node ─────────────────────────┐
//!  peers ◄── libp2p ───► │ swarm actor (kad, identify, control req/resp) ──┐           │
//!          QUIC :4001    │                                                 ▼           │
//!  peers ◄── quinn ────► │ data plane (store / fetch / manifests) ──► Store (RocksDB)  │
//!          QUIC :4002    │ admin HTTP (/health /metrics /status) ───► (blob files,     │
//!  operator ◄── :9101 ─► │ scrub (re-verifies every byte at a set rate) ──►  BLAKE3)   │
//!                        └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! * [`store`]: the [`store::ShardStore`] trait and its RocksDB implementation (column
//!   families, atomic shard + outboard + accounting writes, BLAKE3 verification on every read,
//!   quarantine of corrupt shards, capacity limit, scrub), with an in-memory twin
//!   ([`store::MemStore`]) for tests and simulations.
//! * [`swarm`]: the libp2p actor (discovery, control plane).
//! * [`data`]: the data plane server and client (bulk bytes, verified streaming), over
//!   [`tls`] (libp2p-TLS certificates, AES-GCM preferred).
//! * [`protocol`]: wire messages and framing, with their size limits.
//! * [`config`], [`identity`], [`admin`], [`metrics`]: operations.
//! * [`malloc`]: allocator settings for shard-sized buffers, applied first in `main`.
//! * [`node`]: the composition root that starts and stops all of the above.
//!
//! The wire and disk formats are written down in `node/DESIGN.md`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod admin;
pub mod config;
pub mod data;
pub mod identity;
pub mod malloc;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod store;
pub mod swarm;
pub mod tls;

pub use node::{RunningNode, RuntimeInfo};

/// How many tasks a runtime worker runs between looks for new I/O while it has tasks queued
/// (tokio's default is 61). The daemons' work is many short tasks beside QUIC endpoints: a
/// packet that arrives while a worker runs its queue waits for the next look, and on a busy
/// machine that wait was most of a small read's latency. At 16, 1 MiB range GETs through the
/// gateway at 32 clients answered their first byte in a median ~10 ms instead of ~16 ms, with
/// the same throughput (docs/BENCHMARKS.md, "Runs O").
pub const EVENT_INTERVAL: u32 = 16;

/// The multi-threaded tokio runtime the daemons (node and gateway) run on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(EVENT_INTERVAL)
        .build()
}
