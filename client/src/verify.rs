//! Inspection: where every shard of an object is (`stat`), and a full audit of an object or
//! dataset down to every shard on every node that claims it (`verify`).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use cairn_chunker::Cid;
use cairn_chunker::manifest::{DatasetEntry, Location, ObjectManifest};
use cairn_chunker::pipeline::encode_stripe_shards;
use libp2p::PeerId;
use serde::Serialize;

use crate::get::{MAX_PACK, Manifest, fetch_manifest};
use crate::network::Network;

/// One shard of a stripe and who holds it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// Index in the stripe (`0..k` data, `k..k+m` parity).
    pub index: usize,
    /// Its CID.
    pub cid: String,
    /// Length in bytes.
    pub len: u32,
    /// Live nodes holding it intact.
    pub holders: Vec<String>,
    /// Live nodes holding a copy that failed verification (quarantined).
    pub corrupt: Vec<String>,
}

/// One stripe.
#[derive(Debug, Clone, Serialize)]
pub struct StripeStatus {
    /// Stripe index.
    pub index: usize,
    /// Its stored shards.
    pub shards: Vec<ShardStatus>,
    /// Shards with at least one live holder.
    pub live: usize,
    /// Shards needed to read it (`k`, minus zero-length data shards).
    pub need: usize,
}

/// Where an object's shards are.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectStatus {
    /// Manifest CID.
    pub cid: String,
    /// Object size.
    pub size: u64,
    /// BLAKE3 of the object (`b3sum`).
    pub blake3: String,
    /// Erasure code.
    pub code: String,
    /// Data shards per stripe.
    pub k: u16,
    /// Parity shards per stripe.
    pub m: u16,
    /// Shard size.
    pub shard_size: u32,
    /// Stored inline in the manifest.
    pub inline: bool,
    /// Signers of the manifest (ed25519 public keys, hex).
    pub signers: Vec<String>,
    /// Nodes holding an intact copy of the manifest (peer ids).
    pub manifest_holders: Vec<String>,
    /// The stripes.
    pub stripes: Vec<StripeStatus>,
}

/// Locates every shard of an object.
pub async fn stat_object(
    net: &Network,
    cid: &Cid,
    manifest: &ObjectManifest,
    signers: Vec<String>,
) -> ObjectStatus {
    let mut cids: Vec<Cid> = manifest.stored_shards().map(|(_, _, r)| r.cid).collect();
    cids.push(*cid);
    let holders = net.locate(&cids).await;
    let peers = |nodes: &[usize]| -> Vec<String> {
        nodes
            .iter()
            .map(|&n| net.nodes()[n].peer().to_string())
            .collect()
    };
    let stripes = manifest
        .stripes
        .iter()
        .enumerate()
        .map(|(si, stripe)| {
            let shards: Vec<ShardStatus> = stripe
                .stored_shards()
                .map(|(i, r)| ShardStatus {
                    index: i,
                    cid: r.cid.to_string(),
                    len: r.len,
                    holders: peers(holders.intact(&r.cid)),
                    corrupt: peers(holders.corrupt(&r.cid)),
                })
                .collect();
            let implicit = stripe.data.iter().filter(|d| d.len == 0).count();
            StripeStatus {
                index: si,
                live: shards.iter().filter(|s| !s.holders.is_empty()).count(),
                need: stripe.data.len() - implicit,
                shards,
            }
        })
        .collect();
    ObjectStatus {
        cid: cid.to_string(),
        size: manifest.size,
        blake3: manifest.blake3.to_hex().to_string(),
        code: manifest.erasure.code.to_string(),
        k: manifest.erasure.k,
        m: manifest.erasure.m,
        shard_size: manifest.erasure.shard_size,
        inline: manifest.inline.is_some(),
        signers,
        manifest_holders: peers(holders.intact(cid)),
        stripes,
    }
}

/// The outcome of an audit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Manifests checked (CID, decoding, signature).
    pub manifests: usize,
    /// Shard copies fetched and verified.
    pub shard_copies: usize,
    /// Stripes whose parity was recomputed and matched.
    pub stripes: usize,
    /// Everything wrong, one line each.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Audits `cid`: the manifest and its signature; for objects, every shard copy on every node
