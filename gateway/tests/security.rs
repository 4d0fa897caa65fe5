//! What a signature allows, and nothing more: a SigV4 request (presigned or header-signed) must
//! sign every `x-amz-*` header it carries and `host`, be scoped to the gateway's region, and a
//! presigned URL may live a week at most (`src/auth.rs`). Each refused variant is checked to
//! have stored nothing. Against a real devnet and gateway, with aws-sdk-s3 (its presigning, and
//! an interceptor that adds headers after the SDK signed), hand-signed and raw HTTP requests.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata};
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use common::{Net, client, raw};
use s3s::crypto::{Checksum, Sha256};

const SECRET: &[u8] = b"top secret";

/// A devnet with `bucket-a` (empty) and `bucket-b/secret`, and a client for it.
async fn setup() -> (Net, Client) {
    let net = Net::start(3).await;
    let s3 = net.s3();
    for b in ["bucket-a", "bucket-b"] {
        s3.create_bucket().bucket(b).send().await.unwrap();
    }
    s3.put_object()
        .bucket("bucket-b")
        .key("secret")
        .body(ByteStream::from_static(SECRET))
        .send()
        .await
        .unwrap();
    (net, s3)
}

/// The object's bytes and metadata, or `None` when there is no such key.
async fn stored(s3: &Client, bucket: &str, key: &str) -> Option<(Vec<u8>, Vec<(String, String)>)> {
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) if e.code() == Some("NoSuchKey") => return None,
        Err(e) => panic!("GetObject {bucket}/{key}: {e:?}"),
    };
    let mut meta: Vec<(String, String)> = out
        .metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    meta.retain(|(k, _)| !k.starts_with("cairn-"));
    meta.sort();
    Some((out.body.collect().await.unwrap().to_vec(), meta))
}

/// Nothing was written by a refused request: no `bucket-a/{key}`, and the secret is intact.
async fn nothing_stored(s3: &Client, key: &str) {
    assert_eq!(
        stored(s3, "bucket-a", key).await,
        None,
        "bucket-a/{key} exists"
    );
    let secret = stored(s3, "bucket-b", "secret").await.unwrap();
    assert_eq!(secret, (SECRET.to_vec(), vec![]));
}

/// Status, S3 error code and the whole body of a raw answer.
fn answer((code, _, body): (u16, String, Vec<u8>)) -> (u16, String, String) {
    let body = String::from_utf8_lossy(&body).into_owned();
    let code_of = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or(String::new(), |(c, _)| c.to_string());
    (code, code_of, body)
}

/// A presigned PutObject for `bucket-a/{key}` from `s3`, valid five minutes; `query` is added to
/// the URL before it is signed.
async fn presign_put(s3: &Client, key: &str, query: Option<&'static str>) -> PresignedRequest {
    let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    s3.put_object()
        .bucket("bucket-a")
        .key(key)
        .customize()
        .mutate_request(move |req| {
            if let Some(q) = query {
                let sep = if req.uri().contains('?') { '&' } else { '?' };
                let uri = format!("{}{sep}{q}", req.uri());
                req.set_uri(uri).unwrap();
            }
        })
        .presigned(cfg)
        .await
        .unwrap()
}

