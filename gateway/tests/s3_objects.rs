//! Buckets and objects: create, head, list and delete buckets; put, get (whole and by range),
//! head, copy and delete objects, conditional reads, and the errors S3 answers, through the real
//! `aws-sdk-s3` against a devnet of real node processes and a real gateway process.

mod common;

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, Delete, ObjectIdentifier};
use common::{Net, bytes, failure, get, healthy, md5_hex, raw};

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
