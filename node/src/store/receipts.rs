//! Storage receipts kept beside manifests: who promised to hold which of a manifest's shards,
//! until when. Kept twice, by manifest (for readers of the manifest) and by signing node (for
//! an auditor naming that node's shards in a challenge).

use std::collections::{BTreeMap, HashMap};

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::ObjectManifest;
use cairn_proofs::receipt::StorageReceipt;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::layout::{CF_MANIFESTS, CF_RECEIPTS, CF_RECEIPTS_BY_NODE};
use super::{Store, StoreError};

pub use cairn_wire::protocol::MAX_RECEIPTS_PER_SHARD;

/// Where a page of a manifest's receipts continues: after the receipt for this
/// `(shard root, node key)`.
pub type ReceiptCursor = ([u8; 32], [u8; 32]);

/// The `receipts` key of a receipt: `manifest CID ‖ shard root ‖ node key`.
pub(super) fn receipt_key(manifest: &[u8], shard: &[u8; 32], node: &[u8; 32]) -> Vec<u8> {
    [manifest, shard, node].concat()
}

/// The `receipts-by-node` key of a receipt: `node key ‖ manifest CID ‖ shard root`.
pub(super) fn by_node_key(manifest: &[u8], shard: &[u8; 32], node: &[u8; 32]) -> Vec<u8> {
    [&node[..], manifest, shard].concat()
}

/// Receipts to write: `receipts` key -> (`receipts-by-node` key, encoded receipt).
pub(super) type Writes = BTreeMap<Vec<u8>, (Vec<u8>, Vec<u8>)>;

/// Checks receipts offered for the manifest `cid` (whose verified bytes are `manifest`): each
/// must decode and verify, and name one of the manifest's shards at its size. Any that does not
/// refuses them all, naming it.
pub(super) fn check_receipts(
    cid: &Cid,
    manifest: &[u8],
    receipts: &[Vec<u8>],
) -> Result<Vec<StorageReceipt>, StoreError> {
    let refuse = |reason: String| StoreError::BadReceipts {
        manifest: *cid,
        reason,
    };
    let object = ObjectManifest::from_bytes(manifest).map_err(|_| {
        refuse("it is not an object manifest, so it lists no shards to hold receipts for".into())
    })?;
    let mut shards: HashMap<[u8; 32], u64> = HashMap::new();
    for (_, _, shard) in object.stored_shards() {
        let root = cids::digest(&shard.cid, Codec::Raw)?;
        shards.insert(*root.as_bytes(), u64::from(shard.len));
    }
    let mut out = Vec::with_capacity(receipts.len());
    for (i, bytes) in receipts.iter().enumerate() {
        let r =
            StorageReceipt::from_bytes(bytes).map_err(|e| refuse(format!("receipt {i}: {e}")))?;
        match shards.get(&r.shard.0) {
            None => {
                return Err(refuse(format!(
                    "receipt {i} (node {}) names shard {}, which the manifest does not list",
                    r.node, r.shard
                )));
            }
            Some(&len) if len != r.size => {
                return Err(refuse(format!(
                    "receipt {i} (node {}) gives shard {} {} bytes; the manifest says {len}",
                    r.node, r.shard, r.size
                )));
            }
            Some(_) => out.push(r),
        }
    }
    Ok(out)
}

/// The receipts kept for one shard, as [`plan_writes`] weighs new ones against them.
#[derive(Default)]
struct Kept {
    /// Node -> the end of the lease its kept (or about to be written) receipt names.
    ends: HashMap<[u8; 32], u64>,
    /// Kept rows that no longer decode: they keep their places, and are never replaced.
    damaged: usize,
}

/// What to write for checked receipts of the manifest keyed `manifest`, given what is kept:
/// `kept(prefix)` lists the receipts stored under `manifest ‖ shard`. One receipt is kept per
/// node per shard (a newer one with a later end replaces it), at most
/// [`MAX_RECEIPTS_PER_SHARD`] per shard (more are dropped); a receipt already kept is not
/// written again. `fresh` receipts (just answered by their node, for the lease it holds now)
/// replace a node's kept one whatever its end: after a release, the shorter lease.
pub(super) fn plan_writes(
    manifest: &[u8],
    checked: Vec<StorageReceipt>,
    fresh: bool,
    mut kept: impl FnMut(&[u8]) -> Result<Vec<Vec<u8>>, StoreError>,
) -> Result<Writes, StoreError> {
    let mut held: HashMap<[u8; 32], Kept> = HashMap::new();
    let mut writes = Writes::new();
    for r in checked {
        let (shard, node) = (r.shard.0, r.node.0);
        let shard_kept = match held.entry(shard) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut found = Kept::default();
                for bytes in kept(&[manifest, &shard[..]].concat())? {
                    match StorageReceipt::from_bytes(&bytes) {
                        Ok(k) => {
                            found.ends.insert(k.node.0, k.end);
                        }
                        Err(_) => found.damaged += 1,
                    }
                }
                e.insert(found)
            }
        };
        let (nodes, damaged) = (&mut shard_kept.ends, shard_kept.damaged);
        let take = match nodes.get(&node) {
            Some(&end) if fresh => r.end != end,
            Some(&end) => r.end > end,
            None => nodes.len() + damaged < MAX_RECEIPTS_PER_SHARD,
        };
        if take {
            nodes.insert(node, r.end);
            writes.insert(
                receipt_key(manifest, &shard, &node),
                (by_node_key(manifest, &shard, &node), r.to_bytes()),
            );
        }
    }
    Ok(writes)
}

