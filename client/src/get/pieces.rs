//! One piece of a read (a range of one data shard): from the shard cache, from a holder as it
//! arrives, or, when the holders fail or are slow, from the stripe rebuilt out of parity.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use cairn_chunker::manifest::{ObjectManifest, Piece};
use cairn_policy::hedge;
use tokio::sync::mpsc::UnboundedSender;

use super::rebuild::Rebuild;
use super::shards::stream_shard;
use super::{HEDGE_AFTER, Incidents};
use crate::cache::{Lookup, Shard};
use crate::error::ClientError;
use crate::network::{Holders, Network};

/// What one stripe read needs to know.
pub(super) struct StripeRead<'a> {
    pub(super) net: &'a Network,
    pub(super) manifest: &'a ObjectManifest,
    pub(super) index: usize,
    pub(super) holders: &'a Holders,
    pub(super) incidents: &'a Incidents,
    pub(super) rebuild: Rebuild,
    /// Whether whole shards read are kept in the cache.
    pub(super) fill: bool,
}

impl StripeRead<'_> {
    /// Sends `piece` (a range of one data shard) to `tx`, verified, as it arrives: from the
    /// shard cache, from a fetch already under way, or from a holder; if the holders fail, or
    /// have not finished within [`HEDGE_AFTER`] and a rebuild out of parity finishes first, the
    /// rest comes from the rebuild.
    /// `head`: this piece holds the first bytes of the read (asked for in the fast lane).
    pub(super) async fn piece(
        &self,
        piece: &Piece,
        tx: UnboundedSender<Bytes>,
        head: bool,
    ) -> Result<(), ClientError> {
        let shard = self.manifest.stripes[self.index].data[piece.shard];
        let range = piece.range.clone();
        let whole = range.start == 0 && range.end == u64::from(shard.len);
        let mut filler = None;
        if let Some(cache) = self.net.cache() {
            let cached = match cache.lookup(&shard.cid) {
                Lookup::Hit(s) => Some(s),
                Lookup::Pending(w) => tokio::time::timeout(HEDGE_AFTER, w.wait())
                    .await
                    .ok()
                    .flatten(),
                Lookup::Miss => None,
            };
            if let Some(s) = cached {
                for b in s.slice(range) {
                    let _ = tx.send(b);
                }
                return Ok(());
            }
            if whole && self.fill {
                filler = cache.begin(shard.cid);
            }
        }
        let sent = AtomicU64::new(0);
        let kept = Mutex::new(Vec::new());
        let keep = filler.is_some();
        let asking = AtomicUsize::new(usize::MAX);
        let direct_ok = {
            let sink = |b: Bytes| {
                sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                if keep && let Ok(mut k) = kept.lock() {
                    k.push(b.clone());
                }
                let _ = tx.send(b);
            };
            let direct = stream_shard(
                self.net,
                self.holders,
                shard,
                range.clone(),
                &sink,
                &asking,
                head,
                self.incidents,
            );
            tokio::pin!(direct);
            tokio::select! {
                // The fetch first: a reader whose consumer stopped taking bytes (a slow S3
                // client, a paused writer) does not poll this for a while, and when it comes
                // back the timer has run out too; what the node sent meanwhile must be taken
                // before the node is judged on it.
                biased;
                r = &mut direct => r.is_ok(),
                _ = tokio::time::sleep(HEDGE_AFTER) => {
                    // A node that has sent nothing at all in that time is treated as down for a
                    // while, so that the next reads go around it instead of waiting here again.
                    // Not when the reader is gone: then nobody waited for it.
                    let slow = asking.load(Ordering::Relaxed);
                    if hedge::holder_counts_as_down(sent.load(Ordering::Relaxed), !tx.is_closed())
                        && slow < self.net.nodes().len()
                    {
                        let what = format!(
                            "shard {}: nothing within {} ms; reading around it",
                            shard.cid,
                            HEDGE_AFTER.as_millis()
                        );
                        self.incidents.record(self.net.nodes()[slow].peer(), what);
                        self.net.fetch_failed(slow, &shard.cid, true);
                    }
                    // Hedge: race the slow holder against a rebuild from whichever shards answer.
                    let rebuild = self.rebuild.get(
                        self.net, self.manifest, self.index, self.holders, self.incidents);
                    tokio::pin!(rebuild);
                    tokio::select! {
                        r = &mut direct => match r {
                            Ok(()) => true,
                            Err(_) => {
                                let data = rebuild.await?;
                                self.rest(data, piece, &sent, &tx);
                                return Ok(());
                            }
                        },
                        r = &mut rebuild => match r {
                            Ok(data) => {
                                // The rebuild won: the rest of the piece comes from it.
                                self.rest(data, piece, &sent, &tx);
                                return Ok(());
                            }
                            Err(e) => {
                                direct.await.map_err(|_| e)?;
                                true
                            }
                        },
                    }
                }
            }
        };
        if direct_ok {
            if let (Some(f), Ok(k)) = (filler, kept.into_inner()) {
                f.finish(Shard::new(k));
            }
            return Ok(());
        }
        let data = self
            .rebuild
            .get(
                self.net,
                self.manifest,
                self.index,
                self.holders,
                self.incidents,
            )
            .await?;
        self.rest(data, piece, &sent, &tx);
        Ok(())
    }

    /// Sends what `tx` has not had yet of `piece`, from rebuilt stripe `data`.
    fn rest(&self, data: &[Bytes], piece: &Piece, sent: &AtomicU64, tx: &UnboundedSender<Bytes>) {
        let from = piece.range.start + sent.load(Ordering::Relaxed);
        if from < piece.range.end {
            let _ = tx.send(data[piece.shard].slice(from as usize..piece.range.end as usize));
        }
    }
}
