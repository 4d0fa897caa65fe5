//! The gateway's leases on what its catalog references.
//!
//! Nodes hold a shard for `proofs.lease_epochs` after its upload, and after that only while
//! an owner's lease statement holds its object (`docs/LEASES.md`). The gateway is the owner of
//! everything its catalog references, so it signs statements with its own key (the one it
//! signs manifests and exports with): every `lease_renew_every` it renews, through
//! `lease_term` from now, each CID the catalog references (objects, packs, parts of open
//! multipart uploads) and its last few catalog exports, but only those whose last renewal by
//! this process ends within half a term (after a restart, every one once). A write renews its
//! object at once, in the background. A change that drops a reference (a delete, an overwrite,
//! an ended multipart upload's parts, an export pushed out of the last few) notes the CID in the
//! catalog; the release sweep (`Gateway::release_unreferenced`) releases it once no record
//! references it any more.
//!
//! Statements go out in batches: one `locate` for a batch of CIDs, then one `Lease` request per
//! keeper carrying every statement it should keep. A CID counts as renewed when a keeper took
//! every statement of its request (a keeper's answer does not say which ones it refused).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_chunker::Cid;
use cairn_client::error::ClientError;
use cairn_client::network::Network;
use cairn_proofs::lease::LeaseStatement;
use ed25519_dalek::SigningKey;
use futures::StreamExt;

use crate::metrics::GatewayMetrics;
use crate::s3::now_ms;

/// CIDs located and leased at a time.
const BATCH: usize = 1000;
/// Keepers sent statements at once.
const KEEPERS_AT_ONCE: usize = 8;
/// Catalog exports kept under lease (the newest, and a few before it in case it is damaged).
pub const EXPORTS_KEPT: usize = 3;

/// How long the gateway leases what it references, and how often it renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Each renewal holds through now + this (zero: the gateway takes no leases at all).
    pub term: Duration,
    /// Time between renewal passes.
    pub every: Duration,
}

impl LeaseSettings {
    /// No leases: nothing renewed or released.
    pub const OFF: Self = Self {
        term: Duration::ZERO,
        every: Duration::from_secs(3600),
    };

    /// Whether the gateway takes leases.
    pub fn enabled(&self) -> bool {
        !self.term.is_zero()
    }
}

/// Why a batch of statements could not be sent at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The network reports no epoch length (its nodes run with proofs off): leases mean
    /// nothing there.
    #[error("the network has no epochs (its nodes run with proofs disabled): no leases taken")]
    NoEpoch,
    /// The network failed otherwise.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What one batch of statements achieved.
#[derive(Debug, Default)]
pub struct Sent {
    /// CIDs some keeper took the statement for.
    pub taken: Vec<Cid>,
    /// CIDs no keeper took it for, with what the keepers said.
    pub failed: Vec<(Cid, String)>,
}

/// The gateway's lease bookkeeping (shared by its clones).
#[derive(Debug)]
pub struct Leases {
    settings: LeaseSettings,
    /// The end epoch of this process's last renewal of each CID.
    ends: Mutex<HashMap<Cid, u64>>,
    /// The last few catalog exports, newest last: each its index (or only manifest) and pieces.
    exports: Mutex<VecDeque<Vec<Cid>>>,
    /// Whether "the network has no epochs" was logged already.
    warned_no_epoch: AtomicBool,
    /// While a release sweep runs, the CIDs writes renewed meanwhile (`None` otherwise).
    watched: Mutex<Option<HashSet<Cid>>>,
    /// CIDs a write's renewal is under way for, with how many such renewals.
    in_flight: Mutex<HashMap<Cid, u32>>,
    /// CIDs released lately, with when (ms): a renewal pass that read the catalog before a
    /// release must not undo it.
    released: Mutex<HashMap<Cid, u64>>,
    /// Where the next release sweep reads the catalog's notes from.
    release_cursor: Mutex<Option<Vec<u8>>>,
}

