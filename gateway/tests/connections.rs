//! The S3 listener's connection limits, against a real gateway process: idle HTTP/2
//! connections are closed (hyper gives HTTP/2 no header timeout of its own), a request in
//! flight is not cut however slowly it is read, and the per-address and total caps close idle
//! connections first, then refuse new ones.
//!
//! Each test runs its own `cairn-gateway` with the limits lowered through the test-only
//! variables of `cairn_gateway::http::connections` (a 2 s idle limit instead of 30 s), so the
//! file takes well under a minute. HTTP/2 is spoken by hand: raw frames over TCP (h2c, prior
//! knowledge). Assertions are on outcomes (closed or not, what was received), with generous
//! deadlines, never on how fast something happened.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use cairn_gateway::http::connections::{IDLE_MS_ENV, MAX_CONNECTIONS_ENV, MAX_PER_ADDRESS_ENV};
use cairn_gateway::server::RuntimeInfo;
use common::{Net, bytes, client, init_gateway, metric, run_gateway_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ACCESS: &str = "connections-test";
const SECRET: &str = "connections-test-secret-key-0123456789";
const GAUGE: &str = "cairn_gateway_connections";
const IDLE_CLOSED: &str = "cairn_gateway_idle_closed_total";
const EVICTED: &str = "cairn_gateway_connections_evicted_total";
const REFUSED: &str = "cairn_gateway_connections_refused_total";

/// A gateway process of this test's own, with overridden connection limits.
struct Gateway {
    child: tokio::process::Child,
    info: RuntimeInfo,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(net: &Net, env: &[(&str, String)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("gw");
        init_gateway(&data, ACCESS, SECRET);
        let (child, info) = run_gateway_with(net, &data, &[], env).await;
        Gateway {
            child,
            info,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.info.listen
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        client(&self.info.endpoint, ACCESS, SECRET, true)
    }

    async fn metric(&self, name: &str) -> u64 {
        metric(self.info.admin, name).await
    }

    /// Waits until `name` satisfies `ok`, for up to 30 s; its last value.
    async fn await_metric(&self, name: &str, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.metric(name).await;
            if ok(v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{name} is {v}, expected {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Descriptors the gateway process has open.
    fn open_files(&self) -> usize {
        std::fs::read_dir(
            Path::new("/proc")
                .join(self.info.pid.to_string())
                .join("fd"),
        )
        .map(|d| d.count())
        .unwrap_or(0)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

// ---- HTTP/2 by hand (RFC 9113) ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

#[allow(clippy::big_endian_bytes)] // HTTP/2 is big-endian on the wire (RFC 9113 §4.1)
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client preface and a SETTINGS frame with `settings`.
#[allow(clippy::big_endian_bytes)] // HTTP/2 is big-endian on the wire (RFC 9113 §4.1)
fn preface(settings: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = settings
        .iter()
        .flat_map(|(id, v)| [id.to_be_bytes().as_slice(), &v.to_be_bytes()].concat())
        .collect();
    [PREFACE, &frame(SETTINGS, 0, 0, &payload)].concat()
}

/// An HPACK string (no Huffman coding): 7-bit-prefix length, then the bytes.
fn hpack_string(s: &str, out: &mut Vec<u8>) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s.as_bytes());
}

/// A header block of literal fields without indexing, new names.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_string(name, &mut out);
        hpack_string(value, &mut out);
    }
    out
}

#[allow(clippy::big_endian_bytes)] // HTTP/2 is big-endian on the wire (RFC 9113 §4.1)
fn window_update(stream: u32, by: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &by.to_be_bytes())
}

/// One frame: type, flags, stream, payload.
#[allow(clippy::big_endian_bytes)] // HTTP/2 is big-endian on the wire (RFC 9113 §4.1)
async fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

/// The frame types in `bytes` (as many whole frames as there are).
#[allow(clippy::big_endian_bytes)] // HTTP/2 is big-endian on the wire (RFC 9113 §4.1)
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = bytes.get(9 + len..).unwrap_or_default();
    }
    types
}

/// Reads `s` until the gateway closes it, for up to `within`: what it sent, or `None` if the
/// connection was still open then.
async fn closed_within(mut s: TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()?;
    Some(got)
}

/// Whether `s` still answers a request: an unsigned `GET /` gets an S3 error answer.
async fn answers(s: &mut TcpStream) -> bool {
    if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut buf)).await;
    matches!(read, Ok(Ok(_))) && buf.starts_with(b"HTTP/1.1 ")
}

