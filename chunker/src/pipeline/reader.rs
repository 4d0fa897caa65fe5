//! The reader thread: cuts the input into stripes and hashes the object when the workers
//! cannot.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use bytes::Bytes;

use super::encode::Msg;
use super::hashing::ObjectHashing;
use super::pool::Pool;
use super::worker::Job;
use super::{EncodeError, EncodeParams};
use crate::chunking::{CdcChunker, Chunking, read_full};

/// What the pipeline reads from.
pub(super) enum Source {
    Reader(Box<dyn Read + Send>),
    Bytes(Bytes),
}

/// Fills `buf` from the source; returns the bytes placed (fewer only at the end of input).
fn fill(
    source: &mut Source,
    buf: &mut Vec<u8>,
    want: usize,
    pool: &Pool,
) -> io::Result<Option<Bytes>> {
    match source {
        Source::Reader(r) => {
            *buf = pool.take(want);
            let n = read_full(r, buf)?;
            buf.truncate(n);
            Ok(None)
        }
        Source::Bytes(b) => {
            let n = want.min(b.len());
            Ok(Some(b.split_to(n)))
        }
    }
}

/// The reader thread: cuts stripes, decides on inline, and hashes the object itself unless the
/// workers can hash aligned blocks of it in parallel.
pub(super) fn read_stripes(
    mut source: Source,
    p: &EncodeParams,
    jobs: &SyncSender<Job>,
    credits: Option<&Receiver<()>>,
    pool: &Arc<Pool>,
) -> Result<Msg, EncodeError> {
    let k = usize::from(p.erasure.k);
    let mut hasher = blake3::Hasher::new();
    let mut size: u64 = 0;
    let mut index: u64 = 0;
    let send = |job: Job| {
        if let Some(credits) = credits {
            credits
                .recv()
                .map_err(|_| EncodeError::Pipeline("the encoder was dropped"))?;
        }
        jobs.send(job)
            .map_err(|_| EncodeError::Pipeline("encode workers stopped"))
    };
    let inline = |bytes: &[u8], hasher: &mut blake3::Hasher| {
        hasher.update(bytes);
        Msg::Done {
            stripes: 0,
            size: bytes.len() as u64,
            hash: Some(hasher.finalize()),
            inline: Some(bytes.to_vec()),
        }
    };
    let hashing = ObjectHashing::choose(p);
    let workers_hash = hashing != ObjectHashing::Reader;
    match p.chunking {
        Chunking::Fixed => {
            let shard = p.erasure.shard_size as usize;
            let stripe_bytes = shard * k;
            loop {
                let mut vec = Vec::new();
                let stripe = match fill(&mut source, &mut vec, stripe_bytes, pool)? {
                    Some(bytes) => bytes,
                    None => {
                        let n = vec.len();
                        pool.freeze(vec, n)
                    }
                };
                let n = stripe.len();
                if index == 0 && n < stripe_bytes && n as u64 <= p.inline_limit {
                    return Ok(inline(&stripe, &mut hasher));
                }
                if n == 0 {
                    break;
                }
                if !workers_hash {
                    hasher.update(&stripe);
                }
                // Full stripes use full shards; a short last stripe is split evenly.
                let per = if n == stripe_bytes {
                    shard
                } else {
                    n.div_ceil(k)
                };
                let data = (0..k)
                    .map(|i| stripe.slice((i * per).min(n)..((i + 1) * per).min(n)))
                    .collect();
                let last = n < stripe_bytes;
                send(Job {
                    index,
                    offset: size,
                    data,
                    blocks: workers_hash.then_some(stripe),
                    hashing,
                    last,
                })?;
                size += n as u64;
                index += 1;
                if last {
                    break;
                }
            }
        }
        Chunking::ContentDefined { min, avg, max } => {
            let reader: Box<dyn Read + Send> = match source {
                Source::Reader(r) => r,
                Source::Bytes(b) => Box::new(io::Cursor::new(b)),
            };
            let mut chunks = CdcChunker::new(reader, min, avg, max)?.peekable();
            let mut data: Vec<Bytes> = Vec::with_capacity(k);
            let mut stripe_len = 0u64;
            while let Some(chunk) = chunks.next() {
                let chunk = chunk?;
                hasher.update(&chunk);
                stripe_len += chunk.len() as u64;
                data.push(chunk);
                let last = chunks.peek().is_none();
                if index == 0 && last && data.len() < k && stripe_len <= p.inline_limit {
                    let bytes = data.concat();
                    return Ok(Msg::Done {
                        stripes: 0,
                        size: bytes.len() as u64,
                        hash: Some(hasher.finalize()),
                        inline: Some(bytes),
                    });
                }
                if data.len() == k || last {
                    data.resize(k, Bytes::new());
                    send(Job {
                        index,
                        offset: size,
                        data: std::mem::replace(&mut data, Vec::with_capacity(k)),
                        blocks: None,
                        hashing,
                        last,
                    })?;
                    size += stripe_len;
                    stripe_len = 0;
                    index += 1;
                }
            }
        }
    }
    if index == 0 {
        // Empty input: an empty inline object.
        return Ok(inline(&[], &mut hasher));
    }
    Ok(Msg::Done {
        stripes: index,
        size,
        hash: (!workers_hash).then(|| hasher.finalize()),
        inline: None,
    })
}
