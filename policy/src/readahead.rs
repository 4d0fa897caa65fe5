//! Read-ahead for sequential range readers (s3fs, PyTorch's S3 readers, `aws s3 cp` of a big
//! object in parts): a plain state machine, no I/O, that watches the range requests made of
//! each object and says which bytes to fetch into the shard cache before they are asked for.
//!
//! A request that starts where an earlier request of the same object ended (within
//! [`SLACK`]) continues a sequential stream. From the [`RUN`]-th continuation of a stream on,
//! the window after it, up to `window` bytes, is fetched ahead; each later request asks only
//! for the part of the window not already fetched. Random readers cost a map entry, bounded
//! by [`MAX_STREAMS`]; one of their requests lands within the slack of an earlier one's end
//! now and then (with hundreds of random 1 MiB reads of a 256 MiB object, a 256 KiB slack
//! matched a third of them, and each match fetched 16 MiB nobody read), so the slack is small
//! and a stream must continue more than once before anything is fetched.

use std::collections::BTreeMap;
use std::ops::Range;

use cairn_chunker::Cid;

/// How far a request's start may be from where the previous one ended and still count as
/// sequential (a page either way, for readers that re-read or skip a little at block edges).
pub const SLACK: u64 = 4 << 10;
/// Continuations a stream needs before its window is fetched (the third sequential request).
pub const RUN: u32 = 2;
/// Streams remembered at once; the least recently used is forgotten first.
pub const MAX_STREAMS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Fetched ahead up to here.
    ahead: u64,
    /// Continuations so far.
    run: u32,
    /// Last use, for eviction.
    tick: u64,
}

/// The read-ahead policy.
#[derive(Debug)]
pub struct ReadAhead {
    window: u64,
    /// (object, offset where its last request ended) -> stream.
    streams: BTreeMap<(Cid, u64), Stream>,
    /// tick -> key, least recent first.
    lru: BTreeMap<u64, (Cid, u64)>,
    tick: u64,
}

impl ReadAhead {
    /// Keeps up to `window` bytes fetched ahead of each sequential reader (0: never).
    pub fn new(window: u64) -> Self {
        Self {
            window,
            streams: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
        }
    }

    /// Records a range request of `object` (bytes `range`, the object's readable bytes ending at
    /// `limit`) and returns what to fetch ahead of it, if anything.
    pub fn observe(&mut self, object: Cid, range: Range<u64>, limit: u64) -> Option<Range<u64>> {
        if self.window == 0 || range.start >= range.end {
            return None;
        }
        let lo = (object, range.start.saturating_sub(SLACK));
        let hi = (object, range.start.saturating_add(SLACK));
        let found = self
            .streams
            .range(lo..=hi)
            .map(|(k, s)| (*k, *s))
            .min_by_key(|((_, end), _)| end.abs_diff(range.start));
        let (ahead, run) = match found {
            Some((key, stream)) => {
                self.streams.remove(&key);
                self.lru.remove(&stream.tick);
                (Some(stream.ahead), stream.run + 1)
            }
            None => (None, 0),
        };
        let want = range.end.saturating_add(self.window).min(limit);
        let fetch = ahead.filter(|_| run >= RUN).and_then(|done| {
            let from = done.max(range.end);
            (from < want).then_some(from..want)
        });
        if range.end < limit {
            let ahead = match (ahead, &fetch) {
                (_, Some(f)) => f.end,
                (Some(done), None) => done.max(range.end),
                (None, None) => range.end,
            };
            self.remember((object, range.end), ahead, run);
        }
        fetch
    }

    fn remember(&mut self, key: (Cid, u64), ahead: u64, run: u32) {
        self.tick += 1;
        if let Some(old) = self.streams.insert(
            key,
            Stream {
                ahead,
                run,
                tick: self.tick,
            },
        ) {
            self.lru.remove(&old.tick);
        }
        self.lru.insert(self.tick, key);
        while self.streams.len() > MAX_STREAMS {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.streams.remove(&victim);
        }
    }

