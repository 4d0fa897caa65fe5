//! The contract for storage receipts kept beside manifests.

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::ObjectManifest;
use cairn_chunker::pipeline::{EncodeParams, Encoder};
use cairn_proofs::receipt::StorageReceipt;
use cairn_proofs::{Hash32, NodeKey};
use ed25519_dalek::SigningKey;

use crate::store::{MAX_RECEIPTS_PER_SHARD, StoreError};
use cairn_wire::protocol::ManifestKind;

use super::Subject;

contract!(
    receipts_are_kept_for_held_manifests_and_the_shards_they_list,
    a_bad_receipt_refuses_the_whole_call,
    receipts_are_kept_one_per_node_and_a_few_per_shard,
    receipts_are_found_by_manifest_in_pages_and_by_node,
);

/// An object manifest of `len` bytes (2+1, 64 KiB shards: several stripes), and its stored
/// shards as `(root, len)`.
pub(super) fn object(len: usize, seed: u64) -> (ObjectManifest, Vec<([u8; 32], u64)>) {
    let mut params = EncodeParams::with_shape(2, 1);
    params.erasure.shard_size = 64 << 10;
    params.threads = 1;
    let data = Bytes::from(cairn_testkit::data::bytes(len, seed));
    let mut encoder = Encoder::from_bytes(data, params).unwrap();
    for stripe in encoder.by_ref() {
        stripe.unwrap();
    }
    let manifest = encoder.finish().unwrap();
    let shards = manifest
        .stored_shards()
        .map(|(_, _, s)| {
            let root = *cids::digest(&s.cid, Codec::Raw).unwrap().as_bytes();
            (root, u64::from(s.len))
        })
        .collect();
    (manifest, shards)
}

pub(super) fn node(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

/// A receipt by node `i` for `shard`, leased from `start` for ten epochs.
pub(super) fn receipt(i: u8, (root, size): ([u8; 32], u64), start: u64) -> Vec<u8> {
    StorageReceipt::sign(&node(i), Hash32(root), size, start, start + 10).to_bytes()
}

fn hold<S: Subject>(store: &S, manifest: &ObjectManifest) -> Cid {
    let cid = manifest.cid();
    store
        .put_manifest(&cid, ManifestKind::Object, &manifest.to_bytes(), &[])
        .unwrap();
    cid
}

fn decoded(receipts: Vec<Vec<u8>>) -> Vec<StorageReceipt> {
    receipts
        .iter()
        .map(|r| StorageReceipt::from_bytes(r).unwrap())
        .collect()
}

fn receipts_are_kept_for_held_manifests_and_the_shards_they_list<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (manifest, shards) = object(300_000, 1);
    assert!(shards.len() >= 6, "{}", shards.len());
    let cid = manifest.cid();
    let all: Vec<Vec<u8>> = shards.iter().map(|s| receipt(1, *s, 5)).collect();
    // Not held: refused, and nothing to list.
    assert!(matches!(
        store.put_receipts(&cid, &all),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.receipts_for(&cid),
        Err(StoreError::NotFound { .. })
    ));
    hold(&store, &manifest);
    assert_eq!(store.receipts_for(&cid).unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(store.put_receipts(&cid, &all).unwrap(), all.len());
    // Idempotent: the same receipts again are nothing new.
    assert_eq!(store.put_receipts(&cid, &all).unwrap(), 0);
    assert_eq!(store.put_receipts(&cid, &all[..2]).unwrap(), 0);
    assert_eq!(store.put_receipts(&cid, &[]).unwrap(), 0);
    // Served by shard root, as they were signed.
    let mut want = all.clone();
    want.sort_by_key(|r| StorageReceipt::from_bytes(r).unwrap().shard);
    assert_eq!(store.receipts_for(&cid).unwrap(), want);
    // Durable, and not mixed with another manifest's.
    let (other, other_shards) = object(200_000, 2);
    let other_cid = hold(&store, &other);
    let theirs = vec![receipt(1, other_shards[0], 5)];
    assert_eq!(store.put_receipts(&other_cid, &theirs).unwrap(), 1);
    let store = store.reopen();
    assert_eq!(store.receipts_for(&cid).unwrap(), want);
    assert_eq!(store.receipts_for(&other_cid).unwrap(), theirs);
    // A dataset manifest lists no shards: there is nothing to hold receipts for.
    let d = cairn_chunker::DatasetManifest::new();
    store
        .put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[])
        .unwrap();
    let err = store.put_receipts(&d.cid(), &all[..1]).unwrap_err();
    assert!(matches!(err, StoreError::BadReceipts { .. }), "{err}");
    assert!(err.to_string().contains("not an object manifest"), "{err}");
}

