//! The contract for reading in pieces: range reads, whole shards sent a piece at a time,
//! damaged outboards, listings and the scrub.

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::verified::{self, ProofError};

use crate::store::layout::{PIECE_BYTES, piece_count};
use crate::store::testing::{drain, shard};
use crate::store::{PutOutcome, StoreError};
use cairn_wire::protocol::Holding;

use super::Subject;

contract!(
    a_range_read_loads_only_the_pieces_it_needs,
    outgoing_shards_hand_out_verified_pieces_only,
    a_damaged_outboard_is_rebuilt_from_intact_bytes,
    a_piece_lost_mid_shard_cuts_the_outgoing_shard_off_there,
    a_shard_deleted_while_being_sent_is_not_found_not_corrupt,
    list_pages_in_order,
    the_scrub_finds_bitrot_a_step_at_a_time,
);

fn a_range_read_loads_only_the_pieces_it_needs<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard((1 << 20) + 5000, 11);
    store.put_shard(&cid, &data).unwrap();
    assert_eq!(piece_count(data.len() as u64), 9);
    // Lose piece 5 (bytes 640 KiB..768 KiB): reads elsewhere never notice...
    store.lose_piece(&cid, 5);
    let root = cids::digest(&cid, Codec::Raw).unwrap();
    let size = data.len() as u64;
    let p = PIECE_BYTES as u64;
    for range in [
        0..100,
        p - 10..p + 10,
        4 * p..5 * p,
        6 * p + 1..size,
        size - 1..size,
    ] {
        let (got_size, proof) = store.read_range(&cid, Some(range.clone())).unwrap();
        assert_eq!(got_size, size);
        let got = verified::verify_range(&root, size, range.clone(), &proof).unwrap();
        assert_eq!(
            got,
            &data[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    assert_eq!(store.metrics().verification_failures.get(), 0);
    // ...a read that needs it finds it gone, and quarantines the shard.
    let err = store
        .read_range(&cid, Some(5 * p - 1..5 * p + 1))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { offset, .. } if offset == 5 * p),
        "{err}"
    );
    assert_eq!(store.metrics().verification_failures.get(), 1);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    // A bad range is refused as such, and does not quarantine anything.
    let (cid2, data2) = shard(40_000, 13);
    store.put_shard(&cid2, &data2).unwrap();
    #[allow(clippy::reversed_empty_ranges)] // bad on purpose
    let bad_ranges = [0..0, 10..5, 0..40_001, 40_000..40_001];
    for bad in bad_ranges {
        assert!(
            matches!(
                store.read_range(&cid2, Some(bad.clone())),
                Err(StoreError::Range(ProofError::BadRange { .. }))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(store.has(&[cid2]).unwrap(), vec![Holding::Intact(40_000)]);
}

fn outgoing_shards_hand_out_verified_pieces_only<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    for len in [1usize, 16 * 1024, 16 * 1024 + 1, 1 << 20] {
        let (cid, data) = shard(len, 5);
        store.put_shard(&cid, &data).unwrap();
        let (got, end) = drain(&store, &cid);
        end.unwrap();
        assert_eq!(got, data, "{len} bytes");
        let outgoing = store.open_outgoing(&cid).unwrap();
        assert_eq!(outgoing.size(), len as u64);
        assert_eq!(outgoing.outboard().as_ref(), verified::outboard(&data).1);
    }
    assert_eq!(store.metrics().reads.get(), 4);

    // A byte flipped inside the stored shard: the groups before it come out, nothing after.
    let (cid, data) = shard(1 << 20, 7);
    store.put_shard(&cid, &data).unwrap();
    let mut bad = data.clone();
    bad[300_000] ^= 1;
    store.overwrite_stored(&cid, &bad);
    let (got, end) = drain(&store, &cid);
    let group = 300_000 / verified::GROUP_BYTES * verified::GROUP_BYTES;
    assert!(
        matches!(end, Err(StoreError::Corrupt { offset, .. }) if offset == group as u64),
        "{end:?}"
    );
    assert!(
        !got.is_empty() && got.len() <= group,
        "{} bytes out",
        got.len()
    );
    assert_eq!(got, data[..got.len()]);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Corrupt]);
    assert_eq!(store.metrics().verification_failures.get(), 1);
    assert!(matches!(
        store.open_outgoing(&cid),
        Err(StoreError::Corrupt { .. })
    ));
}

