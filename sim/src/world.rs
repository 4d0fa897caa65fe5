//! The simulated network: nodes, every shard's copies, and the events that change them. Each
//! decision is Cairn's own policy code: where shards go (`cairn_policy::placement`), when a
//! silent node's copies count as lost (`cairn_policy::repair::Liveness`), how healthy a stripe
//! is and what to rebuild (`assess`), in which order (`RepairQueue`), within which rate
//! (`RateLimit`), and which shards a rebuild reads (`Fetch`). Shards are modelled, not stored:
//! a CID, a size and the nodes holding a copy.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use cairn_chunker::cids::{self, Cid};
use cairn_policy::placement::{self, Candidate};
use cairn_policy::repair::{
    Assessment, Fetch, Health, Liveness, NodeState, RateLimit, RepairParams, RepairQueue, Replica,
    assess,
};
use cairn_policy::time::Time;

use crate::proofs::Audits;
use crate::report::{Day, Report};
use crate::rng::Rng;
use crate::scenario::Scenario;

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 24.0 * HOUR_MS;
const YEAR_MS: f64 = 365.0 * DAY_MS;
const MIB: u64 = 1 << 20;
/// Nodes an upload tries per shard after its first choice (the client tries them all; past
/// the first few, every node of a simulated network with room has been reached).
const UPLOAD_TRIES: usize = 32;

/// What happens, in order of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A node goes silent for a while, keeping its data.
    Outage(usize),
    /// It answers again.
    Return(usize),
    /// A node's disk is lost for good.
    Loss(usize),
    /// Every node of failure domain 0 is lost.
    DomainLoss,
    /// The keepers' repair pass.
    RepairPass,
    /// A storage-proof epoch: every node answering is audited.
    Epoch,
    /// A line of the daily report.
    Sample,
}

/// A node's true state (what the keepers know comes from `Liveness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Up,
    Down,
    Gone,
}

#[derive(Debug, Clone)]
struct Node {
    id: Vec<u8>,
    label: Option<String>,
    capacity: u64,
    used: u64,
    life: Life,
    /// The stripes it holds copies of, as (stripe, shard).
    holds: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
struct Shard {
    cid: Cid,
    size: u64,
    /// Nodes a copy was stored on (a gone node's copy is gone, a down node's comes back).
    holders: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Stripe {
    object: usize,
    shards: Vec<Shard>,
    lost: bool,
}

/// A running simulation.
pub struct World {
    scenario: Scenario,
    rng: Rng,
    now_ms: u64,
    end_ms: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    nodes: Vec<Node>,
    /// Placement's view of the nodes, kept in step with them: free space for the ones up,
    /// none for the others.
    cands: Vec<Candidate>,
    stripes: Vec<Stripe>,
    liveness: Liveness<usize>,
    queue: RepairQueue<usize>,
    /// What the last assessment of each queued stripe said.
    queued: HashMap<usize, Assessment>,
    /// Stripes whose copies changed (a holder's state as the keepers see it, or a new copy)
    /// since the last pass: only these are assessed again, since an assessment depends on
    /// nothing else.
    dirty: HashSet<usize>,
    /// Each node's copies as the last pass saw them.
    seen: Vec<Replica>,
    margin: usize,
    objects_lost: HashSet<usize>,
    audits: Audits,
    epoch: u64,
    /// Per node: the copies (stripe, shard) it deleted but still claims.
    deleted: Vec<HashSet<(usize, usize)>>,
    cheater: Vec<bool>,
    faulty: Vec<bool>,
    detected: Vec<Option<u64>>,
    /// Events handled so far.
    pub events_handled: u64,
    report: Report,
}

impl World {
    /// The network of `scenario` with its data stored, events scheduled from `seed`.
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        let grace = Duration::from_secs_f64(scenario.repair.grace_hours * 3600.0);
        let margin = match scenario.repair.margin {
            0 => RepairParams::default_margin(scenario.data.m),
            m => m,
        };
        let end_ms = (scenario.days * DAY_MS) as u64;
        let mut w = World {
            rng: Rng::new(seed),
            now_ms: 0,
            end_ms,
            events: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            cands: Vec::new(),
            stripes: Vec::new(),
            liveness: Liveness::new(grace),
            queue: RepairQueue::default(),
            queued: HashMap::new(),
            dirty: HashSet::new(),
            seen: Vec::new(),
            margin,
            objects_lost: HashSet::new(),
            audits: Audits::new(),
            epoch: 0,
            deleted: Vec::new(),
            cheater: Vec::new(),
            faulty: Vec::new(),
            detected: Vec::new(),
            events_handled: 0,
            report: Report::new(&scenario, seed),
            scenario,
        };
        for _ in 0..w.scenario.network.nodes {
            w.add_node();
        }
        w.upload();
        if w.scenario.proofs.enabled {
            w.cheat();
            w.at(HOUR_MS as u64, Event::Epoch);
        }
        if let Some(day) = w.scenario.churn.domain_loss_day {
            w.at((day * DAY_MS) as u64, Event::DomainLoss);
        }
        if w.scenario.repair.enabled {
            let every = (w.scenario.repair.interval_hours * HOUR_MS) as u64;
            w.at(every.max(1), Event::RepairPass);
        }
        if (DAY_MS as u64) < end_ms {
            w.at(DAY_MS as u64, Event::Sample);
        }
        w.report.nodes_start = w.nodes.len();
        w
    }

