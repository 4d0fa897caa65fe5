//! Upload bodies (shards, manifests, receipts) against the node's buffer budget
//! ([`MAX_INFLIGHT_BYTES`] across all peers).
//!
//! A body is counted as it arrives, a [`BODY_STEP`] at a time, not all at once when its header
//! names its length: a peer that announces 64 MiB and sends a trickle holds what it sent, not
//! what it promised. One address may have bodies announcing at most [`ADDRESS_SHARE`] of the
//! budget under way (counted by what they announce, so a body is refused before its first
//! byte, never half-way; an address that announces much and sends little only holds back
//! itself), and a body must arrive at `network.min_body_rate` on average once its first
//! [`BODY_GRACE`] is over, so slow uploaders cannot keep the budget from everyone else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cairn_wire::data::{MAX_INFLIGHT_BYTES, STALL_TIMEOUT};
use cairn_wire::protocol::{ErrorCode, RemoteError};
use quinn::RecvStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::conns::Addr;

/// Time a body has before the minimum rate applies: a handshake, a slow start, a moment of loss.
pub const BODY_GRACE: Duration = Duration::from_secs(5);
/// Bodies are counted against the budget in steps of this many bytes as they arrive.
pub const BODY_STEP: usize = 1 << 20;
/// Share of the budget one address may hold at once: a quarter.
pub const ADDRESS_SHARE: usize = 4;
/// Time a step waits for room in the budget before the peer is told the node is busy.
pub const WAIT: Duration = Duration::from_secs(10);

/// The node-wide budget for incoming bodies, in KiB permits, with what each address holds.
#[derive(Debug)]
pub struct Budget {
    pool: Semaphore,
    per_addr_kib: u32,
    wait: Duration,
    by_addr: Mutex<HashMap<Addr, u32>>,
    /// Told when an address gives some of its share back.
    freed: tokio::sync::Notify,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(MAX_INFLIGHT_BYTES)
    }
}

/// Budget one body holds: given back when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    budget: &'a Budget,
    addr: Addr,
    /// KiB of its address's share, for what the body announced.
    claimed: u32,
    /// KiB of the node-wide budget, for what arrived.
    kib: u32,
    permits: Vec<SemaphorePermit<'a>>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.claimed == 0 {
            return;
        }
        let mut by_addr = self.budget.by_addr();
        if let Some(n) = by_addr.get_mut(&self.addr) {
            *n = n.saturating_sub(self.claimed);
            self.budget.freed.notify_waiters();
            if *n == 0 {
                by_addr.remove(&self.addr);
            }
        }
    }
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let max_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX);
        Self {
            pool: Semaphore::new(max_kib as usize),
            per_addr_kib: (max_kib / ADDRESS_SHARE as u32).max(1),
            wait: WAIT,
            by_addr: Mutex::default(),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn by_addr(&self) -> std::sync::MutexGuard<'_, HashMap<Addr, u32>> {
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A body of `len` bytes from `addr`, claimed against the address's share (a body larger
    /// than the share claims all of it) before any of it is read; nothing of the node-wide
    /// budget is held yet. While the address's bodies under way claim too much it waits, up
    /// to [`WAIT`], then `Busy`: an uploader that opens body after body waits for each rather
    /// than spinning on refusals.
    pub async fn hold(&self, addr: Addr, len: u64) -> Result<Held<'_>, RemoteError> {
        let claim = u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.per_addr_kib);
        let deadline = Instant::now() + self.wait;
        loop {
            // Registered before the check, so a share given back in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let held = {
                let mut by_addr = self.by_addr();
                let held = by_addr.entry(addr).or_default();
                if held.saturating_add(claim) <= self.per_addr_kib {
                    *held += claim;
                    if *held == 0 {
                        by_addr.remove(&addr);
                    }
                    break;
                }
                *held
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(RemoteError {
                    code: ErrorCode::Busy,
                    message: format!(
                        "this address has {held} KiB of uploads under way on this node, its \
                         share is {} KiB; retry shortly",
                        self.per_addr_kib
                    ),
                });
            }
        }
        Ok(Held {
            budget: self,
            addr,
            claimed: claim,
            kib: 0,
            permits: Vec::new(),
        })
    }

    /// KiB claimed by `addr`'s bodies under way now.
    pub fn held_by(&self, addr: Addr) -> u32 {
        self.by_addr().get(&addr).copied().unwrap_or(0)
    }

    /// KiB free now.
    pub fn free_kib(&self) -> usize {
        self.pool.available_permits()
    }
}

impl<'a> Held<'a> {
    /// Counts `bytes` more of the node-wide budget (of the body's claim: a caller never takes
    /// more than it announced to [`Budget::hold`]): `Busy` if the budget has no room within
    /// [`WAIT`].
    pub async fn take(&mut self, bytes: u64) -> Result<(), RemoteError> {
        let budget = self.budget;
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(budget.per_addr_kib);
        match tokio::time::timeout(budget.wait, budget.pool.acquire_many(kib)).await {
            Ok(Ok(p)) => {
                self.kib += kib;
                self.permits.push(p);
                Ok(())
            }
            _ => Err(RemoteError {
                code: ErrorCode::Busy,
                message: "too many bytes in flight; retry shortly".into(),
            }),
        }
    }

    /// KiB held.
    pub fn kib(&self) -> u32 {
        self.kib
    }
}

