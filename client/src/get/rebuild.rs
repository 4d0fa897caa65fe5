//! A stripe rebuilt from any `k` of its shards, once, for every piece of it that needs it.

use std::sync::Mutex;

use bytes::Bytes;
use cairn_chunker::manifest::ObjectManifest;
use cairn_chunker::pipeline::StripeDecoder;
use futures::StreamExt;

use super::Incidents;
use super::shards::fetch_shard;
use crate::error::{ClientError, Missing};
use crate::network::{Holders, Network};

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
pub(super) struct Rebuild {
    data: tokio::sync::OnceCell<Option<Vec<Bytes>>>,
    error: Mutex<Option<ClientError>>,
}

impl Rebuild {
    pub(super) async fn get(
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
