//! The prover: this node's commitment for each epoch, and its answers to challenges.
//!
//! A commitment covers every intact shard held under a lease that started before the epoch and
//! runs through it (`Store::committable`); quarantined shards under such leases are declared
//! lost in it, and shards declared in the previous commitment and held intact again are listed
//! as recovered. The commitment and its entries are written to `proofs/epoch-N` before the
//! first auditor sees them, so a node restarted mid-epoch answers with the same commitment (a
//! second, different one would be equivocation). The last `keep_epochs` are kept: a question
//! asked again under containment is about an older epoch.
//!
//! Answering reads only the 16 KiB groups challenged (and the shards' outboards), builds each
//! chunk's proof and checks it before signing: a group that does not match its shard is never
//! sent; the shard is quarantined, the answer says which shards were lost, and the next
//! commitment declares them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cairn_chunker::cids::{self, Codec};
use cairn_proofs::Hash32;
use cairn_proofs::challenge::Challenge;
use cairn_proofs::chunk;
use cairn_proofs::commitment::{Commitment, MAX_DECLARED};
use cairn_proofs::proof::{EpochProof, Params, ProveError};
use cairn_proofs::tree::{CommitTree, Entry};
use cairn_wire::protocol::{ControlResponse, ErrorCode, RemoteError};

use super::Proofs;
use crate::store::StoreError;

/// Commitments kept in memory, by epoch.
#[derive(Debug, Default)]
pub(crate) struct Prover {
    kept: BTreeMap<u64, Arc<Committed>>,
}

/// A signed commitment and the tree it was made from.
#[derive(Debug)]
pub struct Committed {
    /// The commitment auditors fetch.
    pub commitment: Commitment,
    /// The tree over its entries (to prove from).
    pub tree: CommitTree,
}

/// Why the prover cannot give a commitment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProverError {
    /// The epoch has not begun.
    #[error("epoch {epoch} has not begun (it is epoch {now} here: are the clocks set?)")]
    NotYet {
        /// Asked for.
        epoch: u64,
        /// Now.
        now: u64,
    },
    /// The epoch is over and its commitment is no longer kept (or was never made).
    #[error("no commitment kept for epoch {epoch}")]
    NotKept {
        /// Asked for.
        epoch: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The commitment could not be built (a bug or a damaged file).
    #[error("building the commitment: {0}")]
    Build(String),
}

impl ProverError {
    /// The code a peer sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProverError::NotYet { .. } => ErrorCode::BadRequest,
            ProverError::NotKept { .. } => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        }
    }
}

fn file(dir: &std::path::Path, epoch: u64) -> PathBuf {
    dir.join(format!("epoch-{epoch}"))
}

