//! The contract for writing, deleting and reading whole shards: verification, quarantine,
//! repair, capacity and disk room, exact counters.

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::verified;

use crate::store::testing::shard;
use crate::store::{PutOutcome, StoreError};
use cairn_wire::protocol::{Holding, ManifestKind};

use super::Subject;

contract!(
    put_read_range_and_accounting,
    refuses_mismatched_oversized_and_overfull,
    checked_then_committed_is_the_same_as_put,
    every_read_refuses_a_quarantined_shard_until_it_is_stored_again,
    a_quarantined_shard_can_be_deleted_and_its_space_is_given_back,
    a_copy_repaired_while_a_reader_held_its_bad_bytes_is_not_quarantined_again,
    a_full_disk_refuses_new_shards_and_says_what_to_do,
    concurrent_writes_and_deletes_keep_the_counters_exact,
    concurrent_writes_never_exceed_the_capacity,
);

fn put_read_range_and_accounting<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard(1 << 20, 3);
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Stored);
    assert_eq!(
        store.put_shard(&cid, &data).unwrap(),
        PutOutcome::AlreadyHeld
    );
    assert_eq!(store.stats().used, 1 << 20);
    assert_eq!(store.stats().shards, 1);
    assert_eq!(store.read_shard(&cid).unwrap(), data);
    let (size, proof) = store.read_range(&cid, Some(1000..70_000)).unwrap();
    assert_eq!(size, 1 << 20);
    let got = verified::verify_range(
        &cids::digest(&cid, Codec::Raw).unwrap(),
        size,
        1000..70_000,
        &proof,
    )
    .unwrap();
    assert_eq!(got, &data[1000..70_000]);
    // A whole-shard proof too.
    let (size, proof) = store.read_range(&cid, None).unwrap();
    let root = cids::digest(&cid, Codec::Raw).unwrap();
    assert_eq!(
        verified::verify_range(&root, size, 0..size, &proof).unwrap(),
        data
    );
    assert_eq!(store.metrics().reads.get(), 3);
    assert_eq!(store.metrics().writes.get(), 1);
    assert_eq!(
        store.has(&[cid, cids::raw(b"nope")]).unwrap(),
        vec![Holding::Intact(1 << 20), Holding::Absent]
    );
    // Reopen: counts come back.
    let store = store.reopen();
    assert_eq!(store.stats().used, 1 << 20);
    assert!(store.delete_shard(&cid).unwrap());
    assert!(!store.delete_shard(&cid).unwrap(), "deleted already");
    assert_eq!((store.stats().used, store.stats().shards), (0, 0));
    assert!(matches!(
        store.read_shard(&cid),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.read_range(&cid, None),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.open_outgoing(&cid),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Absent]);
    store.flush().unwrap();
}

fn refuses_mismatched_oversized_and_overfull<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 100_000);
    let (cid, mut data) = shard(60_000, 5);
    data[10] ^= 1;
    assert!(matches!(
        store.put_shard(&cid, &data),
        Err(StoreError::HashMismatch { .. })
    ));
    assert_eq!(store.metrics().rejected_writes.get(), 1);
    data[10] ^= 1;
    store.put_shard(&cid, &data).unwrap();
    let (cid2, data2) = shard(60_000, 7);
    match store.put_shard(&cid2, &data2) {
        Err(StoreError::NoSpace {
            used,
            capacity,
            needed,
        }) => assert_eq!((used, capacity, needed), (60_000, 100_000, 60_000)),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(matches!(
        store.check_space(40_001),
        Err(StoreError::NoSpace { .. })
    ));
    store.check_space(40_000).unwrap();
    assert_eq!(store.stats().free(), 40_000);
    assert!(matches!(
        store.put_shard(&cids::raw(b""), b""),
        Err(StoreError::BadSize { len: 0 })
    ));
    assert!(matches!(
        store.put_shard(&cids::dag_cbor(b"x"), b"x"),
        Err(StoreError::Cid(_))
    ));
    assert_eq!((store.stats().used, store.stats().shards), (60_000, 1));
    assert_eq!(store.metrics().writes.get(), 1);
}

