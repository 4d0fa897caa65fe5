//! Storage receipts: the node's signed promise, for every shard it takes, to hold it for a
//! lease of epochs.
//!
//! A stored shard is leased from the current epoch for `lease_epochs` more; the lease is
//! recorded (or an older one extended, [`ShardStore::extend_lease`]) durably before the receipt
//! is signed, and the receipt names the lease the store then holds, so a receipt never promises
//! more than the store will commit to.
//!
//! The store-time lease is the shard's *upload hold*; owners' lease statements add holds of
//! their own ([`Leaser::hold`]), and the lease is the latest end over them.

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_proofs::epoch::Epochs;
use cairn_proofs::lease::LeaseStatement;
use cairn_proofs::receipt::StorageReceipt;
use cairn_proofs::{Hash32, NodeKey};
use ed25519_dalek::SigningKey;

use crate::proofs::unix_ms;
use crate::store::{ShardStore, Store, StoreError};

/// Leases shards and signs their receipts with the node's key.
pub struct Leaser {
    key: SigningKey,
    epochs: Epochs,
    lease_epochs: u64,
}

impl std::fmt::Debug for Leaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaser")
            .field("node", &NodeKey::of(&self.key))
            .field("epochs", &self.epochs)
            .field("lease_epochs", &self.lease_epochs)
            .finish_non_exhaustive()
    }
}

impl Leaser {
    /// Signs with `key` (the node's identity key), counts epochs by `epochs`, and leases each
    /// stored shard for `lease_epochs` epochs after the one it is taken in.
    pub fn new(key: SigningKey, epochs: Epochs, lease_epochs: u64) -> Self {
        Self {
            key,
            epochs,
            lease_epochs,
        }
    }

    /// The key receipts are signed with.
    pub fn node_key(&self) -> NodeKey {
        NodeKey::of(&self.key)
    }

    /// The epochs leases are counted in.
    pub fn epochs(&self) -> Epochs {
        self.epochs
    }

    /// Epochs a lease runs past the one the shard is taken in.
    pub fn lease_epochs(&self) -> u64 {
        self.lease_epochs
    }

    /// Leases a held shard (`size` bytes) from the epoch of `unix_ms` for
    /// [`Leaser::lease_epochs`] more, extending the lease it has (earliest start, latest end),
    /// and signs a receipt for the lease the store holds now. The lease is durable first.
    pub fn lease_at<S: ShardStore + ?Sized>(
        &self,
        store: &S,
        cid: &Cid,
        size: u64,
        unix_ms: u64,
    ) -> Result<StorageReceipt, StoreError> {
        let root = cids::digest(cid, Codec::Raw)?;
        let start = self.epochs.at(unix_ms);
        let end = start.saturating_add(self.lease_epochs);
        let (start, end) = store.hold_upload(cid, start, end, self.epochs)?;
        Ok(StorageReceipt::sign(
            &self.key,
            Hash32(*root.as_bytes()),
            size,
            start,
            end,
        ))
    }

    /// Applies a verified lease statement to each listed shard the store holds (see
    /// [`Store::apply_statement`]) and signs a receipt for the lease each is then held under
    /// (shorter than an earlier receipt's after a release: the release voids that one). Shards
    /// not held get nothing. Durable before anything is signed.
    pub fn hold(
        &self,
        store: &Store,
        statement: &LeaseStatement,
        shards: &[Cid],
    ) -> Result<Vec<StorageReceipt>, StoreError> {
        let mut out = Vec::with_capacity(shards.len());
        for cid in shards {
            let Ok(root) = cids::digest(cid, Codec::Raw) else {
                continue;
            };
            if let Some(a) = store.apply_statement(cid, statement, self.epochs)? {
                out.push(StorageReceipt::sign(
                    &self.key,
                    Hash32(*root.as_bytes()),
                    a.size,
                    a.start,
                    a.end,
                ));
            }
        }
        Ok(out)
    }

    /// [`Leaser::lease_at`] now, by the system clock.
    pub fn lease<S: ShardStore + ?Sized>(
        &self,
        store: &S,
        cid: &Cid,
        size: u64,
    ) -> Result<StorageReceipt, StoreError> {
        self.lease_at(store, cid, size, unix_ms())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{MemStore, StoreConfig, StoreMetrics};

    #[test]
    fn a_receipt_names_the_lease_the_store_holds() {
        let store = MemStore::new(StoreConfig::default(), StoreMetrics::default());
        let key = SigningKey::from_bytes(&[4; 32]);
        let epochs = Epochs::new(Duration::from_secs(3600)).unwrap();
        let leaser = Leaser::new(key.clone(), epochs, 720);
        let data = vec![9u8; 40_000];
        let cid = cids::raw(&data);
        // Not held: nothing to promise.
        assert!(matches!(
            leaser.lease_at(&store, &cid, 40_000, 0),
            Err(StoreError::NotFound { .. })
        ));
        store.put_shard(&cid, &data).unwrap();
        let at = |epoch: u64| epoch * 3_600_000 + 1234;
        let r = leaser.lease_at(&store, &cid, 40_000, at(100)).unwrap();
        r.verify().unwrap();
        assert_eq!((r.start, r.end, r.size), (100, 820, 40_000));
        assert_eq!(r.node, NodeKey::of(&key));
        assert_eq!(
            &r.shard.0,
            cids::digest(&cid, Codec::Raw).unwrap().as_bytes()
        );
        assert_eq!(store.lease(&cid).unwrap(), Some((100, 820)));
        // Stored again later: the lease grows, and the receipt keeps the first epoch.
        let again = leaser.lease_at(&store, &cid, 40_000, at(130)).unwrap();
        assert_eq!((again.start, again.end), (100, 850));
        // The debug output does not show the secret key.
        let shown = format!("{leaser:?}");
        assert!(!shown.contains(&format!("{:?}", key.to_bytes())), "{shown}");
    }
}
