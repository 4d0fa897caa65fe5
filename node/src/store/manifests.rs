//! Signed manifests: the manifests themselves, their provenance envelopes and the index of
//! manifests by signer.

use std::collections::HashSet;

use cairn_chunker::cids::{self, Cid};
use cairn_chunker::manifest::{DatasetManifest, ObjectManifest, Provenance};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use cairn_wire::protocol::ManifestKind;

use super::layout::{CF_MANIFESTS, CF_META, CF_PROVENANCE, CF_SIGNED, KEY_MANIFEST_BYTES, delta};
use super::{Store, StoreError};

/// Most provenance envelopes kept (and served) per manifest: what readers accept.
pub(super) const MAX_ENVELOPES: usize = cairn_wire::protocol::MAX_ENVELOPES as usize;

/// Checks a manifest against its CID and kind, and every envelope's signature over it: what a
/// store (either twin) does before it keeps anything. The envelopes come back parsed, beside
/// their bytes.
pub(super) fn check_manifest<'a>(
    cid: &Cid,
    kind: ManifestKind,
    bytes: &[u8],
    envelopes: &'a [Vec<u8>],
) -> Result<Vec<(Provenance, &'a Vec<u8>)>, StoreError> {
    match kind {
        ManifestKind::Object => {
            ObjectManifest::from_bytes_for(cid, bytes)?;
        }
        ManifestKind::Dataset => {
            DatasetManifest::from_bytes_for(cid, bytes)?;
        }
    }
    let mut parsed = Vec::with_capacity(envelopes.len());
    for env in envelopes {
        let p = Provenance::from_bytes(env)?;
        p.verify_for(cid)?;
        parsed.push((p, env));
    }
    Ok(parsed)
}

impl Store {
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
        // Anyone can sign any manifest, so envelopes are kept one per signer (the first), and
        // only as many as readers accept: more would make the manifest unreadable here. Writers
        // of one manifest take turns so that the count cannot be overrun.
        let _claim = self.claim(&key);
        let kept = self.envelopes(&key)?;
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
        // What is stored already: the same bytes, or a damaged copy (rewritten, and counted
        // as its new length less the old), or nothing.
        let (intact, old_len) = match self.db.get_pinned_cf(self.cf(CF_MANIFESTS)?, &key)? {
            Some(old) => (old[..] == *bytes, old.len() as u64),
            None => (false, 0),
        };
        if intact && parsed.is_empty() {
            // Stored already with every envelope offered: nothing to write (and no fsync).
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let mut len = 0u64;
        let mut freed = 0u64;
        if !intact {
            batch.put_cf(self.cf(CF_MANIFESTS)?, &key, bytes);
            len += bytes.len() as u64;
            freed = old_len;
        }
        for (p, env) in parsed {
            len += env.len() as u64;
            let mut k = key.clone();
            k.extend_from_slice(&p.cid().to_bytes());
            batch.put_cf(self.cf(CF_PROVENANCE)?, k, env);
            let mut by_signer = p.signer.clone();
            // Big-endian so keys sort by time (newest last) within a signer.
            #[allow(clippy::big_endian_bytes)]
            by_signer.extend_from_slice(&p.time_ms.to_be_bytes());
            by_signer.extend_from_slice(&key);
            let kind_byte = match kind {
                ManifestKind::Object => 0u8,
                ManifestKind::Dataset => 1,
            };
            batch.put_cf(self.cf(CF_SIGNED)?, by_signer, [kind_byte]);
        }
        // Manifests take capacity as shards do: a full node refuses them, and the writer
        // keeps the manifest on the next keeper.
        batch.merge_cf(
            self.cf(CF_META)?,
            KEY_MANIFEST_BYTES,
            delta(len as i64 - freed as i64),
        );
        let more = len.saturating_sub(freed);
        if more > 0 {
            self.take_capacity(more, true)?;
        }
        let written = self.with_disk_room(len, || {
            self.db
                .write_opt(batch, &self.write_opts())
                .map_err(|e| self.write_failed(e, len))
        });
        match written {
            Ok(()) => self.give_capacity(freed.saturating_sub(len), true),
            Err(_) => self.give_capacity(more, true),
        }
        written
    }

    /// The provenance envelopes stored for the manifest keyed `key`, at most
    /// [`MAX_ENVELOPES`].
    pub(super) fn envelopes(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut envelopes = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_PROVENANCE)?, key) {
            let (k, v) = item?;
            if !k.starts_with(key) || envelopes.len() == MAX_ENVELOPES {
                break;
            }
            envelopes.push(v.to_vec());
        }
        Ok(envelopes)
    }

    /// Manifests signed by `signer` (an ed25519 public key), newest first (by the signer's
    /// clock), at most `limit`: `(manifest CID, time_ms, kind)`.
    pub fn signed_by(
        &self,
        signer: &[u8],
        limit: usize,
    ) -> Result<Vec<(Cid, u64, ManifestKind)>, StoreError> {
        let mut upper = signer.to_vec();
        upper.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_SIGNED)?,
            IteratorMode::From(&upper, Direction::Reverse),
        );
        for item in it {
            let (k, v) = item?;
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
            let kind = if v.first() == Some(&1) {
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

    /// CIDs of the manifests this store keeps, in key order after `after`, at most `limit`
    /// (the keeper's walk over the objects it looks after; no manifest is read).
    pub fn manifests_after(
        &self,
        after: Option<&Cid>,
        limit: usize,
    ) -> Result<Vec<Cid>, StoreError> {
        // A raw iterator: keys only, no manifest bytes copied.
        let mut it = self.db.raw_iterator_cf(self.cf(CF_MANIFESTS)?);
        match after {
            Some(c) => {
                let k = c.to_bytes();
                it.seek(&k);
                if it.key() == Some(&k[..]) {
                    it.next();
                }
            }
            None => it.seek_to_first(),
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(k) = it.key() else { break };
            match Cid::try_from(k) {
                Ok(cid) => out.push(cid),
                Err(e) => tracing::error!(key = ?k, "skipping a damaged manifest key: {e}"),
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// A stored manifest and its provenance envelopes, re-verified.
    pub fn get_manifest(&self, cid: &Cid) -> Result<(Vec<u8>, Vec<Vec<u8>>), StoreError> {
        let key = cid.to_bytes();
        let bytes = self
            .db
            .get_cf(self.cf(CF_MANIFESTS)?, &key)?
            .ok_or(StoreError::NotFound { cid: *cid })?;
        if cids::dag_cbor(&bytes) != *cid {
            self.metrics.verification_failures.inc();
            tracing::error!(%cid, "stored manifest failed verification");
            return Err(StoreError::Corrupt {
                cid: *cid,
                offset: 0,
            });
        }
        Ok((bytes, self.envelopes(&key)?))
    }
}
