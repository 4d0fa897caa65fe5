//! Hostile peers against one real node on loopback: connections left idle behind keep-alives,
//! one address opening connections under many keys, uploaders that trickle their bodies.
//! Several hosts are played by binding clients to different addresses of `127.0.0.0/8`.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cairn_node::RunningNode;
use cairn_node::config::{Config, Size, Span};
use cairn_wire::admin::http_get;
use cairn_wire::data::{self, Target};
use cairn_wire::protocol::{DataRequest, DataResponse, ErrorCode, decode_body, encode_frame};
use common::{shard, target};
use libp2p::identity::Keypair;

fn config() -> Config {
    let mut c = common::local_config();
    c.storage.capacity = Size(1 << 30);
    c.storage.sync_writes = false;
    c.storage.scrub_rate = Size(0);
    c
}

async fn start(dir: &std::path::Path, c: Config) -> RunningNode {
    common::start_node(dir, c).await
}

/// A client with a new key, connecting from `ip`.
fn client_from(ip: &str) -> data::Client {
    let ip: IpAddr = ip.parse().unwrap();
    data::Client::bind_on(Keypair::generate_ed25519(), ip).unwrap()
}

/// The value of the metric line starting with `name` (with its labels) in the node's
/// `/metrics`, 0 if it is absent.
async fn metric(n: &RunningNode, name: &str) -> f64 {
    let (_, text) = http_get(n.info.admin, "/metrics", Duration::from_secs(5))
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_though_its_peer_keeps_it_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.network.idle_timeout = Span(Duration::from_secs(2));
    let n = start(dir.path(), c).await;
    let t = target(&n);
    let (cid, data) = shard(10_000, 1);
    let peer = client_from("127.0.0.1");
    peer.store(&t, &cid, data.clone()).await.unwrap();
    assert!(peer.silent_for(&t).is_some(), "a connection is open");
    // The client's keep-alives go out every second; the node closes the connection anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer.silent_for(&t).is_some() {
        assert!(
            Instant::now() < deadline,
            "the idle connection was kept open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&n, "cairn_data_idle_closed_total").await, 1.0);
    // The next request opens a new one.
    assert_eq!(peer.fetch(&t, &cid, None, None).await.unwrap(), data);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_the_node_s_connections_under_many_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.network.max_connections = 8;
    c.network.max_connections_per_ip = 4;
    let n = start(dir.path(), c).await;
    let t = target(&n);
    let (cid, data) = shard(10_000, 2);
    client_from("127.0.0.1")
        .store(&t, &cid, data.clone())
        .await
        .unwrap();
    // Four keys from 127.0.0.2 are served (past half, each first proves its address)...
    let mut held = Vec::new();
    for _ in 0..4 {
        let c = client_from("127.0.0.2");
        assert_eq!(c.fetch(&t, &cid, None, None).await.unwrap(), data);
        held.push(c);
    }
    // ... a fifth key from there is refused, whatever its key ...
    let err = client_from("127.0.0.2")
        .fetch(&t, &cid, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, data::DataError::Unreachable { .. }), "{err}");
    assert_eq!(
        metric(
            &n,
            "cairn_data_connections_refused_total{limit=\"address\"}"
        )
        .await,
        1.0
    );
    // ... while another address is served as before.
    let other = client_from("127.0.0.3");
    assert_eq!(other.fetch(&t, &cid, None, None).await.unwrap(), data);
    // A connection given up gives its address a place again.
    held.pop().unwrap().close();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client_from("127.0.0.2").fetch(&t, &cid, None, None).await {
            Ok(got) => {
                assert_eq!(got, data);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the place was never freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    n.shutdown().await.unwrap();
}

/// Opens a store of `len` announced bytes from `peer`, sends `sent` bytes of it and leaves the
/// stream open.
async fn trickle(
    peer: &data::Client,
    t: &Target,
    len: u64,
    sent: usize,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (cid, _) = shard(16, len);
    let (mut send, recv) = peer.raw_stream(t).await.unwrap();
    send.write_all(&encode_frame(&DataRequest::Store { cid, len }))
        .await
        .unwrap();
    // The node may refuse part-way (and stop the stream): the answer says so.
    let _ = send.write_all(&vec![7u8; sent]).await;
    (send, recv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_uploads_hold_only_what_they_sent_and_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    // 64 MiB at 16 MiB/s: 5 s of grace and 4 s more.
    c.network.min_body_rate = Size(16 << 20);
    let n = start(dir.path(), c).await;
    let t = target(&n);
    // Eight bodies announcing 64 MiB each, the node's whole upload budget if it counted what
    // is announced, from eight addresses, each sending one byte.
    let mut slow = Vec::new();
    let mut peers = Vec::new();
    for i in 0..8 {
        let peer = client_from(&format!("127.0.1.{}", i + 1));
        slow.push(trickle(&peer, &t, 64 << 20, 1).await);
        peers.push(peer);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // An honest upload from elsewhere goes through at once.
    let (cid, data) = shard(2 << 20, 3);
    let started = Instant::now();
    let honest = client_from("127.0.0.1");
    honest.store(&t, &cid, data.clone()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the honest upload waited {:?} for buffers the trickles held",
        started.elapsed()
    );
    // The trickles are answered: too slow, with the rate named.
    for (_, recv) in &mut slow {
        let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 16))
            .await
            .expect("a trickle was never cut off")
            .unwrap();
        let response: DataResponse = decode_body(&answer[4..]).unwrap();
        match response {
            DataResponse::Error(e) => {
                assert_eq!(e.code, ErrorCode::BadRequest);
                assert!(e.message.contains("too slowly"), "{}", e.message);
                assert!(e.message.contains("16777216 bytes/s"), "{}", e.message);
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    assert_eq!(metric(&n, "cairn_data_slow_bodies_total").await, 8.0);
    assert_eq!(honest.fetch(&t, &cid, None, None).await.unwrap(), data);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_a_quarter_of_the_upload_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), config()).await;
    let t = target(&n);
    // From one address, bodies announcing 40 MiB each, 30 MiB of it sent (claimed against
    // the address's share by what they announce, when they start): three of them claim
    // 120 MiB of the 128 MiB share; a fourth, announcing 9 MiB, waits for room (10 s) and is
    // refused, before any of its bytes is read.
    let flood = client_from("127.0.0.5");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(trickle(&flood, &t, 40 << 20, 30 << 20).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, mut recv) = trickle(&flood, &t, 64 << 20, 9 << 20).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1 << 16))
        .await
        .expect("no answer to a body over the address's share")
        .unwrap();
    match decode_body::<DataResponse>(&answer[4..]).unwrap() {
        DataResponse::Error(e) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert!(
                e.message.contains("its share is 131072 KiB"),
                "{}",
                e.message
            );
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // Another address stores as usual.
    let (cid, data) = shard(1 << 20, 4);
    client_from("127.0.0.6")
        .store(&t, &cid, data)
        .await
        .unwrap();
    drop(held);
    n.shutdown().await.unwrap();
}

/// A libp2p swarm listening on `ip` (so its dials leave from there), with a new key.
async fn swarm_on(
    ip: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> cairn_wire::swarm::Swarm {
    cairn_wire::swarm::Swarm::start(
        Keypair::generate_ed25519(),
        cairn_wire::swarm::Role::Node,
        &[format!("/ip4/{ip}/udp/0/quic-v1").parse().unwrap()],
        &[],
        None,
        "hostile-test".into(),
        cairn_wire::swarm::SwarmLimits::default(),
        cancel.clone(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_the_node_s_libp2p_connections_under_many_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.network.max_connections = 8;
    c.network.max_connections_per_ip = 2;
    let n = start(dir.path(), c).await;
    let addr: libp2p::Multiaddr = n.info.listen[0].parse().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    // Two keys from 127.0.0.7 connect; a third from there is turned away.
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = swarm_on("127.0.0.7", &cancel).await;
        s.dial(addr.clone()).await.unwrap();
        held.push(s);
    }
    let third = swarm_on("127.0.0.7", &cancel).await;
    let refused = tokio::time::timeout(Duration::from_secs(10), third.dial(addr.clone()))
        .await
        .expect("the dial neither succeeded nor failed");
    assert!(refused.is_err(), "a third key from one address was let in");
    // Another address is let in.
    let other = swarm_on("127.0.0.8", &cancel).await;
    other.dial(addr.clone()).await.unwrap();
    cancel.cancel();
    n.shutdown().await.unwrap();
}

/// One key gets its share of the control requests a node answers (a few at once, a rate
/// after a burst), the rest `Busy` at once; another peer is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_gets_its_share_of_control_requests_and_the_rest_are_busy() {
    use cairn_wire::protocol::ControlRequest;
    use cairn_wire::swarm::{SwarmError, fair};
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), config()).await;
    let addr: libp2p::Multiaddr = n.info.listen[0].parse().unwrap();
    let node: libp2p::PeerId = n.info.peer_id.parse().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let flood = swarm_on("127.0.0.9", &cancel).await;
    flood.dial(addr.clone()).await.unwrap();
    // 400 requests, 64 at a time, as fast as the node answers.
    let started = Instant::now();
    let (mut answered, mut busy) = (0u32, 0u32);
    for _ in 0..400 / 64 + 1 {
        let asks = (0..64).map(|_| flood.request(node, ControlRequest::Info));
        for a in futures::future::join_all(asks).await {
            match a {
                Ok(_) => answered += 1,
                Err(SwarmError::Remote { error, .. }) if error.code == ErrorCode::Busy => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    let most = fair::PER_PEER_BURST + fair::PER_PEER_RATE * started.elapsed().as_secs_f64();
    assert!(
        f64::from(answered) <= most + 1.0 && busy > 0,
        "{answered} answered (at most {most:.0}), {busy} busy"
    );
    // Another key, from another address, is answered.
    let other = swarm_on("127.0.0.10", &cancel).await;
    other.dial(addr).await.unwrap();
    other.request(node, ControlRequest::Info).await.unwrap();
    cancel.cancel();
    n.shutdown().await.unwrap();
}
