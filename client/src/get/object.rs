//! Objects and ranges: stripes fetched in order, a bounded number ahead of the output, each
//! piece on its own channel so bytes leave as soon as they are verified; read-ahead into the
//! shard cache.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cairn_chunker::manifest::{ObjectManifest, ShardRef};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::pieces::StripeRead;
use super::rebuild::Rebuild;
use super::shards::{fetch_shard, guess};
use super::{Incidents, READ_AHEAD_BYTES, STRIPES_IN_FLIGHT, Sink, WriteSink};
use crate::cache::{Filler, Shard};
use crate::error::{ClientError, Output, writing};
use crate::network::Network;
use crate::put::Progress;

/// Writes `range` of an object (the whole object if `None`) to `out`, verified; returns the
/// bytes written. A whole-object read also checks the object's BLAKE3.
pub async fn read_object<W: AsyncWrite + Unpin + Send>(
    net: &Network,
    manifest: &ObjectManifest,
    range: Option<Range<u64>>,
    out: &mut W,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let n = read_object_to(
        net,
        manifest,
        range,
        &mut WriteSink(&mut *out),
        progress,
        incidents,
    )
    .await?;
    out.flush()
        .await
        .map_err(writing(Output::Stream("the output")))?;
    Ok(n)
}

/// [`read_object`] into any [`Sink`]. Bytes leave as soon as they are verified (every 16 KiB
/// group of a shard), in order, with up to [`STRIPES_IN_FLIGHT`] stripes fetched ahead.
pub async fn read_object_to<S: Sink>(
    net: &Network,
    manifest: &ObjectManifest,
    range: Option<Range<u64>>,
    out: &mut S,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let whole = range.is_none();
    let range = range.unwrap_or(0..manifest.size);
    let range = range.start.min(manifest.size)..range.end.min(manifest.size);
    if let Some(inline) = &manifest.inline {
        let bytes = Bytes::copy_from_slice(&inline[range.start as usize..range.end as usize]);
        let n = bytes.len() as u64;
        out.put(bytes).await?;
        progress(n);
        return Ok(n);
    }
    let layout = manifest.layout();
    let stripes: Vec<usize> = layout.stripes_for(range.clone()).collect();
    let first_stripe = stripes.first().copied();
    let mut hasher = whole.then(blake3::Hasher::new);
    let mut written = 0u64;
    // A long scan would only push out what other readers use: reads bigger than a quarter of
    // the cache leave it as it is (read-ahead fills it for sequential readers instead).
    let fill = net
        .cache()
        .is_some_and(|c| range.end - range.start <= c.capacity() / 4);
    // Shards are not looked up before the read: each is asked of the node that holds it by
    // the last lookup, or by placement (a guess that a miss corrects with a lookup), so the
    // first byte does not wait for every node to answer where shards are.
    // Everything but the read's first piece waits until its first bytes have arrived (or it
    // ended), so that when many reads start at once, every reader's first bytes travel ahead
    // of the bulk of the others, instead of all of them sharing the CPU and the links fairly
    // and all arriving late.
    let (gate, _) = tokio::sync::watch::channel(false);
    let gate = &gate;
    // A stripe is fetched only when the output has reached the stripe `ahead` before it, so a
    // slow output (a disk, an HTTP client) never has more than `ahead` stripes waiting for it.
    let stripe_bytes = u64::from(manifest.erasure.k) * u64::from(manifest.erasure.shard_size);
    let ahead = (READ_AHEAD_BYTES / stripe_bytes.max(1)).clamp(1, STRIPES_IN_FLIGHT as u64);
    let (output_at, _) = tokio::sync::watch::channel(first_stripe.unwrap_or(0));
    let output_at = &output_at;
    for window in stripes.chunks(64) {
        let holders = guess(net, manifest, window.iter().copied());
        let holders = &holders;
        // Per stripe: its pieces of the range and one channel per piece, drained in order.
        let mut jobs = Vec::with_capacity(window.len());
        let mut outputs = Vec::with_capacity(window.len());
        for &s in window {
            let end = if s + 1 < manifest.stripes.len() {
                layout.stripe_start(s + 1)
            } else {
                manifest.size
            };
            let clip = range.start.max(layout.stripe_start(s))..range.end.min(end);
            let pieces = layout.pieces(manifest, clip);
            // Unbounded, yet bounded: a piece's channel holds at most that piece's bytes (a
            // range of one shard), and a stripe's pieces are only fetched once the output is
            // within `ahead` stripes of it, so at most `ahead` stripes' bytes wait here.
            #[allow(clippy::disallowed_methods)]
            let (txs, rxs): (Vec<_>, Vec<_>) = pieces
                .iter()
                .map(|_| tokio::sync::mpsc::unbounded_channel::<Bytes>())
                .unzip();
            jobs.push((s, pieces, txs));
            outputs.push(rxs);
        }
        let mut producers = futures::stream::iter(jobs)
            .map(|(index, pieces, txs)| async move {
                // An error means the reader is gone: nothing to wait for.
                let _ = output_at
                    .subscribe()
                    .wait_for(|&at| (index as u64) < at as u64 + ahead)
                    .await;
                let read = StripeRead {
                    net,
                    manifest,
                    index,
                    holders,
                    incidents,
                    rebuild: Rebuild::default(),
                    fill,
                };
                let read = &read;
                futures::future::try_join_all(pieces.iter().zip(txs).enumerate().map(
                    |(j, (p, tx))| async move {
                        let head = j == 0 && Some(index) == first_stripe;
                        if !head {
                            // An error means the reader is gone: nothing to wait for.
                            let _ = gate.subscribe().wait_for(|open| *open).await;
                        }
                        read.piece(p, tx, head).await
                    },
                ))
                .await
                .map(|_| ())
            })
            .buffered(ahead as usize);
        let mut finished = std::collections::VecDeque::new();
        let mut producers_done = false;
        for (&stripe, rxs) in window.iter().zip(outputs) {
            for mut rx in rxs {
                loop {
                    tokio::select! {
                        r = producers.next(), if !producers_done => match r {
                            Some(r) => finished.push_back(r),
                            None => producers_done = true,
                        },
                        b = rx.recv() => match b {
                            Some(b) => {
                                gate.send_if_modified(|open| !std::mem::replace(open, true));
                                if let Some(h) = hasher.as_mut() {
                                    h.update(&b);
                                }
                                let n = b.len() as u64;
                                out.put(b).await?;
                                written += n;
                                progress(n);
                            }
                            None => {
                                gate.send_if_modified(|open| !std::mem::replace(open, true));
                                break;
                            }
                        },
                    }
                }
            }
            // Every channel of this stripe is closed: its producer has finished.
            let result = match finished.pop_front() {
                Some(r) => r,
                None => producers.next().await.unwrap_or(Ok(())),
            };
            result?;
            output_at.send_replace(stripe + 1);
        }
    }
    if let Some(h) = hasher {
        let actual = h.finalize();
        if actual != manifest.blake3 {
            return Err(cairn_chunker::pipeline::DecodeError::ObjectHash {
                expected: manifest.blake3,
                actual,
            }
            .into());
        }
    }
    if written != range.end - range.start {
        return Err(ClientError::ShortRead {
            written,
            expected: range.end - range.start,
        });
    }
    Ok(written)
}

