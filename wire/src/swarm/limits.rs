//! What remote peers may take of the libp2p side: connections (in all, pending, per key and per
//! address) and the addresses they announce.
//!
//! Keys are free, so a limit per key alone lets one host open connections under as many keys
//! as it likes: [`PerAddress`] counts inbound connections by address (an IPv4 address, an
//! IPv6 /64) from their first packet. Addresses a peer announces in identify go into Kademlia,
//! where other nodes will dial them: [`Scope`] keeps a remote peer from planting loopback or
//! private addresses (ours, or a victim's on our network) and bounds how many it plants.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Limits on the libp2p side of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmLimits {
    /// Established inbound connections at once.
    pub max_incoming: u32,
    /// Inbound connections (pending or established) from one address at once.
    pub max_per_ip: u32,
    /// Take loopback and private addresses any peer announces (a test bed), not only those a
    /// peer reached on such a network announces.
    pub accept_private_addresses: bool,
}

impl Default for SwarmLimits {
    fn default() -> Self {
        Self {
            max_incoming: 1024,
            max_per_ip: 64,
            accept_private_addresses: false,
        }
    }
}

/// Inbound connections in handshake at once.
pub const MAX_PENDING_INCOMING: u32 = 1024;
/// Inbound connections in handshake at once from one address: libp2p's QUIC cannot make an
/// address prove itself with a retry, so one address that starts handshakes and never ends
/// them holds at most these of the pending places.
pub const MAX_PENDING_PER_IP: u32 = 16;
/// Connections one key may hold with us at once (both directions: a simultaneous dial makes two).
pub const MAX_PER_PEER: u32 = 4;
/// Addresses taken from one identify message.
pub const MAX_ANNOUNCED: usize = 8;

/// How far an address reaches, nearest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// This host only (`127.0.0.0/8`, `::1`).
    Loopback,
    /// A private network: RFC 1918, shared address space (`100.64.0.0/10`), link-local,
    /// IPv6 unique-local and link-local.
    Private,
    /// The internet (and DNS names, which we cannot place).
    Public,
}

impl Scope {
    /// The scope of an IP address, or `None` for one no peer can be reached at (unspecified,
    /// multicast, broadcast, documentation).
    pub fn of_ip(ip: IpAddr) -> Option<Scope> {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_documentation()
                    || o[0] == 0
                {
                    None
                } else if v4.is_loopback() {
                    Some(Scope::Loopback)
                } else if v4.is_private()
                    || v4.is_link_local()
                    || (o[0] == 100 && (o[1] & 0xc0) == 64)
                {
                    Some(Scope::Private)
                } else {
                    Some(Scope::Public)
                }
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Scope::of_ip(IpAddr::V4(v4));
                }
                let first = v6.segments()[0];
                if v6.is_unspecified()
                    || v6.is_multicast()
                    || first == 0x2001 && v6.segments()[1] == 0x0db8
                {
                    None
                } else if v6.is_loopback() {
                    Some(Scope::Loopback)
                } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
                    Some(Scope::Private)
                } else {
                    Some(Scope::Public)
                }
            }
        }
    }

    /// The scope of a multiaddr's host part (`None`: unusable, or no host).
    pub fn of(addr: &Multiaddr) -> Option<Scope> {
        match addr.iter().next()? {
            Protocol::Ip4(ip) => Scope::of_ip(ip.into()),
            Protocol::Ip6(ip) => Scope::of_ip(ip.into()),
            Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => Some(Scope::Public),
            _ => None,
        }
    }
}

/// The IP of a multiaddr, if it starts with one.
pub(super) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// Whether `addr` is one our QUIC transport can dial: `/ip4|ip6/<host>/udp/<port>/quic-v1`,
/// optionally ending in `/p2p/<id>` (the swarm has no DNS resolver).
fn dialable(addr: &Multiaddr) -> bool {
    let mut it = addr.iter();
    let host = matches!(it.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)));
    let udp = matches!(it.next(), Some(Protocol::Udp(p)) if p != 0);
    let quic = matches!(it.next(), Some(Protocol::QuicV1));
    let rest = match it.next() {
        None => true,
        Some(Protocol::P2p(_)) => it.next().is_none(),
        Some(_) => false,
    };
    host && udp && quic && rest
}

