//! The simulated network: nodes, every shard's copies, and the events that change them. Each
//! decision is Cairn's own policy code: where shards go (`cairn_policy::placement`), when a
//! silent node's copies count as lost (`cairn_policy::repair::Liveness`), how healthy a stripe
//! is and what to rebuild (`assess`), in which order (`RepairQueue`), within which rate
//! (`RateLimit`), and which shards a rebuild reads (`Fetch`). Shards are modelled, not stored:
//! a CID, a size and the nodes holding a copy. Audits, adversaries and earnings are in
//! [`crate::epoch`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use cairn_chunker::cids::{self, Cid};
use cairn_policy::placement::{self, Candidate};
use cairn_policy::repair::{Assessment, Liveness, RepairParams, RepairQueue, Replica, designate};
use cairn_policy::time::Time;
use cairn_proofs::NodeKey;

use crate::epoch::Account;
use crate::proofs::Audits;
use crate::repair::Object;
use crate::report::{Day, Report};
use crate::rng::Rng;
use crate::scenario::{Adversary, Scenario};

pub(crate) const HOUR_MS: f64 = 3_600_000.0;
pub(crate) const DAY_MS: f64 = 24.0 * HOUR_MS;
const YEAR_MS: f64 = 365.0 * DAY_MS;
pub(crate) const MIB: u64 = 1 << 20;
/// Nodes an upload tries per shard after its first choice (the client tries them all; past
/// the first few, every node of a simulated network with room has been reached).
const UPLOAD_TRIES: usize = 32;

/// What happens, in order of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    /// A node goes silent for a while, keeping its data.
    Outage(usize),
    /// A dark adversary goes dark for a while, keeping its data.
    Dark(usize),
    /// It answers again (after an outage, or after going dark).
    Return(usize, bool),
    /// A copy no keeper holds any more (node, stripe, shard) reaches the end of its lease.
    Lapse(usize, usize, usize),
    /// An object is uploaded.
    Upload(usize),
    /// A copy on node `n` rots (a bit flips on its disk).
    Rot(usize),
    /// Node `n`'s scrub reaches a rotten copy (stripe, shard) and quarantines it.
    Scrubbed(usize, usize, usize),
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
pub(crate) enum Life {
    Up,
    Down,
    Gone,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) id: Vec<u8>,
    pub(crate) label: Option<String>,
    pub(crate) capacity: u64,
    /// Bytes committed (what it claims to hold, deleted copies included).
    pub(crate) used: u64,
    pub(crate) life: Life,
    /// The stripes it holds copies of, as (stripe, shard).
    pub(crate) holds: Vec<(usize, usize)>,
    /// Which adversary of the scenario it is, if any.
    pub(crate) adversary: Option<usize>,
    /// The node whose disk it runs on: itself, or a sybil group's first identity.
    pub(crate) disk: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub(crate) cid: Cid,
    pub(crate) size: u64,
    /// Nodes a copy was stored on (a gone node's copy is gone, a down node's comes back).
    pub(crate) holders: Vec<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct Stripe {
    pub(crate) object: usize,
    pub(crate) shards: Vec<Shard>,
    pub(crate) lost: bool,
}

