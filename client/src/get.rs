//! Reading: manifests (checked against their CID and signature), objects and byte ranges
//! (every byte verified, parity used when a node is gone, slow nodes hedged), datasets.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_chunker::Cid;
use cairn_chunker::cids::{self, Codec};
use cairn_chunker::manifest::{
    DatasetManifest, Location, ObjectManifest, Piece, Provenance, ShardRef,
};
use cairn_chunker::pipeline::StripeDecoder;
use cairn_policy::hedge::{self, OneAtATime};
use cairn_policy::placement;
use futures::StreamExt;
use libp2p::PeerId;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::cache::{Filler, Lookup, Shard};
use crate::error::{ClientError, EntryProblem, Missing, Output, task, writing};
use crate::network::{Holders, Network};
use crate::put::Progress;

/// Stripes fetched at once while reading (each holds up to `k` shards in memory).
pub const STRIPES_IN_FLIGHT: usize = 4;
/// Most bytes of stripes a read fetches ahead of its output: stripes of more than a quarter of
/// this (large shards, large `k`) are read fewer at a time, down to one.
pub const READ_AHEAD_BYTES: u64 = 256 << 20;
/// A shard that has not arrived after this long gets a parity fallback started beside it.
pub use cairn_policy::hedge::HEDGE_AFTER;

/// A manifest fetched and checked.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// An object.
    Object(ObjectManifest),
    /// A dataset.
    Dataset(DatasetManifest),
}

/// A manifest with its verified provenance.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The CID it was fetched by (and hashes to).
    pub cid: Cid,
    /// The decoded manifest.
    pub manifest: Manifest,
    /// Envelopes whose signatures verify over this CID.
    pub provenance: Vec<Provenance>,
    /// Nodes that served it.
    pub holders: Vec<PeerId>,
    /// Nodes that failed to serve it, or were passed over for not answering within
    /// [`HEDGE_AFTER`], and what happened.
    pub incidents: Vec<(PeerId, String)>,
}

/// Nodes that misbehaved or failed during a read, and what happened.
#[derive(Debug, Default, Clone)]
pub struct Incidents(Arc<Mutex<Vec<(PeerId, String)>>>);

impl Incidents {
    pub(crate) fn record(&self, peer: PeerId, what: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push((peer, what));
        }
    }

    /// Everything recorded so far.
    pub fn list(&self) -> Vec<(PeerId, String)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// `incidents` grouped by node, in peer-id order: each node's first problem and how many it
/// had (a dead node can cost an upload hundreds of shards: one line per node is enough).
pub fn per_node(incidents: &[(PeerId, String)]) -> Vec<(PeerId, usize, &str)> {
    let mut by_node = std::collections::BTreeMap::<PeerId, (usize, &str)>::new();
    for (peer, what) in incidents {
        by_node.entry(*peer).or_insert((0, what)).0 += 1;
    }
    by_node
        .into_iter()
        .map(|(peer, (n, first))| (peer, n, first))
        .collect()
}