/// A TCP connection to `to` from the local address `from` (any 127.0.0.0/8 address is this
/// host), so one test can be several clients.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// GETs `path` on HTTP/2 stream 1 and reads the body slowly (8 KiB every 400 ms) for
/// `slowly`, then at full speed. Panics if the connection is cut, reset or told to go away
/// before the body is complete. Returns the body, and how much of it had arrived when the
/// slow part ended; the connection is returned too, to watch it close once idle.
async fn slow_h2_get(
    addr: SocketAddr,
    path: &str,
    slowly: Duration,
) -> (Vec<u8>, usize, TcpStream) {
    const STEP: u32 = 8 << 10;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&preface(&[(SETTINGS_INITIAL_WINDOW_SIZE, STEP)]))
        .await
        .unwrap();
    let authority = addr.to_string();
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", &authority),
        (":path", path),
        ("host", &authority),
    ]);
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .unwrap();
    let started = Instant::now();
    let (mut body, mut unacked, mut slow_part) = (Vec::new(), 0u32, None);
    loop {
        let (kind, flags, stream, payload) =
            tokio::time::timeout(Duration::from_secs(60), read_frame(&mut s))
                .await
                .expect("the gateway sent nothing for 60 s")
                .unwrap_or_else(|e| {
                    panic!(
                        "the connection was cut after {} body bytes: {e}",
                        body.len()
                    )
                });
        match kind {
            SETTINGS if flags & ACK == 0 => {
                s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap()
            }
            PING if flags & ACK == 0 => s.write_all(&frame(PING, ACK, 0, &payload)).await.unwrap(),
            HEADERS if stream == 1 => {
                // `:status: 200` is entry 8 of HPACK's static table.
                assert_eq!(payload.first(), Some(&0x88), "not a 200: {payload:02x?}");
            }
            GOAWAY | RST_STREAM => panic!(
                "the gateway sent frame type {kind} after {} body bytes, with the GET in flight",
                body.len()
            ),
            DATA if stream == 1 => {
                body.extend_from_slice(&payload);
                unacked += payload.len() as u32;
                if flags & END_STREAM != 0 {
                    return (body, slow_part.unwrap_or(usize::MAX), s);
                }
                if slow_part.is_none() && started.elapsed() >= slowly {
                    // Done dawdling: open the windows wide.
                    slow_part = Some(body.len());
                    s.write_all(&window_update(1, 16 << 20)).await.unwrap();
                    s.write_all(&window_update(0, 16 << 20)).await.unwrap();
                }
                if unacked >= STEP {
                    if slow_part.is_none() {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        s.write_all(&window_update(1, unacked)).await.unwrap();
                    }
                    s.write_all(&window_update(0, unacked)).await.unwrap();
                    unacked = 0;
                }
            }
            _ => {}
        }
    }
}

