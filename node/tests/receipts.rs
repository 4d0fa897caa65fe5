//! Storage receipts on the data plane, over real QUIC on 127.0.0.1: a node answers every store
//! with a receipt signed by its own key for the lease its store holds, keeps receipts beside
//! the manifests it holds and serves them back; and the client refuses a receipt that is not a
//! true promise from the node it stored on, whoever sends it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::ObjectManifest;
use cairn_chunker::pipeline::{EncodeParams, Encoder};
use cairn_node::config::Size;
use cairn_proofs::receipt::StorageReceipt;
use cairn_proofs::{Hash32, NodeKey};
use cairn_wire::data::{self, DataError, Target};
use cairn_wire::keys;
use cairn_wire::protocol::{
    DataRequest, DataResponse, ErrorCode, MAX_DATA_HEADER, ManifestKind, decode_body, encode_frame,
    encode_receipts,
};
use common::{client, shard, target};
use ed25519_dalek::SigningKey;
use libp2p::identity::Keypair;

fn root(cid: &Cid) -> Hash32 {
    Hash32(*cids::digest(cid, Codec::Raw).unwrap().as_bytes())
}

/// The epoch now, in the node's hour-long epochs.
fn epoch_now() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms / 3_600_000
}

/// An object manifest (2+1, 64 KiB shards) and its stored shards as `(root, size)`.
fn object(len: usize, seed: u64) -> (ObjectManifest, Vec<(Hash32, u64)>) {
    let mut params = EncodeParams::with_shape(2, 1);
    params.erasure.shard_size = 64 << 10;
    params.threads = 1;
    let mut encoder =
        Encoder::from_bytes(Bytes::from(cairn_testkit::data::bytes(len, seed)), params).unwrap();
    for stripe in encoder.by_ref() {
        stripe.unwrap();
    }
    let manifest = encoder.finish().unwrap();
    let shards = manifest
        .stored_shards()
        .map(|(_, _, s)| (root(&s.cid), u64::from(s.len)))
        .collect();
    (manifest, shards)
}

