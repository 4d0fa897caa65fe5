//! The client's errors. Each says what happened, with what it happened to (the file, the node,
//! the CID, how many shards) as typed fields; what to do about it is the caller's to say (the
//! `cairn` CLI adds the flag or command that fixes it, the S3 gateway picks a status).
//!
//! The texts include their cause's text, as one line (the gateway sends them to S3 clients
//! whole); `source()` gives the cause itself, typed, to callers that decide on it.

use std::path::{Path, PathBuf};

use cairn_chunker::Cid;
use cairn_chunker::chunking::ChunkError;
use cairn_chunker::cids::CidError;
use cairn_chunker::manifest::ManifestError;
use cairn_chunker::pipeline::{DecodeError, EncodeError};

pub use crate::keys::KeyError;

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

/// Where a read's bytes were going when writing them failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file (for a read written to a temporary file first, the file it becomes).
    File(PathBuf),
    /// A directory created to hold a dataset's files.
    Dir(PathBuf),
    /// A writer or channel the caller handed over, by what it is ("a response body").
    Stream(&'static str),
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Stdout => f.write_str("writing standard output"),
            Output::File(p) => write!(f, "writing {}", p.display()),
            Output::Dir(p) => write!(f, "creating {}", p.display()),
            Output::Stream(what) => write!(f, "writing {what}"),
        }
    }
}

/// How a dataset's manifest and what it points at disagree.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EntryProblem {
    /// The entry's object has another size or BLAKE3 than the entry says.
    #[error("object {0} does not match the dataset entry")]
    ObjectMismatch(Box<Cid>),
    /// The entry's bytes lie beyond the end of its pack.
    #[error("outside its pack {0}")]
    OutsidePack(Box<Cid>),
    /// The entry's bytes do not hash to its BLAKE3.
    #[error("bytes do not match the dataset's BLAKE3")]
    HashMismatch,
    /// Writing it would go through a symbolic link already in the output directory.
    #[error(
        "{} is a symbolic link: cairn get never writes through one (remove it, or read into \
         another directory)",
        .0.display()
    )]
    ThroughSymlink(std::path::PathBuf),
    /// Something that is not a directory stands where the entry needs one.
    #[error("{} is in the way: the entry needs a directory there", .0.display())]
    NotADirectory(std::path::PathBuf),
    /// Another entry's path differs from it only in case, and the output directory's
    /// filesystem does not tell such names apart: one would overwrite the other.
    #[error(
        "it differs from {0:?} only in case, and the output directory ignores case: read into a \
         case-sensitive directory"
    )]
    CaseCollision(String),
}

