//! The gateway's leases, on a devnet of real `cairn-node` processes with 2-second epochs, a
//! 3-epoch upload hold (6 s), a 1-epoch grace and a GC pass every second, and gateways that
//! lease for 20 s and renew every 2 s (for an hour, renewing every second, in the release test):
//!
//! * objects written through S3 (PUT, multipart) outlive their upload hold many times over,
//!   because the renewal loop keeps them leased, and read back byte-exact; the same object
//!   written through a gateway that takes no leases (`--lease-term 0s`) is collected;
//! * objects deleted or overwritten through S3 (DeleteObject, DeleteObjects, PUT over a key,
//!   aborted and completed multipart uploads, a part uploaded twice) are released, and once
//!   their upload holds and the grace have passed the nodes' `used` is back to exactly what the
//!   live objects take, every one of which still reads; bytes still under another key (a copy,
//!   the same bytes written again) are not released.
//!
//! Needs the workspace's binaries (`cargo build --release --workspace --bins`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{
    Net, bytes, client, get, init_gateway, metric, run_gateway, start_upload, upload_part,
};
use serde_json::Value;

const NODE_ARGS: &[&str] = &[
    "--epoch",
    "2s",
    "--lease-epochs",
    "3",
    "--grace-epochs",
    "1",
    "--gc-interval",
    "1s",
    "--scrub-rate",
    "0",
];

/// A gateway of its own on the devnet, leasing with `term` and renewing every `every`.
async fn gateway(
    net: &Net,
    name: &str,
    term: &str,
    every: &str,
) -> (tokio::process::Child, aws_sdk_s3::Client, SocketAddr) {
    let dir = net.dir.path().join(name);
    init_gateway(&dir, "leaseaccess", "leasesecret123");
    let (child, info) = run_gateway(
        net,
        &dir,
        &[
            "--lease-term",
            term,
            "--lease-renew-every",
            every,
            "--k",
            "2",
            "--m",
            "1",
            "--export-every-secs",
            "0",
            // No shard cache: every read after the wait goes to the nodes.
            "--cache-mib",
            "0",
            "--readahead-mib",
            "0",
        ],
    )
    .await;
    let s3 = client(&info.endpoint, "leaseaccess", "leasesecret123", true);
    (child, s3, info.admin)
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

/// Whether `bucket/key` reads back whole as `want` (why not is printed, for a failure's log).
async fn reads(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, want: &[u8]) -> bool {
    let why = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => match out.body.collect().await {
            Ok(b) => {
                let got = b.into_bytes();
                if got.as_ref() == want {
                    return true;
                }
                format!("{} bytes, not the {} written", got.len(), want.len())
            }
            Err(e) => format!("body: {e}"),
        },
        Err(e) => format!("{:?}", aws_sdk_s3::error::DisplayErrorContext(e)),
    };
    eprintln!("{bucket}/{key} does not read back: {why}");
    false
}

