//! `Network` as a long-lived client (the gateway) uses it: one connection, views refreshed as
//! nodes leave and come back, against a real devnet of `cairn-node` processes on 127.0.0.1.

mod common;

use cairn_chunker::{Cid, ObjectManifest};
use cairn_client::error::ClientError;
use cairn_client::get::{
    Incidents, STRIPES_IN_FLIGHT, Sink, fetch_manifest, object_manifest, read_object,
    read_object_to, read_object_to_vec,
};
use cairn_client::network::Network;
use cairn_client::put::{Input, ObjectReport, PutOptions, put_object};
use common::{Net, noise};
use libp2p::Multiaddr;
use std::sync::Arc;
use std::time::Duration;

fn peers(net: &Net) -> Vec<Multiaddr> {
    let nodes = &net.devnet().state.nodes;
    nodes.iter().map(|n| n.multiaddr.parse().unwrap()).collect()
}

async fn put(
    net: &Network,
    key: &ed25519_dalek::SigningKey,
    data: Vec<u8>,
    opts: &PutOptions,
) -> Result<ObjectReport, ClientError> {
    put_object(
        Some(net),
        key,
        Input::Bytes(data.into()),
        opts,
        Arc::new(|_| {}),
    )
    .await
}

async fn read(net: &Network, manifest: &ObjectManifest) -> Result<Vec<u8>, ClientError> {
    read_object_to_vec(net, manifest, &Incidents::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_views_keep_the_connection_and_follow_nodes_leaving_and_returning() {
    let mut net = Net::start(6).await;
    let data = noise(3 << 20, 7);
    let cid = net
        .put_bytes(&data, &["--k", "4", "--m", "2"])
        .parse()
        .unwrap();
    let peers = peers(&net);
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

    // It comes back: a view after that lists it again, once the swarm has found it (its new
    // address reaches the client through Kademlia; seconds, more on a loaded machine).
    net.devnet_mut().restart_node(2).await.unwrap();
    let mut fourth = third.refresh().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fourth.nodes().len() < 6 && std::time::Instant::now() < deadline {
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

/// Where a manifest goes: its keeper ranking over the network's nodes.
fn manifest_rank(cid: &cairn_chunker::Cid, view: &Network) -> Vec<usize> {
    let ids: Vec<Vec<u8>> = view
        .candidates()
        .into_iter()
        .map(|c| c.id().to_vec())
        .collect();
    cairn_policy::keeper::ranking(&cid.to_bytes(), &ids)
}

/// Readers do not ask every node where shards are before a read: they ask the node placement
/// points at. An object stored while a node was away has shards elsewhere; once the node is
/// back, placement points at it, it answers "not here", and the reader looks them up and reads
/// on, with no incident reported against the node that was simply not holding them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_find_shards_placement_did_not_predict() {
    let mut net = Net::start(6).await;
    let peers = peers(&net);
    net.devnet_mut().stop_node(3).await;
    let five = Network::connect(&peers[..1]).await.unwrap();
    assert_eq!(five.nodes().len(), 5);
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let mut opts = PutOptions::default();
    opts.params.erasure.shard_size = 64 << 10;
    // 24 stripes of 2+2: placement would have chosen the missing node for most of them.
    let (k, m) = (2, 2);
    opts.params.erasure.k = k;
    opts.params.erasure.m = m;
    let data = noise(24 * usize::from(k) * (64 << 10) - 1000, 11);
    let report = put(&five, &key, data.clone(), &opts).await.unwrap();
    drop(five);
    net.devnet_mut().restart_node(3).await.unwrap();
    let mut six = Network::connect(&peers[..1]).await.unwrap();
    for _ in 0..20 {
        if six.nodes().len() == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        six = six.refresh().await.unwrap();
    }
    assert_eq!(six.nodes().len(), 6);
    let manifest = report.manifest;
    let stripes: Vec<Vec<Cid>> = manifest
        .stripes
        .iter()
        .map(|s| s.stored_shards().map(|(_, r)| r.cid).collect())
        .collect();
    let guessed = six.guess(&stripes);
    // The truth, from another client (asking through `six` would teach it the answers).
    let other = Network::connect(&peers[..1]).await.unwrap();
    let all: Vec<Cid> = stripes.iter().flatten().copied().collect();
    let truth = other.locate(&all).await;
    let peer = |n: &Network, i: &[usize]| -> Vec<String> {
        i.iter().map(|&i| n.nodes()[i].peer().to_string()).collect()
    };
    let wrong = all
        .iter()
        .filter(|c| peer(&six, guessed.intact(c)) != peer(&other, truth.intact(c)))
        .count();
    assert!(wrong > 0, "every guess was right: the test proves nothing");
    drop(other);
    let incidents = Incidents::default();
    let got = read_object_to_vec(&six, &manifest, &incidents)
        .await
        .unwrap();
    assert!(got == data);
    assert!(incidents.list().is_empty(), "{:?}", incidents.list());
    drop(six);
    net.stop().await;
}

/// A manifest goes to the `m + 1` nodes placement ranks first for it, all at once; a ranked
/// node that does not answer is replaced by the next in rank, so the manifest still ends up on
/// `m + 1` live nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_reach_enough_nodes_when_ranked_ones_are_down() {
    use cairn_wire::protocol::Holding;

    let mut net = Net::start(6).await;
    let peers = peers(&net);
    let six = Network::connect(&peers[..1]).await.unwrap();
    assert_eq!(six.nodes().len(), 6);
    let stopped: Vec<String> = [2, 5]
        .iter()
        .map(|&i| net.devnet().state.nodes[i].peer_id.clone())
        .collect();
    for i in [2, 5] {
        net.devnet_mut().stop_node(i).await;
    }
    let down = |i: usize| stopped.contains(&six.nodes()[i].peer().to_string());
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let opts = PutOptions::default();
    let copies = usize::from(opts.params.erasure.m) + 1;
    // A small (inline) object whose manifest placement ranks a stopped node among the first.
    let mut found = None;
    for seed in 0..64 {
        let data = noise(100, seed);
        let offline = put_object(
            None,
            &key,
            Input::Bytes(data.clone().into()),
            &opts,
            Arc::new(|_| {}),
        );
        let cid = offline.await.unwrap().cid;
        let ranked = manifest_rank(&cid, &six);
        if ranked[..copies].iter().any(|&i| down(i)) {
            found = Some((data, cid));
            break;
        }
    }
    let (data, cid) = found.expect("some object ranks a stopped node first");
    let report = put(&six, &key, data, &opts).await.unwrap();
    assert_eq!(report.cid, cid);
    let live: Vec<usize> = manifest_rank(&cid, &six)
        .into_iter()
        .filter(|&i| !down(i))
        .collect();
    for (n, &i) in live.iter().enumerate() {
        let held = six
            .data()
            .has(&six.nodes()[i].target, &[cid])
            .await
            .unwrap();
        let expected = n < copies;
        assert_eq!(
            matches!(held[..], [Holding::Intact(_)]),
            expected,
            "live node {n} in rank order: {held:?}"
        );
    }
    drop(six);
    net.stop().await;
}

/// `err` says a 4+2 stripe cannot be placed because only five of six nodes have room.
fn assert_five_of_six_have_room(err: &ClientError) {
    assert!(
        matches!(
            err,
            ClientError::NetworkFull {
                room: 5,
                nodes: 6,
                need: 6,
                ..
            }
        ),
        "{err}"
    );
}

/// Restarts node `i` with `from` replaced by `to` in its config.toml.
async fn reconfigure(net: &mut Net, i: usize, from: &str, to: &str) {
    let config = net.devnet().state.nodes[i].data_dir.join("config.toml");
    net.devnet_mut().stop_node(i).await;
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&config, text.replace(from, to)).unwrap();
    net.devnet_mut().restart_node(i).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_network_refuses_a_put_before_storing_any_shard() {
    let mut net = Net::start(6).await;
    // Node 3's disk is "full": it must keep more free than any disk here has.
    reconfigure(
        &mut net,
        3,
        "disk_reserve = \"1GiB\"",
        "disk_reserve = \"1000000TiB\"",
    )
    .await;
    let full_peer = net.devnet().state.nodes[3].peer_id.clone();

    let six = Network::connect(&peers(&net)).await.unwrap();
    assert_eq!(six.nodes().len(), 6);
    let nodes = net.ok(&["--json", "nodes"]);
    let nodes: serde_json::Value = serde_json::from_str(nodes.trim()).unwrap();
    assert_eq!(nodes["full"], 1, "{nodes}");

    // 4+2 needs six nodes with room and only five have it: refused before any shard is stored,
    // where before five shards were stored and the sixth failed.
    let key = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    let data = noise(5 << 20, 11);
    let err = put(&six, &key, data.clone(), &PutOptions::default())
        .await
        .unwrap_err();
    assert_five_of_six_have_room(&err);
    // The library says what happened; the CLI adds where to look and what to do.
    let file = net.path("full.bin");
    std::fs::write(&file, &data).unwrap();
    let cli = net.cairn(&["put", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success(), "{said}");
    assert!(
        said.contains("the network is full: only 5 of 6 nodes have room")
            && said.contains("`cairn nodes` shows each node's space"),
        "{said}"
    );
    let nodes = net.ok(&["--json", "nodes"]);
    let nodes: serde_json::Value = serde_json::from_str(nodes.trim()).unwrap();
    assert_eq!(nodes["shards"], 0, "nothing stored: {nodes}");

    // 3+2 fits on the five with room, and the full node gets nothing.
    let mut opts = PutOptions::default();
    opts.params.erasure.k = 3;
    let report = put(&six, &key, data.clone(), &opts).await.unwrap();
    let manifest = object_manifest(&six, &report.cid).await.unwrap();
    assert_eq!(read(&six, &manifest).await.unwrap(), data);
    let nodes = net.ok(&["--json", "nodes"]);
    let nodes: serde_json::Value = serde_json::from_str(nodes.trim()).unwrap();
    for n in nodes["nodes"].as_array().unwrap() {
        if n["peer_id"] == full_peer.as_str() {
            assert_eq!(n["shards"], 0, "the full node took a shard: {nodes}");
        }
    }
    drop(six);
    net.stop().await;
}

/// A node's refused data requests, from its metrics.
async fn refusals(net: &Net, node: usize) -> u64 {
    let admin = net.devnet().state.nodes[node].admin;
    let (code, text) =
        cairn_wire::admin::http_get(admin, "/metrics", std::time::Duration::from_secs(5))
            .await
            .unwrap();
    assert_eq!(code, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("cairn_data_request_errors_total "))
        .unwrap_or_else(|| panic!("no request error count: {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A node that said it had room and then refused shards for lack of it is passed over by the
/// uploads that follow (as the gateway's long-lived view would otherwise keep offering it
/// shards until its next refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_refuses_shards_for_lack_of_space_is_passed_over() {
    let mut net = Net::start(6).await;
    reconfigure(&mut net, 3, "capacity = \"4GiB\"", "capacity = \"3MiB\"").await;

    // One view, as the gateway keeps: node 3 said it had 3 MiB free, room for a shard.
    let six = Network::connect(&peers(&net)).await.unwrap();
    assert_eq!(six.nodes().len(), 6);
    let key = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    // 4+2 on six nodes puts a shard of every stripe on node 3: it takes three, then refuses.
    let err = put(&six, &key, noise(24 << 20, 31), &PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Upload { .. }), "{err}");
    let shards = |net: &Net| {
        let nodes = net.ok(&["--json", "nodes"]);
        serde_json::from_str::<serde_json::Value>(nodes.trim()).unwrap()["shards"].clone()
    };
    // Stores the failed upload had already sent may still land or be refused: wait until
    // both counts settle.
    let mut seen = (shards(&net), refusals(&net, 3).await);
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = (shards(&net), refusals(&net, 3).await);
        if now == seen {
            break;
        }
        seen = now;
    }
    let (stored, refused) = seen;
    assert!(refused > 0, "node 3 never refused a shard");
    // The next upload knows node 3 is full: refused before a shard is stored, and node 3 is
    // not asked again (before, it was offered every stripe's shard and refused each).
    let err = put(&six, &key, noise(12 << 20, 32), &PutOptions::default())
        .await
        .unwrap_err();
    assert_five_of_six_have_room(&err);
    assert_eq!(
        shards(&net),
        stored,
        "shards were stored for a stripe that cannot fit"
    );
    // 3+2 fits on the other five.
    let mut opts = PutOptions::default();
    opts.params.erasure.k = 3;
    let data = noise(12 << 20, 33);
    let r = put(&six, &key, data.clone(), &opts).await.unwrap();
    let manifest = object_manifest(&six, &r.cid).await.unwrap();
    assert_eq!(read(&six, &manifest).await.unwrap(), data);
    assert_eq!(
        refusals(&net, 3).await,
        refused,
        "a node known to be full was offered shards again"
    );
    drop(six);
    net.stop().await;
}

/// A writer that stops taking bytes for a while, twice, as a slow S3 client does.
struct PausingWriter {
    out: Vec<u8>,
    writes: usize,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncWrite for PausingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(p) = self.pause.as_mut() {
            std::task::ready!(p.as_mut().poll(cx));
            self.pause = None;
        } else if matches!(self.writes, 2 | 12) {
            // Three seconds: twice the hedge delay, while the fetches already asked for wait.
            self.writes += 1;
            self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_secs(3))));
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        self.writes += 1;
        self.out.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_pauses_does_not_get_nodes_blamed_for_it() {
    let net = Net::start(6).await;
    let data = noise(24 << 20, 13);
    let cid = net
        .put_bytes(&data, &["--k", "4", "--m", "2"])
        .parse()
        .unwrap();
    let view = Network::connect(&peers(&net)).await.unwrap();
    let manifest = object_manifest(&view, &cid).await.unwrap();
    let incidents = Incidents::default();
    let mut out = PausingWriter {
        out: Vec::new(),
        writes: 0,
        pause: None,
    };
    read_object(
        &view,
        &manifest,
        None,
        &mut out,
        Arc::new(|_| {}),
        &incidents,
    )
    .await
    .unwrap();
    assert!(out.out == data, "the bytes differ");
    assert!(
        out.writes > 12,
        "the writer paused twice ({} writes)",
        out.writes
    );
    // The nodes answered at once; only the reader was slow. Blaming them would send every
    // other reader of this view around them for 15 s.
    assert_eq!(
        incidents.list(),
        vec![],
        "nodes blamed for the reader's pauses"
    );
    drop(view);
    net.stop().await;
}

/// Payload bytes all nodes have sent on their data planes, from their metrics.
async fn bytes_sent(net: &Net) -> u64 {
    let mut total = 0;
    for n in &net.devnet().state.nodes {
        let (code, text) = cairn_wire::admin::http_get(n.admin, "/metrics", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(code, 200);
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("cairn_data_bytes_out_total "))
            .unwrap_or_else(|| panic!("no bytes-out count: {text}"))
            .trim()
            .parse::<u64>()
            .unwrap();
    }
    total
}

/// An output that takes each piece slowly (20 ms) until it is told to hurry.
struct SlowOutput {
    got: Vec<u8>,
    taken: Arc<std::sync::atomic::AtomicU64>,
    hurry: tokio::sync::watch::Receiver<bool>,
}

impl Sink for SlowOutput {
    async fn put(&mut self, bytes: bytes::Bytes) -> Result<(), ClientError> {
        if !*self.hurry.borrow() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got.extend_from_slice(&bytes);
        self.taken
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// A read whose output is slow (a slow disk, an HTTP client that reads slowly) fetches only a
/// few stripes ahead of it, so what it holds in memory is bounded by those stripes, not by the
/// object (or the 64-stripe lookup window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_output_stops_fetches_only_a_few_stripes_ahead() {
    let net = Net::start(6).await;
    let view = Network::connect(&peers(&net)).await.unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    let mut opts = PutOptions::default();
    opts.params.erasure.shard_size = 64 << 10;
    opts.params.erasure.k = 4;
    opts.params.erasure.m = 2;
    let stripe = 4 * (64 << 10);
    let data = noise(40 * stripe, 21);
    let manifest = put(&view, &key, data.clone(), &opts)
        .await
        .unwrap()
        .manifest;
    assert_eq!(manifest.stripes.len(), 40);

    let before = bytes_sent(&net).await;
    let (hurry, hurry_rx) = tokio::sync::watch::channel(false);
    let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let out_taken = taken.clone();
    let reader = tokio::spawn(async move {
        let mut out = SlowOutput {
            got: Vec::new(),
            taken: out_taken,
            hurry: hurry_rx,
        };
        let incidents = Incidents::default();
        read_object_to(
            &view,
            &manifest,
            None,
            &mut out,
            Arc::new(|_| {}),
            &incidents,
        )
        .await
        .map(|_| out.got)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let took = taken.load(std::sync::atomic::Ordering::SeqCst);
    let sent = bytes_sent(&net).await - before;
    assert!(
        took < data.len() as u64 / 2,
        "the output was not slow: {took}"
    );
    // Ahead of the output: the stripe being written and up to STRIPES_IN_FLIGHT more, with
    // their outboards; not every stripe a 64-stripe window would let run ahead.
    let allowed = (STRIPES_IN_FLIGHT as u64 + 1) * stripe as u64 * 11 / 10;
    assert!(
        sent.saturating_sub(took) <= allowed,
        "{sent} bytes fetched for an output that took {took} (at most {allowed} ahead expected)"
    );
    hurry.send_replace(true);
    let got = reader.await.unwrap().unwrap();
    assert!(got == data, "the bytes differ");
    net.stop().await;
}

/// `verify` holds a dataset's entries to the objects they name: a whole object must have the
/// entry's size and BLAKE3, a pack slice must lie in the pack and hash to the entry's BLAKE3
/// (as `get` requires), even when every object itself is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_that_a_datasets_files_are_what_its_entries_say() {
    use cairn_chunker::DatasetManifest;
    use cairn_chunker::manifest::{DatasetEntry, Location};
    let net = Net::start(6).await;
    let view = Network::connect(&peers(&net)).await.unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut opts = PutOptions::default();
    opts.params.erasure.shard_size = 64 << 10;
    let object = noise(300 << 10, 31);
    let pack = noise(100 << 10, 32);
    let object_cid = put(&view, &key, object.clone(), &opts).await.unwrap().cid;
    let pack_cid = put(&view, &key, pack.clone(), &opts).await.unwrap().cid;
    let entry = |size: usize, hash: blake3::Hash, location: Location| DatasetEntry {
        size: size as u64,
        blake3: hash,
        location,
        meta: Default::default(),
    };
    let slice = |offset: usize, len: usize, hash: blake3::Hash| {
        let at = Location::Packed {
            pack: pack_cid,
            offset: offset as u64,
        };
        entry(len, hash, at)
    };
    let mut d = DatasetManifest::new();
    let whole = Location::Object(object_cid);
    let good = [
        (
            "good.bin",
            entry(object.len(), blake3::hash(&object), whole.clone()),
        ),
        (
            "in-pack.txt",
            slice(1000, 500, blake3::hash(&pack[1000..1500])),
        ),
    ];
    let bad = [
        (
            "wrong.bin",
            entry(object.len(), blake3::hash(b"other"), whole),
        ),
        ("bad-slice.txt", slice(5, 5, blake3::hash(b"zzzzz"))),
        ("outside.txt", slice(pack.len() - 2, 10, blake3::hash(b"x"))),
    ];
    for (path, e) in good.iter().chain(&bad) {
        d.entries.insert((*path).to_string(), e.clone());
    }
    d.validate().unwrap();
    let (cid, bytes) = (d.cid(), d.to_bytes());
    let kind = cairn_wire::protocol::ManifestKind::Dataset;
    cairn_client::put::publish_manifest(&view, &key, &cid, kind, &bytes, &opts, None)
        .await
        .unwrap();

    let report = cairn_client::verify::verify(&view, &cid).await;
    let problems = report.problems.join("\n");
    for (path, _) in &bad {
        let named = report
            .problems
            .iter()
            .filter(|p| p.starts_with(path))
            .count();
        assert_eq!(named, 1, "{path} not reported once:\n{problems}");
    }
    assert_eq!(report.problems.len(), bad.len(), "{problems}");
    assert_eq!(report.manifests, 3);
    drop(view);
    net.stop().await;
}

/// A node frozen during an upload (SIGSTOP: its socket stays open, nothing answers, as with a
/// hung host) is noticed within seconds, long before the transport's idle timeout: its shards
/// go to the next-ranked nodes beside the stalled stores (never two shards of a stripe on one
/// node), later stripes and the manifest pass it over, and no store is left to fail on it. The
/// same holds for a manifest's stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_silent_mid_upload_is_stored_around() {
    let net = Net::start(8).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let mut opts = PutOptions::default();
    opts.params.erasure.shard_size = 64 << 10;
    opts.params.erasure.k = 4;
    opts.params.erasure.m = 2;
    // A view whose connections to all 8 nodes are open: 24 stripes of 4+2 on 8 nodes give
    // every node shards. With every node answering, nothing is noted.
    let connected = || async {
        // Every node in the view: one just resumed from a freeze may miss the 3 s a view gives
        // a node to answer, under load, and would then not be asked at all.
        let mut view = Network::connect(&peers(&net)).await.unwrap();
        for _ in 0..10 {
            if view.nodes().len() == 8 {
                break;
            }
            view = Network::connect(&peers(&net)).await.unwrap();
        }
        assert_eq!(view.nodes().len(), 8, "a node is missing from the view");
        let warm = put(&view, &key, noise(24 * 4 * (64 << 10), 21), &opts)
            .await
            .unwrap();
        assert_eq!(warm.incidents, vec![], "healthy nodes were noted");
        view
    };
    // The node first in `data`'s manifest ranking (the dry run gives its CID).
    let first_for = |view: &Network, data: &[u8]| {
        let dry = futures::executor::block_on(put_object(
            None,
            &key,
            Input::Bytes(data.to_vec().into()),
            &opts,
            Arc::new(|_| {}),
        ))
        .unwrap();
        let first = manifest_rank(&dry.cid, view)[0];
        let peer = view.nodes()[first].peer();
        let nodes = &net.devnet().state.nodes;
        let index = nodes.iter().position(|n| n.peer_id == peer.to_string());
        (dry.cid, peer, index.unwrap())
    };
    let failed = |report: &ObjectReport| -> Vec<(libp2p::PeerId, String)> {
        let notes = report.incidents.iter();
        notes
            .filter(|(_, w)| w.contains("not stored"))
            .cloned()
            .collect()
    };

    // Shards: two nodes freeze. The stores that wait on them are raced and lost, none runs
    // into a timeout (the idle timeout would fail each after 10 s, with a note each).
    let view = connected().await;
    let data = noise(24 * 4 * (64 << 10) - 777, 22);
    let (cid, frozen_peer, frozen) = first_for(&view, &data);
    let second = (frozen + 1) % 8;
    net.devnet().pause_node(frozen);
    net.devnet().pause_node(second);
    let report = put(&view, &key, data.clone(), &opts).await;
    net.devnet().resume_node(frozen);
    net.devnet().resume_node(second);
    let report = report.unwrap();
    assert_eq!(report.cid, cid);
    assert_eq!(failed(&report), vec![]);
    let silent: Vec<_> = report
        .incidents
        .iter()
        .filter(|(p, w)| *p == frozen_peer && w.contains("nothing heard"))
        .collect();
    assert!(!silent.is_empty(), "{:?}", report.incidents);
    // By the time the manifest was stored, the frozen node was known to be silent: its first
    // choice was passed over, not waited on.
    assert!(
        silent.iter().all(|(_, w)| w.starts_with("shard ")),
        "{silent:?}"
    );
    assert_eq!(report.manifest_copies, 3);
    let fresh = Network::connect(&peers(&net)).await.unwrap();
    assert!(read(&fresh, &report.manifest).await.unwrap() == data);
    // Where the shards went when two of a stripe's nodes froze: each to another node, so that
    // losing any one node still costs each stripe one shard at most.
    let stripes: Vec<Vec<Cid>> = report
        .manifest
        .stripes
        .iter()
        .map(|s| s.stored_shards().map(|(_, r)| r.cid).collect())
        .collect();
    let all: Vec<Cid> = stripes.iter().flatten().copied().collect();
    let found = fresh.locate(&all).await;
    for (s, cids) in stripes.iter().enumerate() {
        let mut per_node = std::collections::HashMap::<usize, usize>::new();
        for cid in cids {
            assert!(!found.intact(cid).is_empty(), "stripe {s}: {cid} not found");
            for &n in found.intact(cid) {
                *per_node.entry(n).or_default() += 1;
            }
        }
        assert!(
            per_node.values().all(|&c| c == 1),
            "stripe {s}: {per_node:?}"
        );
    }
    drop((view, fresh));

    // Reading: the node ranked first for that manifest freezes again, on a view that has not
    // seen it go silent. The next node is asked beside it, not after its timeouts.
    let view = connected().await;
    net.devnet().pause_node(frozen);
    let fetched = fetch_manifest(&view, &cid).await;
    net.devnet().resume_node(frozen);
    let fetched = fetched.unwrap();
    assert!(!fetched.holders.contains(&frozen_peer));
    let noted = &fetched.incidents;
    let passed_over = |(p, w): &(_, String)| *p == frozen_peer && w.contains("asking another");
    // A node asked beside it may hold no copy (the upload passed over the frozen node, so the
    // copies are not where the ranking alone puts them): its "not stored here" is an incident
    // too, and no waiting.
    let no_copy = |(p, w): &(_, String)| *p != frozen_peer && w.contains("is not stored here");
    assert!(
        noted.iter().any(passed_over) && noted.iter().all(|i| passed_over(i) || no_copy(i)),
        "{noted:?}"
    );
    drop(view);

    // A manifest alone (an object small enough to live inline in it), on a view that has not
    // seen the node go silent: its first-ranked node freezes.
    let view = connected().await;
    let small = noise(1000, 23);
    let (cid, frozen_peer, frozen) = first_for(&view, &small);
    net.devnet().pause_node(frozen);
    let report = put(&view, &key, small.clone(), &opts).await;
    net.devnet().resume_node(frozen);
    let report = report.unwrap();
    assert_eq!((report.cid, report.shards), (cid, 0));
    assert_eq!(failed(&report), vec![]);
    let noted = &report.incidents;
    let manifest_waited = |(p, w): &(_, String)| *p == frozen_peer && w.starts_with("manifest ");
    assert!(noted.iter().any(manifest_waited), "{noted:?}");
    assert_eq!(report.manifest_copies, 3);
    let fresh = Network::connect(&peers(&net)).await.unwrap();
    assert!(read(&fresh, &report.manifest).await.unwrap() == small);
    drop((view, fresh));
    net.stop().await;
}

/// A put collects a storage receipt from every node that took a shard and leaves them with
/// every node that holds the manifest, so whoever holds the manifest's CID learns who promised
/// to hold which shard until when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keeper_of_a_manifest_holds_the_receipts_of_every_stored_shard() {
    use cairn_proofs::receipt::StorageReceipt;

    let net = Net::start(6).await;
    let view = Network::connect(&peers(&net)).await.unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let mut opts = PutOptions::default();
    opts.params.erasure.shard_size = 64 << 10;
    let (k, m) = (opts.params.erasure.k, opts.params.erasure.m);
    // Five stripes of 4+2, the last one short.
    let data = noise(5 * usize::from(k) * (64 << 10) - 999, 31);
    let epoch = || {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        ms / 3_600_000
    };
    let before = epoch();
    let report = put(&view, &key, data, &opts).await.unwrap();
    let after = epoch();
    assert_eq!(report.shards, 5 * usize::from(k + m));
    assert!(report.receipts >= report.shards, "{report:?}");
    assert_eq!(report.manifest_copies, usize::from(m) + 1);
    assert_eq!(report.receipt_copies, report.manifest_copies);
    drop(view);

    // Asked afresh: which nodes hold each shard, and which hold the manifest.
    let fresh = Network::connect(&peers(&net)).await.unwrap();
    let shards: Vec<(Cid, u64)> = report
        .manifest
        .stored_shards()
        .map(|(_, _, s)| (s.cid, u64::from(s.len)))
        .collect();
    let cids: Vec<Cid> = shards.iter().map(|(c, _)| *c).collect();
    let holders = fresh.locate(&cids).await;
    let keepers = fresh
        .locate(&[report.cid])
        .await
        .intact(&report.cid)
        .to_vec();
    assert_eq!(keepers.len(), report.manifest_copies);
    let check = |receipts: &[StorageReceipt], whose: &str| {
        assert_eq!(receipts.len(), report.receipts, "{whose}");
        for (cid, len) in &shards {
            let root = cairn_chunker::cids::digest(cid, cairn_chunker::cids::Codec::Raw).unwrap();
            let mine: Vec<&StorageReceipt> = receipts
                .iter()
                .filter(|r| r.shard.0 == *root.as_bytes())
                .collect();
            assert!(!mine.is_empty(), "{whose}: no receipt for {cid}");
            for r in mine {
                r.verify().unwrap();
                assert_eq!(r.size, *len, "{whose}: {cid}");
                assert!((before..=after).contains(&r.start), "{whose}: {r:?}");
                assert_eq!(r.end, r.start + 168, "{whose}: {r:?}");
                // Signed by a node that holds the shard.
                let signer = cairn_wire::keys::peer_id(&r.node).unwrap();
                let holding: Vec<_> = holders
                    .intact(cid)
                    .iter()
                    .map(|&i| fresh.nodes()[i].peer())
                    .collect();
                assert!(
                    holding.contains(&signer),
                    "{whose}: {cid} is not on {signer}"
                );
            }
        }
    };
    for &i in &keepers {
        let t = fresh.nodes()[i].target;
        let kept = fresh.data().get_receipts(&t, &report.cid).await.unwrap();
        check(&kept, &format!("keeper {}", t.peer));
    }
    let union = fresh.receipts(&report.cid).await.unwrap();
    check(&union, "the union");
    // A node that does not hold the manifest keeps none.
    let other = (0..fresh.nodes().len())
        .find(|i| !keepers.contains(i))
        .unwrap();
    assert!(
        fresh
            .data()
            .get_receipts(&fresh.nodes()[other].target, &report.cid)
            .await
            .is_err()
    );

    // An object small enough to live in its manifest stores no shard and has no receipt.
    let small = put(&fresh, &key, noise(1000, 32), &opts).await.unwrap();
    assert_eq!(
        (small.shards, small.receipts, small.receipt_copies),
        (0, 0, 0)
    );
    assert!(fresh.receipts(&small.cid).await.unwrap().is_empty());
    drop(fresh);
    net.stop().await;
}