/// The addresses of `announced` worth putting into Kademlia for a peer we are connected to
/// from `seen_from` (the scope of its address as we see it): dialable, reachable, no nearer to
/// us than the peer itself is unless `accept_private`, at most [`MAX_ANNOUNCED`], no repeats.
pub fn worth_keeping(
    announced: &[Multiaddr],
    seen_from: Option<Scope>,
    accept_private: bool,
) -> Vec<Multiaddr> {
    let mut kept: Vec<Multiaddr> = Vec::new();
    for addr in announced {
        if kept.len() == MAX_ANNOUNCED {
            break;
        }
        let Some(scope) = Scope::of(addr) else {
            continue;
        };
        let near_enough =
            accept_private || scope == Scope::Public || seen_from.is_some_and(|seen| scope >= seen);
        if near_enough && dialable(addr) && !kept.contains(addr) {
            kept.push(addr.clone());
        }
    }
    kept
}

/// Refuses inbound connections from an address that holds [`SwarmLimits::max_per_ip`].
#[derive(Debug)]
pub(super) struct PerAddress {
    max: u32,
    /// Connections per address, in handshake or established.
    by_addr: HashMap<Host, u32>,
    /// Of those, in handshake.
    pending: HashMap<Host, u32>,
    /// Each counted connection's address, and whether it is still in handshake.
    of: HashMap<ConnectionId, (Host, bool)>,
}

fn decrement(map: &mut HashMap<Host, u32>, host: Host) {
    if let Some(n) = map.get_mut(&host) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&host);
        }
    }
}

