//! Giving the disk space of collected shards back: a store's `shards` blob files shrink once
//! garbage collection deleted shards and `Store::reclaim` ran.
//!
//! The measurement (ignored by default: it writes 200 MiB) prints sizes and times:
//!
//!     cargo test --release -p cairn-node --test reclaim -- --ignored --nocapture
//!
//! `CAIRN_RECLAIM_MIB` (default 200) MiB of 1 MiB shards, `CAIRN_RECLAIM_KEEP` (default 0)
//! percent of them renewed by an owner (kept) while the rest expire.

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_chunker::cids;
use cairn_node::store::{Store, StoreConfig, StoreMetrics};
use cairn_proofs::epoch::Epochs;
use cairn_proofs::lease::LeaseStatement;

const MIB: u64 = 1 << 20;

fn epochs() -> Epochs {
    Epochs::new(Duration::from_secs(1)).unwrap()
}

fn open(dir: &Path) -> Store {
    let config = StoreConfig {
        capacity: 64 << 30,
        sync_writes: false,
        rocksdb_checksums: false,
        disk_reserve: 0,
    };
    Store::open(dir, config, StoreMetrics::default()).unwrap()
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// What one run saw: directory and blob bytes once the shards are on disk, and after
/// collecting and reclaiming; how many shard bytes were collected; the times taken.
#[derive(Debug)]
struct Run {
    dir_before: u64,
    blobs_before: u64,
    collected: u64,
    dir_after: u64,
    blobs_after: u64,
    collect: Duration,
    reclaim: Duration,
    /// Bytes this process wrote to disk while reclaiming (compaction rewrites included).
    reclaim_written: u64,
}

/// Bytes this process has caused to be written to storage (`/proc/self/io`), 0 if unknown.
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Stores `count` shards of `size` bytes held through epoch 10, an owner renewing `keep`
/// percent of them, spread evenly, through epoch 1,000; settles them on disk,
/// collects at epoch 100 and reclaims.
fn run(dir: &Path, count: u64, size: usize, keep: u64) -> Run {
    let store = open(dir);
    let owner = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let object = cids::dag_cbor(b"an object").to_bytes();
    let renewal = LeaseStatement::sign(&owner, &object, 1_000, 1_000);
    for i in 0..count {
        let data = cairn_testkit::data::bytes(size, 1_000 + i);
        let cid = cids::raw(&data);
        store.put_shard(&cid, &data).unwrap();
        store.hold_upload(&cid, 1, 10, epochs()).unwrap();
        // Spread evenly over the writes, so over every blob file.
        if i * keep / 100 != (i + 1) * keep / 100 {
            store.apply_statement(&cid, &renewal, epochs()).unwrap();
        }
    }
    // Settled: flushed and compacted, as a store that has run a while is.
    store.reclaim().unwrap();
    let (dir_before, blobs_before) = (dir_bytes(dir), blob_bytes(&store));

    let started = Instant::now();
    let (mut collected, mut from) = (0, None::<Vec<u8>>);
    loop {
        let c = store
            .collect_shards(100, 2, epochs(), 1_000, from.as_deref())
            .unwrap();
        collected += c.bytes;
        match c.next {
            Some(next) if c.more => from = Some(next),
            _ => break,
        }
    }
    let collect = started.elapsed();
    let (started, before) = (Instant::now(), written());
    let (_, blobs_after) = store.reclaim().unwrap();
    let reclaim = started.elapsed();
    let reclaim_written = written() - before;
    Run {
        dir_before,
        blobs_before,
        collected,
        dir_after: dir_bytes(dir),
        blobs_after,
        collect,
        reclaim,
        reclaim_written,
    }
}

/// `shards` blob bytes, as `reclaim` reports them (it flushes first: a no-op when settled).
fn blob_bytes(store: &Store) -> u64 {
    store.reclaim().unwrap().1
}

#[test]
fn reclaim_gives_back_the_blob_space_of_collected_shards() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), 24, MIB as usize, 0);
    assert_eq!(r.collected, 24 * MIB, "{r:?}");
    assert!(r.blobs_before >= 24 * MIB, "{r:?}");
    assert!(r.blobs_after < MIB, "the blob files stayed: {r:?}");
    // Nothing of the shards is left on disk, in blob files or the write-ahead log.
    assert!(r.dir_after < 4 * MIB, "{r:?}");
}

#[test]
fn reclaim_moves_live_shards_only_when_as_many_bytes_are_dead() {
    // A quarter live, spread over every blob file: moved out, the files dropped.
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), 24, MIB as usize, 25);
    assert_eq!(r.collected, 18 * MIB, "{r:?}");
    assert!(r.blobs_after < 7 * MIB, "the dead bytes stayed: {r:?}");
    // Three quarters live: nothing is moved (the files stay, a quarter dead).
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), 24, MIB as usize, 75);
    assert_eq!(r.collected, 6 * MIB, "{r:?}");
    assert_eq!(
        r.blobs_after, r.blobs_before,
        "live shards were moved: {r:?}"
    );
}

#[test]
#[ignore = "a measurement: writes CAIRN_RECLAIM_MIB (200) MiB"]
fn measure_reclaim() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (mib, keep) = (env("CAIRN_RECLAIM_MIB", 200), env("CAIRN_RECLAIM_KEEP", 0));
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), mib, MIB as usize, keep);
    if std::env::var("CAIRN_RECLAIM_LIST").is_ok() {
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            println!(
                "{:>12} {}",
                e.metadata().unwrap().len(),
                e.file_name().to_string_lossy()
            );
        }
    }
    println!(
        "{mib} MiB of 1 MiB shards, {keep}% kept: collected {} MiB in {:?}; reclaim {:?} writing {:.1} MiB; \
         directory {:.1} -> {:.1} MiB; blob files {:.1} -> {:.1} MiB",
        r.collected / MIB,
        r.collect,
        r.reclaim,
        r.reclaim_written as f64 / MIB as f64,
        r.dir_before as f64 / MIB as f64,
        r.dir_after as f64 / MIB as f64,
        r.blobs_before as f64 / MIB as f64,
        r.blobs_after as f64 / MIB as f64,
    );
}
