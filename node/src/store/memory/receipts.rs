//! [`MemStore`]: storage receipts beside manifests.

use std::ops::Bound;

use cairn_chunker::cids::Cid;

use crate::store::StoreError;
use crate::store::receipts::{ReceiptCursor, check_receipts, plan_writes, receipt_key};

use super::MemStore;

impl MemStore {
    /// Keeps storage receipts beside a held manifest (see
    /// [`Store::put_receipts`](crate::store::Store::put_receipts)).
    pub fn put_receipts(&self, manifest: &Cid, receipts: &[Vec<u8>]) -> Result<usize, StoreError> {
        let (bytes, _) = self.get_manifest(manifest)?;
        let checked = check_receipts(manifest, &bytes, receipts)?;
        let key = manifest.to_bytes();
        let mut state = self.state();
        let writes = plan_writes(&key, checked, false, |prefix| {
            Ok(state
                .receipts
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v.clone())
                .collect())
        })?;
        let len: u64 = writes
            .iter()
            .map(|(k, (_, r))| 2 * (k.len() + r.len()) as u64)
            .sum();
        if !writes.is_empty() {
            self.check_disk(&state, len)?;
        }
        for (k, (node_key, r)) in &writes {
            state.receipts.insert(k.clone(), r.clone());
            state.receipts_by_node.insert(node_key.clone(), r.clone());
        }
        Ok(writes.len())
    }

    /// Every receipt kept for a held manifest, by shard root and then node key.
    pub fn receipts_for(&self, manifest: &Cid) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.receipts_page(manifest, None, usize::MAX)?.0)
    }

    /// A page of [`MemStore::receipts_for`]: at most `limit` after `after`, and whether more
    /// follow.
    pub fn receipts_page(
        &self,
        manifest: &Cid,
        after: Option<ReceiptCursor>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let key = manifest.to_bytes();
        let state = self.state();
        if !state.manifests.contains_key(&key) {
            return Err(StoreError::NotFound { cid: *manifest });
        }
        let from = match &after {
            Some((shard, node)) => Bound::Excluded(receipt_key(&key, shard, node)),
            None => Bound::Included(key.clone()),
        };
        let mut out = Vec::new();
        for (k, v) in state.receipts.range((from, Bound::Unbounded)) {
            if !k.starts_with(&key) {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(v.clone());
        }
        Ok((out, false))
    }

    /// Receipts signed by `node` across every manifest, at most `limit`, by manifest CID and
    /// then shard root.
    pub fn receipts_of(&self, node: &[u8; 32], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let state = self.state();
        Ok(state
            .receipts_by_node
            .range(node.to_vec()..)
            .take_while(|(k, _)| k.starts_with(node))
            .take(limit)
            .map(|(_, v)| v.clone())
            .collect())
    }
}
