//! Epochs: who the adversaries are, what each answers when audited, what the ledger makes of
//! it, and what every judged node earns and spends.
//!
//! Each adversary kind answers as such a node would:
//!
//! | kind | answer |
//! |---|---|
//! | honest, sybil, dark (while up) | a proof that verifies, in `answer_seconds` on average |
//! | deleter | a proof that fails when a challenged position falls in a deleted shard |
//! | late | as honest, but this share of answers after the deadline (inside the grace) |
//! | fetcher | as honest when no position falls in a deleted shard; else it reads the chunks' ranges from `k` other shards of the stripe and decodes them: in time if `fetch_seconds` allows, a failure if fewer than `k` are readable |
//! | any node down | unreachable |
//!
//! Earnings (per judged node; a sybil's per disk, summing its identities): the reward for the
//! byte-epochs the ledger counts proven, less a penalty per fault the ledger records, less the
//! cost of the bytes really on disk, of the bytes fetched to answer audits, and of running each
//! identity. Repair reads a node serves are left out: the network pays them at cost, as Storj
//! pays repair egress, so they net to nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_proofs::audit::{Checked, Question};
use cairn_proofs::chunk::CHUNK_BYTES;
use cairn_proofs::ledger::Action;
use cairn_proofs::proof::{Fault, FaultKind, Proven};
use serde::Serialize;

use crate::proofs::{Answer, key};
use crate::report::Kind;
use crate::scenario::Adversary;
use crate::world::{Event, Life, World};

const TIB: f64 = (1u64 << 40) as f64;
/// Hours in the month prices are quoted for.
const MONTH_HOURS: f64 = 720.0;

/// What a judged node spent so far (what it earned is in the ledger).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Account {
    /// Sum over epochs of the bytes really on its disk.
    pub disk_byte_hours: f64,
    /// Bytes it fetched to answer audits (a fetcher's ranges of other shards).
    pub fetched_bytes: u64,
    /// Epochs it existed (not lost).
    pub hours: f64,
}

impl World {
    /// Chooses the adversaries among the starting nodes (before anything is stored: a sybil's
    /// identities split one disk's capacity) and the honest nodes whose audits are judged.
    pub(crate) fn recruit(&mut self) {
        let n = self.nodes.len();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut next = order.into_iter();
        let adversaries = self.scenario.proofs.adversaries.clone();
        for (a, adv) in adversaries.iter().enumerate() {
            let count = (adv.share() * n as f64).round() as usize;
            let picked: Vec<usize> = next.by_ref().take(count).collect();
            for &p in &picked {
                self.nodes[p].adversary = Some(a);
                self.accounts[p] = Some(Account::default());
            }
            match *adv {
                Adversary::Sybil { identities, .. } => {
                    for group in picked.chunks(identities.max(1)) {
                        let disk = group[0];
                        for &p in group {
                            self.nodes[p].disk = disk;
                            self.nodes[p].capacity /= group.len() as u64;
                            self.refresh(p);
                        }
                        self.groups.insert(disk, group.to_vec());
                    }
                }
                Adversary::Dark { dark_per_year, .. } if dark_per_year > 0.0 => {
                    for &p in &picked {
                        let at = self.after_hours(8760.0 / dark_per_year);
                        self.at(at, Event::Dark(p));
                    }
                }
                _ => {}
            }
        }
        let sample = self.scenario.proofs.honest_sample;
        for p in next.take(sample) {
            self.accounts[p] = Some(Account::default());
        }
    }

    /// Deleters and fetchers delete their share of the copies they were given, at least one,
    /// and go on claiming them. A stripe left with fewer than `k` real shards is lost.
    pub(crate) fn delete(&mut self) {
        for n in 0..self.nodes.len() {
            let share = match self.nodes[n]
                .adversary
                .map(|a| &self.scenario.proofs.adversaries[a])
            {
                Some(Adversary::Deleter { deleted, .. } | Adversary::Fetcher { deleted, .. }) => {
                    *deleted
                }
                _ => continue,
            };
            let mut holds = self.nodes[n].holds.clone();
            let count = ((holds.len() as f64 * share).round() as usize)
                .max(usize::from(share > 0.0))
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
            if kept < k {
                self.check_lost(s);
            }
            self.recount(s);
        }
    }

