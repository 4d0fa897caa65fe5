//! A put is acknowledged only once m+1 nodes took its manifest: an object small enough to live
//! inline in its manifest exists nowhere else, and any object is lost with the last copy of
//! its manifest, so `m` nodes dying right after the put must leave one.

mod common;

use std::sync::Arc;

use cairn_client::error::ClientError;
use cairn_client::network::Network;
use cairn_client::put::{Input, PutOptions, put_object};
use common::{Net, noise};
use libp2p::Multiaddr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_kept_on_fewer_than_m_plus_1_nodes_is_an_error() {
    let mut net = Net::start(6).await;
    let peers: Vec<Multiaddr> = net
        .devnet()
        .state
        .nodes
        .iter()
        .map(|n| n.multiaddr.parse().unwrap())
        .collect();
    // A view of all six, kept while four of them die: the put tries every node it knows.
    let view = Network::connect(&peers).await.unwrap();
    assert_eq!(view.nodes().len(), 6);
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let mut opts = PutOptions::for_network(6);
    opts.params.inline_limit = 64 << 10;
    let put = |data: Vec<u8>| {
        put_object(
            Some(&view),
            &key,
            Input::Bytes(data.into()),
            &opts,
            Arc::new(|_| {}),
        )
    };
    // All up: three copies of a 16 KiB object, no shard.
    let report = put(noise(16 << 10, 1)).await.unwrap();
    assert_eq!((report.shards, report.manifest_copies), (0, 3));

    for i in 0..4 {
        net.devnet_mut().kill_node(i).await;
    }
    let Err(e) = put(noise(16 << 10, 2)).await else {
        panic!("a put kept on two nodes was acknowledged");
    };
    assert!(
        matches!(
            e,
            ClientError::ManifestUpload {
                stored: 2,
                wanted: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("2 of the 3 nodes"), "{e}");
}
