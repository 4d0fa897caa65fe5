//! Objects: encoded on the pipeline's threads, each stripe's shards placed on distinct nodes
//! and uploaded in parallel, bounded by bytes in flight; then the signed manifest.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_chunker::manifest::ObjectManifest;
use cairn_chunker::pipeline::{EncodeParams, EncodedStripe, Encoder};
use cairn_chunker::{Cid, cids};
use cairn_policy::placement;
use cairn_proofs::receipt::StorageReceipt;
use cairn_wire::protocol::ManifestKind;
use ed25519_dalek::SigningKey;
use libp2p::PeerId;
use md5::{Digest, Md5};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::store::{publish, store_shard};
use super::{Progress, PutOptions, lock};
use crate::error::{ClientError, task};
use crate::get::Incidents;
use crate::network::Network;

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
    /// Storage receipts collected: one from every node that took a shard (a shard stored on
    /// two nodes, by a hedge, has two). They are kept beside the manifest on its nodes.
    pub receipts: usize,
    /// Nodes holding the manifest that also took its receipts (a node that refused them is
    /// among the incidents; the upload succeeded).
    pub receipt_copies: usize,
    /// The object's MD5, when [`PutOptions::md5`] asked for it.
    pub md5: Option<[u8; 16]>,
    /// Nodes that failed or went silent while shards were stored on them, and what happened
    /// (their shards went to other nodes; the upload succeeded).
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

/// A shard stored: its length, and the storage receipts of the nodes that took it, encoded.
type Stored = (u64, Vec<Vec<u8>>);

enum Item {
    Stripe(EncodedStripe),
    Done(Result<ObjectManifest, ClientError>),
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
        // An object small enough to go whole into its manifest needs its m+1 keepers only.
        let inline =
            matches!(&input, Input::Bytes(b) if b.len() as u64 <= opts.params.inline_limit);
        let need = if inline {
            opts.copies()
        } else {
            usize::from(k + m)
        };
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
    let mut uploads: JoinSet<Result<Stored, ClientError>> = JoinSet::new();
    let (mut shards, mut stored_bytes) = (0usize, 0u64);
    // Every storage receipt the stores answered with, encoded: they go beside the manifest.
    let mut receipts: Vec<Vec<u8>> = Vec::new();
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
                            Ok(taken) => {
                                drop(permit);
                                progress(report);
                                Ok((len, taken.iter().map(StorageReceipt::to_bytes).collect()))
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
                    let (len, taken) = done.map_err(task("a shard upload"))??;
                    stored_bytes += len;
                    receipts.extend(taken);
                }
            }
            Item::Done(result) => break result?,
        }
    };
    let _ = encoder.await;
    while let Some(done) = uploads.join_next().await {
        let (len, taken) = done.map_err(task("a shard upload"))??;
        stored_bytes += len;
        receipts.extend(taken);
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
    let (manifest_copies, receipt_copies) = match net {
        Some(net) => {
            let keepers = publish(
                net,
                key,
                &cid,
                ManifestKind::Object,
                &bytes,
                opts,
                Some(&notes),
            )
            .await?;
            // The manifest is stored: the put has succeeded. Its keepers now also keep who
            // promised to hold its shards; one that refuses is an incident, not a failure.
            let copies = crate::receipts::give(net, &cid, &keepers, &receipts, &notes).await;
            (keepers.len(), copies)
        }
        None => (0, 0),
    };
    // The encoder has read to the end (its thread is done): the MD5 is complete.
    let md5 = md5.map(|h| lock(&h).clone().finalize().into());
    Ok(ObjectReport {
        cid,
        manifest,
        shards,
        stored_bytes,
        manifest_copies,
        receipts: receipts.len(),
        receipt_copies,
        md5,
        incidents: notes.list(),
    })
}