fn signer(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_shard_is_answered_with_the_nodes_receipt_for_the_lease_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::local_config();
    config.storage.sync_writes = false;
    config.storage.capacity = Size(1 << 30);
    let node = common::start_node(dir.path(), config).await;
    let t = target(&node);
    let c = client();
    let (cid, data) = shard(300_000, 1);
    let before = epoch_now();
    let receipt = c.store(&t, &cid, data.clone()).await.unwrap();
    receipt.verify().unwrap();
    // Signed by the node's own key (the one in its peer id), for this shard at this size.
    assert_eq!(Some(receipt.node), keys::node_key(&t.peer));
    assert_eq!(receipt.shard, root(&cid));
    assert_eq!(receipt.size, 300_000);
    // Leased from this epoch for 168 more (the upload hold), and the store holds that lease.
    assert!(
        (before..=epoch_now()).contains(&receipt.start),
        "{receipt:?}"
    );
    assert_eq!(receipt.end, receipt.start + 168);
    assert_eq!(
        node.store.lease(&cid).unwrap(),
        Some((receipt.start, receipt.end))
    );
    // Stored again (held already): a receipt for the same lease, from its first epoch.
    let again = c.store(&t, &cid, data).await.unwrap();
    assert_eq!((again.start, again.node), (receipt.start, receipt.node));
    assert!(again.end >= receipt.end);
    // Committed from the epoch after it was taken.
    let due = node.store.committable(receipt.start + 1).unwrap();
    assert_eq!(due.entries, vec![(root(&cid).0, 300_000)]);
    assert!(
        node.store
            .committable(receipt.start)
            .unwrap()
            .entries
            .is_empty()
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_receipts_beside_the_manifests_it_holds_and_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::local_config();
    config.storage.sync_writes = false;
    let node = common::start_node(dir.path(), config).await;
    let t = target(&node);
    let c = client();
    let (manifest, shards) = object(300_000, 2);
    let cid = manifest.cid();
    let receipts: Vec<Vec<u8>> = shards
        .iter()
        .flat_map(|&(root, size)| {
            [1, 2].map(|i| StorageReceipt::sign(&signer(i), root, size, 10, 20).to_bytes())
        })
        .collect();
    // Not held: refused, and nothing to serve.
    let refused = |e: DataError, code: ErrorCode| match e {
        DataError::Remote { error, .. } => assert_eq!(error.code, code, "{error}"),
        other => panic!("expected a {code:?} answer, got {other}"),
    };
    refused(
        c.put_receipts(&t, &cid, &receipts).await.unwrap_err(),
        ErrorCode::NotFound,
    );
    refused(
        c.get_receipts(&t, &cid).await.unwrap_err(),
        ErrorCode::NotFound,
    );
    c.put_manifest(&t, &cid, ManifestKind::Object, &manifest.to_bytes(), &[])
        .await
        .unwrap();
    assert!(c.get_receipts(&t, &cid).await.unwrap().is_empty());
    assert_eq!(c.put_receipts(&t, &cid, &receipts).await.unwrap(), 1);
    let got = c.get_receipts(&t, &cid).await.unwrap();
    let mut want: Vec<StorageReceipt> = receipts
        .iter()
        .map(|r| StorageReceipt::from_bytes(r).unwrap())
        .collect();
    want.sort_by_key(|r| (r.shard, r.node));
    assert_eq!(got, want);
    // A forged receipt, or one for a shard the manifest does not list, refuses the request.
    let mut forged = want[0].clone();
    forged.end = 1000;
    let err = c
        .put_receipts(&t, &cid, &[receipts[0].clone(), forged.to_bytes()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("receipt 1"), "{err}");
    refused(err, ErrorCode::BadRequest);
    let stranger = StorageReceipt::sign(&signer(3), Hash32([7; 32]), 5, 1, 2).to_bytes();
    refused(
        c.put_receipts(&t, &cid, &[stranger]).await.unwrap_err(),
        ErrorCode::BadRequest,
    );
    assert_eq!(c.get_receipts(&t, &cid).await.unwrap(), want);
    // An auditor finds a node's receipts in the node's store.
    let of_two = node
        .store
        .receipts_of(&NodeKey::of(&signer(2)).0, 1000)
        .unwrap();
    assert_eq!(of_two.len(), shards.len());
    // A request whose header does not fit its limits is refused before its body is read.
    let header = encode_frame(&DataRequest::PutReceipts {
        manifest: cid,
        count: 2,
        len: 3,
    });
    let answer = c.raw_exchange(&t, &header).await.unwrap();
    let DataResponse::Error(error) = decode_body(&answer[4..]).unwrap() else {
        panic!("expected an error answer");
    };
    assert_eq!(error.code, ErrorCode::BadRequest);
    // So is a body whose framing does not hold the receipts it announces.
    let body = encode_receipts(&receipts[..2]);
    let mut message = encode_frame(&DataRequest::PutReceipts {
        manifest: cid,
        count: 1,
        len: body.len() as u64,
    });
    message.extend_from_slice(&body);
    let answer = c.raw_exchange(&t, &message).await.unwrap();
    let DataResponse::Error(error) = decode_body(&answer[4..]).unwrap() else {
        panic!("expected an error answer");
    };
    assert_eq!(error.code, ErrorCode::BadRequest, "{}", error.message);
    node.shutdown().await.unwrap();
}

/// Whether an error is the one a lie should cause.
type Expected = fn(&DataError) -> bool;

/// What the fake node answers: the bytes of its reply to each request.
type Answer = Arc<dyn Fn(&DataRequest) -> Vec<u8> + Send + Sync>;

/// A data-plane server keyed to `key` that answers every request with `answer` (after reading
/// the request, body and all).
fn fake_node(key: Keypair, answer: Answer) -> Target {
    let peer = key.public().to_peer_id();
    let endpoint = data::endpoint(&key, "127.0.0.1:0".parse().unwrap(), Some(16)).unwrap();
    let addr: SocketAddr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let Ok(bytes) = recv.read_to_end(MAX_DATA_HEADER + (4 << 20)).await else {
                            return;
                        };
                        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
                        let request: DataRequest = decode_body(&bytes[4..4 + len]).unwrap();
                        if send.write_all(&answer(&request)).await.is_ok() {
                            let _ = send.finish();
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
                        }
                    });
                }
            });
        }
    });
    Target { peer, addr }
}