/// (a), (b), (c), (e): with a 2 s idle limit, HTTP/2 connections that sent only the preface
/// and SETTINGS, or a HEADERS frame without END_HEADERS, or part of the preface, and one that
/// sent nothing, are all closed (the first with a GOAWAY); an HTTP/2 GET read slowly for four
/// times the limit is not cut, and its connection is closed once idle; the connections gauge
/// comes back to where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_busy_ones_are_not() {
    let idle = Duration::from_secs(2);
    let net = Net::start(2).await;
    let gw = Gateway::start(&net, &[(IDLE_MS_ENV, idle.as_millis().to_string())]).await;
    let addr = gw.addr();
    let start = gw.metric(GAUGE).await;

    let s3 = gw.s3();
    s3.create_bucket().bucket("h2c").send().await.unwrap();
    let object = bytes(256 << 10, 7);
    s3.put_object()
        .bucket("h2c")
        .key("obj")
        .body(ByteStream::from(object.clone()))
        .send()
        .await
        .unwrap();
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
    let uri = s3
        .get_object()
        .bucket("h2c")
        .key("obj")
        .presigned(cfg)
        .await
        .unwrap()
        .uri()
        .to_string();
    let path = uri.trim_start_matches(&gw.info.endpoint).to_string();

    // (c) A GET in flight, read slowly for 4x the idle limit.
    let get = tokio::spawn(async move { slow_h2_get(addr, &path, idle * 4).await });

    // (a) Preface and SETTINGS, then nothing.
    let mut settings_only = TcpStream::connect(addr).await.unwrap();
    settings_only.write_all(&preface(&[])).await.unwrap();
    // (b) A HEADERS frame whose header block never ends (no END_HEADERS, no CONTINUATION).
    let mut unfinished = TcpStream::connect(addr).await.unwrap();
    let block = header_block(&[(":method", "GET"), (":scheme", "http")]);
    let headers = frame(HEADERS, END_STREAM, 1, &block);
    unfinished
        .write_all(&[preface(&[]), headers].concat())
        .await
        .unwrap();
    // Part of the preface: hyper cannot tell HTTP/1 from HTTP/2 yet.
    let mut half_preface = TcpStream::connect(addr).await.unwrap();
    half_preface.write_all(&PREFACE[..16]).await.unwrap();
    // Not a byte.
    let silent = TcpStream::connect(addr).await.unwrap();

    let within = Duration::from_secs(40);
    let (a, b, half, silent) = tokio::join!(
        closed_within(settings_only, within),
        closed_within(unfinished, within),
        closed_within(half_preface, within),
        closed_within(silent, within),
    );
    let stayed_open: Vec<&str> = [
        ("preface and SETTINGS only (h2)", a.is_none()),
        ("an unfinished HEADERS frame (h2)", b.is_none()),
        ("half the h2 preface", half.is_none()),
        ("nothing at all", silent.is_none()),
    ]
    .into_iter()
    .filter_map(|(what, open)| open.then_some(what))
    .collect();
    assert!(
        stayed_open.is_empty(),
        "idle connections still open after {within:?}, that sent: {stayed_open:?}"
    );
    let a = a.unwrap_or_default();
    assert!(
        frame_types(&a).contains(&GOAWAY),
        "closed without a GOAWAY: frames {:?}",
        frame_types(&a)
    );
    assert!(gw.metric(IDLE_CLOSED).await >= 4);

    // (c) The slow GET got every byte, and was read slowly for longer than the limit.
    let (body, slow_part, conn) = get.await.unwrap();
    assert!(
        slow_part < object.len(),
        "the whole object arrived in the slow part ({slow_part} bytes): nothing was tested"
    );
    assert!(body == object, "the slow GET's body differs");
    // Idle now, its connection is closed too.
    let rest = closed_within(conn, within)
        .await
        .expect("the h2 connection stayed open once its GET was done");
    assert!(frame_types(&rest).contains(&GOAWAY));

    // (e) Every connection is gone from the gauge (the SDK's too, closed when idle).
    gw.await_metric(GAUGE, &format!("back to {start}"), |v| v == start)
        .await;
    gw.stop().await;
    net.stop().await;
}

