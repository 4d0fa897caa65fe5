//! The client side of "the receiver verifies as bytes arrive", over real QUIC on 127.0.0.1:
//! a fake node speaks the data-plane protocol but answers fetches with what each test makes it
//! say (flipped bytes, another shard, a short stream, a reset, trailing junk, a bent proof),
//! and the real [`data::Client`] must refuse every lie, hand on only verified bytes, and say
//! what went wrong.
//!
//! Each test also checks the honest answer first, so a refusal cannot come from the fake node
//! simply speaking the protocol wrongly.

mod common;

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid};
use cairn_chunker::verified;
use cairn_wire::data::{self, DataError, Target};
use cairn_wire::protocol::{
    DataRequest, DataResponse, ErrorCode, MAX_DATA_HEADER, RESET_ABORTED, RESET_CORRUPT,
    RemoteError, decode_body, encode_frame,
};
use common::client;
use libp2p::identity::Keypair;

/// What the fake node sends back: bytes, then how the stream ends.
#[derive(Clone)]
struct Reply {
    bytes: Vec<u8>,
    end: End,
}

#[derive(Clone, Copy)]
enum End {
    Finish,
    /// A stream reset with this code.
    Reset(u32),
    /// Nothing more, the stream left open.
    Stall,
}

impl Reply {
    fn finish(bytes: Vec<u8>) -> Self {
        Reply {
            bytes,
            end: End::Finish,
        }
    }
}

/// A fake node that reads the request and then sends `prefix` and nothing more.
fn stalling_node(prefix: Vec<u8>) -> Target {
    fake_node(Arc::new(move |_: &DataRequest| Reply {
        bytes: prefix.clone(),
        end: End::Stall,
    }))
}

type Answer = Arc<dyn Fn(&DataRequest) -> Reply + Send + Sync>;

/// A data-plane server (the node's own endpoint and TLS, keyed to a fresh identity) that
/// answers every request with `answer`.
fn fake_node(answer: Answer) -> Target {
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let endpoint = data::endpoint(&key, "127.0.0.1:0".parse().unwrap(), Some(16)).unwrap();
    let addr: SocketAddr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let Ok(request) = recv.read_to_end(MAX_DATA_HEADER + 4).await else {
                            return;
                        };
                        let request: DataRequest = decode_body(&request[4..]).unwrap();
                        let reply = answer(&request);
                        if send.write_all(&reply.bytes).await.is_err() {
                            return;
                        }
                        match reply.end {
                            End::Reset(code) => {
                                // Give the bytes before the cut a moment to leave first.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                let _ = send.reset(code.into());
                            }
                            End::Stall => {
                                // The stream (and the connection, alive by keep-alives) stays
                                // open, silent.
                                tokio::time::sleep(Duration::from_secs(600)).await;
                                drop(send);
                            }
                            End::Finish => {
                                let _ = send.finish();
                                let _ =
                                    tokio::time::timeout(Duration::from_secs(5), send.stopped())
                                        .await;
                            }
                        }
                    });
                }
            });
        }
    });
    Target { peer, addr }
}

/// A shard whose size is not a multiple of the 16 KiB verification group, so the last group
/// is short.
fn shard(seed: u64) -> (Cid, Vec<u8>) {
    let data = cairn_testkit::data::bytes((1 << 20) - 1000, seed);
    (cids::raw(&data), data)
}

/// The honest answer to a whole-shard fetch: header, outboard, data.
fn whole(data: &[u8]) -> (Vec<u8>, usize) {
    let mut out = encode_frame(&DataResponse::Shard {
        size: data.len() as u64,
    });
    let (_, outboard) = verified::outboard(data);
    out.extend_from_slice(&outboard);
    let data_at = out.len();
    out.extend_from_slice(data);
    (out, data_at)
}

/// The honest answer to a range fetch: header, then the proof stream.
fn proof(data: &[u8], range: Range<u64>) -> (Vec<u8>, usize) {
    let (root, outboard) = verified::outboard(data);
    let mut stream = Vec::new();
    verified::encode_range(&root, data, &outboard, range, &mut stream).unwrap();
    let mut out = encode_frame(&DataResponse::Proof {
        size: data.len() as u64,
        len: stream.len() as u64,
    });
    let proof_at = out.len();
    out.extend_from_slice(&stream);
    (out, proof_at)
}

