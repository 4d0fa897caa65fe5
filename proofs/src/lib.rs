//! Proof of storage over time, as pure logic: events and the current time in, actions out.
//!
//! A node that accepts a shard signs a [`receipt::StorageReceipt`] for it: it promises to hold
//! those bytes from one epoch to another. At the start of every epoch it signs a
//! [`commitment::Commitment`] to the set of shards it holds under live leases (a Merkle sum tree,
//! [`tree::CommitTree`], over the sorted `(shard root, size)` entries). An auditor that has
//! fetched the commitment sends a [`challenge::Challenge`] (a fresh nonce); from (nonce, epoch,
//! node, commitment) both sides derive `c` byte positions sampled uniformly over all committed
//! bytes, and the node answers with an [`proof::EpochProof`]: each challenged 1 KiB BLAKE3 chunk,
//! its path to the shard's root ([`chunk`]), and the shard's place in the commitment, signed.
//! The auditor's verdict becomes a signed [`ledger::AuditReceipt`], and receipts fold into a
//! per-node [`ledger::Ledger`] record whose consequences (shards to repair, nodes not to place
//! on) are outputs of the state machine. [`audit::Auditor`] keeps the auditor's side:
//! deadlines, containment (a node that times out is asked the same question again), targeted
//! challenges over shards the auditor holds receipts for.
//!
//! Nothing here reads a clock, a disk or the network, or draws randomness the caller did not
//! pass in: the node drives it with tokio and RocksDB, the simulator with a virtual clock.
//!
//! ```
//! use cairn_proofs::{chunk, tree::{CommitTree, Entry}};
//!
//! // A 40 KiB shard, its outboard (as every node keeps it) and a proof for its chunk 21.
//! let shard: Vec<u8> = (0..40_960u32).map(|i| (i * 7 % 251) as u8).collect();
//! let (root, outboard) = cairn_chunker::verified::outboard(&shard);
//! let group = &shard[16_384..32_768];
//! let proof = chunk::prove(shard.len() as u64, 21, group, &outboard).unwrap();
//! chunk::verify(root.as_bytes(), shard.len() as u64, 21, &proof).unwrap();
//!
//! // A commitment to two shards, and where its byte 50 000 lies.
//! let mut entries = vec![
//!     Entry { root: *root.as_bytes(), size: 40_960 },
//!     Entry { root: [3; 32], size: 20_000 },
//! ];
//! entries.sort_by_key(|e| e.root);
//! let tree = CommitTree::build(entries).unwrap();
//! assert_eq!(tree.total_bytes(), 60_960);
//! ```

pub mod audit;
pub mod challenge;
pub mod chunk;
mod codec;
pub mod commitment;
pub mod epoch;
pub mod lease;
pub mod ledger;
pub mod proof;
pub mod receipt;
pub mod tree;

pub use codec::{CodecError, Hash32, NodeKey, Sig64};
