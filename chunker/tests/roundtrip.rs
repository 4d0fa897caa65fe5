//! Property tests of the whole encode -> lose shards -> decode path.

use std::collections::HashMap;

use bytes::Bytes;
use cairn_chunker::chunking::Chunking;
use cairn_chunker::cids::{self, Cid};
use cairn_chunker::erasure::ErasureCode;
use cairn_chunker::manifest::ObjectManifest;
use cairn_chunker::pipeline::{DecodeError, EncodeParams, Encoder, StripeDecoder, decode_object};
use cairn_testkit::data::{Xorshift, bytes as data};
use proptest::prelude::*;

const SHARD: u32 = 1024;

fn params(k: u16, m: u16, code: ErasureCode, chunking: Chunking) -> EncodeParams {
    let mut p = EncodeParams::with_shape(k, m);
    p.erasure.code = code;
    p.erasure.shard_size = SHARD;
    p.chunking = chunking;
    p.inline_limit = 100;
    p.threads = 2;
    p
}

fn encode(bytes: &[u8], p: EncodeParams) -> (ObjectManifest, HashMap<Cid, Bytes>) {
    let (manifest, stripes) = Encoder::encode_all(bytes, p).unwrap();
    let mut store = HashMap::new();
    for s in &stripes {
        for shard in &s.shards {
            assert_eq!(cids::raw(&shard.data), shard.cid);
            store.insert(shard.cid, shard.data.clone());
        }
    }
    // The manifest is canonical and its CID stable.
    let again = ObjectManifest::from_bytes_for(&manifest.cid(), &manifest.to_bytes()).unwrap();
    assert_eq!(again, manifest);
    (manifest, store)
}

/// Boundary sizes for k=4, 1 KiB shards: empty, inline edge, shard and stripe edges.
const INTERESTING_SIZES: &[usize] = &[
    0,
    1,
    100,
    101,
    1023,
    1024,
    1025,
    4095,
    4096,
    4097,
    8192,
    3 * 4096 + 17,
];

#[test]
fn interesting_sizes_round_trip_with_both_codes() {
    for code in ErasureCode::ALL {
        for &len in INTERESTING_SIZES {
            let bytes = data(len, len as u64 + 7);
            let (manifest, store) = encode(&bytes, params(4, 2, code, Chunking::Fixed));
            assert_eq!(manifest.size, len as u64);
            assert_eq!(
                manifest.blake3,
                blake3::hash(&bytes),
                "object BLAKE3 must equal b3sum"
            );
            assert_eq!(manifest.inline.is_some(), len <= 100);
            if len > 100 {
                assert_eq!(manifest.stripes.len(), len.div_ceil(4096));
            }
            let mut out = Vec::new();
            decode_object(&manifest, |_, _, s| store.get(&s.cid).cloned(), &mut out).unwrap();
            assert_eq!(out, bytes, "{code} len {len}");
        }
    }
}

#[test]
fn small_objects_do_not_waste_full_shards() {
    // 1000 bytes over 4+2 with 1 KiB shards: 4 data shards of 250 bytes and 2 parity of 256.
    let (manifest, store) = encode(
        &data(1000, 1),
        params(4, 2, ErasureCode::DEFAULT, Chunking::Fixed),
    );
    let stored: usize = store.values().map(Bytes::len).sum();
    assert_eq!(stored, 1000 + 2 * 256);
    assert!(manifest.stripes[0].data.iter().all(|s| s.len == 250));
}