impl Leases {
    /// Bookkeeping under `settings`.
    pub fn new(settings: LeaseSettings) -> Self {
        Self {
            settings,
            ends: Mutex::new(HashMap::new()),
            exports: Mutex::new(VecDeque::new()),
            warned_no_epoch: AtomicBool::new(false),
            watched: Mutex::new(None),
            in_flight: Mutex::new(HashMap::new()),
            released: Mutex::new(HashMap::new()),
            release_cursor: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn settings(&self) -> LeaseSettings {
        self.settings
    }

    /// Remembers an export (its index or only manifest first, then its pieces); returns the
    /// CIDs of the exports this one pushes out of the last [`EXPORTS_KEPT`].
    pub fn note_export(&self, cids: Vec<Cid>) -> Vec<Cid> {
        let mut e = self.exports.lock().unwrap_or_else(|p| p.into_inner());
        if e.back() == Some(&cids) {
            return Vec::new();
        }
        e.push_back(cids);
        let mut dropped = Vec::new();
        while e.len() > EXPORTS_KEPT {
            dropped.extend(e.pop_front().unwrap_or_default());
        }
        dropped
    }

    /// Starts noting the CIDs writes renew (a release sweep begins).
    pub fn watch(&self) {
        *self.watched.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashSet::new());
    }

    /// Stops noting; the CIDs writes renewed since [`Leases::watch`].
    pub fn unwatch(&self) -> HashSet<Cid> {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }

    /// A write is about to renew `cids`: a sweep neither releases them until
    /// [`Leases::renewed_after_write`] (the release would be signed first and lose), nor,
    /// when it started meanwhile, leaves them released without renewing them again.
    pub fn renewing_after_write(&self, cids: &[Cid]) {
        if let Some(w) = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            w.extend(cids.iter().copied());
        }
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for c in cids {
            *f.entry(*c).or_default() += 1;
        }
    }

    /// The renewal [`Leases::renewing_after_write`] announced is over.
    pub fn renewed_after_write(&self, cids: &[Cid]) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for c in cids {
            if let Some(n) = f.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    f.remove(c);
                }
            }
        }
    }

    /// Where the next release sweep starts in the catalog's notes.
    pub fn release_cursor(&self) -> Option<Vec<u8>> {
        self.release_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets where the next release sweep starts (`None`: from the first note).
    pub fn set_release_cursor(&self, next: Option<Vec<u8>>) {
        *self
            .release_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = next;
    }

    /// Of `cids`, those not released at or after `since_ms` (what a renewal pass that read the
    /// catalog at `since_ms` may still renew). Forgets releases older than a day.
    fn not_released_since(&self, cids: &[Cid], since_ms: u64) -> Vec<Cid> {
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        let day_ago = now_ms().saturating_sub(24 * 3600 * 1000);
        released.retain(|_, at| *at >= day_ago);
        cids.iter()
            .filter(|c| released.get(c).is_none_or(|&at| at < since_ms))
            .copied()
            .collect()
    }

    /// Whether a write's renewal of `cid` is under way.
    pub fn renewal_in_flight(&self, cid: &Cid) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(cid)
    }

    /// Every CID of the remembered exports.
    pub fn export_cids(&self) -> Vec<Cid> {
        let e = self.exports.lock().unwrap_or_else(|p| p.into_inner());
        e.iter().flatten().copied().collect()
    }

    /// Whether any export is remembered.
    pub fn knows_an_export(&self) -> bool {
        !self
            .exports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Of `cids`, those whose last renewal here ends before `due_before` (or never was).
    fn due(&self, cids: impl IntoIterator<Item = Cid>, due_before: u64) -> Vec<Cid> {
        let ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let set: BTreeSet<Cid> = cids
            .into_iter()
            .filter(|c| ends.get(c).is_none_or(|&e| e < due_before))
            .collect();
        set.into_iter().collect()
    }

    fn renewed(&self, cids: &[Cid], end: u64) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        for c in cids {
            let e = ends.entry(*c).or_insert(end);
            *e = (*e).max(end);
        }
    }

    /// Forgets the renewals of `cids` (released: the next pass renews them again if the
    /// catalog references them once more).
    pub fn forget(&self, cids: &[Cid]) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        for c in cids {
            ends.remove(c);
        }
    }

    /// Logs the missing epoch once, at warn; `true` the first time.
    fn warn_no_epoch(&self) {
        if !self.warned_no_epoch.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the storage nodes report no epoch length (proofs disabled): the gateway takes \
                 no leases; nodes without proofs do not collect garbage either"
            );
        }
    }

    /// Renews those of `cids` that are due (all of them if `force`) through `term` from now,
    /// signed by `key`. Returns how many were renewed; failures are logged and counted.
    /// `read_at_ms`: when the catalog was read for `cids` (a renewal pass): what was released
    /// since is left alone. `None` for a write's own renewal, which must win.
    pub async fn renew(
        &self,
        net: &Network,
        key: &SigningKey,
        metrics: &GatewayMetrics,
        cids: impl IntoIterator<Item = Cid>,
        force: bool,
        read_at_ms: Option<u64>,
    ) -> usize {
        if !self.settings.enabled() {
            return 0;
        }
        let (epoch_ms, end) = match lease_end(net, self.settings.term) {
            Ok(v) => v,
            Err(LeaseError::NoEpoch) => {
                self.warn_no_epoch();
                return 0;
            }
            Err(e) => {
                tracing::warn!("leases not renewed: {e}");
                return 0;
            }
        };
        let term_epochs = duration_epochs(self.settings.term, epoch_ms);
        let due = if force {
            self.due(cids, u64::MAX)
        } else {
            self.due(cids, end.saturating_sub(term_epochs / 2))
        };
        let mut renewed = 0;
        for batch in due.chunks(BATCH) {
            // Checked just before signing: a release signed after this cannot lose to it.
            let batch = match read_at_ms {
                Some(at) => self.not_released_since(batch, at),
                None => batch.to_vec(),
            };
            let sent = send(net, key, &batch, end).await;
            self.renewed(&sent.taken, end);
            renewed += sent.taken.len();
            metrics.leases_renewed.inc_by(sent.taken.len() as u64);
            report_failures(metrics, "renewing", &sent.failed);
        }
        renewed
    }

    /// Ends this gateway's hold on `cids` now (nothing when it takes no leases). Failures are
    /// logged and counted; [`LeaseError::NoEpoch`] when the network has no epochs.
    pub async fn release(
        &self,
        net: &Network,
        key: &SigningKey,
        metrics: &GatewayMetrics,
        cids: &[Cid],
    ) -> Result<Sent, LeaseError> {
        let mut all = Sent::default();
        if !self.settings.enabled() || cids.is_empty() {
            return Ok(all);
        }
        if let Err(e) = epoch_of(net) {
            if matches!(e, LeaseError::NoEpoch) {
                self.warn_no_epoch();
            }
            return Err(e);
        }
        self.forget(cids);
        {
            let now = now_ms();
            let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
            for c in cids {
                released.insert(*c, now);
            }
        }
        for batch in cids.chunks(BATCH) {
            let sent = send(net, key, batch, 0).await;
            report_failures(metrics, "releasing", &sent.failed);
            metrics.leases_released.inc_by(sent.taken.len() as u64);
            all.taken.extend(sent.taken);
            all.failed.extend(sent.failed);
        }
        Ok(all)
    }
}

