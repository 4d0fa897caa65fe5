//! Spare copies: shards this node holds that another node now holds for the network.
//!
//! A keeper that leaves two copies of a shard (a rebalancing move, a repair around a node that
//! came back, a hedged upload) renews only one of them; it tells the other's holder with the
//! renewed copy's storage receipt ([`Store::mark_spare`]). The spare copy stays until its holds
//! end (a node never deletes under a live hold) and is collected then; meanwhile the node counts
//! it out of the fill it reports, so rebalancing does not go on moving shards off a node whose
//! `used` falls only when those holds end.
//!
//! The marks are a hint kept in memory: a restart forgets them and the next keeper pass sends
//! them again. A hold renewed on the copy (it is the one kept again), a new store of the shard
//! and its deletion take the mark off.

use std::collections::HashMap;

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_proofs::receipt::StorageReceipt;

use super::Store;

/// The marks: shard CID bytes -> size.
pub(super) type Spares = std::sync::Mutex<HashMap<Vec<u8>, u64>>;

impl Store {
    /// Marks this node's copy of `shard` spare, `replacement` being the receipt of the node that
    /// holds it for the network now; `me` is this node's key. Refused, with the reason, unless
    /// the receipt verifies, names the shard and another node, and runs at least as long as
    /// this copy's lease, and the shard is held here.
    pub fn mark_spare(
        &self,
        shard: &Cid,
        replacement: &StorageReceipt,
        me: &[u8; 32],
    ) -> Result<(), String> {
        replacement
            .verify()
            .map_err(|e| format!("{shard}: the replacement's receipt does not verify: {e}"))?;
        let root = cids::digest(shard, Codec::Raw).map_err(|e| format!("{shard}: {e}"))?;
        if replacement.shard.0 != *root.as_bytes() {
            return Err(format!("{shard}: the receipt names another shard"));
        }
        if replacement.node.0 == *me {
            return Err(format!("{shard}: the receipt is this node's own"));
        }
        let key = shard.to_bytes();
        // Under the shard's claim, so a deletion cannot come between the check and the mark.
        let _claim = self.claim(&key);
        let (_, end) = self
            .lease(shard)
            .map_err(|e| format!("{shard}: {e}"))?
            .ok_or_else(|| format!("{shard}: not held here"))?;
        if replacement.end < end {
            return Err(format!(
                "{shard}: the replacement's lease ends in epoch {}, before this copy's ({end})",
                replacement.end
            ));
        }
        let size = self
            .has(std::slice::from_ref(shard))
            .map_err(|e| format!("{shard}: {e}"))?
            .first()
            .and_then(|h| h.intact())
            .ok_or_else(|| format!("{shard}: not held here intact"))?;
        if let Ok(mut s) = self.spare.lock() {
            s.insert(key, size);
        }
        Ok(())
    }

    /// Takes the spare mark off `shard` (a hold renewed it, it was stored again or deleted).
    pub(super) fn unspare(&self, key: &[u8]) {
        if let Ok(mut s) = self.spare.lock()
            && !s.is_empty()
        {
            s.remove(key);
        }
    }

    /// Bytes of copies marked spare.
    pub fn spare_bytes(&self) -> u64 {
        self.spare.lock().map_or(0, |s| s.values().sum())
    }

    /// Whether `shard` is marked spare.
    pub fn is_spare(&self, shard: &Cid) -> bool {
        self.spare
            .lock()
            .is_ok_and(|s| s.contains_key(&shard.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use cairn_proofs::lease::LeaseStatement;
    use cairn_proofs::{Hash32, NodeKey};
    use ed25519_dalek::SigningKey;

    use super::super::testing::{epochs, open, shard};
    use super::*;

    fn root(cid: &Cid) -> Hash32 {
        Hash32(*cids::digest(cid, Codec::Raw).unwrap().as_bytes())
    }

    #[test]
    fn a_copy_is_spare_only_on_a_good_receipt_and_until_it_is_kept_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let (me, other) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let my_key = NodeKey::of(&me).0;
        let (cid, data) = shard(5000, 3);
        let (absent, _) = shard(10, 4);
        store.put_shard(&cid, &data).unwrap();
        store.hold_upload(&cid, 1, 10, epochs()).unwrap();
        let good = StorageReceipt::sign(&other, root(&cid), 5000, 1, 10);
        // Refused: a shorter lease, this node's own receipt, another shard's, a forged
        // signature, a shard not held.
        let short = StorageReceipt::sign(&other, root(&cid), 5000, 1, 9);
        assert!(
            store
                .mark_spare(&cid, &short, &my_key)
                .unwrap_err()
                .contains("before")
        );
        let own = StorageReceipt::sign(&me, root(&cid), 5000, 1, 10);
        assert!(
            store
                .mark_spare(&cid, &own, &my_key)
                .unwrap_err()
                .contains("own")
        );
        let elsewhere = StorageReceipt::sign(&other, root(&absent), 10, 1, 10);
        assert!(
            store
                .mark_spare(&cid, &elsewhere, &my_key)
                .unwrap_err()
                .contains("another shard")
        );
        let mut forged = good.clone();
        forged.end = 100;
        assert!(
            store
                .mark_spare(&cid, &forged, &my_key)
                .unwrap_err()
                .contains("verify")
        );
        assert!(
            store
                .mark_spare(&absent, &elsewhere, &my_key)
                .unwrap_err()
                .contains("not held")
        );
        assert_eq!(store.spare_bytes(), 0);
        // Taken: counted in the stats.
        store.mark_spare(&cid, &good, &my_key).unwrap();
        assert!(store.is_spare(&cid));
        assert_eq!(store.stats().spare, 5000);
        // A release does not make it kept; a renewal does.
        let release = LeaseStatement::sign(&other, b"object", 0, 2_000);
        assert!(release.is_release());
        store.apply_statement(&cid, &release, epochs()).unwrap();
        assert!(store.is_spare(&cid));
        let renewal = LeaseStatement::sign(&other, b"object", 20, 3_000);
        store.apply_statement(&cid, &renewal, epochs()).unwrap();
        assert!(!store.is_spare(&cid));
        // Marked again (the renewal's lease is matched), then deleted: no longer counted.
        let longer = StorageReceipt::sign(&other, root(&cid), 5000, 1, 20);
        store.mark_spare(&cid, &longer, &my_key).unwrap();
        assert_eq!(store.spare_bytes(), 5000);
        store.delete_shard(&cid).unwrap();
        assert_eq!(store.spare_bytes(), 0);
    }
}
