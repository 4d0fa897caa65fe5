//! `Network` as a long-lived client (the gateway) uses it: one connection, views refreshed as
//! nodes leave and come back, against a real devnet of `cairn-node` processes on 127.0.0.1.

mod common;

use cairn_chunker::ObjectManifest;
use cairn_client::error::ClientError;
use cairn_client::get::{Incidents, object_manifest, read_object_to_vec};
use cairn_client::network::Network;
use common::{Net, noise, write};
use libp2p::Multiaddr;

async fn read(net: &Network, manifest: &ObjectManifest) -> Result<Vec<u8>, ClientError> {
    read_object_to_vec(net, manifest, &Incidents::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_views_keep_the_connection_and_follow_nodes_leaving_and_returning() {
    let mut net = Net::start(6).await;
    let data = noise(3 << 20, 7);
    let file = net.path("f.bin");
    write(&file, &data);
    let cid = net
        .ok(&["put", file.to_str().unwrap(), "--k", "4", "--m", "2"])
        .trim()
        .parse()
        .unwrap();
    let peers: Vec<Multiaddr> = net
        .devnet()
        .state
        .nodes
        .iter()
        .map(|n| n.multiaddr.parse().unwrap())
        .collect();
    let first = Network::connect(&peers[..1]).await.unwrap();
    assert_eq!(first.nodes().len(), 6);
    let manifest = object_manifest(&first, &cid).await.unwrap();
    assert!(read(&first, &manifest).await.unwrap() == data);

    // A refreshed view works after the one it came from is gone (they share the swarm and the
    // data-plane client; dropping the first must not shut them down).
    let second = first.refresh().await.unwrap();
    drop(first);
    assert_eq!(second.nodes().len(), 6);
    assert!(read(&second, &manifest).await.unwrap() == data);

    // A node leaves: the next view no longer lists it, and reads rebuild from parity.
    let gone = net.devnet().state.nodes[2].peer_id.clone();
    net.devnet_mut().stop_node(2).await;
    let third = second.refresh().await.unwrap();
    drop(second);
    let ids: Vec<String> = third.nodes().iter().map(|n| n.peer().to_string()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(!ids.contains(&gone));
    assert!(read(&third, &manifest).await.unwrap() == data);

    // It comes back: the view after that lists it again.
    net.devnet_mut().restart_node(2).await.unwrap();
    let mut fourth = third.refresh().await.unwrap();
    for _ in 0..20 {
        if fourth.nodes().len() == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        fourth = fourth.refresh().await.unwrap();
    }
    let ids: Vec<String> = fourth
        .nodes()
        .iter()
        .map(|n| n.peer().to_string())
        .collect();
    assert!(ids.contains(&gone), "{ids:?}");
    assert!(read(&fourth, &manifest).await.unwrap() == data);
    drop((third, fourth));
    net.stop().await;
}