impl Store {
    /// Keeps storage receipts beside a manifest this store holds ([`StoreError::NotFound`]
    /// otherwise). Every receipt must decode, verify, and name one of the manifest's shards at
    /// its size, or none is kept ([`StoreError::BadReceipts`] says which and why). One receipt
    /// is kept per node per shard (one with a later end replaces it), at most
    /// [`MAX_RECEIPTS_PER_SHARD`] per shard; more are dropped. Idempotent. Returns how many
    /// receipts were written (new or replacing an older one).
    pub fn put_receipts(&self, manifest: &Cid, receipts: &[Vec<u8>]) -> Result<usize, StoreError> {
        self.keep_receipts(manifest, receipts, false)
    }

    /// [`Store::put_receipts`] for receipts a keeper was just answered with by the nodes that
    /// signed them, for the leases they hold now: each replaces its node's kept receipt for the
    /// shard whatever its end, so after a release the keeper keeps the shorter lease (the
    /// longer one is void by the owner's release), not the stale longer one.
    pub fn put_fresh_receipts(
        &self,
        manifest: &Cid,
        receipts: &[Vec<u8>],
    ) -> Result<usize, StoreError> {
        self.keep_receipts(manifest, receipts, true)
    }

    fn keep_receipts(
        &self,
        manifest: &Cid,
        receipts: &[Vec<u8>],
        fresh: bool,
    ) -> Result<usize, StoreError> {
        let (bytes, _) = self.get_manifest(manifest)?;
        let checked = check_receipts(manifest, &bytes, receipts)?;
        let key = manifest.to_bytes();
        // Writers of one manifest's receipts take turns, so the per-shard limit holds.
        let _claim = self.claim(&key);
        let writes = plan_writes(&key, checked, fresh, |prefix| self.kept(prefix))?;
        if writes.is_empty() {
            return Ok(0);
        }
        let (by_manifest, by_node) = (self.cf(CF_RECEIPTS)?, self.cf(CF_RECEIPTS_BY_NODE)?);
        let mut batch = WriteBatch::default();
        let mut len = 0u64;
        for (k, (node_key, r)) in &writes {
            len += 2 * (r.len() + k.len()) as u64;
            batch.put_cf(by_manifest, k, r);
            batch.put_cf(by_node, node_key, r);
        }
        self.with_disk_room(len, || {
            self.db
                .write_opt(batch, &self.write_opts())
                .map_err(|e| self.write_failed(e, len))
        })?;
        Ok(writes.len())
    }

    /// The receipts kept under `prefix` (`manifest ‖ shard`).
    fn kept(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_RECEIPTS)?,
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Every receipt kept for a manifest this store holds ([`StoreError::NotFound`] otherwise),
    /// by shard root and then node key.
    pub fn receipts_for(&self, manifest: &Cid) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.receipts_page(manifest, None, usize::MAX)?.0)
    }

    /// A page of [`Store::receipts_for`]: at most `limit` receipts after `after`, and whether
    /// more follow.
    pub fn receipts_page(
        &self,
        manifest: &Cid,
        after: Option<ReceiptCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let key = manifest.to_bytes();
        if self
            .db
            .get_pinned_cf(self.cf(CF_MANIFESTS)?, &key)?
            .is_none()
        {
            return Err(StoreError::NotFound { cid: *manifest });
        }
        let from = match &after {
            Some((shard, node)) => receipt_key(&key, shard, node),
            None => key.clone(),
        };
        let it = self.db.iterator_cf(
            self.cf(CF_RECEIPTS)?,
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&key) {
                break;
            }
            if after.is_some() && k[..] == from[..] {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(v.to_vec());
        }
        Ok((out, false))
    }

    /// Receipts signed by `node` (an ed25519 public key) across every manifest this store
    /// keeps receipts for, at most `limit`, by manifest CID and then shard root.
    pub fn receipts_of(&self, node: &[u8; 32], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let it = self.db.iterator_cf(
            self.cf(CF_RECEIPTS_BY_NODE)?,
            IteratorMode::From(node, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(node) || out.len() >= limit {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }
}