/// Fetches `cid`'s manifest from the nodes most likely to hold it (then the rest), checks it
/// hashes to `cid`, decodes it, and verifies its provenance signatures. Fails if no node
/// serves a matching manifest or no signature verifies.
pub async fn fetch_manifest(net: &Network, cid: &Cid) -> Result<Fetched, ClientError> {
    cids::digest(cid, Codec::DagCbor).map_err(|source| ClientError::NotAManifest {
        cid: Box::new(*cid),
        source,
    })?;
    // Best-ranked first; nodes that recently failed to answer last.
    let ranked = placement::rank(&cid.to_bytes(), &net.candidates());
    let mut asking_order = OneAtATime::new(hedge::read_order(ranked, |i| net.is_down(i)));
    let ask = |i: usize| async move {
        let node = &net.nodes()[i];
        (i, net.data().get_manifest(&node.target, cid).await)
    };
    // One node at a time; one that has not answered within HEDGE_AFTER gets the next asked
    // beside it (a frozen node would hold the read until the transport's timeouts).
    let mut asking = futures::stream::FuturesUnordered::new();
    let (mut problems, mut incidents) = (Vec::new(), Vec::new());
    let mut found: Option<(Vec<u8>, Vec<Provenance>, Vec<PeerId>)> = None;
    let mut bad_envelopes = Vec::new();
    loop {
        if asking.is_empty() {
            match asking_order.next_if_idle(true) {
                Some(i) => asking.push(ask(i)),
                None => break,
            }
        }
        tokio::select! {
            // An answer first: a node that answered is not passed over by a timer that was
            // ready at the same time.
            biased;
            Some((i, answer)) = asking.next() => {
                asking_order.answered(i);
                let node = &net.nodes()[i];
                match answer {
                    Ok((bytes, envelopes)) => {
                        let (_, provenance, holders) =
                            found.get_or_insert_with(|| (bytes, Vec::new(), Vec::new()));
                        holders.push(node.peer());
                        for env in envelopes {
                            match Provenance::from_bytes(&env)
                                .and_then(|p| p.verify_for(cid).map(|_| p))
                            {
                                Ok(p) if !provenance.contains(&p) => provenance.push(p),
                                Ok(_) => {}
                                Err(e) => bad_envelopes.push(format!("node {}: {e}", node.peer())),
                            }
                        }
                        if !provenance.is_empty() {
                            break;
                        }
                    }
                    Err(e) => {
                        incidents.push((node.peer(), format!("manifest {cid}: {e}")));
                        problems.push(e.to_string());
                    }
                }
            }
            _ = tokio::time::sleep(HEDGE_AFTER) => {
                if let Some(hedge) = asking_order.hedge() {
                    for w in hedge.slow {
                        let what = format!(
                            "manifest {cid}: no answer within {} ms; asking another node",
                            HEDGE_AFTER.as_millis()
                        );
                        incidents.push((net.nodes()[w].peer(), what));
                    }
                    asking.push(ask(hedge.next));
                }
            }
        }
    }
    let Some((bytes, provenance, holders)) = found else {
        return Err(ClientError::ManifestUnavailable {
            cid: Box::new(*cid),
            problems,
        });
    };
    if provenance.is_empty() {
        return Err(ClientError::Unsigned {
            cid: Box::new(*cid),
            problems: bad_envelopes,
        });
    }
    let manifest = match ObjectManifest::from_bytes(&bytes) {
        Ok(m) => Manifest::Object(m),
        Err(object_err) => match DatasetManifest::from_bytes(&bytes) {
            Ok(d) => Manifest::Dataset(d),
            Err(_) => return Err(object_err.into()),
        },
    };
    Ok(Fetched {
        cid: *cid,
        manifest,
        provenance,
        holders,
        incidents,
    })
}

/// The nodes holding `cid` intact: from `holders`, or asked now when `holders` has none (a
/// shard left out of a lookup because it was cached may have been evicted since).
async fn holders_of(net: &Network, holders: &Holders, cid: &Cid) -> Vec<usize> {
    match holders.intact(cid) {
        [] => net
            .locate(std::slice::from_ref(cid))
            .await
            .intact(cid)
            .to_vec(),
        some => some.to_vec(),
    }
}

/// The nodes to ask for one shard, in turn: its known or guessed holders, then, once a guess
/// has missed, the holders a lookup finds. No node is asked twice.
struct Tries<'a> {
    net: &'a Network,
    cid: Cid,
    queue: std::collections::VecDeque<usize>,
    tried: Vec<usize>,
    /// The queue is a guess ([`Network::guess`]): a lookup follows when it runs dry.
    guess: bool,
}

impl<'a> Tries<'a> {
    async fn new(net: &'a Network, holders: &Holders, cid: Cid) -> Self {
        Self {
            net,
            cid,
            queue: holders_of(net, holders, &cid).await.into(),
            tried: Vec::new(),
            guess: holders.is_guess(&cid),
        }
    }

    async fn next(&mut self) -> Option<usize> {
        loop {
            match self.queue.pop_front() {
                Some(i) if self.tried.contains(&i) => continue,
                Some(i) => {
                    self.tried.push(i);
                    return Some(i);
                }
                None if self.guess => {
                    self.guess = false;
                    let found = self.net.locate(std::slice::from_ref(&self.cid)).await;
                    self.queue = found.intact(&self.cid).iter().copied().collect();
                }
                None => return None,
            }
        }
    }

