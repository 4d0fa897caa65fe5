//! Multipart uploads through the real `aws-sdk-s3` against a devnet of real node processes and
//! a real gateway process: parts combined and checked, and the object's BLAKE3 from its parts.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{Net, bytes, failure, get, md5_hex, metric, start_upload, upload_part};
use md5::{Digest, Md5};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_combine_parts_and_check_them() {
    let net = Net::start(6).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("mpart").send().await.unwrap();
    let source = bytes(6 << 20, 50);
    s3.put_object()
        .bucket("mpart")
        .key("source")
        .body(ByteStream::from(source.clone()))
        .send()
        .await
        .unwrap();

    let up = s3
        .create_multipart_upload()
        .bucket("mpart")
        .key("big.bin")
        .content_type("application/octet-stream")
        .metadata("split", "train")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let p1 = bytes((5 << 20) + 12_345, 51); // not stripe-aligned
    let p3 = bytes(777_777, 53);
    let e1 = s3
        .upload_part()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(p1.clone()))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string();
    assert_eq!(e1, format!("\"{}\"", md5_hex(&p1)));
    // Part 2 copied from a range of another object.
    let copy = s3
        .upload_part_copy()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .part_number(2)
        .copy_source("mpart/source")
        .copy_source_range(format!("bytes=1000-{}", 1000 + (5 << 20) - 1))
        .send()
        .await
        .unwrap();
    let e2 = copy
        .copy_part_result()
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string();
    let p2 = source[1000..1000 + (5 << 20)].to_vec();
    let e3 = s3
        .upload_part()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .part_number(3)
        .body(ByteStream::from(p3.clone()))
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string();

    let listed = s3
        .list_parts()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let numbers: Vec<i32> = listed
        .parts()
        .iter()
        .filter_map(|p| p.part_number())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    let uploads = s3
        .list_multipart_uploads()
        .bucket("mpart")
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 1);
    assert_eq!(uploads.uploads()[0].upload_id(), Some(id.as_str()));

    let part = |n: i32, e: &str| CompletedPart::builder().part_number(n).e_tag(e).build();
    // A wrong ETag, a missing part, parts out of order: refused.
    let bad = s3
        .complete_multipart_upload()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(part(1, "\"00000000000000000000000000000000\""))
                .build(),
        )
        .send()
        .await;
    assert_eq!(failure(bad).1, "InvalidPart");
    let bad = s3
        .complete_multipart_upload()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(part(2, &e2))
                .parts(part(1, &e1))
                .build(),
        )
        .send()
        .await;
    assert_eq!(failure(bad).1, "InvalidPartOrder");
    // A small part that is not last.
    let bad = s3
        .complete_multipart_upload()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(part(3, &e3))
                .parts(part(4, &e3))
                .build(),
        )
        .send()
        .await;
    assert!(matches!(
        failure(bad).1.as_str(),
        "EntityTooSmall" | "InvalidPart"
    ));

    let done = s3
        .complete_multipart_upload()
        .bucket("mpart")
        .key("big.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(part(1, &e1))
                .parts(part(2, &e2))
                .parts(part(3, &e3))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // ETag: MD5 of the parts' MD5s, dash, part count.
    let mut md5s = Vec::new();
    for p in [&p1, &p2, &p3] {
        md5s.extend_from_slice(&Md5::digest(p));
    }
    let want = format!("\"{}-3\"", md5_hex(&md5s));
    assert_eq!(done.e_tag(), Some(want.as_str()));
    let whole: Vec<u8> = [p1.as_slice(), &p2, &p3].concat();
    assert_eq!(get(&s3, "mpart", "big.bin", None).await, whole);
    let at = p1.len() - 3;
    assert_eq!(
        get(
            &s3,
            "mpart",
            "big.bin",
            Some(&format!("bytes={at}-{}", at + 9))
        )
        .await,
        &whole[at..at + 10],
        "a range across the part boundary"
    );
    let head = s3
        .head_object()
        .bucket("mpart")
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap()["split"], "train");
    assert_eq!(
        head.metadata().unwrap()["cairn-blake3"],
        blake3::hash(&whole).to_hex().as_str()
    );
    assert_eq!(head.content_type(), Some("application/octet-stream"));
    // The upload is gone.
    assert_eq!(
        failure(
            s3.list_parts()
                .bucket("mpart")
                .key("big.bin")
                .upload_id(&id)
                .send()
                .await
        )
        .1,
        "NoSuchUpload"
    );

    // Abort.
    let id2 = start_upload(&s3, "mpart", "aborted").await;
    upload_part(&s3, ("mpart", "aborted", &id2), 1, bytes(1000, 60)).await;
    assert_eq!(
        failure(s3.delete_bucket().bucket("mpart").send().await).1,
        "BucketNotEmpty"
    );
    s3.abort_multipart_upload()
        .bucket("mpart")
        .key("aborted")
        .upload_id(&id2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        failure(
            s3.upload_part()
                .bucket("mpart")
                .key("aborted")
                .upload_id(&id2)
                .part_number(2)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        )
        .1,
        "NoSuchUpload"
    );
    assert_eq!(
        failure(s3.head_object().bucket("mpart").key("aborted").send().await).0,
        404
    );
    net.stop().await;
}

