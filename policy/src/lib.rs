//! # cairn-policy: the network's decisions, without sockets, disks or a clock
//!
//! Every rule here is a plain function or state machine: events and the current time in,
//! decisions out. The node, the client and the gateway drive them with tokio and real sockets;
//! tests (and the simulator) drive the very same code with a virtual clock.
//!
//! * [`time`]: [`time::Time`], a point on a monotonic clock the caller owns.
//! * [`placement`]: weighted rendezvous hashing of shards onto distinct nodes and labels.
//! * [`capacity`]: how much a node can still take (the one free-space rule).
//! * [`health`]: which nodes are left out for a while (silent, unreachable, full) and where
//!   shards were last found.
//! * [`store`]: an upload's store of one item on ranked targets: who next, when to hedge a
//!   silent node, when it is done.
//! * [`hedge`]: when a read asks another node beside a slow one.
//! * [`lease`]: how long shards and manifests are held under owners' leases, and when they
//!   may be collected.
//! * [`scrub`]: pacing the node's re-verification of everything it holds.
//! * [`readahead`]: which bytes to fetch ahead of sequential range readers.
//! * [`keeper`]: an object's ranking of nodes, its keepers, and the one in charge.
//! * [`repair`]: stripe health, when and what to rebuild, in which order, how fast.
//! * [`rebalance`]: which shards move from the fullest nodes to the emptiest.
//!
//! No tokio, RocksDB, libp2p, quinn or threads: `cargo tree -p cairn-policy` shows it.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod capacity;
pub mod health;
pub mod hedge;
pub mod keeper;
pub mod lease;
pub mod placement;
pub mod readahead;
pub mod rebalance;
pub mod repair;
pub mod scrub;
pub mod store;
pub mod tag;
pub mod time;
