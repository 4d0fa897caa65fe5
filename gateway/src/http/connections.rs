//! The S3 listener's connections: how many are open, in all and per client address, which of
//! them are idle, and the idle timer that HTTP/2 lacks.
//!
//! hyper bounds an HTTP/1 connection's wait for a request head (`header_read_timeout`), but
//! has no such limit for HTTP/2: a client that sends the h2c preface and SETTINGS, or a HEADERS
//! frame it never finishes, would hold a socket and a task forever. So every connection
//! carries an `Activity`: the requests it has in flight (from the service call until the
//! response body is done) and since when it has had none. A connection with nothing in flight
//! for [`Limits::idle`] is closed (HTTP/2: GOAWAY, then the socket), whatever its protocol.
//! A request in flight is never cut by this: a slow upload or download is bounded by
//! [`crate::stall`] instead, which notices a client that stops sending or reading.
//!
//! The `Table` caps connections per client address and in all. At a cap, the connection that
//! has been idle longest (in that address, or anywhere) is closed to make room; an idle
//! keep-alive connection is cheap to lose, its client reconnects. If none is idle, the new
//! connection is refused: closed at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::metrics::GatewayMetrics;
use crate::stall::Progress;

/// Most S3 connections open at once, from all clients.
pub const MAX_CONNECTIONS: usize = 4096;

/// Most S3 connections open at once from one client address (an IPv6 client: one /64, which
/// a single host usually has to itself).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// How long a connection closed at the cap may take to say goodbye (HTTP/2: GOAWAY and the
/// ping that follows it) before its socket is closed. Short, since a new connection waits
/// for its place.
const EVICT_GRACE: Duration = Duration::from_secs(1);

/// The longest a connection closed for idleness (or at shutdown) may take to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How often the "connection limit reached" messages may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Test-only override of [`Limits::idle`], in milliseconds (see [`Limits::from_env`]).
#[doc(hidden)]
pub const IDLE_MS_ENV: &str = "CAIRN_GATEWAY_TEST_IDLE_MS";
/// Test-only override of [`Limits::max_connections`].
#[doc(hidden)]
pub const MAX_CONNECTIONS_ENV: &str = "CAIRN_GATEWAY_TEST_MAX_CONNECTIONS";
/// Test-only override of [`Limits::max_per_address`].
#[doc(hidden)]
pub const MAX_PER_ADDRESS_ENV: &str = "CAIRN_GATEWAY_TEST_MAX_PER_ADDRESS";

/// The limits on the S3 listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may have no request in flight before it is closed; also an
    /// HTTP/1 client's time to send a request head.
    pub idle: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: super::HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_per_address: MAX_CONNECTIONS_PER_ADDRESS,
        }
    }
}

impl Limits {
    /// Most sockets open at once, counting connections still saying goodbye after they were
    /// closed to make room: the total cap and a quarter more (at least two).
    pub fn max_sockets(&self) -> usize {
        self.max_connections + (self.max_connections / 4).max(2)
    }

    /// The defaults, except where a test has set [`IDLE_MS_ENV`], [`MAX_CONNECTIONS_ENV`] or
    /// [`MAX_PER_ADDRESS_ENV`] (so integration tests can run a gateway with a 2 s limit
    /// instead of waiting 30 s). Not meant for operators; logged as a warning when in effect.
    #[doc(hidden)]
    pub fn from_env() -> Self {
        let limits = Self::from_vars(|name| std::env::var(name).ok());
        if limits != Self::default() {
            tracing::warn!(?limits, "S3 connection limits overridden by test variables");
        }
        limits
    }

    /// The defaults, with the overrides `var` returns. Values that do not parse, and zeros,
    /// are ignored.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let number = |name: &str| {
            var(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&n| n > 0)
        };
        let mut limits = Self::default();
        if let Some(ms) = number(IDLE_MS_ENV) {
            limits.idle = Duration::from_millis(ms);
        }
        let count = |name: &str| number(name).and_then(|n| usize::try_from(n).ok());
        if let Some(n) = count(MAX_CONNECTIONS_ENV) {
            limits.max_connections = n;
        }
        if let Some(n) = count(MAX_PER_ADDRESS_ENV) {
            limits.max_per_address = n;
        }
        limits
    }

    /// How long a connection closed for idleness, or at shutdown, may take to say goodbye.
    pub(crate) fn close_grace(&self) -> Duration {
        self.idle.min(CLOSE_GRACE)
    }

    /// How long a connection closed at the cap may take to say goodbye.
    pub(crate) fn evict_grace(&self) -> Duration {
        self.idle.min(EVICT_GRACE)
    }
}