    /// Records that node `i` did not serve the shard and returns what to report. A guessed
    /// node that simply does not hold it is no incident.
    fn failed(&self, i: usize, e: cairn_wire::data::DataError, incidents: &Incidents) -> String {
        let absent = matches!(
            &e,
            cairn_wire::data::DataError::Remote { error, .. }
                if error.code == cairn_wire::protocol::ErrorCode::NotFound
        );
        if self.guess && absent {
            tracing::debug!(cid = %self.cid, node = %self.net.nodes()[i].peer(), "guessed holder does not have the shard");
            return e.to_string();
        }
        fetch_failed(self.net, i, &self.cid, e, incidents)
    }
}

/// Fetches one whole shard from the first holder that serves it intact (the cache first).
async fn fetch_shard(
    net: &Network,
    holders: &Holders,
    shard: ShardRef,
    incidents: &Incidents,
) -> Result<Bytes, Vec<String>> {
    if let Some(s) = net.cache().and_then(|c| c.cached(&shard.cid)) {
        return Ok(s.to_bytes());
    }
    let mut problems = Vec::new();
    let mut tries = Tries::new(net, holders, shard.cid).await;
    while let Some(i) = tries.next().await {
        let node = &net.nodes()[i];
        match net
            .data()
            .fetch(&node.target, &shard.cid, Some(u64::from(shard.len)), None)
            .await
        {
            Ok(b) => return Ok(b),
            Err(e) => problems.push(tries.failed(i, e, incidents)),
        }
    }
    Err(problems)
}

/// Records a failed fetch from node `i` and returns what to report.
fn fetch_failed(
    net: &Network,
    i: usize,
    cid: &Cid,
    e: cairn_wire::data::DataError,
    incidents: &Incidents,
) -> String {
    incidents.record(net.nodes()[i].peer(), format!("shard {cid}: {e}"));
    let unreachable = matches!(
        e,
        cairn_wire::data::DataError::Unreachable { .. }
            | cairn_wire::data::DataError::Timeout { .. }
            | cairn_wire::data::DataError::Stalled { .. }
    );
    net.fetch_failed(i, cid, unreachable);
    e.to_string()
}

/// Streams `range` of a shard to `sink` from the first holder that serves it intact; when a
/// holder fails part-way, the next one is asked for the rest only. `asking` is set to the node
/// being asked (`usize::MAX` between nodes), so a hedge can tell which node is slow. `head`: a
/// reader waits on these first bytes, so a range asks for its head in the node's fast lane.
#[allow(clippy::too_many_arguments)]
async fn stream_shard(
    net: &Network,
    holders: &Holders,
    shard: ShardRef,
    range: Range<u64>,
    sink: &(dyn Fn(Bytes) + Sync),
    asking: &AtomicUsize,
    head: bool,
    incidents: &Incidents,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let delivered = AtomicU64::new(0);
    let counted = |b: Bytes| {
        delivered.fetch_add(b.len() as u64, Ordering::Relaxed);
        sink(b);
    };
    let mut tries = Tries::new(net, holders, shard.cid).await;
    while let Some(i) = tries.next().await {
        // What a failed holder delivered is verified and passed on: ask the next for the rest.
        let at = range.start + delivered.load(Ordering::Relaxed);
        if at >= range.end {
            return Ok(());
        }
        let node = &net.nodes()[i];
        let whole = at == 0 && range.end == u64::from(shard.len);
        asking.store(i, Ordering::Relaxed);
        let r = if head && !whole {
            net.data()
                .fetch_head_first(
                    &node.target,
                    &shard.cid,
                    u64::from(shard.len),
                    at..range.end,
                    &counted,
                )
                .await
        } else {
            net.data()
                .fetch_streaming(
                    &node.target,
                    &shard.cid,
                    Some(u64::from(shard.len)),
                    (!whole).then_some(at..range.end),
                    &counted,
                )
                .await
        };
        asking.store(usize::MAX, Ordering::Relaxed);
        match r {
            Ok(_) => return Ok(()),
            Err(e) => problems.push(tries.failed(i, e, incidents)),
        }
    }
    Err(problems)
}

