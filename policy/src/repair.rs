//! Repair: how healthy a stripe is, when it is rebuilt, which first, and how fast.
//!
//! The keeper in charge of an object (see [`crate::keeper`]) looks at every stripe's shards
//! and where their copies are, and this module decides:
//!
//! * [`Liveness`]: a node that stops answering is *suspect* for a grace period (a restart is
//!   not a loss) and *lost* after it. Its copies count as live while it is suspect.
//! * [`assess`]: a stripe's [`Health`] from the state of every copy of its shards, which
//!   shards must be rebuilt (no live copy) and which only moved (their only copies sit on
//!   draining nodes). Repair is lazy: a stripe is rebuilt only once its live shards fall below
//!   `k + margin`, and then every missing shard is rebuilt at once, so the `k` shards read are
//!   paid for once per several losses.
//! * [`RepairQueue`]: stripes closest to loss first, then the longest waiting.
//! * [`RateLimit`]: a token bucket over the bytes a node's repairs read and write.
//! * [`Fetch`]: which `k` shards to read for a rebuild, and which next when one fails, so a
//!   rebuild reads `k` shards' bytes, not more.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use crate::time::Time;

/// The repair settings of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairParams {
    /// A stripe is rebuilt once fewer than `k + margin` of its shards are live.
    pub margin: usize,
    /// How long a node may be unreachable before its copies count as lost.
    pub grace: Duration,
}

impl RepairParams {
    /// The default margin for a code with `m` parity shards: `m - m/4` (at least one), so a
    /// small code is repaired at its first loss and a wide one waits for a few.
    pub fn default_margin(m: usize) -> usize {
        (m - m / 4).max(1)
    }
}

/// What [`Liveness`] says of a node now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Answered when last asked.
    Up,
    /// Not answering, for less than the grace period: its copies still count.
    Suspect,
    /// Not answering for the whole grace period: its copies are lost.
    Lost,
}

/// Since when each node has not answered.
#[derive(Debug, Clone)]
pub struct Liveness<K> {
    grace: Duration,
    silent_since: HashMap<K, Time>,
}

impl<K: Eq + Hash + Clone> Liveness<K> {
    /// Nodes are lost after `grace` without an answer.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            silent_since: HashMap::new(),
        }
    }

    /// `node` answered at `now`: it is up, whatever came before.
    pub fn answered(&mut self, node: &K) {
        self.silent_since.remove(node);
    }

    /// `node` did not answer at `now` (or is not known to the network any more). The first
    /// such time is kept, so asking again does not restart the grace period.
    pub fn silent(&mut self, node: &K, now: Time) {
        self.silent_since.entry(node.clone()).or_insert(now);
    }

    /// The node's state at `now`.
    pub fn state(&self, node: &K, now: Time) -> NodeState {
        match self.silent_since.get(node) {
            None => NodeState::Up,
            Some(&since) if now.since(since) < self.grace => NodeState::Suspect,
            Some(_) => NodeState::Lost,
        }
    }

    /// Nodes silent since before `now - grace`, and since when.
    pub fn lost(&self, now: Time) -> impl Iterator<Item = (&K, Time)> + '_ {
        self.silent_since
            .iter()
            .filter(move |(_, since)| now.since(**since) >= self.grace)
            .map(|(k, t)| (k, *t))
    }
}

/// One copy of a shard, as the keeper found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replica {
    /// Its node holds it intact and is up.
    Live,
    /// Its node holds it but is leaving the network: it must be moved, not rebuilt.
    Draining,
    /// Its node has not answered for less than the grace period.
    Suspect,
    /// Lost: its node is lost or faulty, or answered that the copy is absent or corrupt.
    Lost,
}

/// A stripe's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Fewer than `k` shards are live: unreadable until a suspect node comes back.
    Lost,
    /// Exactly `k` shards are live: one more loss loses data.
    AtRisk,
    /// Below `k + margin`: being rebuilt.
    Repair,
    /// Some shards are missing, but at least `k + margin` are live: left alone (lazy repair).
    Degraded,
    /// Every shard has a live copy.
    Healthy,
}