/// A running simulation.
pub struct World {
    pub(crate) scenario: Scenario,
    pub(crate) rng: Rng,
    pub(crate) now_ms: u64,
    pub(crate) end_ms: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    pub(crate) nodes: Vec<Node>,
    /// Placement's view of the nodes, kept in step with them: free space for the ones up,
    /// none for the others.
    pub(crate) cands: Vec<Candidate>,
    pub(crate) stripes: Vec<Stripe>,
    pub(crate) liveness: Liveness<usize>,
    /// The objects, with their keepers.
    pub(crate) objects: Vec<Object>,
    /// Per stripe: shards that can be read now (kept by `recount`).
    pub(crate) live: Vec<u8>,
    /// Per node: whether it answers now (`life == Up`, kept by `refresh`), packed for the
    /// scans that ask it for every copy.
    pub(crate) up: Vec<bool>,
    /// Per node: its tag in keeper rankings (`keeper::node_tag`).
    pub(crate) keeper_tags: Vec<u64>,
    /// Per node: the objects whose manifest it holds.
    pub(crate) keeps: Vec<Vec<usize>>,
    /// Each keeper's repair queue (stripes of the objects it is in charge of).
    pub(crate) queues: BTreeMap<usize, RepairQueue<usize>>,
    /// The keeper whose queue holds each queued stripe.
    pub(crate) queued_by: HashMap<usize, usize>,
    /// What the last assessment of each queued stripe said.
    pub(crate) assessed: HashMap<usize, Assessment>,
    /// Stripes whose copies changed (a holder's state as the keepers see it, or a new copy)
    /// since the last pass: only these are assessed again, since an assessment depends on
    /// nothing else.
    pub(crate) dirty: HashSet<usize>,
    /// Each node's copies as the last pass saw them.
    pub(crate) seen: Vec<Replica>,
    pub(crate) margin: usize,
    pub(crate) objects_lost: HashSet<usize>,
    pub(crate) audits: Audits,
    pub(crate) epoch: u64,
    /// Per node: the copies (stripe, shard) it deleted but still claims.
    pub(crate) deleted: Vec<HashSet<(usize, usize)>>,
    /// Whether the ledger holds it faulty now.
    pub(crate) faulty: Vec<bool>,
    /// The epoch the ledger first held it faulty.
    pub(crate) detected: Vec<Option<u64>>,
    /// Per node: its copies that rotted and that its scrub has not reached yet (they are in
    /// `deleted` too: unreadable, and failing the audits that sample them).
    pub(crate) rotten: Vec<HashSet<(usize, usize)>>,
    /// What each node may still send and receive in this repair pass (`bandwidth_mib_s`).
    pub(crate) outbound: Vec<u64>,
    /// What each node may still receive in this repair pass.
    pub(crate) inbound: Vec<u64>,
    /// Whether its audits are judged and folded into the ledger (every adversary, and a
    /// sample of honest nodes), and what it earned and spent.
    pub(crate) accounts: Vec<Option<Account>>,
    /// Sybil groups: the identities on each shared disk, by the first one's index.
    pub(crate) groups: HashMap<usize, Vec<usize>>,
    /// Nodes by their key in the ledger.
    pub(crate) keys: HashMap<NodeKey, usize>,
    /// Events handled so far.
    pub events_handled: u64,
    pub(crate) report: Report,
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
            objects: Vec::new(),
            up: Vec::new(),
            live: Vec::new(),
            keeper_tags: Vec::new(),
            keeps: Vec::new(),
            queues: BTreeMap::new(),
            queued_by: HashMap::new(),
            assessed: HashMap::new(),
            dirty: HashSet::new(),
            seen: Vec::new(),
            margin,
            objects_lost: HashSet::new(),
            audits: Audits::new(
                Duration::from_secs_f64(scenario.proofs.deadline_seconds),
                scenario.proofs.challenges,
            ),
            epoch: 0,
            deleted: Vec::new(),
            faulty: Vec::new(),
            detected: Vec::new(),
            accounts: Vec::new(),
            rotten: Vec::new(),
            outbound: Vec::new(),
            inbound: Vec::new(),
            groups: HashMap::new(),
            keys: HashMap::new(),
            events_handled: 0,
            report: Report::new(&scenario, seed),
            scenario,
        };
        for _ in 0..w.scenario.network.nodes {
            w.add_node();
        }
        if w.scenario.proofs.enabled {
            w.recruit();
        }
        w.upload();
        if w.scenario.proofs.enabled {
            w.delete();
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

    pub(crate) fn at(&mut self, ms: u64, e: Event) {
        if ms <= self.end_ms {
            self.seq += 1;
            self.events.push(Reverse((ms, self.seq, e)));
        }
    }

    pub(crate) fn after_hours(&mut self, mean_hours: f64) -> u64 {
        self.now_ms
            .saturating_add((self.rng.exp(mean_hours) * HOUR_MS) as u64)
    }

    /// A new, empty node, with its first outage and its loss scheduled.
    fn add_node(&mut self) {
        let i = self.nodes.len();
        let id = self.rng.next_u64().to_le_bytes().to_vec();
        let labels = self.scenario.network.labels;
        self.deleted.push(HashSet::new());
        self.faulty.push(false);
        self.detected.push(None);
        self.accounts.push(None);
        self.rotten.push(HashSet::new());
        self.keeps.push(Vec::new());
        self.up.push(true);
        self.keeper_tags.push(cairn_policy::keeper::node_tag(&id));
        self.outbound.push(u64::MAX);
        self.inbound.push(u64::MAX);
        self.keys.insert(crate::proofs::key(&id), i);
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
            adversary: None,
            disk: i,
        });
        self.schedule_outage(i);
        self.schedule_rot(i);
        let losses = self.scenario.churn.losses_per_node_year;
        self.poisson(losses, Event::Loss(i));
    }

    /// Schedules `e` after an exponential wait at `per_year` events a year (none at 0).
    fn poisson(&mut self, per_year: f64, e: Event) {
        if per_year > 0.0 {
            let at = self
                .now_ms
                .saturating_add((self.rng.exp(1.0 / per_year) * YEAR_MS) as u64);
            self.at(at, e);
        }
    }

    /// The next copy to rot on node `i`: rot strikes bytes, so a fuller disk rots more often;
    /// the draw is taken at a full disk's rate and kept at the share of it in use.
    fn schedule_rot(&mut self, i: usize) {
        let rate = self.scenario.churn.bitrot_per_tib_year * self.nodes[i].capacity as f64
            / (1u64 << 40) as f64;
        self.poisson(rate, Event::Rot(i));
    }

    /// A byte of a copy on node `n` rots (when the draw falls in its used share): the copy
    /// can be read no more (reads verify), an audit that samples it fails, and the node's
    /// scrub finds it within a pass over its disk at `scrub_mib_s`.
    fn rot(&mut self, n: usize) {
        if self.nodes[n].life == Life::Gone {
            return;
        }
        self.schedule_rot(n);
        let node = &self.nodes[n];
        if node.holds.is_empty() || self.rng.unit() * node.capacity as f64 >= node.used as f64 {
            return;
        }
        let pick = node.holds[(self.rng.next_u64() % node.holds.len() as u64) as usize];
        if !self.deleted[n].insert(pick) {
            return;
        }
        self.rotten[n].insert(pick);
        self.report.copies_rotted += 1;
        self.dirty.insert(pick.0);
        self.recount(pick.0);
        self.check_lost(pick.0);
        // The scrub reads the disk front to back at its rate: it reaches the rot somewhere in
        // its pass.
        let pass_hours =
            self.nodes[n].used as f64 / (self.scenario.churn.scrub_mib_s * MIB as f64) / 3600.0;
        let found = self
            .now_ms
            .saturating_add((self.rng.unit() * pass_hours * HOUR_MS) as u64);
        self.at(found, Event::Scrubbed(n, pick.0, pick.1));
    }

    /// Node `n` found rotten copy (s, i), by its scrub or while proving: quarantined and
    /// deleted, and declared in its next commitment (a declared shard is no fault; an audit
    /// that met the rot before the node knew was one); the keepers see the shard gone
    /// and rebuild it.
    fn scrubbed(&mut self, n: usize, s: usize, i: usize) {
        if !self.rotten[n].remove(&(s, i)) {
            return;
        }
        self.report.rot_found += 1;
        let size = self.stripes[s].shards[i].size;
        self.stripes[s].shards[i].holders.retain(|&h| h != n);
        self.nodes[n].holds.retain(|&h| h != (s, i));
        self.nodes[n].used = self.nodes[n].used.saturating_sub(size);
        self.deleted[n].remove(&(s, i));
        self.dirty.insert(s);
        self.recount(s);
        self.refresh(n);
    }

    fn schedule_outage(&mut self, i: usize) {
        let rate = self.scenario.churn.outages_per_node_year;
        self.poisson(rate, Event::Outage(i));
    }

    /// Brings placement's view of node `n` up to date with its state and use (a node the
    /// ledger holds faulty is offered nothing, as `StopPlacing` says).
    pub(crate) fn refresh(&mut self, n: usize) {
        let node = &self.nodes[n];
        self.up[n] = node.life == Life::Up;
        self.cands[n].free = match node.life {
            Life::Up if !self.faulty[n] => node.capacity.saturating_sub(node.used),
            _ => 0,
        };
    }

    /// The identities on node `n`'s disk: a sybil group, or the node alone.
    pub(crate) fn group(&self, n: usize) -> Vec<usize> {
        self.groups
            .get(&self.nodes[n].disk)
            .cloned()
            .unwrap_or_else(|| vec![n])
    }

    /// Stores every object at the start, placed as a client places them.
    /// Stores the objects due at the start, and schedules the others over `upload_days`.
    fn upload(&mut self) {
        let d = &self.scenario.data;
        let (objects, spread) = (d.objects, d.upload_days * DAY_MS);
        for object in 0..objects {
            let at = (spread * object as f64 / objects as f64) as u64;
            if at == 0 {
                self.upload_object(object);
            } else {
                self.at(at, Event::Upload(object));
            }
        }
        self.report.objects = objects;
    }

    /// Stores one object's stripes, placed as a client places them.
    fn upload_object(&mut self, object: usize) {
        let d = self.scenario.data.clone();
        let size = d.shard_mib * MIB;
        let o = self.objects.len();
        let key = cids::raw(format!("manifest {object}").as_bytes()).to_bytes();
        let keepers = self.keepers_for(&key, &[], d.m + 1);
        self.objects.push(Object {
            key,
            stripes: Vec::new(),
            keepers: Vec::new(),
            lost: false,
        });
        self.set_keepers(o, keepers);
        {
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
                let mut taken = Vec::new();
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
                        taken.push((n, (index, i)));
                    } else {
                        self.report.shards_unplaced += 1;
                    }
                    shards.push(Shard { cid, size, holders });
                }
                self.report.stored_bytes +=
                    size * shards.iter().filter(|sh| !sh.holders.is_empty()).count() as u64;
                self.objects[o].stripes.push(index);
                self.stripes.push(Stripe {
                    object: o,
                    shards,
                    lost: false,
                });
                self.live.push(0);
                self.recount(index);
                for (n, copy) in taken {
                    self.received(n, copy);
                }
            }
        }
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
        self.finish_proofs();
        self.report.finish();
        self.report
    }

    pub(crate) fn now(&self) -> Time {
        Time::from_millis(self.now_ms)
    }

    fn handle(&mut self, e: Event) {
        match e {
            // A sybil group's disk fails as one: its first identity's events stand for all.
            Event::Outage(n) | Event::Dark(n) | Event::Loss(n) if self.nodes[n].disk != n => {}
            Event::Outage(n) => {
                if self.nodes[n].life == Life::Up {
                    self.down(n);
                    let back = self.after_hours(self.scenario.churn.outage_hours);
                    self.at(back, Event::Return(n, true));
                } else if self.nodes[n].life == Life::Down {
                    // Dark already: this outage is over before it could start.
                    self.schedule_outage(n);
                }
            }
            Event::Dark(n) => {
                let Some(Adversary::Dark {
                    dark_per_year,
                    dark_hours,
                    ..
                }) = self.nodes[n]
                    .adversary
                    .map(|a| self.scenario.proofs.adversaries[a].clone())
                else {
                    return;
                };
                if self.nodes[n].life == Life::Up {
                    self.down(n);
                    let back = self.after_hours(dark_hours);
                    self.at(back, Event::Return(n, false));
                }
                if self.nodes[n].life != Life::Gone && dark_per_year > 0.0 {
                    let next = self.after_hours(8760.0 / dark_per_year);
                    self.at(next, Event::Dark(n));
                }
            }
            Event::Return(n, outage) => {
                for g in self.group(n) {
                    if self.nodes[g].life == Life::Down {
                        self.nodes[g].life = Life::Up;
                        self.refresh(g);
                        self.touch(g);
                    }
                }
                if outage && self.nodes[n].life != Life::Gone {
                    self.schedule_outage(n);
                }
            }
            Event::Lapse(n, s, i) => self.lapse(n, s, i),
            Event::Upload(object) => self.upload_object(object),
            Event::Rot(n) => self.rot(n),
            Event::Scrubbed(n, s, i) => self.scrubbed(n, s, i),
            Event::Loss(n) => self.lose_disk(n),
            Event::DomainLoss => {
                // Every disk with an identity in the domain (a sybil's others go with it).
                let domain = Some("d0".to_string());
                let mut disks: Vec<usize> = (0..self.nodes.len())
                    .filter(|&n| self.nodes[n].label == domain)
                    .map(|n| self.nodes[n].disk)
                    .collect();
                disks.dedup();
                for d in disks {
                    self.lose_disk(d);
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
        }
    }

    /// Node `n` (and every identity on its disk) stops answering, keeping its data.
    fn down(&mut self, n: usize) {
        self.report.outages += 1;
        for g in self.group(n) {
            if self.nodes[g].life == Life::Up {
                self.nodes[g].life = Life::Down;
                self.refresh(g);
                self.touch(g);
            }
        }
    }

    /// A copy whose lease ran out is collected, unless the keepers hold it again: each shard
    /// keeps the copy `repair::designate` picks (its first live one, or every suspect one when
    /// none is live), and that copy's lease is carried another term.
    fn lapse(&mut self, n: usize, s: usize, i: usize) {
        let shard = &self.stripes[s].shards[i];
        if !shard.holders.contains(&n) {
            return;
        }
        let copies: Vec<(usize, Replica)> = shard
            .holders
            .iter()
            .map(|&h| (h, self.seen.get(h).copied().unwrap_or(Replica::Live)))
            .collect();
        let kept = designate(&[copies]).pop().unwrap_or_default();
        if kept.contains(&n) {
            let term = (self.scenario.leases.term_hours * HOUR_MS) as u64;
            self.at(
                self.now_ms.saturating_add(term.max(1)),
                Event::Lapse(n, s, i),
            );
            return;
        }
        let size = shard.size;
        self.stripes[s].shards[i].holders.retain(|&h| h != n);
        self.nodes[n].holds.retain(|&h| h != (s, i));
        self.nodes[n].used = self.nodes[n].used.saturating_sub(size);
        self.deleted[n].remove(&(s, i));
        self.rotten[n].remove(&(s, i));
        self.report.copies_collected += 1;
        self.dirty.insert(s);
        self.recount(s);
        self.refresh(n);
        // The copy kept may have been a deleter's (gone in truth): the stripe may be below k.
        self.check_lost(s);
    }

    /// Node `n`'s disk is lost, with every identity on it; a new node replaces it if the
    /// scenario says so.
    fn lose_disk(&mut self, n: usize) {
        if self.nodes[n].life == Life::Gone {
            return;
        }
        self.report.losses += 1;
        for g in self.group(n) {
            self.lose(g);
        }
        if self.scenario.churn.replace_lost {
            self.add_node();
        }
    }

    /// Node `n`'s copies are gone, for good.
    fn lose(&mut self, n: usize) {
        if self.nodes[n].life == Life::Gone {
            return;
        }
        self.nodes[n].life = Life::Gone;
        self.nodes[n].used = 0;
        self.refresh(n);
        let holds = self.nodes[n].holds.clone();
        for (s, _) in holds {
            self.check_lost(s);
        }
        // After the lost stripes are marked: the fewest live shards counts the others.
        self.touch(n);
    }

    /// Marks stripe `s` lost if fewer than `k` of its shards have a good copy on a node not
    /// gone.
    pub(crate) fn check_lost(&mut self, s: usize) {
        let stripe = &self.stripes[s];
        if stripe.lost {
            return;
        }
        let surviving = (0..stripe.shards.len())
            .filter(|&i| {
                stripe.shards[i].holders.iter().any(|&h| {
                    self.nodes[h].life != Life::Gone && !self.deleted[h].contains(&(s, i))
                })
            })
            .count();
        if surviving < self.scenario.data.k {
            self.mark_lost(s);
        }
    }

    /// Stripe `s` has fewer than `k` shards left anywhere: lost for good, and its object.
    pub(crate) fn mark_lost(&mut self, s: usize) {
        self.stripes[s].lost = true;
        self.report.stripes_lost += 1;
        self.lose_object(self.stripes[s].object);
    }

    /// Object `o` is lost for good (a stripe of it, or every copy of its manifest).
    pub(crate) fn lose_object(&mut self, o: usize) {
        if self.objects_lost.insert(o) && self.report.first_loss_day.is_none() {
            self.report.first_loss_day = Some(self.now_ms as f64 / DAY_MS);
        }
    }

    /// Node `n` went down, came back or was lost: the fewest live shards any stripe not lost
    /// has is updated.
    fn touch(&mut self, n: usize) {
        let mut fewest = self.report.fewest_live_shards;
        for j in 0..self.nodes[n].holds.len() {
            let s = self.nodes[n].holds[j].0;
            self.recount(s);
            if !self.stripes[s].lost {
                fewest = fewest.min(usize::from(self.live[s]));
            }
        }
        self.report.fewest_live_shards = fewest;
    }

    /// Counts again the shards of stripe `s` that can be read now: after any change to its
    /// copies or to the state of a node holding one.
    pub(crate) fn recount(&mut self, s: usize) {
        self.live[s] = self.readable(s).min(255) as u8;
    }

    /// Shards of `st` with a copy on a node that answers now.
    pub(crate) fn readable(&self, s: usize) -> usize {
        (0..self.stripes[s].shards.len())
            .filter(|&i| self.serves(s, i))
            .count()
    }

    /// Whether some node answering holds shard `i` of stripe `s` (a cheater's deleted copy
    /// does not count).
    pub(crate) fn serves(&self, s: usize, i: usize) -> bool {
        self.stripes[s].shards[i].holders.iter().any(|&h| {
            self.up[h] && (self.deleted[h].is_empty() || !self.deleted[h].contains(&(s, i)))
        })
    }

    /// Fewest shards of any stripe not lost that can be read now, and how many stripes cannot
    /// be read now.
    fn live_now(&self) -> (usize, usize) {
        let k = self.scenario.data.k;
        let mut fewest = usize::MAX;
        let mut unreadable = 0;
        for s in (0..self.stripes.len()).filter(|&s| !self.stripes[s].lost) {
            let live = usize::from(self.live[s]);
            debug_assert_eq!(live, self.readable(s), "stripe {s}'s count is stale");
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
            stripes: self.stripes.len(),
            fewest_live_shards: fewest,
            unreadable_stripes: unreadable,
            stripes_lost: self.report.stripes_lost,
            objects_lost: self.objects_lost.len(),
            repair_bytes: self.report.repair_read_bytes + self.report.repair_written_bytes,
            earnings: self.earnings_by_kind(),
        };
        self.report.fewest_live_shards = self.report.fewest_live_shards.min(fewest);
        self.report.daily.push(day);
    }
}