/// Where the stored shards of these stripes are, without asking ([`Network::guess`]).
fn guess(
    net: &Network,
    manifest: &ObjectManifest,
    stripes: impl Iterator<Item = usize>,
) -> Holders {
    let cids: Vec<Vec<Cid>> = stripes
        .map(|s| {
            manifest.stripes[s]
                .stored_shards()
                .map(|(_, r)| r.cid)
                .collect()
        })
        .collect();
    net.guess(&cids)
}

/// Rebuilds a whole stripe from any `k` of its shards, fetched in parallel.
async fn reconstruct(
    net: &Network,
    manifest: &ObjectManifest,
    index: usize,
    holders: &Holders,
    incidents: &Incidents,
) -> Result<Vec<Bytes>, ClientError> {
    let stripe = &manifest.stripes[index];
    let k = stripe.data.len();
    let total = k + stripe.parity.len();
    let fetches = (0..total)
        .filter_map(|i| stripe.shard(i).map(|s| (i, s)))
        .map(|(i, s)| async move {
            if s.len == 0 {
                return (i, s, Ok(Bytes::new()));
            }
            (i, s, fetch_shard(net, holders, s, incidents).await)
        });
    // Any k shards rebuild the stripe: stop at the k-th, so a dead or slow node (a connect or
    // idle timeout of seconds) never holds up a rebuild that the others can already make.
    let mut results = futures::stream::iter(fetches).buffer_unordered(total);
    let mut shards = vec![None; total];
    let mut missing = Vec::new();
    let mut have = 0;
    while have < k {
        let Some((i, s, r)) = results.next().await else {
            break;
        };
        match r {
            Ok(b) => {
                shards[i] = Some(b);
                have += 1;
            }
            Err(problems) => missing.push(Missing {
                stripe: index,
                shard: i,
                cid: s.cid,
                problems,
            }),
        }
    }
    drop(results);
    if have < k {
        missing.sort_by_key(|m| m.shard);
        return Err(ClientError::StripeLost {
            stripe: index,
            have,
            need: k,
            missing,
        });
    }
    let mut decoder = StripeDecoder::new(&manifest.erasure)?;
    // Every fetched shard was verified on arrival; rebuilt ones are checked by the decoder.
    Ok(decoder.decode(index, stripe, shards, false)?.data)
}

/// A stripe rebuilt from parity, shared by the pieces of that stripe that need it.
#[derive(Default)]
struct Rebuild {
    data: tokio::sync::OnceCell<Option<Vec<Bytes>>>,
    error: Mutex<Option<ClientError>>,
}

impl Rebuild {
    async fn get(
        &self,
        net: &Network,
        manifest: &ObjectManifest,
        index: usize,
        holders: &Holders,
        incidents: &Incidents,
    ) -> Result<&Vec<Bytes>, ClientError> {
        let data = self
            .data
            .get_or_init(|| async {
                match reconstruct(net, manifest, index, holders, incidents).await {
                    Ok(d) => Some(d),
                    Err(e) => {
                        if let Ok(mut slot) = self.error.lock() {
                            *slot = Some(e);
                        }
                        None
                    }
                }
            })
            .await;
        match data {
            Some(d) => Ok(d),
            None => Err(self
                .error
                .lock()
                .ok()
                .and_then(|mut e| e.take())
                .unwrap_or_else(|| ClientError::StripeLost {
                    stripe: index,
                    have: 0,
                    need: manifest.stripes[index].data.len(),
                    missing: Vec::new(),
                })),
        }
    }
}

/// What one stripe read needs to know.
struct StripeRead<'a> {
    net: &'a Network,
    manifest: &'a ObjectManifest,
    index: usize,
    holders: &'a Holders,
    incidents: &'a Incidents,
    rebuild: Rebuild,
    /// Whether whole shards read are kept in the cache.
    fill: bool,
}

