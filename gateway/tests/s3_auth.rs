//! Authentication through the real `aws-sdk-s3` and raw HTTP against a devnet of real node
//! processes and a real gateway process: signatures, presigned URLs, virtual hosts, garbage.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::{Net, client, failure, get, healthy, message, metric, presigned_put, raw};

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
