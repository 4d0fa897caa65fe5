//! Repair as the keepers run it: each object's keepers (the nodes holding its manifest, the
//! first `m + 1` live nodes of its ranking, `cairn_policy::keeper`) keep the manifest at that
//! many copies, and the first live one in the ranking is in charge: it alone queues the
//! object's stripes that fell below `k + margin` (`repair::assess`, `RepairQueue`) and rebuilds
//! them within its own `repair.rate` (`RateLimit`), reading through `Fetch` and writing where
//! `placement::place_repair_first` says. An object none of whose keepers is live is repaired by
//! no one until one comes back; one whose every manifest copy is gone is lost.

use std::collections::HashSet;

use cairn_policy::keeper;
use cairn_policy::placement;
use cairn_policy::repair::{Assessment, Fetch, Health, NodeState, RateLimit, Replica, assess};

use crate::world::{Event, HOUR_MS, Life, MIB, World};

/// An object as its keepers see it.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    /// Its manifest's CID bytes: the key of its keeper ranking.
    pub(crate) key: Vec<u8>,
    /// Its stripes.
    pub(crate) stripes: Vec<usize>,
    /// The nodes holding its manifest, in ranking order.
    pub(crate) keepers: Vec<usize>,
    /// Every manifest copy is gone: no one knows the object any more.
    pub(crate) lost: bool,
}

impl World {
    /// The first `copies` nodes answering of `key`'s keeper ranking, skipping `holding`: where
    /// the manifest goes.
    pub(crate) fn keepers_for(&self, key: &[u8], holding: &[usize], copies: usize) -> Vec<usize> {
        let live = |i: usize| self.nodes[i].life == Life::Up && !holding.contains(&i);
        keeper::wanted_tagged(key, &self.keeper_tags, live, copies)
    }

    /// Records that `keepers` hold object `o`'s manifest (in ranking order).
    pub(crate) fn set_keepers(&mut self, o: usize, mut keepers: Vec<usize>) {
        for &k in &self.objects[o].keepers {
            self.keeps[k].retain(|&x| x != o);
        }
        let key = keeper::object_tag(&self.objects[o].key);
        keepers.sort_by_key(|&n| {
            (
                std::cmp::Reverse(keeper::score_tagged(key, self.keeper_tags[n])),
                n,
            )
        });
        keepers.dedup();
        for &k in &keepers {
            self.keeps[k].push(o);
        }
        self.objects[o].keepers = keepers;
    }

    /// The keeper in charge of object `o` as this pass sees it: the first keeper answering.
    fn in_charge(&self, o: usize) -> Option<usize> {
        keeper::in_charge(
            &self.objects[o].keepers,
            |n| self.seen[n] == Replica::Live,
            |_| true,
        )
    }

    /// The keeper in charge of each object whose keepers changed keeps its manifest at
    /// `m + 1` copies, as `keeper::copies_to_make` says: the first `m + 1` nodes of the
    /// ranking that answer (faulty ones do not count) get a copy if they lack one; copies on
    /// lost disks are gone, and an object with none left is lost. (The node looks at every
    /// object it keeps each pass; the simulator at those whose keepers changed, and only when
    /// fewer than `m + 1` of them answer.)
    fn keep_manifests(&mut self, objects: Vec<usize>) {
        let copies = self.scenario.data.m + 1;
        for o in objects {
            if self.objects[o].lost {
                continue;
            }
            let alive: Vec<usize> = self.objects[o]
                .keepers
                .iter()
                .copied()
                .filter(|&k| self.nodes[k].life != Life::Gone)
                .collect();
            if alive.is_empty() {
                self.objects[o].lost = true;
                self.report.manifests_lost += 1;
                let stripes = self.objects[o].stripes.clone();
                for s in stripes {
                    self.forget(s);
                }
                self.lose_object(o);
                continue;
            }
            let mut keepers = alive.clone();
            let answering = alive
                .iter()
                .filter(|&&k| self.seen[k] == Replica::Live)
                .count();
            // With `m + 1` keepers answering there is nothing to copy (but for a node that
            // joined since and ranks above them, which the simulator leaves out).
            if answering > 0 && answering < copies {
                let seen = &self.seen;
                let wanted = keeper::wanted_tagged(
                    &self.objects[o].key,
                    &self.keeper_tags,
                    |i| seen.get(i) == Some(&Replica::Live),
                    copies,
                );
                let more: Vec<usize> = wanted.into_iter().filter(|i| !alive.contains(i)).collect();
                self.report.manifest_copies_made += more.len() as u64;
                keepers.extend(more);
            }
            if keepers != self.objects[o].keepers {
                self.set_keepers(o, keepers);
            }
        }
    }