    fn at(&mut self, ms: u64, e: Event) {
        if ms <= self.end_ms {
            self.seq += 1;
            self.events.push(Reverse((ms, self.seq, e)));
        }
    }

    fn after_hours(&mut self, mean_hours: f64) -> u64 {
        self.now_ms
            .saturating_add((self.rng.exp(mean_hours) * HOUR_MS) as u64)
    }

    /// A new, empty node, with its first outage and its loss scheduled.
    fn add_node(&mut self) {
        let i = self.nodes.len();
        let id = self.rng.next_u64().to_le_bytes().to_vec();
        let labels = self.scenario.network.labels;
        self.deleted.push(HashSet::new());
        self.cheater.push(false);
        self.faulty.push(false);
        self.detected.push(None);
        let label = (labels > 0).then(|| format!("d{}", i % labels));
        let capacity = self.scenario.network.capacity_gib << 30;
        self.cands
            .push(Candidate::new(id.clone(), capacity, label.clone()));
        self.nodes.push(Node {
            id,
            label,
            capacity,
            used: 0,
            life: Life::Up,
            holds: Vec::new(),
        });
        self.schedule_outage(i);
        let losses = self.scenario.churn.losses_per_node_year;
        if losses > 0.0 {
            let at = self
                .now_ms
                .saturating_add((self.rng.exp(1.0 / losses) * YEAR_MS) as u64);
            self.at(at, Event::Loss(i));
        }
    }

    fn schedule_outage(&mut self, i: usize) {
        let rate = self.scenario.churn.outages_per_node_year;
        if rate > 0.0 {
            let at = self
                .now_ms
                .saturating_add((self.rng.exp(1.0 / rate) * YEAR_MS) as u64);
            self.at(at, Event::Outage(i));
        }
    }

    /// Brings placement's view of node `n` up to date with its state and use.
    fn refresh(&mut self, n: usize) {
        let node = &self.nodes[n];
        self.cands[n].free = match node.life {
            Life::Up => node.capacity.saturating_sub(node.used),
            _ => 0,
        };
    }

