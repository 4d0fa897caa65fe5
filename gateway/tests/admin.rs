//! The gateway's admin port against a real gateway: who may call what (the token is checked
//! before a request's body is read; `/metrics` and `/status` are open only on a loopback
//! listener), and what a CID that is not a catalog export is told.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{Net, bytes, init_gateway_at, run_gateway};
use serde_json::Value;

/// An admin request: status and body (JSON when it is JSON).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &auth {
        all.push(("Authorization", a));
    }
    let (code, text) = cairn_wire::admin::http_request(
        addr,
        method,
        path,
        &all,
        body.as_bytes(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_cid_that_is_not_a_catalog_export_is_a_400_that_says_what_it_is() {
    let net = Net::start(3).await;
    let gw = net.gateway().clone();
    let token = Some(gw.secret_key.as_str());
    let restore = |cid: String| async move {
        let body = serde_json::json!({ "cid": cid }).to_string();
        call(gw.admin, "POST", "/restore", token, &[JSON], &body).await
    };

    // A raw CID names a file's bytes: before, the fetch failed as the gateway's own error (500).
    let raw = cairn_chunker::cids::raw(b"a file, not a catalog").to_string();
    let (code, answer) = restore(raw.clone()).await;
    assert_eq!(code, 400, "{answer}");
    let says = answer["error"].as_str().unwrap();
    assert!(
        says.contains(&raw) && says.contains("raw CID") && says.contains("catalog export"),
        "{says}"
    );
    // Import names what it wanted too.
    let body = serde_json::json!({ "bucket": "imports", "cid": raw }).to_string();
    let (code, answer) = call(gw.admin, "POST", "/import", token, &[JSON], &body).await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("raw CID"),
        "{answer}"
    );

    // An object's manifest and an ordinary dataset's are manifests, but not catalog exports.
    let s3 = net.s3();
    s3.create_bucket().bucket("plain").send().await.unwrap();
    s3.put_object()
        .bucket("plain")
        .key("obj")
        .body(ByteStream::from(bytes(200_000, 5)))
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("plain")
        .key("obj")
        .send()
        .await
        .unwrap();
    let object = head.metadata().unwrap()["cairn-cid"].clone();
    let (code, answer) = restore(object.clone()).await;
    assert_eq!(code, 400, "{answer}");
    let says = answer["error"].as_str().unwrap();
    assert!(
        says.contains(&object) && says.contains("object manifest"),
        "{says}"
    );
    // An import of `cid` as `imports/key`.
    let import = |cid: String, key: &'static str| {
        let body = serde_json::json!({ "bucket": "imports", "cid": cid, "key": key });
        async move {
            call(
                gw.admin,
                "POST",
                "/import",
                token,
                &[JSON],
                &body.to_string(),
            )
            .await
        }
    };
    // Import checks keys as an S3 PUT does: no control character a listing cannot carry.
    for key in ["bell\u{7}", ""] {
        let (code, answer) = import(object.clone(), key).await;
        assert_eq!(code, 400, "{key:?}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("cannot import as key"),
            "{answer}"
        );
    }
    // And its headers as an S3 PUT's: an object whose manifest carries 3 KiB of user
    // metadata (a manifest may hold 8; S3 allows 2) is not imported.
    let network = net.network().await;
    let mut opts = cairn_client::put::PutOptions::for_network(network.nodes().len());
    (opts.params.erasure.k, opts.params.erasure.m) = (2, 1);
    opts.metadata.insert("big".into(), "x".repeat(3 << 10));
    let signer = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let heavy = cairn_client::put::put_object(
        Some(&network),
        &signer,
        cairn_client::put::Input::Bytes(bytes(10_000, 6).into()),
        &opts,
        std::sync::Arc::new(|_| {}),
    )
    .await
    .unwrap();
    let (code, answer) = import(heavy.cid.to_string(), "heavy").await;
    assert_eq!(code, 400, "{answer}");
    let says = answer["error"].as_str().unwrap();
    assert!(
        says.contains("cannot import \"heavy\"") && says.contains("metadata"),
        "{says}"
    );
    let dir = net.dir.path().join("plain-dataset");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), b"hello").unwrap();
    assert!(net.cairn(&["key", "generate"]).status.success());
    let out = net.cairn_ok(&[
        "put",
        dir.to_str().unwrap(),
        "--k",
        "2",
        "--m",
        "1",
        "--json",
    ]);
    let dataset = serde_json::from_slice::<Value>(&out.stdout).unwrap()["cid"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, answer) = restore(dataset.clone()).await;
    assert_eq!(code, 400, "{answer}");
    let says = answer["error"].as_str().unwrap();
    assert!(
        says.contains(&dataset) && says.contains("not a catalog export"),
        "{says}"
    );
    // And a real export still restores.
    let (code, export) = call(gw.admin, "POST", "/export", token, &[], "").await;
    assert_eq!(code, 200, "{export}");
    let (code, answer) = restore(export["cid"].as_str().unwrap().to_string()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["objects"], 1, "{answer}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body_is_read() {
    let net = Net::start(3).await;
    let gw = net.gateway().clone();
    let secret = gw.secret_key.as_str();
    // Bodies that do not parse, or are not JSON: a caller without the token learns only 401.
    for (path, headers, body) in [
        ("/restore", &[JSON][..], "{not json"),
        ("/restore", &[][..], r#"{"cid": "bafy"}"#),
        ("/import", &[JSON][..], r#"{"bucket": 5}"#),
        ("/export", &[][..], ""),
    ] {
        for token in [None, Some("wrong-token"), Some("")] {
            let (code, answer) = call(gw.admin, "POST", path, token, headers, body).await;
            assert_eq!(code, 401, "{path} {body} with {token:?}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains("Bearer"),
                "{answer}"
            );
        }
    }
    // With the token, parse errors are for the caller to see.
    let (code, answer) = call(
        gw.admin,
        "POST",
        "/restore",
        Some(secret),
        &[JSON],
        "{not json",
    )
    .await;
    assert!(code == 400 || code == 422, "{code}: {answer}");
    let (code, answer) = call(gw.admin, "POST", "/restore", Some(secret), &[JSON], "{}").await;
    assert_eq!(code, 400, "{answer}");

    // A 401 says how to authenticate, and comes without waiting for a body: this one
    // announces 50 MB (under /import's limit) and sends none.
    let request = format!(
        "POST /import HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 50000000\r\nConnection: close\r\n\r\n{{",
        gw.admin
    );
    let started = std::time::Instant::now();
    let (code, head, _) = common::raw(gw.admin, request.as_bytes()).await;
    assert_eq!(code, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_are_open_only_on_a_loopback_listener() {
    let net = Net::start(3).await;
    // The devnet's gateway listens on 127.0.0.1: its reads answer without the token.
    let local = net.gateway().admin;
    assert!(local.ip().is_loopback());
    for path in ["/health", "/metrics", "/status"] {
        let (code, answer) = call(local, "GET", path, None, &[], "").await;
        assert_eq!(code, 200, "{path}: {answer}");
    }

    // A gateway whose admin listener is on every interface (0.0.0.0), reached here through
    // 127.0.0.1: what decides is the address bound, not the one a caller comes from.
    let dir = net.dir.path().join("gw-open");
    let secret = "open-secret-1234";
    init_gateway_at(&dir, "0.0.0.0:0", "OPENKEY", secret);
    let (mut child, info) = run_gateway(&net, &dir, &[]).await;
    assert!(info.admin.ip().is_unspecified(), "{}", info.admin);
    let admin = SocketAddr::from(([127, 0, 0, 1], info.admin.port()));
    let (code, answer) = call(admin, "GET", "/health", None, &[], "").await;
    assert_eq!((code, answer), (200, Value::String("ok\n".into())));
    for path in ["/metrics", "/status"] {
        for token in [None, Some("wrong-token")] {
            let (code, answer) = call(admin, "GET", path, token, &[], "").await;
            assert_eq!(code, 401, "{path} with {token:?}: {answer}");
            let text = answer.to_string();
            assert!(
                !text.contains("signer") && !text.contains("cairn_gateway"),
                "{text}"
            );
        }
    }
    let (code, status) = call(admin, "GET", "/status", Some(secret), &[], "").await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["signer"], info.signer.as_str(), "{status}");
    let (code, metrics) = call(admin, "GET", "/metrics", Some(secret), &[], "").await;
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.as_str().unwrap().contains("cairn_gateway_"),
        "{metrics}"
    );
    let (code, _) = call(admin, "POST", "/export", None, &[], "").await;
    assert_eq!(code, 401);
    let _ = child.kill().await;
    net.stop().await;
}