fn a_damaged_outboard_is_rebuilt_from_intact_bytes<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard(1 << 20, 9);
    store.put_shard(&cid, &data).unwrap();
    let len = verified::outboard_size(1 << 20) as usize;
    // Right size, wrong hashes; a wrong size; a row too short to hold a size.
    let mut wrong_hashes = (1u64 << 20).to_le_bytes().to_vec();
    wrong_hashes.resize(8 + len, 0xee);
    let mut wrong_size = (1u64 << 19).to_le_bytes().to_vec();
    wrong_size.resize(8 + len, 0);
    for damaged in [wrong_hashes, wrong_size, vec![1, 2, 3]] {
        store.overwrite_outboard(&cid, &damaged);
        let (got, end) = drain(&store, &cid);
        end.unwrap();
        assert_eq!(got, data);
        let outgoing = store.open_outgoing(&cid).unwrap();
        assert_eq!(outgoing.outboard().as_ref(), verified::outboard(&data).1);
    }
    assert_eq!(store.metrics().verification_failures.get(), 0);
    // Damaged bytes as well: nothing to rebuild from, so the shard is quarantined.
    let mut bad = data.clone();
    bad[5] ^= 1;
    store.overwrite_stored(&cid, &bad);
    let (got, end) = drain(&store, &cid);
    assert!(got.is_empty());
    assert!(matches!(end, Err(StoreError::Corrupt { .. })), "{end:?}");
    assert_eq!(store.metrics().verification_failures.get(), 1);
}

fn a_piece_lost_mid_shard_cuts_the_outgoing_shard_off_there<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard(1 << 20, 17);
    store.put_shard(&cid, &data).unwrap();
    store.lose_piece(&cid, 3);
    let (got, end) = drain(&store, &cid);
    assert!(
        matches!(end, Err(StoreError::Corrupt { offset, .. }) if offset == 3 * PIECE_BYTES as u64),
        "{end:?}"
    );
    assert_eq!(got, data[..3 * PIECE_BYTES]);
    assert!(matches!(
        store.read_shard(&cid),
        Err(StoreError::Corrupt { .. })
    ));
    // Stored again, it is whole again.
    assert_eq!(store.put_shard(&cid, &data).unwrap(), PutOutcome::Repaired);
    assert_eq!(store.read_shard(&cid).unwrap(), data);
}

fn a_shard_deleted_while_being_sent_is_not_found_not_corrupt<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 10 << 20);
    let (cid, data) = shard(1 << 20, 19);
    store.put_shard(&cid, &data).unwrap();
    let mut outgoing = store.open_outgoing(&cid).unwrap();
    let first = store
        .next_piece(&mut outgoing, PIECE_BYTES)
        .unwrap()
        .unwrap();
    assert_eq!(first, data[..PIECE_BYTES]);
    assert!(store.delete_shard(&cid).unwrap());
    assert!(matches!(
        store.next_piece(&mut outgoing, PIECE_BYTES),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.metrics().verification_failures.get(), 0);
    assert_eq!(store.has(&[cid]).unwrap(), vec![Holding::Absent]);
}