impl Health {
    /// A name for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Health::Lost => "lost",
            Health::AtRisk => "at_risk",
            Health::Repair => "repair",
            Health::Degraded => "degraded",
            Health::Healthy => "healthy",
        }
    }
}

/// What [`assess`] found of a stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Shards with a copy that counts (live, draining or suspect).
    pub live: usize,
    /// The stripe's health.
    pub health: Health,
    /// Shards to rebuild from `k` others (no copy counts), when the stripe needs repair;
    /// empty otherwise, or when the stripe is lost.
    pub rebuild: Vec<usize>,
    /// Shards whose only counting copies are on draining nodes: copied off them (whatever
    /// the stripe's health), before those nodes leave.
    pub moves: Vec<usize>,
}

/// Assesses a stripe of `k` data shards whose shard `i` has the copies `copies[i]`.
pub fn assess(k: usize, copies: &[Vec<Replica>], margin: usize) -> Assessment {
    let counts = |c: &Replica| matches!(c, Replica::Live | Replica::Draining | Replica::Suspect);
    let live = copies.iter().filter(|cs| cs.iter().any(counts)).count();
    let total = copies.len();
    let health = if live < k {
        Health::Lost
    } else if live == total {
        Health::Healthy
    } else if live == k {
        Health::AtRisk
    } else if live < k + margin {
        Health::Repair
    } else {
        Health::Degraded
    };
    let rebuild = match health {
        Health::AtRisk | Health::Repair => (0..total)
            .filter(|&i| !copies[i].iter().any(counts))
            .collect(),
        _ => Vec::new(),
    };
    let moves = (0..total)
        .filter(|&i| {
            copies[i].contains(&Replica::Draining)
                && !copies[i]
                    .iter()
                    .any(|c| matches!(c, Replica::Live | Replica::Suspect))
        })
        .collect();
    Assessment {
        live,
        health,
        rebuild,
        moves,
    }
}

/// Which copies of a stripe's shards the keeper in charge keeps leased: the ones it carries
/// the owners' statements to. `copies[i]` lists shard `i`'s copies as (node, state) in the
/// stable order [`crate::keeper::ranking`] gives their node ids for the shard's CID, the order a
/// keeper also carries a new statement in at once (to the first holder its receipts name), so
/// that both keep the same copy. Each shard keeps its first live copy. Every other copy (a
/// hedge's spare, the old holder's once a repaired-around node is back, a draining node's once
/// moved) is left to lapse when its current holds end: nothing is deleted early (a node never
/// deletes under a live hold), and repair counts only live copies anyway. A shard with no live
/// copy keeps every suspect or draining copy leased (where they can be reached): which of them
/// comes back is not known; the caller passes a copy that must not count for repair but may be
/// the last (an intact copy on a faulty node) as suspect. Lost copies get nothing.
pub fn designate<N: Copy>(copies: &[Vec<(N, Replica)>]) -> Vec<Vec<N>> {
    copies
        .iter()
        .map(|cs| match cs.iter().find(|(_, r)| *r == Replica::Live) {
            Some((n, _)) => vec![*n],
            None => cs
                .iter()
                .filter(|(_, r)| matches!(r, Replica::Suspect | Replica::Draining))
                .map(|(n, _)| *n)
                .collect(),
        })
        .collect()
}

/// Which shards a rebuild reads: `k` of those with a live copy, data shards first (a stripe
/// whose data shards are all there needs no decoding for them), the next one when a fetch
/// fails. Every fetch started is one the rebuild needs, so it reads `k` shards' bytes when
/// nothing fails.
#[derive(Debug, Clone)]
pub struct Fetch {
    need: usize,
    untried: Vec<usize>,
    got: Vec<usize>,
    in_flight: usize,
}

