//! Every S3 operation the gateway serves, errors included, through the real `aws-sdk-s3` against
//! a devnet of real node processes and a real gateway process.

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete,
    ObjectIdentifier,
};
use common::{
    Net, bytes, client, failure, healthy, metric, presigned_put, raw, start_upload, upload_part,
};
use md5::{Digest, Md5};

/// The S3 error message of a failed call ("" when it has none).
fn message<E: ProvideErrorMetadata, R>(
    r: &Result<R, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> String {
    match r {
        Ok(_) => String::new(),
        Err(e) => e.message().unwrap_or("").to_string(),
    }
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, range: Option<&str>) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_range(range.map(str::to_string))
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_objects_ranges_conditions_and_errors() {
    let net = Net::start(6).await;
    let s3 = net.s3();

    // Buckets.
    s3.create_bucket().bucket("data").send().await.unwrap();
    assert_eq!(
        failure(s3.create_bucket().bucket("data").send().await),
        (409, "BucketAlreadyOwnedByYou".into())
    );
    assert_eq!(
        failure(s3.create_bucket().bucket("Bad_Name").send().await).1,
        "InvalidBucketName"
    );
    s3.head_bucket().bucket("data").send().await.unwrap();
    assert_eq!(failure(s3.head_bucket().bucket("nope").send().await).0, 404);
    let names: Vec<String> = s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect();
    assert_eq!(names, ["data"]);

    // A multi-stripe object with metadata; the SDK sends a CRC32 trailer (aws-chunked) by default.
    let body = bytes(9 << 20, 1);
    let put = s3
        .put_object()
        .bucket("data")
        .key("train/shard-0000.tar")
        .content_type("application/x-tar")
        .metadata("owner", "ml-team")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let etag = format!("\"{}\"", md5_hex(&body));
    assert_eq!(
        put.e_tag(),
        Some(etag.as_str()),
        "single-part ETag is the MD5"
    );

    let head = s3
        .head_object()
        .bucket("data")
        .key("train/shard-0000.tar")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(body.len() as i64));
    assert_eq!(head.content_type(), Some("application/x-tar"));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    let meta = head.metadata().unwrap();
    assert_eq!(meta.get("owner").map(String::as_str), Some("ml-team"));
    assert!(meta["cairn-cid"].starts_with("bafy"), "{meta:?}");
    assert_eq!(meta["cairn-signer"].len(), 64, "{meta:?}");
    assert_eq!(meta["cairn-blake3"], blake3::hash(&body).to_hex().as_str());

    assert_eq!(get(&s3, "data", "train/shard-0000.tar", None).await, body);
    // Ranges: a-b, a-, -n, across stripe boundaries.
    let n = body.len();
    assert_eq!(
        get(&s3, "data", "train/shard-0000.tar", Some("bytes=100-199")).await,
        &body[100..200]
    );
    let edge = 4 << 20; // a 4+2 stripe of 1 MiB shards
    assert_eq!(
        get(
            &s3,
            "data",
            "train/shard-0000.tar",
            Some(&format!("bytes={}-{}", edge - 10, edge + 10))
        )
        .await,
        &body[edge - 10..=edge + 10]
    );
    assert_eq!(
        get(
            &s3,
            "data",
            "train/shard-0000.tar",
            Some(&format!("bytes={}-", n - 5))
        )
        .await,
        &body[n - 5..]
    );
    assert_eq!(
        get(&s3, "data", "train/shard-0000.tar", Some("bytes=-7")).await,
        &body[n - 7..]
    );
    let ranged = s3
        .get_object()
        .bucket("data")
        .key("train/shard-0000.tar")
        .range("bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ranged.content_range(),
        Some(format!("bytes 10-19/{n}").as_str())
    );
    assert_eq!(ranged.content_length(), Some(10));
    assert_eq!(
        failure(
            s3.get_object()
                .bucket("data")
                .key("train/shard-0000.tar")
                .range(format!("bytes={}-", n + 10))
                .send()
                .await
        ),
        (416, "InvalidRange".into())
    );

    // Conditional requests.
    let cond = |m: Option<&str>, nm: Option<&str>, ms: Option<i64>, us: Option<i64>| {
        s3.get_object()
            .bucket("data")
            .key("train/shard-0000.tar")
            .set_if_match(m.map(str::to_string))
            .set_if_none_match(nm.map(str::to_string))
            .set_if_modified_since(ms.map(DateTime::from_secs))
            .set_if_unmodified_since(us.map(DateTime::from_secs))
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    cond(Some(&etag), None, None, None).await.unwrap();
    assert_eq!(
        failure(cond(Some("\"0000\""), None, None, None).await).0,
        412
    );
    assert_eq!(failure(cond(None, Some(&etag), None, None).await).0, 304);
    cond(None, Some("\"0000\""), None, None).await.unwrap();
    assert_eq!(
        failure(cond(None, None, Some(now + 3600), None).await).0,
        304
    );
    cond(None, None, Some(now - 3600), None).await.unwrap();
    assert_eq!(
        failure(cond(None, None, None, Some(now - 3600)).await).0,
        412
    );
    cond(None, None, None, Some(now + 3600)).await.unwrap();

    // Checksums: each algorithm is computed, validated and returned.
    for alg in [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha256,
    ] {
        let key = format!("sum/{}", alg.as_str());
        let put = s3
            .put_object()
            .bucket("data")
            .key(&key)
            .checksum_algorithm(alg.clone())
            .body(ByteStream::from(bytes(300_000, 7)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        let sent = [
            put.checksum_crc32(),
            put.checksum_crc32_c(),
            put.checksum_crc64_nvme(),
            put.checksum_sha256(),
        ];
        assert!(sent.iter().any(Option::is_some), "{alg:?} checksum echoed");
        let head = s3
            .head_object()
            .bucket("data")
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let got = [
            head.checksum_crc32(),
            head.checksum_crc32_c(),
            head.checksum_crc64_nvme(),
            head.checksum_sha256(),
        ];
        assert_eq!(sent, got, "{alg:?}");
    }
    // A wrong declared checksum is refused and nothing is stored.
    assert_eq!(
        failure(
            s3.put_object()
                .bucket("data")
                .key("sum/wrong")
                .checksum_crc32("AAAAAA==")
                .body(ByteStream::from(bytes(1000, 8)))
                .send()
                .await
        )
        .1,
        "BadDigest"
    );
    assert_eq!(
        failure(
            s3.head_object()
                .bucket("data")
                .key("sum/wrong")
                .send()
                .await
        )
        .0,
        404
    );
    // Content-MD5 is checked too.
    assert_eq!(
        failure(
            s3.put_object()
                .bucket("data")
                .key("md5/wrong")
                .content_md5("1B2M2Y8AsgTpgAmY7PhCfg==")
                .body(ByteStream::from(bytes(1000, 9)))
                .send()
                .await
        )
        .1,
        "BadDigest"
    );

    // Small and empty objects.
    s3.put_object()
        .bucket("data")
        .key("empty")
        .body(ByteStream::from(Vec::new()))
        .send()
        .await
        .unwrap();
    assert!(get(&s3, "data", "empty", None).await.is_empty());
    s3.put_object()
        .bucket("data")
        .key("tiny.json")
        .body(ByteStream::from_static(b"{\"label\": 3}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&s3, "data", "tiny.json", Some("bytes=1-7")).await,
        b"\"label\""
    );

    // Copy keeps bytes and metadata (COPY directive) or replaces metadata (REPLACE).
    s3.copy_object()
        .bucket("data")
        .key("copy.tar")
        .copy_source("data/train/shard-0000.tar")
        .send()
        .await
        .unwrap();
    let copied = s3
        .head_object()
        .bucket("data")
        .key("copy.tar")
        .send()
        .await
        .unwrap();
    assert_eq!(copied.e_tag(), Some(etag.as_str()));
    assert_eq!(
        copied.metadata().unwrap().get("owner").map(String::as_str),
        Some("ml-team")
    );
    assert_eq!(get(&s3, "data", "copy.tar", None).await, body);
    assert_eq!(
        failure(
            s3.copy_object()
                .bucket("data")
                .key("x")
                .copy_source("data/missing")
                .send()
                .await
        )
        .1,
        "NoSuchKey"
    );

    // Missing things.
    assert_eq!(
        failure(s3.get_object().bucket("data").key("missing").send().await),
        (404, "NoSuchKey".into())
    );
    assert_eq!(
        failure(s3.get_object().bucket("nobucket").key("k").send().await),
        (404, "NoSuchBucket".into())
    );
    assert_eq!(
        failure(
            s3.put_object()
                .bucket("nobucket")
                .key("k")
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        )
        .1,
        "NoSuchBucket"
    );

    // Deletes.
    assert_eq!(
        failure(s3.delete_bucket().bucket("data").send().await),
        (409, "BucketNotEmpty".into())
    );
    s3.delete_object()
        .bucket("data")
        .key("copy.tar")
        .send()
        .await
        .unwrap();
    // Deleting a missing key succeeds, as in S3.
    s3.delete_object()
        .bucket("data")
        .key("copy.tar")
        .send()
        .await
        .unwrap();
    let all: Vec<String> = s3
        .list_objects_v2()
        .bucket("data")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert!(!all.contains(&"copy.tar".to_string()));
    let ids: Vec<ObjectIdentifier> = all
        .iter()
        .map(|k| ObjectIdentifier::builder().key(k).build().unwrap())
        .collect();
    let deleted = s3
        .delete_objects()
        .bucket("data")
        .delete(Delete::builder().set_objects(Some(ids)).build().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.deleted().len(), all.len());
    assert!(deleted.errors().is_empty());
    s3.delete_bucket().bucket("data").send().await.unwrap();
    assert_eq!(failure(s3.head_bucket().bucket("data").send().await).0, 404);

    assert!(healthy(net.gateway().admin).await);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_paginate_with_prefix_delimiter_and_start_after() {
    let net = Net::start(6).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("dsets").send().await.unwrap();
    let mut keys = Vec::new();
    for split in ["train", "val"] {
        for i in 0..7 {
            keys.push(format!("{split}/{i:04}.tar"));
        }
    }
    keys.push("README".into());
    for (i, k) in keys.iter().enumerate() {
        s3.put_object()
            .bucket("dsets")
            .key(k)
            .body(ByteStream::from(bytes(100 + i, i as u64)))
            .send()
            .await
            .unwrap();
    }
    keys.sort();

    // V2, pages of 4.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket("dsets")
            .max_keys(4)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(page.contents().len() <= 4);
        assert_eq!(page.key_count(), Some(page.contents().len() as i32));
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        if page.is_truncated() == Some(true) {
            token = page.next_continuation_token().map(str::to_string);
            assert!(token.is_some());
        } else {
            break;
        }
    }
    assert_eq!(seen, keys);

    // Delimiter: top-level "directories".
    let top = s3
        .list_objects_v2()
        .bucket("dsets")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<&str> = top
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["train/", "val/"]);
    let files: Vec<&str> = top.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(files, ["README"]);

    // Prefix + start-after.
    let val = s3
        .list_objects_v2()
        .bucket("dsets")
        .prefix("val/")
        .start_after("val/0003.tar")
        .send()
        .await
        .unwrap();
    let got: Vec<&str> = val.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(got, ["val/0004.tar", "val/0005.tar", "val/0006.tar"]);
    let sizes: Vec<i64> = val.contents().iter().filter_map(|o| o.size()).collect();
    assert_eq!(sizes.len(), 3);

    // V1 with markers.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = s3
            .list_objects()
            .bucket("dsets")
            .max_keys(5)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        let page_keys: Vec<String> = page
            .contents()
            .iter()
            .map(|o| o.key().unwrap().to_string())
            .collect();
        seen.extend(page_keys.iter().cloned());
        if page.is_truncated() == Some(true) {
            marker = page
                .next_marker()
                .map(str::to_string)
                .or_else(|| page_keys.last().cloned());
        } else {
            break;
        }
    }
    assert_eq!(seen, keys);

    assert_eq!(
        failure(s3.list_objects_v2().bucket("missing").send().await).1,
        "NoSuchBucket"
    );
    net.stop().await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_presigned_urls_virtual_hosts_and_garbage() {
    let net = Net::start(4).await;
    let gw = net.gateway().clone();
    let s3 = net.s3();
    s3.create_bucket().bucket("sec").send().await.unwrap();
    s3.put_object()
        .bucket("sec")
        .key("doc.txt")
        .body(ByteStream::from_static(b"top secret"))
        .send()
        .await
        .unwrap();

    // Wrong secret, unknown key: refused, with a message that says what to fix.
    let wrong = client(&gw.endpoint, &gw.access_key, "not-the-secret-key", true);
    let r = wrong.list_buckets().send().await;
    assert!(message(&r).contains("use the secret key"), "{r:?}");
    assert_eq!(failure(r), (403, "SignatureDoesNotMatch".into()));
    let unknown = client(&gw.endpoint, "AKIANOBODY", &gw.secret_key, true);
    let r = unknown
        .get_object()
        .bucket("sec")
        .key("doc.txt")
        .send()
        .await;
    assert!(
        message(&r).contains("does not know the access key"),
        "{r:?}"
    );
    assert_eq!(failure(r).0, 403);
    // Names s3s's parser refuses before the gateway sees them get a message too.
    let r = s3.create_bucket().bucket("ab").send().await;
    assert!(message(&r).contains("3-63 lowercase letters"), "{r:?}");
    assert_eq!(failure(r), (400, "InvalidBucketName".into()));
    let r = s3
        .put_object()
        .bucket("sec")
        .key("k".repeat(1100))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert!(message(&r).contains("1024 bytes"), "{r:?}");
    assert_eq!(failure(r).1, "KeyTooLongError");

    // Anonymous requests are refused with S3 XML.
    let addr = net.addr();
    let (code, _, body) = raw(
        addr,
        b"GET /sec/doc.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 403);
    assert!(String::from_utf8_lossy(&body).contains("<Code>AccessDenied</Code>"));

    // A presigned GET works without credentials; tampering breaks it.
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(300))
            .unwrap();
    let pre = s3
        .get_object()
        .bucket("sec")
        .key("doc.txt")
        .presigned(cfg.clone())
        .await
        .unwrap();
    let path = pre.uri().trim_start_matches(&gw.endpoint).to_string();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (code, _, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"top secret");
    let tampered = path.replace("doc.txt", "doc.txt2");
    let req = format!("GET {tampered} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(addr, req.as_bytes()).await.0, 403);

    // Virtual-host style: BUCKET.localhost, signed for that host.
    let vhost_ep = format!("http://localhost:{}", addr.port());
    let vs3 = client(&vhost_ep, &gw.access_key, &gw.secret_key, false);
    let pre = vs3
        .get_object()
        .bucket("sec")
        .key("doc.txt")
        .presigned(cfg)
        .await
        .unwrap();
    let host = format!("sec.localhost:{}", addr.port());
    assert!(
        pre.uri().starts_with(&format!("http://{host}/doc.txt")),
        "{}",
        pre.uri()
    );
    let path = pre
        .uri()
        .trim_start_matches(&format!("http://{host}"))
        .to_string();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (code, _, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"top secret");

    // Garbage: not HTTP, huge headers, broken XML, a body longer than declared.
    raw(addr, b"\x00\x01\x02 garbage garbage\r\n\r\n").await;
    let huge = format!(
        "GET /sec/doc.txt HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (code, _, _) = raw(addr, huge.as_bytes()).await;
    assert!(code == 0 || code >= 400, "{code}");
    let (code, _, _) = raw(
        addr,
        b"POST /sec/doc.txt?uploads HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n<<<<<",
    )
    .await;
    assert!(code >= 400, "{code}");
    assert!(healthy(gw.admin).await, "the gateway survives garbage");
    // And still serves.
    assert_eq!(get(&s3, "sec", "doc.txt", None).await, b"top secret");

    // A single PUT over 5 GiB is refused before a byte is stored (presigned, so it is signed).
    let pre = presigned_put(&s3, "sec", "huge").await;
    let path = pre.uri().trim_start_matches(&gw.endpoint).to_string();
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\nonly a few bytes",
        6u64 << 30
    );
    let (code, _, body) = raw(addr, req.as_bytes()).await;
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("EntityTooLarge"));
    assert_eq!(
        failure(s3.head_object().bucket("sec").key("huge").send().await).0,
        404
    );
    // A client's mistakes are not the gateway's errors: none of the above is counted or logged
    // as one.
    assert!(metric(gw.admin, "cairn_gateway_errors_total").await >= 6);
    assert_eq!(
        metric(gw.admin, "cairn_gateway_server_errors_total").await,
        0
    );
    let log =
        std::fs::read_to_string(net.devnet_dir().join("gateway").join("gateway.log")).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "client errors logged as gateway errors: {errors:#?}"
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
        assert!(get(&s3, "parts", key, None).await == whole, "{key}");
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let net = Net::start(4).await;
    let addr = net.addr();
    // Slow-loris: a request line and one header, then nothing; and a connection that sends
    // nothing at all.
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /sec/doc.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The admin servers (the gateway's and a node's) are held to the same limit.
    let gateway_admin = tokio::net::TcpStream::connect(net.gateway().admin)
        .await
        .unwrap();
    let mut node_admin = tokio::net::TcpStream::connect(net.devnet.state.nodes[0].admin)
        .await
        .unwrap();
    node_admin
        .write_all(b"GET /status HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        tokio::time::timeout(std::time::Duration::from_secs(90), read)
            .await
            .is_ok()
    };
    let (a, b, c, d) = tokio::join!(
        closed(partial),
        closed(silent),
        closed(gateway_admin),
        closed(node_admin)
    );
    let took = started.elapsed();
    assert!(a, "the gateway kept a half-sent request open for 90 s");
    assert!(b, "the gateway kept a silent connection open for 90 s");
    assert!(
        c,
        "the gateway's admin server kept a silent connection open for 90 s"
    );
    assert!(
        d,
        "a node's admin server kept a half-sent request open for 90 s"
    );
    let limit = cairn_gateway::http::HEADER_READ_TIMEOUT;
    assert!(
        took >= limit - std::time::Duration::from_secs(1),
        "closed after {took:?}, before the {limit:?} limit"
    );
    // Requests that do finish are served as before.
    net.s3()
        .create_bucket()
        .bucket("after")
        .send()
        .await
        .unwrap();
    assert!(healthy(net.gateway().admin).await);
    assert!(healthy(net.devnet.state.nodes[0].admin).await);
}

/// A PUT whose body stops coming is answered `400 RequestTimeout` and stores nothing; a GET
/// whose client stops reading loses its connection. Each after the stall limit, not before;
/// other clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_or_reading_is_dropped() {
    use cairn_gateway::stall::{BODY_STALL_TIMEOUT, SEND_STALL_TIMEOUT};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let net = Net::start(4).await;
    let (s3, addr, admin) = (net.s3(), net.addr(), net.gateway().admin);
    s3.create_bucket().bucket("stall").send().await.unwrap();
    let big = bytes(48 << 20, 11);
    s3.put_object()
        .bucket("stall")
        .key("big")
        .body(ByteStream::from(big.clone()))
        .send()
        .await
        .unwrap();
    let stalled_metric = "cairn_gateway_stalled_clients_total";
    assert_eq!(metric(admin, stalled_metric).await, 0);
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let path = |uri: &str| uri.trim_start_matches(net.endpoint()).to_string();

    // A PUT that sends 100 kB of an 8 MiB body, then nothing.
    let put = s3
        .put_object()
        .bucket("stall")
        .key("half")
        .presigned(cfg.clone())
        .await
        .unwrap();
    let mut put_conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        path(put.uri()),
        8 << 20
    );
    put_conn.write_all(head.as_bytes()).await.unwrap();
    put_conn.write_all(&bytes(100_000, 12)).await.unwrap();
    let put_sent = Instant::now();

    // A GET of 48 MiB whose client reads 64 KiB, then stops reading.
    let presigned_get = s3
        .get_object()
        .bucket("stall")
        .key("big")
        .presigned(cfg)
        .await
        .unwrap();
    let mut get_conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        path(presigned_get.uri())
    );
    get_conn.write_all(req.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 64 << 10];
    get_conn.read_exact(&mut got).await.unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let reading_stopped = Instant::now();

    // Meanwhile other clients are served.
    assert!(get(&s3, "stall", "big", Some("bytes=0-999")).await == big[..1000]);

    // The PUT is answered once its body has been silent for the limit.
    let mut answer = Vec::new();
    tokio::time::timeout(
        BODY_STALL_TIMEOUT + Duration::from_secs(60),
        put_conn.read_to_end(&mut answer),
    )
    .await
    .expect("a stalled PUT is answered")
    .unwrap();
    let waited = put_sent.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>RequestTimeout</Code>"), "{answer}");
    assert!(
        waited >= BODY_STALL_TIMEOUT - Duration::from_secs(1),
        "answered after {waited:?}, before the {BODY_STALL_TIMEOUT:?} limit"
    );
    assert_eq!(
        failure(s3.head_object().bucket("stall").key("half").send().await).0,
        404,
        "nothing is stored from a stalled PUT"
    );

    // The GET's connection is closed once its client has read nothing for the limit.
    let deadline = Instant::now() + SEND_STALL_TIMEOUT + Duration::from_secs(60);
    while metric(admin, stalled_metric).await < 2 {
        assert!(
            Instant::now() < deadline,
            "the unread GET was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let waited = reading_stopped.elapsed();
    assert!(
        waited >= SEND_STALL_TIMEOUT - Duration::from_secs(1),
        "dropped after {waited:?}, before the {SEND_STALL_TIMEOUT:?} limit"
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), get_conn.read_to_end(&mut rest))
        .await
        .expect("the connection was closed");
    let body_received = got.len() - head_end + rest.len();
    assert!(
        body_received < big.len(),
        "the whole body arrived ({body_received} bytes): the connection was not cut"
    );
    assert!(big.starts_with(&[&got[head_end..], &rest[..]].concat()));

    // The gateway still serves in full. (This read once failed mid-body in a full-suite run and
    // never alone: on failure, the gateway's log says why.)
    let r = s3
        .get_object()
        .bucket("stall")
        .key("big")
        .send()
        .await
        .unwrap();
    match r.body.collect().await {
        Ok(b) => assert!(b.into_bytes() == big),
        Err(e) => {
            let log = std::fs::read_to_string(&net.gateway().log).unwrap_or_default();
            let tail = log.len().saturating_sub(20_000);
            let tail = log.get(tail..).unwrap_or(&log);
            panic!("the whole-object GET after the stalls failed: {e:?}\ngateway log:\n{tail}");
        }
    }
    // The dropped GET's read ended because its client went away, not because the network failed.
    assert_eq!(metric(admin, "cairn_gateway_read_errors_total").await, 0);
    net.stop().await;
}

/// A network with no room for an object refuses it before its body is read: a client that sent
/// `Expect: 100-continue` never has to send it, and no node is left holding part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_network_refuses_a_put_before_its_body() {
    // Each node has room for 100 KiB: less than one 1 MiB shard.
    let net = Net::start_with(4, "100KiB").await;
    let s3 = net.s3();
    s3.create_bucket().bucket("full").send().await.unwrap();
    // A small object lives in its manifest: no shard, so it still fits.
    s3.put_object()
        .bucket("full")
        .key("small")
        .body(ByteStream::from_static(&[7; 2000]))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, "full", "small", None).await, vec![7; 2000]);

    let pre = presigned_put(&s3, "full", "big").await;
    let (addr, gw) = (net.addr(), net.gateway().clone());
    let path = pre.uri().trim_start_matches(&gw.endpoint).to_string();
    // The head only: the body is sent after `100 Continue`, which must not come.
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        8 << 20
    );
    let (code, head, body) = raw(addr, req.as_bytes()).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 503, "{head}\n{body}");
    assert!(
        body.contains("<Code>ServiceUnavailable</Code>") && body.contains("the network is full"),
        "{body}"
    );
    assert!(body.contains("cairn nodes"), "{body}");
    // Through the SDK too, which sends no `Expect: 100-continue`: the gateway takes the body it
    // is sent anyway, so the client reads the answer instead of a reset connection. And for a
    // multipart part.
    let r = s3
        .put_object()
        .bucket("full")
        .key("big")
        .body(ByteStream::from(bytes(32 << 20, 5)))
        .send()
        .await;
    assert!(message(&r).contains("the network is full"), "{r:?}");
    let id = start_upload(&s3, "full", "parts").await;
    let r = s3
        .upload_part()
        .bucket("full")
        .key("parts")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(bytes(5 << 20, 6)))
        .send()
        .await;
    assert_eq!(failure(r), (503, "ServiceUnavailable".into()));
    // Nothing was stored anywhere.
    let nodes = net.cairn_ok(&["--json", "nodes"]);
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    assert_eq!(nodes["shards"], 0, "{nodes}");
    assert_eq!(
        failure(s3.head_object().bucket("full").key("big").send().await).0,
        404
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_object_answers_a_suffix_range_with_all_of_itself() {
    let net = Net::start(4).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("void").send().await.unwrap();
    s3.put_object()
        .bucket("void")
        .key("empty")
        .body(ByteStream::from(Vec::new()))
        .send()
        .await
        .unwrap();
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(300))
            .unwrap();
    let get = s3
        .get_object()
        .bucket("void")
        .key("empty")
        .presigned(cfg.clone())
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("void")
        .key("empty")
        .presigned(cfg)
        .await
        .unwrap();
    let (addr, endpoint) = (net.addr(), net.endpoint().to_string());
    for (method, pre) in [("GET", &get), ("HEAD", &head)] {
        let path = pre.uri().trim_start_matches(&endpoint);
        let ask = |range: &str| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nRange: {range}\r\nConnection: close\r\n\r\n"
            )
        };
        // As S3: a suffix of an empty object is all of it, answered 200 with no Content-Range.
        let (code, head, body) = raw(addr, ask("bytes=-8").as_bytes()).await;
        let lower = head.to_ascii_lowercase();
        assert_eq!(code, 200, "{method}: {head}");
        assert!(!lower.contains("content-range"), "{method}: {head}");
        assert!(lower.contains("content-length: 0"), "{method}: {head}");
        assert!(body.is_empty(), "{method}");
        // A range that starts at a byte it does not have is not satisfiable.
        let (code, head, _) = raw(addr, ask("bytes=0-").as_bytes()).await;
        assert_eq!(code, 416, "{method}: {head}");
    }
    // And through the SDK.
    let got = s3
        .get_object()
        .bucket("void")
        .key("empty")
        .range("bytes=-8")
        .send()
        .await
        .unwrap();
    assert_eq!((got.content_length(), got.content_range()), (Some(0), None));
    assert!(got.body.collect().await.unwrap().into_bytes().is_empty());
    net.stop().await;
}