fn checked_then_committed_is_the_same_as_put<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 20);
    let (cid, data) = shard(200_000, 6);
    let mut bad = data.clone();
    bad[150_000] ^= 1;
    assert!(matches!(
        store.check_shard(&cid, bad.into()),
        Err(StoreError::HashMismatch { .. })
    ));
    assert_eq!(store.metrics().rejected_writes.get(), 1);
    assert_eq!(store.stats().used, 0, "checking stores nothing");
    let checked = store.check_shard(&cid, data.clone().into()).unwrap();
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Absent]);
    assert_eq!(store.commit_shard(checked).unwrap(), PutOutcome::Stored);
    assert_eq!(store.read_shard(&cid).unwrap(), data);
    let again = store.check_shard(&cid, data.clone().into()).unwrap();
    assert_eq!(store.commit_shard(again).unwrap(), PutOutcome::AlreadyHeld);
    assert_eq!((store.stats().used, store.stats().shards), (200_000, 1));
    // Checked while there was room, committed when there is none: refused then.
    let (big, big_data) = shard(900_000, 8);
    let checked = store.check_shard(&big, big_data.into()).unwrap();
    assert!(matches!(
        store.commit_shard(checked),
        Err(StoreError::NoSpace { .. })
    ));
    assert_eq!((store.stats().used, store.stats().shards), (200_000, 1));
}

fn every_read_refuses_a_quarantined_shard_until_it_is_stored_again<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
    let (cid, data) = shard(400_000, 12);
    store.put_shard(&cid, &data).unwrap();
    let mut bad = data.clone();
    bad[390_000] ^= 0x10;
    store.overwrite_stored(&cid, &bad);
    // A range away from the bad byte is still served: only what is read is checked.
    store.read_range(&cid, Some(0..1000)).unwrap();
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Intact(400_000)]);
    let err = store.read_range(&cid, Some(389_000..391_000)).unwrap_err();
    let group = (390_000 / verified::GROUP_BYTES * verified::GROUP_BYTES) as u64;
    assert!(
        matches!(err, StoreError::Corrupt { offset, .. } if offset == group),
        "{err:?}"
    );
    assert_eq!(store.metrics().verification_failures.get(), 1);
    // Quarantined: every read path refuses it, without looking at the bytes again.
    assert!(matches!(
        store.read_range(&cid, Some(0..1000)),
        Err(StoreError::Corrupt { offset: 0, .. })
    ));
    assert!(matches!(
        store.read_shard(&cid),
        Err(StoreError::Corrupt { offset: 0, .. })
    ));
    assert!(matches!(
        store.open_outgoing(&cid),
        Err(StoreError::Corrupt { offset: 0, .. })
    ));
    assert_eq!(store.metrics().verification_failures.get(), 1);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    assert_eq!(
        store.list(None, 10).unwrap(),
        (vec![(cid, 400_000, true)], false)
    );
    // Still held: it counts, and the capacity check for it stands.
    assert_eq!((store.stats().used, store.stats().shards), (400_000, 1));
    // Bytes that do not match do not repair it; verified ones do, counters unchanged.
    assert!(matches!(
        store.put_shard(&cid, &bad),
        Err(StoreError::HashMismatch { .. })
    ));
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
    assert_eq!((store.stats().used, store.stats().shards), (400_000, 1));
    assert_eq!(store.read_shard(&cid).unwrap(), data);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Intact(400_000)]);
    assert_eq!(store.metrics().writes.get(), 2);
    // Quarantine outlives a restart.
    store.overwrite_stored(&cid, &bad);
    assert!(store.read_shard(&cid).is_err());
    let store = store.reopen();
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
}

