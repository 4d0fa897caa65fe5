//! A bounded cache of verified whole shards for long-lived readers (the S3 gateway).
//!
//! Every shard in it was verified against its CID on arrival, so a hit is served as is. The
//! cache is bounded by bytes and evicts the least recently used shard first. Fetches are
//! single-flight: while one reader (or read-ahead) fetches a shard, others asking for it wait
//! for that fetch instead of starting their own.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_chunker::Cid;
use tokio::sync::watch;

/// A verified whole shard, kept as the pieces it arrived in (no copy to join them).
#[derive(Debug, Clone, Default)]
pub struct Shard {
    pieces: Vec<Bytes>,
    len: u64,
}

impl Shard {
    /// A shard made of `pieces`, in order.
    pub fn new(pieces: Vec<Bytes>) -> Self {
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        Self { pieces, len }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length shard.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of `range` (clamped to the shard), as slices of the stored pieces.
    pub fn slice(&self, range: Range<u64>) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for p in &self.pieces {
            let end = at + p.len() as u64;
            let (from, to) = (range.start.max(at), range.end.min(end));
            if from < to {
                out.push(p.slice((from - at) as usize..(to - at) as usize));
            }
            at = end;
            if at >= range.end {
                break;
            }
        }
        out
    }

    /// The whole shard as one buffer (copies unless it arrived in one piece).
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut v = Vec::with_capacity(self.len as usize);
                for p in many {
                    v.extend_from_slice(p);
                }
                Bytes::from(v)
            }
        }
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// The shard, verified.
    Hit(Shard),
    /// Another reader is fetching it: wait for that.
    Pending(Waiter),
    /// Not cached and nobody is fetching it.
    Miss,
}

type State = Option<Shard>;

/// Waits for a fetch another reader started.
#[derive(Debug)]
pub struct Waiter(watch::Receiver<State>);

impl Waiter {
    /// The shard, or `None` if that fetch failed.
    pub async fn wait(mut self) -> Option<Shard> {
        match self.0.wait_for(Option::is_some).await {
            Ok(s) => s.clone(),
            Err(_) => None,
        }
    }
}

/// The right (and duty) to fetch a shard into the cache. Dropping it without
/// [`Filler::finish`] tells waiters the fetch failed.
#[derive(Debug)]
pub struct Filler {
    cache: Arc<ShardCache>,
    cid: Cid,
    tx: Option<watch::Sender<State>>,
}

impl Filler {
    /// Stores the fetched (verified) shard and wakes the waiters.
    pub fn finish(mut self, shard: Shard) {
        if let Some(tx) = self.tx.take() {
            self.cache.insert(self.cid, shard.clone());
            let _ = tx.send(Some(shard));
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if self.tx.take().is_some() {
            let mut inner = self.cache.lock();
            if matches!(inner.map.get(&self.cid), Some(Slot::Pending(_))) {
                inner.map.remove(&self.cid);
            }
        }
    }
}

#[derive(Debug)]
enum Slot {
    Ready { shard: Shard, tick: u64 },
    Pending(watch::Receiver<State>),
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Cid, Slot>,
    /// Ready shards by last use, least recent first.
    order: BTreeMap<u64, Cid>,
    tick: u64,
    bytes: u64,
}

impl Inner {
    /// A held shard, marked as just used.
    fn touch(&mut self, cid: &Cid) -> Option<Shard> {
        self.tick += 1;
        let tick = self.tick;
        let Some(Slot::Ready { shard, tick: t }) = self.map.get_mut(cid) else {
            return None;
        };
        let old = std::mem::replace(t, tick);
        let shard = shard.clone();
        self.order.remove(&old);
        self.order.insert(tick, *cid);
        Some(shard)
    }
}

/// Counters, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache (including waits on another reader's fetch).
    pub hits: u64,
    /// Lookups that had to fetch.
    pub misses: u64,
    /// Shards evicted to make room.
    pub evictions: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Shards held.
    pub shards: u64,
    /// The bound.
    pub capacity: u64,
}

