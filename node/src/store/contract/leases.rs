//! The contract for leases, what an epoch commits to, raw group reads and quarantine.

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::verified::{self, GROUP_BYTES};
use cairn_proofs::chunk;

use crate::store::testing::shard;
use crate::store::{Committable, PIECE_BYTES, PutOutcome, StoreError};
use cairn_wire::protocol::Holding;

use super::Subject;

contract!(
    leases_keep_the_earliest_start_and_the_latest_end,
    a_lease_goes_with_its_shard_and_survives_a_repair,
    committable_holds_the_shards_due_sorted_and_names_quarantined_ones,
    read_group_returns_exactly_one_groups_bytes_from_its_own_piece,
    quarantine_is_what_a_corrupt_read_does,
);

fn root(cid: &Cid) -> [u8; 32] {
    *cids::digest(cid, Codec::Raw).unwrap().as_bytes()
}

fn leases_keep_the_earliest_start_and_the_latest_end<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard(50_000, 1);
    assert!(matches!(
        store.extend_lease(&cid, 1, 2),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.lease(&cid).unwrap(), None);
    store.put_shard(&cid, &data).unwrap();
    assert_eq!(store.lease(&cid).unwrap(), None, "taken, not leased yet");
    assert_eq!(store.extend_lease(&cid, 10, 20).unwrap(), (10, 20));
    // Inside the lease: nothing changes.
    assert_eq!(store.extend_lease(&cid, 12, 15).unwrap(), (10, 20));
    // An earlier start, a later end, both: each only grows the lease.
    assert_eq!(store.extend_lease(&cid, 5, 18).unwrap(), (5, 20));
    assert_eq!(store.extend_lease(&cid, 11, 30).unwrap(), (5, 30));
    assert_eq!(
        store.extend_lease(&cid, 0, u64::MAX).unwrap(),
        (0, u64::MAX)
    );
    assert!(matches!(
        store.extend_lease(&cid, 7, 6),
        Err(StoreError::BadLease {
            start: 7,
            end: 6,
            ..
        })
    ));
    assert_eq!(store.lease(&cid).unwrap(), Some((0, u64::MAX)));
    // Leases are durable.
    let store = store.reopen();
    assert_eq!(store.lease(&cid).unwrap(), Some((0, u64::MAX)));
    // A one-epoch lease is a lease.
    let (other, other_data) = shard(1, 2);
    store.put_shard(&other, &other_data).unwrap();
    assert_eq!(store.extend_lease(&other, 9, 9).unwrap(), (9, 9));
}

fn a_lease_goes_with_its_shard_and_survives_a_repair<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard(300_000, 3);
    store.put_shard(&cid, &data).unwrap();
    store.extend_lease(&cid, 3, 8).unwrap();
    // Bitrot, found by a read: quarantined, still leased (it is declared lost, not forgotten).
    let mut bad = data.clone();
    bad[200_000] ^= 1;
    store.overwrite_stored(&cid, &bad);
    assert!(store.read_shard(&cid).is_err());
    assert_eq!(store.lease(&cid).unwrap(), Some((3, 8)));
    // Repaired: the lease is kept, and extended by the next store.
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
    assert_eq!(store.lease(&cid).unwrap(), Some((3, 8)));
    assert_eq!(store.extend_lease(&cid, 4, 9).unwrap(), (3, 9));
    // Deleted: the lease is gone; stored again, it is leased afresh.
    assert!(store.delete_shard(&cid).unwrap());
    assert_eq!(store.lease(&cid).unwrap(), None);
    assert!(store.committable(5).unwrap().entries.is_empty());
    store.put_shard(&cid, &data).unwrap();
    assert_eq!(store.lease(&cid).unwrap(), None);
    assert_eq!(store.extend_lease(&cid, 40, 50).unwrap(), (40, 50));
    let store = store.reopen();
    assert_eq!(store.lease(&cid).unwrap(), Some((40, 50)));
}

fn committable_holds_the_shards_due_sorted_and_names_quarantined_ones<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let mut shards: Vec<(Cid, Vec<u8>)> = (0..6u8)
        .map(|i| shard(10_000 + 40_000 * usize::from(i), i + 10))
        .collect();
    for (cid, data) in &shards {
        store.put_shard(cid, data).unwrap();
    }
    let [a, b, c, d, e, f] = [0, 1, 2, 3, 4, 5].map(|i| shards[i].0);
    store.extend_lease(&a, 10, 20).unwrap();
    store.extend_lease(&b, 15, 30).unwrap();
    store.extend_lease(&c, 10, 20).unwrap();
    store.extend_lease(&d, 10, 20).unwrap();
    store.extend_lease(&e, 10, 20).unwrap();
    // `f` is held but never leased: promised to no one, committed to never.
    let _ = f;
    // `d` is deleted; `e` goes bad and is quarantined.
    assert!(store.delete_shard(&d).unwrap());
    let mut bad = shards[4].1.clone();
    bad[7] ^= 0x40;
    store.overwrite_stored(&e, &bad);
    assert!(matches!(
        store.read_shard(&e),
        Err(StoreError::Corrupt { .. })
    ));
    let size = |cid: &Cid| shards.iter().find(|(c, _)| c == cid).unwrap().1.len() as u64;
    let expect = |held: &[Cid], lost: &[Cid]| {
        let mut entries: Vec<([u8; 32], u64)> = held.iter().map(|c| (root(c), size(c))).collect();
        entries.sort();
        let mut quarantined: Vec<[u8; 32]> = lost.iter().map(root).collect();
        quarantined.sort();
        Committable {
            entries,
            quarantined,
        }
    };
    // Taken in epoch 10: not due in 10; due from 11 through 20; not in 21.
    assert_eq!(store.committable(10).unwrap(), expect(&[], &[]));
    assert_eq!(store.committable(11).unwrap(), expect(&[a, c], &[e]));
    assert_eq!(store.committable(16).unwrap(), expect(&[a, b, c], &[e]));
    assert_eq!(store.committable(20).unwrap(), expect(&[a, b, c], &[e]));
    assert_eq!(store.committable(21).unwrap(), expect(&[b], &[]));
    assert_eq!(store.committable(31).unwrap(), expect(&[], &[]));
    let due = store.committable(16).unwrap();
    assert!(
        due.entries.windows(2).all(|w| w[0].0 < w[1].0),
        "sorted by root"
    );
    // Repaired, `e` is committed again; the same after a restart.
    store.put_shard(&e, &shards[4].1).unwrap();
    let store = store.reopen();
    assert_eq!(store.committable(11).unwrap(), expect(&[a, c, e], &[]));
    shards.clear();
}

