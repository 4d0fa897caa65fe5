//! The contract for manifests, provenance envelopes and the signed-by index.

use cairn_chunker::cids::{self, Cid};
use cairn_chunker::manifest::{DatasetEntry, Location as EntryLocation, Provenance};

use crate::store::StoreError;
use crate::store::manifests::MAX_ENVELOPES;
use cairn_wire::protocol::{Holding, ManifestKind};

use super::Subject;

contract!(
    manifests_and_provenance_are_verified,
    a_damaged_manifest_is_reported_not_served,
    envelopes_are_kept_one_per_signer_and_no_more_than_readers_take,
    manifests_are_found_by_signer_newest_first,
    manifests_count_against_capacity,
);

fn manifests_and_provenance_are_verified<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
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
    // Manifests are not shards, but they take capacity.
    assert_eq!((store.stats().used, store.stats().shards), (0, 0));
    assert_eq!(store.stats().manifests, (bytes.len() + env.len()) as u64);
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
    assert!(matches!(
        store.get_manifest(&cids::dag_cbor(b"never")),
        Err(StoreError::NotFound { .. })
    ));
}

fn a_damaged_manifest_is_reported_not_served<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
    let d = cairn_chunker::DatasetManifest::new();
    let (cid, bytes) = (d.cid(), d.to_bytes());
    store
        .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[])
        .unwrap();
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    store.overwrite_manifest(&cid, &bad);
    assert!(matches!(
        store.get_manifest(&cid),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.metrics().verification_failures.get(), 1);
    assert_eq!(store.has(&[cid, cid]).unwrap(), vec![Holding::Corrupt; 2]);
    // Stored again, it is whole again.
    store
        .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[])
        .unwrap();
    assert_eq!(store.get_manifest(&cid).unwrap().0, bytes);
}

fn envelopes_are_kept_one_per_signer_and_no_more_than_readers_take<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
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
    // Still readable, with the author's envelope among those served, in the same order by
    // every store.
    let (got, envs) = store.get_manifest(&cid).unwrap();
    assert_eq!(got, bytes);
    assert_eq!(envs.len(), MAX_ENVELOPES);
    assert!(envs.contains(&author));
    let mut by_cid = envs.clone();
    by_cid.sort_by_key(|e| Provenance::from_bytes(e).unwrap().cid().to_bytes());
    assert_eq!(envs, by_cid, "envelopes are served in envelope CID order");
    // Re-publishing with an envelope already kept is not refused.
    store
        .put_manifest(&cid, ManifestKind::Dataset, &bytes, &[author])
        .unwrap();
}

fn manifests_are_found_by_signer_newest_first<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
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
    assert!(
        store
            .signed_by(alice.verifying_key().as_bytes(), 0)
            .unwrap()
            .is_empty()
    );
}

/// A dataset manifest of `files` inline one-byte files, distinct per `seed`.
fn dataset(files: usize, seed: u8) -> cairn_chunker::DatasetManifest {
    let mut d = cairn_chunker::DatasetManifest::new();
    for i in 0..files {
        d.entries.insert(
            format!("s{seed}/f{i}"),
            DatasetEntry {
                size: 1,
                blake3: blake3::hash(&[seed]),
                location: EntryLocation::Inline(vec![seed]),
                meta: Default::default(),
            },
        );
    }
    d
}

fn manifests_count_against_capacity<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let first = dataset(40, 1);
    let (bytes, cid) = (first.to_bytes(), first.cid());
    let env = Provenance::sign(cid, &key, 5, None).to_bytes();
    let size = (bytes.len() + env.len()) as u64;
    // Room for the first manifest and 100 bytes more.
    let store = S::fresh(dir.path(), size + 100);
    store
        .put_manifest(
            &cid,
            ManifestKind::Dataset,
            &bytes,
            std::slice::from_ref(&env),
        )
        .unwrap();
    let stats = store.stats();
    assert_eq!((stats.manifests, stats.used, stats.free()), (size, 0, 100));
    // Stored again: counted once.
    store
        .put_manifest(
            &cid,
            ManifestKind::Dataset,
            &bytes,
            std::slice::from_ref(&env),
        )
        .unwrap();
    assert_eq!(store.stats().manifests, size);
    // A second manifest does not fit; the refusal says the node is full and nothing is kept.
    let second = dataset(40, 2);
    match store.put_manifest(
        &second.cid(),
        ManifestKind::Dataset,
        &second.to_bytes(),
        &[],
    ) {
        Err(StoreError::NoSpace { needed, .. }) => {
            assert_eq!(needed, second.to_bytes().len() as u64)
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(matches!(
        store.get_manifest(&second.cid()),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.stats().manifests, size);
    // Nor does a shard bigger than what is left.
    let (shard_cid, data) = crate::store::testing::shard(101, 3);
    assert!(matches!(
        store.put_shard(&shard_cid, &data),
        Err(StoreError::NoSpace { .. })
    ));
    // The count survives a restart.
    let store = store.reopen();
    assert_eq!(store.stats().manifests, size);
    assert_eq!(store.stats().free(), 100);
}
