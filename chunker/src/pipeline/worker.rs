//! The workers: each codes stripes (parity, every shard's CID and outboard) and does its part
//! of the object hash.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use blake3::hazmat::ChainingValue;
use bytes::Bytes;

use super::encode::Msg;
use super::hashing::{BlockHashes, ObjectHashing, hash_blocks, stripe_first_root};
use super::pool::Pool;
use super::{EncodeError, EncodedShard, EncodedStripe};
use crate::cids::{self, Codec};
use crate::erasure::{self, ErasureCoder};
use crate::manifest::{ShardRef, Stripe};
use crate::verified;

pub(super) struct Job {
    pub(super) index: u64,
    pub(super) offset: u64,
    pub(super) data: Vec<Bytes>,
    /// The stripe's bytes, contiguous, when workers hash the object.
    pub(super) blocks: Option<Bytes>,
    /// How the worker takes part in hashing the object.
    pub(super) hashing: ObjectHashing,
    /// The input ended in this stripe.
    pub(super) last: bool,
}

pub(super) fn worker(
    mut coder: Box<dyn ErasureCoder>,
    jobs: Arc<Mutex<Receiver<Job>>>,
    out: SyncSender<Msg>,
    pool: Arc<Pool>,
) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // Full stripes of power-of-two shards hash the object inside the shard pass; other
        // stripes hash their aligned blocks separately.
        let (fused, mut hashes) = match (job.hashing, &job.blocks) {
            (ObjectHashing::Fused(_), Some(_)) if !job.last => {
                (Some(job.offset), BlockHashes::default())
            }
            (ObjectHashing::Fused(block) | ObjectHashing::Blocks(block), Some(b)) => {
                (None, hash_blocks(b, job.offset, job.last, block))
            }
            _ => (None, BlockHashes::default()),
        };
        let msg = match encode_stripe_with(coder.as_mut(), &job.data, Some(&pool), fused) {
            Ok((stripe, shards, object_cvs)) => {
                if fused.is_some() {
                    // Block 0 is data shard 0: its own root is the object hash if it is all.
                    if job.index == 0 {
                        hashes.first_root = stripe_first_root(&shards);
                    }
                    hashes.cvs = object_cvs;
                }
                let encoded = EncodedStripe {
                    index: job.index,
                    offset: job.offset,
                    stripe,
                    shards,
                };
                Msg::Stripe(encoded, hashes)
            }
            Err(e) => Msg::Failed(e),
        };
        if out.send(msg).is_err() {
            return;
        }
    }
}

fn shard_of(index: usize, data: Bytes) -> EncodedShard {
    let (root, outboard) = verified::outboard(&data);
    EncodedShard {
        index,
        cid: cids::from_hash(Codec::Raw, &root),
        data,
        outboard: Bytes::from(outboard),
    }
}

/// Encodes one stripe: parity, CIDs and outboards. `data` holds `k` data shards of any lengths
/// up to the shard size (zero-length ones are implicit zeros).
pub fn encode_stripe_shards(
    coder: &mut dyn ErasureCoder,
    data: &[Bytes],
) -> Result<(Stripe, Vec<EncodedShard>), EncodeError> {
    encode_stripe_with(coder, data, None, None).map(|(stripe, shards, _)| (stripe, shards))
}

/// Encodes a stripe. With `object_offset` (the stripe's offset in the object, all data shards
/// the same power-of-two length), also returns each data shard's chaining value as a subtree
/// of the object, computed in the same pass as its outboard.
fn encode_stripe_with(
    coder: &mut dyn ErasureCoder,
    data: &[Bytes],
    pool: Option<&Arc<Pool>>,
    object_offset: Option<u64>,
) -> Result<(Stripe, Vec<EncodedShard>, Vec<ChainingValue>), EncodeError> {
    let longest = data.iter().map(Bytes::len).max().unwrap_or(0);
    if longest == 0 || data.len() != coder.data_shards() {
        return Err(EncodeError::Params(
            "a stripe needs k data shards with at least one byte".into(),
        ));
    }
    let plen = erasure::parity_len(longest);
    let padded: Vec<Vec<u8>> = data
        .iter()
        .filter(|d| d.len() != plen)
        .map(|d| {
            let mut v = Vec::with_capacity(plen);
            v.extend_from_slice(d);
            v.resize(plen, 0);
            v
        })
        .collect();
    let mut padded_iter = padded.iter();
    let refs: Vec<&[u8]> = data
        .iter()
        .map(|d| {
            if d.len() == plen {
                &d[..]
            } else {
                padded_iter.next().map_or(&[][..], Vec::as_slice)
            }
        })
        .collect();
    let mut parity: Vec<Vec<u8>> = (0..coder.parity_shards())
        .map(|_| pool.map_or_else(Vec::new, |p| p.take(plen)))
        .collect();
    coder.encode(&refs, &mut parity)?;
    drop(refs);
    drop(padded);

    let k = data.len();
    let mut shards = Vec::with_capacity(k + parity.len());
    let mut refs = Vec::with_capacity(k);
    let mut object_cvs = Vec::with_capacity(if object_offset.is_some() { k } else { 0 });
    for (i, d) in data.iter().enumerate() {
        if d.is_empty() {
            refs.push(ShardRef {
                cid: cids::raw(b""),
                len: 0,
            });
        } else {
            let s = match object_offset {
                Some(offset) => {
                    let (root, outboard, cv) =
                        verified::outboard_with_object_cv(d, offset + (i * d.len()) as u64);
                    object_cvs.push(cv);
                    EncodedShard {
                        index: i,
                        cid: cids::from_hash(Codec::Raw, &root),
                        data: d.clone(),
                        outboard: Bytes::from(outboard),
                    }
                }
                None => shard_of(i, d.clone()),
            };
            refs.push(ShardRef {
                cid: s.cid,
                len: d.len() as u32,
            });
            shards.push(s);
        }
    }
    let mut parity_cids = Vec::with_capacity(parity.len());
    for (j, p) in parity.into_iter().enumerate() {
        let bytes = match pool {
            Some(pool) => pool.freeze(p, plen),
            None => Bytes::from(p),
        };
        let s = shard_of(k + j, bytes);
        parity_cids.push(s.cid);
        shards.push(s);
    }
    let stripe = Stripe {
        data: refs,
        parity: parity_cids,
        parity_len: plen as u32,
    };
    Ok((stripe, shards, object_cvs))
}
