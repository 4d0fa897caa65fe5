//! # cairn-gateway
//!
//! An S3-compatible front over the Cairn network, so training jobs and data tools (boto3, awscli,
//! s3fs, PyTorch's S3 readers) read and write Cairn unchanged.
//!
//! - [`s3`]: every S3 operation, mapped onto the catalog and the network; `s3s` does the HTTP
//!   routing, XML and SigV4. `s3/mod.rs` holds the gateway's state and dispatches each
//!   operation to the file of its concern: `buckets`, `headers` (keys, versions, metadata),
//!   `body` (storing request bodies, their limits), `checksum`, `conditions`, `read` (GET, HEAD,
//!   ranges), `write` (PUT, copy, delete), `listing` and `multipart`.
//! - [`catalog`]: the gateway's own RocksDB: bucket/key -> where the bytes are (an object
//!   manifest CID, a slice of a pack, or inline bytes), size, ETag, metadata, time. A file per
//!   concern: `records`, `keys` (the RocksDB layout), `buckets`, `objects`, `listing`, `uploads`.
//! - read-ahead: which bytes to fetch ahead of sequential range readers is a pure policy
//!   (`cairn_policy::readahead`); fetched shards land in the client's bounded shard cache,
//!   which every read consults.
//! - [`snapshot`]: import an uploaded dataset as keys, export the whole catalog as signed
//!   dataset manifests (one, or pieces under an index), restore from them.
//! - [`stall`]: time limits on clients that stop sending a body or stop reading a response.
//! - [`leases`]: the gateway's leases on what its catalog references: renewed periodically and
//!   after each write, released when S3 deletes or overwrites the last key referencing a CID.
//! - [`server`]: the daemon's start, network refresh, lease renewal and periodic catalog export.
//! - [`http`]: S3 over HTTP/1.1 and HTTP/2: the listener and each connection's limits
//!   ([`http::connections`]), and the repairs made to s3s's answers (`compat`).
//! - [`auth`]: what every request's signature must cover, checked before s3s verifies it.
//! - [`admin`]: the admin API (`/health`, `/metrics`, `/status`, `POST /import|/export|/restore`).
//!
//! Every byte a GET returns is verified against its CID on the way (the client library checks
//! each shard's BLAKE3); a response whose bytes cannot be delivered ends early rather than carrying
//! wrong bytes. `docs/SECURITY.md` has the threat model and the limits. Every GET and HEAD names the object's CID and signer in `x-amz-meta-cairn-cid`
//! and `x-amz-meta-cairn-signer`.

pub mod admin;
pub mod auth;
pub mod catalog;
mod compat;
pub mod config;
pub mod error;
pub mod host;
pub mod http;
pub mod leases;
pub mod metrics;
pub mod s3;
pub mod server;
pub mod snapshot;
pub mod stall;

pub use error::Error;
pub use s3::Gateway;
pub use server::RunningGateway;