/// Errors from the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No peer to join through was given.
    #[error("no peers given")]
    NoPeers,
    /// None of the peers answered.
    #[error("could not reach any node ({})", problems.join("; "))]
    Unreachable {
        /// What happened with each.
        problems: Vec<String>,
    },
    /// Too few nodes for the requested code.
    #[error("{have} live nodes, but a {k}+{m} stripe needs {need} distinct ones")]
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
         shard for lack of space counts as having none for a while)"
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
    /// The manifest could not be stored on as many nodes as it needs.
    #[error(
        "manifest {cid} was stored on {stored} of the {wanted} nodes it needs (with fewer, a node \
         lost could lose the object; bring nodes back, or write with fewer parity shards, m): {}",
        if attempts.is_empty() { "no other node to try".to_string() } else { attempts.join("; ") }
    )]
    ManifestUpload {
        /// The manifest.
        cid: Box<Cid>,
        /// Nodes that took it.
        stored: usize,
        /// Nodes it needs.
        wanted: usize,
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
    /// No node keeping the manifest took a lease statement for it.
    #[error("the lease on {cid} was not taken: {}", if problems.is_empty() { "no node holds its manifest".to_string() } else { problems.join("; ") })]
    LeaseNotTaken {
        /// The manifest.
        cid: Box<Cid>,
        /// What each node said.
        problems: Vec<String>,
    },
    /// The network does not say how long its epochs are.
    #[error("no node reports its epoch length (are proofs off on every node?)")]
    NoEpoch,
    /// No node holding the manifest answered with its storage receipts.
    #[error("storage receipts of {cid} not available: {}", if problems.is_empty() { "no node holds the manifest".to_string() } else { problems.join("; ") })]
    ReceiptsUnavailable {
        /// The manifest.
        cid: Box<Cid>,
        /// What each node said.
        problems: Vec<String>,
    },
    /// The manifest carries no valid signature.
    #[error("manifest {cid} has no valid provenance signature{}", if problems.is_empty() { String::new() } else { format!(" ({})", problems.join("; ")) })]
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
    /// A CID that names no manifest (raw bytes, say) where a manifest's was needed.
    #[error("{cid} is not a manifest CID: {source}")]
    NotAManifest {
        /// The CID.
        cid: Box<Cid>,
        /// What it is instead.
        source: CidError,
    },
    /// A dataset's CID where an object's was needed.
    #[error("{0} is a dataset, not an object")]
    NotAnObject(Box<Cid>),
    /// A dataset entry and what it points at disagree.
    #[error("{path}: {problem}")]
    Entry {
        /// The entry's path in the dataset.
        path: String,
        /// How.
        #[source]
        problem: EntryProblem,
    },
    /// A dataset's pack is larger than a reader holds in memory.
    #[error("pack {pack} is {size} bytes, more than the {max} this client holds in memory")]
    PackTooLarge {
        /// The pack.
        pack: Box<Cid>,
        /// Its size.
        size: u64,
        /// The most a reader holds.
        max: u64,
    },
    /// A read produced another number of bytes than the range it was asked for.
    #[error("read {written} bytes of a {expected}-byte range")]
    ShortRead {
        /// Bytes produced.
        written: u64,
        /// Bytes asked for.
        expected: u64,
    },
    /// A file being uploaded changed size while it was read.
    #[error("{} changed while it was being uploaded", .0.display())]
    InputChanged(PathBuf),
    /// A file in a directory being uploaded has a name that is not UTF-8 (dataset paths are).
    #[error("{}: the name is not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// A file found walking a directory is not under it.
    #[error("{} is outside {}", path.display(), root.display())]
    OutsideRoot {
        /// The file.
        path: PathBuf,
        /// The directory walked.
        root: PathBuf,
    },
    /// Reading the input of an upload failed: a local file, or the reader the caller gave
    /// (`path` is `None`: a request body, say).
    #[error("reading {}: {source}", path.as_deref().map_or_else(|| "the input".into(), |p| p.display().to_string()))]
    Read {
        /// The file, when there is one.
        path: Option<PathBuf>,
        /// The error.
        source: std::io::Error,
    },
    /// Writing what was read failed.
    #[error("{to}: {source}")]
    Write {
        /// Where it was going.
        to: Output,
        /// The error.
        source: std::io::Error,
    },
    /// A task of the client's own panicked or was cancelled.
    #[error("{what} failed: {source}")]
    Task {
        /// The task.
        what: &'static str,
        /// How.
        source: tokio::task::JoinError,
    },
    /// The uploader key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Encoding failed (reading the input is [`ClientError::Read`]).
    #[error(transparent)]
    Encode(EncodeError),
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
}

impl ClientError {
    /// Names the file a [`ClientError::Read`] of an unnamed reader came from; other errors
    /// are returned as they are.
    pub fn reading_from(self, file: &Path) -> Self {
        match self {
            ClientError::Read { path: None, source } => ClientError::Read {
                path: Some(file.to_path_buf()),
                source,
            },
            other => other,
        }
    }
}

impl From<EncodeError> for ClientError {
    /// The encoder's failures to read its input are [`ClientError::Read`]s: the input's
    /// fault, not the encoder's.
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::Io(source) | EncodeError::Chunk(ChunkError::Io(source)) => {
                ClientError::Read { path: None, source }
            }
            other => ClientError::Encode(other),
        }
    }
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

/// Wraps a failure to read `path`, an upload's input.
pub(crate) fn reading(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError {
    let path = path.to_path_buf();
    move |source| ClientError::Read {
        path: Some(path),
        source,
    }
}

/// Wraps a failure to write to `to`.
pub(crate) fn writing(to: Output) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Write { to, source }
}

/// Wraps a task that panicked or was cancelled.
pub(crate) fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> ClientError {
    move |source| ClientError::Task { what, source }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use super::*;

    /// The gateway answers `IncompleteBody` for a body that failed to arrive, by this variant:
    /// an encoder whose input failed, directly or through the chunker, is a `Read`.
    #[test]
    fn an_encoder_whose_input_failed_is_a_read_error() {
        let cut = || std::io::Error::new(ErrorKind::UnexpectedEof, "the body ended early");
        for e in [
            EncodeError::Io(cut()),
            EncodeError::Chunk(ChunkError::Io(cut())),
        ] {
            match ClientError::from(e) {
                ClientError::Read { path: None, source } => {
                    assert_eq!(source.kind(), ErrorKind::UnexpectedEof);
                }
                other => panic!("not a read error: {other:?}"),
            }
        }
        assert!(matches!(
            ClientError::from(EncodeError::Params("k".into())),
            ClientError::Encode(EncodeError::Params(_))
        ));
        let named = ClientError::from(EncodeError::Io(cut())).reading_from(Path::new("a.bin"));
        assert_eq!(named.to_string(), "reading a.bin: the body ended early");
    }
}