/// Sends the presigned request with `body` and `extra` headers, as raw HTTP/1.1.
async fn send_presigned(
    addr: SocketAddr,
    pre: &PresignedRequest,
    body: &[u8],
    extra: &[(&str, &str)],
) -> (u16, String, String) {
    let target = pre.uri().split_once(&addr.to_string()).unwrap().1;
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
        pre.method()
    );
    for (n, v) in pre.headers().chain(extra.iter().copied()) {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    answer(raw(addr, &req).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_put_cannot_be_turned_into_another_request() {
    let (net, s3) = setup().await;
    let addr = net.addr();
    let pre = presign_put(&s3, "upload", None).await;

    // The issue-28 attack: an unsigned x-amz-copy-source turns the PUT into a copy of another
    // bucket's object.
    let copy = [("x-amz-copy-source", "/bucket-b/secret")];
    let (status, code, body) = send_presigned(addr, &pre, b"", &copy).await;
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{body}");
    assert!(
        body.contains("<HeadersNotSigned>x-amz-copy-source</HeadersNotSigned>"),
        "{body}"
    );
    nothing_stored(&s3, "upload").await;

    // Unsigned metadata.
    let meta = [("x-amz-meta-owner", "mallory")];
    let (status, code, body) = send_presigned(addr, &pre, b"mine", &meta).await;
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{body}");
    assert!(body.contains("There were headers present in the request which were not signed"));
    nothing_stored(&s3, "upload").await;

    // An anonymous request with the same header is refused as before.
    let anonymous =
        b"PUT /bucket-a/upload HTTP/1.1\r\nHost: x\r\nx-amz-copy-source: /bucket-b/secret\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(answer(raw(addr, anonymous).await).0, 403);
    nothing_stored(&s3, "upload").await;

    // A browser form upload is refused before anything reads its body (s3s would buffer the
    // whole form, up to gigabytes, before finding that no such operation is served): the
    // answer comes although the 100 MB body announced never does.
    let form = b"POST /bucket-a HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: multipart/form-data; boundary=zz\r\n\
                 Content-Length: 100000000\r\nConnection: close\r\n\r\n--zz\r\n";
    let (status, code, body) = answer(raw(addr, form).await);
    assert_eq!((status, code.as_str()), (501, "NotImplemented"), "{body}");
    // So is a SigV2 signature, which s3s checks for no freshness (a captured one replays
    // forever).
    let v2 = b"PUT /bucket-a/upload HTTP/1.1\r\nHost: x\r\nDate: Sun, 06 Dec 2026 00:00:00 GMT\r\n\
               Authorization: AWS AKID:c2lnbmF0dXJl\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (status, code, body) = answer(raw(addr, v2).await);
    assert_eq!((status, code.as_str()), (400, "InvalidRequest"), "{body}");
    nothing_stored(&s3, "upload").await;

    // The same URL as it was signed works.
    let (status, _, body) = send_presigned(addr, &pre, b"mine", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stored(&s3, "bucket-a", "upload").await,
        Some((b"mine".to_vec(), vec![]))
    );

    // x-amz-* query parameters are covered by the signature and act as headers.
    let colored = presign_put(&s3, "colored", Some("x-amz-meta-color=blue")).await;
    assert!(
        colored.uri().contains("x-amz-meta-color=blue"),
        "{}",
        colored.uri()
    );
    let (status, _, body) = send_presigned(addr, &colored, b"paint", &[]).await;
    assert_eq!(status, 200, "{body}");
    let meta = vec![("color".to_string(), "blue".to_string())];
    assert_eq!(
        stored(&s3, "bucket-a", "colored").await,
        Some((b"paint".to_vec(), meta))
    );
    net.stop().await;
}

/// Adds a header to a request after the SDK signed it.
#[derive(Debug)]
struct AfterSigning(&'static str, &'static str);

impl Intercept for AfterSigning {
    fn name(&self) -> &'static str {
        "AfterSigning"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.request_mut().headers_mut().insert(self.0, self.1);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_signed_request_cannot_carry_unsigned_x_amz_headers() {
    let (net, s3) = setup().await;
    let added = [
        ("x-amz-copy-source", "/bucket-b/secret"),
        ("x-amz-meta-owner", "mallory"),
        ("x-amz-tagging", "owner=mallory"),
    ];
    for (i, (name, value)) in added.into_iter().enumerate() {
        let key = format!("upload-{i}");
        let r = s3
            .put_object()
            .bucket("bucket-a")
            .key(&key)
            .body(ByteStream::from_static(b"mine"))
            .customize()
            .interceptor(AfterSigning(name, value))
            .send()
            .await;
        let e = r.expect_err(name);
        let status = e.raw_response().map_or(0, |r| r.status().as_u16());
        assert_eq!(
            (status, e.code()),
            (403, Some("AccessDenied")),
            "{name}: {e:?}"
        );
        nothing_stored(&s3, &key).await;
    }
    // Without the added header, the same request is stored.
    s3.put_object()
        .bucket("bucket-a")
        .key("upload-0")
        .body(ByteStream::from_static(b"mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored(&s3, "bucket-a", "upload-0").await,
        Some((b"mine".to_vec(), vec![]))
    );
    net.stop().await;
}

/// Hex SHA-256.
fn sha256_hex(data: &[u8]) -> String {
    Sha256::checksum(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// HMAC-SHA256 (RFC 2104; keys here are shorter than a block).
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let pad = |byte: u8| {
        let mut p = [byte; 64];
        p.iter_mut().zip(key).for_each(|(p, k)| *p ^= k);
        p
    };
    let inner = Sha256::checksum(&[&pad(0x36)[..], data].concat());
    Sha256::checksum(&[&pad(0x5c)[..], &inner[..]].concat())
}

/// A SigV4 signer for hand-made requests.
struct Signer {
    access: String,
    secret: String,
    region: &'static str,
    /// `YYYYMMDDTHHMMSSZ`, now.
    time: String,
}

impl Signer {
    fn new(net: &Net, region: &'static str) -> Signer {
        let t = time::OffsetDateTime::now_utc();
        let time = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        let gw = net.gateway();
        Signer {
            access: gw.access_key.clone(),
            secret: gw.secret_key.clone(),
            region,
            time,
        }
    }

    fn scope(&self) -> String {
        format!("{}/{}/s3/aws4_request", &self.time[..8], self.region)
    }

    /// The signature of a request: `query` canonical (sorted, encoded), `headers` the signed
    /// ones, lowercase and sorted.
    fn sign(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        payload: &str,
    ) -> String {
        let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let canonical = format!(
            "{method}\n{path}\n{query}\n{canonical_headers}\n{}\n{payload}",
            names.join(";")
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            self.time,
            self.scope(),
            sha256_hex(canonical.as_bytes())
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret).as_bytes(),
            &self.time.as_bytes()[..8],
        );
        for part in [self.region, "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        hmac(&key, to_sign.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A raw PUT of `body` to `path`, header-signed over `signed` (a subset of host,
    /// x-amz-content-sha256, x-amz-date).
    fn put(&self, addr: SocketAddr, path: &str, signed: &[&str], body: &[u8]) -> Vec<u8> {
        let host = addr.to_string();
        let hash = sha256_hex(body);
        let all = [
            ("host", host.as_str()),
            ("x-amz-content-sha256", hash.as_str()),
            ("x-amz-date", self.time.as_str()),
        ];
        let headers: Vec<(&str, &str)> = all
            .into_iter()
            .filter(|(n, _)| signed.contains(n))
            .collect();
        let signature = self.sign("PUT", path, "", &headers, &hash);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={signature}",
            self.access,
            self.scope(),
            signed.join(";")
        );
        let mut req = format!(
            "PUT {path} HTTP/1.1\r\nHost: {host}\r\nx-amz-content-sha256: {hash}\r\nx-amz-date: {}\r\n\
             Authorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.time,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    }

    /// A presigned PUT target for `path` (signed header: host) living `expires` seconds.
    fn presigned_put(&self, addr: SocketAddr, path: &str, expires: &str) -> String {
        let credential = format!("{}/{}", self.access, self.scope()).replace('/', "%2F");
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}&X-Amz-Date={}\
             &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
            self.time
        );
        let signature = self.sign(
            "PUT",
            path,
            &query,
            &[("host", addr.to_string().as_str())],
            "UNSIGNED-PAYLOAD",
        );
        format!("{path}?{query}&X-Amz-Signature={signature}")
    }
}

/// A raw PUT of `body` to a presigned `target`.
fn put_to(addr: SocketAddr, target: &str, body: &str) -> Vec<u8> {
    format!(
        "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_region_and_lifetime_are_checked() {
    let (net, s3) = setup().await;
    let addr = net.addr();
    let signer = Signer::new(&net, "us-east-1");

    // A signature that leaves out host is refused; the same request signed with it is stored,
    // so the hand signer is right.
    let no_host = signer.put(
        addr,
        "/bucket-a/hand",
        &["x-amz-content-sha256", "x-amz-date"],
        b"hand",
    );
    let (status, code, body) = answer(raw(addr, &no_host).await);
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{body}");
    assert!(
        body.contains("<HeadersNotSigned>host</HeadersNotSigned>"),
        "{body}"
    );
    nothing_stored(&s3, "hand").await;
    let with_host = signer.put(
        addr,
        "/bucket-a/hand",
        &["host", "x-amz-content-sha256", "x-amz-date"],
        b"hand",
    );
    let (status, _, body) = answer(raw(addr, &with_host).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stored(&s3, "bucket-a", "hand").await,
        Some((b"hand".to_vec(), vec![]))
    );

    // A signature scoped to another region: the SDK's, and a presigned URL's.
    let gw = net.gateway();
    let elsewhere = client(&gw.endpoint, &gw.access_key, &gw.secret_key, true);
    let elsewhere = elsewhere
        .config()
        .to_builder()
        .region(aws_sdk_s3::config::Region::new("eu-west-9"))
        .build();
    let elsewhere = Client::from_conf(elsewhere);
    let r = elsewhere
        .put_object()
        .bucket("bucket-a")
        .key("far")
        .body(ByteStream::from_static(b"far"))
        .send()
        .await;
    let e = r.expect_err("a signature for eu-west-9");
    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
    assert_eq!(
        (status, e.code()),
        (400, Some("AuthorizationHeaderMalformed")),
        "{e:?}"
    );
    assert_eq!(
        e.message(),
        Some(
            "The authorization header is malformed; the region 'eu-west-9' is wrong; expecting 'us-east-1'"
        )
    );
    let far = Signer::new(&net, "eu-west-9").presigned_put(addr, "/bucket-a/far", "300");
    let (status, code, body) = answer(raw(addr, &put_to(addr, &far, "far")).await);
    assert_eq!(
        (status, code.as_str()),
        (400, "AuthorizationQueryParametersError"),
        "{body}"
    );
    assert!(
        body.contains("the region &apos;eu-west-9&apos; is wrong; expecting &apos;us-east-1&apos;"),
        "{body}"
    );
    nothing_stored(&s3, "far").await;

    // A presigned URL lives at most a week.
    for (expires, says) in [
        ("604801", "must be less than a week"),
        ("-1", "must be non-negative"),
        ("soon", "should be a number"),
    ] {
        let target = signer.presigned_put(addr, "/bucket-a/long", expires);
        let (status, code, body) = answer(raw(addr, &put_to(addr, &target, "long")).await);
        assert_eq!(
            (status, code.as_str()),
            (400, "AuthorizationQueryParametersError"),
            "{expires}: {body}"
        );
        assert!(body.contains(says), "{body}");
        nothing_stored(&s3, "long").await;
    }
    let week = signer.presigned_put(addr, "/bucket-a/long", "604800");
    let (status, _, body) = answer(raw(addr, &put_to(addr, &week, "long")).await);
    assert_eq!(status, 200, "{body}");
    net.stop().await;
}
