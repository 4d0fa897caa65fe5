//! Storing one item (a shard, or a manifest's copies) on ranked targets.
//!
//! Targets are tried in rank order until `want` of them have taken the item; a failure starts
//! the next target at once. A target whose node goes silent for [`SILENT_FOR`] (nothing heard
//! on its connection, judged every [`WATCH_EVERY`]) gets the next target started beside it:
//! a hedge, and whichever store finishes first counts. The silent node is reported so later
//! stripes pass it over, unless no other target is left: then the run waits for it, and it is
//! not taken out of placement (with exactly as many nodes as a stripe has shards, that would
//! fail the uploads that follow). A silent node that answers after all was slow, not gone.
//!
//! [`StoreRun`] holds the decisions; the caller runs the stores, watches the connections and
//! tells it what happened.

use std::time::Duration;

/// Nothing heard from a node for this long during a store: start another target beside it.
pub const SILENT_FOR: Duration = Duration::from_secs(3);
/// How often running stores are checked for silence.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Whether a node nothing was heard from for `quiet` counts as silent.
pub fn is_silent(quiet: Duration) -> bool {
    quiet >= SILENT_FOR
}

/// Whether a watch tick that fired `late` after its time should be skipped: that late, this
/// task (or the whole process) did not run for a while, and the connections' counters have not
/// caught up with what arrived.
pub fn tick_too_late(late: Duration) -> bool {
    late > 2 * WATCH_EVERY
}

/// The decisions of one store run over `targets` ranked targets (indices `0..targets`).
#[derive(Debug, Clone)]
pub struct StoreRun {
    targets: usize,
    want: usize,
    /// The next target to consider.
    next: usize,
    stored: usize,
    /// Running stores not (yet) found silent.
    watched: Vec<usize>,
    /// Running stores found silent.
    silenced: Vec<usize>,
}

/// What a silent target led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSilence {
    /// Start this target beside it, and report the silent node.
    Hedge(usize),
    /// No other target: keep waiting, and leave the node in placement.
    Wait,
}

impl StoreRun {
    /// A run that wants `want` of `targets` ranked targets to take the item.
    pub fn new(targets: usize, want: usize) -> Self {
        Self {
            targets,
            want,
            next: 0,
            stored: 0,
            watched: Vec::new(),
            silenced: Vec::new(),
        }
    }

    /// The targets to start now: the next ones `free` accepts, until the stores running and
    /// done make `want`. `free(i)` may have side effects (claiming the node for a stripe); it
    /// is asked once per target at most.
    pub fn start(&mut self, mut free: impl FnMut(usize) -> bool) -> Vec<usize> {
        let mut started = Vec::new();
        while self.stored + self.watched.len() < self.want {
            let Some(i) = self.next_free(&mut free) else {
                break;
            };
            self.watched.push(i);
            started.push(i);
        }
        started
    }

    fn next_free(&mut self, free: &mut impl FnMut(usize) -> bool) -> Option<usize> {
        while self.next < self.targets {
            self.next += 1;
            if free(self.next - 1) {
                return Some(self.next - 1);
            }
        }
        None
    }

    /// Whether the run is over, given whether any store is still running: `want` took it, or
    /// nothing is running and nothing more can start (call after [`StoreRun::start`]).
    pub fn is_done(&self, running: bool) -> bool {
        self.stored == self.want || !running
    }

    /// The store on target `i` took the item. Returns whether `i` had been found silent (then
    /// it was slow, not gone: placement may use its node again).
    pub fn stored(&mut self, i: usize) -> bool {
        self.watched.retain(|&w| w != i);
        self.stored += 1;
        self.silenced.contains(&i)
    }

    /// The store on target `i` failed; the next [`StoreRun::start`] brings in another.
    pub fn failed(&mut self, i: usize) {
        self.watched.retain(|&w| w != i);
    }

    /// Running stores not found silent: the ones to watch.
    pub fn watched(&self) -> &[usize] {
        &self.watched
    }