    /// Stores every object at the start, placed as a client places them.
    fn upload(&mut self) {
        let d = self.scenario.data.clone();
        let size = d.shard_mib * MIB;
        for object in 0..d.objects {
            for s in 0..d.stripes_per_object {
                let cids: Vec<Cid> = (0..d.k + d.m)
                    .map(|i| {
                        let mut key = Vec::with_capacity(24);
                        for part in [object as u64, s as u64, i as u64] {
                            key.extend_from_slice(&part.to_le_bytes());
                        }
                        cids::raw(&key)
                    })
                    .collect();
                // The choices alone, unless one has no room: then with retries.
                let Ok(mut placed) = placement::place_stripe_with(&cids, &self.cands, 0) else {
                    continue;
                };
                if placed.iter().any(|o| self.cands[o[0]].free < size) {
                    placed = placement::place_stripe_with(&cids, &self.cands, UPLOAD_TRIES)
                        .unwrap_or(placed);
                }
                let index = self.stripes.len();
                let mut shards = Vec::with_capacity(cids.len());
                let mut used = HashSet::new();
                for (i, (cid, order)) in cids.into_iter().zip(placed).enumerate() {
                    // A shard no node has room for is kept with no copy: repair sees it
                    // missing, as it would after a failed upload.
                    let mut holders = Vec::new();
                    if let Some(&n) = order
                        .iter()
                        .find(|&&n| self.cands[n].free >= size && !used.contains(&n))
                    {
                        used.insert(n);
                        self.nodes[n].used += size;
                        self.refresh(n);
                        self.nodes[n].holds.push((index, i));
                        holders.push(n);
                    } else {
                        self.report.shards_unplaced += 1;
                    }
                    shards.push(Shard { cid, size, holders });
                }
                self.report.stored_bytes +=
                    size * shards.iter().filter(|sh| !sh.holders.is_empty()).count() as u64;
                self.stripes.push(Stripe {
                    object,
                    shards,
                    lost: false,
                });
            }
        }
        self.report.objects = d.objects;
        self.report.stripes = self.stripes.len();
    }

    /// Runs to the end, calling `progress` with the fraction done now and then.
    pub fn run(mut self, mut progress: impl FnMut(f64)) -> Report {
        let mut last_day = 0;
        while let Some(Reverse((ms, _, e))) = self.events.pop() {
            self.now_ms = ms;
            self.events_handled += 1;
            self.handle(e);
            let day = ms / DAY_MS as u64;
            if day != last_day {
                last_day = day;
                progress(ms as f64 / self.end_ms.max(1) as f64);
            }
        }
        self.now_ms = self.end_ms;
        self.sample();
        self.report.nodes_end = self.nodes.iter().filter(|n| n.life != Life::Gone).count();
        self.report.objects_lost = self.objects_lost.len();
        self.report.events = self.events_handled;
        self.report.audits = self.audits.audits;
        self.report.audit_failures = self.audits.failures;
        self.report.audit_failures_expected = self.audits.expected_failures;
        let found: Vec<u64> = (0..self.nodes.len())
            .filter(|&n| self.cheater[n])
            .filter_map(|n| self.detected[n])
            .collect();
        self.report.cheaters_detected = found.len();
        self.report.detection_epochs_max = found.iter().copied().max().unwrap_or(0);
        self.report.detection_epochs_mean = if found.is_empty() {
            0.0
        } else {
            found.iter().sum::<u64>() as f64 / found.len() as f64
        };
        self.report.honest_faulty = (0..self.nodes.len())
            .filter(|&n| !self.cheater[n] && self.detected[n].is_some())
            .count();
        self.report.finish();
        self.report
    }

    fn now(&self) -> Time {
        Time::from_millis(self.now_ms)
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Outage(n) if self.nodes[n].life == Life::Up => {
                self.nodes[n].life = Life::Down;
                self.refresh(n);
                self.report.outages += 1;
                self.touch(n);
                let back = self.after_hours(self.scenario.churn.outage_hours);
                self.at(back, Event::Return(n));
            }
            Event::Return(n) if self.nodes[n].life == Life::Down => {
                self.nodes[n].life = Life::Up;
                self.refresh(n);
                self.touch(n);
                self.schedule_outage(n);
            }
            Event::Loss(n) => self.lose(n),
            Event::DomainLoss => {
                let domain = Some("d0".to_string());
                let all: Vec<usize> = (0..self.nodes.len())
                    .filter(|&n| self.nodes[n].label == domain)
                    .collect();
                for n in all {
                    self.lose(n);
                }
            }
            Event::RepairPass => {
                self.repair_pass();
                let every = (self.scenario.repair.interval_hours * HOUR_MS) as u64;
                let next = self.now_ms.saturating_add(every.max(1));
                self.at(next, Event::RepairPass);
            }
            Event::Epoch => {
                self.epoch += 1;
                self.audit_all();
                self.at(self.now_ms.saturating_add(HOUR_MS as u64), Event::Epoch);
            }
            Event::Sample => {
                self.sample();
                let next = self.now_ms.saturating_add(DAY_MS as u64);
                if next < self.end_ms {
                    self.at(next, Event::Sample);
                }
            }
            _ => {}
        }
    }

