//! Small objects (up to the gateway's `inline_kib`, 64 KiB by default) are kept whole in their
//! manifest on m+1 nodes instead of as k+m shards: a PUT is m+1 writes, not k+m+m+1. What
//! must hold: nothing acknowledged is lost when m nodes die right after the 200, and a PUT
//! that cannot reach m+1 nodes is not acknowledged.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::{Net, bytes, get, md5_hex};
use serde_json::Value;

/// `(shard bytes, manifest bytes)` stored over the whole network, as `cairn nodes` sees it.
fn stored(net: &Net) -> (u64, u64) {
    let out = net.cairn_ok(&["nodes", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifests = v["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("nodes in {v}"))
        .iter()
        .map(|n| n["manifest_bytes"].as_u64().unwrap_or(0))
        .sum();
    (v["used"].as_u64().unwrap(), manifests)
}

async fn put(s3: &aws_sdk_s3::Client, key: &str, body: &[u8]) -> Result<String, String> {
    s3.put_object()
        .bucket("small")
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .map(|r| r.e_tag().unwrap_or_default().trim_matches('"').to_string())
        .map_err(|e| format!("{:?}", aws_sdk_s3::error::DisplayErrorContext(e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_live_in_their_manifest_on_m_plus_1_nodes_and_survive_m_dying() {
    // Six nodes: 4+2, so three copies of every manifest.
    let mut net = Net::start(6).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("small").send().await.unwrap();

    let small = bytes(16 << 10, 1);
    let edge = bytes(64 << 10, 2);
    assert_eq!(put(&s3, "small", &small).await.unwrap(), md5_hex(&small));
    assert_eq!(put(&s3, "edge", &edge).await.unwrap(), md5_hex(&edge));
    // No shard anywhere: the bytes are in the manifests, three copies each.
    let (shards, manifests) = stored(&net);
    assert_eq!(shards, 0, "small objects were erasure coded");
    assert!(
        manifests >= 3 * (small.len() + edge.len()) as u64,
        "manifest bytes {manifests}: fewer than three copies"
    );
    // One byte more is erasure coded as before.
    let over = bytes((64 << 10) + 1, 3);
    put(&s3, "over", &over).await.unwrap();
    assert!(
        stored(&net).0 > 0,
        "a 64 KiB + 1 object was not erasure coded"
    );
    for (key, want) in [("small", &small), ("edge", &edge), ("over", &over)] {
        assert!(get(&s3, "small", key, None).await == *want, "{key}");
    }
    let head = s3
        .head_object()
        .bucket("small")
        .key("small")
        .send()
        .await
        .unwrap();
    let cid = head.metadata().unwrap()["cairn-cid"].clone();

    // Two of the three nodes holding its manifest die right after the 200s (SIGKILL: nothing
    // said on the way out). The third copy is read back with no cache in between.
    let stat: Value =
        serde_json::from_slice(&net.cairn_ok(&["--json", "stat", &cid]).stdout).unwrap();
    let holders: Vec<usize> = stat["manifest_holders"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest_holders in {stat}"))
        .iter()
        .map(|p| {
            let p = p.as_str().unwrap();
            let nodes = &net.devnet.state.nodes;
            nodes.iter().position(|n| n.peer_id == p).unwrap()
        })
        .collect();
    assert_eq!(holders.len(), 3, "{stat}");
    net.devnet.kill_node(holders[0]).await;
    net.devnet.kill_node(holders[1]).await;
    let out = net.dir.path().join("small.out");
    net.cairn_ok(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(
        std::fs::read(&out).unwrap() == small,
        "bytes after two holders died"
    );

    // With four of six gone no PUT can reach three nodes: it is refused (the gateway's view
    // may not have seen them go yet, or may have), and nothing is committed under its key.
    // That a put kept on fewer than m+1 nodes is an error whatever the view says is
    // client/tests/copies.rs's.
    let others: Vec<usize> = (0..6)
        .filter(|i| !holders[..2].contains(i))
        .take(2)
        .collect();
    for i in others {
        net.devnet.kill_node(i).await;
    }
    let refused = put(&s3, "lonely", &bytes(16 << 10, 4)).await;
    let e = refused.expect_err("a PUT that reached two nodes was acknowledged");
    assert!(e.contains("ServiceUnavailable") || e.contains("503"), "{e}");
    let head = s3.head_object().bucket("small").key("lonely").send().await;
    assert!(head.is_err(), "the refused PUT left an object");
}