impl StripeRead<'_> {
    /// Sends `piece` (a range of one data shard) to `tx`, verified, as it arrives: from the
    /// shard cache, from a fetch already under way, or from a holder; if the holders fail, or
    /// have not finished within [`HEDGE_AFTER`] and a rebuild out of parity finishes first, the
    /// rest comes from the rebuild.
    /// `head`: this piece holds the first bytes of the read (asked for in the fast lane).
    async fn piece(
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

/// Where read bytes go: a writer, or a channel (the gateway streams into its HTTP body).
pub trait Sink: Send {
    /// Takes the next verified bytes of the read.
    fn put(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// A [`Sink`] over an [`AsyncWrite`].
#[derive(Debug)]
pub struct WriteSink<'a, W>(pub &'a mut W);

impl<W: AsyncWrite + Unpin + Send> Sink for WriteSink<'_, W> {
    async fn put(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.0
            .write_all(&bytes)
            .await
            .map_err(writing(Output::Stream("the output")))
    }
}

impl Sink for tokio::sync::mpsc::Sender<Bytes> {
    async fn put(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.send(bytes).await.map_err(|_| {
            writing(Output::Stream("the output channel"))(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader went away",
            ))
        })
    }
}

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

/// Fetches an object manifest (checked and signed) by CID.
pub async fn object_manifest(net: &Network, cid: &Cid) -> Result<ObjectManifest, ClientError> {
    match fetch_manifest(net, cid).await?.manifest {
        Manifest::Object(m) => Ok(m),
        Manifest::Dataset(_) => Err(ClientError::NotAnObject(Box::new(*cid))),
    }
}

/// Object files of a dataset read at once (each also reads up to [`STRIPES_IN_FLIGHT`]
/// stripes ahead), beside up to [`PACKS_IN_FLIGHT`] packs (each held whole in memory while it
/// is cut into its files).
pub const FILES_IN_FLIGHT: usize = 4;
/// Packs read at once by [`read_dataset`].
pub const PACKS_IN_FLIGHT: usize = 2;
/// The largest pack [`read_dataset`] holds in memory (ours are at most 64 MiB and one file
/// under 256 KiB).
pub const MAX_PACK: u64 = 256 << 20;

/// A temporary file removed when dropped, unless it was renamed into place.
struct Partial(Option<std::path::PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads one object of a dataset into `target`: written to its [`crate::output::partial_path`]
/// from a writer thread, synced, then renamed into place (a failed or cancelled read leaves
/// nothing).
async fn read_dataset_object(
    net: &Network,
    path: &str,
    cid: &Cid,
    entry: (u64, blake3::Hash),
    target: std::path::PathBuf,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let manifest = object_manifest(net, cid).await?;
    if manifest.size != entry.0 || manifest.blake3 != entry.1 {
        return Err(ClientError::Entry {
            path: path.to_string(),
            problem: EntryProblem::ObjectMismatch(Box::new(*cid)),
        });
    }
    let tmp = crate::output::partial_path(&target);
    let to = Output::File(target.clone());
    let file = crate::output::create_partial(&tmp).map_err(writing(to.clone()))?;
    let mut partial = Partial(Some(tmp.clone()));
    let mut sink = crate::output::FileSink::new(file, to.clone());
    let n = read_object_to(net, &manifest, None, &mut sink, progress, incidents).await?;
    let file = sink.finish().await?;
    tokio::task::spawn_blocking(move || {
        file.sync_all()?;
        std::fs::rename(&tmp, &target)
    })
    .await
    .map_err(task("writing a file"))?
    .map_err(writing(to))?;
    partial.0 = None;
    Ok(n)
}

/// Reads one pack of a dataset and cuts it into its files (each checked against its BLAKE3),
/// written from one blocking thread.
async fn read_dataset_pack(
    net: &Network,
    pack: &Cid,
    files: Vec<(String, u64, u64, blake3::Hash)>,
    dir: &Path,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let manifest = object_manifest(net, pack).await?;
    if manifest.size > MAX_PACK {
        return Err(ClientError::PackTooLarge {
            pack: Box::new(*pack),
            size: manifest.size,
            max: MAX_PACK,
        });
    }
    let bytes = read_object_to_vec(net, &manifest, incidents).await?;
    let (dir, pack) = (dir.to_path_buf(), *pack);
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for (path, offset, size, hash) in files {
            let slice = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(offset.saturating_add(size)).ok())
                .and_then(|(start, end)| bytes.get(start..end))
                .ok_or_else(|| ClientError::Entry {
                    path: path.clone(),
                    problem: EntryProblem::OutsidePack(Box::new(pack)),
                })?;
            check_file(&path, slice, &hash)?;
            let target = dir.join(&path);
            if let Err(e) = std::fs::write(&target, slice) {
                // No truncated file under the real name (a full disk, say).
                let _ = std::fs::remove_file(&target);
                return Err(writing(Output::File(target))(e));
            }
            total += size;
            progress(size);
        }
        Ok(total)
    })
    .await
    .map_err(task("writing a pack's files"))?
}

