//! Writing: objects (a byte stream) and datasets (a directory tree) onto the network.
//!
//! An object is encoded by the chunker pipeline on its own threads; each stripe's shards are
//! placed on distinct nodes by rendezvous hashing and uploaded in parallel with a bound on the
//! bytes in flight, retrying a failed shard on the next-ranked node, and starting the
//! next-ranked node beside one that has gone silent (killed or frozen nodes are noticed in
//! seconds, not after the transport's timeouts). The signed manifest is
//! stored last, on several nodes: an interrupted upload never leaves a readable half-object.
//!
//! With no network (`None`), the same code computes the CIDs without storing anything
//! (`cairn cid --object`), so the dry run and the real upload always agree.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_chunker::manifest::{
    DatasetEntry, DatasetManifest, Location, ObjectManifest, Provenance, Source, check_path,
};
use cairn_chunker::pipeline::{EncodeParams, EncodedStripe, Encoder};
use cairn_chunker::{Cid, cids};
use cairn_policy::placement;
use cairn_policy::store::{self as policy, OnSilence, StoreRun};
use cairn_wire::data::{self, Target};
use cairn_wire::protocol::ManifestKind;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;
use md5::{Digest, Md5};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::error::{ClientError, reading, task};
use crate::get::Incidents;
use crate::network::{Network, StoreFailures};

/// Files below this size are packed together into pack objects.
pub const PACK_THRESHOLD: u64 = 256 * 1024;
/// A pack object is closed once it reaches this size (the default of
/// [`PutOptions::pack_target`]).
pub const PACK_TARGET: usize = 64 << 20;
/// A shard store still waiting on a node from which nothing at all has been heard for this long
/// ([`data::Client::silent_for`]; live nodes answer keep-alives every [`data::KEEP_ALIVE`]) gets
/// the next-ranked node started beside it, and the silent node is passed over by later stripes.
pub use cairn_policy::store::SILENT_FOR as STORE_SILENT_FOR;
/// Files and packs [`put_dir`] uploads at once (each object upload also keeps its own
/// stripes in flight).
pub const UPLOADS_IN_FLIGHT: usize = 4;
/// Packs (held whole in memory, up to [`PACK_TARGET`] bytes each) that [`put_dir`] holds at
/// once: being filled, waiting or being uploaded.
pub const PACKS_IN_FLIGHT: usize = 2;

/// Reports progress: called with the number of object bytes just completed.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// How to write.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Erasure code, shard size, chunking, threads.
    pub params: EncodeParams,
    /// Content type of a single object.
    pub content_type: Option<String>,
    /// User metadata of a single object.
    pub metadata: BTreeMap<String, String>,
    /// Where the data came from (goes into the signed provenance envelope).
    pub source: Option<Source>,
    /// On how many nodes to store each manifest (default `m + 1`).
    pub manifest_copies: Option<usize>,
    /// Most shard bytes being uploaded at once.
    pub inflight_bytes: usize,
    /// Also compute each file's MD5, the ETag S3 clients expect, for files published over S3
    /// (`cairn put --bucket`). One more pass over the bytes, on the thread that reads them.
    pub md5: bool,
    /// [`put_dir`] closes a pack of small files once it holds this many bytes. Part of the
    /// dataset's layout: a different value gives a different dataset CID.
    pub pack_target: usize,
}

impl Default for PutOptions {
    fn default() -> Self {
        Self {
            params: EncodeParams::with_shape(4, 2),
            content_type: None,
            metadata: BTreeMap::new(),
            source: None,
            manifest_copies: None,
            inflight_bytes: 256 << 20,
            md5: false,
            pack_target: PACK_TARGET,
        }
    }
}

impl PutOptions {
    /// Options for a network of `nodes`: 10+4 when there are 14 or more nodes, else 4+2.
    pub fn for_network(nodes: usize) -> Self {
        let mut o = Self::default();
        if nodes >= 14 {
            o.params.erasure.k = 10;
            o.params.erasure.m = 4;
        }
        o
    }

    fn copies(&self) -> usize {
        self.manifest_copies
            .unwrap_or(usize::from(self.params.erasure.m) + 1)
            .max(1)
    }
}

