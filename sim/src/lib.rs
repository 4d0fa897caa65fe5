//! # cairn-sim: a Cairn network's life, with Cairn's own policy, in seconds
//!
//! A discrete-event simulation of storage nodes, the objects stored on them and everything
//! that goes wrong, over a virtual clock. Every decision is made by the code the node and the
//! client run (`cairn-policy`): placement, when a silent node's copies count as lost, how
//! healthy a stripe is, what is rebuilt, in which order and how fast. The simulator models
//! shards (a CID, a size, the nodes holding a copy) instead of storing them, and builds
//! without RocksDB, libp2p, quinn or tokio.
//!
//! One seed makes every random choice ([`rng::Rng`]); the same seed and scenario give the same
//! report byte for byte.
//!
//! * [`scenario`]: the TOML a run is described in.
//! * [`world`]: the nodes, shards and events.
//! * [`repair`]: keepers in charge, their queues and rates, and rebuilds.
//! * [`proofs`]: audits judged by the proofs crate's auditor and folded into its ledger.
//! * [`epoch`]: the adversaries, what each answers, and what every judged node earns.
//! * [`report`]: what a run found.
//! * [`plot`]: its charts, as SVG.
//!
//! What it does not simulate yet is listed in `docs/SIMULATION.md`, with what each run
//! measures.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod epoch;
pub mod plot;
pub mod proofs;
pub mod repair;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod world;

pub use report::Report;
pub use scenario::Scenario;

/// Runs `scenario` from `seed` to its end.
pub fn run(scenario: Scenario, seed: u64, progress: impl FnMut(f64)) -> Report {
    world::World::new(scenario, seed).run(progress)
}
