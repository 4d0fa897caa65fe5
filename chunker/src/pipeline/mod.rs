//! The encode pipeline (reader -> shards + manifest) and the matching decode.
//!
//! ```text
//!             ┌──────────────┐  stripes   ┌──────────┐  encoded   ┌────────────────────┐
//!  Read ────► │ reader thread│ ─────────► │ worker × │ ─────────► │ Encoder (iterator) │ ─► caller
//!             │ chunk, b3sum │  bounded   │ RS + CIDs│  bounded   │ reorders, manifest │
//!             └──────────────┘            └──────────┘            └────────────────────┘
//! ```
//!
//! The reader thread cuts the input into stripes (fixed or content-defined) and hashes the whole
//! object; each worker owns an erasure coder, computes a stripe's parity and every shard's
//! BLAKE3 root and outboard. Queues between them are bounded, and the reader takes a credit for
//! each stripe that comes back only when the iterator hands that stripe out in order, so a
//! preempted worker cannot let the others fill the reorder buffer without end: memory is bounded
//! by `3 * threads + 5` stripes, never by the object's size. Hashing and coding of different
//! stripes overlap on all cores.

use std::io;
use std::thread;

use bytes::Bytes;

use crate::chunking::{ChunkError, Chunking};
use crate::cids::Cid;
use crate::erasure::{ErasureCode, ErasureError};
use crate::manifest::{self, ErasureParams, ManifestError, Stripe};

mod decode;
mod encode;
mod hashing;
mod pool;
mod reader;
mod worker;

pub use decode::{DecodeError, DecodedStripe, StripeDecoder, decode_object};
pub use encode::Encoder;
pub use worker::encode_stripe_shards;

/// Parameters of an encode.
#[derive(Debug, Clone)]
pub struct EncodeParams {
    /// Code, `k`, `m` and shard size.
    pub erasure: ErasureParams,
    /// How to cut data shards.
    pub chunking: Chunking,
    /// Objects of at most this many bytes are stored inline in their manifest (at most
    /// [`manifest::MAX_INLINE`]).
    pub inline_limit: u64,
    /// Worker threads for coding and hashing (default: available cores).
    pub threads: usize,
}

impl Default for EncodeParams {
    /// 10+4 with 1 MiB shards, fixed chunking, inline up to 4 KiB, all cores.
    fn default() -> Self {
        Self {
            erasure: ErasureParams {
                code: ErasureCode::DEFAULT,
                k: 10,
                m: 4,
                shard_size: 1 << 20,
            },
            chunking: Chunking::Fixed,
            inline_limit: 4096,
            threads: thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl EncodeParams {
    /// Default parameters with `k` data and `m` parity shards.
    pub fn with_shape(k: u16, m: u16) -> Self {
        let mut p = Self::default();
        p.erasure.k = k;
        p.erasure.m = m;
        p
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), EncodeError> {
        self.erasure.validate()?;
        self.chunking.validate(self.erasure.shard_size)?;
        if self.inline_limit > manifest::MAX_INLINE {
            return Err(EncodeError::Params(format!(
                "inline limit {} is above the maximum {}",
                self.inline_limit,
                manifest::MAX_INLINE
            )));
        }
        Ok(())
    }
}

/// Why an encode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(#[from] io::Error),
    /// Bad chunking parameters.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Bad erasure parameters or an engine failure.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// Parameters a manifest cannot hold.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Other bad parameters.
    #[error("bad encode parameters: {0}")]
    Params(String),
    /// A pipeline thread died.
    #[error("encode pipeline thread failed: {0}")]
    Pipeline(&'static str),
}

/// One stored shard produced by the encoder.
#[derive(Debug, Clone)]
pub struct EncodedShard {
    /// Index in the stripe: `0..k` data, `k..k+m` parity.
    pub index: usize,
    /// CID of `data`.
    pub cid: Cid,
    /// The shard's bytes.
    pub data: Bytes,
    /// Its pre-order BLAKE3 outboard ([`verified`](crate::verified)).
    pub outboard: Bytes,
}

/// One encoded stripe: what the manifest will say of it, and the shards to store.
#[derive(Debug, Clone)]
pub struct EncodedStripe {
    /// Stripe index within the object.
    pub index: u64,
    /// Object offset of the stripe's first byte.
    pub offset: u64,
    /// The manifest entry.
    pub stripe: Stripe,
    /// Every shard with bytes (zero-length data shards are implicit and not listed).
    pub shards: Vec<EncodedShard>,
}