/// What an object upload did.
#[derive(Debug, Clone)]
pub struct ObjectReport {
    /// The manifest's CID: the object's name.
    pub cid: Cid,
    /// The manifest.
    pub manifest: ObjectManifest,
    /// Shards stored.
    pub shards: usize,
    /// Shard bytes stored (data and parity).
    pub stored_bytes: u64,
    /// Nodes holding the manifest.
    pub manifest_copies: usize,
    /// The object's MD5, when [`PutOptions::md5`] asked for it.
    pub md5: Option<[u8; 16]>,
    /// Nodes that failed or went silent while shards were stored on them, and what happened
    /// (their shards went to other nodes; the upload succeeded).
    pub incidents: Vec<(PeerId, String)>,
}

/// What a dataset upload did.
#[derive(Debug, Clone)]
pub struct DatasetReport {
    /// The dataset manifest's CID.
    pub cid: Cid,
    /// The manifest.
    pub manifest: DatasetManifest,
    /// Files.
    pub files: usize,
    /// Bytes of all files.
    pub bytes: u64,
    /// Pack objects written.
    pub packs: usize,
    /// Files stored as objects of their own.
    pub objects: usize,
    /// Shards stored in all.
    pub shards: usize,
    /// Nodes holding the dataset manifest.
    pub manifest_copies: usize,
    /// Each file's MD5 by path, when [`PutOptions::md5`] asked for them.
    pub md5: BTreeMap<String, [u8; 16]>,
    /// Nodes that failed or went silent while shards were stored on them (see
    /// [`ObjectReport::incidents`]).
    pub incidents: Vec<(PeerId, String)>,
}

/// Where an object's bytes come from.
pub enum Input {
    /// Read to the end.
    Reader(Box<dyn std::io::Read + Send>),
    /// Already in memory.
    Bytes(Bytes),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Reader(_) => f.write_str("Input::Reader"),
            Input::Bytes(b) => write!(f, "Input::Bytes({} bytes)", b.len()),
        }
    }
}

/// Hashes what passes through it with MD5 (the encoder's reader thread does the work).
struct Md5Tee {
    inner: Box<dyn std::io::Read + Send>,
    md5: Arc<Mutex<Md5>>,
}