/// The cache. Share it as `Arc<ShardCache>`.
#[derive(Debug)]
pub struct ShardCache {
    capacity: u64,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl ShardCache {
    /// A cache holding at most `capacity` bytes of shards (0 disables it).
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `cid` up, marking a hit as recently used.
    pub fn lookup(&self, cid: &Cid) -> Lookup {
        let mut inner = self.lock();
        let found = match inner.touch(cid) {
            Some(shard) => Lookup::Hit(shard),
            None => match inner.map.get(cid) {
                Some(Slot::Pending(rx)) => Lookup::Pending(Waiter(rx.clone())),
                _ => Lookup::Miss,
            },
        };
        let counter = match found {
            Lookup::Miss => &self.misses,
            _ => &self.hits,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The shard if it is held (counted as a hit and marked recently used); `None`, uncounted,
    /// if it is not or is still being fetched. For opportunistic checks that go to the
    /// network anyway on a miss.
    pub fn cached(&self, cid: &Cid) -> Option<Shard> {
        let shard = self.lock().touch(cid)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(shard)
    }

    /// True if `cid` is held (no effect on recency or counters).
    pub fn contains(&self, cid: &Cid) -> bool {
        matches!(self.lock().map.get(cid), Some(Slot::Ready { .. }))
    }

    /// Claims the fetch of `cid`: `None` if it is cached or being fetched already, or if the
    /// cache is disabled.
    pub fn begin(self: &Arc<Self>, cid: Cid) -> Option<Filler> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.lock();
        if inner.map.contains_key(&cid) {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        inner.map.insert(cid, Slot::Pending(rx));
        Some(Filler {
            cache: self.clone(),
            cid,
            tx: Some(tx),
        })
    }

    /// Stores a verified shard, evicting the least recently used until it fits. A shard larger
    /// than the whole cache is not stored.
    pub fn insert(&self, cid: Cid, shard: Shard) {
        if shard.len() > self.capacity {
            let mut inner = self.lock();
            if matches!(inner.map.get(&cid), Some(Slot::Pending(_))) {
                inner.map.remove(&cid);
            }
            return;
        }
        let mut inner = self.lock();
        if let Some(Slot::Ready { shard: old, tick }) = inner.map.remove(&cid) {
            inner.order.remove(&tick);
            inner.bytes -= old.len();
        }
        while inner.bytes + shard.len() > self.capacity {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            if let Some(Slot::Ready { shard: old, .. }) = inner.map.remove(&victim) {
                inner.bytes -= old.len();
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += shard.len();
        inner.order.insert(tick, cid);
        inner.map.insert(cid, Slot::Ready { shard, tick });
    }

    /// The bound, in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: inner.bytes,
            shards: inner.order.len() as u64,
            capacity: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chunker::cids;

    fn cid(n: u8) -> Cid {
        cids::raw(&[n])
    }

    fn shard(len: usize, fill: u8) -> Shard {
        let half = len / 2;
        Shard::new(vec![
            Bytes::from(vec![fill; half]),
            Bytes::from(vec![fill.wrapping_add(1); len - half]),
        ])
    }

    #[test]
    fn slices_cross_pieces() {
        let s = Shard::new(vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"h"),
        ]);
        let join = |v: Vec<Bytes>| v.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>();
        assert_eq!(join(s.slice(0..8)), b"abcdefgh");
        assert_eq!(join(s.slice(2..5)), b"cde");
        assert_eq!(join(s.slice(3..7)), b"defg");
        assert_eq!(join(s.slice(7..20)), b"h");
        assert!(s.slice(4..4).is_empty());
        assert_eq!(s.to_bytes(), Bytes::from_static(b"abcdefgh"));
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn evicts_least_recently_used_within_the_bound() {
        let c = ShardCache::new(300);
        c.insert(cid(1), shard(100, 1));
        c.insert(cid(2), shard(100, 2));
        c.insert(cid(3), shard(100, 3));
        // Touch 1, so 2 is now the least recently used.
        assert!(matches!(c.lookup(&cid(1)), Lookup::Hit(_)));
        c.insert(cid(4), shard(100, 4));
        assert!(c.contains(&cid(1)));
        assert!(!c.contains(&cid(2)));
        assert!(c.contains(&cid(3)) && c.contains(&cid(4)));
        let st = c.stats();
        assert_eq!((st.bytes, st.shards, st.evictions), (300, 3, 1));
        // Too big for the whole cache: not stored, nothing evicted.
        c.insert(cid(5), shard(301, 5));
        assert!(!c.contains(&cid(5)));
        assert_eq!(c.stats().bytes, 300);
        // Hits return the stored bytes.
        match c.lookup(&cid(3)) {
            Lookup::Hit(s) => assert_eq!(s.to_bytes()[..], [vec![3u8; 50], vec![4u8; 50]].concat()),
            other => panic!("expected a hit, got {other:?}"),
        }
        assert!(matches!(c.lookup(&cid(9)), Lookup::Miss));
        let st = c.stats();
        assert_eq!((st.hits, st.misses), (2, 1));
        // `cached` counts only what it finds.
        assert!(c.cached(&cid(9)).is_none());
        assert_eq!(c.cached(&cid(4)).map(|s| s.len()), Some(100));
        let st = c.stats();
        assert_eq!((st.hits, st.misses), (3, 1));
    }

    #[tokio::test]
    async fn fetches_are_single_flight_and_failures_release_waiters() {
        let c = ShardCache::new(1 << 20);
        let filler = c.begin(cid(1)).expect("first claim");
        assert!(c.begin(cid(1)).is_none(), "second claim while pending");
        let Lookup::Pending(w) = c.lookup(&cid(1)) else {
            panic!("expected pending");
        };
        let waiting = tokio::spawn(w.wait());
        filler.finish(shard(10, 7));
        let got = waiting.await.unwrap().expect("shard after finish");
        assert_eq!(got.len(), 10);
        assert!(c.contains(&cid(1)));
        assert!(c.begin(cid(1)).is_none(), "cached: nothing to claim");

        // A fetch that fails (filler dropped) wakes waiters with None and frees the slot.
        let filler = c.begin(cid(2)).expect("claim");
        let Lookup::Pending(w) = c.lookup(&cid(2)) else {
            panic!("expected pending");
        };
        let waiting = tokio::spawn(w.wait());
        drop(filler);
        assert!(waiting.await.unwrap().is_none());
        assert!(matches!(c.lookup(&cid(2)), Lookup::Miss));
        assert!(c.begin(cid(2)).is_some(), "can be claimed again");
    }

    #[test]
    fn disabled_cache_claims_nothing() {
        let c = ShardCache::new(0);
        assert!(c.begin(cid(1)).is_none());
        c.insert(cid(1), shard(10, 1));
        assert!(!c.contains(&cid(1)));
    }
}