/// Locks `m`, also after a panic elsewhere left it poisoned (the data stays consistent: every
/// critical section here is a few plain assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whose connection it is, for the per-address cap: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(Ipv4Addr),
    V6Net([u8; 8]),
}

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => ClientKey::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4),
                None => {
                    let mut net = [0u8; 8];
                    net.copy_from_slice(&a.octets()[..8]);
                    ClientKey::V6Net(net)
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{a}"),
            ClientKey::V6Net(net) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(net);
                write!(f, "{}/64", std::net::Ipv6Addr::from(octets))
            }
        }
    }
}

/// What one connection is doing: its requests in flight, since when it has had none, and
/// whether its writes are stuck (a response still being delivered to a slow reader).
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<Idle>,
    progress: Arc<Progress>,
    /// Cancelled when the table closes this connection to make room for another.
    evict: CancellationToken,
}

#[derive(Debug)]
struct Idle {
    in_flight: usize,
    /// When `in_flight` last dropped to zero (or the connection opened).
    since: Instant,
}

impl Activity {
    fn new(progress: Arc<Progress>) -> Self {
        Activity {
            state: Mutex::new(Idle {
                in_flight: 0,
                since: Instant::now(),
            }),
            progress,
            evict: CancellationToken::new(),
        }
    }

    /// Counts a request in flight until the returned guard is dropped (with the response body,
    /// once it has been sent or abandoned).
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        lock(&self.state).in_flight += 1;
        Busy(self.clone())
    }

    /// Since when the connection has been idle: no request in flight and no write waiting
    /// for the client. `None` while busy.
    fn idle_since(&self) -> Option<Instant> {
        let mut state = lock(&self.state);
        if state.in_flight > 0 {
            return None;
        }
        if self.progress.stuck_for().is_some() {
            // The end of a response is still on its way to a slow reader (hyper finished the
            // body, the socket has not taken it all): busy, and idle only from now on.
            state.since = Instant::now();
            return None;
        }
        Some(state.since)
    }

    /// Whether the connection is idle now.
    pub(crate) fn is_idle(&self) -> bool {
        self.idle_since().is_some()
    }

    /// Resolves once the connection has been idle for `limit` without a break.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let wait = match self.idle_since() {
                Some(since) => match limit.checked_sub(since.elapsed()) {
                    None | Some(Duration::ZERO) => return,
                    Some(left) => left,
                },
                // Busy: look again a limit later (a request that ends in between leaves a
                // `since` to count from).
                None => limit,
            };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }

    /// Resolves when the table closes this connection to make room.
    pub(crate) fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }
}

/// A request in flight on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.since = Instant::now();
        }
    }
}

/// A response body that keeps its request counted in flight until it is done or dropped.
pub(crate) struct InFlight<B> {
    body: B,
    _busy: Busy,
}

impl<B> InFlight<B> {
    pub(crate) fn new(body: B, busy: Busy) -> Self {
        InFlight { body, _busy: busy }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Rate limit for a log message: at most one per [`LOG_EVERY`], counting the ones skipped.
#[derive(Debug, Default)]
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    /// `Some(skipped since the last one)` when a message may be logged now.
    fn hit(&self) -> Option<u64> {
        let mut state = lock(&self.0);
        let (last, skipped) = &mut *state;
        if last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            *skipped += 1;
            return None;
        }
        *last = Some(Instant::now());
        Some(std::mem::take(skipped))
    }
}

/// Every open S3 connection, for the caps.
#[derive(Debug)]
pub(crate) struct Table {
    limits: Limits,
    metrics: Arc<GatewayMetrics>,
    inner: Mutex<Inner>,
    refusals: Throttle,
    evictions: Throttle,
    /// Entries in `inner.open`, readable without the lock.
    open: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// Connections open and not being closed: what the caps count.
    live: usize,
    live_per_client: HashMap<ClientKey, usize>,
}

