//! Self-repair: the node looks after the objects whose manifests it keeps.
//!
//! Each pass (every `repair.interval`):
//!
//! 1. [`view::refresh`]: ask every known storage node for its `Info`. One that does not answer
//!    is *suspect* for `repair.grace`, then *lost* (`cairn_policy::repair::Liveness`); one a
//!    quorum of nodes names faulty counts as lost at once; one that is draining keeps its
//!    copies until they are moved.
//! 2. Walk the kept manifests. For each, the object's ranking (`cairn_policy::keeper`) says
//!    who is in charge: the first live node holding the manifest. This node asks the live
//!    nodes ranked above it (batched `has` on the data plane) and goes on only where it is in
//!    charge.
//! 3. In charge: copy the manifest (and its receipts) to the first `m + 1` live nodes of the
//!    ranking that lack it; find every shard's copies (the storage receipts kept beside the
//!    manifest name the holders; a shard none of them holds is looked for on every live node),
//!    assess each stripe (`cairn_policy::repair::assess`) and queue those to rebuild or move;
//!    a healthy stripe may give a shard to an emptier node ([`rebalance`]). The copies not kept
//!    leased are named spare to their holders.
//! 4. Work the queue, the stripes closest to loss first, at most `repair.stripes_at_once` at a
//!    time and `repair.rate` bytes per second ([`stripe`]).
//!
//! Every decision is made in `cairn-policy`; this module moves bytes and keeps the clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_chunker::cids::{self, Cid, Codec};
use cairn_chunker::manifest::ObjectManifest;
use cairn_policy::keeper;
use cairn_policy::rebalance::Balancer;
use cairn_policy::repair::{
    Assessment, Health, Liveness, NodeState, RateLimit, RepairParams, RepairQueue, Replica, assess,
    designate,
};
use cairn_policy::time::Time;
use cairn_proofs::receipt::StorageReceipt;
use cairn_wire::data::Client;
use cairn_wire::keys;
use cairn_wire::protocol::{Holding, MAX_DATA_HAS, NodeInfo};
use cairn_wire::swarm::Swarm;
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use crate::config::RepairSection;
use crate::leases::Leaser;
use crate::store::Store;

pub mod drain;
pub mod metrics;
pub mod rebalance;
pub mod stripe;
pub mod view;

pub use metrics::RepairMetrics;
use view::View;

/// Manifests read from the store per step of a pass.
const PAGE: usize = 256;
/// Copies kept of a dataset manifest (it has no erasure parameters of its own).
pub const DATASET_COPIES: usize = 3;

/// This node's `Info` as it would answer it now.
pub type InfoFn = Arc<dyn Fn() -> NodeInfo + Send + Sync>;

/// A stripe waiting for repair: the object and the stripe's index.
pub type StripeKey = (Cid, usize);

/// What a pass found of one stripe to repair.
#[derive(Debug, Clone)]
pub struct Job {
    /// The object.
    pub object: Cid,
    /// Its manifest.
    pub manifest: Arc<ObjectManifest>,
    /// The stripe.
    pub index: usize,
    /// What [`assess`] said.
    pub assessment: Assessment,
    /// For each shard of the stripe, the nodes (view indices) holding a live copy.
    pub sources: Vec<Vec<usize>>,
    /// For each shard, the nodes holding a copy that only moves (draining).
    pub draining: Vec<Vec<usize>>,
    /// Every node holding, or said to hold, any shard of the stripe: never a target.
    pub holders: HashSet<usize>,
    /// The view the job was found in.
    pub view: Arc<View>,
    /// The object's other keepers (view indices), which get the new receipts too.
    pub keepers: Vec<usize>,
    /// A healthy stripe's shard to copy onto an emptier node, instead of a repair.
    pub rebalance: Option<rebalance::Move>,
}

