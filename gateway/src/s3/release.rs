//! The release sweep: ends the gateway's hold on what no catalog record references any more.
//!
//! A change that drops a reference notes the CID in the catalog (`catalog::unreferenced`), in
//! the same atomic write. A sweep reads a page of the notes (the next sweep goes on after it,
//! so notes whose release keeps failing cannot hold up the rest), reads the catalog once for
//! which of their CIDs a record still references (the same bytes may live under another key,
//! or be written again meanwhile), releases the rest and forgets each note once it is dealt
//! with: released, referenced again, or older than the lease term (the gateway's last renewal
//! of it has ended by itself, so the nodes collect it anyway). A CID whose release no keeper
//! took stays noted for the next sweep. After a restart no sweep runs until the newest catalog
//! export is known (its pieces may be an older export's too).
//!
//! Nodes keep an owner's later signed statement, so a release must not be signed after the
//! renewal of a write that references the CID again; nor may the renewal loop, which read the
//! catalog before the release, sign after it (it skips what was released since it read). Writes announce their renewals
//! ([`crate::leases::Leases::renewing_after_write`]): a sweep leaves a CID whose renewal is
//! under way for the next sweep, and renews once more, after its releases, any CID whose
//! renewal began while it ran (a record that landed after the sweep read the catalog).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cairn_chunker::Cid;

use super::{Gateway, blocking, now_ms};
use crate::catalog::Note;
use crate::error::Error;
use crate::leases::LeaseError;

/// Notes a sweep deals with at most (the rest wait for the next).
const SWEEP_BATCH: usize = 10_000;

/// What a release sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// CIDs released (some keeper took the release).
    pub released: usize,
    /// Noted CIDs that a record references again (or still: the same bytes under another key).
    pub referenced: usize,
    /// Noted CIDs no longer worth releasing: the gateway takes no leases, the network has no
    /// epochs, or the note is older than a lease term.
    pub dropped: usize,
    /// CIDs whose release no keeper took (kept for the next sweep).
    pub failed: usize,
    /// CIDs left for the next sweep because a write's renewal of them was under way.
    pub deferred: usize,
    /// Notes left after the sweep.
    pub pending: u64,
}

impl Gateway {
    /// Releases what the catalog stopped referencing (see the module docs): one page of the
    /// catalog's notes per call, going on from where the last call stopped.
    pub async fn release_unreferenced(&self) -> Result<Swept, Error> {
        let mut swept = Swept::default();
        // An export after a restart is known only once looked up: until then a note of an old
        // export's piece (shared with the newest one) must wait.
        if self.leases.settings().enabled() && !self.know_latest_export().await {
            return Ok(swept);
        }
        let (c, from) = (self.catalog.clone(), self.leases.release_cursor());
        let (notes, next) =
            blocking(move || Ok(c.unreferenced(from.as_deref(), SWEEP_BATCH)?)).await?;
        self.leases.set_release_cursor(next);
        if !notes.is_empty() {
            self.leases.watch();
            let released = self.sweep(&notes, &mut swept).await;
            let touched = self.leases.unwatch();
            let again: Vec<Cid> = released?
                .into_iter()
                .filter(|c| touched.contains(c))
                .collect();
            if !again.is_empty() {
                tracing::info!(
                    objects = again.len(),
                    "objects written again while being released are renewed once more"
                );
                // Due at the next renewal pass too, should this renewal fail.
                self.leases.forget(&again);
                self.renew_leases(again, true, None).await;
            }
        }
        let c = self.catalog.clone();
        swept.pending = blocking(move || Ok(c.unreferenced_count()?)).await?;
        self.metrics
            .release_pending
            .set(i64::try_from(swept.pending).unwrap_or(i64::MAX));
        Ok(swept)
    }

    /// One sweep over `notes`; returns the CIDs released.
    async fn sweep(&self, notes: &[Note], swept: &mut Swept) -> Result<Vec<Cid>, Error> {
        let settings = self.leases.settings();
        // Each CID once, with its notes' rows and its newest note's time.
        let mut by_cid: HashMap<Cid, (Vec<Vec<u8>>, u64)> = HashMap::new();
        for n in notes {
            let e = by_cid.entry(n.cid).or_default();
            e.0.push(n.key.clone());
            e.1 = e.1.max(n.at_ms);
        }
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut released = Vec::new();
        if !settings.enabled() {
            swept.dropped = by_cid.len();
            done.extend(by_cid.into_values().flat_map(|(keys, _)| keys));
        } else {
            let asked: HashSet<Cid> = by_cid.keys().copied().collect();
            let c = self.catalog.clone();
            let mut referenced = blocking(move || Ok(c.which_referenced(&asked)?)).await?;
            referenced.extend(
                self.leases
                    .export_cids()
                    .into_iter()
                    .filter(|c| by_cid.contains_key(c)),
            );
            let stale_before =
                now_ms().saturating_sub(u64::try_from(settings.term.as_millis()).unwrap_or(0));
            let mut free: Vec<Cid> = Vec::new();
            for (cid, (keys, newest)) in &by_cid {
                if self.leases.renewal_in_flight(cid) {
                    // Left noted: the next sweep releases it if no record references it then.
                    swept.deferred += 1;
                } else if referenced.contains(cid) {
                    swept.referenced += 1;
                    done.extend(keys.iter().cloned());
                } else if *newest < stale_before {
                    swept.dropped += 1;
                    done.extend(keys.iter().cloned());
                } else {
                    free.push(*cid);
                }
            }
            let net = self.net().await;
            match self
                .leases
                .release(&net, &self.key, &self.metrics, &free)
                .await
            {
                Ok(sent) => {
                    swept.released = sent.taken.len();
                    swept.failed = sent.failed.len();
                    for c in &sent.taken {
                        done.extend(by_cid[c].0.iter().cloned());
                    }
                    released = sent.taken;
                }
                Err(LeaseError::NoEpoch) => {
                    swept.dropped += free.len();
                    for c in &free {
                        done.extend(by_cid[c].0.iter().cloned());
                    }
                }
                Err(e) => {
                    swept.failed += free.len();
                    tracing::warn!("releasing leases: {e}; the next sweep retries");
                }
            }
        }
        if !done.is_empty() {
            let c = self.catalog.clone();
            blocking(move || Ok(c.forget_unreferenced(&done)?)).await?;
        }
        Ok(released)
    }
}

/// Time between release sweeps: at most `every` and 30 s, and at least ten times what the last
/// sweep took (a sweep reads the whole catalog: it takes at most a tenth of the gateway's time).
pub fn release_pause(every: Duration, last_sweep: Duration) -> Duration {
    every
        .min(Duration::from_secs(30))
        .max(last_sweep.saturating_mul(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_take_at_most_a_tenth_of_the_time() {
        let s = Duration::from_secs;
        assert_eq!(release_pause(s(3600), s(0)), s(30));
        assert_eq!(release_pause(s(2), Duration::from_millis(10)), s(2));
        assert_eq!(release_pause(s(3600), s(10)), s(100));
    }
}
