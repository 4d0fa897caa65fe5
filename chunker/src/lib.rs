//! # cairn-chunker: bytes to verifiable, erasure-coded, content-addressed pieces
//!
//! Everything Cairn stores goes through this crate first. It has no network and no disk: it
//! takes bytes (or a [`std::io::Read`]) and gives back shards, proofs and manifests, so the node,
//! the client, the gateway and the simulator all share one definition of the data.
//!
//! ## The data model
//!
//! ```text
//!  object bytes ──► stripes of k data shards ──RS──► + m parity shards
//!                     │                                    │
//!                     ▼                                    ▼
//!                shard = ≤ shard_size bytes, named by CIDv1(raw, BLAKE3-256)
//!                        + BLAKE3 outboard (for verified range reads and storage proofs)
//!
//!  ObjectManifest  (DAG-CBOR, CIDv1(dag-cbor, BLAKE3)):
//!      size, BLAKE3 of the whole object, code + k + m + shard size, chunking,
//!      every stripe's shard CIDs and lengths, content type, user metadata
//!  DatasetManifest: path -> object manifest CID | slice of a pack object | inline bytes
//!  Provenance:      ed25519 signature over (manifest CID, signer, time, source)
//! ```
//!
//! * **Shard** ([`cids`]): up to `shard_size` bytes (default 1 MiB). Its CID's digest is what
//!   `b3sum` prints for it and the root of its BLAKE3 tree.
//! * **Verified streaming** ([`verified`]): with the shard's outboard (~0.4 % of its size) a
//!   holder can prove any byte range against the CID alone; readers check every 16 KiB as it
//!   arrives.
//! * **Chunking** ([`chunking`]): fixed-size (fastest) or content-defined (FastCDC, so edited
//!   datasets keep most shard CIDs).
//! * **Stripe** ([`erasure`]): `k` data shards + `m` parity shards of systematic Reed-Solomon;
//!   any `k` rebuild the stripe, and healthy reads never decode. Two engines sit behind
//!   [`erasure::ErasureCoder`]; they compute different codes, so manifests name the code.
//! * **Manifests** ([`manifest`]): canonical DAG-CBOR, so equal manifests have equal CIDs;
//!   untrusted bytes decode to a value or an error, never a panic.
//! * **Pipeline** ([`pipeline`]): one call from a reader to shards and manifest, using every
//!   core with bounded memory; and the decode back, verified.
//! * **Pieces** ([`pieces`]): an object's BLAKE3 from pieces hashed apart at their offsets
//!   (multipart uploads), without reading the object again.
//!
//! ## Example
//!
//! ```
//! use cairn_chunker::pipeline::{decode_object, EncodeParams, Encoder};
//! use std::collections::HashMap;
//!
//! let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
//! let mut params = EncodeParams::with_shape(4, 2);
//! params.erasure.shard_size = 64 * 1024;
//!
//! // Encode: shards to store somewhere, and a manifest naming them.
//! let (manifest, stripes) = Encoder::encode_all(&data, params).unwrap();
//! let mut store = HashMap::new();
//! for stripe in &stripes {
//!     for shard in &stripe.shards {
//!         store.insert(shard.cid, shard.data.clone());
//!     }
//! }
//! println!("object {} in {} stripes", manifest.cid(), manifest.stripes.len());
//!
//! // Lose two shards of every stripe: the object still decodes, verified.
//! let mut out = Vec::new();
//! decode_object(
//!     &manifest,
//!     |_stripe, index, shard| if index < 2 { None } else { store.get(&shard.cid).cloned() },
//!     &mut out,
//! )
//! .unwrap();
//! assert_eq!(out, data);
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod chunking;
pub mod cids;
pub mod erasure;
pub mod manifest;
pub mod pieces;
pub mod pipeline;
pub mod verified;

pub use cids::Cid;
pub use erasure::ErasureCode;
pub use manifest::{DatasetManifest, ObjectManifest, Provenance};
pub use pipeline::{EncodeParams, Encoder};

/// Any error from this crate, for callers that do not care which step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`cids::CidError`].
    #[error(transparent)]
    Cid(#[from] cids::CidError),
    /// See [`verified::ProofError`].
    #[error(transparent)]
    Proof(#[from] verified::ProofError),
    /// See [`chunking::ChunkError`].
    #[error(transparent)]
    Chunk(#[from] chunking::ChunkError),
    /// See [`erasure::ErasureError`].
    #[error(transparent)]
    Erasure(#[from] erasure::ErasureError),
    /// See [`manifest::ManifestError`].
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// See [`pipeline::EncodeError`].
    #[error(transparent)]
    Encode(#[from] pipeline::EncodeError),
    /// See [`pipeline::DecodeError`].
    #[error(transparent)]
    Decode(#[from] pipeline::DecodeError),
}