/// The storage receipts kept beside `object` here (none if they cannot be read).
pub(crate) async fn receipts_for(store: &Arc<Store>, object: Cid) -> Vec<Vec<u8>> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.receipts_for(&object))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// The node's repair state.
pub struct Repairer {
    me: PeerId,
    store: Arc<Store>,
    swarm: Swarm,
    data: Client,
    leaser: Arc<Leaser>,
    cfg: RepairSection,
    info: InfoFn,
    metrics: RepairMetrics,
    origin: Instant,
    liveness: Mutex<Liveness<PeerId>>,
    /// Nodes whose data plane failed a `has` (they may answer `Info` and still serve
    /// nothing): lost after the grace period like silent ones.
    data_liveness: Mutex<Liveness<PeerId>>,
    seen: Mutex<BTreeMap<PeerId, ()>>,
    queue: Mutex<RepairQueue<StripeKey>>,
    jobs: Mutex<HashMap<StripeKey, Job>>,
    rate: Mutex<RateLimit>,
    data_dir: std::path::PathBuf,
    drain: Mutex<drain::DrainState>,
    /// The current pass's view, shared by its jobs.
    shared_view: Mutex<Option<Arc<View>>>,
    /// The current pass's rebalancing moves.
    balancer: Mutex<Option<Balancer>>,
    /// Passes made.
    passes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Repairer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repairer")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// What one pass saw, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Object manifests kept.
    pub objects: usize,
    /// Objects this node is in charge of.
    pub in_charge: usize,
    /// Stripes of those objects, by health.
    pub health: BTreeMap<&'static str, usize>,
    /// Manifest copies made.
    pub copies: usize,
}