/// `u32 LE length ‖ commitment ‖ (root ‖ size u64 LE)*`.
fn encode(c: &Committed) -> Vec<u8> {
    let commitment = c.commitment.to_bytes();
    let mut out = Vec::with_capacity(4 + commitment.len() + c.tree.entries().len() * 40);
    out.extend_from_slice(&(commitment.len() as u32).to_le_bytes());
    out.extend_from_slice(&commitment);
    for e in c.tree.entries() {
        out.extend_from_slice(&e.root);
        out.extend_from_slice(&e.size.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Result<Committed, String> {
    let len = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or("truncated")? as usize;
    let body = bytes.get(4..4 + len).ok_or("truncated commitment")?;
    let commitment = Commitment::from_bytes(body).map_err(|e| e.to_string())?;
    let rest = &bytes[4 + len..];
    if !rest.len().is_multiple_of(40) {
        return Err("entries are not 40-byte records".into());
    }
    let entries = rest
        .chunks_exact(40)
        .map(|r| {
            let mut root = [0u8; 32];
            root.copy_from_slice(&r[..32]);
            let mut size = [0u8; 8];
            size.copy_from_slice(&r[32..]);
            Entry {
                root,
                size: u64::from_le_bytes(size),
            }
        })
        .collect();
    let tree = CommitTree::build(entries).map_err(|e| e.to_string())?;
    if tree.root() != commitment.root || tree.total_bytes() != commitment.bytes {
        return Err("the entries do not make the committed tree".into());
    }
    Ok(Committed { commitment, tree })
}

/// Writes `bytes` to `path` through a temporary file, synced, renamed, and the directory
/// synced: a commitment an auditor may have seen must survive a crash (a node that committed
/// to another set after a restart would be equivocating).
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How a challenged chunk could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    /// The bytes do not match the shard, or the store holds the copy quarantined.
    Bad,
    /// The shard is gone.
    Gone,
    /// The store failed (the shard may be fine): answer with an error, be asked again.
    Io,
}

impl Proofs {
    /// This node's commitment for `epoch`: made on first request in the epoch, kept after.
    pub async fn commitment(self: &Arc<Self>, epoch: u64) -> Result<Arc<Committed>, ProverError> {
        let now = self.epoch();
        if epoch > now {
            return Err(ProverError::NotYet { epoch, now });
        }
        let mut prover = self.prover.lock().await;
        if let Some(c) = prover.kept.get(&epoch) {
            return Ok(c.clone());
        }
        let previous = prover
            .kept
            .range(..epoch)
            .next_back()
            .map(|(_, c)| c.commitment.declared.clone());
        let me = self.clone();
        let made = tokio::task::spawn_blocking(move || {
            // After a restart the previous commitment is on disk only.
            let previous = previous.unwrap_or_else(|| me.declared_before(epoch));
            let made = me.load_or_make(epoch, now, &previous);
            me.prune(now);
            made
        })
        .await
        .map_err(|e| ProverError::Build(e.to_string()))??;
        prover.kept.insert(epoch, made.clone());
        let keep = self.config.keep_epochs;
        prover.kept.retain(|e, _| e.saturating_add(keep) > now);
        Ok(made)
    }

    /// What the newest kept commitment before `epoch` declared lost (read from its file).
    fn declared_before(&self, epoch: u64) -> Vec<Hash32> {
        (1..=self.config.keep_epochs)
            .filter_map(|back| epoch.checked_sub(back))
            .find_map(|e| std::fs::read(file(&self.dir, e)).ok())
            .and_then(|bytes| decode(&bytes).ok())
            .map(|c| c.commitment.declared)
            .unwrap_or_default()
    }

    /// Removes commitment files of epochs no longer kept (also ones left by earlier runs).
    fn prune(&self, now: u64) {
        let keep = self.config.keep_epochs;
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let epoch = name
                .to_str()
                .and_then(|n| n.strip_prefix("epoch-"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(e) = epoch
                && e.saturating_add(keep) <= now
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn load_or_make(
        &self,
        epoch: u64,
        now: u64,
        previous: &[Hash32],
    ) -> Result<Arc<Committed>, ProverError> {
        let path = file(&self.dir, epoch);
        match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(c) if c.commitment.node == self.me && c.commitment.epoch == epoch => {
                    return Ok(Arc::new(c));
                }
                Ok(_) => {
                    tracing::error!(path = %path.display(), "kept commitment is not this node's")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "kept commitment unreadable: {e}")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ProverError::Io {
                    what: format!("reading {}", path.display()),
                    source,
                });
            }
        }
        if epoch < now {
            return Err(ProverError::NotKept { epoch });
        }
        let started = Instant::now();
        let held = self.store.committable(epoch)?;
        let entries = held
            .entries
            .iter()
            .map(|&(root, size)| Entry { root, size })
            .collect();
        let tree = CommitTree::build(entries).map_err(|e| ProverError::Build(e.to_string()))?;
        let mut declared: Vec<Hash32> = held.quarantined.iter().map(|r| Hash32(*r)).collect();
        declared.sort_unstable();
        if declared.len() > MAX_DECLARED {
            tracing::error!(
                lost = declared.len(),
                "more lost shards than one commitment declares; the rest will be caught"
            );
            declared.truncate(MAX_DECLARED);
        }
        let recovered: Vec<Hash32> = previous
            .iter()
            .filter(|r| tree.find(&r.0).is_some())
            .take(MAX_DECLARED)
            .copied()
            .collect();
        let commitment = Commitment::sign(&self.key, epoch, &tree, declared, recovered)
            .map_err(|e| ProverError::Build(e.to_string()))?;
        let made = Committed { commitment, tree };
        write_durably(&path, &encode(&made)).map_err(|source| ProverError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        let c = &made.commitment;
        self.metrics.commitment_shards.set(c.count as i64);
        self.metrics
            .commitment_bytes
            .set(i64::try_from(c.bytes).unwrap_or(i64::MAX));
        self.metrics.declared_shards.set(c.declared.len() as i64);
        tracing::info!(
            target: "cairn::_events::committed",
            epoch,
            shards = c.count,
            bytes = c.bytes,
            declared = c.declared.len(),
            recovered = c.recovered.len(),
            ms = started.elapsed().as_millis() as u64,
            "committed to the shards held this epoch"
        );
        Ok(Arc::new(made))
    }

    /// Answers an encoded challenge.
    pub async fn prove(self: &Arc<Self>, challenge: &[u8]) -> ControlResponse {
        let failure = |code, message: String| ControlResponse::Error(RemoteError { code, message });
        let started = Instant::now();
        let challenge = match Challenge::from_bytes(challenge) {
            Ok(c) => c,
            Err(e) => return failure(ErrorCode::BadRequest, e.to_string()),
        };
        if challenge.prover != self.me {
            return failure(
                ErrorCode::BadRequest,
                format!(
                    "the challenge is for node {}",
                    super::peer_name(&challenge.prover)
                ),
            );
        }
        let committed = match self.commitment(challenge.epoch).await {
            Ok(c) => c,
            Err(e) => return failure(e.code(), e.to_string()),
        };
        let me = self.clone();
        let misses: Arc<Mutex<Vec<(Hash32, Miss)>>> = Arc::default();
        let seen = misses.clone();
        let answer = tokio::task::spawn_blocking(move || {
            EpochProof::prove(
                &me.key,
                &committed.commitment,
                &committed.tree,
                &challenge,
                Params::from(&me.config),
                |entry, index| {
                    let cid = cids::from_hash(Codec::Raw, &blake3::Hash::from_bytes(entry.root));
                    let read = me
                        .store
                        .read_group(&cid, index / (chunk::GROUP_BYTES / chunk::CHUNK_BYTES));
                    let miss = |m: Miss, why: String| {
                        if let Ok(mut v) = seen.lock() {
                            v.push((Hash32(entry.root), m));
                        }
                        why
                    };
                    let (size, group, outboard) = read.map_err(|e| match e {
                        StoreError::NotFound { .. } => miss(Miss::Gone, e.to_string()),
                        StoreError::Corrupt { .. } => miss(Miss::Bad, e.to_string()),
                        other => miss(Miss::Io, other.to_string()),
                    })?;
                    if size != entry.size {
                        return Err(miss(
                            Miss::Bad,
                            format!("{cid} is {size} bytes here, {} committed", entry.size),
                        ));
                    }
                    let proof = chunk::prove(size, index, &group, &outboard)
                        .map_err(|e| miss(Miss::Bad, e.to_string()))?;
                    if chunk::verify(&entry.root, size, index, &proof).is_err() {
                        return Err(miss(Miss::Bad, format!("{cid} does not match its hash")));
                    }
                    Ok(proof)
                },
            )
        })
        .await;
        let seconds = started.elapsed().as_secs_f64();
        match answer {
            Ok(Ok(proof)) => {
                self.metrics.proofs_answered.inc();
                self.metrics.prove_seconds.observe(seconds);
                ControlResponse::Proof(proof.to_bytes())
            }
            Ok(Err(ProveError::Lost { shards, reason })) => {
                let misses = misses.lock().map(|v| v.clone()).unwrap_or_default();
                if misses.iter().any(|(_, m)| *m == Miss::Io) {
                    self.metrics.proofs_refused.inc();
                    tracing::error!("could not read challenged shards: {reason}");
                    return failure(ErrorCode::Internal, format!("store read failed: {reason}"));
                }
                for (root, m) in &misses {
                    if *m == Miss::Bad {
                        let cid = cids::from_hash(Codec::Raw, &blake3::Hash::from_bytes(root.0));
                        let store = self.store.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || store.quarantine(&cid, 0)).await;
                    }
                }
                self.metrics.proofs_unprovable.inc();
                tracing::error!(
                    target: "cairn::_events::unprovable",
                    shards = shards.len(),
                    first = %shards.first().map(super::shard_cid).unwrap_or_default(),
                    "challenged shards could not be proven: they are lost or corrupt here ({reason}); \
                     they are quarantined and the next commitment declares them"
                );
                ControlResponse::Unprovable { shards, reason }
            }
            Ok(Err(e)) => {
                self.metrics.proofs_refused.inc();
                failure(ErrorCode::BadRequest, e.to_string())
            }
            Err(e) => failure(ErrorCode::Internal, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_commitments_round_trip_and_damage_is_caught() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let entries = vec![
            Entry {
                root: [1; 32],
                size: 10,
            },
            Entry {
                root: [2; 32],
                size: 20,
            },
        ];
        let tree = CommitTree::build(entries).unwrap();
        let commitment = Commitment::sign(&key, 9, &tree, vec![], vec![]).unwrap();
        let c = Committed { commitment, tree };
        let bytes = encode(&c);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.commitment, c.commitment);
        assert_eq!(back.tree.entries(), c.tree.entries());
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(decode(&bad).is_err());
        assert!(decode(&bytes[..n - 3]).is_err());
        assert!(decode(&bytes[..3]).is_err());
    }
}
