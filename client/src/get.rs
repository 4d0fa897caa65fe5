//! Reading: manifests (checked against their CID and signature), objects and byte ranges
//! (every byte verified, parity used when a node is gone, slow nodes hedged), datasets.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_chunker::Cid;
use cairn_chunker::cids::{self, Codec};
use cairn_chunker::manifest::{DatasetManifest, Location, ObjectManifest, Provenance, ShardRef};
use cairn_chunker::pipeline::StripeDecoder;
use futures::StreamExt;
use libp2p::PeerId;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{ClientError, Missing, io};
use crate::network::{Holders, Network};
use crate::placement;
use crate::put::Progress;

/// Stripes fetched at once while reading (each holds up to `k` shards in memory).
pub const STRIPES_IN_FLIGHT: usize = 4;
/// A shard that has not arrived after this long gets a parity fallback started beside it.
pub const HEDGE_AFTER: Duration = Duration::from_millis(1500);

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
}

/// Nodes that misbehaved or failed during a read, and what happened.
#[derive(Debug, Default, Clone)]
pub struct Incidents(Arc<Mutex<Vec<(PeerId, String)>>>);

impl Incidents {
    fn record(&self, peer: PeerId, what: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push((peer, what));
        }
    }

    /// Everything recorded so far.
    pub fn list(&self) -> Vec<(PeerId, String)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Fetches `cid`'s manifest from the nodes most likely to hold it (then the rest), checks it
/// hashes to `cid`, decodes it, and verifies its provenance signatures. Fails if no node
/// serves a matching manifest or no signature verifies.
pub async fn fetch_manifest(net: &Network, cid: &Cid) -> Result<Fetched, ClientError> {
    cids::digest(cid, Codec::DagCbor)
        .map_err(|e| ClientError::Path(format!("{cid} is not a manifest CID: {e}")))?;
    let order = placement::rank(&cid.to_bytes(), &net.candidates());
    let mut problems = Vec::new();
    let mut found: Option<(Vec<u8>, Vec<Provenance>, Vec<PeerId>)> = None;
    let mut bad_envelopes = Vec::new();
    for i in order {
        let node = &net.nodes()[i];
        match net.data().get_manifest(&node.target, cid).await {
            Ok((bytes, envelopes)) => {
                let (_, provenance, holders) =
                    found.get_or_insert_with(|| (bytes, Vec::new(), Vec::new()));
                holders.push(node.peer());
                for env in envelopes {
                    match Provenance::from_bytes(&env).and_then(|p| p.verify_for(cid).map(|_| p)) {
                        Ok(p) if !provenance.contains(&p) => provenance.push(p),
                        Ok(_) => {}
                        Err(e) => bad_envelopes.push(format!("node {}: {e}", node.peer())),
                    }
                }
                if !provenance.is_empty() {
                    break;
                }
            }
            Err(e) => problems.push(e.to_string()),
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
    })
}

