//! The client's errors: each says what failed and, where there is one, the fix.

use std::path::PathBuf;

use cairn_chunker::Cid;
use cairn_chunker::manifest::ManifestError;
use cairn_chunker::pipeline::{DecodeError, EncodeError};

/// One shard of a stripe that could not be had.
#[derive(Debug, Clone)]
pub struct Missing {
    /// Stripe index.
    pub stripe: usize,
    /// Shard index within the stripe.
    pub shard: usize,
    /// The shard's CID.
    pub cid: Cid,
    /// What happened at each node that should have had it (empty: no node holds it).
    pub problems: Vec<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stripe {} shard {} ({})",
            self.stripe, self.shard, self.cid
        )?;
        if self.problems.is_empty() {
            write!(f, ": no live node holds it")
        } else {
            write!(f, ": {}", self.problems.join("; "))
        }
    }
}

/// Errors from the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No peer given.
    #[error("no network given: pass --peer MULTIADDR or --devnet DIR (or set CAIRN_DEVNET)")]
    NoPeers,
    /// None of the peers answered.
    #[error("could not reach any node ({}); check the addresses and that the nodes run", problems.join("; "))]
    Unreachable {
        /// What happened with each.
        problems: Vec<String>,
    },
    /// Too few nodes for the requested code.
    #[error(
        "{have} live nodes, but a {k}+{m} stripe needs {need} distinct ones: lower --k/--m or add nodes"
    )]
    NotEnoughNodes {
        /// Live nodes.
        have: usize,
        /// Needed.
        need: usize,
        /// Data shards.
        k: u16,
        /// Parity shards.
        m: u16,
    },
    /// Too few nodes have room for a stripe's shards (as they said when last asked).
    #[error(
        "the network is full: only {room} of {nodes} nodes have room for a {shard_len}-byte \
         shard, and a stripe needs {need} (a node that just failed to answer or refused a \
         shard for lack of space counts as having none for a while); `cairn nodes` shows each \
         node's space (free disk space on the nodes, raise their storage.capacity, or add nodes)"
    )]
    NetworkFull {
        /// Nodes with room for a shard.
        room: usize,
        /// Nodes known.
        nodes: usize,
        /// Shards in the stripe.
        need: usize,
        /// The stripe's largest shard.
        shard_len: usize,
    },
    /// A shard could not be stored anywhere.
    #[error("could not store shard {cid} on any node: {}", attempts.join("; "))]
    Upload {
        /// The shard.
        cid: Box<Cid>,
        /// Each node tried and its error.
        attempts: Vec<String>,
    },
    /// The manifest could not be stored on any node.
    #[error("could not store manifest {cid} on any node: {}", attempts.join("; "))]
    ManifestUpload {
        /// The manifest.
        cid: Box<Cid>,
        /// Each node tried and its error.
        attempts: Vec<String>,
    },
    /// No node served a manifest that matches its CID.
    #[error("manifest {cid} not available: {}", if problems.is_empty() { "no node has it".to_string() } else { problems.join("; ") })]
    ManifestUnavailable {
        /// The manifest.
        cid: Box<Cid>,
        /// What each node said.
        problems: Vec<String>,
    },
    /// The manifest carries no valid signature.
    #[error("manifest {cid} has no valid provenance signature{}: it may have been tampered with", if problems.is_empty() { String::new() } else { format!(" ({})", problems.join("; ")) })]
    Unsigned {
        /// The manifest.
        cid: Box<Cid>,
        /// Why envelopes were rejected.
        problems: Vec<String>,
    },
    /// A stripe lost more shards than its parity covers.
    #[error("stripe {stripe} cannot be read: {have} of the {need} shards needed are available; missing: {}", missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    StripeLost {
        /// Stripe index.
        stripe: usize,
        /// Good shards found.
        have: usize,
        /// Shards needed (`k`).
        need: usize,
        /// The shards that could not be had.
        missing: Vec<Missing>,
    },
    /// The uploader key is missing or unreadable.
    #[error("uploader key {path}: {reason}")]
    Key {
        /// Key file.
        path: PathBuf,
        /// What is wrong and the fix.
        reason: String,
    },
    /// The output exists.
    #[error("{0} exists: pass --force to overwrite it")]
    Exists(PathBuf),
    /// A bad path in a dataset or on disk.
    #[error("{0}")]
    Path(String),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The network layer failed.
    #[error(transparent)]
    Swarm(Box<cairn_wire::swarm::SwarmError>),
    /// The data plane failed.
    #[error(transparent)]
    Data(Box<cairn_wire::data::DataError>),
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl From<cairn_wire::swarm::SwarmError> for ClientError {
    fn from(e: cairn_wire::swarm::SwarmError) -> Self {
        ClientError::Swarm(Box::new(e))
    }
}

impl From<cairn_wire::data::DataError> for ClientError {
    fn from(e: cairn_wire::data::DataError) -> Self {
        ClientError::Data(Box::new(e))
    }
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Io { what, source }
}
