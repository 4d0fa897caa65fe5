//! The lease requests of the data plane: owners' statements to keepers, holds to shard
//! holders, and spare copies named to their holders.

use std::collections::HashMap;

use bytes::Bytes;
use cairn_chunker::cids::{self, Cid, Codec};
use cairn_proofs::receipt::StorageReceipt;

use super::client::{check_receipt, write_err};
use super::frame::encode;
use super::{Client, DataError, Target};
use crate::protocol::{
    DataRequest, DataResponse, MAX_HOLD_SHARDS, MAX_LEASE_STATEMENTS, MAX_SPARE_SHARDS,
};

impl Client {
    /// Sends owners' lease statements (encoded) to a keeper `t`, [`MAX_LEASE_STATEMENTS`] to a
    /// request: how many it took, and why it refused others (a few reasons per request).
    pub async fn lease(
        &self,
        t: &Target,
        statements: &[Vec<u8>],
    ) -> Result<(u32, Vec<String>), DataError> {
        let messages = statements
            .chunks(MAX_LEASE_STATEMENTS)
            .map(|batch| DataRequest::Lease {
                statements: batch
                    .iter()
                    .map(|s| serde_bytes::ByteBuf::from(s.clone()))
                    .collect(),
            });
        self.leased(t, messages).await
    }

    /// Sends each request to `t` and adds up its [`DataResponse::Leased`] answers.
    async fn leased(
        &self,
        t: &Target,
        requests: impl Iterator<Item = DataRequest>,
    ) -> Result<(u32, Vec<String>), DataError> {
        let (mut accepted, mut refused) = (0u32, Vec::new());
        for request in requests {
            let message = Bytes::from(encode(&request));
            let (n, why) = self
                .request(t, |mut send, mut recv| {
                    let message = message.clone();
                    async move {
                        send.write_chunk(message).await.map_err(write_err(t.peer))?;
                        let _ = send.finish();
                        match Client::response(t, &mut recv).await? {
                            DataResponse::Leased { accepted, refused } => Ok((accepted, refused)),
                            other => Err(DataError::Protocol {
                                peer: t.peer,
                                reason: format!("unexpected answer {other:?}"),
                            }),
                        }
                    }
                })
                .await?;
            accepted = accepted.saturating_add(n);
            refused.extend(why);
        }
        Ok((accepted, refused))
    }

    /// Asks a shard holder `t` to apply a lease statement (encoded) to the listed shards it
    /// holds, [`MAX_HOLD_SHARDS`] to a request: the storage receipts it answers with, each
    /// checked to be signed by `t` and to name one of the listed shards.
    pub async fn hold(
        &self,
        t: &Target,
        statement: &[u8],
        shards: &[Cid],
    ) -> Result<Vec<StorageReceipt>, DataError> {
        let mut out = Vec::new();
        for batch in shards.chunks(MAX_HOLD_SHARDS) {
            let message = Bytes::from(encode(&DataRequest::Hold {
                statement: serde_bytes::ByteBuf::from(statement.to_vec()),
                shards: batch.to_vec(),
            }));
            let receipts = self
                .request(t, |mut send, mut recv| {
                    let message = message.clone();
                    async move {
                        send.write_chunk(message).await.map_err(write_err(t.peer))?;
                        let _ = send.finish();
                        match Client::response(t, &mut recv).await? {
                            DataResponse::Held { receipts } => Ok(receipts),
                            other => Err(DataError::Protocol {
                                peer: t.peer,
                                reason: format!("unexpected answer {other:?}"),
                            }),
                        }
                    }
                })
                .await?;
            let roots: HashMap<[u8; 32], Cid> = batch
                .iter()
                .filter_map(|c| Some((*cids::digest(c, Codec::Raw).ok()?.as_bytes(), *c)))
                .collect();
            for bytes in receipts {
                let named = StorageReceipt::from_bytes(&bytes)
                    .ok()
                    .and_then(|r| roots.get(&r.shard.0).map(|c| (*c, r.size)));
                let Some((cid, size)) = named else {
                    return Err(DataError::Protocol {
                        peer: t.peer,
                        reason: "a hold was answered with a receipt for a shard not asked about"
                            .into(),
                    });
                };
                let root = *cids::digest(&cid, Codec::Raw)
                    .map_err(|e| DataError::Protocol {
                        peer: t.peer,
                        reason: e.to_string(),
                    })?
                    .as_bytes();
                out.push(check_receipt(t, &cid, Some(&root), size, &bytes)?);
            }
        }
        Ok(out)
    }

    /// Tells a shard holder `t` that other nodes have taken over some of its copies: each
    /// pair is a shard and the storage receipt of the node that holds it for the network now.
    /// `t` counts those copies as spare (it keeps them until their holds end, and counts them
    /// out of the fill it reports for rebalancing). At most [`MAX_SPARE_SHARDS`] to a request:
    /// how many it took, and why it refused others.
    pub async fn spare(
        &self,
        t: &Target,
        shards: &[(Cid, Vec<u8>)],
    ) -> Result<(u32, Vec<String>), DataError> {
        let messages = shards
            .chunks(MAX_SPARE_SHARDS)
            .map(|batch| DataRequest::Spare {
                shards: batch.iter().map(|(c, _)| *c).collect(),
                receipts: batch
                    .iter()
                    .map(|(_, r)| serde_bytes::ByteBuf::from(r.clone()))
                    .collect(),
            });
        self.leased(t, messages).await
    }
}