/// (d): with at most 8 connections per address and 12 in all, idle connections are closed to
/// make room (longest idle first), a signed request still gets through, a new connection is
/// refused only when every connection its address has is busy, and the total cap holds
/// across addresses; the gauge and the gateway's open files stay bounded throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_close_idle_connections_first_then_refuse() {
    const PER_ADDRESS: usize = 8;
    const TOTAL: usize = 12;
    let net = Net::start(2).await;
    // A minute's idle limit: nothing here is closed for idleness.
    let gw = Gateway::start(
        &net,
        &[
            (IDLE_MS_ENV, "60000".into()),
            (MAX_CONNECTIONS_ENV, TOTAL.to_string()),
            (MAX_PER_ADDRESS_ENV, PER_ADDRESS.to_string()),
        ],
    )
    .await;
    let addr = gw.addr();
    let start = gw.metric(GAUGE).await;
    let files_at_start = gw.open_files();
    let bounded = |gw: &Gateway| {
        let files = gw.open_files();
        assert!(
            files <= files_at_start + TOTAL + 32,
            "the gateway has {files} files open, {files_at_start} at the start"
        );
    };

    // The address's cap, then 4 more: the 4 oldest are closed to make room.
    let mut idle = Vec::new();
    for _ in 0..PER_ADDRESS {
        idle.push(connect_from("127.0.0.1", addr).await);
    }
    gw.await_metric(GAUGE, "the address's cap", |v| {
        v == start + PER_ADDRESS as u64
    })
    .await;
    for _ in 0..4 {
        idle.push(connect_from("127.0.0.1", addr).await);
    }
    gw.await_metric(EVICTED, "4", |v| v == 4).await;
    let mut kept = idle.split_off(4);
    for (i, s) in idle.into_iter().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(30)).await.is_some(),
            "idle connection {i}, among the oldest, was not closed to make room"
        );
    }
    for (i, s) in kept.iter_mut().enumerate() {
        assert!(answers(s).await, "connection {} was closed", i + 4);
    }
    gw.await_metric(GAUGE, "the address's cap", |v| {
        v == start + PER_ADDRESS as u64
    })
    .await;
    bounded(&gw);

    // A signed request from the same address gets through (an idle connection makes room).
    let s3 = gw.s3();
    s3.create_bucket().bucket("caps").send().await.unwrap();

    // Every connection of the address busy: PUTs whose bodies trickle in.
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
    let mut busy = Vec::new();
    for i in 0..PER_ADDRESS {
        let uri = s3
            .put_object()
            .bucket("caps")
            .key(format!("busy-{i}"))
            .presigned(cfg.clone())
            .await
            .unwrap()
            .uri()
            .to_string();
        let path = uri.trim_start_matches(&gw.info.endpoint).to_string();
        let mut s = connect_from("127.0.0.1", addr).await;
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000000\r\n\
             Expect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // hyper says `100 Continue` once the gateway reads the body: the request is in flight.
        let mut cont = [0u8; 25];
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut cont))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert!(
            cont.starts_with(b"HTTP/1.1 100"),
            "{}",
            String::from_utf8_lossy(&cont)
        );
        busy.push(tokio::spawn(async move {
            // A byte a second keeps the body coming (the body stall limit is 30 s).
            while s.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    for (i, s) in kept.into_iter().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(30)).await.is_some(),
            "idle connection {} was not closed to make room for a busy one",
            i + 4
        );
    }
    gw.await_metric(GAUGE, "the address's cap", |v| {
        v == start + PER_ADDRESS as u64
    })
    .await;
    // Nothing idle left at this address: the next connection is refused, closed at once.
    let refused = connect_from("127.0.0.1", addr).await;
    assert!(
        closed_within(refused, Duration::from_secs(30))
            .await
            .is_some(),
        "a connection over the cap, with none idle, was not refused"
    );
    assert_eq!(gw.metric(REFUSED).await, 1);
    bounded(&gw);

    // Another address is still served, up to the total cap...
    let mut others = Vec::new();
    for _ in 0..TOTAL - PER_ADDRESS {
        others.push(connect_from("127.0.0.2", addr).await);
    }
    gw.await_metric(GAUGE, "the total cap", |v| v == start + TOTAL as u64)
        .await;
    let evicted = gw.metric(EVICTED).await;
    // ...and past it, a third address makes room by closing the longest idle one anywhere.
    let mut third = connect_from("127.0.0.3", addr).await;
    gw.await_metric(EVICTED, "one more", |v| v == evicted + 1)
        .await;
    let oldest = others.remove(0);
    assert!(
        closed_within(oldest, Duration::from_secs(30))
            .await
            .is_some(),
        "the longest idle connection was not closed at the total cap"
    );
    assert!(answers(&mut third).await);
    for s in &mut others {
        assert!(answers(s).await);
    }
    gw.await_metric(GAUGE, "the total cap", |v| v == start + TOTAL as u64)
        .await;
    bounded(&gw);
    assert_eq!(gw.metric(REFUSED).await, 1);

    // (e) Once the clients let go, the gauge is back where it started.
    for b in busy {
        b.abort();
    }
    drop((others, third));
    gw.await_metric(GAUGE, &format!("back to {start}"), |v| v == start)
        .await;
    gw.stop().await;
    net.stop().await;
}