/// Fetches one shard (or a range of it) from the first holder that serves it intact.
async fn fetch_shard(
    net: &Network,
    holders: &[usize],
    shard: ShardRef,
    range: Option<Range<u64>>,
    incidents: &Incidents,
) -> Result<Bytes, Vec<String>> {
    let mut problems = Vec::new();
    for &i in holders {
        let node = &net.nodes()[i];
        match net
            .data()
            .fetch(
                &node.target,
                &shard.cid,
                Some(u64::from(shard.len)),
                range.clone(),
            )
            .await
        {
            Ok(b) => return Ok(b),
            Err(e) => {
                incidents.record(node.peer(), format!("shard {}: {e}", shard.cid));
                let unreachable = matches!(
                    e,
                    cairn_node::data::DataError::Unreachable { .. }
                        | cairn_node::data::DataError::Timeout { .. }
                );
                net.fetch_failed(i, &shard.cid, unreachable);
                problems.push(e.to_string());
            }
        }
    }
    Err(problems)
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
            let h = holders.intact(&s.cid);
            (i, s, fetch_shard(net, h, s, None, incidents).await)
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

/// The bytes of `range` (within stripe `index`), fetched directly; on a missing shard or a
/// node that does not answer within [`HEDGE_AFTER`], rebuilt from parity.
async fn read_stripe(
    net: &Network,
    manifest: &ObjectManifest,
    layout: &cairn_chunker::manifest::Layout,
    index: usize,
    range: Range<u64>,
    holders: &Holders,
    incidents: &Incidents,
) -> Result<Vec<Bytes>, ClientError> {
    let pieces: Vec<_> = layout
        .pieces(manifest, range.clone())
        .into_iter()
        .filter(|p| p.stripe == index)
        .collect();
    let stripe = &manifest.stripes[index];
    let direct = async {
        let fetches = pieces.iter().map(|p| {
            let shard = stripe.data[p.shard];
            let whole = p.range.start == 0 && p.range.end == u64::from(shard.len);
            let h = holders.intact(&shard.cid);
            fetch_shard(net, h, shard, (!whole).then(|| p.range.clone()), incidents)
        });
        futures::future::try_join_all(fetches).await
    };
    let rebuild = || async {
        let data = reconstruct(net, manifest, index, holders, incidents).await?;
        Ok::<Vec<Bytes>, ClientError>(
            pieces
                .iter()
                .map(|p| data[p.shard].slice(p.range.start as usize..p.range.end as usize))
                .collect(),
        )
    };
    tokio::pin!(direct);
    tokio::select! {
        r = &mut direct => match r {
            Ok(pieces) => Ok(pieces),
            Err(_) => rebuild().await,
        },
        _ = tokio::time::sleep(HEDGE_AFTER) => {
            // Hedge: race the slow direct read against a rebuild from whichever shards answer.
            let hedge = rebuild();
            tokio::pin!(hedge);
            tokio::select! {
                r = &mut direct => match r {
                    Ok(pieces) => Ok(pieces),
                    Err(_) => hedge.await,
                },
                r = &mut hedge => match r {
                    Ok(pieces) => Ok(pieces),
                    Err(_) => direct.await.map_err(|problems| ClientError::StripeLost {
                        stripe: index,
                        have: 0,
                        need: stripe.data.len(),
                        missing: vec![Missing { stripe: index, shard: 0, cid: stripe.data[0].cid, problems }],
                    }),
                },
            }
        }
    }
}

/// Writes `range` of an object (the whole object if `None`) to `out`, verified; returns the
/// bytes written. A whole-object read also checks the object's BLAKE3.
pub async fn read_object<W: AsyncWrite + Unpin>(
    net: &Network,
    manifest: &ObjectManifest,
    range: Option<Range<u64>>,
    out: &mut W,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let whole = range.is_none();
    let range = range.unwrap_or(0..manifest.size);
    let range = range.start.min(manifest.size)..range.end.min(manifest.size);
    if let Some(inline) = &manifest.inline {
        let bytes = &inline[range.start as usize..range.end as usize];
        out.write_all(bytes).await.map_err(io("writing output"))?;
        progress(bytes.len() as u64);
        return Ok(bytes.len() as u64);
    }
    let layout = manifest.layout();
    let stripes: Vec<usize> = layout.stripes_for(range.clone()).collect();
    let mut hasher = whole.then(blake3::Hasher::new);
    let mut written = 0u64;
    // Locate shards a window at a time, so a huge object does not ask about every shard at once.
    for window in stripes.chunks(64) {
        let cids: Vec<Cid> = window
            .iter()
            .flat_map(|&s| manifest.stripes[s].stored_shards().map(|(_, r)| r.cid))
            .collect();
        let holders = net.locate(&cids).await;
        let holders = &holders;
        let layout = &layout;
        let mut reads = futures::stream::iter(window.iter().copied())
            .map(|s| {
                let r = range.clone();
                async move { read_stripe(net, manifest, layout, s, r, holders, incidents).await }
            })
            .buffered(STRIPES_IN_FLIGHT);
        while let Some(pieces) = reads.next().await {
            for piece in pieces? {
                if let Some(h) = hasher.as_mut() {
                    h.update(&piece);
                }
                out.write_all(&piece).await.map_err(io("writing output"))?;
                written += piece.len() as u64;
                progress(piece.len() as u64);
            }
        }
    }
    out.flush().await.map_err(io("writing output"))?;
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
    Ok(written)
}

/// Reads a whole object into memory (for pack objects and small files).
pub async fn read_object_to_vec(
    net: &Network,
    manifest: &ObjectManifest,
    incidents: &Incidents,
) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::with_capacity(manifest.size as usize);
    read_object(net, manifest, None, &mut out, Arc::new(|_| {}), incidents).await?;
    Ok(out)
}