impl std::io::Read for Md5Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        lock(&self.md5).update(&buf[..n]);
        Ok(n)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Item {
    Stripe(EncodedStripe),
    Done(Result<ObjectManifest, ClientError>),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Fails with [`ClientError::NetworkFull`] if fewer of `candidates` have room for a
/// `shard_len`-byte shard than a stripe has shards (when there are enough nodes at all; too few
/// is [`ClientError::NotEnoughNodes`]).
fn room_for(
    candidates: &[placement::Candidate],
    need: usize,
    shard_len: usize,
) -> Result<(), ClientError> {
    let room = candidates
        .iter()
        .filter(|c| c.free >= shard_len as u64)
        .count();
    if room < need && candidates.len() >= need {
        return Err(ClientError::NetworkFull {
            room,
            nodes: candidates.len(),
            need,
            shard_len,
        });
    }
    Ok(())
}

/// Refuses an object of `size` bytes that the network has no room for, before any of it is read
/// or stored: for a server (the S3 gateway) that can answer before the client sends the body.
/// Judged by the free space the nodes reported when `net` last asked them, less nodes that
/// recently failed a store ([`Network::write_candidates`]); [`put_object`] checks every
/// stripe again as it goes.
pub fn check_room(net: &Network, params: &EncodeParams, size: u64) -> Result<(), ClientError> {
    if size <= params.inline_limit {
        return Ok(());
    }
    let (k, m) = (params.erasure.k, params.erasure.m);
    let shard_len = u64::from(params.erasure.shard_size).min(size.div_ceil(u64::from(k.max(1))));
    room_for(
        &net.write_candidates(),
        usize::from(k + m),
        usize::try_from(shard_len).unwrap_or(usize::MAX),
    )
}

/// Encodes `input` and, with a network, stores its shards and signed manifest.
pub async fn put_object(
    net: Option<&Network>,
    key: &SigningKey,
    input: Input,
    opts: &PutOptions,
    progress: Progress,
) -> Result<ObjectReport, ClientError> {
    let (k, m) = (opts.params.erasure.k, opts.params.erasure.m);
    if let Some(net) = net {
        let need = usize::from(k + m);
        if net.nodes().len() < need {
            return Err(ClientError::NotEnoughNodes {
                have: net.nodes().len(),
                need,
                k,
                m,
            });
        }
    }
    // The encoder runs on its own threads; stripes come over a small bounded channel.
    let (tx, mut rx) = mpsc::channel::<Item>(2);
    let params = opts.params.clone();
    let md5 = opts.md5.then(|| Arc::new(Mutex::new(Md5::new())));
    let tee = md5.clone();
    let encoder = tokio::task::spawn_blocking(move || {
        let started = match (input, tee) {
            (Input::Reader(r), Some(md5)) => Encoder::new(Md5Tee { inner: r, md5 }, params),
            (Input::Reader(r), None) => Encoder::new(r, params),
            (Input::Bytes(b), tee) => {
                if let Some(md5) = tee {
                    lock(&md5).update(&b);
                }
                Encoder::from_bytes(b, params)
            }
        };
        let mut enc = match started {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.blocking_send(Item::Done(Err(e.into())));
                return;
            }
        };
        for stripe in enc.by_ref() {
            match stripe {
                Ok(s) => {
                    if tx.blocking_send(Item::Stripe(s)).is_err() {
                        return; // the uploader gave up
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Item::Done(Err(e.into())));
                    return;
                }
            }
        }
        let _ = tx.blocking_send(Item::Done(enc.finish().map_err(ClientError::from)));
    });

    let inflight = Arc::new(Semaphore::new(opts.inflight_bytes.div_ceil(1024).max(1)));
    let notes = Incidents::default();
    let mut uploads: JoinSet<Result<u64, ClientError>> = JoinSet::new();
    let (mut shards, mut stored_bytes) = (0usize, 0u64);
    let manifest = loop {
        let Some(item) = rx.recv().await else {
            return Err(ClientError::Encode(
                cairn_chunker::pipeline::EncodeError::Pipeline("encoder stopped"),
            ));
        };
        match item {
            Item::Stripe(stripe) => {
                let data_bytes = stripe.stripe.data_len();
                let Some(net) = net else {
                    progress(data_bytes);
                    continue;
                };
                // Nodes whose stores failed (gone, full) are passed over from here on.
                let candidates = net.write_candidates();
                let failures = net.store_failures();
                let cids: Vec<Cid> = stripe.shards.iter().map(|s| s.cid).collect();
                // Refuse before storing a shard of a stripe that cannot be stored whole: its
                // shards would stay on the nodes that took them, with nothing pointing at them.
                let shard_len = stripe
                    .shards
                    .iter()
                    .map(|s| s.data.len())
                    .max()
                    .unwrap_or(0);
                room_for(&candidates, cids.len(), shard_len)?;
                let orders = placement::place_stripe(&cids, &candidates).map_err(|need| {
                    ClientError::NotEnoughNodes {
                        have: candidates.len(),
                        need,
                        k,
                        m,
                    }
                })?;
                let last = stripe.shards.len().saturating_sub(1);
                // Every shard's first choice; retries and hedges add the node they take.
                let taken: Arc<Mutex<HashSet<usize>>> = Arc::new(Mutex::new(
                    orders.iter().filter_map(|o| o.first().copied()).collect(),
                ));
                for (i, (shard, order)) in stripe.shards.into_iter().zip(orders).enumerate() {
                    let permits = (shard.data.len().div_ceil(1024) as u32)
                        .min(opts.inflight_bytes.div_ceil(1024).max(1) as u32);
                    let permit =
                        inflight
                            .clone()
                            .acquire_many_owned(permits)
                            .await
                            .map_err(|_| {
                                ClientError::Encode(cairn_chunker::pipeline::EncodeError::Pipeline(
                                    "upload stopped",
                                ))
                            })?;
                    let targets: Vec<_> =
                        order.iter().map(|&n| (n, net.nodes()[n].target)).collect();
                    let failures = failures.clone();
                    let client = net.data().clone();
                    let progress = progress.clone();
                    // The last shard of a stripe reports the stripe's data bytes as done.
                    let report = if i == last { data_bytes } else { 0 };
                    let notes = notes.clone();
                    let taken = taken.clone();
                    uploads.spawn(async move {
                        let len = shard.data.len() as u64;
                        match store_shard(
                            &client,
                            &targets,
                            &shard.cid,
                            &shard.data,
                            &taken,
                            &failures,
                            &notes,
                        )
                        .await
                        {
                            Ok(()) => {
                                drop(permit);
                                progress(report);
                                Ok(len)
                            }
                            Err(attempts) => Err(ClientError::Upload {
                                cid: Box::new(shard.cid),
                                attempts,
                            }),
                        }
                    });
                    shards += 1;
                }
                // Surface failures early.
                while let Some(done) = uploads.try_join_next() {
                    stored_bytes += done.map_err(task("a shard upload"))??;
                }
            }
            Item::Done(result) => break result?,
        }
    };
    let _ = encoder.await;
    while let Some(done) = uploads.join_next().await {
        stored_bytes += done.map_err(task("a shard upload"))??;
    }
    let mut manifest = manifest;
    manifest.content_type = opts.content_type.clone();
    manifest.metadata = opts.metadata.clone();
    manifest.validate()?;
    let bytes = manifest.to_bytes();
    let cid = cids::dag_cbor(&bytes);
    if manifest.inline.is_some() {
        progress(manifest.size);
    }
    let manifest_copies = match net {
        Some(net) => {
            publish_manifest(
                net,
                key,
                &cid,
                ManifestKind::Object,
                &bytes,
                opts,
                Some(&notes),
            )
            .await?
        }
        None => 0,
    };
    // The encoder has read to the end (its thread is done): the MD5 is complete.
    let md5 = md5.map(|h| lock(&h).clone().finalize().into());
    Ok(ObjectReport {
        cid,
        manifest,
        shards,
        stored_bytes,
        manifest_copies,
        md5,
        incidents: notes.list(),
    })
}