fn a_quarantined_shard_can_be_deleted_and_its_space_is_given_back<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 100_000);
    let (cid, data) = shard(70_000, 14);
    store.put_shard(&cid, &data).unwrap();
    store.overwrite_stored(&cid, &vec![3u8; data.len()]);
    assert!(store.read_shard(&cid).is_err());
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    let (other, other_data) = shard(70_000, 15);
    assert!(matches!(
        store.put_shard(&other, &other_data),
        Err(StoreError::NoSpace { .. })
    ));
    assert!(store.delete_shard(&cid).unwrap());
    assert_eq!((store.stats().used, store.stats().shards), (0, 0));
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Absent]);
    assert_eq!(
        store.put_shard(&other, &other_data).unwrap(),
        PutOutcome::Stored
    );
    // Stored afresh, a deleted shard is not quarantined any more.
    store.delete_shard(&other).unwrap();
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Stored);
    assert_eq!(store.read_shard(&cid).unwrap(), data);
}

fn a_copy_repaired_while_a_reader_held_its_bad_bytes_is_not_quarantined_again<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
    let (cid, data) = shard(300_000, 4);
    store.put_shard(&cid, &data).unwrap();
    store.overwrite_stored(&cid, &vec![0u8; data.len()]);
    assert!(matches!(
        store.read_shard(&cid),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
    // A reader that loaded the bad bytes before the repair reports them only now.
    let _ = store.mark_corrupt(&cid, 0);
    assert_eq!(
        store.has(&[cid]).unwrap(),
        vec![Holding::Intact(data.len() as u64)]
    );
    assert_eq!(store.read_shard(&cid).unwrap(), data);
    // Nor is a shard deleted meanwhile marked (no stray quarantine: it is not found, not
    // corrupt).
    let (gone, gone_data) = shard(50_000, 8);
    store.put_shard(&gone, &gone_data).unwrap();
    assert!(store.delete_shard(&gone).unwrap());
    let _ = store.mark_corrupt(&gone, 0);
    assert!(matches!(
        store.read_shard(&gone),
        Err(StoreError::NotFound { .. })
    ));
    // A copy still bad, or whose outboard alone is bad, is quarantined as before.
    store.overwrite_stored(&cid, &vec![1u8; data.len()]);
    let _ = store.mark_corrupt(&cid, 0);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
    let mut row = (data.len() as u64).to_le_bytes().to_vec();
    row.extend_from_slice(&vec![
        7u8;
        verified::outboard_size(data.len() as u64) as usize
    ]);
    store.overwrite_outboard(&cid, &row);
    let _ = store.mark_corrupt(&cid, 0);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
}

fn a_full_disk_refuses_new_shards_and_says_what_to_do<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = S::fresh(dir.path(), 1 << 30);
    let (held, held_data) = shard(50_000, 3);
    store.put_shard(&held, &held_data).unwrap();
    let available = store.stats().disk_available.expect("the disk is known");
    assert!(available > 0);
    assert_eq!(store.stats().free(), (1 << 30) - 50_000);

    store.fill_disk();
    let (cid, data) = shard(60_000, 9);
    let err = store.put_shard(&cid, &data).unwrap_err();
    match &err {
        StoreError::DiskFull {
            available,
            reserve,
            needed,
            ..
        } => {
            assert_eq!(*needed, 60_000);
            assert_eq!(*reserve, store.stats().disk_reserve);
            assert!(available < &(needed + reserve));
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("the disk holding") && message.contains("storage.disk_reserve"),
        "{message}"
    );
    assert!(matches!(
        store.check_space(1),
        Err(StoreError::DiskFull { .. })
    ));
    assert_eq!(
        store.stats().free(),
        0,
        "a full disk has no room, whatever the capacity"
    );
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Absent]);
    assert_eq!(store.stats().used, 50_000, "a refused write takes no space");
    // What is held is still served, and storing it again costs nothing, so is not refused.
    assert_eq!(store.read_shard(&held).unwrap(), held_data);
    assert_eq!(
        store.put_shard(&held, &held_data).unwrap(),
        PutOutcome::AlreadyHeld
    );

    // A repair rewrites the whole shard, and a manifest is written too: both need room.
    store.overwrite_stored(&held, &vec![0u8; held_data.len()]);
    assert!(matches!(
        store.read_shard(&held),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.put_shard(&held, &held_data),
        Err(StoreError::DiskFull { .. })
    ));
    let d = cairn_chunker::DatasetManifest::new();
    assert!(matches!(
        store.put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[]),
        Err(StoreError::DiskFull { .. })
    ));
    assert!(matches!(
        store.get_manifest(&d.cid()),
        Err(StoreError::NotFound { .. })
    ));

    // Room again: shards are taken and repaired, manifests kept.
    store.free_disk();
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Stored);
    assert_eq!(store.read_shard(&cid).unwrap(), data);
    assert_eq!(
        store.put_shard(&held, &held_data).unwrap(),
        PutOutcome::Repaired
    );
    assert_eq!(store.read_shard(&held).unwrap(), held_data);
    store
        .put_manifest(&d.cid(), ManifestKind::Dataset, &d.to_bytes(), &[])
        .unwrap();
    assert_eq!((store.stats().used, store.stats().shards), (110_000, 2));
}