#[test]
fn too_many_losses_name_the_missing_shards() {
    let bytes = data(10_000, 3);
    let (manifest, store) = encode(&bytes, params(4, 2, ErasureCode::DEFAULT, Chunking::Fixed));
    let err = decode_object(
        &manifest,
        |_, i, s| {
            if i < 3 {
                None
            } else {
                store.get(&s.cid).cloned()
            }
        },
        &mut Vec::new(),
    )
    .unwrap_err();
    match err {
        DecodeError::NotEnoughShards {
            stripe,
            present,
            need,
            missing,
            ..
        } => {
            assert_eq!((stripe, present, need), (0, 3, 4));
            assert_eq!(missing, vec![0, 1, 2]);
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn wrong_code_in_manifest_is_caught_not_returned() {
    // Parity computed by one engine cannot rebuild data declared to use the other: the rebuilt
    // shard fails its CID check instead of being returned.
    let bytes = data(20_000, 5);
    let (mut manifest, store) = encode(
        &bytes,
        params(4, 2, ErasureCode::ReedSolomonGf8, Chunking::Fixed),
    );
    manifest.erasure.code = ErasureCode::LeopardGf16;
    let err = decode_object(
        &manifest,
        |_, i, s| {
            if i == 0 {
                None
            } else {
                store.get(&s.cid).cloned()
            }
        },
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::Inconsistent { index: 0, .. }),
        "{err}"
    );
}

fn chunking_strategy() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        Just(Chunking::Fixed),
        Just(Chunking::ContentDefined {
            min: 256,
            avg: 512,
            max: 1024
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any size from 0 to several stripes, any k and m up to 32+32, either code and chunking,
    /// any set of up to m lost shards per stripe: byte-identical round trip.
    #[test]
    fn any_losses_up_to_m_round_trip(
        k in 1u16..=32,
        m in 1u16..=32,
        stripes in 0usize..4,
        extra in 0usize..(32 * 1024),
        code in prop::sample::select(ErasureCode::ALL.to_vec()),
        chunking in chunking_strategy(),
        seed in any::<u64>(),
        loss_seed in any::<u64>(),
    ) {
        let len = (stripes * usize::from(k) * SHARD as usize + extra) % (4 * 32 * 1024 + 1);
        let bytes = data(len, seed);
        let (manifest, store) = encode(&bytes, params(k, m, code, chunking));
        let total = usize::from(k + m);
        let mut out = Vec::new();
        decode_object(
            &manifest,
            |stripe, index, shard| {
                // Lose a pseudo-random set of exactly m shards in every stripe.
                let mut order: Vec<usize> = (0..total).collect();
                let mut x = Xorshift::from_state(loss_seed ^ (stripe as u64).wrapping_mul(0x9e3779b97f4a7c15));
                for i in (1..total).rev() {
                    order.swap(i, x.below(i as u64 + 1) as usize);
                }
                if order[..usize::from(m)].contains(&index) { None } else { store.get(&shard.cid).cloned() }
            },
            &mut out,
        ).unwrap();
        prop_assert_eq!(out, bytes);
    }

    /// A flipped byte anywhere in any shard is detected, reported, and routed around.
    #[test]
    fn corruption_of_any_shard_byte_is_detected(
        stripe_pick in any::<prop::sample::Index>(),
        shard_pick in any::<prop::sample::Index>(),
        byte_pick in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        code in prop::sample::select(ErasureCode::ALL.to_vec()),
    ) {
        let bytes = data(3 * 4096 + 1234, 11);
        let p = params(4, 2, code, Chunking::Fixed);
        let (manifest, stripes) = Encoder::encode_all(&bytes, p).unwrap();
        let si = stripe_pick.index(stripes.len());
        let victim = &stripes[si].shards[shard_pick.index(stripes[si].shards.len())];
        let mut bad = victim.data.to_vec();
        let at = byte_pick.index(bad.len());
        bad[at] ^= flip;
        let stripe = &manifest.stripes[si];
        let mut shards: Vec<Option<Bytes>> = vec![None; 6];
        for s in &stripes[si].shards {
            shards[s.index] = Some(if s.index == victim.index { Bytes::from(bad.clone()) } else { s.data.clone() });
        }
        let mut dec = StripeDecoder::new(&manifest.erasure).unwrap();
        let decoded = dec.decode(si, stripe, shards, true).unwrap();
        prop_assert_eq!(decoded.corrupt, vec![victim.index]);
        let start = manifest.layout().stripe_start(si) as usize;
        let joined: Vec<u8> = decoded.data.concat();
        prop_assert_eq!(&joined[..], &bytes[start..start + joined.len()]);
    }
}

#[test]
fn object_hash_from_parallel_blocks_equals_b3sum() {
    // Stripes that are whole multiples of 1 MiB let the workers hash the object in parallel
    // blocks; the merged hash must still be exactly BLAKE3 of the object.
    const MIB: usize = 1 << 20;
    // Power-of-two shards hash inside the shard pass; 768 KiB shards (stripes of 3 MiB) hash in
    // separate 1 MiB blocks.
    for (k, shard) in [(4u16, 256 * 1024u32), (2, 1 << 20), (4, 768 * 1024)] {
        for len in [
            5000,
            MIB - 1,
            MIB,
            MIB + 1,
            2 * MIB,
            3 * MIB + 12_345,
            4 * MIB + 1,
        ] {
            let bytes = data(len, len as u64);
            let mut p = EncodeParams::with_shape(k, 1);
            p.erasure.shard_size = shard;
            p.threads = 3;
            // Up to one stripe from memory is encoded on the caller's thread, anything from a
            // reader on the pipeline's threads: the two must agree to the byte.
            let mut manifests = Vec::new();
            for reader in [false, true] {
                let mut enc = if reader {
                    Encoder::new(std::io::Cursor::new(bytes.clone()), p.clone()).unwrap()
                } else {
                    Encoder::from_bytes(Bytes::from(bytes.clone()), p.clone()).unwrap()
                };
                let stripes: Vec<_> = enc.by_ref().collect::<Result<_, _>>().unwrap();
                let manifest = enc.finish().unwrap();
                assert_eq!(
                    manifest.blake3,
                    blake3::hash(&bytes),
                    "k={k} shard={shard} len={len}"
                );
                let store: HashMap<Cid, Bytes> = stripes
                    .iter()
                    .flat_map(|s| s.shards.iter().map(|sh| (sh.cid, sh.data.clone())))
                    .collect();
                let mut out = Vec::new();
                decode_object(&manifest, |_, _, s| store.get(&s.cid).cloned(), &mut out).unwrap();
                assert_eq!(out, bytes);
                manifests.push(manifest.cid());
            }
            assert_eq!(manifests[0], manifests[1], "k={k} shard={shard} len={len}");
        }
    }
}

#[test]
fn encoder_reads_ahead_only_a_bounded_number_of_stripes() {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// Input produced lazily; counts what the encoder has pulled.
    struct Lazy {
        left: u64,
        pulled: Arc<AtomicU64>,
    }
    impl Read for Lazy {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.left) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = (i as u8) ^ (self.left as u8);
            }
            self.left -= n as u64;
            self.pulled.fetch_add(n as u64, Ordering::SeqCst);
            Ok(n)
        }
    }
    /// Stripes the encoder may hold beyond those handed out: its queues, workers and reorder
    /// buffer (11 with two workers), with room to spare.
    const AHEAD: u64 = 16;

    // Many small stripes, so the two workers finish out of order often; and busy threads
    // competing for the cores, so a worker is regularly preempted while the other runs on.
    // Without a bound on the reorder buffer the other worker's stripes pile up behind the
    // preempted one's.
    let pulled = Arc::new(AtomicU64::new(0));
    let mut p = EncodeParams::with_shape(4, 2);
    p.erasure.shard_size = 4 * 1024;
    p.threads = 2;
    let stripe = 4 * 4 * 1024u64;
    let total = 20_000u64;
    let mut enc = Encoder::new(
        Lazy {
            left: total * stripe,
            pulled: pulled.clone(),
        },
        p,
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let first = enc.next().unwrap().unwrap();
    assert_eq!(first.index, 0);
    // Hold the first stripe and stop consuming: the pipeline fills its bounded queues and waits.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut worst = pulled.load(Ordering::SeqCst) / stripe - 1;
    // And it resumes when consumed, never further ahead than the bound.
    for taken in 2..=total {
        let s = enc.next().unwrap().unwrap();
        assert_eq!(s.index, taken - 1);
        worst = worst.max(pulled.load(Ordering::SeqCst) / stripe - taken);
    }
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    assert!(enc.next().is_none());
    assert_eq!(pulled.load(Ordering::SeqCst), total * stripe);
    assert!(
        worst <= AHEAD,
        "read up to {worst} stripes beyond those handed out"
    );
}

/// A repair rebuilds any `m` lost shards of a stripe, parity too, byte for byte, from any `k`
/// others (short last stripes included), and refuses to make a shard the manifest does not name.
#[test]
fn rebuild_all_restores_lost_data_and_parity_shards() {
    for code in ErasureCode::ALL {
        for &len in &[4097usize, 3 * 4096 + 17, 20_000] {
            let bytes = data(len, len as u64);
            let (manifest, store) = encode(&bytes, params(4, 2, code, Chunking::Fixed));
            for (index, stripe) in manifest.stripes.iter().enumerate() {
                let total = stripe.data.len() + stripe.parity.len();
                for lost in [(0usize, 1usize), (1, 4), (4, 5), (2, 3)] {
                    let given: Vec<Option<Bytes>> = (0..total)
                        .map(|i| {
                            let s = stripe.shard(i)?;
                            if i == lost.0 || i == lost.1 || s.len == 0 {
                                None
                            } else {
                                store.get(&s.cid).cloned()
                            }
                        })
                        .collect();
                    let mut decoder = StripeDecoder::new(&manifest.erasure).unwrap();
                    let all = decoder.rebuild_all(index, stripe, given, true).unwrap();
                    assert_eq!(all.len(), total);
                    for (i, b) in all.iter().enumerate() {
                        let s = stripe.shard(i).unwrap();
                        if s.len > 0 {
                            assert_eq!(Some(b), store.get(&s.cid), "{code:?} {len} shard {i}");
                        }
                    }
                }
                // A wrong parity CID in the manifest: the rebuilt parity is refused.
                let mut bad = stripe.clone();
                bad.parity[1] = cids::raw(b"not this parity");
                let given: Vec<Option<Bytes>> = (0..total)
                    .map(|i| {
                        let s = stripe.shard(i)?;
                        (i < stripe.data.len() && s.len > 0)
                            .then(|| store.get(&s.cid).cloned())
                            .flatten()
                    })
                    .collect();
                let mut decoder = StripeDecoder::new(&manifest.erasure).unwrap();
                let err = decoder.rebuild_all(index, &bad, given, true).unwrap_err();
                assert!(
                    matches!(err, DecodeError::Inconsistent { index: 5, .. }),
                    "{err}"
                );
            }
        }
    }
}
