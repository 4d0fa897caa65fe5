//! Multi-node tests: real nodes (RocksDB, libp2p over QUIC, quinn data plane) on 127.0.0.1,
//! in one process.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid};
use cairn_node::RunningNode;
use cairn_node::config::{Config, Size};
use cairn_node::identity;
use cairn_testkit::wait::Deadline;
use cairn_wire::data::{self, DataError, Target};
use cairn_wire::protocol::{
    ControlRequest, ControlResponse, DataRequest, DataResponse, ErrorCode, Holding, RESET_ABORTED,
    decode_body, encode_frame,
};
use common::{client, shard, target};
use libp2p::PeerId;

fn config(bootstrap: Option<&str>, capacity: u64) -> Config {
    let mut c = common::local_config();
    c.network.bootstrap = bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default();
    c.storage.capacity = Size(capacity);
    c.storage.sync_writes = false;
    c.storage.scrub_rate = Size(0);
    c
}

async fn start(dir: &Path, bootstrap: Option<&str>, capacity: u64) -> RunningNode {
    common::start_node(dir, config(bootstrap, capacity)).await
}

async fn wait_for_peers(nodes: &[&RunningNode], want: usize) {
    let deadline = Deadline::after(Duration::from_secs(30), "the nodes discover each other");
    loop {
        let mut counts = Vec::new();
        for n in nodes {
            counts.push(n.swarm.peers().await.unwrap().len());
        }
        if counts.iter().all(|&c| c >= want) {
            return;
        }
        deadline.check_with(format_args!(
            "peers known per node: {counts:?}, want {want}"
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_one_node_fetch_from_another_and_discover() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(&dir.path().join("a"), None, 1 << 30).await;
    let boot = a.info.listen[0].clone();
    let b = start(&dir.path().join("b"), Some(&boot), 1 << 30).await;
    let c = start(&dir.path().join("c"), Some(&boot), 1 << 30).await;
    // Kademlia: every node learns every other, including c learning b through a.
    wait_for_peers(&[&a, &b, &c], 2).await;

    // Node a's identity uploads to b; an unrelated client fetches from b, verified.
    let (cid, data) = shard(1 << 20, 1);
    let uploader = client();
    uploader
        .store(&target(&b), &cid, data.clone())
        .await
        .unwrap();
    let got = client()
        .fetch(&target(&b), &cid, Some(data.len() as u64), None)
        .await
        .unwrap();
    assert_eq!(got, data);
    let part = client()
        .fetch(&target(&b), &cid, Some(1 << 20), Some(12_345..400_000))
        .await
        .unwrap();
    assert_eq!(&part[..], &data[12_345..400_000]);
    // Head first (the first group in the fast lane, the rest beside it): same bytes, in order,
    // whatever the range's alignment; tiny ranges go as one request.
    let c2 = client();
    for range in [
        12_345..400_000,
        0..(1 << 20),
        16_383..16_385,
        16_384..(1 << 20),
        (1 << 20) - 20_000..(1 << 20),
        5..40_000,
    ] {
        let got = Mutex::new(Vec::new());
        let sink = |b: Bytes| got.lock().unwrap().extend_from_slice(&b);
        let n = c2
            .fetch_head_first(&target(&b), &cid, 1 << 20, range.clone(), &sink)
            .await
            .unwrap();
        assert_eq!(n, range.end - range.start);
        let got = got.into_inner().unwrap();
        assert!(
            got[..] == data[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    // "Has" on the data plane, as readers ask it; too many CIDs at once is refused.
    let missing = cids::raw(b"missing");
    let held = client().has(&target(&b), &[cid, missing]).await.unwrap();
    assert_eq!(held, vec![Holding::Intact(1 << 20), Holding::Absent]);
    let too_many = vec![missing; cairn_wire::protocol::MAX_DATA_HAS + 1];
    let err = client().has(&target(&b), &too_many).await.unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");

    // Control plane from node c to node b: info, has, list.
    let b_peer: PeerId = b.info.peer_id.parse().unwrap();
    let ControlResponse::Info(info) = c.swarm.request(b_peer, ControlRequest::Info).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(info.used, 1 << 20);
    assert_eq!(info.shards, 1);
    // The room on its disk is part of what a node says of itself, and bounds its free space.
    let room = info.disk_room.expect("a node reports its disk's room");
    assert_eq!(info.free(), room.min(info.capacity - info.used));
    assert_eq!(info.data_addrs, vec![b.info.data_addr]);
    let missing = cids::raw(b"missing");
    let ControlResponse::Has(has) = c
        .swarm
        .request(b_peer, ControlRequest::Has(vec![cid, missing]))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(has, vec![Holding::Intact(1 << 20), Holding::Absent]);
    let ControlResponse::List { shards, more } = c
        .swarm
        .request(
            b_peer,
            ControlRequest::List {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((shards, more), (vec![(cid, 1 << 20)], false));

    // Not held elsewhere.
    let err = client()
        .fetch(&target(&c), &cid, None, None)
        .await
        .map(|b| b.len())
        .unwrap_err();
    assert!(
        matches!(err, DataError::Remote { ref error, .. } if error.code == ErrorCode::NotFound),
        "{err}"
    );

    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_bytes_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let (cid, data) = shard(300_000, 2);
    let mut bad = data.to_vec();
    bad[150_000] ^= 0x01;
    let err = client()
        .store(&target(&n), &cid, Bytes::from(bad))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DataError::Remote { ref error, .. } if error.code == ErrorCode::HashMismatch),
        "{err}"
    );
    assert_eq!(n.store.stats().shards, 0);
    // A manifest CID is not a shard CID.
    let err = client()
        .store(&target(&n), &cids::dag_cbor(&data), data.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DataError::Remote { ref error, .. } if error.code == ErrorCode::BadRequest),
        "{err}"
    );
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_and_full_node_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 2_500_000).await;
    let (cid, data) = shard(1 << 20, 3);
    let c = client();
    c.store(&target(&n), &cid, data.clone()).await.unwrap();
    let (cid2, data2) = shard(1 << 20, 4);
    c.store(&target(&n), &cid2, data2.clone()).await.unwrap();
    let (cid3, data3) = shard(1 << 20, 5);
    let err = c.store(&target(&n), &cid3, data3).await.unwrap_err();
    match &err {
        DataError::Remote { error, .. } => {
            assert_eq!(error.code, ErrorCode::NoSpace);
            assert!(error.message.contains("full"), "{}", error.message);
        }
        other => panic!("expected no-space, got {other}"),
    }
    let peer = n.info.peer_id.clone();
    n.shutdown().await.unwrap();

    let n = start(dir.path(), None, 2_500_000).await;
    assert_eq!(n.info.peer_id, peer, "identity survives restarts");
    assert_eq!(n.store.stats().used, 2 << 20);
    assert_eq!(
        client().fetch(&target(&n), &cid, None, None).await.unwrap(),
        data
    );
    assert_eq!(
        client()
            .fetch(&target(&n), &cid2, None, None)
            .await
            .unwrap(),
        data2
    );
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_is_full_refuses_shards_and_offers_no_room() {
    let dir = tempfile::tempdir().unwrap();
    let key = identity::create(&dir.path().join(identity::KEY_FILE)).unwrap();
    let mut cfg = config(None, 1 << 30);
    // More than any disk here has free: the node sees its disk as full, as a full disk would be.
    cfg.storage.disk_reserve = Size(1 << 60);
    let n = RunningNode::start(dir.path(), &cfg.check().unwrap(), key, None)
        .await
        .unwrap();
    let (cid, data) = shard(1 << 20, 8);
    let err = client().store(&target(&n), &cid, data).await.unwrap_err();
    match &err {
        DataError::Remote { error, .. } => {
            assert_eq!(error.code, ErrorCode::NoSpace, "{error}");
            assert!(
                error.message.contains("the disk holding")
                    && error.message.contains("storage.disk_reserve"),
                "{}",
                error.message
            );
        }
        other => panic!("expected no-space, got {other}"),
    }
    assert_eq!(n.store.stats().shards, 0);
    // What it tells peers and operators: no room, whatever the capacity says.
    let (code, status) =
        cairn_wire::admin::http_get(n.info.admin, "/status", std::time::Duration::from_secs(5))
            .await
            .unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["free"], 0, "{status}");
    assert_eq!(status["capacity"], 1u64 << 30);
    assert!(status["disk_available"].as_u64().unwrap() > 0, "{status}");
    n.shutdown().await.unwrap();
}

/// A draining node is leaving: it refuses new shards as a full one does (writers move on),
/// and takes them again once the drain is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_takes_no_new_shards() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    std::fs::write(cairn_node::repair::drain::marker(dir.path()), b"").unwrap();
    let (cid, data) = shard(300_000, 9);
    match client().store(&target(&n), &cid, data.clone()).await {
        Err(DataError::Remote { error, .. }) => {
            assert_eq!(error.code, ErrorCode::NoSpace, "{error}");
            assert!(error.message.contains("draining"), "{}", error.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(n.store.stats().shards, 0);
    std::fs::remove_file(cairn_node::repair::drain::marker(dir.path())).unwrap();
    client().store(&target(&n), &cid, data).await.unwrap();
    assert_eq!(n.store.stats().shards, 1);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_are_rejected_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let t = target(&n);
    let c = client();
    let cid = cids::raw(b"x");
    // Malformed or over-limit headers: an error answer naming the problem.
    let refused: Vec<Vec<u8>> = vec![
        // Declared header length far over the limit.
        (u32::MAX).to_le_bytes().to_vec(),
        // Valid length, garbage CBOR.
        [8u32.to_le_bytes().to_vec(), vec![0xff; 8]].concat(),
        // A well-formed frame of the wrong message type.
        encode_frame(&"hello"),
        // A shard larger than any shard may be.
        encode_frame(&DataRequest::Store { cid, len: 1 << 40 }),
        // A range that is empty.
        encode_frame(&DataRequest::Fetch {
            cid,
            range: Some((9, 9)),
        }),
    ];
    for bytes in refused {
        let answer = c.raw_exchange(&t, &bytes).await.unwrap();
        assert!(answer.len() > 4, "no answer to {bytes:?}");
        let response: DataResponse = decode_body(&answer[4..]).unwrap();
        match response {
            DataResponse::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message),
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // Streams that end early (no header, a body that never comes): closed without an answer,
    // and without a hang (raw_exchange has a deadline and would fail).
    for bytes in [
        Vec::new(),
        encode_frame(&DataRequest::Store { cid, len: 1000 }),
    ] {
        let answer = c.raw_exchange(&t, &bytes).await.unwrap();
        assert!(answer.is_empty());
    }
    // Still healthy.
    let (cid, data) = shard(70_000, 9);
    c.store(&t, &cid, data.clone()).await.unwrap();
    assert_eq!(c.fetch(&t, &cid, None, None).await.unwrap(), data);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stalls_is_dropped_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let t = target(&n);
    let c = client();
    let (cid, data) = shard(1 << 20, 3);
    // A store whose body stops after 1,000 of its 1 MiB, the stream left open.
    let (mut send, mut recv) = c.raw_stream(&t).await.unwrap();
    let header = encode_frame(&DataRequest::Store {
        cid,
        len: data.len() as u64,
    });
    send.write_all(&header).await.unwrap();
    send.write_all(&data[..1000]).await.unwrap();
    let started = Instant::now();
    // The node gives up on it once it falls behind the minimum body rate (after 5 s of
    // grace), far inside the 120 s request limit, and stores nothing.
    let _ = recv.read_to_end(1 << 16).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(40),
        "the node dropped the stalled upload after {took:?}"
    );
    drop(send);
    assert!(matches!(
        c.fetch(&t, &cid, None, None).await,
        Err(DataError::Remote { error, .. }) if error.code == ErrorCode::NotFound
    ));
    // The same shard, sent whole, is stored.
    c.store(&t, &cid, data.clone()).await.unwrap();
    assert_eq!(c.fetch(&t, &cid, None, None).await.unwrap(), data);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_its_answer_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let t = target(&n);
    let c = client();
    // Twice the 16 MiB a stream may have in flight: the node must wait for the reader.
    let (big, data) = shard(32 << 20, 5);
    c.store(&t, &big, data.clone()).await.unwrap();
    let (mut send, mut recv) = c.raw_stream(&t).await.unwrap();
    let ask = encode_frame(&DataRequest::Fetch {
        cid: big,
        range: None,
    });
    send.write_all(&ask).await.unwrap();
    send.finish().unwrap();
    // While that answer waits, others are served.
    let (small, small_data) = shard(100_000, 6);
    c.store(&t, &small, small_data.clone()).await.unwrap();
    assert_eq!(c.fetch(&t, &small, None, None).await.unwrap(), small_data);
    tokio::time::sleep(data::STALL_TIMEOUT + Duration::from_secs(3)).await;
    // Reading now: what was in flight arrives, then the stream ends in a reset, short of the
    // shard, because the node gave up on this reader rather than hold the send for 120 s.
    let mut got = 0usize;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), recv.read_chunk(1 << 20, true)).await {
            Ok(Ok(Some(chunk))) => got += chunk.bytes.len(),
            Ok(Ok(None)) => break None,
            Ok(Err(e)) => break Some(e.to_string()),
            Err(_) => break Some("no bytes for 10 s".into()),
        }
    };
    let reset = format!("stream reset by peer: error {RESET_ABORTED}");
    assert!(
        end.as_deref() == Some(reset.as_str()),
        "{end:?} after {got} bytes"
    );
    assert!(got < data.len(), "{got} bytes arrived");
    // Asked for again and read, it comes whole.
    assert_eq!(c.fetch(&t, &big, None, None).await.unwrap(), data);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_hold_more_than_its_share_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let t = target(&n);
    let (cid, data) = shard(10_000, 3);
    client().store(&t, &cid, data.clone()).await.unwrap();
    // One key, many connections (each client holds one per node).
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut held = Vec::new();
    for _ in 0..data::MAX_CONNECTIONS_PER_PEER {
        let c = data::Client::bind(key.clone()).unwrap();
        assert_eq!(c.fetch(&t, &cid, None, None).await.unwrap(), data);
        held.push(c);
    }
    // One more is turned away, and says why; another peer is served as before.
    let extra = data::Client::bind(key.clone()).unwrap();
    let err = extra.fetch(&t, &cid, None, None).await.unwrap_err();
    assert!(err.to_string().contains("too many connections"), "{err}");
    assert_eq!(client().fetch(&t, &cid, None, None).await.unwrap(), data);
    // A connection given up frees its place.
    held.pop();
    let started = Instant::now();
    loop {
        let again = data::Client::bind(key.clone()).unwrap();
        match again.fetch(&t, &cid, None, None).await {
            Ok(got) => {
                assert_eq!(got, data);
                break;
            }
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                assert!(e.to_string().contains("too many connections"), "{e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the place was never freed: {e}"),
        }
    }
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_from_a_stopped_node_fails_fast_and_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let t = target(&n);
    let (cid, data) = shard(10_000, 6);
    let c = client();
    c.store(&t, &cid, data).await.unwrap();
    n.shutdown().await.unwrap();
    let started = Instant::now();
    let err = client()
        .fetch(&t, &cid, None, None)
        .await
        .map(|b| b.len())
        .unwrap_err();
    assert!(matches!(err, DataError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("is it running"), "{err}");
    // Generous bound: the connect timeout is 3 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // The client that had a connection open also fails rather than hangs.
    let err = c
        .fetch(&t, &cid, None, None)
        .await
        .map(|b| b.len())
        .unwrap_err();
    assert!(err.peer().is_some(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_to_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let t = target(&n);
    let c = client();
    let shards: Vec<(Cid, Bytes)> = (0..32).map(|i| shard(256 * 1024 + i, i as u64)).collect();
    let stores = shards.iter().map(|(cid, d)| c.store(&t, cid, d.clone()));
    for r in futures::future::join_all(stores).await {
        r.unwrap();
    }
    let fetches = shards.iter().map(|(cid, _)| c.fetch(&t, cid, None, None));
    for (r, (_, d)) in futures::future::join_all(fetches)
        .await
        .into_iter()
        .zip(&shards)
    {
        assert_eq!(&r.unwrap(), d);
    }
    assert_eq!(n.store.stats().shards, 32);
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_must_prove_the_peer_id_that_was_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, 1 << 30).await;
    let impostor = Target {
        peer: libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id(),
        addr: n.info.data_addr,
    };
    let err = client()
        .fetch(&impostor, &cids::raw(b"x"), None, None)
        .await
        .map(|b| b.len())
        .unwrap_err();
    assert!(matches!(err, DataError::Unreachable { .. }), "{err}");
    n.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_client_is_not_in_the_routing_table() {
    // Storage proofs audit, and gossip to, the peers in the routing table only: a client (a
    // CLI run, a gateway, a trainer) is connected for a while but is no storage node.
    let dir = tempfile::tempdir().unwrap();
    let a = start(&dir.path().join("a"), None, 1 << 30).await;
    let boot = a.info.listen[0].clone();
    let b = start(&dir.path().join("b"), Some(&boot), 1 << 30).await;
    wait_for_peers(&[&a, &b], 1).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let key = libp2p::identity::Keypair::generate_ed25519();
    let me = key.public().to_peer_id();
    let swarm = cairn_wire::swarm::Swarm::start(
        key,
        cairn_wire::swarm::Role::Client,
        &[],
        &[boot.parse().unwrap()],
        None,
        "test-client".into(),
        cairn_wire::swarm::SwarmLimits::default(),
        cancel.clone(),
    )
    .await
    .unwrap();
    let a_peer: PeerId = a.info.peer_id.parse().unwrap();
    let ControlResponse::Info(_) = swarm.request(a_peer, ControlRequest::Info).await.unwrap()
    else {
        panic!()
    };
    // Long enough for identify to have told node a what the client speaks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peers = a.swarm.peers().await.unwrap();
    let client = peers.iter().find(|p| p.peer_id == me.to_string());
    assert!(
        client.is_some_and(|p| p.connected && !p.in_routing_table()),
        "{peers:?}"
    );
    let node = peers.iter().find(|p| p.peer_id == b.info.peer_id);
    assert!(node.is_some_and(|p| p.in_routing_table()), "{peers:?}");
    swarm.shutdown();
    cancel.cancel();
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}
