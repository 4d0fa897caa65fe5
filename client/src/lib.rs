//! # cairn-client: writing to and reading from a Cairn network
//!
//! The uploader's and scripter's way in, the engine behind the `cairn` CLI, and what the S3
//! gateway will reuse.
//!
//! * [`network`]: join through bootstrap peers, discover nodes, locate shards.
//! * [`put`]: objects and datasets (small files packed), shards uploaded in parallel with
//!   bounded bytes in flight and retries on the next-ranked node, signed manifest last.
//! * [`get`]: manifests checked against CID and signature; objects, ranges and datasets read
//!   with every byte verified, parity used when nodes are gone, slow nodes hedged.
//! * [`receipts`]: the storage receipts a put collects (each node's signed promise to hold a
//!   shard), kept beside the manifest on its nodes, and read back with
//!   [`Network::receipts`](network::Network::receipts).
//! * [`output`]: verified bytes written to files and pipes from a writer thread, in batches.
//! * [`cache`]: a bounded, single-flight cache of verified shards for long-lived readers.
//! * [`verify`]: `stat` (where every shard is) and a full audit.
//! * [`audit`]: a data owner's storage-proof audit of the nodes holding its shards.
//! * [`keys`]: the uploader's ed25519 identity.
//! * [`devnet`]: a local network of `cairn-node` processes.
//!
//! The decisions (placement, node health, store retries and hedges) are in `cairn-policy`; the
//! messages and the data-plane client in `cairn-wire`. This crate drives them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_client::error::ClientError> {
//! use std::sync::Arc;
//! use cairn_client::{get, keys, network::Network, put};
//!
//! let net = Network::connect(&["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooW...".parse().unwrap()]).await?;
//! let key = keys::load(&keys::default_path())?;
//! let opts = put::PutOptions::for_network(net.nodes().len());
//! let report = put::put_object(Some(&net), &key, put::Input::Bytes(b"hello".to_vec().into()), &opts, Arc::new(|_| {})).await?;
//! let manifest = get::object_manifest(&net, &report.cid).await?;
//! let bytes = get::read_object_to_vec(&net, &manifest, &get::Incidents::default()).await?;
//! assert_eq!(bytes, b"hello");
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod audit;
pub mod cache;
pub mod devnet;
pub mod error;
pub mod get;
pub mod keys;
pub mod lease;
pub mod network;
pub mod output;
pub mod put;
pub mod receipts;
pub mod verify;