#[derive(Debug)]
struct Entry {
    client: ClientKey,
    activity: Arc<Activity>,
    /// Closed to make room: no longer counted against the caps, though its socket may stay
    /// open for up to the eviction grace.
    closing: bool,
}

impl Inner {
    /// The live connection (of `client`, if given; other than `except`) idle the longest.
    fn oldest_idle(&self, client: Option<ClientKey>, except: Option<u64>) -> Option<u64> {
        self.open
            .iter()
            .filter(|(id, e)| {
                !e.closing && Some(**id) != except && client.is_none_or(|c| e.client == c)
            })
            .filter_map(|(id, e)| e.activity.idle_since().map(|since| (since, *id)))
            .min()
            .map(|(_, id)| id)
    }

    /// Counts one connection of `client` fewer against the caps.
    fn unlive(&mut self, client: ClientKey) {
        self.live = self.live.saturating_sub(1);
        if let Some(n) = self.live_per_client.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.live_per_client.remove(&client);
            }
        }
    }
}

/// Which cap a refused connection hit.
#[derive(Debug, Clone, Copy)]
enum Cap {
    Address,
    Total,
    /// Open sockets, counting those being closed ([`Limits::max_sockets`]).
    Sockets,
}

impl Table {
    pub(crate) fn new(limits: Limits, metrics: Arc<GatewayMetrics>) -> Arc<Self> {
        Arc::new(Table {
            limits,
            metrics,
            inner: Mutex::new(Inner::default()),
            refusals: Throttle::default(),
            evictions: Throttle::default(),
            open: AtomicUsize::new(0),
        })
    }

    /// Connections open now (including ones being closed).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a new connection from `ip`, whose writes `progress` watches: its place in the
    /// table, after closing the longest-idle connections a cap requires; `None` when a cap is
    /// reached and no connection it counts is idle (the caller closes the new one).
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, progress: Arc<Progress>) -> Option<Slot> {
        let client = ClientKey::of(ip);
        let mut inner = lock(&self.inner);
        // Connections closed to make room keep their sockets while they say goodbye (longer if
        // a request slipped in first): a client churning connections at a cap must not hold
        // more sockets than the cap and this slack.
        let sockets = inner.open.len();
        if sockets >= self.limits.max_sockets() {
            return self.refuse(client, Cap::Sockets, sockets);
        }
        // Choose every connection to close before closing any, so that a refusal closes none.
        let mut victims: Vec<u64> = Vec::with_capacity(2);
        let from_client = inner.live_per_client.get(&client).copied().unwrap_or(0);
        if from_client >= self.limits.max_per_address {
            match inner.oldest_idle(Some(client), None) {
                Some(id) => victims.push(id),
                None => return self.refuse(client, Cap::Address, from_client),
            }
        }
        let live = inner.live.saturating_sub(victims.len());
        if live >= self.limits.max_connections {
            match inner.oldest_idle(None, victims.first().copied()) {
                Some(id) => victims.push(id),
                None => return self.refuse(client, Cap::Total, live),
            }
        }
        for id in victims {
            let Some(entry) = inner.open.get_mut(&id) else {
                continue;
            };
            entry.closing = true;
            entry.activity.evict.cancel();
            let victim = entry.client;
            inner.unlive(victim);
            self.metrics.connections_evicted.inc();
            tracing::debug!(
                client = %victim,
                "closing an idle S3 connection to make room for one from {client}"
            );
            if let Some(skipped) = self.evictions.hit() {
                tracing::info!(
                    "S3 connection limit reached ({} open in all, at most {} per address): \
                     closing idle connections to make room ({skipped} more since the last message)",
                    self.limits.max_connections,
                    self.limits.max_per_address,
                );
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let activity = Arc::new(Activity::new(progress));
        inner.open.insert(
            id,
            Entry {
                client,
                activity: activity.clone(),
                closing: false,
            },
        );
        inner.live += 1;
        *inner.live_per_client.entry(client).or_default() += 1;
        self.open.store(inner.open.len(), Ordering::Relaxed);
        self.metrics.connections.inc();
        Some(Slot {
            table: self.clone(),
            id,
            activity,
        })
    }

    fn refuse(&self, client: ClientKey, cap: Cap, open: usize) -> Option<Slot> {
        self.metrics.connections_refused.inc();
        let (what, limit) = match cap {
            Cap::Address => ("from this address", self.limits.max_per_address),
            Cap::Total => ("in all", self.limits.max_connections),
            Cap::Sockets => ("or closing", self.limits.max_sockets()),
        };
        tracing::debug!(
            %client,
            "refusing an S3 connection: {open} open {what} (limit {limit}), none idle"
        );
        if let Some(skipped) = self.refusals.hit() {
            tracing::warn!(
                "S3 connection limit reached: refusing a connection from {client}, with {open} \
                 open {what} (limit {limit}) and none idle ({skipped} more refused since the \
                 last message)"
            );
        }
        None
    }

    fn remove(&self, id: u64) {
        let mut inner = lock(&self.inner);
        if let Some(entry) = inner.open.remove(&id) {
            if !entry.closing {
                inner.unlive(entry.client);
            }
            self.metrics.connections.dec();
        }
        self.open.store(inner.open.len(), Ordering::Relaxed);
    }
}

/// A connection's place in the [`Table`], given up when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<Table>,
    id: u64,
    activity: Arc<Activity>,
}

