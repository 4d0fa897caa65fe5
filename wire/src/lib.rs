//! # cairn-wire: everything that crosses the network between Cairn programs
//!
//! Nodes, clients and the gateway speak to each other through this crate and nothing else, so a
//! program that talks to the network (the `cairn` CLI, the gateway, a simulator's real-socket
//! mode) does not link the node's RocksDB store.
//!
//! * [`protocol`]: control and data-plane messages, their size limits, and length-prefixed
//!   DAG-CBOR framing.
//! * [`tls`]: libp2p-TLS certificates for the data plane (a peer id is proved in the handshake).
//! * [`swarm`]: the libp2p actor (Kademlia discovery, identify, the control request/response
//!   protocol), used by nodes (`Role::Node`) and clients (`Role::Client`).
//! * [`data`]: the QUIC data-plane endpoint, its framing and limits, and the verified client
//!   that stores and fetches shards and manifests. The server half lives in `cairn-node`.
//! * [`keys`]: a node's key as a libp2p peer id and as the ed25519 key its proofs are signed
//!   with.
//! * [`admin`]: what a running node shows other programs (`/status`, `node.json`) and a small
//!   HTTP/1.1 client to read it.
//! * [`daemon`] (feature `daemon`): the runtime and admin-server plumbing the node and the
//!   gateway share.
//!
//! The formats are written down in `node/DESIGN.md`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod admin;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod data;
pub mod keys;
pub mod protocol;
pub mod swarm;
pub mod tls;