/// Completes upload `id` of `bucket/key` from its parts' ETags, in order.
async fn complete(
    s3: &aws_sdk_s3::Client,
    (bucket, key, id): (&str, &str, &str),
    etags: &[String],
) {
    let mut parts = aws_sdk_s3::types::CompletedMultipartUpload::builder();
    for (n, e) in etags.iter().enumerate() {
        parts = parts.parts(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n as i32 + 1)
                .e_tag(e)
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(parts.build())
        .send()
        .await
        .unwrap();
}

/// The bytes the devnet's nodes hold, summed (`cairn nodes --json`).
fn used(net: &Net) -> u64 {
    let out = net.cairn_ok(&["nodes", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["used"].as_u64().unwrap_or_else(|| panic!("used in {v}"))
}

/// Deleting and overwriting through S3 gives the space back; nothing live is touched.
#[tokio::test(flavor = "multi_thread")]
async fn deleted_and_overwritten_objects_are_released_and_collected() {
    let net = Net::start_nodes(3, NODE_ARGS).await;
    // Leases of an hour: only a release lets anything go within the test.
    let (_gw, s3, admin) = gateway(&net, "gw", "1h", "1s").await;
    s3.create_bucket().bucket("bkt").send().await.unwrap();

    // The live objects, and what they take on the nodes.
    let keep = bytes(400_000, 10);
    let fin = bytes(300_000, 11);
    put(&s3, "bkt", "keep", keep.clone()).await;
    put(&s3, "bkt", "e", fin.clone()).await;
    // A completed upload: its parts' manifests are released, their shards are the object's.
    let (p1, p2) = (bytes(5 << 20, 12), bytes(200_000, 13));
    let id = start_upload(&s3, "bkt", "multi").await;
    let etags = vec![
        upload_part(&s3, ("bkt", "multi", &id), 1, p1.clone()).await,
        upload_part(&s3, ("bkt", "multi", &id), 2, p2.clone()).await,
    ];
    complete(&s3, ("bkt", "multi", &id), &etags).await;
    let live = used(&net);
    assert!(live > 0);

    // Garbage: deleted one at a time and in a batch.
    for (n, key) in ["gone1", "gone2", "gone3"].iter().enumerate() {
        put(&s3, "bkt", key, bytes(500_000 + n * 1000, 20 + n as u64)).await;
    }
    s3.delete_object()
        .bucket("bkt")
        .key("gone1")
        .send()
        .await
        .unwrap();
    let batch = aws_sdk_s3::types::Delete::builder()
        .objects(
            aws_sdk_s3::types::ObjectIdentifier::builder()
                .key("gone2")
                .build()
                .unwrap(),
        )
        .objects(
            aws_sdk_s3::types::ObjectIdentifier::builder()
                .key("gone3")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    s3.delete_objects()
        .bucket("bkt")
        .delete(batch)
        .send()
        .await
        .unwrap();
    // Overwritten, then written back: the first bytes are garbage, `fin` is not.
    put(&s3, "bkt", "e", bytes(450_000, 23)).await;
    put(&s3, "bkt", "e", fin.clone()).await;
    // A copy deleted: its bytes are still `keep`'s.
    s3.copy_object()
        .bucket("bkt")
        .key("keep-copy")
        .copy_source("bkt/keep")
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket("bkt")
        .key("keep-copy")
        .send()
        .await
        .unwrap();
    // An aborted upload.
    let id = start_upload(&s3, "bkt", "aborted").await;
    upload_part(&s3, ("bkt", "aborted", &id), 1, bytes(5 << 20, 24)).await;
    upload_part(&s3, ("bkt", "aborted", &id), 2, bytes(100_000, 25)).await;
    s3.abort_multipart_upload()
        .bucket("bkt")
        .key("aborted")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    // A completed upload whose first part went up twice, then deleted.
    let id = start_upload(&s3, "bkt", "multi2").await;
    upload_part(&s3, ("bkt", "multi2", &id), 1, bytes(5 << 20, 26)).await;
    let etags = vec![
        upload_part(&s3, ("bkt", "multi2", &id), 1, bytes(5 << 20, 27)).await,
        upload_part(&s3, ("bkt", "multi2", &id), 2, bytes(100_000, 28)).await,
    ];
    complete(&s3, ("bkt", "multi2", &id), &etags).await;
    s3.delete_object()
        .bucket("bkt")
        .key("multi2")
        .send()
        .await
        .unwrap();
    let garbage = used(&net);
    // About 17 MiB of garbage, stored at 3/2 its size.
    assert!(garbage > live + (24 << 20), "{garbage} vs {live}");

    // Releases go out within a sweep; shards go once their 6 s upload hold and the 2 s grace
    // have passed. The margin: none (`used` counts shard bytes, and every garbage shard goes).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut now = garbage;
    while now != live && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        now = used(&net);
    }
    assert_eq!(now, live, "used after collection (with garbage {garbage})");
    assert!(reads(&s3, "bkt", "keep", &keep).await, "keep");
    assert!(reads(&s3, "bkt", "e", &fin).await, "e");
    let mut whole = p1.clone();
    whole.extend_from_slice(&p2);
    assert_eq!(get(&s3, "bkt", "multi", None).await, whole, "multi");
    // Objects: gone1-3, e's first overwrite, multi2 with its three parts, the aborted
    // upload's two parts, and multi's two parts.
    let released = metric(admin, "cairn_gateway_leases_released_total").await;
    assert_eq!(released, 12);
    assert_eq!(metric(admin, "cairn_gateway_release_pending").await, 0);
    assert_eq!(metric(admin, "cairn_gateway_lease_failures_total").await, 0);
    // And what stays, stays: through more sweeps and renewals, past the upload holds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(used(&net), live);
    assert!(reads(&s3, "bkt", "keep", &keep).await, "keep, later");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_written_through_s3_outlive_their_upload_hold() {
    let net = Net::start_nodes(3, NODE_ARGS).await;
    let (_leasing, s3, admin) = gateway(&net, "gw-leasing", "20s", "2s").await;
    let (_off, s3_off, _) = gateway(&net, "gw-off", "0s", "2s").await;
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    s3_off.create_bucket().bucket("bkt").send().await.unwrap();

    let small = bytes(200_000, 1);
    let large = bytes(700_000, 2);
    put(&s3, "bkt", "small", small.clone()).await;
    put(&s3, "bkt", "large", large.clone()).await;
    // A multipart object: its parts' shards are held by the final object's lease.
    let (p1, p2) = (bytes(5 << 20, 3), bytes(300_000, 4));
    let id = start_upload(&s3, "bkt", "multi").await;
    let e1 = upload_part(&s3, ("bkt", "multi", &id), 1, p1.clone()).await;
    let e2 = upload_part(&s3, ("bkt", "multi", &id), 2, p2.clone()).await;
    let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(1)
                .e_tag(e1)
                .build(),
        )
        .parts(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(2)
                .e_tag(e2)
                .build(),
        )
        .build();
    s3.complete_multipart_upload()
        .bucket("bkt")
        .key("multi")
        .upload_id(&id)
        .multipart_upload(parts)
        .send()
        .await
        .unwrap();
    // Other bytes, through the gateway that takes no leases: the control.
    let unleased = bytes(250_000, 5);
    put(&s3_off, "bkt", "unleased", unleased.clone()).await;
    assert!(reads(&s3_off, "bkt", "unleased", &unleased).await);

    // 40 s: more than six upload holds (6 s) plus grace, and two lease terms (20 s): only
    // renewals keep anything.
    tokio::time::sleep(Duration::from_secs(40)).await;

    assert!(
        reads(&s3, "bkt", "small", &small).await,
        "small was collected"
    );
    assert!(
        reads(&s3, "bkt", "large", &large).await,
        "large was collected"
    );
    let mut whole = p1.clone();
    whole.extend_from_slice(&p2);
    assert_eq!(get(&s3, "bkt", "multi", None).await, whole, "multi");
    assert!(
        !reads(&s3_off, "bkt", "unleased", &unleased).await,
        "the unleased object outlived its upload hold: the wait proves nothing"
    );
    let renewed = metric(admin, "cairn_gateway_leases_renewed_total").await;
    assert!(renewed >= 6, "renewed {renewed}");
    assert_eq!(metric(admin, "cairn_gateway_lease_failures_total").await, 0);
}