/// Stores a shard on the first of `targets` (node index, address) that takes it; see
/// [`store_on`]. `stripe`: the nodes holding or taking the stripe's shards (each shard's first
/// choice, and whichever node a retry or hedge took), so that no node gets two shards of one
/// stripe. Returns what every attempt said when none took it.
async fn store_shard(
    client: &data::Client,
    targets: &[(usize, Target)],
    cid: &Cid,
    bytes: &Bytes,
    stripe: &Mutex<HashSet<usize>>,
    failures: &StoreFailures,
    notes: &Incidents,
) -> Result<(), Vec<String>> {
    let store = |t: Target| async move { client.store(&t, cid, bytes.clone()).await };
    let what = format!("shard {cid}");
    // The first target is the shard's own choice (already in `stripe`); a later one only if no
    // other shard of the stripe has taken it.
    let free = |i: usize| i == 0 || lock(stripe).insert(targets[i].0);
    let quiet = |t: &Target| client.silent_for(t);
    match store_on(quiet, targets, 1, store, free, failures, notes, &what).await {
        (0, attempts) => Err(attempts),
        _ => Ok(()),
    }
}

/// Runs `store` on `targets` (node index, address), in order, until `want` of them have taken
/// what it stores, starting the next target (one `free` accepts) whenever one fails. A target
/// whose node goes silent for [`STORE_SILENT_FOR`] (as `quiet` tells: how long nothing was
/// heard from a target's node) gets the next target started beside it, and the store that
/// finishes first counts: once `want` have, the rest are dropped, and their nodes discard what
/// they got (one that took it just before is a spare holder). Failed nodes, and silent ones
/// another target was started for, are reported to `failures`, so later stripes pass them
/// over; all are noted in `notes` under `what`. Returns how many took it, and what the failed
/// attempts said. The decisions are [`StoreRun`]'s; this runs them on tokio's clock.
#[allow(clippy::too_many_arguments)]
async fn store_on<F, Fut>(
    quiet: impl Fn(&Target) -> Option<Duration>,
    targets: &[(usize, Target)],
    want: usize,
    store: F,
    free: impl Fn(usize) -> bool,
    failures: &impl NodeReport,
    notes: &Incidents,
    what: &str,
) -> (usize, Vec<String>)
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = Result<(), data::DataError>>,
{
    let start = |i: usize| {
        let t = targets[i].1;
        let done = store(t);
        async move { (i, done.await) }
    };
    let mut run = StoreRun::new(targets.len(), want);
    let mut running = FuturesUnordered::new();
    let mut attempts = Vec::new();
    let mut watch = tokio::time::interval(policy::WATCH_EVERY);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        running.extend(run.start(&free).into_iter().map(start));
        if run.is_done(!running.is_empty()) {
            return (run.count(), attempts);
        }
        tokio::select! {
            // An answer first: a store that finished is not judged silent by a tick that was
            // ready at the same time.
            biased;
            Some((i, result)) = running.next() => {
                let (n, t) = &targets[i];
                match result {
                    Ok(()) => {
                        if run.stored(i) {
                            // It was slow, not gone: let later stripes use it again.
                            failures.answered(*n);
                        }
                    }
                    Err(e) => {
                        run.failed(i);
                        failures.failed(*n, &e);
                        notes.record(t.peer, format!("{what} not stored: {e}"));
                        attempts.push(e.to_string());
                    }
                }
            }
            at = watch.tick() => {
                if policy::tick_too_late(at.elapsed()) {
                    continue;
                }
                let silent: Vec<usize> = run
                    .watched()
                    .iter()
                    .copied()
                    .filter(|&i| quiet(&targets[i].1).is_some_and(policy::is_silent))
                    .collect();
                for i in silent {
                    let (n, t) = &targets[i];
                    let secs = STORE_SILENT_FOR.as_secs();
                    attempts.push(format!("{}: silent for {secs} s", t.peer));
                    match run.silent(i, &free) {
                        OnSilence::Hedge(h) => {
                            failures.silent(*n);
                            notes.record(
                                t.peer,
                                format!("{what}: nothing heard from the node for {secs} s; storing it elsewhere"),
                            );
                            running.push(start(h));
                        }
                        OnSilence::Wait => notes.record(
                            t.peer,
                            format!("{what}: nothing heard from the node for {secs} s; no other node to try, waiting"),
                        ),
                    }
                }
            }
        }
    }
}