fn stored(receipt: &StorageReceipt) -> Vec<u8> {
    encode_frame(&DataResponse::StoredShard {
        receipt: receipt.to_bytes(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_that_is_not_the_nodes_promise_for_the_shard_is_bad_data() {
    let key = Keypair::generate_ed25519();
    let own = keys::signing_key(&key).unwrap();
    let (cid, data) = shard(20_000, 3);
    let (other, _) = shard(20_000, 4);
    let c = client();
    let honest = StorageReceipt::sign(&own, root(&cid), 20_000, 5, 10);
    let mut tampered = honest.clone();
    tampered.end = 11;
    let lies: Vec<(&str, Vec<u8>)> = vec![
        ("the honest receipt", stored(&honest)),
        (
            "signed by another key",
            stored(&StorageReceipt::sign(&signer(9), root(&cid), 20_000, 5, 10)),
        ),
        (
            "naming another shard",
            stored(&StorageReceipt::sign(&own, root(&other), 20_000, 5, 10)),
        ),
        (
            "of another size",
            stored(&StorageReceipt::sign(&own, root(&cid), 20_001, 5, 10)),
        ),
        ("changed after signing", stored(&tampered)),
        ("a lease ending before it starts", {
            stored(&StorageReceipt::sign(&own, root(&cid), 20_000, 10, 5))
        }),
        (
            "not a receipt",
            encode_frame(&DataResponse::StoredShard {
                receipt: vec![1, 2, 3],
            }),
        ),
        ("no receipt at all", encode_frame(&DataResponse::Stored)),
    ];
    for (i, (what, reply)) in lies.into_iter().enumerate() {
        // The same key serves every answer; each fake node is its own endpoint.
        let t = fake_node(key.clone(), Arc::new(move |_: &DataRequest| reply.clone()));
        let result = c.store(&t, &cid, data.clone()).await;
        if i == 0 {
            assert_eq!(result.unwrap(), honest, "{what}");
            continue;
        }
        match result {
            Err(DataError::BadData {
                peer,
                cid: named,
                reason,
            }) => {
                assert_eq!((peer, named), (t.peer, cid), "{what}");
                assert!(reason.contains("receipt"), "{what}: {reason}");
            }
            other => panic!("{what}: expected BadData, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_read_page_by_page_and_a_node_cannot_lie_in_them() {
    let (manifest, shards) = object(300_000, 5);
    let cid = manifest.cid();
    let mut all: Vec<StorageReceipt> = shards
        .iter()
        .flat_map(|&(root, size)| {
            [1, 2, 3].map(|i| StorageReceipt::sign(&signer(i), root, size, 1, 9))
        })
        .collect();
    all.sort_by_key(|r| (r.shard, r.node));
    let page = |receipts: &[StorageReceipt], more: bool| {
        let encoded: Vec<Vec<u8>> = receipts.iter().map(StorageReceipt::to_bytes).collect();
        let body = encode_receipts(&encoded);
        let mut out = encode_frame(&DataResponse::Receipts {
            count: encoded.len() as u32,
            len: body.len() as u64,
            more,
        });
        out.extend_from_slice(&body);
        out
    };
    let c = client();
    // An honest node with three pages: each asked for after the last receipt of the one before.
    let served = all.clone();
    let t = fake_node(
        Keypair::generate_ed25519(),
        Arc::new(move |req: &DataRequest| {
            let DataRequest::GetReceipts { after, .. } = req else {
                unreachable!()
            };
            let from = match after {
                None => 0,
                Some(key) => {
                    served
                        .iter()
                        .position(|r| (r.shard, r.node) == *key)
                        .unwrap()
                        + 1
                }
            };
            let to = (from + 10).min(served.len());
            page(&served[from..to], to < served.len())
        }),
    );
    assert!(all.len() > 20);
    assert_eq!(c.get_receipts(&t, &cid).await.unwrap(), all);

    // Lies: a page that says more but is empty, one that repeats itself for ever, one out of
    // order, one with a receipt changed after signing.
    let mut forged = all[3].clone();
    forged.start = 0;
    let mut backwards = all[..4].to_vec();
    backwards.swap(1, 2);
    let lies: Vec<(&str, Vec<u8>, Expected)> = vec![
        ("an empty page with more", page(&[], true), |e| {
            matches!(e, DataError::Protocol { .. })
        }),
        (
            "the same page again and again",
            page(&all[..5], true),
            |e| matches!(e, DataError::Protocol { .. }),
        ),
        ("out of order", page(&backwards, false), |e| {
            matches!(e, DataError::Protocol { .. })
        }),
        (
            "a forged receipt",
            page(&[all[0].clone(), forged], false),
            |e| matches!(e, DataError::BadData { .. }),
        ),
        (
            "a body shorter than it says",
            {
                // Cut one byte short of the length it announces.
                let mut p = page(&all[..3], false);
                p.truncate(p.len() - 1);
                p
            },
            |e| matches!(e, DataError::Protocol { .. }),
        ),
    ];
    for (what, reply, expected) in lies {
        let t = fake_node(
            Keypair::generate_ed25519(),
            Arc::new(move |_: &DataRequest| reply.clone()),
        );
        let err = c.get_receipts(&t, &cid).await.unwrap_err();
        assert!(expected(&err), "{what}: {err:?}");
    }
}