/// An address as the limits count it (here and on the node's data plane): an IPv4 address
/// (also when mapped into IPv6), or the /64 network of an IPv6 address (one host is usually
/// given a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Host {
    /// How `ip` is counted.
    pub fn of(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(v4) => Host::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Host::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Host::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Why [`PerAddress`] refused a connection.
#[derive(Debug, thiserror::Error)]
#[error("{ip} holds {max} connections (or handshakes), the most one address may hold")]
pub(super) struct TooManyFromAddress {
    ip: IpAddr,
    max: u32,
}

impl PerAddress {
    /// At most `max` inbound connections per address.
    pub(super) fn new(max: u32) -> Self {
        Self {
            max,
            by_addr: HashMap::new(),
            pending: HashMap::new(),
            of: HashMap::new(),
        }
    }

    fn release(&mut self, id: ConnectionId) {
        if let Some((host, pending)) = self.of.remove(&id) {
            decrement(&mut self.by_addr, host);
            if pending {
                decrement(&mut self.pending, host);
            }
        }
    }
}

impl NetworkBehaviour for PerAddress {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        let host = Host::of(ip);
        let held = self.by_addr.get(&host).copied().unwrap_or(0);
        let pending = self.pending.get(&host).copied().unwrap_or(0);
        if held >= self.max || pending >= MAX_PENDING_PER_IP {
            let max = if held >= self.max {
                self.max
            } else {
                MAX_PENDING_PER_IP
            };
            return Err(ConnectionDenied::new(TooManyFromAddress { ip, max }));
        }
        *self.by_addr.entry(host).or_default() += 1;
        *self.pending.entry(host).or_default() += 1;
        self.of.insert(id, (host, true));
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some((host, pending)) = self.of.get_mut(&id)
            && *pending
        {
            *pending = false;
            let host = *host;
            decrement(&mut self.pending, host);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn scopes() {
        let of = |s: &str| Scope::of_ip(s.parse().unwrap());
        assert_eq!(of("127.0.0.9"), Some(Scope::Loopback));
        assert_eq!(of("::1"), Some(Scope::Loopback));
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(of(private), Some(Scope::Private), "{private}");
        }
        for public in ["8.8.8.8", "100.128.0.1", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(of(public), Some(Scope::Public), "{public}");
        }
        for unusable in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::",
            "ff02::1",
            "2001:db8::1",
            "0.1.2.3",
        ] {
            assert_eq!(of(unusable), None, "{unusable}");
        }
    }

    #[test]
    fn a_public_peer_cannot_plant_private_or_loopback_addresses() {
        let announced = addrs(&[
            "/ip4/127.0.0.1/udp/4001/quic-v1",
            "/ip4/10.0.0.5/udp/4001/quic-v1",
            "/ip4/0.0.0.0/udp/4001/quic-v1",
            "/ip4/203.0.113.7/tcp/4001",
            "/ip4/8.8.4.4/udp/0/quic-v1",
            "/ip4/8.8.8.8/udp/4001/quic-v1",
            "/ip4/8.8.8.8/udp/4001/quic-v1",
            "/dns4/node.example.org/udp/4001/quic-v1",
        ]);
        // (DNS names too: the swarm cannot resolve them.)
        let kept = worth_keeping(&announced, Some(Scope::Public), false);
        assert_eq!(kept, addrs(&["/ip4/8.8.8.8/udp/4001/quic-v1"]));
        // A peer on our LAN may announce LAN addresses, not loopback ones; a peer on this host
        // may announce loopback ones; the setting takes them from anyone.
        let kept = worth_keeping(&announced, Some(Scope::Private), false);
        assert!(kept.contains(&announced[1]) && !kept.contains(&announced[0]));
        let kept = worth_keeping(&announced, Some(Scope::Loopback), false);
        assert!(kept.contains(&announced[0]) && kept.contains(&announced[1]));
        let kept = worth_keeping(&announced, Some(Scope::Public), true);
        assert!(kept.contains(&announced[0]) && kept.contains(&announced[1]));
        // Never the unspecified address, another transport, or port 0.
        for kept in [
            worth_keeping(&announced, Some(Scope::Loopback), true),
            worth_keeping(&announced, None, true),
        ] {
            assert!(!kept.contains(&announced[2]) && !kept.contains(&announced[3]));
            assert!(!kept.contains(&announced[4]));
        }
    }

    #[test]
    fn one_address_holds_few_handshakes_and_at_most_its_connections() {
        let mut limits = PerAddress::new(20);
        let local: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let from =
            |ip: &str| -> Multiaddr { format!("/ip4/{ip}/udp/5000/quic-v1").parse().unwrap() };
        let (a, b) = (from("10.0.0.1"), from("10.0.0.2"));
        let id = ConnectionId::new_unchecked;
        for i in 0..MAX_PENDING_PER_IP as usize {
            limits
                .handle_pending_inbound_connection(id(i), &local, &a)
                .unwrap();
        }
        // Handshakes that never finish hold only this address's handshake places.
        assert!(
            limits
                .handle_pending_inbound_connection(id(100), &local, &a)
                .is_err()
        );
        limits
            .handle_pending_inbound_connection(id(101), &local, &b)
            .unwrap();
        // Finished handshakes give theirs back, up to the address's limit of connections.
        let peer = PeerId::from(libp2p::identity::Keypair::generate_ed25519().public());
        for i in 0..MAX_PENDING_PER_IP as usize {
            limits
                .handle_established_inbound_connection(id(i), peer, &local, &a)
                .unwrap();
        }
        for i in 200..204 {
            limits
                .handle_pending_inbound_connection(id(i), &local, &a)
                .unwrap();
        }
        assert!(
            limits
                .handle_pending_inbound_connection(id(300), &local, &a)
                .is_err()
        );
        // Closing gives places back, pending or established.
        for i in (0..MAX_PENDING_PER_IP as usize)
            .chain(200..204)
            .chain([101])
        {
            limits.release(id(i));
        }
        assert!(limits.by_addr.is_empty() && limits.pending.is_empty() && limits.of.is_empty());
    }

    #[test]
    fn at_most_a_few_addresses_are_taken_from_one_announcement() {
        let many: Vec<Multiaddr> = (1..=200)
            .map(|i| {
                format!("/ip4/8.8.{}.{}/udp/4001/quic-v1", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            worth_keeping(&many, Some(Scope::Public), false).len(),
            MAX_ANNOUNCED
        );
    }
}