fn a_bad_receipt_refuses_the_whole_call<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (manifest, shards) = object(300_000, 3);
    let cid = hold(&store, &manifest);
    let good = receipt(1, shards[0], 5);
    let refused = |bad: Vec<u8>, says: &str| {
        let err = store.put_receipts(&cid, &[good.clone(), bad]).unwrap_err();
        assert!(matches!(err, StoreError::BadReceipts { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("receipt 1") && text.contains(says), "{text}");
        // The good receipt beside it was not kept either.
        assert!(store.receipts_for(&cid).unwrap().is_empty());
    };
    // Forged: fields changed after signing, or signed by one key and naming another.
    let mut forged = StorageReceipt::from_bytes(&receipt(2, shards[1], 5)).unwrap();
    forged.end += 100;
    refused(forged.to_bytes(), "not signed");
    let mut stolen = StorageReceipt::from_bytes(&receipt(2, shards[1], 5)).unwrap();
    stolen.node = NodeKey::of(&node(3));
    refused(stolen.to_bytes(), "not signed");
    // A shard the manifest does not list, or one it lists at another size.
    let (_, elsewhere) = object(100_000, 4);
    refused(receipt(2, elsewhere[0], 5), "does not list");
    refused(
        receipt(2, (shards[1].0, shards[1].1 + 1), 5),
        "the manifest says",
    );
    // Not a receipt at all.
    refused(vec![0xa1, 0x01], "storage receipt");
    refused(Vec::new(), "storage receipt");
    // The good one alone is kept.
    assert_eq!(
        store
            .put_receipts(&cid, std::slice::from_ref(&good))
            .unwrap(),
        1
    );
    assert_eq!(store.receipts_for(&cid).unwrap(), vec![good]);
}

fn receipts_are_kept_one_per_node_and_a_few_per_shard<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (manifest, shards) = object(300_000, 5);
    let cid = hold(&store, &manifest);
    let s = shards[2];
    // Ten nodes say they hold one shard (hedges, retries): eight are kept, the first eight.
    let many: Vec<Vec<u8>> = (1..=10).map(|i| receipt(i, s, 5)).collect();
    assert_eq!(
        store.put_receipts(&cid, &many).unwrap(),
        MAX_RECEIPTS_PER_SHARD
    );
    let kept = decoded(store.receipts_for(&cid).unwrap());
    assert_eq!(kept.len(), MAX_RECEIPTS_PER_SHARD);
    let mut nodes: Vec<NodeKey> = kept.iter().map(|r| r.node).collect();
    let mut first: Vec<NodeKey> = (1..=8).map(|i| NodeKey::of(&node(i))).collect();
    nodes.sort();
    first.sort();
    assert_eq!(nodes, first);
    assert_eq!(store.put_receipts(&cid, &many[8..]).unwrap(), 0, "full");
    // One per node: a renewal (a later end) replaces the node's receipt, an older one does not.
    let renewed = receipt(1, s, 9);
    assert_eq!(
        store
            .put_receipts(&cid, std::slice::from_ref(&renewed))
            .unwrap(),
        1
    );
    assert_eq!(store.put_receipts(&cid, &[receipt(1, s, 7)]).unwrap(), 0);
    let kept = store.receipts_for(&cid).unwrap();
    assert_eq!(kept.len(), MAX_RECEIPTS_PER_SHARD);
    assert!(kept.contains(&renewed));
    assert!(!kept.contains(&many[0]));
    // Twice in one call counts once.
    let t = shards[3];
    let twice = vec![receipt(1, t, 5), receipt(1, t, 5)];
    assert_eq!(store.put_receipts(&cid, &twice).unwrap(), 1);
    // The limit is per shard: another shard takes its own eight.
    assert_eq!(
        store.receipts_for(&cid).unwrap().len(),
        MAX_RECEIPTS_PER_SHARD + 1
    );
}