/// Why a body was not received.
pub enum BodyFailure {
    /// The budget (see [`Held::take`]).
    Refused(RemoteError),
    /// The stream failed, ended early, stalled for [`STALL_TIMEOUT`].
    Gone(String),
    /// It arrived slower than the minimum rate: this many bytes by the deadline.
    Slow(u64),
}

/// Reads a body of exactly `len` bytes into memory counted in `held`, a [`BODY_STEP`] at a
/// time, keeping up with `min_rate` on average once [`BODY_GRACE`] is over: `n` bytes must be
/// in by `BODY_GRACE + n / min_rate`, whatever the header announced (`min_rate` 0: no
/// minimum beyond the stalls).
pub async fn receive(
    recv: &mut RecvStream,
    len: usize,
    held: &mut Held<'_>,
    min_rate: u64,
) -> Result<Bytes, BodyFailure> {
    let mut started = Instant::now();
    let due = |started: Instant, n: usize| {
        (min_rate > 0)
            .then(|| started + BODY_GRACE + Duration::from_secs_f64(n as f64 / min_rate as f64))
    };
    // Memory too is taken a step at a time, as the budget is.
    let mut buf = BytesMut::with_capacity(len.min(BODY_STEP));
    let mut counted = 0usize;
    while buf.len() < len {
        if buf.len() == counted {
            let step = (len - counted).min(BODY_STEP);
            let waiting = Instant::now();
            held.take(step as u64).await.map_err(BodyFailure::Refused)?;
            // Time spent waiting on the node's own budget is not the peer's slowness.
            started += waiting.elapsed();
            buf.reserve(step);
            counted += step;
        }
        // The bytes after these are due by when these plus one more would be.
        let deadline = due(started, buf.len() + 1);
        let wait = match deadline {
            Some(d) => STALL_TIMEOUT.min(d.saturating_duration_since(Instant::now())),
            None => STALL_TIMEOUT,
        };
        match tokio::time::timeout(wait, recv.read_chunk(counted - buf.len(), true)).await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk.bytes),
            Ok(Ok(None)) => {
                return Err(BodyFailure::Gone(format!(
                    "stream ended after {} of {len} bytes",
                    buf.len()
                )));
            }
            Ok(Err(e)) => return Err(BodyFailure::Gone(e.to_string())),
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                return Err(BodyFailure::Slow(buf.len() as u64));
            }
            Err(_) => {
                return Err(BodyFailure::Gone(format!(
                    "nothing arrived for {}s, {} of {len} body bytes in",
                    STALL_TIMEOUT.as_secs(),
                    buf.len()
                )));
            }
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> Addr {
        Addr::of(std::net::IpAddr::from([10, 0, 0, last]))
    }

    #[tokio::test]
    async fn one_address_claims_at_most_a_quarter_before_its_bodies_start_and_gives_it_back() {
        let mut budget = Budget::new(64 << 20);
        budget.wait = Duration::from_millis(200);
        let (a, b) = (addr(1), addr(2));
        // Two bodies announce 16 MiB, a's quarter, and have sent little of it yet.
        let mut first = budget.hold(a, 10 << 20).await.unwrap();
        first.take(1 << 20).await.unwrap();
        let second = budget.hold(a, 6 << 20).await.unwrap();
        // A third body from a is refused at once, before its first byte, with the numbers;
        // the two under way are never refused half-way for being a's.
        let started = Instant::now();
        let Err(e) = budget.hold(a, 1024).await else {
            panic!("a third body from one address was taken")
        };
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(
            e.message.contains("its share is 16384 KiB"),
            "{}",
            e.message
        );
        assert!(started.elapsed() >= budget.wait, "refused without waiting");
        for _ in 1..10 {
            first.take(1 << 20).await.unwrap();
        }
        // The node-wide budget holds what arrived, not what was announced.
        assert_eq!(budget.free_kib(), 54 << 10);
        // Another address is not held back by a.
        let mut other = budget.hold(b, 16 << 20).await.unwrap();
        other.take(16 << 20).await.unwrap();
        assert_eq!(budget.free_kib(), 38 << 10);
        drop((first, second));
        assert_eq!(budget.held_by(a), 0);
        assert_eq!(budget.free_kib(), 48 << 10);
        assert!(budget.by_addr().len() == 1);
        // One body larger than the share claims the share.
        drop(other);
        let big = budget.hold(b, 100 << 20).await.unwrap();
        assert_eq!(budget.held_by(b), 16 << 10);
        drop(big);
        assert_eq!(budget.held_by(b), 0);
    }

    #[tokio::test]
    async fn a_full_budget_answers_busy_after_waiting() {
        let mut budget = Budget::new(8 << 20);
        budget.wait = Duration::from_millis(200);
        let mut held = Vec::new();
        for i in 1..=4 {
            held.push(budget.hold(addr(i), 2 << 20).await.unwrap());
        }
        for h in &mut held {
            h.take(2 << 20).await.unwrap();
        }
        let mut late = budget.hold(addr(9), 1024).await.unwrap();
        let started = Instant::now();
        let Err(e) = late.take(1024).await else {
            panic!("taken from a full budget")
        };
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(started.elapsed() >= budget.wait);
        // Its failed claim is not left counted against its address.
        drop(late);
        assert_eq!(budget.held_by(addr(9)), 0);
    }
}