/// that claims it, the parity of every stripe, and the object's BLAKE3; for datasets, every
/// file's object. Problems are collected, not returned early.
pub async fn verify(net: &Network, cid: &Cid) -> VerifyReport {
    let mut report = VerifyReport::default();
    let fetched = match fetch_manifest(net, cid).await {
        Ok(f) => f,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.manifests += 1;
    match fetched.manifest {
        Manifest::Object(m) => {
            verify_object(net, cid, &m, false, &mut report).await;
        }
        Manifest::Dataset(d) => {
            // Each object or pack once, with the entries that name it.
            let mut objects: BTreeMap<Cid, Vec<(&String, &DatasetEntry)>> = BTreeMap::new();
            for (path, entry) in &d.entries {
                match &entry.location {
                    Location::Object(c) | Location::Packed { pack: c, .. } => {
                        objects.entry(*c).or_default().push((path, entry));
                    }
                    Location::Inline(bytes) => {
                        if blake3::hash(bytes) != entry.blake3 {
                            report
                                .problems
                                .push(format!("{path}: inline bytes do not match their BLAKE3"));
                        }
                    }
                }
            }
            for (c, entries) in objects {
                match fetch_manifest(net, &c).await {
                    Ok(f) => {
                        report.manifests += 1;
                        match f.manifest {
                            Manifest::Object(m) => {
                                let packed = entries
                                    .iter()
                                    .any(|(_, e)| matches!(e.location, Location::Packed { .. }));
                                let keep = packed && m.size <= MAX_PACK;
                                if packed && !keep {
                                    report.problems.push(format!(
                                        "{c}: a pack of {} bytes, over the {MAX_PACK} a pack may hold",
                                        m.size
                                    ));
                                }
                                let bytes = verify_object(net, &c, &m, keep, &mut report).await;
                                check_entries(&c, &m, bytes.as_deref(), &entries, &mut report);
                            }
                            Manifest::Dataset(_) => report
                                .problems
                                .push(format!("{c}: a dataset where an object was expected")),
                        }
                    }
                    Err(e) => report.problems.push(e.to_string()),
                }
            }
        }
    }
    report
}

/// Checks that the files a dataset names in object `cid` are what its entries say: a whole
/// object has the entry's size and BLAKE3, a pack slice lies within the pack and hashes to the
/// entry's BLAKE3 (`pack`: the pack's bytes, when they could all be read and verified).
fn check_entries(
    cid: &Cid,
    m: &ObjectManifest,
    pack: Option<&[u8]>,
    entries: &[(&String, &DatasetEntry)],
    report: &mut VerifyReport,
) {
    for (path, entry) in entries {
        match entry.location {
            Location::Object(_) => {
                if m.size != entry.size || m.blake3 != entry.blake3 {
                    report.problems.push(format!(
                        "{path}: object {cid} is not the file the dataset names (its size or \
                         BLAKE3 differs)"
                    ));
                }
            }
            Location::Packed { offset, .. } => {
                let end = offset.checked_add(entry.size).filter(|&e| e <= m.size);
                match (end, pack) {
                    (None, _) => report.problems.push(format!(
                        "{path}: bytes {offset}+{} lie outside pack {cid} ({} bytes)",
                        entry.size, m.size
                    )),
                    (Some(end), Some(pack)) => {
                        if blake3::hash(&pack[offset as usize..end as usize]) != entry.blake3 {
                            report.problems.push(format!(
                                "{path}: its slice of pack {cid} does not match its BLAKE3"
                            ));
                        }
                    }
                    // The pack could not be read whole: already reported.
                    (Some(_), None) => {}
                }
            }
            Location::Inline(_) => {}
        }
    }
}

/// Audits one object (see [`verify`]). With `keep`, returns its bytes if every stripe could be
/// read and they add up to the object's BLAKE3 (only asked of packs, at most [`MAX_PACK`]).
async fn verify_object(
    net: &Network,
    cid: &Cid,
    m: &ObjectManifest,
    keep: bool,
    report: &mut VerifyReport,
) -> Option<Vec<u8>> {
    if let Some(inline) = &m.inline {
        if blake3::hash(inline) != m.blake3 {
            report.problems.push(format!(
                "{cid}: inline bytes do not match the object's BLAKE3"
            ));
            return None;
        }
        return keep.then(|| inline.clone());
    }
    let mut kept = keep.then(|| Vec::with_capacity(m.size.min(MAX_PACK) as usize));
    let cids: Vec<Cid> = m.stored_shards().map(|(_, _, r)| r.cid).collect();
    let holders = net.locate(&cids).await;
    let mut coder = match m.erasure.code.coder(m.erasure.k.into(), m.erasure.m.into()) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(format!("{cid}: {e}"));
            return None;
        }
    };
    let mut object_hash = blake3::Hasher::new();
    let mut hash_complete = true;
    for (si, stripe) in m.stripes.iter().enumerate() {
        let mut good: HashMap<usize, Bytes> = HashMap::new();
        for (i, r) in stripe.stored_shards() {
            for &n in holders.corrupt(&r.cid) {
                report.problems.push(format!(
                    "{cid} stripe {si} shard {i} ({}): node {} holds a corrupt copy (quarantined, needs repair)",
                    r.cid,
                    net.nodes()[n].peer()
                ));
            }
            let hs = holders.intact(&r.cid).to_vec();
            if hs.is_empty() {
                report.problems.push(format!(
                    "{cid} stripe {si} shard {i} ({}): no live node holds an intact copy",
                    r.cid
                ));
                continue;
            }
            for n in hs {
                let node = &net.nodes()[n];
                match net
                    .data()
                    .fetch(&node.target, &r.cid, Some(u64::from(r.len)), None)
                    .await
                {
                    Ok(b) => {
                        report.shard_copies += 1;
                        good.insert(i, b);
                    }
                    Err(e) => report.problems.push(format!(
                        "{cid} stripe {si} shard {i}: node {}: {e}",
                        peer_str(node.peer())
                    )),
                }
            }
        }
        // Recompute parity from the data shards and compare with the manifest.
        let data: Option<Vec<Bytes>> = stripe
            .data
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if r.len == 0 {
                    Some(Bytes::new())
                } else {
                    good.get(&i).cloned()
                }
            })
            .collect();
        match data {
            Some(data) => {
                for d in &data {
                    object_hash.update(d);
                    if let Some(kept) = kept.as_mut() {
                        kept.extend_from_slice(d);
                    }
                }
                match encode_stripe_shards(coder.as_mut(), &data) {
                    Ok((recomputed, _)) if recomputed.parity == stripe.parity => {
                        report.stripes += 1
                    }
                    Ok(_) => report.problems.push(format!(
                        "{cid} stripe {si}: parity does not match the data (bad upload)"
                    )),
                    Err(e) => report.problems.push(format!("{cid} stripe {si}: {e}")),
                }
            }
            None => hash_complete = false,
        }
    }
    if !hash_complete {
        return None;
    }
    if object_hash.finalize() != m.blake3 {
        report.problems.push(format!(
            "{cid}: data shards do not add up to the object's BLAKE3"
        ));
        return None;
    }
    kept
}

fn peer_str(p: PeerId) -> String {
    p.to_string()
}
