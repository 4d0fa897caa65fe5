//! Listings through the real `aws-sdk-s3` against a devnet of real node processes and a real
//! gateway process: pages, prefixes, delimiters, markers, and keys percent-encoded when asked.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::{Net, bytes, failure, start_upload};

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
    let prefixes = prefix_list(top.common_prefixes());
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
    let prefixes = prefix_list(v2.common_prefixes());
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

    // An encoding other than url is S3's 400 InvalidArgument, on every listing.
    let bogus = || EncodingType::from("base64");
    let r = s3
        .list_objects_v2()
        .bucket("names")
        .encoding_type(bogus())
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    let r = s3
        .list_objects()
        .bucket("names")
        .encoding_type(bogus())
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    let r = s3
        .list_multipart_uploads()
        .bucket("names")
        .encoding_type(bogus())
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_listings_page_with_markers_prefixes_and_delimiters() {
    let net = Net::start(4).await;
    let s3 = net.s3();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    // Three uploads of one key, started in turn, and others under prefixes.
    let mut started = Vec::new();
    for key in [
        "ckpt/a", "ckpt/a", "ckpt/a", "ckpt/b", "logs/1", "logs/2", "top",
    ] {
        started.push((key.to_string(), start_upload(&s3, "mpu", key).await));
        // Distinct start times, so one key's uploads have an order.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }

    // Pages of 2, following NextKeyMarker and NextUploadIdMarker: every upload once, by key
    // and, for one key, in the order they were started.
    let mut seen = Vec::new();
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    let mut pages = 0;
    loop {
        let page = s3
            .list_multipart_uploads()
            .bucket("mpu")
            .max_uploads(2)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert_eq!(page.max_uploads(), Some(2));
        for u in page.uploads() {
            seen.push((
                u.key().unwrap().to_string(),
                u.upload_id().unwrap().to_string(),
            ));
        }
        if page.is_truncated() != Some(true) {
            assert!(page.next_key_marker().is_none());
            break;
        }
        assert_eq!(page.uploads().len(), 2);
        key_marker = page.next_key_marker().map(str::to_string);
        id_marker = page.next_upload_id_marker().map(str::to_string);
        assert!(pages < 10, "the pages do not end");
    }
    assert_eq!(seen, started);
    assert_eq!(pages, 4);

    // A delimiter rolls keys into common prefixes, each counting as one entry.
    let page = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes = prefix_list(page.common_prefixes());
    assert_eq!(prefixes, ["ckpt/", "logs/"]);
    let keys: Vec<&str> = page.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(keys, ["top"]);
    let page = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .delimiter("/")
        .max_uploads(1)
        .send()
        .await
        .unwrap();
    assert_eq!(page.is_truncated(), Some(true));
    assert_eq!(page.next_key_marker(), Some("ckpt/"));
    let page = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .delimiter("/")
        .key_marker("ckpt/")
        .send()
        .await
        .unwrap();
    let prefixes = prefix_list(page.common_prefixes());
    assert_eq!(prefixes, ["logs/"]);

    // A prefix, and a negative max-uploads.
    let page = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .prefix("logs/")
        .send()
        .await
        .unwrap();
    assert_eq!(page.uploads().len(), 2);
    let r = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .max_uploads(-1)
        .send()
        .await;
    assert_eq!(failure(r), (400, "InvalidArgument".into()));
    net.stop().await;
}

/// The common prefixes of a listing page, as strings.
fn prefix_list(prefixes: &[aws_sdk_s3::types::CommonPrefix]) -> Vec<&str> {
    prefixes.iter().filter_map(|p| p.prefix()).collect()
}