fn read_group_returns_exactly_one_groups_bytes_from_its_own_piece<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    // Three pieces, the last holding two full groups and a short one.
    let len = 2 * PIECE_BYTES + 2 * GROUP_BYTES + 7_000;
    let (cid, data) = shard(len, 5);
    assert!(matches!(
        store.read_group(&cid, 0),
        Err(StoreError::NotFound { .. })
    ));
    store.put_shard(&cid, &data).unwrap();
    let (_, outboard) = verified::outboard(&data);
    let groups = len.div_ceil(GROUP_BYTES) as u64;
    assert_eq!(groups, 19);
    for group in [0, 7, 8, 12, 16, 17, 18] {
        let (size, bytes, ob) = store.read_group(&cid, group).unwrap();
        let start = group as usize * GROUP_BYTES;
        let want = &data[start..(start + GROUP_BYTES).min(len)];
        assert_eq!(size, len as u64);
        assert_eq!(bytes, want, "group {group}");
        assert_eq!(ob, outboard);
        // What a storage proof is built from: it proves a chunk of the group against the CID.
        let index = group * 16 + 3;
        let proof = chunk::prove(size, index, &bytes, &ob).unwrap();
        chunk::verify(&root(&cid), size, index, &proof).unwrap();
    }
    assert_eq!(store.read_group(&cid, 18).unwrap().1.len(), 7_000);
    assert!(matches!(
        store.read_group(&cid, 19),
        Err(StoreError::NoSuchGroup {
            group: 19,
            groups: 19,
            ..
        })
    ));
    // Only the group's own piece is read: with the first piece lost, groups of the others are
    // still read (and the shard is not quarantined for it)...
    store.lose_piece(&cid, 0);
    let start = 17 * GROUP_BYTES;
    assert_eq!(
        store.read_group(&cid, 17).unwrap().1,
        &data[start..start + GROUP_BYTES]
    );
    assert_eq!(store.read_group(&cid, 8).unwrap().1.len(), GROUP_BYTES);
    assert_eq!(
        store.has(&[cid]).unwrap(),
        vec![Holding::Intact(len as u64)]
    );
    // ...and a group in the lost piece quarantines the shard, as any read of it would.
    assert!(matches!(
        store.read_group(&cid, 3),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    assert!(matches!(
        store.read_group(&cid, 17),
        Err(StoreError::Corrupt { .. })
    ));
}

fn quarantine_is_what_a_corrupt_read_does<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard(200_000, 6);
    assert!(matches!(
        store.quarantine(&cid, 0),
        Err(StoreError::NotFound { .. })
    ));
    store.put_shard(&cid, &data).unwrap();
    store.extend_lease(&cid, 1, 9).unwrap();
    // A caller whose proof failed on a shard that verifies whole (it was repaired, or the
    // caller erred): nothing is quarantined.
    store.quarantine(&cid, 0).unwrap();
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Intact(200_000)]);
    // Bitrot in the second piece: read_group hands it out unverified, the caller's proof
    // fails, and it quarantines the shard.
    let mut bad = data.clone();
    bad[150_000] ^= 1;
    store.overwrite_stored(&cid, &bad);
    let (_, group, outboard) = store.read_group(&cid, 9).unwrap();
    assert_eq!(group, &bad[9 * GROUP_BYTES..10 * GROUP_BYTES]);
    let index = 150_000 / 1024;
    let proof = chunk::prove(200_000, index, &group, &outboard).unwrap();
    assert!(chunk::verify(&root(&cid), 200_000, index, &proof).is_err());
    let failures = store.metrics().verification_failures.get();
    store.quarantine(&cid, 150_000).unwrap();
    assert_eq!(store.metrics().verification_failures.get(), failures + 1);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    assert!(matches!(
        store.read_group(&cid, 0),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.read_range(&cid, Some(0..10)),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.committable(5).unwrap().quarantined, vec![root(&cid)]);
    // Stored again, it is served and committed again.
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
    assert_eq!(
        store.committable(5).unwrap().entries,
        vec![(root(&cid), 200_000)]
    );
}