fn concurrent_writes_and_deletes_keep_the_counters_exact<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
    // 8 threads; every shard is written by two of them at once (one stores it, the other
    // finds it held), and thread t deletes what thread t - 1 wrote first, while it writes.
    let shards: Vec<Vec<(Cid, Vec<u8>)>> = (0..8u8)
        .map(|t| {
            (0..24u8)
                .map(|i| {
                    shard(
                        1000 + 997 * usize::from(i) + 31 * usize::from(t),
                        t * 24 + i + 1,
                    )
                })
                .collect()
        })
        .collect();
    let outcomes: Vec<Vec<PutOutcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (store, shards) = (&store, &shards);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..24 {
                        let (cid, data) = &shards[t][i];
                        out.push(store.put_shard(cid, data).unwrap());
                        let (cid, data) = &shards[(t + 1) % 8][i];
                        out.push(store.put_shard(cid, data).unwrap());
                        if i >= 12 {
                            let (cid, _) = &shards[(t + 7) % 8][i - 12];
                            store.delete_shard(cid).unwrap();
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = outcomes
        .iter()
        .flatten()
        .filter(|o| **o == PutOutcome::Stored)
        .count();
    let held = outcomes
        .iter()
        .flatten()
        .filter(|o| **o == PutOutcome::AlreadyHeld)
        .count();
    // A shard deleted before its second writer came stored twice: never more than that.
    assert!(
        stored >= 8 * 24 && stored + held == 2 * 8 * 24,
        "{stored} + {held}"
    );
    let expect = |store: &S| {
        let mut listed = 0u64;
        let mut count = 0u64;
        for (t, list) in shards.iter().enumerate() {
            for (i, (cid, data)) in list.iter().enumerate() {
                // Deleted, unless a writer came after the delete.
                let deleted = i < 12;
                let present = store.read_shard(cid).is_ok();
                if !deleted {
                    assert!(present, "shard {t}/{i} lost");
                }
                if present {
                    listed += data.len() as u64;
                    count += 1;
                }
            }
        }
        let stats = store.stats();
        assert_eq!((stats.used, stats.shards), (listed, count));
    };
    expect(&store);
    // The counters kept are the sum of every write and delete, in any order.
    let store = store.reopen();
    expect(&store);
}

fn concurrent_writes_never_exceed_the_capacity<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 * 50_000);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u8)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    (0..5u8)
                        .map(|i| {
                            let (cid, data) = shard(50_000, t * 5 + i + 1);
                            store.put_shard(&cid, &data)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let stored = results
        .iter()
        .filter(|r| matches!(r, Ok(PutOutcome::Stored)))
        .count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::NoSpace { .. })))
        .count();
    assert_eq!((stored, full), (10, 30));
    assert_eq!(store.stats().used, 10 * 50_000);
    assert_eq!(store.reopen().stats().used, 10 * 50_000);
}