/// Writes every file of a dataset under `dir`, each checked against its BLAKE3. Up to
/// [`FILES_IN_FLIGHT`] object files and [`PACKS_IN_FLIGHT`] packs are read at once; the first
/// failure stops the read. Files already written stay (whole and verified); none is left
/// half-written under its own name.
pub async fn read_dataset(
    net: &Network,
    dataset: &DatasetManifest,
    dir: &Path,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let mut total = 0u64;
    // Packs are fetched once each, then cut into their files.
    let mut packs: HashMap<Cid, Vec<(String, u64, u64, blake3::Hash)>> = HashMap::new();
    let mut objects = Vec::new();
    let mut inline = Vec::new();
    for (path, entry) in &dataset.entries {
        let target = dir.join(path);
        match &entry.location {
            Location::Inline(bytes) => {
                check_file(path, bytes, &entry.blake3)?;
                inline.push((target, bytes.clone()));
            }
            Location::Packed { pack, offset } => {
                packs.entry(*pack).or_default().push((
                    path.clone(),
                    *offset,
                    entry.size,
                    entry.blake3,
                ));
            }
            Location::Object(cid) => objects.push((path, cid, entry, target)),
        }
    }
    // Directories, then the inline files, from one blocking thread.
    let dirs: std::collections::BTreeSet<std::path::PathBuf> = dataset
        .entries
        .keys()
        .filter_map(|p| dir.join(p).parent().map(Path::to_path_buf))
        .collect();
    let inline_progress = progress.clone();
    total += tokio::task::spawn_blocking(move || {
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(writing(Output::Dir(d)))?;
        }
        let mut total = 0;
        for (target, bytes) in inline {
            std::fs::write(&target, &bytes).map_err(writing(Output::File(target)))?;
            total += bytes.len() as u64;
            inline_progress(bytes.len() as u64);
        }
        Ok::<u64, ClientError>(total)
    })
    .await
    .map_err(task("writing a dataset's directories"))??;

    // Packs and object files each have their own bound, so packs waiting for memory do not
    // hold back object files, and the other way round.
    let pack_reads = futures::stream::iter(packs.into_iter().map(|(pack, files)| {
        let progress = progress.clone();
        async move { read_dataset_pack(net, &pack, files, dir, progress, incidents).await }
    }))
    .buffer_unordered(PACKS_IN_FLIGHT);
    let object_reads =
        futures::stream::iter(objects.into_iter().map(|(path, cid, entry, target)| {
            let progress = progress.clone();
            read_dataset_object(
                net,
                path,
                cid,
                (entry.size, entry.blake3),
                target,
                progress,
                incidents,
            )
        }))
        .buffer_unordered(FILES_IN_FLIGHT);
    let mut reads = std::pin::pin!(futures::stream::select(pack_reads, object_reads));
    while let Some(n) = reads.next().await {
        total += n?;
    }
    Ok(total)
}

fn check_file(path: &str, bytes: &[u8], expected: &blake3::Hash) -> Result<(), ClientError> {
    if blake3::hash(bytes) != *expected {
        return Err(ClientError::Entry {
            path: path.to_string(),
            problem: EntryProblem::HashMismatch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_are_grouped_by_node_with_the_first_problem() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let noted = vec![
            (a, "shard 1: silent".to_string()),
            (b, "manifest: refused".to_string()),
            (a, "shard 2: silent".to_string()),
            (a, "shard 3: timed out".to_string()),
        ];
        let mut grouped = per_node(&noted);
        grouped.sort_by_key(|g| g.1);
        assert_eq!(
            grouped,
            vec![(b, 1, "manifest: refused"), (a, 3, "shard 1: silent")]
        );
        assert_eq!(per_node(&[]), vec![]);
    }
}