/// `s` with its `%XX` escapes decoded (what a client that asked for `encoding-type=url` does).
fn percent_decoded(s: &str) -> String {
    let (b, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_percent_encode_keys_when_asked_to() {
    use aws_sdk_s3::types::EncodingType;

    let net = Net::start(4).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("names").send().await.unwrap();
    let keys = [
        "a+b.txt",
        "c%2Fd",
        "e f",
        "plain/x",
        "t\tb",
        "x%41",
        "\u{e9}/(1).txt",
    ];
    // Encoded as S3 does: every byte but A-Z a-z 0-9 - . _ ~ and '/'.
    let encoded = [
        "a%2Bb.txt",
        "c%252Fd",
        "e%20f",
        "plain/x",
        "t%09b",
        "x%2541",
        "%C3%A9/%281%29.txt",
    ];
    for k in keys {
        s3.put_object()
            .bucket("names")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let key_list = |c: &[aws_sdk_s3::types::Object]| -> Vec<String> {
        c.iter().map(|o| o.key().unwrap().to_string()).collect()
    };

    // Not asked: keys as they are, and no EncodingType.
    let plain = s3.list_objects_v2().bucket("names").send().await.unwrap();
    assert_eq!(plain.encoding_type(), None);
    assert_eq!(key_list(plain.contents()), keys);
    let plain = s3.list_objects().bucket("names").send().await.unwrap();
    assert_eq!(plain.encoding_type(), None);
    assert_eq!(key_list(plain.contents()), keys);

    // V2, asked.
    let v2 = s3
        .list_objects_v2()
        .bucket("names")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .unwrap();
    assert_eq!(v2.encoding_type(), Some(&EncodingType::Url));
    assert_eq!(key_list(v2.contents()), encoded);
    // Prefix, delimiter and start-after come back encoded too.
    let v2 = s3
        .list_objects_v2()
        .bucket("names")
        .encoding_type(EncodingType::Url)
        .delimiter("/")
        .start_after("a+b.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        key_list(v2.contents()),
        ["c%252Fd", "e%20f", "t%09b", "x%2541"]
    );
    let prefixes: Vec<&str> = v2
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["plain/", "%C3%A9/"]);
    assert_eq!(v2.start_after(), Some("a%2Bb.txt"));
    assert_eq!(v2.delimiter(), Some("/"));
    let v2 = s3
        .list_objects_v2()
        .bucket("names")
        .encoding_type(EncodingType::Url)
        .prefix("\u{e9}/(")
        .send()
        .await
        .unwrap();
    assert_eq!(v2.prefix(), Some("%C3%A9/%28"));
    assert_eq!(key_list(v2.contents()), ["%C3%A9/%281%29.txt"]);
    // Pages of two, the continuation token as it came.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket("names")
            .encoding_type(EncodingType::Url)
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        seen.extend(key_list(page.contents()));
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    assert_eq!(seen, encoded);

    // V1: markers are keys, so they are encoded too (and decoded before they are sent back).
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = s3
            .list_objects()
            .bucket("names")
            .encoding_type(EncodingType::Url)
            .max_keys(3)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(page.encoding_type(), Some(&EncodingType::Url));
        if let Some(m) = &marker {
            assert_eq!(page.marker().map(percent_decoded).as_ref(), Some(m));
        }
        let got = key_list(page.contents());
        seen.extend(got.iter().cloned());
        if page.is_truncated() != Some(true) {
            break;
        }
        let next = page.next_marker().unwrap_or_else(|| got.last().unwrap());
        assert_eq!(next, got.last().unwrap().as_str());
        marker = Some(percent_decoded(next));
    }
    assert_eq!(seen, encoded);
    let decoded: Vec<String> = seen.iter().map(|k| percent_decoded(k)).collect();
    assert_eq!(decoded, keys);

    // Multipart uploads are listed by key as well.
    let id = start_upload(&s3, "names", "e f").await;
    let uploads = s3
        .list_multipart_uploads()
        .bucket("names")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.encoding_type(), Some(&EncodingType::Url));
    let listed: Vec<(&str, &str)> = uploads
        .uploads()
        .iter()
        .map(|u| (u.key().unwrap(), u.upload_id().unwrap()))
        .collect();
    assert_eq!(listed, [("e%20f", id.as_str())]);
    let uploads = s3
        .list_multipart_uploads()
        .bucket("names")
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.encoding_type(), None);
    assert_eq!(uploads.uploads()[0].key(), Some("e f"));

    // A key with a character XML 1.0 cannot carry is refused: listed without encoding, it
    // would make the listing unreadable.
    for bad in ["bell\u{7}", "esc\u{1b}[0m", "nul\u{0}"] {
        let r = s3
            .put_object()
            .bucket("names")
            .key(bad)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await;
        assert_eq!(failure(r), (400, "InvalidArgument".into()), "{bad:?}");
    }
    let r = s3
        .create_multipart_upload()
        .bucket("names")
        .key("bell\u{7}")
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    let plain = s3.list_objects_v2().bucket("names").send().await.unwrap();
    assert_eq!(key_list(plain.contents()), keys);
    net.stop().await;
}