fn list_pages_in_order<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
    assert_eq!(store.list(None, 10).unwrap(), (vec![], false));
    let mut all: Vec<Cid> = (1..=25u8)
        .map(|i| {
            let (cid, data) = shard(5000 + i as usize, i);
            store.put_shard(&cid, &data).unwrap();
            cid
        })
        .collect();
    all.sort_by_key(|c| c.to_bytes());
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = store.list(after.as_ref(), 10).unwrap();
        assert!(page.len() <= 10);
        for (cid, len, corrupt) in &page {
            assert_eq!(Holding::Intact(*len), store.has(&[*cid]).unwrap()[0]);
            assert!(!corrupt);
        }
        seen.extend(page.iter().map(|(c, _, _)| *c));
        after = page.last().map(|(c, _, _)| *c);
        if !more {
            break;
        }
    }
    assert_eq!(seen, all);
    // A full page with nothing after it says so.
    let (page, more) = store.list(Some(&all[4]), 20).unwrap();
    assert_eq!((page.len(), more), (20, false));
}

fn the_scrub_finds_bitrot_a_step_at_a_time<S: Subject>() {
    let dir = tempfile::tempdir().unwrap();
    let store = S::fresh(dir.path(), 1 << 30);
    let empty = store.scrub_step(None, u64::MAX).unwrap();
    assert_eq!((empty.checked, empty.bytes, empty.next), (0, 0, None));
    let mut held: Vec<(Cid, Vec<u8>)> = (1..=6u8).map(|i| shard(100_000, i)).collect();
    for (cid, data) in &held {
        store.put_shard(cid, data).unwrap();
    }
    held.sort_by_key(|(c, _)| c.to_bytes());
    // Bitrot in one shard, a lost piece in another, a damaged outboard (intact bytes) in a
    // third: no read comes, the scrub finds all three.
    let (rotten, rotten_data) = &held[2];
    let mut bad = rotten_data.clone();
    bad[99_999] ^= 0x80;
    store.overwrite_stored(rotten, &bad);
    let (holed, _) = &held[4];
    store.lose_piece(holed, 0);
    let (misdescribed, _) = &held[0];
    let mut row = 100_000u64.to_le_bytes().to_vec();
    row.resize(8 + verified::outboard_size(100_000) as usize, 0x5a);
    store.overwrite_outboard(misdescribed, &row);

    // About two shards per step: a pass takes three steps, and says where to go on.
    let mut cursor = None;
    let mut steps = Vec::new();
    loop {
        let report = store.scrub_step(cursor.as_ref(), 200_000).unwrap();
        assert!(report.unreadable.is_empty(), "{report:?}");
        cursor = report.next;
        steps.push(report);
        if cursor.is_none() {
            break;
        }
        assert!(steps.len() < 10, "the scrub does not end");
    }
    let checked: u64 = steps.iter().map(|r| r.checked).sum();
    let corrupt: Vec<Cid> = steps.iter().flat_map(|r| r.corrupt.clone()).collect();
    assert_eq!(checked, 6);
    assert_eq!(corrupt, vec![*misdescribed, *rotten, *holed]);
    assert_eq!(steps[0].next, Some(held[1].0));
    assert_eq!(store.metrics().verification_failures.get(), 3);
    let bytes: u64 = steps.iter().map(|r| r.bytes).sum();
    assert_eq!(store.metrics().scrubbed_bytes.get(), bytes);
    assert_eq!(bytes, 500_000, "a shard missing a piece is not read whole");
    assert_eq!(
        store
            .has(&[*misdescribed, *rotten, *holed, held[1].0])
            .unwrap(),
        vec![
            Holding::Corrupt,
            Holding::Corrupt,
            Holding::Corrupt,
            Holding::Intact(100_000)
        ]
    );
    // The next pass passes over what is quarantined already.
    let report = store.scrub_step(None, u64::MAX).unwrap();
    assert_eq!((report.checked, report.next), (3, None));
    assert!(report.corrupt.is_empty());
    assert_eq!(store.metrics().verification_failures.get(), 3);
    // Repaired, it is checked again.
    store.put_shard(rotten, rotten_data).unwrap();
    let report = store.scrub_step(None, u64::MAX).unwrap();
    assert_eq!((report.checked, report.bytes), (4, 400_000));
}