impl Repairer {
    /// The repair state of node `me`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: PeerId,
        store: Arc<Store>,
        swarm: Swarm,
        data: Client,
        leaser: Arc<Leaser>,
        cfg: RepairSection,
        info: InfoFn,
        metrics: RepairMetrics,
        data_dir: &std::path::Path,
    ) -> Arc<Self> {
        let origin = Instant::now();
        let rate = cfg.rate.0;
        Arc::new(Self {
            me,
            store,
            swarm,
            data,
            leaser,
            liveness: Mutex::new(Liveness::new(cfg.grace.0)),
            data_liveness: Mutex::new(Liveness::new(cfg.grace.0)),
            cfg,
            info,
            metrics,
            origin,
            seen: Mutex::new(BTreeMap::new()),
            queue: Mutex::new(RepairQueue::default()),
            jobs: Mutex::new(HashMap::new()),
            // A second's worth at once, and at least one 64 MiB shard.
            rate: Mutex::new(RateLimit::new(rate, rate.max(64 << 20), Time::ZERO)),
            data_dir: data_dir.to_path_buf(),
            drain: Mutex::new(drain::DrainState::default()),
            shared_view: Mutex::new(None),
            balancer: Mutex::new(None),
            passes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn now(&self) -> Time {
        Time::after(self.origin.elapsed())
    }

    /// Passes until `cancel` fires: look, then repair what the look queued.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.interval.0);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let report = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.pass() => r,
            };
            tracing::debug!(?report, "repair pass");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.work() => {}
            }
        }
    }

    /// One look over every kept object: who is in charge, what needs copies or repair.
    pub async fn pass(&self) -> PassReport {
        let now = self.now();
        let view = {
            let mut seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
            let mut liveness = match self.liveness.lock() {
                Ok(l) => l.clone(),
                Err(_) => return PassReport::default(),
            };
            let v = view::refresh(
                &self.swarm,
                (self.info)(),
                self.me,
                &mut seen,
                &mut liveness,
                now,
            )
            .await;
            if let Ok(mut s) = self.seen.lock() {
                *s = seen;
            }
            if let Ok(mut l) = self.liveness.lock() {
                self.metrics
                    .lost_peers
                    .set(liveness.lost(now).count() as i64);
                *l = liveness;
            }
            v
        };
        if let Ok(mut g) = self.shared_view.lock() {
            *g = None;
        }
        // Moves planned by an earlier pass are planned afresh (or not: this node may no longer
        // be in charge, or the fills changed).
        if let (Ok(mut jobs), Ok(mut q)) = (self.jobs.lock(), self.queue.lock()) {
            jobs.retain(|key, job| {
                let keep = job.rebalance.is_none();
                if !keep {
                    q.remove(key);
                }
                keep
            });
        }
        self.passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut b) = self.balancer.lock() {
            let budget =
                (self.cfg.rebalance_rate.0 as f64 * self.cfg.interval.0.as_secs_f64()) as u64;
            *b = Some(rebalance::balancer(
                &view,
                self.cfg.rebalance_spread,
                budget,
            ));
        }
        let mut report = PassReport::default();
        let mut after: Option<Cid> = None;
        let mut view = view;
        loop {
            let store = self.store.clone();
            let page =
                tokio::task::spawn_blocking(move || store.manifests_after(after.as_ref(), PAGE))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            self.look(&page, &mut view, now, &mut report).await;
            if page.len() < PAGE {
                break;
            }
        }
        if drain::is_draining(&self.data_dir) {
            self.drain_pass(&view).await;
        } else if let Ok(mut d) = self.drain.lock() {
            *d = drain::DrainState::default();
        }
        let counts: Vec<(&str, usize)> = [
            Health::Healthy,
            Health::Degraded,
            Health::Repair,
            Health::AtRisk,
            Health::Lost,
        ]
        .iter()
        .map(|h| (h.name(), report.health.get(h.name()).copied().unwrap_or(0)))
        .collect();
        self.metrics.set_stripes(&counts);
        self.metrics.objects_kept.set(report.objects as i64);
        self.metrics.objects_in_charge.set(report.in_charge as i64);
        if let Ok(q) = self.queue.lock() {
            self.metrics.queue.set(q.len() as i64);
            self.metrics
                .queue_age_seconds
                .set(q.oldest(now).as_secs() as i64);
        }
        report
    }

    /// Looks after one page of kept manifests.
    async fn look(&self, page: &[Cid], view: &mut View, now: Time, report: &mut PassReport) {
        let ids = view.ids();
        let live = |v: &View, i: usize| v.nodes[i].takes_data();
        // Each manifest, its bytes and envelopes, its ranking, and the nodes to ask about it.
        struct Kept {
            cid: Cid,
            bytes: Vec<u8>,
            envelopes: Vec<Vec<u8>>,
            object: Option<Arc<ObjectManifest>>,
            order: Vec<usize>,
            copies: usize,
        }
        let mut kept = Vec::new();
        for cid in page {
            let store = self.store.clone();
            let c = *cid;
            let Ok(Ok((bytes, envelopes))) =
                tokio::task::spawn_blocking(move || store.get_manifest(&c)).await
            else {
                continue;
            };
            let object = if cid.codec() == cids::CODEC_DAG_CBOR {
                ObjectManifest::from_bytes_for(cid, &bytes)
                    .ok()
                    .map(Arc::new)
            } else {
                None
            };
            let copies = object
                .as_ref()
                .map_or(DATASET_COPIES, |m| usize::from(m.erasure.m) + 1);
            if object.is_some() {
                report.objects += 1;
            }
            kept.push(Kept {
                cid: *cid,
                bytes,
                envelopes,
                object,
                order: keeper::ranking(&cid.to_bytes(), &ids),
                copies,
            });
        }
        // Who to ask: the live nodes ranked above this node, and the wanted copies.
        let mut ask: HashMap<usize, Vec<Cid>> = HashMap::new();
        for k in &kept {
            let mut names: HashSet<usize> = k
                .order
                .iter()
                .copied()
                .take_while(|&i| i != 0)
                .filter(|&i| view.nodes[i].can_lead())
                .collect();
            names.extend(keeper::wanted(&k.order, |i| live(view, i), k.copies));
            names.remove(&0);
            for i in names {
                ask.entry(i).or_default().push(k.cid);
            }
        }
        let holds = self.ask_has(view, ask).await;
        for k in kept {
            let has =
                |i: usize| i == 0 || holds.get(&(i, k.cid)).is_some_and(|h| h.intact().is_some());
            // Only a node that runs repair can hold the charge.
            if !keeper::am_in_charge(&k.order, 0, |i| i == 0 || view.nodes[i].can_lead(), has) {
                continue;
            }
            report.in_charge += usize::from(k.object.is_some());
            // Manifest copies on the wanted keepers that lack one.
            let missing =
                keeper::copies_to_make(&k.order, |i| live(view, i) || i == 0, has, k.copies);
            for i in missing {
                if self
                    .copy_manifest(view, i, &k.cid, &k.bytes, &k.envelopes)
                    .await
                {
                    report.copies += 1;
                }
            }
            let Some(manifest) = k.object else { continue };
            let keepers: Vec<usize> = keeper::wanted(&k.order, |i| live(view, i), k.copies)
                .into_iter()
                .filter(|&i| i != 0)
                .collect();
            self.look_at_object(view, k.cid, manifest, keepers, now, report)
                .await;
        }
    }

    /// Asks each node which of the listed manifests (or shards) it holds; no answer is no
    /// entry.
    async fn ask_has(
        &self,
        view: &View,
        ask: HashMap<usize, Vec<Cid>>,
    ) -> HashMap<(usize, Cid), Holding> {
        let asks = ask.into_iter().map(|(i, cids)| async move {
            let mut out = Vec::new();
            let Some(t) = view.nodes[i].target else {
                return out;
            };
            for chunk in cids.chunks(MAX_DATA_HAS) {
                match self.data.has(&t, chunk).await {
                    Ok(held) => {
                        out.extend(chunk.iter().copied().zip(held).map(|(c, h)| ((i, c), h)))
                    }
                    Err(e) => {
                        tracing::debug!(peer = %t.peer, "repair: has failed: {e}");
                        if let Ok(mut l) = self.data_liveness.lock() {
                            l.silent(&t.peer, self.now());
                        }
                        return out;
                    }
                }
            }
            if let Ok(mut l) = self.data_liveness.lock() {
                l.answered(&t.peer);
            }
            out
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Copies a manifest, its envelopes and its receipts to node `i`.
    async fn copy_manifest(
        &self,
        view: &View,
        i: usize,
        cid: &Cid,
        bytes: &[u8],
        envelopes: &[Vec<u8>],
    ) -> bool {
        let Some(t) = view.nodes[i].target else {
            return false;
        };
        let kind = if cid.codec() == cids::CODEC_DAG_CBOR
            && ObjectManifest::from_bytes_for(cid, bytes).is_err()
        {
            cairn_wire::protocol::ManifestKind::Dataset
        } else {
            cairn_wire::protocol::ManifestKind::Object
        };
        if let Err(e) = self
            .data
            .put_manifest(&t, cid, kind, bytes, envelopes)
            .await
        {
            tracing::info!(peer = %t.peer, %cid, "repair: could not copy a manifest: {e}");
            return false;
        }
        let store = self.store.clone();
        let c = *cid;
        let receipts = tokio::task::spawn_blocking(move || store.receipts_for(&c))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if !receipts.is_empty()
            && let Err(e) = self.data.put_receipts(&t, cid, &receipts).await
        {
            tracing::info!(peer = %t.peer, %cid, "repair: could not copy receipts: {e}");
        }
        self.metrics.manifest_copies.inc();
        tracing::info!(
            target: "cairn::_events::repair",
            peer = %t.peer,
            %cid,
            "copied a manifest to a keeper that lacked it"
        );
        true
    }

    /// Finds every shard's copies and queues the stripes that need repair or moves.
    async fn look_at_object(
        &self,
        view: &mut View,
        object: Cid,
        manifest: Arc<ObjectManifest>,
        keepers: Vec<usize>,
        now: Time,
        report: &mut PassReport,
    ) {
        // Holders by receipt: shard root -> nodes.
        let receipts = receipts_for(&self.store, object).await;
        let mut named: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
        {
            let mut liveness = match self.liveness.lock() {
                Ok(l) => l,
                Err(_) => return,
            };
            for r in receipts
                .iter()
                .filter_map(|b| StorageReceipt::from_bytes(b).ok())
            {
                let Some(peer) = keys::peer_id(&r.node) else {
                    continue;
                };
                let i = view.add_unknown(peer, &mut liveness, now);
                named.entry(r.shard.0).or_default().push(i);
            }
        }
        let shards: Vec<(usize, usize, Cid)> = manifest
            .stored_shards()
            .map(|(s, i, r)| (s, i, r.cid))
            .collect();
        let root = |c: &Cid| cids::digest(c, Codec::Raw).ok().map(|h| *h.as_bytes());
        // Ask the named holders first.
        let mut ask: HashMap<usize, Vec<Cid>> = HashMap::new();
        let mut mine = Vec::new();
        for (_, _, cid) in &shards {
            for &i in root(cid).and_then(|r| named.get(&r)).into_iter().flatten() {
                if i == 0 {
                    mine.push(*cid);
                } else if view.nodes[i].up() {
                    ask.entry(i).or_default().push(*cid);
                }
            }
        }
        let mut holds = self.ask_has(view, ask).await;
        self.ask_myself(&mut holds, mine).await;
        // A shard no named holder has intact: look for it on every live node.
        let found = |holds: &HashMap<(usize, Cid), Holding>, cid: &Cid, named: &[usize]| {
            named.iter().any(|&i| {
                holds.get(&(i, *cid)).is_some_and(|h| h.intact().is_some())
                    || view.nodes[i].state == NodeState::Suspect
            })
        };
        let unfound: Vec<Cid> = shards
            .iter()
            .filter(|(_, _, c)| {
                let n = root(c)
                    .and_then(|r| named.get(&r))
                    .cloned()
                    .unwrap_or_default();
                !found(&holds, c, &n)
            })
            .map(|(_, _, c)| *c)
            .collect();
        let mut extra: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
        if !unfound.is_empty() {
            let ask: HashMap<usize, Vec<Cid>> = (1..view.nodes.len())
                .filter(|&i| view.nodes[i].up())
                .map(|i| (i, unfound.clone()))
                .collect();
            let more = self.ask_has(view, ask).await;
            self.ask_myself(&mut holds, unfound.clone()).await;
            for ((i, cid), h) in more {
                if h.intact().is_some()
                    && let Some(r) = root(&cid)
                {
                    extra.entry(r).or_default().push(i);
                }
                holds.insert((i, cid), h);
            }
            for cid in &unfound {
                if holds.get(&(0, *cid)).is_some_and(|h| h.intact().is_some())
                    && let Some(r) = root(cid)
                {
                    extra.entry(r).or_default().push(0);
                }
            }
        }
        // Which copies keep the owners' leases: chosen stripe by stripe below, carried after;
        // the other live copies are named spare to their holders: (holder, shard, kept on).
        let mut carry: HashSet<(usize, Cid)> = HashSet::new();
        let mut spares: Vec<(usize, Cid, usize)> = Vec::new();
        // Assess each stripe. The view is shared by every job of the pass while it does not
        // grow (a holder first met in a receipt adds a node).
        let cached = self.shared_view.lock().ok().and_then(|g| g.clone());
        let view_arc = match cached {
            Some(v) if v.nodes.len() == view.nodes.len() => v,
            _ => {
                let v = Arc::new(view.clone());
                if let Ok(mut g) = self.shared_view.lock() {
                    *g = Some(v.clone());
                }
                v
            }
        };
        let margin = match self.cfg.margin {
            0 => RepairParams::default_margin(usize::from(manifest.erasure.m)),
            m => m,
        };
        for (index, stripe) in manifest.stripes.iter().enumerate() {
            let total = stripe.data.len() + stripe.parity.len();
            let mut copies = vec![Vec::new(); total];
            let mut sources = vec![Vec::new(); total];
            let mut draining = vec![Vec::new(); total];
            let mut holders = HashSet::new();
            let mut placed: Vec<Vec<(usize, Replica)>> = vec![Vec::new(); total];
            // Shards whose receipts are at the limit kept per shard (a move would not be known).
            let mut full = vec![false; total];
            let mut stored = 0;
            for (i, shard) in stripe.stored_shards() {
                stored += 1;
                let Some(r) = root(&shard.cid) else { continue };
                let mut nodes: Vec<usize> = named.get(&r).cloned().unwrap_or_default();
                full[i] = nodes.len() + 1 >= cairn_wire::protocol::MAX_RECEIPTS_PER_SHARD;
                nodes.extend(extra.get(&r).cloned().unwrap_or_default());
                nodes.sort_unstable();
                nodes.dedup();
                // A stable order of preference among the copies (node ids ranked for the
                // shard), so the copy chosen to keep the lease is the same every pass.
                let ids: Vec<Vec<u8>> = nodes
                    .iter()
                    .map(|&n| view.nodes[n].peer.to_bytes())
                    .collect();
                let nodes: Vec<usize> = keeper::ranking(&shard.cid.to_bytes(), &ids)
                    .into_iter()
                    .map(|j| nodes[j])
                    .collect();
                for n in nodes {
                    holders.insert(n);
                    let node = &view.nodes[n];
                    let state = match node.state {
                        NodeState::Lost => Replica::Lost,
                        NodeState::Suspect => Replica::Suspect,
                        NodeState::Up if node.faulty => Replica::Lost,
                        NodeState::Up => match holds.get(&(n, shard.cid)) {
                            Some(Holding::Intact(_)) if node.draining() => Replica::Draining,
                            Some(Holding::Intact(_)) => Replica::Live,
                            Some(_) => Replica::Lost,
                            // Up, but its data plane did not answer: suspect for the grace
                            // period, then lost.
                            None => match self.data_liveness.lock() {
                                Ok(l) if l.state(&node.peer, now) == NodeState::Lost => {
                                    Replica::Lost
                                }
                                _ => Replica::Suspect,
                            },
                        },
                    };
                    match state {
                        Replica::Live => sources[i].push(n),
                        Replica::Draining => draining[i].push(n),
                        _ => {}
                    }
                    copies[i].push(state);
                    // A faulty node's intact copy does not count for repair, but while a shard
                    // has no live copy it stays leased like a silent one: it may be the last.
                    let kept_as = match holds.get(&(n, shard.cid)) {
                        Some(Holding::Intact(_)) if node.faulty => Replica::Suspect,
                        _ => state,
                    };
                    placed[i].push((n, kept_as));
                }
            }
            // Each shard's copy kept leased, when it is a live one.
            let mut kept: Vec<Option<usize>> = vec![None; total];
            for (i, nodes) in designate(&placed).into_iter().enumerate() {
                let Some(s) = stripe.shard(i) else { continue };
                if let [n] = nodes[..]
                    && placed[i].contains(&(n, Replica::Live))
                {
                    kept[i] = Some(n);
                    spares.extend(
                        placed[i]
                            .iter()
                            .filter(|(o, r)| *o != n && *r == Replica::Live)
                            .map(|(o, _)| (*o, s.cid, n)),
                    );
                }
                carry.extend(nodes.into_iter().map(|n| (n, s.cid)));
            }
            // Zero-length data shards are not stored: they are always there.
            for (i, c) in copies.iter_mut().enumerate() {
                if stripe.shard(i).is_some_and(|s| s.len == 0) {
                    c.push(Replica::Live);
                }
            }
            let _ = stored;
            let a = assess(stripe.data.len(), &copies, margin);
            *report.health.entry(a.health.name()).or_default() += 1;
            let key = (object, index);
            if a.health == Health::Lost {
                tracing::error!(
                    target: "cairn::_events::repair",
                    %object,
                    stripe = index,
                    live = a.live,
                    need = stripe.data.len(),
                    "a stripe has fewer live shards than it needs to be read: it cannot be \
                     rebuilt until a holder comes back"
                );
            }
            // A stripe with nothing to rebuild or move may give a shard to an emptier node
            // when it is healthy.
            let idle = a.rebuild.is_empty() && a.moves.is_empty();
            let planned = match (idle && a.health == Health::Healthy, self.balancer.lock()) {
                (true, Ok(mut b)) => b.as_mut().and_then(|b| {
                    let pass = self.passes.load(std::sync::atomic::Ordering::Relaxed);
                    rebalance::plan(b, &view_arc, stripe, &kept, &full, &holders, pass)
                }),
                _ => None,
            };
            if idle && planned.is_none() {
                if let Ok(mut q) = self.queue.lock() {
                    q.remove(&key);
                }
                if let Ok(mut j) = self.jobs.lock() {
                    j.remove(&key);
                }
                continue;
            }
            if a.health == Health::Lost {
                continue;
            }
            // The fewest spare shards first; a rebalancing move after every repair.
            let urgency = match planned {
                Some(_) => usize::MAX,
                None => a.live - stripe.data.len(),
            };
            if let Ok(mut q) = self.queue.lock() {
                q.push(key, urgency, now);
            }
            if let Ok(mut j) = self.jobs.lock() {
                j.insert(
                    key,
                    Job {
                        object,
                        manifest: manifest.clone(),
                        index,
                        assessment: a,
                        sources,
                        draining,
                        holders,
                        view: view_arc.clone(),
                        keepers: keepers.clone(),
                        rebalance: planned,
                    },
                );
            }
        }
        holds.retain(|k, _| carry.contains(k));
        self.carry_leases(view, object, &holds, &keepers).await;
        if !spares.is_empty() {
            let receipts = receipts_for(&self.store, object).await;
            rebalance::name_spares(
                &self.store,
                &self.data,
                &self.metrics,
                view,
                self.leaser.node_key().0,
                &spares,
                &receipts,
            )
            .await;
        }
    }

    /// Carries the object's lease statements to the copies in `holds` (those
    /// `cairn_policy::repair::designate` chose: the first live copy of each shard in a stable
    /// order, such as the new holder after a repair or a move; spare copies are left to lapse),
    /// and shares the statements with the object's other keepers (a manifest copy made by a
    /// pass, a keeper that was down). Releases are carried when they arrive (`holds::carry_kept`); a holder made since holds
    /// nothing for the released owner.
    async fn carry_leases(
        &self,
        view: &View,
        object: Cid,
        holds: &HashMap<(usize, Cid), Holding>,
        keepers: &[usize],
    ) {
        let store = self.store.clone();
        let statements = match tokio::task::spawn_blocking(move || store.statements(&object)).await
        {
            Ok(Ok(s)) => s,
            _ => return,
        };
        if statements.iter().all(|s| s.is_release()) {
            return;
        }
        // Every chosen copy, every pass: a receipt names a shard's whole lease (the latest end over
        // all its holds, anyone's), not this object's hold, so it cannot say the statement
        // arrived; a `Hold` that changes nothing writes nothing.
        let mut by_node: HashMap<usize, Vec<Cid>> = HashMap::new();
        for ((n, cid), h) in holds {
            if h.intact().is_some() {
                by_node.entry(*n).or_default().push(*cid);
            }
        }
        if let Some(mine) = by_node.remove(&0) {
            let (store, leaser, list) = (self.store.clone(), self.leaser.clone(), statements);
            let receipts = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                for s in &list {
                    out.extend(
                        leaser
                            .hold(&store, s, &mine)?
                            .iter()
                            .map(StorageReceipt::to_bytes),
                    );
                }
                let kept = store.put_fresh_receipts(&object, &out)?;
                Ok::<usize, crate::store::StoreError>(kept)
            })
            .await;
            if let Ok(Err(e)) = receipts {
                tracing::warn!(%object, "could not apply a lease statement to shards held here: {e}");
            }
        }
        let holders: Vec<(cairn_wire::data::Target, Vec<Cid>)> = by_node
            .into_iter()
            .filter_map(|(n, list)| view.nodes[n].target.map(|t| (t, list)))
            .collect();
        if !holders.is_empty()
            && let Err(e) = crate::holds::carry(&self.store, &self.data, &object, &holders).await
        {
            tracing::warn!(%object, "could not carry lease statements: {e}");
        }
        let targets: Vec<cairn_wire::data::Target> = keepers
            .iter()
            .filter_map(|&n| view.nodes[n].target)
            .collect();
        if let Err(e) = crate::holds::share(&self.store, &self.data, &object, &targets).await {
            tracing::warn!(%object, "could not share lease statements: {e}");
        }
    }

    /// Adds this node's own answers for `cids`.
    async fn ask_myself(&self, holds: &mut HashMap<(usize, Cid), Holding>, cids: Vec<Cid>) {
        if cids.is_empty() {
            return;
        }
        let store = self.store.clone();
        let asked = cids.clone();
        if let Ok(Ok(held)) = tokio::task::spawn_blocking(move || store.has(&asked)).await {
            for (c, h) in cids.into_iter().zip(held) {
                holds.insert((0, c), h);
            }
        }
    }

    /// Works the queue: the most urgent stripes first, a few at a time, within the rate. It
    /// starts no new stripe once `repair.interval` has passed, so the next pass sees new
    /// failures (and a stripe newly closer to loss goes first) however long the queue is.
    pub async fn work(&self) {
        let at_once = self.cfg.stripes_at_once.max(1);
        let until = Instant::now() + self.cfg.interval.0.max(Duration::from_secs(1));
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < at_once && Instant::now() < until {
                let Some(key) = self.queue.lock().ok().and_then(|mut q| q.pop()) else {
                    break;
                };
                let Some(job) = self.jobs.lock().ok().and_then(|mut j| j.remove(&key)) else {
                    continue;
                };
                let bytes = stripe::cost(&job);
                loop {
                    let wait = match self.rate.lock() {
                        Ok(mut r) => r.take(bytes, self.now()),
                        Err(_) => Ok(()),
                    };
                    match wait {
                        Ok(()) => break,
                        Err(d) => tokio::time::sleep(d.min(Duration::from_secs(5))).await,
                    }
                }
                let ctx = stripe::Context {
                    store: self.store.clone(),
                    data: self.data.clone(),
                    leaser: self.leaser.clone(),
                    metrics: self.metrics.clone(),
                };
                running.spawn(async move { stripe::repair(&ctx, job).await });
            }
            if running.is_empty() {
                break;
            }
            let _ = running.join_next().await;
        }
        if let Ok(q) = self.queue.lock() {
            self.metrics.queue.set(q.len() as i64);
        }
    }
}
