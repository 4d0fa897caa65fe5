//! What one peer may take of the inbound control requests a node answers.
//!
//! Control requests are rare in a healthy network (a view refresh asks each node for its
//! `Info` now and then, an audit is a few requests an epoch), and some are costly to answer
//! (`List` reads a thousand shard entries). Each key holds at most [`PER_PEER_RUNNING`] of the
//! node's [`MAX_INBOUND_CONTROL`](super::MAX_INBOUND_CONTROL) places at once and is answered
//! at [`PER_PEER_RATE`] a second (bursts of [`PER_PEER_BURST`]); keys are free, so one address
//! (an IPv4 address, an IPv6 /64), whatever keys it uses, holds at most [`PER_HOST_RUNNING`]
//! places. Beyond that a request gets `Busy` at once. A peer refused [`SLOW_AFTER`] times within [`WINDOW`] is
//! not retrying politely: for [`SLOW_FOR`] its refusals are answered only after [`SLOW_BUSY`],
//! so that its requests in flight (at most what its connections' streams allow) stay where
//! they are instead of spinning. It is not disconnected: a flooder that redialled would cost
//! a handshake each time.
//!
//! Pure: time comes in as an argument, decisions go out; the swarm actor applies them.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Control requests one peer may have running at once.
pub const PER_PEER_RUNNING: usize = 8;
/// Control requests the peers at one address may have running at once: half the places.
pub const PER_HOST_RUNNING: usize = 32;
/// Control requests a second one peer is answered at, sustained.
pub const PER_PEER_RATE: f64 = 50.0;
/// Control requests one peer may send at once above its rate.
pub const PER_PEER_BURST: f64 = 100.0;
/// Refusals within [`WINDOW`] after which a peer is slowed down.
pub const SLOW_AFTER: u32 = 1000;
/// The span refusals are counted over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How long a peer stays slowed down.
pub const SLOW_FOR: Duration = Duration::from_secs(60);
/// How long a slowed-down peer waits for each refusal.
pub const SLOW_BUSY: Duration = Duration::from_secs(1);

/// What to do with one inbound control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Answer it (and call [`ControlShare::done`] when the answer is sent).
    Yes,
    /// Answer `Busy`, saying why.
    Busy(&'static str),
    /// Answer `Busy` after [`SLOW_BUSY`]: the peer floods. `started`: this refusal slowed it.
    BusyLater {
        /// Why.
        why: &'static str,
        /// Whether the slowdown starts with this request.
        started: bool,
    },
}

#[derive(Debug)]
struct Peer {
    running: usize,
    tokens: f64,
    refilled: Instant,
    refused: u32,
    window_start: Instant,
    slowed_until: Option<Instant>,
}

/// Each peer's (`P`) and each address's (`H`) share of the inbound control requests.
#[derive(Debug)]
pub struct ControlShare<P, H> {
    peers: HashMap<P, Peer>,
    hosts: HashMap<H, usize>,
}

impl<P, H> Default for ControlShare<P, H> {
    fn default() -> Self {
        Self {
            peers: HashMap::new(),
            hosts: HashMap::new(),
        }
    }
}

impl<P: Hash + Eq + Copy, H: Hash + Eq + Copy> ControlShare<P, H> {
    /// Whether to answer a request from `peer`, reached at `host` (if known), arriving at
    /// `now`. A [`Admit::Yes`] must be followed by [`ControlShare::done`] with the same
    /// arguments.
    pub fn admit(&mut self, peer: P, host: Option<H>, now: Instant) -> Admit {
        let p = self.peers.entry(peer).or_insert_with(|| Peer {
            running: 0,
            tokens: PER_PEER_BURST,
            refilled: now,
            refused: 0,
            window_start: now,
            slowed_until: None,
        });
        let since = now.saturating_duration_since(p.refilled).as_secs_f64();
        p.tokens = (p.tokens + since * PER_PEER_RATE).min(PER_PEER_BURST);
        p.refilled = now;
        let at_host = host.map_or(0, |h| self.hosts.get(&h).copied().unwrap_or(0));
        let why = if p.running >= PER_PEER_RUNNING {
            "too many control requests from this peer at once"
        } else if at_host >= PER_HOST_RUNNING {
            "too many control requests from this address at once"
        } else if p.tokens < 1.0 {
            "control requests from this peer come too fast"
        } else {
            p.tokens -= 1.0;
            p.running += 1;
            if let Some(h) = host {
                *self.hosts.entry(h).or_default() += 1;
            }
            return Admit::Yes;
        };
        if now.saturating_duration_since(p.window_start) > WINDOW {
            p.window_start = now;
            p.refused = 0;
        }
        p.refused += 1;
        if p.slowed_until.is_some_and(|t| t > now) {
            return Admit::BusyLater {
                why,
                started: false,
            };
        }
        if p.refused >= SLOW_AFTER {
            p.refused = 0;
            p.window_start = now;
            p.slowed_until = Some(now + SLOW_FOR);
            return Admit::BusyLater { why, started: true };
        }
        Admit::Busy(why)
    }