impl Slot {
    /// What the connection is doing.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::Watched;

    fn progress() -> Arc<Progress> {
        Watched::new(tokio::io::empty()).1
    }

    fn table(max_connections: usize, max_per_address: usize) -> Arc<Table> {
        let limits = Limits {
            idle: Duration::from_secs(30),
            max_connections,
            max_per_address,
        };
        Table::new(limits, GatewayMetrics::new())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_variables_override_the_defaults_and_bad_values_are_ignored() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Limits::from_vars(vars(&[])), Limits::default());
        let set = Limits::from_vars(vars(&[
            (IDLE_MS_ENV, "2000"),
            (MAX_CONNECTIONS_ENV, "64"),
            (MAX_PER_ADDRESS_ENV, " 8 "),
        ]));
        assert_eq!(
            set,
            Limits {
                idle: Duration::from_secs(2),
                max_connections: 64,
                max_per_address: 8
            }
        );
        let bad = Limits::from_vars(vars(&[
            (IDLE_MS_ENV, "soon"),
            (MAX_CONNECTIONS_ENV, "0"),
            (MAX_PER_ADDRESS_ENV, "-1"),
        ]));
        assert_eq!(bad, Limits::default());
        assert_eq!(set.close_grace(), Duration::from_secs(2));
        assert_eq!(Limits::default().close_grace(), CLOSE_GRACE);
    }

    #[test]
    fn an_address_at_its_cap_loses_its_longest_idle_connection_then_is_refused() {
        let t = table(100, 3);
        let a = ip("10.0.0.1");
        let slots: Vec<Slot> = (0..3).map(|_| t.admit(a, progress()).unwrap()).collect();
        // The second one was idle longest: the first is busy, the third newer.
        let _busy = slots[0].activity().begin();
        std::thread::sleep(Duration::from_millis(5));
        {
            let mut s = lock(&slots[2].activity().state);
            s.since = Instant::now();
        }
        let fourth = t
            .admit(a, progress())
            .expect("an idle connection makes room");
        assert!(!slots[0].activity().evict.is_cancelled());
        assert!(slots[1].activity().evict.is_cancelled());
        assert!(!slots[2].activity().evict.is_cancelled());
        assert_eq!(t.metrics.connections_evicted.get(), 1);
        // The evicted one stays open (and in the gauge) until its task lets go of it.
        assert_eq!(t.open(), 4);
        assert_eq!(t.metrics.connections.get(), 4);
        // Another address is not affected by this one's cap.
        let other = t.admit(ip("10.0.0.2"), progress()).unwrap();
        // Now every live connection of `a` is busy: the next one from `a` is refused.
        let _b2 = slots[2].activity().begin();
        let _b4 = fourth.activity().begin();
        assert!(t.admit(a, progress()).is_none());
        assert_eq!(t.metrics.connections_refused.get(), 1);
        assert_eq!(t.metrics.connections_evicted.get(), 1);
        drop(slots);
        drop(fourth);
        drop(other);
        assert_eq!(t.open(), 0);
        assert_eq!(t.metrics.connections.get(), 0);
        assert!(lock(&t.inner).live_per_client.is_empty());
        assert_eq!(lock(&t.inner).live, 0);
    }

    #[test]
    fn connections_closing_to_make_room_count_toward_a_hard_cap_on_sockets() {
        // Churning idle connections from one address at the total cap: each new one evicts an
        // idle one, which keeps its socket until its task lets go of it (here: never).
        let t = table(8, 100);
        let cap = t.limits.max_sockets();
        assert_eq!(cap, 10);
        let a = ip("10.0.0.1");
        let mut kept = Vec::new();
        while let Some(slot) = t.admit(a, progress()) {
            kept.push(slot);
            assert!(t.open() <= cap, "{} sockets open", t.open());
            assert!(kept.len() <= cap, "never refused");
        }
        // Refused at the socket cap though idle connections were there to evict.
        assert_eq!(t.open(), cap);
        assert_eq!(t.metrics.connections_evicted.get(), 2);
        assert_eq!(t.metrics.connections_refused.get(), 1);
        // Once a closing one lets go, room is made again.
        let closing = kept
            .iter()
            .position(|s| s.activity().evict.is_cancelled())
            .unwrap();
        drop(kept.remove(closing));
        assert!(t.admit(a, progress()).is_some());
    }

    #[test]
    fn the_total_cap_closes_the_longest_idle_connection_anywhere() {
        let t = table(3, 3);
        let first = t.admit(ip("10.0.0.1"), progress()).unwrap();
        let second = t.admit(ip("10.0.0.2"), progress()).unwrap();
        let third = t.admit(ip("10.0.0.3"), progress()).unwrap();
        let _busy = first.activity().begin();
        let fourth = t.admit(ip("10.0.0.4"), progress()).unwrap();
        assert!(second.activity().evict.is_cancelled());
        assert!(!third.activity().evict.is_cancelled());
        let _b3 = third.activity().begin();
        let b4 = fourth.activity().begin();
        assert!(t.admit(ip("10.0.0.5"), progress()).is_none());
        assert_eq!(t.metrics.connections_refused.get(), 1);
        // The only idle connection makes room, whoever's it is.
        drop(b4);
        let fifth = t.admit(ip("10.0.0.4"), progress()).unwrap();
        assert!(fourth.activity().evict.is_cancelled());
        drop((first, second, third, fourth, fifth));
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn one_idle_connection_of_the_address_makes_room_under_both_caps() {
        let t = table(2, 1);
        let a = t.admit(ip("10.0.0.1"), progress()).unwrap();
        let b = t.admit(ip("10.0.0.2"), progress()).unwrap();
        let _busy_b = b.activity().begin();
        // 10.0.0.1 is at its cap and the table at its total: closing its idle one frees both.
        let c = t.admit(ip("10.0.0.1"), progress()).unwrap();
        assert!(a.activity().evict.is_cancelled());
        assert_eq!(t.metrics.connections_evicted.get(), 1);
        // Nothing idle: refused, and the busy ones are left alone.
        let _busy_c = c.activity().begin();
        assert!(t.admit(ip("10.0.0.3"), progress()).is_none());
        assert!(!b.activity().evict.is_cancelled() && !c.activity().evict.is_cancelled());
        assert_eq!(t.metrics.connections_evicted.get(), 1);
    }

    #[tokio::test]
    async fn idle_for_waits_for_the_last_request_to_end() {
        let activity = Arc::new(Activity::new(progress()));
        let limit = Duration::from_millis(200);
        let busy = activity.begin();
        assert!(
            tokio::time::timeout(Duration::from_millis(400), activity.idle_for(limit))
                .await
                .is_err(),
            "busy is not idle"
        );
        drop(busy);
        let ended = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), activity.idle_for(limit))
            .await
            .expect("idle after the request");
        assert!(ended.elapsed() >= limit);
    }

    #[test]
    fn clients_are_told_apart_by_ipv4_address_and_ipv6_slash_64() {
        assert_eq!(
            ClientKey::of(ip("::ffff:10.0.0.1")),
            ClientKey::of(ip("10.0.0.1"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }
}