/// What a store run tells about the nodes it used (the network view, [`StoreFailures`]).
trait NodeReport {
    /// A store on node `index` failed with `error`.
    fn failed(&self, index: usize, error: &data::DataError);
    /// Node `index`, found silent, took the item after all.
    fn answered(&self, index: usize);
    /// Node `index` went silent and another target was started beside it.
    fn silent(&self, index: usize);
}

impl NodeReport for StoreFailures {
    fn failed(&self, index: usize, error: &data::DataError) {
        self.report(index, error);
    }
    fn answered(&self, index: usize) {
        StoreFailures::answered(self, index);
    }
    fn silent(&self, index: usize) {
        StoreFailures::silent(self, index);
    }
}

/// Signs a manifest and stores it with its envelope on the best-ranked nodes for its CID
/// (`opts.manifest_copies`, default `m + 1`); returns how many nodes took it. Nodes that failed
/// or went silent on the way are noted in `notes`, or logged as warnings without it.
pub async fn publish_manifest(
    net: &Network,
    key: &SigningKey,
    cid: &Cid,
    kind: ManifestKind,
    bytes: &[u8],
    opts: &PutOptions,
    notes: Option<&Incidents>,
) -> Result<usize, ClientError> {
    let envelope = Provenance::sign(*cid, key, now_ms(), opts.source.clone()).to_bytes();
    // Nodes that recently failed rank last (`write_candidates` offers them with no room).
    let targets: Vec<(usize, Target)> = placement::rank(&cid.to_bytes(), &net.write_candidates())
        .into_iter()
        .map(|i| (i, net.nodes()[i].target))
        .collect();
    let want = opts.copies().min(targets.len());
    // The first `want` ranked nodes at once (each write is an fsync away: one after another,
    // a small object's PUT waited for all of them in turn); a failure brings in the next one.
    let envelope = std::slice::from_ref(&envelope);
    let put = |t: Target| async move {
        net.data()
            .put_manifest(&t, cid, kind, bytes, envelope)
            .await
    };
    let what = format!("manifest {cid}");
    let own = Incidents::default();
    let noted = notes.unwrap_or(&own);
    let failures = net.store_failures();
    let (stored, attempts) = store_on(
        |t: &Target| net.data().silent_for(t),
        &targets,
        want,
        put,
        |_| true,
        &failures,
        noted,
        &what,
    )
    .await;
    for (peer, what) in own.list() {
        tracing::warn!(%peer, "{what}");
    }
    if stored == 0 {
        return Err(ClientError::ManifestUpload {
            cid: Box::new(*cid),
            attempts,
        });
    }
    Ok(stored)
}