    /// A request [`ControlShare::admit`] let in was answered (or given up).
    pub fn done(&mut self, peer: P, host: Option<H>) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.running = p.running.saturating_sub(1);
        }
        if let Some(h) = host
            && let Some(n) = self.hosts.get_mut(&h)
        {
            *n -= 1;
            if *n == 0 {
                self.hosts.remove(&h);
            }
        }
    }

    /// Forgets peers with nothing running whose bucket has refilled and whose refusals are
    /// old: what is kept stays proportional to the peers active lately.
    pub fn prune(&mut self, now: Instant) {
        let full = Duration::from_secs_f64(PER_PEER_BURST / PER_PEER_RATE);
        self.peers.retain(|_, p| {
            p.running > 0
                || p.slowed_until.is_some_and(|t| t > now)
                || now.saturating_duration_since(p.refilled) < full
                || (p.refused > 0 && now.saturating_duration_since(p.window_start) <= WINDOW)
        });
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_at_most_its_places_and_gets_them_back() {
        let mut s = ControlShare::<u32, u8>::default();
        let t = Instant::now();
        for _ in 0..PER_PEER_RUNNING {
            assert_eq!(s.admit(1, None, t), Admit::Yes);
        }
        assert!(matches!(s.admit(1, None, t), Admit::Busy(_)));
        // Another peer is not held back by the first.
        assert_eq!(s.admit(2, None, t), Admit::Yes);
        s.done(1, None);
        assert_eq!(s.admit(1, None, t), Admit::Yes);
    }

    #[test]
    fn one_address_holds_at_most_half_the_places_whatever_its_keys() {
        let mut s = ControlShare::<u32, u8>::default();
        let t = Instant::now();
        // Keys are free: eight keys from one address, eight requests each.
        let mut answered = 0;
        for key in 0..8 {
            for _ in 0..PER_PEER_RUNNING {
                if s.admit(key, Some(1), t) == Admit::Yes {
                    answered += 1;
                }
            }
        }
        assert_eq!(answered, PER_HOST_RUNNING);
        // Another address is not held back; the first gets a place back as one is answered.
        assert_eq!(s.admit(100, Some(2), t), Admit::Yes);
        assert!(matches!(s.admit(50, Some(1), t), Admit::Busy(m) if m.contains("address")));
        s.done(0, Some(1));
        assert_eq!(s.admit(50, Some(1), t), Admit::Yes);
    }

    #[test]
    fn a_peer_is_answered_at_its_rate_after_its_burst() {
        let mut s = ControlShare::<u32, u8>::default();
        let t = Instant::now();
        let mut answered = 0;
        // Ten seconds of a peer asking every millisecond, one at a time.
        for ms in 0..10_000u64 {
            if s.admit(7, None, t + Duration::from_millis(ms)) == Admit::Yes {
                answered += 1;
                s.done(7, None);
            }
        }
        let most = PER_PEER_BURST + 10.0 * PER_PEER_RATE;
        assert!(
            (answered as f64) <= most + 1.0 && (answered as f64) >= most - 2.0,
            "{answered} answered of at most {most}"
        );
    }

    #[test]
    fn a_flood_is_slowed_down_and_a_polite_peer_never_is() {
        let mut s = ControlShare::<u32, u8>::default();
        let t = Instant::now();
        // Polite: a request every 25 ms (40 a second), for a minute.
        for ms in (0..60_000u64).step_by(25) {
            let now = t + Duration::from_millis(ms);
            assert_eq!(s.admit(1, None, now), Admit::Yes, "at {ms} ms");
            s.done(1, None);
        }
        // A flood: a thousand requests a second, never waiting for answers.
        let mut slowed = None;
        for ms in 0..10_000u64 {
            let a = s.admit(2, None, t + Duration::from_millis(ms));
            match (slowed, a) {
                (None, Admit::BusyLater { started: true, .. }) => slowed = Some(ms),
                (None, Admit::BusyLater { .. }) => panic!("slowed without a start"),
                (Some(_), Admit::BusyLater { started: true, .. }) => panic!("started twice"),
                (Some(at), Admit::Busy(_)) => panic!("a plain Busy {ms} ms, slowed at {at}"),
                _ => {}
            }
        }
        let at = slowed.expect("the flood was never slowed down");
        assert!(at < 2_000, "slowed down only after {at} ms");
        // Its time up, it is answered at its rate again, and refused at once.
        let later = t + Duration::from_millis(at) + SLOW_FOR + Duration::from_secs(5);
        assert!(
            matches!(s.admit(2, None, later), Admit::Busy(_)),
            "still running"
        );
        for _ in 0..PER_PEER_RUNNING {
            s.done(2, None);
        }
        assert_eq!(s.admit(2, None, later), Admit::Yes);
    }

    #[test]
    fn idle_peers_are_forgotten() {
        let mut s = ControlShare::<u32, u8>::default();
        let t = Instant::now();
        for p in 0..100 {
            assert_eq!(s.admit(p, None, t), Admit::Yes);
            if p % 2 == 0 {
                s.done(p, None);
            }
        }
        s.prune(t + Duration::from_secs(60));
        // The 50 still running stay; the rest are gone.
        assert_eq!(s.len(), 50);
    }
}
