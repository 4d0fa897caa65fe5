//! # cairn-node: the storage provider's daemon
//!
//! A node keeps shards in RocksDB, proves every epoch that it still holds them (and audits its
//! peers: [`proofs`], driving `cairn-proofs`), finds its peers with Kademlia over libp2p-QUIC, and moves verified shards over a QUIC data
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
//! * [`data`]: the data-plane server (bulk bytes, verified streaming), which answers every
//!   stored shard with a storage receipt signed by [`leases::Leaser`].
//! * [`proofs`]: commitments and proofs from the store, audits of peers, the proof ledger.
//! * [`repair`]: the keeper in charge of an object rebuilds its lost shards and keeps its
//!   manifest at `m + 1` copies (decisions in `cairn_policy::{keeper, repair}`).
//! * [`config`], [`identity`], [`admin`], [`metrics`]: operations.
//! * [`malloc`]: allocator settings for shard-sized buffers, applied first in `main`.
//! * [`node`]: the composition root that starts and stops all of the above.
//!
//! Everything that crosses the network (messages and framing, libp2p-TLS, the swarm actor,
//! the data-plane client) lives in `cairn-wire`, so the client and the gateway use it without
//! linking the store.
//!
//! The wire and disk formats are written down in `node/DESIGN.md`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod admin;
pub mod config;
pub mod data;
pub mod gc;
pub mod holds;
pub mod identity;
pub mod leases;
pub mod malloc;
pub mod metrics;
pub mod node;
pub mod proofs;
pub mod repair;
pub mod store;

pub use node::RunningNode;
