//! The release sweep: ends the gateway's hold on what no catalog record references any more.
//!
//! A change that drops a reference notes the CID in the catalog (`catalog::unreferenced`), in
//! the same atomic write. A sweep reads the notes, reads every CID the catalog still references
//! (the same bytes may live under another key, or be written again meanwhile), releases the
//! rest and forgets each note once it is dealt with: released, referenced again, or older than
//! the lease term (the gateway's last renewal of it has ended by itself, so the nodes collect
//! it anyway). A CID whose release no keeper took stays noted for the next sweep.
//!
//! Nodes keep an owner's later signed statement, so a release must not be signed after the
//! renewal of a write that references the CID again. Writes announce their renewals
//! ([`crate::leases::Leases::renewing_after_write`]): a sweep leaves a CID whose renewal is
//! under way for the next sweep, and renews once more, after its releases, any CID whose
//! renewal began while it ran (a record that landed after the sweep read the catalog).

use std::collections::HashSet;
use std::time::Duration;

use cairn_chunker::Cid;

use super::{Gateway, blocking, now_ms};
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
    /// Releases what the catalog stopped referencing (see the module docs).
    pub async fn release_unreferenced(&self) -> Result<Swept, Error> {
        let c = self.catalog.clone();
        let noted = blocking(move || Ok(c.unreferenced(SWEEP_BATCH)?)).await?;
        let mut swept = Swept::default();
        if !noted.is_empty() {
            self.leases.watch();
            let released = self.sweep(&noted, &mut swept).await;
            let touched = self.leases.unwatch();
            let again: Vec<Cid> = released
                .into_iter()
                .filter(|c| touched.contains(c))
                .collect();
            if !again.is_empty() {
                tracing::info!(
                    objects = again.len(),
                    "objects written again while being released are renewed once more"
                );
                self.renew_leases(again, true).await;
            }
        }
        let c = self.catalog.clone();
        swept.pending = blocking(move || Ok(c.unreferenced_count()?)).await?;
        self.metrics
            .release_pending
            .set(i64::try_from(swept.pending).unwrap_or(i64::MAX));
        Ok(swept)
    }

    /// One sweep over `noted`; returns the CIDs released.
    async fn sweep(&self, noted: &[(Cid, u64)], swept: &mut Swept) -> Vec<Cid> {
        let settings = self.leases.settings();
        let mut done: Vec<(Cid, u64)> = Vec::new();
        let mut released = Vec::new();
        let result: Result<(), Error> = async {
            if !settings.enabled() {
                swept.dropped = noted.len();
                done.extend_from_slice(noted);
                return Ok(());
            }
            let referenced: HashSet<Cid> = self.referenced().await?.into_iter().collect();
            let stale_before =
                now_ms().saturating_sub(u64::try_from(settings.term.as_millis()).unwrap_or(0));
            let mut free = Vec::new();
            for &(cid, at) in noted {
                if self.leases.renewal_in_flight(&cid) {
                    // Left noted: the next sweep releases it if no record references it then.
                    swept.deferred += 1;
                } else if referenced.contains(&cid) {
                    swept.referenced += 1;
                    done.push((cid, at));
                } else if at < stale_before {
                    swept.dropped += 1;
                    done.push((cid, at));
                } else {
                    free.push((cid, at));
                }
            }
            let cids: Vec<Cid> = free.iter().map(|f| f.0).collect();
            let net = self.net().await;
            match self
                .leases
                .release(&net, &self.key, &self.metrics, &cids)
                .await
            {
                Ok(sent) => {
                    let taken: HashSet<Cid> = sent.taken.iter().copied().collect();
                    swept.released = taken.len();
                    swept.failed = sent.failed.len();
                    done.extend(free.iter().filter(|f| taken.contains(&f.0)));
                    released = sent.taken;
                }
                Err(LeaseError::NoEpoch) => {
                    swept.dropped += free.len();
                    done.extend(free);
                }
                Err(e) => {
                    swept.failed += free.len();
                    tracing::warn!("releasing leases: {e}; the next sweep retries");
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("the release sweep could not read the catalog (will retry): {e}");
        }
        if !done.is_empty() {
            let c = self.catalog.clone();
            if let Err(e) = blocking(move || Ok(c.forget_unreferenced(&done)?)).await {
                tracing::warn!("the release sweep could not update the catalog: {e}");
            }
        }
        released
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
