//! What the speaker is configured with: its own identity and timers
//! ([`SpeakerConfig`]) and its neighbours ([`PeerSpec`]), and what it reports
//! ([`FibEvent`], [`SpeakerError`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::bfd::SessionParams;
use crate::policy::{ImportPolicy, PrefixFilter};
use crate::rib::FibChange;
use crate::session::BGP_PORT;

/// BFD timers for one peer (RFC 5880 §6.8.1); the default is FRR's and BIRD's
/// 300 ms × 3.
pub type BfdParams = SessionParams;

/// Proposed hold time. FRR's `datacenter` profile: 9 s (keepalive 3 s) notices a dead
/// peer without BFD in seconds rather than RFC 4271's suggested 90, and a fabric's
/// links are short and idle enough that three lost keepalives mean a dead peer.
pub const DEFAULT_HOLD_TIME: u16 = 9;
/// Wait between connection attempts to a peer that is not there (yet).
pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(2);
/// How long [`FibEvent::Converged`] waits at most when graceful restart is off.
pub const DEFAULT_CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// The speaker itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// RFC 4456 cluster ID when reflecting; the router ID when `None`.
    pub cluster_id: Option<Ipv4Addr>,
    /// Listening sockets. The default `[::]:179` is dual-stack and takes IPv4 peers too.
    pub listen: Vec<SocketAddr>,
    /// Equal-cost paths per prefix for the FIB (1 = no ECMP).
    pub multipath: usize,
    /// Graceful restart (RFC 4724): the restart time we announce, also the longest a
    /// restarting peer's routes are kept, and the longest [`FibEvent::Converged`]
    /// waits. `None`: no capability sent, peers' routes dropped when they go down.
    pub graceful_restart: Option<Duration>,
    /// Hold time proposed in our OPEN (0, or at least 3 s); keepalives every third.
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// Our next hop for a family the session does not run over: the IPv6 next hop of
    /// routes we originate to a peer reached over IPv4 (and the reverse). The session's
    /// own local address is used for its family.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// Offer the Extended Next Hop Encoding capability for IPv4 unicast via IPv6 (RFC
    /// 8950) to every peer (default on). It takes effect on a session only when the
    /// peer offers it too (BIRD: `extended next hop on` in the ipv4 channel; FRR:
    /// `neighbor X capability extended-nexthop`, automatic on link-local peering);
    /// then IPv4 routes may carry IPv6 next hops, and ours go with our IPv6 address
    /// when we have no IPv4 one (an IPv6-only node). Offering it changes nothing for a
    /// peer that does not, so it is offered over IPv4 sessions too: a route reflector
    /// there can pass on IPv4 routes of IPv6-only nodes.
    pub extended_next_hop: bool,
    /// Longest wait for [`FibEvent::Converged`] without graceful restart.
    pub converge_deadline: Duration,
    /// This speaker replaces one that stopped for a restart and left its routes in
    /// the kernel. RFC 4724 §4.1: its OPENs carry the Restart State (R) bit until it
    /// has converged, so helpers do not wait for our End-of-RIB before sending theirs.
    pub restarted: bool,
}

impl SpeakerConfig {
    /// Defaults for a fabric node: listen on `[::]:179`, ECMP over 8 paths, graceful
    /// restart 120 s, hold time 9 s, connect retry 2 s, RFC 8950 offered.
    pub fn new(asn: u32, router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            asn,
            router_id,
            cluster_id: None,
            listen: vec![SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), BGP_PORT)],
            multipath: 8,
            graceful_restart: Some(Duration::from_secs(120)),
            hold_time: DEFAULT_HOLD_TIME,
            connect_retry: DEFAULT_CONNECT_RETRY,
            local_v4: None,
            local_v6: None,
            extended_next_hop: true,
            converge_deadline: DEFAULT_CONVERGE_DEADLINE,
            restarted: false,
        }
    }
}

/// One neighbour. Two specs for the same address are the same peer; a changed spec
/// restarts its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub address: IpAddr,
    pub asn: u32,
    /// Reflect routes to it as a route-reflection client (iBGP only).
    pub rr_client: bool,
    /// The peer's port for our connections.
    pub port: u16,
    /// Source address of our connections; the kernel picks one when `None`.
    pub local: Option<IpAddr>,
    /// RFC 2385 TCP MD5 key.
    pub md5_key: Option<Vec<u8>>,
    /// More accepted routes than this, or more refused ones ([`PeerSpec::import`]),
    /// ends the session (Cease, RFC 4486 subcode 1).
    pub max_prefixes: Option<usize>,
    /// Run BFD (RFC 5881) with it while the session is Established.
    pub bfd: Option<BfdParams>,
    /// Free text for `netctl bgp peers`.
    pub description: String,
    /// Only accept its connections, never open one.
    pub passive: bool,
    /// Hold time proposed to it; [`SpeakerConfig::hold_time`] when `None`.
    pub hold_time: Option<u16>,
    /// Wait between connection attempts; [`SpeakerConfig::connect_retry`] when `None`.
    pub connect_retry: Option<Duration>,
    /// Announce graceful restart (RFC 4724) to it and keep its routes while it
    /// restarts, when the speaker has it on ([`SpeakerConfig::graceful_restart`]).
    pub graceful_restart: bool,
    /// What its announcements must pass (with the speaker's protected address space,
    /// [`super::Speaker::set_protected`], when it protects); refused ones are counted
    /// and listed ([`super::Speaker::refused`]), never reach the RIB.
    pub import: ImportPolicy,
    /// What it is sent: best paths this list denies are kept from it.
    pub export: PrefixFilter,
}

impl PeerSpec {
    pub fn new(address: IpAddr, asn: u32) -> Self {
        PeerSpec {
            address,
            asn,
            rr_client: false,
            port: BGP_PORT,
            local: None,
            md5_key: None,
            max_prefixes: None,
            bfd: None,
            description: String::new(),
            passive: false,
            hold_time: None,
            connect_retry: None,
            graceful_restart: true,
            import: ImportPolicy::default(),
            export: PrefixFilter::default(),
        }
    }
}

/// What the speaker tells the FIB sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibEvent {
    /// Best-path changes in order; a later change of a prefix supersedes an earlier
    /// one. An empty `next_hops` removes the prefix.
    Changes(Vec<FibChange>),
    /// Sent once: the initial routing exchange is over, so routes the FIB sync adopted
    /// and the RIB did not confirm can go. See the speaker's module docs for when.
    Converged,
}

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("register peer {peer} with the listener: {source}")]
    Register {
        peer: IpAddr,
        source: std::io::Error,
    },
    #[error("peer {peer}: {reason}")]
    InvalidPeer { peer: IpAddr, reason: &'static str },
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("the speaker has stopped")]
    Stopped,
}
