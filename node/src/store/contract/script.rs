//! The two stores side by side: one long pseudo-random script, answered alike.

use cairn_chunker::cids::Cid;

use crate::store::layout::piece_count;
use crate::store::testing::{drain, shard};
use crate::store::{MemStore, Store};
use cairn_wire::protocol::Holding;

use super::Subject;

/// Runs one pseudo-random script of writes, deletes, faults and reads against `store`: what
/// each step answered, as text.
fn script<S: Subject>(store: &S, seed: u64, steps: usize) -> Vec<String> {
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let pool: Vec<(Cid, Vec<u8>)> = (0..12u8)
        .map(|i| shard(1 + 61_111 * usize::from(i), i + 1))
        .collect();
    let mut cursor = None;
    let mut out = Vec::new();
    for step in 0..steps {
        let (cid, data) = &pool[next(pool.len() as u64) as usize];
        let size = data.len() as u64;
        let answer = match next(15) {
            0 => format!("put {:?}", store.put_shard(cid, data)),
            1 => {
                let mut bad = data.clone();
                bad[next(size) as usize] ^= 0x20;
                format!("put other bytes {:?}", store.put_shard(cid, &bad))
            }
            2 => format!("delete {:?}", store.delete_shard(cid)),
            3 => {
                let mut bad = data.clone();
                let at = next(size) as usize;
                bad[at] ^= 1 << next(8);
                if store.has(&[*cid]).unwrap()[0] != Holding::Absent {
                    store.overwrite_stored(cid, &bad);
                }
                "bitrot".to_string()
            }
            4 => {
                let a = next(size + 1);
                let b = next(size + 2);
                format!("range {a}..{b} {:?}", store.read_range(cid, Some(a..b)))
            }
            5 => format!("shard {:?}", store.read_shard(cid).map(|d| d == *data)),
            6 => {
                let (got, end) = drain(store, cid);
                format!("send {} {:?} {end:?}", got.len(), got == data[..got.len()])
            }
            7 => {
                let cids: Vec<Cid> = pool.iter().map(|(c, _)| *c).collect();
                format!("has {:?}", store.has(&cids))
            }
            8 => {
                let after = (next(3) > 0).then_some(*cid);
                format!("list {:?}", store.list(after.as_ref(), next(6) as usize))
            }
            9 => {
                let report = store.scrub_step(cursor.as_ref(), next(400_000));
                if let Ok(r) = &report {
                    cursor = r.next;
                }
                format!("scrub {report:?}")
            }
            10 => format!("put again {:?}", store.put_shard(cid, data)),
            12 => {
                let start = next(20);
                let end = start + next(20);
                format!(
                    "lease {start}..={end} {:?} {:?}",
                    store.extend_lease(cid, start, end),
                    store.lease(cid)
                )
            }
            13 => format!("committable {:?}", store.committable(next(30))),
            14 => {
                let group = next(size.div_ceil(16_384) + 1);
                let read = store.read_group(cid, group);
                format!(
                    "group {group} {:?}",
                    read.map(|(n, g, o)| (n, g.len(), o.len()))
                )
            }
            _ => {
                let piece = next(piece_count(size) as u64) as usize;
                if store.has(&[*cid]).unwrap()[0] != Holding::Absent {
                    store.lose_piece(cid, piece);
                }
                "lose".to_string()
            }
        };
        let s = store.stats();
        out.push(format!(
            "{step}: {answer} -> {} shards, {} bytes",
            s.shards, s.used
        ));
    }
    let m = store.metrics();
    out.push(format!(
        "reads {}, writes {}, failures {}, rejected {}, scrubbed {}",
        m.reads.get(),
        m.writes.get(),
        m.verification_failures.get(),
        m.rejected_writes.get(),
        m.scrubbed_bytes.get()
    ));
    out
}

/// Beyond the cases above: the two stores, given the same long script, answer every step
/// alike.
#[test]
fn both_stores_answer_a_long_script_alike() {
    for seed in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let rocks = Store::fresh(dir.path(), 2 << 20);
        let memory = MemStore::fresh(dir.path(), 2 << 20);
        let (a, b) = (script(&rocks, seed, 400), script(&memory, seed, 400));
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a, b, "seed {seed}: RocksDB, then memory");
        }
        assert_eq!(a.len(), b.len());
    }
}
