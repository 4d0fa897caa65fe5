//! The read path's memory: read-ahead for a sequential range reader, and the shard cache, which
//! keeps serving verified bytes it holds even when every node that stored them is gone.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::{Net, bytes, metric};

const MIB: usize = 1 << 20;

async fn get(s3: &aws_sdk_s3::Client, key: &str, range: Option<String>) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket("reads")
        .key(key)
        .set_range(range)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_ranges_are_read_ahead_and_the_cache_outlives_the_nodes() {
    let mut net = Net::start(6).await;
    let s3 = net.s3();
    let admin = net.gateway().admin;
    s3.create_bucket().bucket("reads").send().await.unwrap();

    // A reader walking a 40 MiB object in 4 MiB ranges, as s3fs and PyTorch's readers do.
    let big = bytes(40 * MIB, 1);
    s3.put_object()
        .bucket("reads")
        .key("big")
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .unwrap();
    let before = metric(admin, "cairn_gateway_cache_hits_total").await;
    for at in (0..big.len()).step_by(4 * MIB) {
        let end = (at + 4 * MIB).min(big.len());
        let got = get(&s3, "big", Some(format!("bytes={at}-{}", end - 1))).await;
        assert!(got == big[at..end], "range at {at} differs");
    }
    let ahead = metric(admin, "cairn_gateway_readahead_shards_total").await;
    let hits = metric(admin, "cairn_gateway_cache_hits_total").await - before;
    assert!(ahead > 0, "no shard was read ahead of a sequential reader");
    assert!(hits > 0, "no range was served from what was read ahead");
    // Random ranges over the same object are not sequential: nothing more is read ahead.
    for (i, at) in [31, 7, 19, 2, 27].into_iter().enumerate() {
        let at = at * MIB + i * 777;
        let got = get(&s3, "big", Some(format!("bytes={at}-{}", at + MIB - 1))).await;
        assert!(got == big[at..at + MIB], "random range at {at} differs");
    }
    assert_eq!(
        metric(admin, "cairn_gateway_readahead_shards_total").await,
        ahead,
        "random reads triggered read-ahead"
    );
    assert!(metric(admin, "cairn_gateway_cache_bytes").await <= 128 * MIB as u64);

    // A small object read whole is kept; with every node stopped it is still served, verified.
    let small = bytes(6 * MIB + 123, 2);
    s3.put_object()
        .bucket("reads")
        .key("small")
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .unwrap();
    assert!(get(&s3, "small", None).await == small);
    for i in 0..6 {
        net.devnet.stop_node(i).await;
    }
    assert!(
        get(&s3, "small", None).await == small,
        "cached object differs"
    );
    let at = 5 * MIB - 10;
    assert!(
        get(&s3, "small", Some(format!("bytes={at}-{}", at + 100_000))).await
            == small[at..at + 100_001],
        "cached range differs"
    );
    net.stop().await;
}