    /// Stripe `s` is in no keeper's queue.
    fn forget(&mut self, s: usize) {
        if let Some(k) = self.queued_by.remove(&s)
            && let Some(q) = self.queues.get_mut(&k)
        {
            q.remove(&s);
        }
        self.assessed.remove(&s);
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

    /// One pass of every keeper in charge: nodes are asked; manifests whose keepers changed
    /// are kept at their copies; every stripe whose copies or keepers changed is assessed again
    /// and queued with the keeper in charge of its object; each keeper rebuilds from its queue,
    /// closest to loss first, within its own rate for the interval.
    pub(crate) fn repair_pass(&mut self) {
        let now = self.now();
        let seen = self.look();
        let mut objects = Vec::new();
        for (n, r) in seen.iter().enumerate() {
            if self.seen.get(n) != Some(r) {
                for &(s, _) in &self.nodes[n].holds {
                    self.dirty.insert(s);
                }
                objects.extend(self.keeps[n].iter().copied());
            }
        }
        self.seen = seen;
        objects.sort_unstable();
        objects.dedup();
        for &o in &objects {
            for &s in &self.objects[o].stripes {
                self.dirty.insert(s);
            }
        }
        self.keep_manifests(objects);
        let mut dirty: Vec<usize> = self.dirty.drain().collect();
        dirty.sort_unstable();
        let k = self.scenario.data.k;
        for s in dirty {
            let object = self.stripes[s].object;
            let a = self.assess(s);
            let charge = self.in_charge(object);
            if self.stripes[s].lost
                || self.objects[object].lost
                || a.rebuild.is_empty()
                || a.health == Health::Lost
            {
                self.forget(s);
                continue;
            }
            let Some(keeper) = charge else {
                // No keeper answers: no one repairs the object until one comes back.
                self.forget(s);
                self.report.stripes_without_keeper += 1;
                continue;
            };
            if self.queued_by.get(&s).is_some_and(|&q| q != keeper) {
                self.forget(s);
            }
            self.queues
                .entry(keeper)
                .or_default()
                .push(s, a.live.saturating_sub(k), now);
            self.queued_by.insert(s, keeper);
            self.assessed.insert(s, a);
        }
        let bandwidth = self.scenario.network.bandwidth_mib_s;
        let each = if bandwidth == 0 {
            u64::MAX
        } else {
            (bandwidth as f64 * MIB as f64 * self.scenario.repair.interval_hours * 3600.0) as u64
        };
        self.outbound.fill(each);
        self.inbound.fill(each);
        // Each keeper at `repair.rate` for the interval.
        let rate = self.scenario.repair.rate_mib_s.saturating_mul(MIB);
        let burst = (rate as f64 * self.scenario.repair.interval_hours * 3600.0) as u64;
        let keepers: Vec<usize> = self.queues.keys().copied().collect();
        for keeper in keepers {
            let mut limit = RateLimit::new(rate, burst.max(1), now);
            while let Some(&s) = self.queues.get_mut(&keeper).and_then(|q| q.peek()) {
                let Some(a) = self.assessed.get(&s) else {
                    if let Some(q) = self.queues.get_mut(&keeper) {
                        q.remove(&s);
                    }
                    self.forget(s);
                    continue;
                };
                let size = self.stripes[s]
                    .shards
                    .iter()
                    .map(|sh| sh.size)
                    .max()
                    .unwrap_or(0);
                let cost = size.saturating_mul((k + a.rebuild.len()) as u64);
                if limit.take(cost, now).is_err() {
                    // Left for the next pass where it is, as urgent and as old as it was.
                    break;
                }
                let Some(a) = self.assessed.remove(&s) else {
                    continue;
                };
                if let Some(q) = self.queues.get_mut(&keeper) {
                    let _ = q.pop();
                }
                self.queued_by.remove(&s);
                self.rebuild(s, &a);
                // Assessed again next pass: a shard that found no room is queued again.
                self.dirty.insert(s);
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// Rebuilds the missing shards of stripe `s` from `k` live ones onto the best nodes that
    /// hold nothing of it.
    fn rebuild(&mut self, s: usize, a: &Assessment) {
        let k = self.scenario.data.k;
        let readable: Vec<usize> = (0..self.stripes[s].shards.len())
            .filter(|&i| self.serves(s, i))
            .collect();
        if readable.len() < k {
            return;
        }
        // Where each missing shard goes, before anything is read: a rebuild with nowhere to
        // write reads nothing.
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
        let mut targets = Vec::new();
        for &i in &a.rebuild {
            let (cid, size) = {
                let sh = &self.stripes[s].shards[i];
                (sh.cid, sh.size)
            };
            let (cands, inbound) = (&self.cands, &self.inbound);
            let fits = |n: usize| cands[n].free >= size && inbound[n] >= size;
            if let Some(n) = placement::place_repair_first(&cid, cands, &exclude, &labels, fits) {
                exclude.insert(n);
                labels.insert(self.nodes[n].label.clone());
                targets.push((i, n, size));
            }
        }
        if targets.is_empty() {
            return;
        }
        let mut fetch = Fetch::new(k, readable);
        let mut read = 0;
        let mut senders = Vec::new();
        while !fetch.complete() && !fetch.failed() {
            for i in fetch.start() {
                let size = self.stripes[s].shards[i].size;
                // A node serving the shard with the bandwidth left in this pass to send it.
                let from = self.stripes[s].shards[i]
                    .holders
                    .iter()
                    .copied()
                    .find(|&h| {
                        self.nodes[h].life == Life::Up
                            && !self.deleted[h].contains(&(s, i))
                            && self.outbound[h] >= size
                    });
                if let Some(h) = from {
                    self.outbound[h] -= size;
                    senders.push((h, size));
                    read += size;
                }
                fetch.done(i, from.is_some());
            }
        }
        if !fetch.complete() {
            // Not this pass: what was sent is given back (a keeper asks the sources first),
            // and the stripe stays queued.
            for (h, size) in senders {
                self.outbound[h] += size;
            }
            self.report.rebuilds_short_of_bandwidth += 1;
            return;
        }
        self.report.repair_read_bytes += read;
        let term = (self.scenario.leases.term_hours * HOUR_MS) as u64;
        for (i, n, size) in targets {
            self.inbound[n] -= size;
            self.nodes[n].used += size;
            self.refresh(n);
            // The copies it replaces are no longer held: collected when their lease ends.
            let old: Vec<usize> = self.stripes[s].shards[i]
                .holders
                .iter()
                .copied()
                .filter(|&h| self.nodes[h].life != Life::Gone)
                .collect();
            for h in old {
                self.at(self.now_ms.saturating_add(term), Event::Lapse(h, s, i));
            }
            self.nodes[n].holds.push((s, i));
            // The keeper names the new copy first: it is the one leases go on being carried to.
            self.stripes[s].shards[i].holders.insert(0, n);
            self.received(n, (s, i));
            self.report.repair_written_bytes += size;
            self.report.shards_rebuilt += 1;
        }
        self.recount(s);
    }
}