/// Equal parts, as S3 clients send them, are hashed at their final offsets as they arrive, so
/// Complete merges their BLAKE3 trees and reads back only what broke the pattern (the short
/// last part, parts after a part of another size). The object's BLAKE3 is `b3sum`'s either
/// way, whatever order the parts arrived in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_parts_are_not_read_back_to_hash_the_object() {
    let net = Net::start(6).await;
    let s3 = net.s3();
    let admin = net.gateway().admin;
    s3.create_bucket().bucket("parts").send().await.unwrap();
    let reread = "cairn_gateway_complete_parts_reread_total";
    let cases: [(&str, &[usize], u64); 5] = [
        // Only the short last part is read back (uploaded last to first here).
        ("equal", &[5 << 20, 5 << 20, 5 << 20, (1 << 20) + 100], 1),
        // Power-of-two parts ending on a part boundary: nothing is read back.
        ("aligned", &[8 << 20, 8 << 20], 0),
        // A shorter second part puts every later part elsewhere than guessed.
        ("uneven", &[6 << 20, 5 << 20, 6 << 20], 2),
        // One part is its own object.
        ("single", &[3 << 20], 0),
        // An empty last part adds nothing to hash.
        ("empty-last", &[5 << 20, 5 << 20, 0], 0),
    ];
    for (seed, (key, sizes, expected)) in cases.into_iter().enumerate() {
        let before = metric(admin, reread).await;
        let id = start_upload(&s3, "parts", key).await;
        let parts: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| bytes(len, (seed * 10 + i) as u64))
            .collect();
        let mut etags = vec![String::new(); parts.len()];
        for (i, p) in parts.iter().enumerate().rev() {
            etags[i] = upload_part(&s3, ("parts", key, &id), i as i32 + 1, p.clone()).await;
        }
        let mut list = CompletedMultipartUpload::builder();
        for (i, e) in etags.iter().enumerate() {
            list = list.parts(
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(e)
                    .build(),
            );
        }
        s3.complete_multipart_upload()
            .bucket("parts")
            .key(key)
            .upload_id(&id)
            .multipart_upload(list.build())
            .send()
            .await
            .unwrap();
        let whole = parts.concat();
        let head = s3
            .head_object()
            .bucket("parts")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.metadata().unwrap()["cairn-blake3"],
            blake3::hash(&whole).to_hex().as_str(),
            "{key}"
        );
        assert_eq!(
            metric(admin, reread).await - before,
            expected,
            "{key}: parts read back"
        );
        // The parts' storage receipts are kept beside the object's manifest: a data owner's
        // audit through it finds one for every shard, and every holder proves its shards.
        let cid = head.metadata().unwrap()["cairn-cid"].clone();
        let stat: serde_json::Value =
            serde_json::from_slice(&net.cairn_ok(&["stat", &cid, "--json"]).stdout).unwrap();
        let shards: usize = stat["stripes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["shards"].as_array().unwrap().len())
            .sum();
        if shards > 0 {
            let audit: serde_json::Value =
                serde_json::from_slice(&net.cairn_ok(&["audit", &cid, "--json"]).stdout).unwrap();
            assert!(
                audit["receipts"].as_u64().unwrap() >= shards as u64,
                "{key}: {audit}"
            );
        }
        assert!(get(&s3, "parts", key, None).await == whole, "{key}");
    }
    net.stop().await;
}

/// CompleteMultipartUpload of 10,000 parts (S3's most) starts its answer within what SDKs
/// wait for one (boto3 and this client: 60 s), on a gateway restarted after the parts were
/// uploaded, so every part's manifest comes from the nodes, and makes the right object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_parts_complete_within_what_clients_wait() {
    use futures::StreamExt;
    const PARTS: usize = 10_000;
    const PART: usize = 1024;
    // What is measured is the completion, not 10,000 uploads: nodes without fsync, and parts
    // of 1 KiB (S3 asks 5 MiB: 10,000 of them would be 50 GB) in stripes of 1 + 1.
    let net = Net::start_nodes(3, &["--sync-writes", "false"]).await;
    let dir = net.dir.path().join("gw-parts");
    common::init_gateway(&dir, "PARTSKEY", "parts-secret-1234");
    let args = ["--min-part-kib", "1", "--k", "1", "--m", "1"];
    let (mut gw, info) = common::run_gateway(&net, &dir, &args).await;
    let s3 = common::client(&info.endpoint, "PARTSKEY", "parts-secret-1234", true);
    s3.create_bucket().bucket("many").send().await.unwrap();
    let id = start_upload(&s3, "many", "ckpt.bin").await;
    let data = bytes(PARTS * PART, 90);
    let etags: Vec<String> = futures::stream::iter(0..PARTS)
        .map(|i| {
            let (s3, id) = (&s3, &id);
            let body = data[i * PART..(i + 1) * PART].to_vec();
            async move { upload_part(s3, ("many", "ckpt.bin", id), i as i32 + 1, body).await }
        })
        .buffered(64)
        .collect()
        .await;
    let _ = gw.kill().await;
    let _ = gw.wait().await;
    let (mut gw, info) = common::run_gateway(&net, &dir, &args).await;
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .read_timeout(std::time::Duration::from_secs(60))
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(
        common::client(&info.endpoint, "PARTSKEY", "parts-secret-1234", true)
            .config()
            .to_builder()
            .timeout_config(timeouts)
            .build(),
    );
    let parts: Vec<CompletedPart> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| {
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(e)
                .build()
        })
        .collect();
    let done = s3
        .complete_multipart_upload()
        .bucket("many")
        .key("ckpt.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut md5s = Vec::new();
    for e in &etags {
        let e = e.trim_matches('"');
        md5s.extend(
            (0..e.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&e[i..i + 2], 16).unwrap()),
        );
    }
    let want = format!("\"{}-{PARTS}\"", md5_hex(&md5s));
    assert_eq!(done.e_tag(), Some(want.as_str()));
    assert_eq!(get(&s3, "many", "ckpt.bin", None).await, data);
    let _ = gw.kill().await;
}
