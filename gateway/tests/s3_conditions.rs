//! Conditional writes through the real `aws-sdk-s3` against a devnet of real node processes and
//! a real gateway process: racing writers on one key, of which exactly one wins.

mod common;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{Net, bytes, failure, get, start_upload, upload_part};

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

/// CopyObject and UploadPartCopy honour the four `x-amz-copy-source-if-*` conditions on the
/// source: a condition that fails is 412 and copies nothing; one that holds copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_honour_their_source_conditions() {
    use aws_sdk_s3::primitives::DateTime;
    let net = Net::start(4).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("copies").send().await.unwrap();
    let data = bytes(100_000, 7);
    let put = s3
        .put_object()
        .bucket("copies")
        .key("src")
        .body(data.clone().into())
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_string();
    let head = s3
        .head_object()
        .bucket("copies")
        .key("src")
        .send()
        .await
        .unwrap();
    let modified = head.last_modified().unwrap().secs();
    let (before, after) = (
        DateTime::from_secs(modified - 3600),
        DateTime::from_secs(modified + 3600),
    );
    let copy = |dest: &'static str| {
        s3.copy_object()
            .bucket("copies")
            .key(dest)
            .copy_source("copies/src")
    };
    let refused = [
        (
            "if-match",
            copy("a").copy_source_if_match("\"0123\"").send().await,
        ),
        (
            "if-none-match",
            copy("a").copy_source_if_none_match(&etag).send().await,
        ),
        (
            "if-unmodified-since",
            copy("a")
                .copy_source_if_unmodified_since(before)
                .send()
                .await,
        ),
        (
            "if-modified-since",
            copy("a").copy_source_if_modified_since(after).send().await,
        ),
    ];
    for (what, r) in refused {
        assert_eq!(failure(r), (412, "PreconditionFailed".into()), "{what}");
    }
    let missing = s3.head_object().bucket("copies").key("a").send().await;
    assert!(missing.is_err(), "a refused copy wrote its destination");
    let held = [
        copy("b").copy_source_if_match(&etag).send().await,
        copy("c").copy_source_if_none_match("\"0123\"").send().await,
        copy("d")
            .copy_source_if_unmodified_since(after)
            .send()
            .await,
        copy("e").copy_source_if_modified_since(before).send().await,
    ];
    for (dest, r) in ["b", "c", "d", "e"].into_iter().zip(held) {
        r.unwrap_or_else(|e| panic!("copy to {dest}: {e:?}"));
        assert_eq!(get(&s3, "copies", dest, None).await, data, "{dest}");
    }
    // UploadPartCopy: the same conditions on its source.
    let id = start_upload(&s3, "copies", "joined").await;
    let part = |n: i32| {
        s3.upload_part_copy()
            .bucket("copies")
            .key("joined")
            .upload_id(&id)
            .part_number(n)
            .copy_source("copies/src")
    };
    let r = part(1).copy_source_if_modified_since(after).send().await;
    assert_eq!(failure(r), (412, "PreconditionFailed".into()));
    let r = part(1).copy_source_if_none_match(&etag).send().await;
    assert_eq!(failure(r), (412, "PreconditionFailed".into()));
    let ok = part(1)
        .copy_source_if_modified_since(before)
        .send()
        .await
        .unwrap();
    let e = ok.copy_part_result().unwrap().e_tag().unwrap().to_string();
    s3.complete_multipart_upload()
        .bucket("copies")
        .key("joined")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(e).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, "copies", "joined", None).await, data);
}
