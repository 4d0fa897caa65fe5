//! Limits checked before a body is stored, and answers where S3 refuses or differs, through the
//! real `aws-sdk-s3` against a devnet of real node processes and a real gateway process.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::MetadataDirective;
use common::{Net, bytes, failure, presigned_put, raw};

/// Shards stored on the whole devnet, as `cairn nodes --json` counts them.
fn shards(net: &Net) -> u64 {
    let out = net.cairn_ok(&["nodes", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["shards"].as_u64().expect("a shard count")
}

/// `n` bytes of user metadata (keys and values) in one entry.
fn metadata_of(n: usize) -> (String, String) {
    let key = "big".to_string();
    (key.clone(), "v".repeat(n - key.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_a_header_decides_are_checked_before_the_body_is_stored() {
    let net = Net::start(6).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("lim").send().await.unwrap();
    let before = shards(&net);

    // A 64 MiB PUT with 10 KB of metadata: refused as S3 refuses it (a 4xx, so the SDK does
    // not send it again), and not one shard stored. The SDK sends the body without waiting
    // for 100-continue, so it also shows the answer reaches a client still sending.
    let (k, v) = metadata_of(10_000);
    let r = s3
        .put_object()
        .bucket("lim")
        .key("big-meta")
        .metadata(k, v)
        .body(ByteStream::from(bytes(64 << 20, 1)))
        .send()
        .await;
    assert_eq!(failure(r), (400, "MetadataTooLarge".into()));
    assert_eq!(shards(&net), before, "a refused PUT stored shards");

    // S3's limit is 2 KiB of keys and values: exactly that is taken, one byte more is not.
    let (k, v) = metadata_of(2048);
    s3.put_object()
        .bucket("lim")
        .key("at-limit")
        .metadata(k, v)
        .body(ByteStream::from(b"x".to_vec()))
        .send()
        .await
        .unwrap();
    let (k, v) = metadata_of(2049);
    let r = s3
        .put_object()
        .bucket("lim")
        .key("over-limit")
        .metadata(k, v)
        .body(ByteStream::from(b"x".to_vec()))
        .send()
        .await;
    assert_eq!(failure(r), (400, "MetadataTooLarge".into()));

    // CreateMultipartUpload with 50 KB of metadata is refused at once, not at Complete (which
    // answered 200 with an error document, so the upload could never finish).
    let (k, v) = metadata_of(50_000);
    let r = s3
        .create_multipart_upload()
        .bucket("lim")
        .key("mp")
        .metadata(k, v)
        .send()
        .await;
    assert_eq!(failure(r), (400, "MetadataTooLarge".into()));

    // CopyObject with REPLACE has the same limit (it skipped it: 900 such copies outgrew the
    // catalog's export); COPY keeps what the source has.
    let (k, v) = metadata_of(80_000);
    let r = s3
        .copy_object()
        .bucket("lim")
        .key("copy")
        .copy_source("lim/at-limit")
        .metadata_directive(MetadataDirective::Replace)
        .metadata(k, v)
        .send()
        .await;
    assert_eq!(failure(r), (400, "MetadataTooLarge".into()));
    let r = s3.head_object().bucket("lim").key("copy").send().await;
    assert_eq!(failure(r).0, 404, "a refused copy made an object");
    s3.copy_object()
        .bucket("lim")
        .key("copy")
        .copy_source("lim/at-limit")
        .send()
        .await
        .unwrap();

    // A content type longer than a manifest holds is refused before the body too; a client
    // that sends its body without waiting for 100-continue has it taken and dropped, so it
    // finishes sending and reads the answer (raw, since SDKs also read an early answer).
    let r = s3
        .put_object()
        .bucket("lim")
        .key("ct")
        .content_type("a/".to_string() + &"b".repeat(300))
        .body(ByteStream::from(bytes(2 << 20, 2)))
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    let pre = presigned_put(&s3, "lim", "ct").await;
    let (addr, endpoint) = (net.addr(), net.endpoint().to_string());
    let path = pre.uri().trim_start_matches(&endpoint).to_string();
    let body_len = 48 << 20;
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: a/{}\r\n\
         Content-Length: {body_len}\r\nConnection: close\r\n\r\n",
        "b".repeat(300)
    )
    .into_bytes();
    request.extend(bytes(body_len, 4));
    let (code, head, body) = raw(addr, &request).await;
    assert_eq!(code, 400, "{head}\n{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("<Code>InvalidArgument</Code>"));

    // An upload part for an upload that does not exist is refused before its body, and the
    // client (sending a body without 100-continue) reads the answer.
    let r = s3
        .upload_part()
        .bucket("lim")
        .key("mp")
        .upload_id("0000")
        .part_number(1)
        .body(ByteStream::from(bytes(8 << 20, 3)))
        .send()
        .await;
    assert_eq!(failure(r), (404, "NoSuchUpload".into()));
    // (The one-byte objects above are inline in the catalog: no shards.)
    assert_eq!(shards(&net), before, "refused writes stored shards");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_where_s3_refuses_or_differs() {
    let net = Net::start(4).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("ans").send().await.unwrap();
    for key in ["a", "b", "c"] {
        s3.put_object()
            .bucket("ans")
            .key(key)
            .body(ByteStream::from(key.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
    }

    // A copy source naming a version copies nothing: this gateway keeps no versions. The
    // `null` version is the current object, as on S3 without versioning.
    let r = s3
        .copy_object()
        .bucket("ans")
        .key("copied")
        .copy_source("ans/a?versionId=3HL4kqtJlcpXroDTDmJ")
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    let r = s3.head_object().bucket("ans").key("copied").send().await;
    assert_eq!(failure(r).0, 404);
    s3.copy_object()
        .bucket("ans")
        .key("copied")
        .copy_source("ans/a?versionId=null")
        .send()
        .await
        .unwrap();
    // A GET or DELETE of another version neither reads nor deletes the current one.
    let r = s3
        .get_object()
        .bucket("ans")
        .key("a")
        .version_id("3HL4kqtJlcpXroDTDmJ")
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    let r = s3
        .delete_object()
        .bucket("ans")
        .key("a")
        .version_id("3HL4kqtJlcpXroDTDmJ")
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    s3.head_object()
        .bucket("ans")
        .key("a")
        .send()
        .await
        .unwrap();

    // max-keys=0 is an empty, complete page (a truncated one with an empty token had pagers
    // ask again forever); a negative one is refused.
    let page = s3
        .list_objects_v2()
        .bucket("ans")
        .max_keys(0)
        .send()
        .await
        .unwrap();
    assert_eq!(page.is_truncated(), Some(false));
    assert_eq!(page.key_count(), Some(0));
    assert!(page.next_continuation_token().is_none());
    let r = s3.list_objects_v2().bucket("ans").max_keys(-1).send().await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    let r = s3.list_objects().bucket("ans").max_keys(-1).send().await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));

    // A key holding CR lists as itself (written raw, XML parsers read it as LF, and a GET of
    // what the listing said found nothing).
    let cr = "line\rbreak";
    s3.put_object()
        .bucket("ans")
        .key(cr)
        .body(ByteStream::from(b"cr".to_vec()))
        .send()
        .await
        .unwrap();
    let listed = s3
        .list_objects_v2()
        .bucket("ans")
        .prefix("line")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [cr]);
    let got = s3.get_object().bucket("ans").key(keys[0]).send().await;
    assert_eq!(
        got.unwrap().body.collect().await.unwrap().into_bytes(),
        &b"cr"[..]
    );
    // An object stored as XML keeps its bytes, CR and all.
    let doc = b"<a>\r\n\x01</a>".to_vec();
    s3.put_object()
        .bucket("ans")
        .key("doc.xml")
        .content_type("application/xml")
        .body(ByteStream::from(doc.clone()))
        .send()
        .await
        .unwrap();
    let got = s3.get_object().bucket("ans").key("doc.xml").send().await;
    assert_eq!(got.unwrap().body.collect().await.unwrap().into_bytes(), doc);

    // A key with NUL (refused for writes) echoed in an error document leaves it well-formed:
    // the SDK reads the error code instead of failing to parse the answer.
    let r = s3.get_object().bucket("ans").key("nul\0key").send().await;
    let (status, code) = failure(r);
    assert!(status == 404 || status == 400, "{status} {code}");
    assert!(!code.is_empty(), "the error document did not parse");
    let r = s3
        .put_object()
        .bucket("ans")
        .key("nul\0key")
        .body(ByteStream::from(b"x".to_vec()))
        .send()
        .await;
    assert_eq!(failure(r).0, 400);
    // ... and DeleteObjects naming such a key is refused whole, not echoed raw.
    let del = s3
        .delete_objects()
        .bucket("ans")
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("b")
                        .build()
                        .unwrap(),
                )
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("nul\0key")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await;
    let (status, code) = failure(del);
    assert_eq!(status, 400, "{code}");
    s3.head_object()
        .bucket("ans")
        .key("b")
        .send()
        .await
        .unwrap();

    // A range ending past any size is clamped to the object, as S3 does: 206, all of it.
    let body = bytes(100_000, 7);
    s3.put_object()
        .bucket("ans")
        .key("r")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    for range in [
        "bytes=0-18446744073709551615",
        "bytes=10-99999999999999999999999",
    ] {
        let got = s3
            .get_object()
            .bucket("ans")
            .key("r")
            .range(range)
            .send()
            .await
            .unwrap();
        let first: usize = range[6..range.find('-').unwrap()].parse().unwrap();
        assert_eq!(
            got.content_range(),
            Some(format!("bytes {first}-99999/100000").as_str()),
            "{range}"
        );
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes(),
            &body[first..],
            "{range}"
        );
    }
    net.stop().await;
}