impl Fetch {
    /// A rebuild needing `k` of the shards `readable` (indices with a live copy).
    pub fn new(k: usize, mut readable: Vec<usize>) -> Self {
        readable.sort_unstable();
        readable.dedup();
        readable.reverse();
        Self {
            need: k,
            untried: readable,
            got: Vec::new(),
            in_flight: 0,
        }
    }

    /// The shards to fetch now: as many as are still needed beyond those in flight.
    pub fn start(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        while self.got.len() + self.in_flight < self.need {
            let Some(i) = self.untried.pop() else { break };
            self.in_flight += 1;
            out.push(i);
        }
        out
    }

    /// A fetch finished: `ok` if the shard arrived verified.
    pub fn done(&mut self, index: usize, ok: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if ok {
            self.got.push(index);
        }
    }

    /// Whether `k` shards have arrived.
    pub fn complete(&self) -> bool {
        self.got.len() >= self.need
    }

    /// Whether the rebuild can no longer get `k` shards.
    pub fn failed(&self) -> bool {
        !self.complete() && self.in_flight == 0 && self.untried.is_empty()
    }
}

/// A token bucket over bytes: at most `rate` per second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: u64,
    burst: u64,
    tokens: f64,
    at: Time,
}

impl RateLimit {
    /// `rate` bytes per second (0: unlimited), up to `burst` bytes at once.
    pub fn new(rate: u64, burst: u64, now: Time) -> Self {
        Self {
            rate,
            burst,
            tokens: burst as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Time) {
        let dt = now.since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst as f64);
    }

    /// Takes `bytes` at `now` if the bucket allows, or says how long to wait first. A job
    /// larger than the burst waits for a full bucket and then goes (the bucket goes into
    /// debt), so no job waits forever.
    pub fn take(&mut self, bytes: u64, now: Time) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        self.refill(now);
        let want = (bytes as f64).min(self.burst as f64);
        if self.tokens >= want {
            self.tokens -= bytes as f64;
            return Ok(());
        }
        let missing = want - self.tokens;
        Err(Duration::from_secs_f64(missing / self.rate as f64))
    }
}

/// A stripe waiting for repair: urgency first (fewest live shards beyond `k`), then age.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting<K> {
    spare: usize,
    since: Time,
    seq: u64,
    key: K,
}

impl<K: Ord> Ord for Waiting<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap pops the greatest: the fewest spare, then the oldest.
        other
            .spare
            .cmp(&self.spare)
            .then(other.since.cmp(&self.since))
            .then(other.seq.cmp(&self.seq))
    }
}

impl<K: Ord> PartialOrd for Waiting<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Stripes waiting for repair, each once, the closest to loss first.
#[derive(Debug, Clone)]
pub struct RepairQueue<K: Ord + Clone> {
    heap: BinaryHeap<Waiting<K>>,
    /// Every queued key: its current spare count and when it was first queued.
    queued: BTreeMap<K, (usize, Time)>,
    seq: u64,
}

impl<K: Ord + Clone> Default for RepairQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            queued: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<K: Ord + Clone> RepairQueue<K> {
    /// Queues `key` with `spare` live shards beyond `k`; a key already queued keeps its age and
    /// takes the new urgency.
    pub fn push(&mut self, key: K, spare: usize, now: Time) {
        let since = match self.queued.get(&key) {
            Some(&(s, _)) if s == spare => return,
            Some(&(_, since)) => since,
            None => now,
        };
        self.queued.insert(key.clone(), (spare, since));
        self.seq += 1;
        self.heap.push(Waiting {
            spare,
            since,
            seq: self.seq,
            key,
        });
    }

    /// The most urgent stripe, taken off the queue.
    pub fn pop(&mut self) -> Option<K> {
        while let Some(w) = self.heap.pop() {
            // Entries replaced by a later push are passed over.
            if self.queued.get(&w.key) == Some(&(w.spare, w.since)) {
                self.queued.remove(&w.key);
                return Some(w.key);
            }
        }
        None
    }