/// Fetches an object manifest (checked and signed) by CID.
pub async fn object_manifest(net: &Network, cid: &Cid) -> Result<ObjectManifest, ClientError> {
    match fetch_manifest(net, cid).await?.manifest {
        Manifest::Object(m) => Ok(m),
        Manifest::Dataset(_) => Err(ClientError::Path(format!(
            "{cid} is a dataset, not an object"
        ))),
    }
}

/// Writes every file of a dataset under `dir`, each checked against its BLAKE3.
pub async fn read_dataset(
    net: &Network,
    dataset: &DatasetManifest,
    dir: &Path,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let mut total = 0u64;
    // Packs are fetched once each, then cut into their files.
    let mut packs: HashMap<Cid, Vec<(&String, u64, u64, blake3::Hash)>> = HashMap::new();
    for (path, entry) in &dataset.entries {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        match &entry.location {
            Location::Inline(bytes) => {
                check_file(path, bytes, &entry.blake3)?;
                tokio::fs::write(&target, bytes)
                    .await
                    .map_err(io(format!("writing {}", target.display())))?;
                total += bytes.len() as u64;
                progress(bytes.len() as u64);
            }
            Location::Packed { pack, offset } => {
                packs
                    .entry(*pack)
                    .or_default()
                    .push((path, *offset, entry.size, entry.blake3));
            }
            Location::Object(cid) => {
                let manifest = object_manifest(net, cid).await?;
                if manifest.size != entry.size || manifest.blake3 != entry.blake3 {
                    return Err(ClientError::Path(format!(
                        "{path}: object {cid} does not match the dataset entry"
                    )));
                }
                let tmp = target.with_extension("cairn-partial");
                let mut file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(io(format!("creating {}", tmp.display())))?;
                total += read_object(net, &manifest, None, &mut file, progress.clone(), incidents)
                    .await?;
                file.sync_all()
                    .await
                    .map_err(io(format!("writing {}", tmp.display())))?;
                tokio::fs::rename(&tmp, &target)
                    .await
                    .map_err(io(format!("renaming {}", tmp.display())))?;
            }
        }
    }
    for (pack, files) in packs {
        let manifest = object_manifest(net, &pack).await?;
        let bytes = read_object_to_vec(net, &manifest, incidents).await?;
        for (path, offset, size, hash) in files {
            let (start, end) = (offset as usize, (offset + size) as usize);
            let slice = bytes
                .get(start..end)
                .ok_or_else(|| ClientError::Path(format!("{path}: outside its pack {pack}")))?;
            check_file(path, slice, &hash)?;
            let target = dir.join(path);
            tokio::fs::write(&target, slice)
                .await
                .map_err(io(format!("writing {}", target.display())))?;
            total += size;
            progress(size);
        }
    }
    Ok(total)
}

fn check_file(path: &str, bytes: &[u8], expected: &blake3::Hash) -> Result<(), ClientError> {
    if blake3::hash(bytes) != *expected {
        return Err(ClientError::Path(format!(
            "{path}: bytes do not match the dataset's BLAKE3"
        )));
    }
    Ok(())
}
