//! On-disk corruption: bytes flipped inside RocksDB's blob files are caught by BLAKE3 on read and
//! by the scrub, counted, and never served.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid};
use cairn_node::RunningNode;
use cairn_node::config::{Config, Size};
use cairn_node::identity;
use cairn_wire::admin::http_get;
use cairn_wire::data::{self, DataError, Target};
use cairn_wire::protocol::{ErrorCode, Holding};

async fn start(dir: &Path, scrub: u64) -> RunningNode {
    let key_path = dir.join(identity::KEY_FILE);
    let key = if key_path.exists() {
        identity::load(&key_path).unwrap()
    } else {
        std::fs::create_dir_all(dir).unwrap();
        identity::create(&key_path).unwrap()
    };
    let mut c = Config::default();
    c.network.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
    c.network.data_listen = "127.0.0.1:0".into();
    c.admin.listen = "127.0.0.1:0".into();
    c.storage.scrub_rate = Size(scrub);
    c.storage.scrub_start_secs = 0;
    RunningNode::start(dir, &c.check().unwrap(), key, None)
        .await
        .unwrap()
}

fn target(node: &RunningNode) -> Target {
    Target {
        peer: node.info.peer_id.parse().unwrap(),
        addr: node.info.data_addr,
    }
}

/// The node's `/metrics` count exactly one failed verification.
async fn assert_one_failure_counted(node: &RunningNode) {
    let (_, metrics) = http_get(node.info.admin, "/metrics", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        metrics.contains("cairn_verification_failures_total 1"),
        "{metrics}"
    );
}

/// Non-repeating bytes, so a 64-byte window identifies one place in the blob files.
fn blob_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "blob"))
        .collect()
}

/// Flips one byte of `needle`'s occurrence inside the node's blob files.
fn flip_on_disk(dir: &Path, needle: &[u8]) {
    for path in blob_files(dir) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(pos) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[pos + needle.len() / 2] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("shard bytes not found in any blob file");
}

/// Stores `data` on a node in `dir`, stops it and flips a byte near `at` in its blob files.
async fn stored_then_flipped(dir: &Path, data: Vec<u8>, at: usize) -> (Vec<u8>, Cid, data::Client) {
    let node = start(dir, 0).await;
    let cid = cids::raw(&data);
    let client = data::Client::bind(libp2p::identity::Keypair::generate_ed25519()).unwrap();
    client
        .store(&target(&node), &cid, Bytes::from(data.clone()))
        .await
        .unwrap();
    node.shutdown().await.unwrap(); // flushes memtables into blob files
    flip_on_disk(dir, &data[at..at + 64]);
    (data, cid, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_blob_bytes_are_detected_counted_and_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), 0).await;
    let t = target(&node);
    let data = cairn_testkit::data::bytes(1 << 20, 1);
    let good: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    let (cid, cid_good) = (cids::raw(&data), cids::raw(&good));
    let client = data::Client::bind(libp2p::identity::Keypair::generate_ed25519()).unwrap();
    client
        .store(&t, &cid, Bytes::from(data.clone()))
        .await
        .unwrap();
    client
        .store(&t, &cid_good, Bytes::from(good.clone()))
        .await
        .unwrap();
    node.shutdown().await.unwrap(); // flushes memtables into blob files
    assert!(
        !blob_files(dir.path()).is_empty(),
        "shards must live in blob files"
    );

    flip_on_disk(dir.path(), &data[700_000..700_064]);

    let node = start(dir.path(), 0).await;
    let t = target(&node);
    // Full and range reads covering the flipped byte: refused, never served.
    let err = client
        .fetch(&t, &cid, None, Some(690_000..710_000))
        .await
        .map(|b| b.len())
        .unwrap_err();
    assert!(
        matches!(err, DataError::Remote { ref error, .. } if error.code == ErrorCode::Corrupt),
        "{err}"
    );
    let err = client
        .fetch(&t, &cid, None, None)
        .await
        .map(|b| b.len())
        .unwrap_err();
    assert!(
        matches!(err, DataError::Remote { ref error, .. } if error.code == ErrorCode::Corrupt),
        "{err}"
    );
    // The intact shard is unaffected.
    assert_eq!(client.fetch(&t, &cid_good, None, None).await.unwrap(), good);
    // Reported: has says "corrupt" (quarantined), the metric counts it.
    assert_eq!(
        node.store.has(&[cid, cid_good]).unwrap(),
        vec![Holding::Corrupt, Holding::Intact(1 << 20)]
    );
    assert_one_failure_counted(&node).await;
    // Storing verified bytes again repairs it.
    client
        .store(&t, &cid, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(client.fetch(&t, &cid, None, None).await.unwrap(), data);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_bitrot_without_any_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cid, _) =
        stored_then_flipped(dir.path(), cairn_testkit::data::bytes(300_000, 2), 100_000).await;

    // A fast scrub runs on its own.
    let node = start(dir.path(), 64 << 20).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while node.store.has(&[cid]).unwrap() != vec![Holding::Corrupt] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "scrub did not flag the shard"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_one_failure_counted(&node).await;
    node.shutdown().await.unwrap();
}

/// A whole-shard fetch starts sending before the last group is hashed; a flipped byte found
/// part-way cuts the stream, the client reports the node's copy as corrupt (not a transport
/// failure), and what reached the reader is a verified prefix that stops before the bad group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_found_corrupt_while_being_sent_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cid, client) =
        stored_then_flipped(dir.path(), cairn_testkit::data::bytes(1 << 20, 3), 900_000).await;

    let node = start(dir.path(), 0).await;
    let t = target(&node);
    let got = std::sync::Mutex::new(Vec::new());
    let err = client
        .fetch_streaming(&t, &cid, Some(1 << 20), None, &|b| {
            got.lock().unwrap().extend_from_slice(&b)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, DataError::Remote { ref error, .. } if error.code == ErrorCode::Corrupt),
        "{err}"
    );
    let got = got.into_inner().unwrap();
    assert!(got.len() < 900_032, "{} bytes delivered", got.len());
    assert_eq!(got, data[..got.len()]);
    assert_eq!(node.store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    assert_one_failure_counted(&node).await;
    node.shutdown().await.unwrap();
}
