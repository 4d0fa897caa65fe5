//! The gateway's leases, on a devnet of real `cairn-node` processes with 2-second epochs, a
//! 3-epoch upload hold (6 s), a 1-epoch grace and a GC pass every second, and gateways that
//! lease for 20 s and renew every 2 s:
//!
//! * objects written through S3 (PUT, multipart) outlive their upload hold many times over,
//!   because the renewal loop keeps them leased, and read back byte-exact; the same object
//!   written through a gateway that takes no leases (`--lease-term 0s`) is collected.
//!
//! Needs the workspace's binaries (`cargo build --release --workspace --bins`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{
    Net, bytes, client, get, init_gateway, metric, run_gateway, start_upload, upload_part,
};

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

/// Whether `bucket/key` reads back whole as `want`.
async fn reads(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, want: &[u8]) -> bool {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => match out.body.collect().await {
            Ok(b) => b.into_bytes().as_ref() == want,
            Err(_) => false,
        },
        Err(_) => false,
    }
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