    /// Node `n`'s disk is gone: every copy on it, for good.
    fn lose(&mut self, n: usize) {
        if self.nodes[n].life == Life::Gone {
            return;
        }
        self.nodes[n].life = Life::Gone;
        self.nodes[n].used = 0;
        self.refresh(n);
        self.report.losses += 1;
        let holds = self.nodes[n].holds.clone();
        let k = self.scenario.data.k;
        for (s, _) in holds {
            let stripe = &mut self.stripes[s];
            if stripe.lost {
                continue;
            }
            let surviving = (0..stripe.shards.len())
                .filter(|&i| {
                    stripe.shards[i].holders.iter().any(|&h| {
                        self.nodes[h].life != Life::Gone && !self.deleted[h].contains(&(s, i))
                    })
                })
                .count();
            if surviving < k {
                stripe.lost = true;
                self.report.stripes_lost += 1;
                if self.objects_lost.insert(stripe.object) && self.report.first_loss_day.is_none() {
                    self.report.first_loss_day = Some(self.now_ms as f64 / DAY_MS);
                }
            }
        }
        // After the lost stripes are marked: the fewest live shards counts the others.
        self.touch(n);
        if self.scenario.churn.replace_lost {
            self.add_node();
        }
    }

    /// Node `n` went down, came back or was lost: the fewest live shards any stripe not lost
    /// has is updated.
    fn touch(&mut self, n: usize) {
        let mut fewest = self.report.fewest_live_shards;
        for &(s, _) in &self.nodes[n].holds {
            if self.stripes[s].lost {
                continue;
            }
            let live = self.readable(s);
            fewest = fewest.min(live);
        }
        self.report.fewest_live_shards = fewest;
    }

    /// Shards of `st` with a copy on a node that answers now.
    fn readable(&self, s: usize) -> usize {
        (0..self.stripes[s].shards.len())
            .filter(|&i| self.serves(s, i))
            .count()
    }

    /// Whether some node answering holds shard `i` of stripe `s` (a cheater's deleted copy
    /// does not count).
    fn serves(&self, s: usize, i: usize) -> bool {
        self.stripes[s].shards[i]
            .holders
            .iter()
            .any(|&h| self.nodes[h].life == Life::Up && !self.deleted[h].contains(&(s, i)))
    }

    /// Picks the cheaters among the nodes and deletes their share of copies (they go on
    /// claiming them). A stripe whose deleted copies leave fewer than `k` is lost.
    fn cheat(&mut self) {
        let (share, deleted) = (self.scenario.proofs.cheaters, self.scenario.proofs.deleted);
        for n in 0..self.nodes.len() {
            if self.rng.unit() >= share {
                continue;
            }
            self.cheater[n] = true;
            self.report.cheaters += 1;
            // That share of its copies, at least one, chosen at random.
            let mut holds = self.nodes[n].holds.clone();
            let count = ((holds.len() as f64 * deleted).round() as usize)
                .max(1)
                .min(holds.len());
            for j in 0..count {
                let pick = j + (self.rng.next_u64() % (holds.len() - j) as u64) as usize;
                holds.swap(j, pick);
                self.deleted[n].insert(holds[j]);
            }
        }
        let k = self.scenario.data.k;
        for s in 0..self.stripes.len() {
            let kept = (0..self.stripes[s].shards.len())
                .filter(|&i| {
                    self.stripes[s].shards[i]
                        .holders
                        .iter()
                        .any(|&h| !self.deleted[h].contains(&(s, i)))
                })
                .count();
            if kept < k && !self.stripes[s].lost {
                self.stripes[s].lost = true;
                self.report.stripes_lost += 1;
                if self.objects_lost.insert(self.stripes[s].object) {
                    self.report.first_loss_day.get_or_insert(0.0);
                }
            }
        }
    }

