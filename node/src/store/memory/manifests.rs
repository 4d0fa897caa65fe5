//! [`MemStore`]: manifests, provenance envelopes and the signed-by index.

use std::collections::HashSet;

use cairn_chunker::cids::{self, Cid};
use cairn_chunker::manifest::Provenance;

use crate::store::StoreError;
use crate::store::manifests::MAX_ENVELOPES;
use cairn_wire::protocol::ManifestKind;

use super::{MemStore, State};
use crate::store::manifests::check_manifest;

impl MemStore {
    /// Checks and stores a manifest (object or dataset) and any provenance envelopes for it.
    pub fn put_manifest(
        &self,
        cid: &Cid,
        kind: ManifestKind,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let mut parsed = check_manifest(cid, kind, bytes, envelopes)?;
        let key = cid.to_bytes();
        let mut state = self.state();
        // One envelope per signer (the first), at most as many as readers accept.
        let kept = state.envelopes(&key);
        let mut signers: HashSet<Vec<u8>> = kept
            .iter()
            .filter_map(|e| Provenance::from_bytes(e).ok())
            .map(|p| p.signer)
            .collect();
        parsed.retain(|(p, _)| signers.insert(p.signer.clone()));
        if kept.len() + parsed.len() > MAX_ENVELOPES {
            return Err(StoreError::TooManyEnvelopes {
                cid: *cid,
                max: MAX_ENVELOPES,
            });
        }
        let old_len = state.manifests.get(&key).map_or(0, |m| m.len() as u64);
        let len = bytes.len() as u64 + parsed.iter().map(|(_, e)| e.len() as u64).sum::<u64>();
        let len = len.saturating_sub(old_len);
        let taken = state.taken();
        let capacity = self.config.capacity;
        if !super::shards::space(capacity, taken).capacity_takes(len) {
            return Err(StoreError::NoSpace {
                used: taken,
                capacity,
                needed: len,
            });
        }
        self.check_disk(&state, len)?;
        state.manifest_bytes += len;
        state.manifests.insert(key.clone(), bytes.to_vec());
        for (p, env) in parsed {
            state
                .provenance
                .entry(key.clone())
                .or_default()
                .insert(p.cid().to_bytes(), env.clone());
            let mut by_signer = p.signer.clone();
            // Big-endian so keys sort by time (newest last) within a signer.
            #[allow(clippy::big_endian_bytes)]
            by_signer.extend_from_slice(&p.time_ms.to_be_bytes());
            by_signer.extend_from_slice(&key);
            let kind_byte = match kind {
                ManifestKind::Object => 0u8,
                ManifestKind::Dataset => 1,
            };
            state.signed.insert(by_signer, kind_byte);
        }
        Ok(())
    }

    /// A stored manifest and its provenance envelopes, re-verified.
    pub fn get_manifest(&self, cid: &Cid) -> Result<(Vec<u8>, Vec<Vec<u8>>), StoreError> {
        let key = cid.to_bytes();
        let state = self.state();
        let bytes = state
            .manifests
            .get(&key)
            .ok_or(StoreError::NotFound { cid: *cid })?;
        if cids::dag_cbor(bytes) != *cid {
            self.metrics.verification_failures.inc();
            tracing::error!(%cid, "stored manifest failed verification");
            return Err(StoreError::Corrupt {
                cid: *cid,
                offset: 0,
            });
        }
        Ok((bytes.clone(), state.envelopes(&key)))
    }

    /// Manifests signed by `signer`, newest first (by the signer's clock), at most `limit`:
    /// `(manifest CID, time_ms, kind)`.
    pub fn signed_by(
        &self,
        signer: &[u8],
        limit: usize,
    ) -> Result<Vec<(Cid, u64, ManifestKind)>, StoreError> {
        let state = self.state();
        let mut upper = signer.to_vec();
        upper.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        for (k, v) in state.signed.range(..=upper).rev() {
            if !k.starts_with(signer) || out.len() >= limit {
                break;
            }
            let rest = &k[signer.len()..];
            if rest.len() < 8 {
                continue;
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&rest[..8]);
            let Ok(cid) = Cid::try_from(&rest[8..]) else {
                continue;
            };
            let kind = if *v == 1 {
                ManifestKind::Dataset
            } else {
                ManifestKind::Object
            };
            #[allow(clippy::big_endian_bytes)] // the key's sortable time, see put_manifest
            let time = u64::from_be_bytes(t);
            out.push((cid, time, kind));
        }
        Ok(out)
    }
}

impl State {
    /// Capacity taken: shard bytes and manifest bytes.
    pub(super) fn taken(&self) -> u64 {
        self.used + self.manifest_bytes
    }

    /// The provenance envelopes kept for the manifest keyed `key`, at most [`MAX_ENVELOPES`].
    fn envelopes(&self, key: &[u8]) -> Vec<Vec<u8>> {
        self.provenance
            .get(key)
            .map(|kept| kept.values().take(MAX_ENVELOPES).cloned().collect())
            .unwrap_or_default()
    }
}
