//! The scrub: every stored byte re-verified, a step at a time.

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::verified;

use super::layout::{join, piece_count};
use super::{Store, StoreError};

/// Result of one scrub step.
#[derive(Debug, Default, Clone)]
pub struct ScrubReport {
    /// Shards checked.
    pub checked: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Shards found corrupt in this step.
    pub corrupt: Vec<Cid>,
    /// Shards that could not be checked (a read error other than corruption, such as an I/O
    /// error): logged and passed over, so one bad row does not stop the scrub for good.
    pub unreadable: Vec<(Cid, String)>,
    /// Where to continue; `None` when the pass reached the end.
    pub next: Option<Cid>,
}

impl Store {
    /// Verifies shards from `cursor` on, until about `max_bytes` were read.
    pub fn scrub_step(
        &self,
        cursor: Option<&Cid>,
        max_bytes: u64,
    ) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let (batch, more) = self.list(cursor, 64)?;
        let mut last = None;
        for (cid, size, corrupt) in batch {
            last = Some(cid);
            if corrupt {
                continue;
            }
            let key = cid.to_bytes();
            let verdict = (|| {
                let root = cids::digest(&cid, Codec::Raw)?;
                Ok::<_, StoreError>(match self.load_pieces(&key, size, 0..piece_count(size))? {
                    Ok(pieces) => {
                        report.bytes += size;
                        let (actual, outboard) = verified::outboard(&join(&pieces));
                        actual == root && self.outboard(&key, &cid)?.1 == outboard
                    }
                    Err(_) => false,
                })
            })();
            report.checked += 1;
            match verdict {
                Ok(true) => {}
                Ok(false) => {
                    let _ = self.mark_corrupt(&cid, 0);
                    report.corrupt.push(cid);
                }
                Err(e) => {
                    // Not proof of corruption (an I/O error may pass), so not quarantined; the
                    // next pass tries again.
                    tracing::error!(%cid, "scrub could not check a shard: {e}");
                    report.unreadable.push((cid, e.to_string()));
                }
            }
            if report.bytes >= max_bytes {
                break;
            }
        }
        self.metrics.scrubbed_bytes.inc_by(report.bytes);
        let finished_batch = last.is_none() || (!more && report.bytes < max_bytes);
        report.next = if finished_batch { None } else { last };
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::*;
    use crate::store::testing::*;

    #[test]
    fn a_shard_that_cannot_be_checked_does_not_stop_the_scrub() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 30);
        let mut held = Vec::new();
        for seed in 1..=3 {
            let (cid, data) = shard(300_000, seed);
            store.put_shard(&cid, &data).unwrap();
            held.push(cid);
        }
        // Two damaged rows: one whose key is no Cairn CID at all, sorted before every shard,
        // and one the scrub cannot check (a manifest CID among shards), as a row whose read
        // fails with an I/O error would be.
        let mut row = 10u64.to_le_bytes().to_vec();
        row.extend_from_slice(&[0; 64]);
        let outboards = store.cf(CF_OUTBOARDS).unwrap();
        let alien = Cid::new_v1(0x50, *cids::raw(b"alien").hash());
        assert!(alien.to_bytes() < held.iter().map(Cid::to_bytes).min().unwrap());
        let odd = cids::dag_cbor(b"odd");
        for key in [alien, odd] {
            store.db.put_cf(outboards, key.to_bytes(), &row).unwrap();
        }

        let report = store.scrub_step(None, u64::MAX).unwrap();
        assert_eq!(report.unreadable.len(), 1, "{report:?}");
        assert_eq!(report.unreadable[0].0, odd);
        assert_eq!(report.checked, 4);
        assert_eq!(report.bytes, 3 * 300_000, "every shard was checked");
        assert!(report.corrupt.is_empty());
        assert_eq!(report.next, None, "the pass reached the end");
        let (listed, more) = store.list(None, 100).unwrap();
        assert!(!more);
        assert_eq!(listed.len(), 4, "the alien row is skipped: {listed:?}");
    }
}