    /// Streams remembered.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when no stream is remembered.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chunker::cids;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sequential_reader_gets_the_window_ahead_once() {
        let obj = cids::raw(b"object");
        let mut ra = ReadAhead::new(16 * MIB);
        let size = 100 * MIB;
        // First request: nothing known yet. Second, continuing: not yet a run.
        assert_eq!(ra.observe(obj, 0..5 * MIB, size), None);
        assert_eq!(ra.observe(obj, 5 * MIB..10 * MIB, size), None);
        // Third: the next 16 MiB.
        assert_eq!(
            ra.observe(obj, 10 * MIB..15 * MIB, size),
            Some(15 * MIB..31 * MIB)
        );
        // Fourth: only what is not already ahead.
        assert_eq!(
            ra.observe(obj, 15 * MIB..20 * MIB, size),
            Some(31 * MIB..36 * MIB)
        );
        // A small overlap with the previous end still counts.
        assert_eq!(
            ra.observe(obj, 20 * MIB - 100..25 * MIB, size),
            Some(36 * MIB..41 * MIB)
        );
        assert_eq!(ra.len(), 1);
    }

    #[test]
    fn window_stops_at_the_limit_and_finished_streams_are_dropped() {
        let obj = cids::raw(b"object");
        let mut ra = ReadAhead::new(16 * MIB);
        let size = 16 * MIB;
        assert_eq!(ra.observe(obj, 0..4 * MIB, size), None);
        assert_eq!(ra.observe(obj, 4 * MIB..8 * MIB, size), None);
        assert_eq!(
            ra.observe(obj, 8 * MIB..12 * MIB, size),
            Some(12 * MIB..16 * MIB)
        );
        // The last block: nothing left to fetch, and the stream is forgotten.
        assert_eq!(ra.observe(obj, 12 * MIB..16 * MIB, size), None);
        assert!(ra.is_empty());
    }

    #[test]
    fn random_readers_and_other_objects_do_not_trigger() {
        let (a, b) = (cids::raw(b"a"), cids::raw(b"b"));
        let mut ra = ReadAhead::new(16 * MIB);
        let size = 1 << 30;
        assert_eq!(ra.observe(a, 0..MIB, size), None);
        // Another object at the offset where `a` ended: not a continuation of `a`.
        assert_eq!(ra.observe(b, MIB..2 * MIB, size), None);
        // Far from where `a` ended.
        assert_eq!(ra.observe(a, 500 * MIB..501 * MIB, size), None);
        assert_eq!(ra.observe(a, 7 * MIB..8 * MIB, size), None);
        // Near where a request ended, but further than the slack: a new stream.
        assert_eq!(ra.observe(a, MIB + SLACK + 1..2 * MIB, size), None);
        assert_eq!(ra.observe(a, 2 * MIB..3 * MIB, size), None);
        assert_eq!(
            ra.observe(a, 3 * MIB..4 * MIB, size).map(|r| r.start),
            Some(4 * MIB)
        );
        // Many random readers of one object: almost none of them fetch anything ahead.
        let mut ra = ReadAhead::new(16 * MIB);
        let size = 256 * MIB;
        let mut x = cairn_testkit::data::Xorshift::from_state(0x2545_f491_4f6c_dd1d);
        let mut fetched = 0;
        for _ in 0..2000 {
            let at = x.below(size - MIB);
            fetched += usize::from(ra.observe(a, at..at + MIB, size).is_some());
        }
        assert!(fetched <= 2, "{fetched} of 2000 random reads fetched ahead");
        // Disabled.
        let mut off = ReadAhead::new(0);
        assert_eq!(off.observe(a, 0..MIB, size), None);
        assert_eq!(off.observe(a, MIB..2 * MIB, size), None);
        assert!(off.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut ra = ReadAhead::new(MIB);
        let obj = cids::raw(b"object");
        for i in 0..(MAX_STREAMS as u64 + 100) {
            ra.observe(obj, i * 10 * MIB..i * 10 * MIB + 1, u64::MAX);
        }
        assert_eq!(ra.len(), MAX_STREAMS);
        // The oldest were forgotten, the newest kept.
        let last = (MAX_STREAMS as u64 + 99) * 10 * MIB + 1;
        assert_eq!(ra.observe(obj, 1..2, u64::MAX), None);
        assert_eq!(ra.observe(obj, last..last + 1, u64::MAX), None);
        assert!(ra.observe(obj, last + 1..last + 2, u64::MAX).is_some());
    }
}