    /// One epoch of audits: each node answering is audited `audits_per_epoch` times by
    /// others answering. An honest node's audit always passes (judged by its verdict);
    /// a cheater's is sampled with the proofs crate's challenge. A node faulted by a quorum
    /// of auditors within the window is faulty: the keepers count its copies lost.
    fn audit_all(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].life == Life::Up)
            .collect();
        if up.len() < 2 {
            return;
        }
        for &p in &up {
            let per = self.audits.per_epoch();
            if self.deleted[p].is_empty() {
                self.audits.audits += per as u64;
                continue;
            }
            let sizes: Vec<u64> = self.nodes[p]
                .holds
                .iter()
                .map(|&(s, i)| self.stripes[s].shards[i].size)
                .collect();
            let gone: HashSet<usize> = self.nodes[p]
                .holds
                .iter()
                .enumerate()
                .filter(|(_, h)| self.deleted[p].contains(h))
                .map(|(j, _)| j)
                .collect();
            for _ in 0..per {
                let mut a = up[(self.rng.next_u64() % up.len() as u64) as usize];
                if a == p {
                    a = up[(up.iter().position(|&x| x == p).unwrap_or(0) + 1) % up.len()];
                }
                let (aid, pid) = (self.nodes[a].id.clone(), self.nodes[p].id.clone());
                self.audits.audit(
                    &mut self.rng,
                    self.epoch,
                    (a, &aid),
                    (p, &pid),
                    &sizes,
                    &gone,
                );
            }
        }
        for n in 0..self.nodes.len() {
            if !self.cheater[n] && self.deleted[n].is_empty() && !self.faulty[n] {
                continue;
            }
            let faulty = self.audits.faulty(n, self.epoch);
            if faulty && self.detected[n].is_none() {
                self.detected[n] = Some(self.epoch);
            }
            self.faulty[n] = faulty;
        }
    }

    /// Asks every node, as each node's view refresh does at a pass: one that does not answer
    /// is silent from the first pass it failed (`Liveness` keeps that time), one that answers
    /// is up. Returns each node's copies as the keeper sees them now: live if it answers, else
    /// suspect within the grace period and lost after it.
    fn look(&mut self) -> Vec<Replica> {
        let now = self.now();
        (0..self.nodes.len())
            .map(|n| {
                if self.nodes[n].life == Life::Up {
                    self.liveness.answered(&n);
                    // A node the ledger holds faulty answers, but its copies count as lost.
                    return if self.faulty[n] {
                        Replica::Lost
                    } else {
                        Replica::Live
                    };
                }
                self.liveness.silent(&n, now);
                match self.liveness.state(&n, now) {
                    NodeState::Up | NodeState::Suspect => Replica::Suspect,
                    NodeState::Lost => Replica::Lost,
                }
            })
            .collect()
    }

    fn assess(&self, s: usize) -> Assessment {
        let copies: Vec<Vec<Replica>> = self.stripes[s]
            .shards
            .iter()
            .map(|sh| sh.holders.iter().map(|&h| self.seen[h]).collect())
            .collect();
        assess(self.scenario.data.k, &copies, self.margin)
    }

    /// One pass of every keeper in charge: assess every stripe, queue those to rebuild, and
    /// rebuild in queue order within the network's repair rate for the interval.
    fn repair_pass(&mut self) {
        let now = self.now();
        let seen = self.look();
        for (n, r) in seen.iter().enumerate() {
            if self.seen.get(n) != Some(r) {
                for &(s, _) in &self.nodes[n].holds {
                    self.dirty.insert(s);
                }
            }
        }
        self.seen = seen;
        let mut dirty: Vec<usize> = self.dirty.drain().collect();
        dirty.sort_unstable();
        for s in dirty {
            let a = self.assess(s);
            if self.stripes[s].lost || a.rebuild.is_empty() || a.health == Health::Lost {
                self.queue.remove(&s);
                self.queued.remove(&s);
                continue;
            }
            self.queue.push(s, a.live - self.scenario.data.k, now);
            self.queued.insert(s, a);
        }
        // Every live node repairs at `rate` for the interval: the pass's budget.
        let up = self.nodes.iter().filter(|n| n.life == Life::Up).count() as u64;
        let rate = self
            .scenario
            .repair
            .rate_mib_s
            .saturating_mul(MIB)
            .saturating_mul(up.max(1));
        let burst = (rate as f64 * self.scenario.repair.interval_hours * 3600.0) as u64;
        let mut limit = RateLimit::new(rate, burst.max(1), now);
        while let Some(&s) = self.queue.peek() {
            let Some(a) = self.queued.get(&s) else {
                self.queue.remove(&s);
                continue;
            };
            let size = self.stripes[s]
                .shards
                .iter()
                .map(|sh| sh.size)
                .max()
                .unwrap_or(0);
            let k = self.scenario.data.k as u64;
            let cost = size.saturating_mul(k + a.rebuild.len() as u64);
            if limit.take(cost, now).is_err() {
                // Left for the next pass where it is, as urgent and as old as it was.
                break;
            }
            let _ = self.queue.pop();
            let Some(a) = self.queued.remove(&s) else {
                continue;
            };
            self.rebuild(s, &a);
            // Assessed again next pass: a shard that found no room is queued again.
            self.dirty.insert(s);
        }
    }

    /// Rebuilds the missing shards of stripe `s` from `k` live ones onto the best nodes that
    /// hold nothing of it.
    fn rebuild(&mut self, s: usize, a: &Assessment) {
        let k = self.scenario.data.k;
        let readable: Vec<usize> = (0..self.stripes[s].shards.len())
            .filter(|&i| self.serves(s, i))
            .collect();
        let mut fetch = Fetch::new(k, readable);
        let mut read = 0;
        for i in fetch.start() {
            read += self.stripes[s].shards[i].size;
            fetch.done(i, true);
        }
        if !fetch.complete() {
            return;
        }
        self.report.repair_read_bytes += read;
        let mut exclude: HashSet<usize> = self.stripes[s]
            .shards
            .iter()
            .flat_map(|sh| sh.holders.iter().copied())
            .collect();
        let mut labels: HashSet<Option<String>> = exclude
            .iter()
            .filter(|&&h| self.nodes[h].life == Life::Up)
            .map(|&h| self.nodes[h].label.clone())
            .collect();
        for &i in &a.rebuild {
            let (cid, size) = {
                let sh = &self.stripes[s].shards[i];
                (sh.cid, sh.size)
            };
            let cands = &self.cands;
            let fits = |n: usize| cands[n].free >= size;
            let Some(n) = placement::place_repair_first(&cid, cands, &exclude, &labels, fits)
            else {
                continue;
            };
            exclude.insert(n);
            labels.insert(self.nodes[n].label.clone());
            self.nodes[n].used += size;
            self.refresh(n);
            self.nodes[n].holds.push((s, i));
            self.stripes[s].shards[i].holders.push(n);
            self.report.repair_written_bytes += size;
            self.report.shards_rebuilt += 1;
        }
    }

    /// Fewest shards of any stripe not lost that can be read now, and how many stripes cannot
    /// be read now.
    fn live_now(&self) -> (usize, usize) {
        let k = self.scenario.data.k;
        let mut fewest = usize::MAX;
        let mut unreadable = 0;
        for s in (0..self.stripes.len()).filter(|&s| !self.stripes[s].lost) {
            let live = self.readable(s);
            fewest = fewest.min(live);
            if live < k {
                unreadable += 1;
            }
        }
        (if fewest == usize::MAX { 0 } else { fewest }, unreadable)
    }

    fn sample(&mut self) {
        let (fewest, unreadable) = self.live_now();
        let day = Day {
            day: self.now_ms as f64 / DAY_MS,
            nodes_up: self.nodes.iter().filter(|n| n.life == Life::Up).count(),
            fewest_live_shards: fewest,
            unreadable_stripes: unreadable,
            stripes_lost: self.report.stripes_lost,
            objects_lost: self.objects_lost.len(),
            repair_bytes: self.report.repair_read_bytes + self.report.repair_written_bytes,
        };
        self.report.fewest_live_shards = self.report.fewest_live_shards.min(fewest);
        self.report.daily.push(day);
    }
}