/// Conditional writes are atomic: of PUTs racing with `If-None-Match: *` on one new key (a
/// lockfile, a table commit), or with `If-Match` on one ETag (read-modify-write), exactly one
/// lands and the others are refused with 412, however long their bodies took to store. The
/// same for CompleteMultipartUpload with `If-None-Match: *`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_writes_have_exactly_one_winner() {
    let net = Net::start(4).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("locks").send().await.unwrap();
    let body = |i: usize| bytes(256 << 10, 100 + i as u64);

    // Several PUTs, each its own body, each of which must see `key` absent (or at `etag`).
    let race = |key: &'static str, etag: Option<String>, seed: usize| {
        let s3 = s3.clone();
        async move {
            let puts = (seed..seed + 10).map(|i| {
                let (s3, etag) = (s3.clone(), etag.clone());
                async move {
                    let put = s3
                        .put_object()
                        .bucket("locks")
                        .key(key)
                        .body(body(i).into());
                    let put = match etag {
                        Some(e) => put.if_match(e),
                        None => put.if_none_match("*"),
                    };
                    (i, put.send().await)
                }
            });
            let mut won = Vec::new();
            for (i, r) in futures::future::join_all(puts).await {
                match r {
                    Ok(out) => won.push((i, out.e_tag().unwrap().to_string())),
                    Err(_) => assert_eq!(failure(r), (412, "PreconditionFailed".into()), "{i}"),
                }
            }
            assert_eq!(
                won.len(),
                1,
                "{key}: exactly one conditional PUT wins: {won:?}"
            );
            let (i, etag) = won.pop().unwrap();
            assert_eq!(
                get(&s3, "locks", key, None).await,
                body(i),
                "{key}: the winner's body"
            );
            etag
        }
    };
    let etag = race("lock", None, 0).await;
    // Read-modify-write: every writer read `etag`; only one may replace it.
    let next = race("lock", Some(etag.clone()), 10).await;
    assert_ne!(next, etag);
    // An If-None-Match PUT on the now existing key is still refused up front.
    let r = s3
        .put_object()
        .bucket("locks")
        .key("lock")
        .if_none_match("*")
        .body(body(99).into())
        .send()
        .await;
    assert_eq!(failure(r), (412, "PreconditionFailed".into()));

    // Two multipart uploads of one new key, completed at once with `If-None-Match: *`.
    let mut uploads = Vec::new();
    for i in 0..2 {
        let id = start_upload(&s3, "locks", "mpu").await;
        let e = upload_part(&s3, ("locks", "mpu", &id), 1, body(20 + i)).await;
        uploads.push((i, id, e));
    }
    let completes = uploads.iter().map(|(i, id, e)| {
        let s3 = s3.clone();
        async move {
            let r = s3
                .complete_multipart_upload()
                .bucket("locks")
                .key("mpu")
                .upload_id(id)
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .parts(CompletedPart::builder().part_number(1).e_tag(e).build())
                        .build(),
                )
                .send()
                .await;
            (*i, id.clone(), r)
        }
    });
    let mut won = Vec::new();
    for (i, id, r) in futures::future::join_all(completes).await {
        match r {
            Ok(_) => won.push(i),
            Err(e) => {
                assert_eq!(e.code(), Some("PreconditionFailed"), "{i}: {e:?}");
                // As S3 does on 412, the refused upload stays open, to be aborted (or retried).
                s3.abort_multipart_upload()
                    .bucket("locks")
                    .key("mpu")
                    .upload_id(id)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(
        won.len(),
        1,
        "exactly one conditional Complete wins: {won:?}"
    );
    assert_eq!(get(&s3, "locks", "mpu", None).await, body(20 + won[0]));
    net.stop().await;
}
