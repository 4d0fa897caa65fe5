//! What must survive: node failures in the middle of a read, and the loss of the gateway's own
//! disk (the catalog is exported to the network and restored on a fresh gateway). Also the
//! `cairn put --bucket` path that makes uploaded datasets visible over S3.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{
    Net, bytes, client, gateway_bin, init_gateway, run_gateway, start_upload, upload_part,
};
use md5::{Digest, Md5};
use serde_json::Value;

async fn admin(addr: std::net::SocketAddr, path: &str, token: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (code, text) = cairn_wire::admin::http_request(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every key of every bucket: (bucket, key) -> (size, ETag, user metadata, body).
async fn everything(
    s3: &aws_sdk_s3::Client,
) -> BTreeMap<(String, String), (i64, String, BTreeMap<String, String>, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let buckets = s3.list_buckets().send().await.unwrap();
    for b in buckets.buckets() {
        let bucket = b.name().unwrap().to_string();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(&bucket)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap();
            for o in page.contents() {
                let key = o.key().unwrap().to_string();
                let got = s3
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                let etag = got.e_tag().unwrap().to_string();
                let meta: BTreeMap<String, String> = got
                    .metadata()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let body = got.body.collect().await.unwrap().into_bytes().to_vec();
                out.insert((bucket.clone(), key), (o.size().unwrap(), etag, meta, body));
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_put_bucket_then_export_and_restore_on_a_fresh_gateway() {
    let net = Net::start(6).await;
    let s3 = net.s3();
    let gw = net.gateway().clone();
    let out = net.cairn_ok(&["key", "generate", "--json"]);
    let uploader: Value = serde_json::from_slice(&out.stdout).unwrap();
    let uploader = uploader["public_key"].as_str().unwrap().to_string();

    // A dataset directory: tiny (inline), small (packed) and large (own object) files.
    let src = net.dir.path().join("dataset");
    let mut files = BTreeMap::new();
    for (i, size) in [10usize, 5000, 70_000, 300_000, 3 << 20].iter().enumerate() {
        let rel = format!("shards/{i:03}.bin");
        files.insert(rel.clone(), bytes(*size, 100 + i as u64));
    }
    files.insert("meta/labels.json".into(), b"{\"classes\": 10}".to_vec());
    for (rel, data) in &files {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let src_s = src.to_str().unwrap();
    let out = net.cairn_ok(&[
        "put", src_s, "--bucket", "corpus", "--prefix", "v1/", "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["s3"]["objects"], files.len());
    for (rel, data) in &files {
        let got = s3
            .get_object()
            .bucket("corpus")
            .key(format!("v1/{rel}"))
            .send()
            .await
            .unwrap();
        let meta = got.metadata().cloned().unwrap_or_default();
        assert_eq!(
            meta["cairn-signer"], uploader,
            "the uploader signed it, not the gateway"
        );
        assert_eq!(
            got.e_tag(),
            Some(format!("\"{}\"", md5_hex(data)).as_str()),
            "{rel}: a file published with --bucket shows its MD5 as ETag, as S3 would"
        );
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], &data[..], "{rel}");
    }
    // Ranged read inside a packed file.
    let got = s3
        .get_object()
        .bucket("corpus")
        .key("v1/shards/002.bin")
        .range("bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        &files["shards/002.bin"][1000..2000]
    );
    // A single file lands as PREFIX/NAME.
    let one = src.join("shards/004.bin");
    net.cairn_ok(&[
        "put",
        one.to_str().unwrap(),
        "--bucket",
        "corpus",
        "--prefix",
        "single",
    ]);
    let head = s3
        .head_object()
        .bucket("corpus")
        .key("single/004.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(3 << 20));
    assert_eq!(
        head.e_tag(),
        Some(format!("\"{}\"", md5_hex(&files["shards/004.bin"])).as_str())
    );
    // ETags handed to /import are checked: MD5s only, for paths the dataset has.
    let dataset = report["cid"].as_str().unwrap();
    for (etags, says) in [
        (
            serde_json::json!({"shards/000.bin": "not-an-md5"}),
            "32 hex digits",
        ),
        (
            serde_json::json!({"no/such/file": "00112233445566778899aabbccddeeff"}),
            "does not have",
        ),
    ] {
        let body = serde_json::json!({"bucket": "corpus", "prefix": "v2/", "cid": dataset,
                                      "etags": etags});
        let (code, answer) = admin(gw.admin, "/import", &gw.secret_key, &body.to_string()).await;
        assert_eq!(code, 400, "{answer}");
        assert!(answer.to_string().contains(says), "{answer}");
    }
    // Without a reachable gateway, --bucket fails with the fix in the message.
    let out = std::process::Command::new(gateway_bin().with_file_name("cairn"))
        .args([
            "put",
            one.to_str().unwrap(),
            "--bucket",
            "corpus",
            "--gateway",
            "127.0.0.1:1",
            "--gateway-token",
            "x",
        ])
        .env("CAIRN_DEVNET", net.devnet_dir())
        .env("CAIRN_KEY", net.dir.path().join("uploader.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));

    // Objects written over S3, including keys that are not plain paths.
    s3.create_bucket().bucket("scratch").send().await.unwrap();
    for (key, size) in [
        ("x", 100usize),
        ("x/y", 200),
        ("a//b", 300),
        ("../up", 400),
        ("big", 5 << 20),
    ] {
        s3.put_object()
            .bucket("scratch")
            .key(key)
            .content_type("application/x-test")
            .metadata("n", size.to_string())
            .body(ByteStream::from(bytes(size, size as u64)))
            .send()
            .await
            .unwrap();
    }
    s3.create_bucket()
        .bucket("empty-bucket")
        .send()
        .await
        .unwrap();
    let before = everything(&s3).await;

    // Export needs the token.
    let (code, _) = admin(gw.admin, "/export", "wrong", "").await;
    assert_eq!(code, 401);
    let (code, export) = admin(gw.admin, "/export", &gw.secret_key, "").await;
    assert_eq!(code, 200, "{export}");
    let cid = export["cid"].as_str().unwrap().to_string();
    assert_eq!(export["objects"], before.len());

    // The export is an ordinary signed dataset: `cairn ls` reads it.
    let out = net.cairn_ok(&["ls", &cid]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("corpus/v1/meta/labels.json"));

    // A fresh gateway with an empty disk restores everything from the CID alone.
    let dir2 = net.dir.path().join("gateway2");
    init_gateway(&dir2, "RESTOREKEY", "restore-secret-1234");
    let (mut child, info) = run_gateway(&net, &dir2, &[]).await;
    let s3b = client(&info.endpoint, "RESTOREKEY", "restore-secret-1234", true);
    assert!(
        s3b.list_buckets()
            .send()
            .await
            .unwrap()
            .buckets()
            .is_empty()
    );
    let (code, restored) = admin(
        info.admin,
        "/restore",
        "restore-secret-1234",
        &format!("{{\"cid\": \"{cid}\"}}"),
    )
    .await;
    assert_eq!(code, 200, "{restored}");
    let after = everything(&s3b).await;
    assert_eq!(after.len(), before.len());
    for (k, v) in &before {
        let w = &after[k];
        assert_eq!((v.0, &v.1, &v.3), (w.0, &w.1, &w.3), "{k:?}");
        let user = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .filter(|(k, _)| !k.starts_with("cairn-"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(user(&v.2), user(&w.2), "{k:?}");
        assert_eq!(v.2.get("cairn-signer"), w.2.get("cairn-signer"), "{k:?}");
    }
    let names: Vec<String> = s3b
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect();
    assert_eq!(names, ["corpus", "empty-bucket", "scratch"]);
    // Restoring an ordinary dataset is refused with a hint.
    let dataset = report["cid"].as_str().unwrap();
    let (code, err) = admin(
        info.admin,
        "/restore",
        "restore-secret-1234",
        &format!("{{\"cid\": \"{dataset}\"}}"),
    )
    .await;
    assert_eq!(code, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("import"), "{err}");
    let _ = child.kill().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_two_of_six_nodes_stopping_mid_read() {
    let mut net = Net::start(6).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("reads").send().await.unwrap();
    let data = bytes(40 << 20, 9);
    s3.put_object()
        .bucket("reads")
        .key("obj")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();

    let mut got = s3
        .get_object()
        .bucket("reads")
        .key("obj")
        .send()
        .await
        .unwrap();
    let mut received = Vec::with_capacity(data.len());
    while received.len() < 6 << 20 {
        let chunk = got.body.try_next().await.unwrap().expect("more body");
        received.extend_from_slice(&chunk);
    }
    // Two nodes go away while the response is streaming.
    net.devnet.stop_node(1).await;
    net.devnet.stop_node(4).await;
    loop {
        match got.body.try_next().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => panic!(
                "body failed after {} bytes: {e}\ngateway log:\n{}",
                received.len(),
                std::fs::read_to_string(&net.gateway().log).unwrap_or_default()
            ),
        }
    }
    assert_eq!(received.len(), data.len());
    assert!(received == data, "bytes after the failure are correct");

    // New requests, whole and ranged in random order, still succeed.
    let mut x = 7u64;
    for _ in 0..12 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let start = (x >> 20) as usize % (data.len() - (1 << 20));
        let len = 1 + (x as usize % (1 << 20));
        let r = s3
            .get_object()
            .bucket("reads")
            .key("obj")
            .range(format!("bytes={start}-{}", start + len - 1))
            .send()
            .await
            .unwrap();
        assert_eq!(
            &r.body.collect().await.unwrap().into_bytes()[..],
            &data[start..start + len]
        );
    }
    let whole = s3
        .get_object()
        .bucket("reads")
        .key("obj")
        .send()
        .await
        .unwrap();
    assert!(whole.body.collect().await.unwrap().into_bytes() == data);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_disk_gets_its_catalog_back_from_the_network() {
    let net = Net::start(6).await;
    // A gateway that exports its catalog every second when it changed.
    let dir = net.dir.path().join("gw-a");
    init_gateway(&dir, "DISKKEY", "disk-secret-1234");
    let (mut a, info) = run_gateway(&net, &dir, &["--export-every-secs", "1"]).await;
    let s3 = client(&info.endpoint, "DISKKEY", "disk-secret-1234", true);
    for b in ["models", "shards"] {
        s3.create_bucket().bucket(b).send().await.unwrap();
    }
    for (i, (bucket, key, size)) in [
        ("shards", "train/000.tar", 300_000usize),
        ("shards", "train/001.tar", 5 << 20),
        ("shards", "val/000.tar", 1000),
        ("models", "ckpt/step-100.bin", 2 << 20),
        ("models", "gone", 10),
    ]
    .into_iter()
    .enumerate()
    {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .metadata("step", i.to_string())
            .body(ByteStream::from(bytes(size, i as u64 + 50)))
            .send()
            .await
            .unwrap();
    }
    s3.delete_object()
        .bucket("models")
        .key("gone")
        .send()
        .await
        .unwrap();
    let before = everything(&s3).await;
    assert_eq!(before.len(), 4);

    // Wait for an automatic export that holds the last change.
    let status = |addr| async move {
        let (code, text) = cairn_wire::admin::http_get(addr, "/status", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(code, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let exported = loop {
        let st = status(info.admin).await;
        if st["last_export"]["generation"] == st["catalog_generation"] {
            break st["last_export"]["cid"].as_str().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no automatic export within 60 s: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = a.kill().await;
    let _ = a.wait().await;

    // The disk is lost; config.toml and gateway.key were kept. The new gateway finds the
    // newest export signed by that key on the nodes and restores it before serving.
    let dir2 = net.dir.path().join("gw-b");
    std::fs::create_dir_all(&dir2).unwrap();
    for f in ["config.toml", "gateway.key"] {
        std::fs::copy(dir.join(f), dir2.join(f)).unwrap();
    }
    let (mut b, info2) = run_gateway(&net, &dir2, &[]).await;
    let st = status(info2.admin).await;
    assert_eq!(st["last_export"]["cid"], exported.as_str(), "{st}");
    let s3b = client(&info2.endpoint, "DISKKEY", "disk-secret-1234", true);
    let after = everything(&s3b).await;
    assert_eq!(after.len(), before.len());
    for (k, v) in &before {
        let w = &after[k];
        assert_eq!((v.0, &v.1, &v.3), (w.0, &w.1, &w.3), "{k:?}");
        assert_eq!(v.2.get("step"), w.2.get("step"), "{k:?}");
    }
    // A restart on the same (now restored) disk does not restore again over it.
    s3b.delete_object()
        .bucket("shards")
        .key("val/000.tar")
        .send()
        .await
        .unwrap();
    let _ = b.kill().await;
    let _ = b.wait().await;
    let (mut b, info3) = run_gateway(&net, &dir2, &[]).await;
    let s3c = client(&info3.endpoint, "DISKKEY", "disk-secret-1234", true);
    assert_eq!(everything(&s3c).await.len(), before.len() - 1);

    // A new gateway (its own key) starts empty, and `{"latest": true}` finds nothing of its own.
    let dir3 = net.dir.path().join("gw-c");
    init_gateway(&dir3, "OTHERKEY", "other-secret-1234");
    let (mut c, info4) = run_gateway(&net, &dir3, &[]).await;
    let s3d = client(&info4.endpoint, "OTHERKEY", "other-secret-1234", true);
    assert!(everything(&s3d).await.is_empty());
    let (code, _) = admin(
        info4.admin,
        "/restore",
        "other-secret-1234",
        r#"{"latest": true}"#,
    )
    .await;
    assert_eq!(code, 404);
    for child in [&mut b, &mut c] {
        let _ = child.kill().await;
    }
    net.stop().await;
}

/// CompleteMultipartUpload answers 200 at once and does its slow half (reading the parts back,
/// publishing) inside the response body, as S3 does, so a large object's Complete cannot time
/// out a client. A failure in that half must still reach the client as an error, and must
/// commit nothing: no object appears, and the upload stays open for a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_that_fails_after_its_200_is_an_error_and_commits_nothing() {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

    let mut net = Net::start(6).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("late").send().await.unwrap();
    let id = start_upload(&s3, "late", "obj").await;
    let mut parts = CompletedMultipartUpload::builder();
    for (n, len) in [(1, 5 << 20), (2, 1 << 20)] {
        let etag = upload_part(&s3, ("late", "obj", &id), n, bytes(len, n as u64)).await;
        parts = parts.parts(CompletedPart::builder().part_number(n).e_tag(etag).build());
    }
    // Half the nodes go: every 4+2 stripe has lost more shards than it can rebuild, so the
    // parts cannot be read back. The part list itself is fine, so the 200 has gone out before
    // that is found.
    for n in [1, 3, 5] {
        net.devnet.stop_node(n).await;
    }
    let err = s3
        .complete_multipart_upload()
        .bucket("late")
        .key("obj")
        .upload_id(&id)
        .multipart_upload(parts.build())
        .send()
        .await
        .expect_err("a Complete whose parts cannot be read must fail");
    assert_eq!(
        err.code(),
        Some("ServiceUnavailable"),
        "the error document inside the 200: {err:?}"
    );
    let head = s3.head_object().bucket("late").key("obj").send().await;
    assert!(
        head.is_err_and(|e| e.raw_response().map(|r| r.status().as_u16()) == Some(404)),
        "no object may appear"
    );
    let listed = s3
        .list_parts()
        .bucket("late")
        .key("obj")
        .upload_id(&id)
        .send()
        .await
        .expect("the upload stays open");
    assert_eq!(listed.parts().len(), 2);
    let log = std::fs::read_to_string(&net.gateway().log).unwrap_or_default();
    assert!(
        log.contains("completing a multipart upload failed after its 200"),
        "the gateway logs it"
    );
    assert_eq!(
        common::metric(net.gateway().admin, "cairn_gateway_server_errors_total").await,
        1,
        "and counts it as the gateway's failure, though its status was 200"
    );
    net.stop().await;
}

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|b| format!("{b:02x}")).collect()
}

/// The erasure parameters of the object at `bucket/key` (from `cairn stat` of its CID).
async fn erasure_of(net: &Net, s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (u64, u64) {
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let cid = head.metadata().unwrap()["cairn-cid"].clone();
    let out = net.cairn_ok(&["--json", "stat", &cid]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    (st["k"].as_u64().unwrap(), st["m"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_keeps_its_erasure_parameters_across_a_restart_that_changes_them() {
    let net = Net::start(6).await;
    let dir = net.dir.path().join("gw-k");
    init_gateway(&dir, "ERASUREKEY", "erasure-secret-1234");
    let (mut gw, info) = run_gateway(&net, &dir, &["--k", "4", "--m", "2"]).await;
    let s3 = client(&info.endpoint, "ERASUREKEY", "erasure-secret-1234", true);
    s3.create_bucket().bucket("ec-test").send().await.unwrap();
    let id = start_upload(&s3, "ec-test", "big").await;
    let (first, second) = (bytes(5 << 20, 1), bytes(3 << 20, 2));
    let e1 = upload_part(&s3, ("ec-test", "big", &id), 1, first.clone()).await;

    // The operator restarts the gateway with other parameters while the upload is open.
    let _ = gw.kill().await;
    let (mut gw, info) = run_gateway(&net, &dir, &["--k", "2", "--m", "1"]).await;
    let s3 = client(&info.endpoint, "ERASUREKEY", "erasure-secret-1234", true);
    s3.put_object()
        .bucket("ec-test")
        .key("new")
        .body(ByteStream::from(bytes(2 << 20, 3)))
        .send()
        .await
        .unwrap();
    assert_eq!(erasure_of(&net, &s3, "ec-test", "new").await, (2, 1));

    // The open upload's parts keep the parameters it started with, so they still join.
    let e2 = upload_part(&s3, ("ec-test", "big", &id), 2, second.clone()).await;
    let parts = [(1, e1), (2, e2)]
        .into_iter()
        .map(|(n, e)| {
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(e)
                .build()
        })
        .collect();
    s3.complete_multipart_upload()
        .bucket("ec-test")
        .key("big")
        .upload_id(&id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("parts of one upload share its erasure parameters");
    assert_eq!(erasure_of(&net, &s3, "ec-test", "big").await, (4, 2));
    let got = s3
        .get_object()
        .bucket("ec-test")
        .key("big")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(got.len(), first.len() + second.len());
    assert!(got[..first.len()] == first[..] && got[first.len()..] == second[..]);
    let _ = gw.kill().await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_source_cannot_be_read_stores_no_part() {
    use aws_sdk_s3::error::ProvideErrorMetadata;

    let mut net = Net::start(6).await;
    let dir = net.dir.path().join("gw-copy");
    init_gateway(&dir, "COPYKEY", "copy-secret-1234");
    // The sources take all six nodes (4+2)...
    let (mut gw, info) = run_gateway(&net, &dir, &["--k", "4", "--m", "2"]).await;
    let s3 = client(&info.endpoint, "COPYKEY", "copy-secret-1234", true);
    s3.create_bucket().bucket("copies").send().await.unwrap();
    for (key, len) in [("small", 512 << 10), ("large", 3 << 20)] {
        s3.put_object()
            .bucket("copies")
            .key(key)
            .body(ByteStream::from(bytes(len, len as u64)))
            .send()
            .await
            .unwrap();
    }
    // ... parts only three (2+1), so that the three nodes left can store them. No shard
    // cache: the sources are read from the nodes.
    let _ = gw.kill().await;
    let args: Vec<&str> = "--k 2 --m 1 --cache-mib 0 --readahead-mib 0"
        .split(' ')
        .collect();
    let (mut gw, info) = run_gateway(&net, &dir, &args).await;
    let s3 = client(&info.endpoint, "COPYKEY", "copy-secret-1234", true);
    let id = start_upload(&s3, "copies", "joined").await;
    // The gateway has the sources' manifests (a first byte of each read) when half the nodes
    // go: a copy then gets as far as reading the sources' stripes, which cannot be rebuilt.
    for key in ["small", "large"] {
        let got = s3
            .get_object()
            .bucket("copies")
            .key(key)
            .range("bytes=0-0")
            .send()
            .await
            .unwrap();
        assert_eq!(got.body.collect().await.unwrap().into_bytes().len(), 1);
    }
    for n in [1, 3, 5] {
        net.devnet.stop_node(n).await;
    }
    // Through the whole-body path (small) and the streaming path (large), whole and ranged (a
    // range over every data shard of the stripe, so that some are on stopped nodes).
    for (n, key, range) in [
        (1, "small", None),
        (2, "large", None),
        (3, "large", Some("bytes=1000-3000000")),
    ] {
        let r = s3
            .upload_part_copy()
            .bucket("copies")
            .key("joined")
            .upload_id(&id)
            .part_number(n)
            .copy_source(format!("copies/{key}"))
            .set_copy_source_range(range.map(str::to_string))
            .send()
            .await;
        let err = r.expect_err(&format!(
            "part {n}: a copy whose source cannot be read fails"
        ));
        let status = err.raw_response().map(|r| r.status().as_u16());
        assert_eq!(
            (status, err.code()),
            (Some(503), Some("ServiceUnavailable")),
            "part {n}: {err:?}"
        );
        assert!(
            err.message().is_some_and(|m| m.contains("copy source")),
            "part {n}: {err:?}"
        );
    }
    let listed = s3
        .list_parts()
        .bucket("copies")
        .key("joined")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert!(listed.parts().is_empty(), "no part stored: {listed:?}");
    let _ = gw.kill().await;
    net.stop().await;
}