/// Fetches the whole data shards holding `range` of an object into the network's shard cache
/// (read-ahead for a sequential reader), skipping shards cached or being fetched already.
/// Returns the shards fetched. Failures are left to the reader that needs the bytes.
pub async fn prefetch(net: &Network, manifest: &ObjectManifest, range: Range<u64>) -> usize {
    let Some(cache) = net.cache() else {
        return 0;
    };
    if manifest.inline.is_some() {
        return 0;
    }
    let layout = manifest.layout();
    let pieces = layout.pieces(manifest, range);
    let claims: Vec<(ShardRef, Filler)> = pieces
        .iter()
        .map(|p| manifest.stripes[p.stripe].data[p.shard])
        .filter(|s| s.len > 0)
        .filter_map(|s| cache.begin(s.cid).map(|f| (s, f)))
        .collect();
    if claims.is_empty() {
        return 0;
    }
    let mut stripes: Vec<usize> = pieces.iter().map(|p| p.stripe).collect();
    stripes.dedup();
    let holders = guess(net, manifest, stripes.into_iter());
    let incidents = Incidents::default();
    let holders = &holders;
    let incidents = &incidents;
    futures::stream::iter(claims)
        .map(|(shard, filler)| async move {
            let got = fetch_shard(net, holders, shard, incidents).await;
            match got {
                Ok(b) => {
                    filler.finish(Shard::new(vec![b]));
                    1
                }
                Err(_) => 0,
            }
        })
        .buffer_unordered(STRIPES_IN_FLIGHT)
        .fold(0, |a, b| async move { a + b })
        .await
}

/// Reads a whole object into memory (for pack objects and small files).
pub async fn read_object_to_vec(
    net: &Network,
    manifest: &ObjectManifest,
    incidents: &Incidents,
) -> Result<Vec<u8>, ClientError> {
    // The size is the manifest author's word: grow to it as verified bytes arrive, rather
    // than reserve it up front.
    let mut out = Vec::with_capacity(manifest.size.min(64 << 20) as usize);
    read_object(net, manifest, None, &mut out, Arc::new(|_| {}), incidents).await?;
    Ok(out)
}