fn epoch_of(net: &Network) -> Result<u64, LeaseError> {
    match cairn_client::lease::epoch_ms(net) {
        Ok(ms) => Ok(ms),
        Err(ClientError::NoEpoch) => Err(LeaseError::NoEpoch),
        Err(e) => Err(e.into()),
    }
}

/// The network's epoch length and the end epoch of a lease of `term` from now.
fn lease_end(net: &Network, term: Duration) -> Result<(u64, u64), LeaseError> {
    let epoch_ms = epoch_of(net)?;
    let end = cairn_client::lease::end_epoch(net, term).map_err(|e| match e {
        ClientError::NoEpoch => LeaseError::NoEpoch,
        e => LeaseError::Client(e),
    })?;
    Ok((epoch_ms, end))
}

/// Whole epochs (rounded up) in `d`.
fn duration_epochs(d: Duration, epoch_ms: u64) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    ms.div_ceil(epoch_ms.max(1))
}

fn report_failures(metrics: &GatewayMetrics, what: &str, failed: &[(Cid, String)]) {
    if failed.is_empty() {
        return;
    }
    metrics.lease_failures.inc_by(failed.len() as u64);
    let (cid, why) = &failed[0];
    tracing::warn!(
        failed = failed.len(),
        first = %cid,
        "{what} leases failed for {} objects ({why}); the renewal loop retries every \
         lease_renew_every: check that the storage nodes keeping these manifests are up \
         (`cairn nodes`), since what no lease holds is collected after its upload hold",
        failed.len()
    );
}