    /// One epoch of audits. Each judged node is audited by `audits_per_epoch` random nodes
    /// answering, and again by every auditor holding it in containment; its answer is judged
    /// by the auditor's rules and folded into the ledger, whose actions the network follows.
    /// The other honest nodes' audits are counted as passes.
    pub(crate) fn audit_all(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].life == Life::Up)
            .collect();
        if up.len() < 2 {
            return;
        }
        let per = self.audits.config().audits_per_epoch;
        let epoch = self.epoch;
        let mut passed = 0u64;
        for p in 0..self.nodes.len() {
            if self.nodes[p].life == Life::Gone {
                continue;
            }
            // An honest node outside the sample is judged only while it holds rot its scrub
            // has not found: otherwise every audit of it passes.
            if self.accounts[p].is_none() && self.deleted[p].is_empty() {
                if self.nodes[p].life == Life::Up {
                    passed += per as u64;
                }
                continue;
            }
            let on_disk = self.disk_bytes(p);
            if let Some(acc) = self.accounts[p].as_mut() {
                acc.hours += 1.0;
                acc.disk_byte_hours += on_disk as f64;
            }
            let mut auditors: Vec<usize> = self
                .audits
                .containing(p)
                .into_iter()
                .filter(|&a| self.nodes[a].life == Life::Up)
                .collect();
            // `per` more, distinct, neither the node itself nor one asking again already.
            let fresh = up
                .len()
                .saturating_sub(auditors.len() + usize::from(self.nodes[p].life == Life::Up));
            let want = auditors.len() + per.min(fresh);
            while auditors.len() < want {
                let a = up[(self.rng.next_u64() % up.len() as u64) as usize];
                if a != p && !auditors.contains(&a) {
                    auditors.push(a);
                }
            }
            let committed = self.nodes[p].used;
            for a in auditors {
                let (aid, pid) = (self.nodes[a].id.clone(), self.nodes[p].id.clone());
                let q = self
                    .audits
                    .question(&mut self.rng, epoch, (a, &aid), (p, &pid), committed);
                let answer = self.answer(p, &q);
                let (_, actions) = self.audits.judge(epoch, (a, p), &q, answer);
                self.follow(actions);
            }
        }
        self.audits.passed(passed);
        let actions = self.audits.tick(epoch);
        self.follow(actions);
    }

    /// Node `n` took a copy after the start: a deleter or a fetcher deletes it with its
    /// share's chance (the copies it had at the start are deleted by [`World::delete`]).
    pub(crate) fn received(&mut self, n: usize, copy: (usize, usize)) {
        if self.now_ms == 0 {
            return;
        }
        let share = match self.nodes[n]
            .adversary
            .map(|a| &self.scenario.proofs.adversaries[a])
        {
            Some(Adversary::Deleter { deleted, .. } | Adversary::Fetcher { deleted, .. }) => {
                *deleted
            }
            _ => return,
        };
        if self.rng.unit() < share {
            self.deleted[n].insert(copy);
            self.recount(copy.0);
            self.check_lost(copy.0);
        }
    }

    /// Bytes really on node `p`'s disk: what it committed less what it deleted.
    fn disk_bytes(&self, p: usize) -> u64 {
        let gone: u64 = self.deleted[p]
            .iter()
            .map(|&(s, i)| self.stripes[s].shards[i].size)
            .sum();
        self.nodes[p].used.saturating_sub(gone)
    }

    /// What node `p` answers to `q`, and when.
    fn answer(&mut self, p: usize, q: &Question) -> Answer {
        if self.nodes[p].life != Life::Up {
            return Answer {
                checked: Checked::Unreachable,
                latency: Duration::ZERO,
            };
        }
        let proofs = &self.scenario.proofs;
        let mut latency = Duration::from_secs_f64(self.rng.exp(proofs.answer_seconds));
        let proven = Checked::Proven(Proven {
            bytes: self.nodes[p].used,
            shards: Vec::new(),
            declared: Vec::new(),
        });
        let failed = || {
            Checked::Failed(Fault {
                kind: FaultKind::BadChunk,
                shards: Vec::new(),
            })
        };
        let adversary = self.nodes[p]
            .adversary
            .map(|a| proofs.adversaries[a].clone());
        let sizes: Vec<u64> = self.nodes[p]
            .holds
            .iter()
            .map(|&(s, i)| self.stripes[s].shards[i].size)
            .collect();
        let checked = match adversary {
            None
            | Some(Adversary::Sybil { .. } | Adversary::Dark { .. } | Adversary::Late { .. }) => {
                if let Some(Adversary::Late { late, .. }) = adversary
                    && self.rng.unit() < late
                {
                    let config = self.audits.config();
                    latency = config.deadline + config.grace.mul_f64(0.1 + 0.8 * self.rng.unit());
                }
                // Rot the scrub has not found yet fails the audits that sample it. The node sees
                // it while proving (a chunk that does not match its shard is never sent): it
                // answers that the shard is lost and quarantines it, so its next commitment
                // declares it; this epoch's other audits of the same commitment still meet it.
                let (holds, rotten) = (&self.nodes[p].holds, &self.rotten[p]);
                let hits = if rotten.is_empty() {
                    Vec::new()
                } else {
                    self.audits
                        .sample(&q.challenge, &sizes, false, |j| rotten.contains(&holds[j]))
                };
                if hits.is_empty() {
                    proven
                } else {
                    self.report.audits_failed_on_rot += 1;
                    for j in hits {
                        let (s, i) = self.nodes[p].holds[j];
                        self.at(self.now_ms + 1, Event::Scrubbed(p, s, i));
                    }
                    Checked::Lost {
                        shards: Vec::new(),
                        reason: "challenged shards are corrupt here".into(),
                    }
                }
            }
            Some(Adversary::Deleter { .. }) => {
                let (holds, deleted) = (&self.nodes[p].holds, &self.deleted[p]);
                let hits = self
                    .audits
                    .sample(&q.challenge, &sizes, true, |j| deleted.contains(&holds[j]));
                if hits.is_empty() {
                    proven
                } else {
                    self.audits.failures += 1;
                    failed()
                }
            }
            Some(Adversary::Fetcher { fetch_seconds, .. }) => {
                let (holds, deleted) = (&self.nodes[p].holds, &self.deleted[p]);
                let hits = self
                    .audits
                    .sample(&q.challenge, &sizes, false, |j| deleted.contains(&holds[j]));
                if hits.is_empty() {
                    proven
                } else {
                    let k = self.scenario.data.k;
                    let rebuildable = hits.iter().all(|&j| {
                        let (s, _) = self.nodes[p].holds[j];
                        !self.stripes[s].lost && self.readable(s) >= k
                    });
                    let fetched = hits.len() as u64 * k as u64 * CHUNK_BYTES;
                    if let Some(acc) = self.accounts[p].as_mut() {
                        acc.fetched_bytes += fetched;
                    }
                    latency += Duration::from_secs_f64(fetch_seconds);
                    if rebuildable { proven } else { failed() }
                }
            }
        };
        Answer { checked, latency }
    }

    /// Does what the ledger says: a faulty node is offered no data and its copies count as
    /// lost (the keepers' view); one no longer faulty is offered data again.
    fn follow(&mut self, actions: Vec<Action>) {
        for a in actions {
            let (node, faulty) = match a {
                Action::StopPlacing { node } => (node, true),
                Action::ResumePlacing { node } => (node, false),
                Action::Repair { .. } => continue,
            };
            let Some(&n) = self.keys.get(&node) else {
                continue;
            };
            self.faulty[n] = faulty;
            if faulty {
                self.detected[n].get_or_insert(self.epoch);
            }
            self.refresh(n);
        }
    }

    /// What judged node `n` has earned so far, net of its costs.
    fn earned(&self, n: usize) -> Option<f64> {
        let acc = self.accounts[n].as_ref()?;
        let e = &self.scenario.economics;
        let (proven, faults) = self
            .audits
            .ledger()
            .record(&key(&self.nodes[n].id))
            .map_or((0, 0), |r| (r.proven_byte_epochs, r.faults));
        Some(
            e.reward_per_tib_month * proven as f64 / TIB / MONTH_HOURS
                - e.penalty_per_fault * faults as f64
                - e.disk_per_tib_month * acc.disk_byte_hours / TIB / MONTH_HOURS
                - e.bandwidth_per_tib * acc.fetched_bytes as f64 / TIB
                - e.node_per_month * acc.hours / MONTH_HOURS,
        )
    }

    /// The judged nodes by kind ("honest" first, then each adversary in the scenario's order):
    /// for sybils, one entry per disk (its identities together).
    fn judged_by_kind(&self) -> Vec<(String, Vec<Vec<usize>>)> {
        let mut kinds: Vec<(String, Vec<Vec<usize>>)> = vec![("honest".into(), Vec::new())];
        let all = &self.scenario.proofs.adversaries;
        for (i, a) in all.iter().enumerate() {
            // Two adversaries of one kind are told apart by their place in the scenario.
            let twins = all.iter().filter(|b| b.name() == a.name()).count();
            let name = if twins > 1 {
                format!("{}-{}", a.name(), i + 1)
            } else {
                a.name().to_string()
            };
            kinds.push((name, Vec::new()));
        }
        for n in 0..self.nodes.len() {
            if self.accounts[n].is_none() || self.nodes[n].disk != n {
                continue;
            }
            let at = self.nodes[n].adversary.map_or(0, |a| a + 1);
            kinds[at].1.push(self.group(n));
        }
        kinds
    }

    /// Mean earnings so far of each kind of judged node, per disk.
    pub(crate) fn earnings_by_kind(&self) -> BTreeMap<String, f64> {
        self.judged_by_kind()
            .into_iter()
            .filter(|(_, disks)| !disks.is_empty())
            .map(|(name, disks)| {
                let total: f64 = disks
                    .iter()
                    .map(|d| d.iter().filter_map(|&n| self.earned(n)).sum::<f64>())
                    .sum();
                (name, total / disks.len() as f64)
            })
            .collect()
    }

    /// The proofs' part of the report.
    pub(crate) fn finish_proofs(&mut self) {
        if !self.scenario.proofs.enabled {
            return;
        }
        self.report.audits = self.audits.audits;
        self.report.audit_failures = self.audits.failures;
        self.report.audit_failures_expected = self.audits.expected_failures;
        self.report.verdicts = self
            .audits
            .verdicts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        self.report.honest_faulty = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].adversary.is_none() && self.detected[n].is_some())
            .count();
        let earnings = self.earnings_by_kind();
        let honest = earnings.get("honest").copied();
        let mut kinds = Vec::new();
        for (i, (name, disks)) in self.judged_by_kind().into_iter().enumerate() {
            if i > 0 && disks.is_empty() {
                continue;
            }
            let nodes: Vec<usize> = disks.iter().flatten().copied().collect();
            let found: Vec<u64> = nodes.iter().filter_map(|&n| self.detected[n]).collect();
            let disk_hours: f64 = nodes
                .iter()
                .filter_map(|&n| self.accounts[n].as_ref())
                .map(|a| a.disk_byte_hours)
                .sum();
            let mean = earnings.get(&name).copied().unwrap_or(0.0);
            kinds.push(Kind {
                pays: i > 0 && honest.is_some_and(|h| mean >= h),
                name,
                nodes: nodes.len(),
                disks: disks.len(),
                detected: found.len(),
                detection_epochs_mean: if found.is_empty() {
                    0.0
                } else {
                    found.iter().sum::<u64>() as f64 / found.len() as f64
                },
                detection_epochs_max: found.iter().copied().max().unwrap_or(0),
                earnings_per_disk: mean,
                disk_tib_months: disk_hours / TIB / MONTH_HOURS / disks.len().max(1) as f64,
            });
        }
        self.report.kinds = kinds;
    }
}