    /// The most urgent stripe, left on the queue: for a caller that must first see whether it
    /// can afford to repair it now (it keeps its place and its age when it cannot).
    pub fn peek(&mut self) -> Option<&K> {
        loop {
            let current = match self.heap.peek() {
                None => return None,
                Some(w) => self.queued.get(&w.key) == Some(&(w.spare, w.since)),
            };
            if current {
                break;
            }
            self.heap.pop();
        }
        self.heap.peek().map(|w| &w.key)
    }

    /// Removes `key` (it healed, or its object is gone).
    pub fn remove(&mut self, key: &K) {
        self.queued.remove(key);
    }

    /// Stripes waiting.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// How long the longest-waiting stripe has waited at `now`.
    pub fn oldest(&self, now: Time) -> Duration {
        self.queued
            .values()
            .map(|(_, since)| now.since(*since))
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_node_is_suspect_for_the_grace_period_then_lost() {
        let mut l = Liveness::new(10 * S);
        let t0 = Time::ZERO;
        assert_eq!(l.state(&"a", t0), NodeState::Up);
        l.silent(&"a", t0);
        assert_eq!(l.state(&"a", t0 + 9 * S), NodeState::Suspect);
        // Asking again does not restart the clock.
        l.silent(&"a", t0 + 5 * S);
        assert_eq!(l.state(&"a", t0 + 10 * S), NodeState::Lost);
        assert_eq!(l.lost(t0 + 10 * S).count(), 1);
        // It answers: up again, and a later silence starts a new grace period.
        l.answered(&"a");
        assert_eq!(l.state(&"a", t0 + 11 * S), NodeState::Up);
        l.silent(&"a", t0 + 12 * S);
        assert_eq!(l.state(&"a", t0 + 21 * S), NodeState::Suspect);
    }

    fn stripe(states: &[&[Replica]]) -> Vec<Vec<Replica>> {
        states.iter().map(|s| s.to_vec()).collect()
    }

    #[test]
    fn health_follows_live_shards_with_lazy_repair_below_k_plus_margin() {
        use Replica::*;
        // 4 + 2, margin 1: repair only when 4 are left.
        let all = stripe(&[&[Live], &[Live], &[Live], &[Live], &[Live], &[Live]]);
        assert_eq!(assess(4, &all, 1).health, Health::Healthy);
        let one = stripe(&[&[Live], &[Lost], &[Live], &[Live], &[Live], &[Live]]);
        let a = assess(4, &one, 1);
        assert_eq!((a.live, a.health), (5, Health::Degraded));
        assert!(a.rebuild.is_empty());
        // Margin 2: the same stripe is rebuilt.
        let a = assess(4, &one, 2);
        assert_eq!((a.health, a.rebuild.clone()), (Health::Repair, vec![1]));
        let two = stripe(&[&[Live], &[Lost], &[Live], &[], &[Live], &[Live]]);
        let a = assess(4, &two, 1);
        assert_eq!((a.health, a.rebuild), (Health::AtRisk, vec![1, 3]));
        let three = stripe(&[&[Live], &[Lost], &[Live], &[], &[Lost], &[Live]]);
        let a = assess(4, &three, 1);
        assert_eq!((a.live, a.health), (3, Health::Lost));
        assert!(a.rebuild.is_empty());
    }

    #[test]
    fn a_suspect_copy_counts_and_a_second_copy_saves_a_shard() {
        use Replica::*;
        let s = stripe(&[
            &[Suspect],
            &[Lost, Live],
            &[Live],
            &[Live],
            &[Live],
            &[Live],
        ]);
        assert_eq!(assess(4, &s, 2).health, Health::Healthy);
    }

    #[test]
    fn draining_copies_are_moved_whatever_the_health() {
        use Replica::*;
        let s = stripe(&[
            &[Draining],
            &[Live],
            &[Live, Draining],
            &[Live],
            &[Live],
            &[Live],
        ]);
        let a = assess(4, &s, 2);
        assert_eq!(a.health, Health::Healthy);
        assert_eq!(a.moves, vec![0]);
        assert!(a.rebuild.is_empty());
    }

    #[test]
    fn a_rebuild_fetches_exactly_k_and_replaces_failures() {
        let mut f = Fetch::new(4, vec![5, 0, 2, 3, 4]);
        // Data shards first.
        assert_eq!(f.start(), vec![0, 2, 3, 4]);
        assert!(f.start().is_empty(), "nothing beyond k in flight");
        f.done(0, true);
        f.done(2, false);
        assert_eq!(f.start(), vec![5]);
        for i in [3, 4, 5] {
            f.done(i, true);
        }
        assert!(f.complete() && !f.failed());
        let mut f = Fetch::new(2, vec![0, 1]);
        assert_eq!(f.start(), vec![0, 1]);
        f.done(0, false);
        assert!(!f.failed(), "one still in flight");
        f.done(1, true);
        assert!(f.start().is_empty());
        assert!(f.failed());
    }

    #[test]
    fn the_bucket_paces_bytes_and_never_starves_a_large_job() {
        let mut r = RateLimit::new(100, 200, Time::ZERO);
        assert_eq!(r.take(150, Time::ZERO), Ok(()));
        // 50 left: 100 bytes need half a second more.
        assert_eq!(r.take(100, Time::ZERO), Err(Duration::from_millis(500)));
        assert_eq!(r.take(100, Time::from_millis(500)), Ok(()));
        // Larger than the burst: waits for a full bucket, then goes into debt.
        let mut r = RateLimit::new(100, 200, Time::ZERO);
        assert_eq!(r.take(1000, Time::ZERO), Ok(()));
        assert!(r.take(1, Time::ZERO).is_err());
        assert_eq!(r.take(100, Time::after(10 * S)), Ok(()));
        // Unlimited.
        assert_eq!(
            RateLimit::new(0, 0, Time::ZERO).take(u64::MAX, Time::ZERO),
            Ok(())
        );
    }

    #[test]
    fn the_queue_serves_the_closest_to_loss_first_then_the_oldest() {
        let mut q = RepairQueue::default();
        q.push("a", 2, Time::from_millis(0));
        q.push("b", 1, Time::from_millis(10));
        q.push("c", 1, Time::from_millis(5));
        q.push("d", 0, Time::from_millis(20));
        // Pushed again with the same urgency: nothing changes.
        q.push("c", 1, Time::from_millis(30));
        assert_eq!(q.len(), 4);
        assert_eq!(q.oldest(Time::from_millis(100)), Duration::from_millis(100));
        // "a" lost another shard: now as urgent as "d", and older.
        q.push("a", 0, Time::from_millis(40));
        // Peeking passes over the stale entry of "a" and leaves the queue as it was.
        assert_eq!(q.peek(), Some(&"a"));
        assert_eq!(q.peek(), Some(&"a"));
        assert_eq!(q.len(), 4);
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), Some("d"));
        assert_eq!(q.pop(), Some("c"));
        q.remove(&"b");
        assert_eq!(q.peek(), None);
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn one_live_copy_per_shard_is_kept_leased() {
        use Replica::*;
        // Shard 0: two live copies (a hedge's spare on 9); shard 1: its first copy is suspect;
        // shard 2: no live copy, suspect and draining ones kept, the lost one not.
        let copies = vec![
            vec![(1, Live), (9, Live)],
            vec![(6, Suspect), (2, Live)],
            vec![(3, Suspect), (4, Draining), (5, Lost)],
            vec![(7, Lost)],
        ];
        assert_eq!(
            designate(&copies),
            vec![vec![1], vec![2], vec![3, 4], vec![]]
        );
    }
}
