//! Manifests: fetched from the nodes most likely to hold them (a slow one hedged), checked
//! against their CID, decoded, and their provenance signatures verified.

use cairn_chunker::Cid;
use cairn_chunker::cids::{self, Codec};
use cairn_chunker::manifest::{DatasetManifest, ObjectManifest, Provenance};
use cairn_policy::hedge::{self, OneAtATime};
use cairn_policy::keeper;
use futures::StreamExt;
use libp2p::PeerId;

use super::HEDGE_AFTER;
use crate::error::ClientError;
use crate::network::Network;

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

/// Fetches `cid`'s manifest from the nodes most likely to hold it (then the rest), checks it
/// hashes to `cid`, decodes it, and verifies its provenance signatures. Fails if no node
/// serves a matching manifest or no signature verifies.
pub async fn fetch_manifest(net: &Network, cid: &Cid) -> Result<Fetched, ClientError> {
    cids::digest(cid, Codec::DagCbor).map_err(|source| ClientError::NotAManifest {
        cid: Box::new(*cid),
        source,
    })?;
    // Best-ranked first; nodes that recently failed to answer last.
    let ids: Vec<Vec<u8>> = net
        .candidates()
        .into_iter()
        .map(|c| c.id().to_vec())
        .collect();
    let ranked = keeper::ranking(&cid.to_bytes(), &ids);
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

/// Fetches an object manifest (checked and signed) by CID.
pub async fn object_manifest(net: &Network, cid: &Cid) -> Result<ObjectManifest, ClientError> {
    match fetch_manifest(net, cid).await?.manifest {
        Manifest::Object(m) => Ok(m),
        Manifest::Dataset(_) => Err(ClientError::NotAnObject(Box::new(*cid))),
    }
}