/// Signs a statement "hold through `end`" (0: release) for each of `cids` and gives each to
/// the nodes keeping its manifest: one `Lease` request per keeper for the whole batch.
pub async fn send(net: &Network, key: &SigningKey, cids: &[Cid], end: u64) -> Sent {
    let signed_ms = now_ms();
    let holders = net.locate(cids).await;
    // Keeper -> (CIDs, statements) it should keep.
    let mut per_keeper: BTreeMap<usize, (Vec<Cid>, Vec<Vec<u8>>)> = BTreeMap::new();
    let mut out = Sent::default();
    for cid in cids {
        let keepers = holders.intact(cid);
        if keepers.is_empty() {
            out.failed.push((*cid, "no node keeps its manifest".into()));
            continue;
        }
        let statement = LeaseStatement::sign(key, &cid.to_bytes(), end, signed_ms).to_bytes();
        for &k in keepers {
            let e = per_keeper.entry(k).or_default();
            e.0.push(*cid);
            e.1.push(statement.clone());
        }
    }
    let answers: Vec<(Vec<Cid>, Result<(), String>)> = futures::stream::iter(per_keeper)
        .map(|(k, (cids, statements))| async move {
            let node = &net.nodes()[k];
            let answer = match net.data().lease(&node.target, &statements).await {
                Ok((accepted, _)) if accepted as usize == statements.len() => Ok(()),
                Ok((accepted, refused)) => Err(format!(
                    "{} took {accepted} of {}: {}",
                    node.target.peer,
                    statements.len(),
                    refused.join("; ")
                )),
                Err(e) => Err(format!("{}: {e}", node.target.peer)),
            };
            (cids, answer)
        })
        .buffer_unordered(KEEPERS_AT_ONCE)
        .collect()
        .await;
    let mut taken: BTreeSet<Cid> = BTreeSet::new();
    let mut problems: HashMap<Cid, String> = HashMap::new();
    for (cids, answer) in answers {
        match answer {
            Ok(()) => taken.extend(cids),
            Err(why) => {
                for c in cids {
                    problems.entry(c).or_insert_with(|| why.clone());
                }
            }
        }
    }
    for (c, why) in problems {
        if !taken.contains(&c) {
            out.failed.push((c, why));
        }
    }
    out.taken = taken.into_iter().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u8) -> Cid {
        cairn_chunker::cids::dag_cbor(&[n])
    }

    #[test]
    fn only_what_ends_within_half_a_term_is_due() {
        let l = Leases::new(LeaseSettings {
            term: Duration::from_secs(100),
            every: Duration::from_secs(1),
        });
        // Never renewed: due.
        assert_eq!(l.due([cid(1), cid(2), cid(1)], 50).len(), 2);
        l.renewed(&[cid(1)], 60);
        assert_eq!(
            l.due([cid(1), cid(2)], 50),
            vec![cid(2)].into_iter().collect::<Vec<_>>()
        );
        assert_eq!(l.due([cid(1)], 61), vec![cid(1)]);
        // A later renewal never moves an end back.
        l.renewed(&[cid(1)], 10);
        assert!(l.due([cid(1)], 60).is_empty());
        l.forget(&[cid(1)]);
        assert_eq!(l.due([cid(1)], 0), vec![cid(1)]);
        assert_eq!(duration_epochs(Duration::from_secs(5), 2000), 3);
    }

    #[test]
    fn a_few_exports_are_remembered() {
        let l = Leases::new(LeaseSettings::OFF);
        assert!(!l.knows_an_export());
        let mut dropped = Vec::new();
        for n in 0..5 {
            dropped.extend(l.note_export(vec![cid(n), cid(100 + n)]));
        }
        assert!(l.note_export(vec![cid(4), cid(104)]).is_empty());
        assert_eq!(dropped, vec![cid(0), cid(100), cid(1), cid(101)]);
        assert_eq!(l.export_cids().len(), 2 * EXPORTS_KEPT);
        assert_eq!(l.export_cids()[0], cid(2));
    }

    #[test]
    fn a_renewal_pass_leaves_what_was_released_after_it_read_the_catalog() {
        let l = Leases::new(LeaseSettings::OFF);
        let now = now_ms();
        for (n, at) in [(1, now - 5_000), (2, now - 1_000), (3, now), (5, 1_000)] {
            l.released.lock().unwrap().insert(cid(n), at);
        }
        let all = [cid(1), cid(2), cid(3), cid(4), cid(5)];
        // Read 2 s ago: cid(2) and cid(3) were released since; cid(5)'s release is more than a
        // day old and forgotten.
        assert_eq!(
            l.not_released_since(&all, now - 2_000),
            vec![cid(1), cid(4), cid(5)]
        );
        assert_eq!(l.not_released_since(&all, now + 1), all.to_vec());
        assert_eq!(l.released.lock().unwrap().len(), 3);
    }

    #[test]
    fn renewals_after_writes_are_watched_and_counted() {
        let l = Leases::new(LeaseSettings::OFF);
        l.renewing_after_write(&[cid(1)]);
        assert!(l.unwatch().is_empty(), "no sweep ran");
        l.watch();
        l.renewing_after_write(&[cid(1), cid(2)]);
        assert!(l.renewal_in_flight(&cid(1)) && l.renewal_in_flight(&cid(2)));
        l.renewed_after_write(&[cid(1), cid(2)]);
        assert!(l.renewal_in_flight(&cid(1)), "one renewal of it is left");
        assert!(!l.renewal_in_flight(&cid(2)));
        l.renewed_after_write(&[cid(1), cid(1)]);
        assert!(!l.renewal_in_flight(&cid(1)));
        assert_eq!(l.unwatch(), [cid(1), cid(2)].into_iter().collect());
    }
}