    /// Target `i`'s node went silent ([`is_silent`]).
    pub fn silent(&mut self, i: usize, mut free: impl FnMut(usize) -> bool) -> OnSilence {
        self.watched.retain(|&w| w != i);
        self.silenced.push(i);
        match self.next_free(&mut free) {
            Some(h) => {
                self.watched.push(h);
                OnSilence::Hedge(h)
            }
            None => OnSilence::Wait,
        }
    }

    /// How many targets took the item.
    pub fn count(&self) -> usize {
        self.stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: usize) -> bool {
        true
    }

    #[test]
    fn the_first_target_that_takes_it_ends_the_run() {
        let mut r = StoreRun::new(3, 1);
        assert_eq!(r.start(any), vec![0]);
        assert!(!r.is_done(true));
        r.failed(0);
        assert_eq!(
            r.start(any),
            vec![1],
            "a failure brings in the next at once"
        );
        assert!(!r.stored(1));
        assert!(r.start(any).is_empty());
        assert!(r.is_done(false));
        assert_eq!(r.count(), 1);
    }

    #[test]
    fn copies_start_together_and_failures_bring_in_the_next() {
        let mut r = StoreRun::new(5, 3);
        assert_eq!(r.start(any), vec![0, 1, 2]);
        r.stored(0);
        r.failed(1);
        assert_eq!(r.start(any), vec![3]);
        r.stored(2);
        r.stored(3);
        assert!(r.is_done(true), "three copies: done, whatever still runs");
        assert_eq!(r.count(), 3);
    }

    #[test]
    fn every_target_failing_ends_with_none() {
        let mut r = StoreRun::new(2, 1);
        for _ in 0..2 {
            let s = r.start(any);
            assert_eq!(s.len(), 1);
            r.failed(s[0]);
        }
        assert!(r.start(any).is_empty());
        assert!(r.is_done(false));
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn targets_free_refuses_are_skipped_and_asked_once() {
        let mut asked = Vec::new();
        let mut r = StoreRun::new(4, 1);
        let mut free = |i: usize| {
            asked.push(i);
            i != 0 && i != 1
        };
        assert_eq!(r.start(&mut free), vec![2]);
        r.failed(2);
        assert_eq!(r.start(&mut free), vec![3]);
        assert_eq!(asked, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_silent_node_gets_a_hedge_and_the_first_to_finish_counts() {
        let mut r = StoreRun::new(3, 1);
        assert_eq!(r.start(any), vec![0]);
        assert_eq!(r.silent(0, any), OnSilence::Hedge(1));
        assert_eq!(r.watched(), &[1]);
        assert!(r.start(any).is_empty(), "the hedge is the one running");
        // The hedge wins.
        assert!(!r.stored(1));
        assert!(r.is_done(true));
    }

    #[test]
    fn a_silent_node_that_answers_after_all_was_slow_not_gone() {
        let mut r = StoreRun::new(3, 1);
        r.start(any);
        assert_eq!(r.silent(0, any), OnSilence::Hedge(1));
        assert!(
            r.stored(0),
            "reported as answered, so placement uses it again"
        );
        assert!(r.is_done(true));
    }

    #[test]
    fn with_no_other_target_a_silent_node_is_waited_for() {
        let mut r = StoreRun::new(1, 1);
        r.start(any);
        assert_eq!(r.silent(0, any), OnSilence::Wait);
        assert!(r.watched().is_empty(), "not judged silent twice");
        assert!(r.start(any).is_empty());
        assert!(!r.is_done(true), "still waiting for it");
        assert!(r.stored(0));
        assert!(r.is_done(false));
    }

    #[test]
    fn silence_and_late_ticks() {
        assert!(!is_silent(Duration::from_millis(2999)));
        assert!(is_silent(SILENT_FOR));
        assert!(!tick_too_late(Duration::from_millis(500)));
        assert!(tick_too_late(Duration::from_millis(501)));
    }
}