/// Small files gathered into one pack object.
#[derive(Default)]
struct Pack {
    bytes: Vec<u8>,
    /// Files in `bytes`.
    members: Vec<Member>,
}

/// A file in a [`Pack`].
struct Member {
    path: String,
    offset: u64,
    size: u64,
    blake3: blake3::Hash,
    md5: Option<[u8; 16]>,
}

/// What [`put_dir`]'s walker hands to its uploads.
enum Job {
    /// An empty file (stored inline in the dataset manifest).
    Empty { rel: String },
    /// A file to store as an object of its own.
    File {
        rel: String,
        path: PathBuf,
        size: u64,
    },
    /// A pack to store, with the permit that bounds packs in memory.
    Pack(Pack, OwnedSemaphorePermit),
}

/// An upload of [`put_dir`] that has finished.
enum Uploaded {
    /// An empty file.
    Empty { rel: String },
    /// A pack and the files in it.
    Pack {
        report: ObjectReport,
        members: Vec<Member>,
    },
    /// A file stored as an object of its own.
    Object { rel: String, report: ObjectReport },
}

/// One file of [`put_dir`]'s walk: a job for it, or `None` when it went into the pack being
/// filled (started, with a permit, if there was none).
fn walk_one(
    rel: String,
    path: PathBuf,
    md5: bool,
    pack: &mut Option<(Pack, OwnedSemaphorePermit)>,
    packs: &Arc<Semaphore>,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<Job>, ClientError> {
    let size = std::fs::metadata(&path).map_err(reading(&path))?.len();
    if size == 0 {
        return Ok(Some(Job::Empty { rel }));
    }
    if size >= PACK_THRESHOLD {
        return Ok(Some(Job::File { rel, path, size }));
    }
    let data = std::fs::read(&path).map_err(reading(&path))?;
    let (p, _) = match pack {
        Some(p) => p,
        None => {
            let permit = runtime
                .block_on(packs.clone().acquire_owned())
                .map_err(|_| {
                    ClientError::Encode(cairn_chunker::pipeline::EncodeError::Pipeline(
                        "dataset upload stopped",
                    ))
                })?;
            pack.insert((Pack::default(), permit))
        }
    };
    let offset = p.bytes.len() as u64;
    p.bytes.extend_from_slice(&data);
    p.members.push(Member {
        path: rel,
        offset,
        size: data.len() as u64,
        blake3: blake3::hash(&data),
        md5: md5.then(|| Md5::digest(&data).into()),
    });
    Ok(None)
}

/// Stores a pack as an object; its files count as progress once it is stored.
async fn upload_pack(
    net: Option<&Network>,
    key: &SigningKey,
    opts: &PutOptions,
    progress: Progress,
    pack: Pack,
) -> Result<Uploaded, ClientError> {
    let quiet: Progress = Arc::new(|_| {});
    let report = put_object(net, key, Input::Bytes(Bytes::from(pack.bytes)), opts, quiet).await?;
    for m in &pack.members {
        progress(m.size);
    }
    Ok(Uploaded::Pack {
        report,
        members: pack.members,
    })
}

/// Stores a file as an object of its own.
async fn upload_file(
    net: Option<&Network>,
    key: &SigningKey,
    opts: &PutOptions,
    progress: Progress,
    (rel, path, size): (String, PathBuf, u64),
) -> Result<Uploaded, ClientError> {
    let file = std::fs::File::open(&path).map_err(reading(&path))?;
    let report = put_object(net, key, Input::Reader(Box::new(file)), opts, progress)
        .await
        .map_err(|e| e.reading_from(&path))?;
    if report.manifest.size != size {
        return Err(ClientError::InputChanged(path));
    }
    Ok(Uploaded::Object { rel, report })
}

/// Records a finished upload in the dataset manifest and the report.
fn record(done: Uploaded, md5: bool, manifest: &mut DatasetManifest, report: &mut DatasetReport) {
    match done {
        Uploaded::Empty { rel } => {
            if md5 {
                report.md5.insert(rel.clone(), Md5::digest(b"").into());
            }
            manifest.entries.insert(
                rel,
                DatasetEntry {
                    size: 0,
                    blake3: blake3::hash(b""),
                    location: Location::Inline(Vec::new()),
                    meta: BTreeMap::new(),
                },
            );
        }
        Uploaded::Pack { report: r, members } => {
            report.packs += 1;
            report.shards += r.shards;
            report.incidents.extend(r.incidents);
            for m in members {
                if let Some(md5) = m.md5 {
                    report.md5.insert(m.path.clone(), md5);
                }
                manifest.entries.insert(
                    m.path,
                    DatasetEntry {
                        size: m.size,
                        blake3: m.blake3,
                        location: Location::Packed {
                            pack: r.cid,
                            offset: m.offset,
                        },
                        meta: BTreeMap::new(),
                    },
                );
            }
        }
        Uploaded::Object { rel, report: r } => {
            report.objects += 1;
            report.shards += r.shards;
            report.incidents.extend(r.incidents);
            if let Some(md5) = r.md5 {
                report.md5.insert(rel.clone(), md5);
            }
            manifest.entries.insert(
                rel,
                DatasetEntry {
                    size: r.manifest.size,
                    blake3: r.manifest.blake3,
                    location: Location::Object(r.cid),
                    meta: BTreeMap::new(),
                },
            );
        }
    }
}

/// The files of a directory tree, sorted by their `/`-separated relative path.
pub fn walk(root: &Path) -> Result<Vec<(String, PathBuf, u64)>, ClientError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(reading(&dir))?;
        for entry in entries {
            let entry = entry.map_err(reading(&dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(reading(&path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| ClientError::OutsideRoot {
                        path: path.clone(),
                        root: root.to_path_buf(),
                    })?;
                let rel = rel
                    .to_str()
                    .ok_or_else(|| ClientError::NotUtf8(path.clone()))?
                    .to_string();
                check_path(&rel)?;
                out.push((rel, path, meta.len()));
            }
            // Symlinks and special files are not data: skipped.
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads a directory tree as a dataset: small files packed into pack objects, large files
/// as objects of their own, then the signed dataset manifest.
pub async fn put_dir(
    net: Option<&Network>,
    key: &SigningKey,
    root: &Path,
    opts: &PutOptions,
    progress: Progress,
) -> Result<DatasetReport, ClientError> {
    let files = walk(root)?;
    let mut manifest = DatasetManifest::new();
    let mut report = DatasetReport {
        cid: cids::dag_cbor(b""),
        manifest: DatasetManifest::new(),
        files: files.len(),
        bytes: files.iter().map(|f| f.2).sum(),
        packs: 0,
        objects: 0,
        shards: 0,
        manifest_copies: 0,
        md5: BTreeMap::new(),
        incidents: Vec::new(),
    };
    let mut object_opts = opts.clone();
    object_opts.content_type = None;
    object_opts.metadata.clear();
    // The uploads in flight share the byte budget one upload would have.
    object_opts.inflight_bytes = (opts.inflight_bytes / UPLOADS_IN_FLIGHT).max(1 << 20);
    let object_opts = &object_opts;
    // A blocking thread walks the files, reads the small ones and packs them; this task uploads
    // what it hands over, UPLOADS_IN_FLIGHT at once. A pack holds a permit from the time it is
    // started until it is stored, so at most PACKS_IN_FLIGHT packs are in memory. The manifest
    // is a sorted map: the order uploads finish in does not matter.
    let (tx, rx) = mpsc::channel::<Result<Job, ClientError>>(1);
    let packs = Arc::new(Semaphore::new(PACKS_IN_FLIGHT));
    let (md5, pack_target) = (opts.md5, opts.pack_target.max(1));
    let walker = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        let mut pack: Option<(Pack, OwnedSemaphorePermit)> = None;
        let mut files = files.into_iter().peekable();
        while let Some((rel, path, _)) = files.next() {
            if tx.is_closed() {
                return; // the upload failed or was dropped: read no more
            }
            let job = match walk_one(rel, path, md5, &mut pack, &packs, &runtime) {
                Ok(Some(job)) => Ok(job),
                Ok(None) => {
                    let full = pack.as_ref().is_some_and(|(p, _)| {
                        p.bytes.len() >= pack_target || files.peek().is_none()
                    });
                    match pack.take_if(|_| full) {
                        Some((p, permit)) => Ok(Job::Pack(p, permit)),
                        None => continue,
                    }
                }
                Err(e) => Err(e),
            };
            let failed = job.is_err();
            if tx.blocking_send(job).is_err() || failed {
                return;
            }
        }
        // The last file was not a small one: the pack being filled goes last.
        if let Some((p, permit)) = pack.take() {
            let _ = tx.blocking_send(Ok(Job::Pack(p, permit)));
        }
    });
    let jobs = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|job| (job, rx)) },
    );
    let mut uploads = std::pin::pin!(
        jobs.map(|job| {
            let progress = progress.clone();
            async move {
                match job? {
                    Job::Empty { rel } => Ok(Uploaded::Empty { rel }),
                    Job::File { rel, path, size } => {
                        upload_file(net, key, object_opts, progress, (rel, path, size)).await
                    }
                    Job::Pack(pack, permit) => {
                        let done = upload_pack(net, key, object_opts, progress, pack).await;
                        drop(permit);
                        done
                    }
                }
            }
        })
        .buffer_unordered(UPLOADS_IN_FLIGHT)
    );
    while let Some(done) = uploads.next().await {
        record(done?, md5, &mut manifest, &mut report);
    }
    walker.await.map_err(task("the dataset walk"))?;
    manifest.validate()?;
    let bytes = manifest.to_bytes();
    let cid = cids::dag_cbor(&bytes);
    if let Some(net) = net {
        let notes = Incidents::default();
        report.manifest_copies = publish_manifest(
            net,
            key,
            &cid,
            ManifestKind::Dataset,
            &bytes,
            opts,
            Some(&notes),
        )
        .await?;
        report.incidents.extend(notes.list());
    }
    report.cid = cid;
    report.manifest = manifest;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offline (`cid --object DIR`): many packs and files of their own, with the walker filling
    /// packs faster than they are "stored". Packs hold consecutive files in walk order, each
    /// closed at the target, and the dataset is the same on every run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datasets_pack_files_in_walk_order_whatever_finishes_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut sizes = BTreeMap::new();
        for i in 0..120usize {
            // Every seventh file is over the pack threshold.
            let size = if i % 7 == 3 {
                300_000 + i
            } else {
                40_000 + i * 101
            };
            let rel = format!("d{}/f{i:03}.bin", i % 3);
            let path = dir.path().join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![(i % 251) as u8; size]).unwrap();
            sizes.insert(rel, size as u64);
        }
        let key = SigningKey::from_bytes(&[7; 32]);
        let opts = PutOptions {
            pack_target: 1 << 20,
            ..PutOptions::default()
        };
        let quiet: Progress = Arc::new(|_| {});
        let a = put_dir(None, &key, dir.path(), &opts, quiet.clone())
            .await
            .unwrap();
        let b = put_dir(None, &key, dir.path(), &opts, quiet).await.unwrap();
        assert_eq!(a.cid, b.cid);
        assert_eq!(a.files, 120);
        assert_eq!(a.objects, (0..120).filter(|i| i % 7 == 3).count());
        assert_eq!(a.bytes, sizes.values().sum::<u64>());
        // Walk order (sorted paths): each pack's files are consecutive small files, at
        // consecutive offsets, and a pack is closed as soon as it reaches the target.
        let mut packs: Vec<(Cid, u64)> = Vec::new();
        for (path, entry) in &a.manifest.entries {
            assert_eq!(entry.size, sizes[path], "{path}");
            match &entry.location {
                Location::Packed { pack, offset } => match packs.last_mut() {
                    Some((cid, end)) if cid == pack => {
                        assert_eq!(*offset, *end, "{path} is not next in its pack");
                        *end += entry.size;
                    }
                    _ => {
                        assert_eq!(*offset, 0, "{path} does not start its pack");
                        if let Some((_, end)) = packs.last() {
                            assert!(*end >= 1 << 20, "a pack was closed early at {end}");
                        }
                        assert!(
                            !packs.iter().any(|(c, _)| c == pack),
                            "{path} goes back to an earlier pack"
                        );
                        packs.push((*pack, entry.size));
                    }
                },
                Location::Object(_) => assert!(entry.size >= PACK_THRESHOLD, "{path}"),
                Location::Inline(_) => panic!("{path} is not empty"),
            }
        }
        assert_eq!(a.packs, packs.len());
        assert!(packs.len() >= 4, "only {} packs", packs.len());
    }
}