/// Streams a fetch and returns its outcome with every byte the sink was handed, in order.
async fn fetch_streaming(
    client: &data::Client,
    t: &Target,
    cid: &Cid,
    size: Option<u64>,
    range: Option<Range<u64>>,
) -> (Result<u64, DataError>, Vec<u8>) {
    let got = Mutex::new(Vec::new());
    let result = client
        .fetch_streaming(t, cid, size, range, &|b: Bytes| {
            got.lock().unwrap().extend_from_slice(&b)
        })
        .await;
    (result, got.into_inner().unwrap())
}

fn flip(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    bytes[at] ^= 0x01;
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_answer_is_accepted_whole_streamed_and_by_range() {
    let (cid, data) = shard(1);
    let served = data.clone();
    let t = fake_node(Arc::new(move |req: &DataRequest| match req {
        DataRequest::Fetch { range: None, .. } => Reply::finish(whole(&served).0),
        DataRequest::Fetch {
            range: Some((a, b)),
            ..
        } => Reply::finish(proof(&served, *a..*b).0),
        _ => unreachable!("the client only fetches here"),
    }));
    let c = client();
    let size = Some(data.len() as u64);
    assert_eq!(c.fetch(&t, &cid, size, None).await.unwrap()[..], data[..]);
    let (result, got) = fetch_streaming(&c, &t, &cid, size, None).await;
    assert_eq!(result.unwrap(), data.len() as u64);
    assert_eq!(got, data);
    for range in [
        0..1,
        5000..70_000,
        (data.len() as u64 - 3)..data.len() as u64,
    ] {
        let want = &data[range.start as usize..range.end as usize];
        let got = c.fetch(&t, &cid, size, Some(range.clone())).await.unwrap();
        assert_eq!(&got[..], want, "range {range:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_data_byte_is_refused_and_never_handed_on() {
    let (cid, data) = shard(2);
    let (honest, data_at) = whole(&data);
    let group = verified::GROUP_BYTES;
    let c = client();
    for at in [0, group + 5, 40 * group, data.len() - 1] {
        let lie = flip(honest.clone(), data_at + at);
        let t = fake_node(Arc::new(move |_: &DataRequest| Reply::finish(lie.clone())));
        let err = c.fetch(&t, &cid, None, None).await.unwrap_err();
        assert!(matches!(err, DataError::BadData { .. }), "byte {at}: {err}");
        // Streamed: only whole verified groups before the bad one reach the reader.
        let (result, got) = fetch_streaming(&c, &t, &cid, None, None).await;
        assert!(
            matches!(result, Err(DataError::BadData { .. })),
            "byte {at}: {result:?}"
        );
        assert!(
            got.len() <= at / group * group,
            "byte {at}: {} handed on",
            got.len()
        );
        assert_eq!(got[..], data[..got.len()], "byte {at}: what was handed on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_outboard_byte_is_refused_before_any_data() {
    let (cid, data) = shard(3);
    let (honest, data_at) = whole(&data);
    let header = encode_frame(&DataResponse::Shard {
        size: data.len() as u64,
    })
    .len();
    let c = client();
    for at in [header, header + 64 * 10 + 3, data_at - 1] {
        let lie = flip(honest.clone(), at);
        let t = fake_node(Arc::new(move |_: &DataRequest| Reply::finish(lie.clone())));
        let (result, got) = fetch_streaming(&c, &t, &cid, None, None).await;
        assert!(
            matches!(result, Err(DataError::BadData { .. })),
            "outboard byte {at}: {result:?}"
        );
        assert!(
            got.is_empty(),
            "outboard byte {at}: {} bytes handed on",
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_shard_or_another_size_is_refused() {
    let (cid, data) = shard(4);
    let (other_cid, other) = shard(5);
    let c = client();
    // The whole of another (self-consistent) shard, under the asked CID.
    let lie = whole(&other).0;
    let t = fake_node(Arc::new(move |_: &DataRequest| Reply::finish(lie.clone())));
    let err = c.fetch(&t, &cid, None, None).await.unwrap_err();
    assert!(matches!(err, DataError::BadData { .. }), "{err}");
    // It is that shard's honest answer: accepted under its own CID.
    assert_eq!(
        c.fetch(&t, &other_cid, None, None).await.unwrap()[..],
        other[..]
    );
    // The right shard, but the manifest says another size.
    let honest = whole(&data).0;
    let t = fake_node(Arc::new(move |_: &DataRequest| {
        Reply::finish(honest.clone())
    }));
    let err = c
        .fetch(&t, &cid, Some(data.len() as u64 + 1), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::BadData { .. }), "{err}");
    assert!(err.to_string().contains("manifest"), "{err}");
    // A header claiming one byte less, with the honest outboard and data behind it.
    let mut lie = encode_frame(&DataResponse::Shard {
        size: data.len() as u64 - 1,
    });
    lie.extend_from_slice(&verified::outboard(&data).1);
    lie.extend_from_slice(&data);
    let t = fake_node(Arc::new(move |_: &DataRequest| Reply::finish(lie.clone())));
    let err = c.fetch(&t, &cid, None, None).await.unwrap_err();
    assert!(matches!(err, DataError::BadData { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_is_an_error_not_a_short_shard() {
    let (cid, data) = shard(6);
    let (honest, data_at) = whole(&data);
    let c = client();
    for keep in [data_at / 2, data_at, data_at + 300_000, honest.len() - 1] {
        let lie = honest[..keep].to_vec();
        let t = fake_node(Arc::new(move |_: &DataRequest| Reply::finish(lie.clone())));
        let err = c.fetch(&t, &cid, None, None).await.unwrap_err();
        assert!(
            matches!(err, DataError::Protocol { .. }),
            "cut at {keep}: {err}"
        );
        let (result, got) = fetch_streaming(&c, &t, &cid, None, None).await;
        assert!(result.is_err(), "cut at {keep}");
        assert!(got.len() < data.len());
        assert_eq!(
            got[..],
            data[..got.len()],
            "cut at {keep}: what was handed on"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_says_whether_the_nodes_copy_was_corrupt() {
    let (cid, data) = shard(7);
    let (honest, data_at) = whole(&data);
    let c = client();
    let cut = data_at + 200_000;
    for (code, corrupt) in [(RESET_CORRUPT, true), (RESET_ABORTED, false)] {
        let lie = Reply {
            bytes: honest[..cut].to_vec(),
            end: End::Reset(code),
        };
        let t = fake_node(Arc::new(move |_: &DataRequest| lie.clone()));
        let (result, got) = fetch_streaming(&c, &t, &cid, None, None).await;
        match result {
            Err(DataError::Remote { error, .. }) if corrupt => {
                assert_eq!(error.code, ErrorCode::Corrupt)
            }
            Err(DataError::Protocol { .. }) if !corrupt => {}
            other => panic!("reset {code:#x}: {other:?}"),
        }
        assert!(got.len() <= cut - data_at);
        assert_eq!(got[..], data[..got.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_the_shard_are_not_handed_on() {
    let (cid, data) = shard(8);
    let mut answer = whole(&data).0;
    answer.extend_from_slice(&[0xee; 3000]);
    let t = fake_node(Arc::new(move |_: &DataRequest| {
        Reply::finish(answer.clone())
    }));
    let c = client();
    assert_eq!(c.fetch(&t, &cid, None, None).await.unwrap()[..], data[..]);
    let (result, got) = fetch_streaming(&c, &t, &cid, None, None).await;
    assert_eq!(result.unwrap(), data.len() as u64);
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bent_range_proof_is_refused() {
    let (cid, data) = shard(9);
    let range = 100_000u64..180_000;
    let (honest, proof_at) = proof(&data, range.clone());
    let c = client();
    let len = honest.len() - proof_at;
    for at in [
        proof_at,
        proof_at + 63,
        proof_at + len / 2,
        honest.len() - 1,
    ] {
        let lie = flip(honest.clone(), at);
        let t = fake_node(Arc::new(move |_: &DataRequest| Reply::finish(lie.clone())));
        let (result, got) = fetch_streaming(&c, &t, &cid, None, Some(range.clone())).await;
        assert!(
            matches!(result, Err(DataError::BadData { .. })),
            "proof byte {}: {result:?}",
            at - proof_at
        );
        let want = &data[range.start as usize..range.end as usize];
        assert!(got.len() < want.len());
        assert_eq!(got[..], want[..got.len()], "what was handed on");
    }
    // A proof stream of another length than the range needs.
    let mut lie = encode_frame(&DataResponse::Proof {
        size: data.len() as u64,
        len: len as u64 + 64,
    });
    lie.extend_from_slice(&honest[proof_at..]);
    lie.extend_from_slice(&[0; 64]);
    let t = fake_node(Arc::new(move |_: &DataRequest| Reply::finish(lie.clone())));
    let err = c.fetch(&t, &cid, None, Some(range)).await.unwrap_err();
    assert!(matches!(err, DataError::BadData { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_and_garbage_headers_are_reported() {
    let (cid, _) = shard(10);
    let c = client();
    let refusal = encode_frame(&DataResponse::Error(RemoteError {
        code: ErrorCode::NotFound,
        message: "not here".into(),
    }));
    let t = fake_node(Arc::new(move |_: &DataRequest| {
        Reply::finish(refusal.clone())
    }));
    match c.fetch(&t, &cid, None, None).await {
        Err(DataError::Remote { error, .. }) => {
            assert_eq!(error.code, ErrorCode::NotFound);
            assert_eq!(error.message, "not here");
        }
        other => panic!("{other:?}"),
    }
    // A length prefix over the header limit, then noise.
    let t = fake_node(Arc::new(|_: &DataRequest| Reply::finish(vec![0xff; 64])));
    let err = c.fetch(&t, &cid, None, None).await.unwrap_err();
    assert!(matches!(err, DataError::Protocol { .. }), "{err}");
    // A well-formed frame that is not an answer to a fetch.
    let t = fake_node(Arc::new(|_: &DataRequest| {
        Reply::finish(encode_frame(&DataResponse::Stored))
    }));
    let err = c.fetch(&t, &cid, None, None).await.unwrap_err();
    assert!(matches!(err, DataError::Protocol { .. }), "{err}");
    // Not even a whole length prefix.
    let t = fake_node(Arc::new(|_: &DataRequest| Reply::finish(vec![1, 0])));
    let err = c.fetch(&t, &cid, None, None).await.unwrap_err();
    assert!(matches!(err, DataError::Protocol { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_sending_is_given_up_on_not_waited_for() {
    let (cid, data) = shard(11);
    let (honest, data_at) = whole(&data);
    let range = 100_000u64..180_000;
    let (proof_answer, proof_at) = proof(&data, range.clone());
    let silent = stalling_node(Vec::new());
    let in_outboard = stalling_node(honest[..data_at - 100].to_vec());
    let in_data = stalling_node(honest[..data_at + 300_000].to_vec());
    let in_proof = stalling_node(proof_answer[..proof_at + 20_000].to_vec());
    let c = client();
    let started = std::time::Instant::now();
    let (silent, in_outboard, in_data, in_proof) = tokio::join!(
        c.fetch(&silent, &cid, None, None),
        c.fetch(&in_outboard, &cid, None, None),
        fetch_streaming(&c, &in_data, &cid, None, None),
        fetch_streaming(&c, &in_proof, &cid, None, Some(range.clone())),
    );
    // All four at once: each gives up after its own 15 s, far inside the 120 s request limit.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(40), "gave up after {took:?}");
    assert!(
        matches!(silent, Err(DataError::Timeout { .. })),
        "{silent:?}"
    );
    assert!(
        matches!(in_outboard, Err(DataError::Stalled { received: 0, .. })),
        "{in_outboard:?}"
    );
    let (result, got) = in_data;
    match result {
        Err(DataError::Stalled { received, .. }) => assert_eq!(received, 300_000),
        other => panic!("{other:?}"),
    }
    // Everything that arrived was verified and handed on, up to the last whole group.
    let group = verified::GROUP_BYTES;
    assert_eq!(got.len(), 300_000 / group * group);
    assert_eq!(got[..], data[..got.len()]);
    let (result, got) = in_proof;
    assert!(
        matches!(
            result,
            Err(DataError::Stalled {
                received: 20_000,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        got[..],
        data[range.start as usize..range.start as usize + got.len()]
    );
}