fn receipts_are_found_by_manifest_in_pages_and_by_node<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (a, a_shards) = object(300_000, 6);
    let (b, b_shards) = object(200_000, 7);
    let (a_cid, b_cid) = (hold(&store, &a), hold(&store, &b));
    // Node 1 holds every shard of both; node 2 a copy of two of `a`'s.
    let mut for_a: Vec<Vec<u8>> = a_shards.iter().map(|s| receipt(1, *s, 5)).collect();
    for_a.extend(a_shards[..2].iter().map(|s| receipt(2, *s, 6)));
    let for_b: Vec<Vec<u8>> = b_shards.iter().map(|s| receipt(1, *s, 5)).collect();
    store.put_receipts(&a_cid, &for_a).unwrap();
    store.put_receipts(&b_cid, &for_b).unwrap();

    // Pages, each continuing after the last receipt of the one before, make up the whole.
    let whole = store.receipts_for(&a_cid).unwrap();
    assert_eq!(whole.len(), for_a.len());
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = store.receipts_page(&a_cid, after, 3).unwrap();
        assert!(page.len() <= 3);
        if let Some(last) = page.last() {
            let r = StorageReceipt::from_bytes(last).unwrap();
            after = Some((r.shard.0, r.node.0));
        }
        paged.extend(page);
        if !more {
            break;
        }
    }
    assert_eq!(paged, whole);
    let (page, more) = store.receipts_page(&a_cid, None, whole.len()).unwrap();
    assert_eq!((page.len(), more), (whole.len(), false));

    // By node: every receipt the node signed, across manifests, and no other node's.
    let one = NodeKey::of(&node(1)).0;
    let two = NodeKey::of(&node(2)).0;
    let of_one = decoded(store.receipts_of(&one, 1000).unwrap());
    assert_eq!(of_one.len(), a_shards.len() + b_shards.len());
    assert!(of_one.iter().all(|r| r.node.0 == one));
    let mut roots: Vec<[u8; 32]> = of_one.iter().map(|r| r.shard.0).collect();
    let mut want: Vec<[u8; 32]> = a_shards.iter().chain(&b_shards).map(|s| s.0).collect();
    roots.sort();
    want.sort();
    assert_eq!(roots, want);
    let of_two = decoded(store.receipts_of(&two, 1000).unwrap());
    assert_eq!(of_two.len(), 2);
    assert!(of_two.iter().all(|r| r.node.0 == two && r.start == 6));
    assert_eq!(store.receipts_of(&one, 4).unwrap().len(), 4);
    assert!(store.receipts_of(&[9; 32], 10).unwrap().is_empty());
    // A renewal replaces the node's receipt in both indexes.
    let renewed = receipt(2, a_shards[0], 20);
    assert_eq!(store.put_receipts(&a_cid, &[renewed]).unwrap(), 1);
    let of_two = decoded(store.receipts_of(&two, 1000).unwrap());
    assert_eq!(of_two.len(), 2);
    assert_eq!(
        of_two.iter().filter(|r| r.start == 20).count(),
        1,
        "{of_two:?}"
    );
    let store = store.reopen();
    assert_eq!(store.receipts_of(&two, 1000).unwrap().len(), 2);
}
