//! Signed manifests: the manifests themselves, their provenance envelopes and the index of
//! manifests by signer.

use std::collections::HashSet;

use cairn_chunker::cids::{self, Cid};
use cairn_chunker::manifest::{DatasetManifest, ObjectManifest, Provenance};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::protocol::ManifestKind;

use super::layout::{CF_MANIFESTS, CF_PROVENANCE, CF_SIGNED};
use super::{Store, StoreError};

/// Most provenance envelopes kept (and served) per manifest: what readers accept.
pub(super) const MAX_ENVELOPES: usize = crate::protocol::MAX_ENVELOPES as usize;

impl Store {
    /// Checks and stores a manifest (object or dataset) and any provenance envelopes for it.
    pub fn put_manifest(
        &self,
        cid: &Cid,
        kind: ManifestKind,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> Result<(), StoreError> {
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
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_MANIFESTS)?, &key, bytes);
        let mut len = bytes.len() as u64;
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
        self.with_disk_room(len, || {
            self.db
                .write_opt(batch, &self.write_opts())
                .map_err(|e| self.write_failed(e, len))
        })
    }

    /// The provenance envelopes stored for the manifest keyed `key`, at most
    /// [`MAX_ENVELOPES`].
    fn envelopes(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
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

#[cfg(test)]
mod tests {
    use crate::protocol::Holding;
    use cairn_chunker::manifest::Provenance;

    use super::*;
    use crate::store::testing::*;
    use crate::store::*;

    #[test]
    fn manifests_and_provenance_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let d = cairn_chunker::DatasetManifest::new();
        let bytes = d.to_bytes();
        let cid = d.cid();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let env = Provenance::sign(cid, &key, 5, None).to_bytes();
        store
            .put_manifest(
                &cid,
                ManifestKind::Dataset,
                &bytes,
                std::slice::from_ref(&env),
            )
            .unwrap();
        let (got, envs) = store.get_manifest(&cid).unwrap();
        assert_eq!(got, bytes);
        assert_eq!(envs, vec![env.clone()]);
        // `has` answers for manifests too (and not for a manifest that was never stored).
        assert_eq!(
            store.has(&[cid, cids::dag_cbor(b"never")]).unwrap(),
            vec![Holding::Intact(bytes.len() as u64), Holding::Absent]
        );
        // Wrong CID, wrong kind, tampered envelope: refused.
        assert!(
            store
                .put_manifest(&cids::dag_cbor(b"x"), ManifestKind::Dataset, &bytes, &[])
                .is_err()
        );
        assert!(
            store
                .put_manifest(&cid, ManifestKind::Object, &bytes, &[])
                .is_err()
        );
        let mut bad = env;
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(
            store
                .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[bad])
                .is_err()
        );
    }

    #[test]
    fn envelopes_are_kept_one_per_signer_and_no_more_than_readers_take() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let d = cairn_chunker::DatasetManifest::new();
        let (cid, bytes) = (d.cid(), d.to_bytes());
        let signer = |i: u32| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            ed25519_dalek::SigningKey::from_bytes(&seed)
        };
        let author = Provenance::sign(cid, &signer(0), 1, None).to_bytes();
        store
            .put_manifest(
                &cid,
                ManifestKind::Dataset,
                &bytes,
                std::slice::from_ref(&author),
            )
            .unwrap();
        // The same signer again (a later time, so another envelope): the first one stays.
        let again = Provenance::sign(cid, &signer(0), 2, None).to_bytes();
        store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[again])
            .unwrap();
        assert_eq!(store.get_manifest(&cid).unwrap().1, vec![author.clone()]);
        // Strangers sign it too, up to what readers accept; one more is refused, clearly.
        let strangers: Vec<Vec<u8>> = (1..MAX_ENVELOPES as u32)
            .map(|i| Provenance::sign(cid, &signer(i), 3, None).to_bytes())
            .collect();
        store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &strangers)
            .unwrap();
        let one_more = Provenance::sign(cid, &signer(9999), 3, None).to_bytes();
        let err = store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[one_more])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::TooManyEnvelopes { max, .. } if max == MAX_ENVELOPES),
            "{err:?}"
        );
        assert!(err.to_string().contains("provenance envelopes"), "{err}");
        // Still readable, with the author's envelope among those served.
        let (got, envs) = store.get_manifest(&cid).unwrap();
        assert_eq!(got, bytes);
        assert_eq!(envs.len(), MAX_ENVELOPES);
        assert!(envs.contains(&author));
        // Re-publishing with an envelope already kept is not refused.
        store
            .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[author])
            .unwrap();
    }

    #[test]
    fn manifests_are_found_by_signer_newest_first() {
        use cairn_chunker::manifest::{DatasetEntry, Location as EntryLocation};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let (alice, bob) = (
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
            ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
        );
        let mut published = Vec::new();
        for (i, time) in [30u64, 10, 20].into_iter().enumerate() {
            let mut d = cairn_chunker::DatasetManifest::new();
            d.entries.insert(
                format!("f{i}"),
                DatasetEntry {
                    size: 1,
                    blake3: blake3::hash(&[i as u8]),
                    location: EntryLocation::Inline(vec![i as u8]),
                    meta: Default::default(),
                },
            );
            let cid = d.cid();
            let env = Provenance::sign(cid, &alice, time, None).to_bytes();
            store
                .put_manifest(&cid, ManifestKind::Dataset, &d.to_bytes(), &[env])
                .unwrap();
            published.push((cid, time));
        }
        // Bob's manifest is not Alice's.
        let d = cairn_chunker::DatasetManifest::new();
        let env = Provenance::sign(d.cid(), &bob, 99, None).to_bytes();
        store
            .put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[env])
            .unwrap();
        let found = store
            .signed_by(alice.verifying_key().as_bytes(), 10)
            .unwrap();
        let got: Vec<(Cid, u64)> = found.iter().map(|(c, t, _)| (*c, *t)).collect();
        published.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        assert_eq!(got, published);
        assert!(found.iter().all(|(_, _, k)| *k == ManifestKind::Dataset));
        let newest = store
            .signed_by(alice.verifying_key().as_bytes(), 1)
            .unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].1, 30);
        let bobs = store.signed_by(bob.verifying_key().as_bytes(), 10).unwrap();
        assert_eq!(bobs.len(), 1);
        assert_eq!(bobs[0].0, d.cid());
        assert!(store.signed_by(&[7; 32], 10).unwrap().is_empty());
    }
}
