//! Who may hold the data plane's connections: at most `network.max_connections` at once, at
//! most `network.max_connections_per_ip` from one address and [`MAX_CONNECTIONS_PER_PEER`]
//! from one key; a connection with no request open for `network.idle_timeout` is closed.
//!
//! Keys are free, so the per-key limit alone lets one host open connections under as many keys
//! as it likes; the per-address limit is at most half the node-wide one, so one address can
//! never take every connection. An address counts from the moment its first packet arrives,
//! before the handshake (so a flood of handshakes is refused cheaply). Source addresses of
//! UDP packets can be forged, so an address holding half its limit must first prove it owns
//! the address (a QUIC retry, one round trip) before it is counted further.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_wire::data::MAX_CONNECTIONS_PER_PEER;
use libp2p::PeerId;

/// The limits on connections, from the node's `[network]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections at once, from everyone.
    pub max_connections: usize,
    /// Connections at once from one address (an IPv4 address, an IPv6 /64).
    pub max_per_ip: usize,
    /// A connection with no request open for this long is closed.
    pub idle_timeout: Duration,
    /// Slowest average rate (bytes per second) an upload body may arrive at after
    /// [`BODY_GRACE`](super::body::BODY_GRACE); 0: no minimum.
    pub min_body_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_ip: 256,
            idle_timeout: Duration::from_secs(60),
            min_body_rate: 64 << 10,
        }
    }
}

/// An address as the limits count it: an IPv4 address, or an IPv6 /64 (the swarm's own).
pub use cairn_wire::swarm::Host as Addr;

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node holds `network.max_connections`.
    Node,
    /// The address holds `network.max_connections_per_ip`.
    Address,
    /// The key holds [`MAX_CONNECTIONS_PER_PEER`].
    Peer,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Node => "node",
            Refused::Address => "address",
            Refused::Peer => "peer",
        }
    }
}

/// What to do with a new connection attempt.
#[derive(Debug)]
pub enum Admission {
    /// Take it; the slot is held until dropped.
    Take(AddrSlot),
    /// Make it prove its address first (a QUIC retry).
    Validate,
    /// Refuse it.
    Refuse(Refused),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_addr: HashMap<Addr, usize>,
    by_peer: HashMap<PeerId, usize>,
}

/// The connections held, by address and by key.
#[derive(Debug, Default)]
pub struct Conns {
    counts: Mutex<Counts>,
}

impl Conns {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections held now (handshakes included).
    pub fn total(&self) -> usize {
        self.counts().total
    }

    /// Decides on an attempt from `ip`, whose address is proven (`validated`: it answered a
    /// retry) or not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, validated: bool, limits: &Limits) -> Admission {
        let addr = Addr::of(ip);
        let mut c = self.counts();
        let held = c.by_addr.get(&addr).copied().unwrap_or(0);
        if c.total >= limits.max_connections {
            return Admission::Refuse(Refused::Node);
        }
        if held >= limits.max_per_ip {
            return Admission::Refuse(Refused::Address);
        }
        if !validated && (held >= limits.max_per_ip / 2 || c.total >= limits.max_connections / 2) {
            return Admission::Validate;
        }
        c.total += 1;
        *c.by_addr.entry(addr).or_default() += 1;
        Admission::Take(AddrSlot {
            conns: self.clone(),
            addr,
        })
    }

    /// One of `peer`'s [`MAX_CONNECTIONS_PER_PEER`] places, or `None` if it holds them all.
    pub fn peer(self: &Arc<Self>, peer: PeerId) -> Option<PeerSlot> {
        let mut c = self.counts();
        let n = c.by_peer.entry(peer).or_default();
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            conns: self.clone(),
            peer,
        })
    }
}

/// A connection counted against the node and its address, given back when dropped.
#[derive(Debug)]
pub struct AddrSlot {
    conns: Arc<Conns>,
    addr: Addr,
}

impl AddrSlot {
    /// The address counted.
    pub fn addr(&self) -> Addr {
        self.addr
    }
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut c = self.conns.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                c.by_addr.remove(&self.addr);
            }
        }
    }
}

/// One of a peer's [`MAX_CONNECTIONS_PER_PEER`] connections, given back when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    conns: Arc<Conns>,
    peer: PeerId,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut c = self.conns.counts();
        if let Some(n) = c.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> Limits {
        Limits {
            max_connections: max,
            max_per_ip: per_ip,
            ..Limits::default()
        }
    }

    #[test]
    fn one_address_takes_at_most_its_limit_and_must_prove_itself_first() {
        let conns = Arc::new(Conns::default());
        let l = limits(8, 4);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..2 {
            match conns.admit(a, false, &l) {
                Admission::Take(s) => held.push(s),
                other => panic!("{other:?}"),
            }
        }
        // Half its limit held: unproven attempts must answer a retry first.
        assert!(matches!(conns.admit(a, false, &l), Admission::Validate));
        for _ in 0..2 {
            match conns.admit(a, true, &l) {
                Admission::Take(s) => held.push(s),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            conns.admit(a, true, &l),
            Admission::Refuse(Refused::Address)
        ));
        // Another address is still served, and the node-wide limit holds.
        for _ in 0..4 {
            match conns.admit(b, true, &l) {
                Admission::Take(s) => held.push(s),
                other => panic!("{other:?}"),
            }
        }
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(matches!(
            conns.admit(c, true, &l),
            Admission::Refuse(Refused::Node)
        ));
        // Dropped slots are given back.
        held.clear();
        assert_eq!(conns.total(), 0);
        assert!(conns.counts().by_addr.is_empty());
        assert!(matches!(conns.admit(a, false, &l), Admission::Take(_)));
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Addr::of(a), Addr::of(b));
        assert_ne!(Addr::of(a), Addr::of(other));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(Addr::of(mapped), Addr::of("10.1.2.3".parse().unwrap()));
    }

    fn random_peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn a_key_holds_at_most_its_share() {
        let conns = Arc::new(Conns::default());
        let peer = random_peer();
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER)
            .map(|_| conns.peer(peer).unwrap())
            .collect();
        assert!(conns.peer(peer).is_none());
        assert!(conns.peer(random_peer()).is_some());
        drop(held);
        assert!(conns.counts().by_peer.is_empty());
    }
}
