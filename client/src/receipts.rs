//! Storage receipts beside manifests.
//!
//! Every node that takes a shard answers with a storage receipt: its signed promise to hold
//! that shard (its BLAKE3 root and size) through a lease of epochs. A put collects the receipts
//! of every shard it stored (a shard stored twice, by a hedge, has two) and, once the manifest
//! is stored, gives them to the manifest's nodes, which keep them beside it. Whoever holds the
//! manifest's CID can then learn who promised to hold which shard until when
//! ([`Network::receipts`]), and an auditor can name those shards in challenges.

use std::collections::{BTreeMap, HashMap};

use cairn_chunker::Cid;
use cairn_chunker::cids::{self, Codec};
use cairn_proofs::receipt::StorageReceipt;
use cairn_proofs::{Hash32, NodeKey};
use cairn_wire::data::Target;

use crate::error::ClientError;
use crate::get::{Incidents, Manifest, fetch_manifest};
use crate::network::Network;

/// Gives `receipts` (encoded) to the nodes that keep `manifest`, all at once; returns how many
/// kept them. A node that refuses them, or cannot be reached, is noted in `notes` and logged:
/// the manifest is stored there all the same, and the others keep the receipts.
pub(crate) async fn give(
    net: &Network,
    manifest: &Cid,
    keepers: &[Target],
    receipts: &[Vec<u8>],
    notes: &Incidents,
) -> usize {
    if receipts.is_empty() {
        return 0;
    }
    let gives = keepers
        .iter()
        .map(|t| async move { (t, net.data().put_receipts(t, manifest, receipts).await) });
    let mut kept = 0;
    for (t, answer) in futures::future::join_all(gives).await {
        match answer {
            Ok(_) => kept += 1,
            Err(e) => {
                tracing::warn!(peer = %t.peer, %manifest, "storage receipts not kept: {e}");
                notes.record(
                    t.peer,
                    format!(
                        "manifest {manifest}: its {} storage receipts not kept: {e}",
                        receipts.len()
                    ),
                );
            }
        }
    }
    kept
}

impl Network {
    /// The storage receipts kept beside `manifest`: every node's signed promise to hold one of
    /// its shards, asked of every node holding the manifest and put together (one per node
    /// per shard, the latest lease). Each is verified, and names one of the manifest's shards
    /// at its size (the manifest is fetched and checked first); a receipt that does not is
    /// left out and logged. A dataset manifest lists no shards: it has none. Fails if no node
    /// holding the manifest answers.
    pub async fn receipts(&self, manifest: &Cid) -> Result<Vec<StorageReceipt>, ClientError> {
        let fetched = fetch_manifest(self, manifest).await?;
        let Manifest::Object(object) = &fetched.manifest else {
            return Ok(Vec::new());
        };
        let mut listed: HashMap<Hash32, u64> = HashMap::new();
        for (_, _, shard) in object.stored_shards() {
            // A checked manifest names shards by raw CIDs only.
            let Ok(root) = cids::digest(&shard.cid, Codec::Raw) else {
                continue;
            };
            listed.insert(Hash32(*root.as_bytes()), u64::from(shard.len));
        }
        // Its keepers: the nodes that say they hold it, and those that just served it.
        let mut keepers: Vec<usize> = self.locate(&[*manifest]).await.intact(manifest).to_vec();
        for peer in &fetched.holders {
            if let Some(i) = self.nodes().iter().position(|n| n.peer() == *peer) {
                keepers.push(i);
            }
        }
        keepers.sort_unstable();
        keepers.dedup();
        let asks = keepers.iter().map(|&i| {
            let target = self.nodes()[i].target;
            async move { (target, self.data().get_receipts(&target, manifest).await) }
        });
        let (mut answered, mut problems) = (0, Vec::new());
        let mut union: BTreeMap<(Hash32, NodeKey), StorageReceipt> = BTreeMap::new();
        for (target, answer) in futures::future::join_all(asks).await {
            let receipts = match answer {
                Ok(receipts) => receipts,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            answered += 1;
            for r in receipts {
                if listed.get(&r.shard) != Some(&r.size) {
                    tracing::warn!(
                        peer = %target.peer,
                        %manifest,
                        "a storage receipt for shard {} ({} bytes), which the manifest does not list",
                        r.shard,
                        r.size
                    );
                    continue;
                }
                match union.entry((r.shard, r.node)) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(r);
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        if (r.end, std::cmp::Reverse(r.start))
                            > (e.get().end, std::cmp::Reverse(e.get().start))
                        {
                            e.insert(r);
                        }
                    }
                }
            }
        }
        if answered == 0 {
            return Err(ClientError::ReceiptsUnavailable {
                cid: Box::new(*manifest),
                problems,
            });
        }
        Ok(union.into_values().collect())
    }
}
