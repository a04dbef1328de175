//! The inter-host fabric: how this host reaches containers on other hosts.
//!
//! Level-triggered, as docs/cluster.md specifies: the desired state is computed from
//! the store (`nodes/` and `ipam/blocks/`, [`desired`]), the actual state is read from
//! the kernel, and the difference is applied ([`reconcile`]) — at start, on every
//! relevant store change (debounced) and every 30 s ([`Fabric::run`]).
//!
//! # What strait owns in the kernel
//!
//! The fabric adds, replaces and deletes only what is unmistakably its own, so that a
//! restarted agent adopts its previous state and purges what is stale without a flush
//! (traffic keeps flowing across a restart), and never touches anyone else's state:
//!
//! * the device `strait.vxlan` and everything on it: its addresses (the node's tunnel
//!   addresses), its FDB and its neighbour entries. The name carries strait's link
//!   prefix; nobody else puts entries on it.
//! * routes with protocol [`RTPROT_STRAIT`] (83) that have a gateway or sit on
//!   `strait.vxlan`, and blackhole routes with protocol 83. The protocol tags them as
//!   strait's; the gateway/device condition leaves out the other strait routes in the
//!   same table: the /32 and /128 host routes to local containers on `strait<hash>`
//!   veths, which belong to `attach` and which the fabric never reads or changes.
//!
//! Routes of any other protocol are never touched, whatever their destination.
//!
//! # Inputs
//!
//! The node registry writes this node's own record (`nodes/<node>`, with its tunnel
//! addresses and VTEP MAC); the fabric reads it from the store like every other record
//! and only assigns the tunnel addresses to `strait.vxlan` (it never allocates them).
//! Its VTEP MAC is [`vtep_mac`] of the node name, which the registry publishes too.
//! The underlay (interface and addresses) comes in [`FabricConfig`], as the node
//! registry found it ([`crate::node::underlay::detect`]), so the addresses the fabric
//! encapsulates from are the ones the record publishes.

pub mod bgp;
pub mod desired;
pub mod reconcile;

mod hostgw;
#[cfg(test)]
mod kernel_tests;
mod overrides;
mod runner;
mod vxlan;

use std::time::Duration;

use strait_api::{FabricMode, MacAddr};

pub use runner::{DeviceRef, Fabric, FabricHandle, ViewAck, ViewFollower};
pub use strait_api::routes::{
    DeviceReport, EntryKind, EntryState, ReportEntry, RouteReport, Warning,
};

pub use crate::node::Underlay;

use crate::netlink::{NetlinkError, RTPROT_STRAIT};
use crate::store::StoreError;

/// Name of the VXLAN device (one per host).
pub const VXLAN_DEVICE: &str = "strait.vxlan";

/// VXLAN header overhead on an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) +
/// inner Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same on an IPv6 underlay (outer IPv6 is 40 bytes).
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// How the fabric of this node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricConfig {
    /// This node's name (its record is `nodes/<node>`).
    pub node: String,
    /// `None` wants nothing: a fabric started in that mode removes what an earlier
    /// mode left.
    pub mode: FabricMode,
    /// This node's underlay. VXLAN encapsulates from its IPv4 address when it has one,
    /// else from its IPv6 address; the device's MTU follows the interface (`iface`, or
    /// the link holding that address).
    pub underlay: Underlay,
    /// VXLAN network identifier (default 4096).
    pub vni: u32,
    /// VXLAN UDP port (default 4789).
    pub port: u16,
    /// Full reconciliation period, also without store changes (default 30 s).
    pub resync: Duration,
    /// How long store changes are collected before one reconciliation (default 75 ms):
    /// a burst of 1 000 node records costs a handful of reconciliations, not 1 000.
    pub debounce: Duration,
}

impl FabricConfig {
    /// The configuration with docs/cluster.md's defaults.
    pub fn new(node: impl Into<String>, mode: FabricMode, underlay: Underlay) -> Self {
        Self {
            node: node.into(),
            mode,
            vni: 4096,
            port: 4789,
            underlay,
            resync: Duration::from_secs(30),
            debounce: Duration::from_millis(75),
        }
    }
}

/// Errors of the fabric; each says what failed. Reconciliation keeps going past a
/// single failed kernel request and reports them together ([`FabricError::Apply`]).
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("underlay interface {0} does not exist")]
    NoUnderlayIface(String),
    #[error("no link holds the underlay address {0}")]
    NoUnderlayLink(std::net::IpAddr),
    #[error("vxlan needs an underlay address on this node")]
    VxlanWithoutUnderlay,
    #[error("the store watch on {0} ended")]
    WatchEnded(String),
    #[error("{failed} of {total} kernel changes failed, first: {first}")]
    Apply {
        failed: usize,
        total: usize,
        first: String,
    },
}

/// The VTEP MAC of node `node`: derived from the name alone (FNV-1a), so it is the
/// same across restarts and every peer's FDB and neighbour entries stay valid. Locally
/// administered unicast (`0e:…`, like the example in docs/cluster.md); 40 bits of hash
/// make a collision among 1 000 nodes a one-in-two-million event.
pub fn vtep_mac(node: &str) -> [u8; 6] {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = node.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    let h = hash.to_be_bytes();
    [0x0e, h[0] ^ h[5], h[1] ^ h[6], h[2] ^ h[7], h[3], h[4]]
}

/// A node record's VTEP MAC (`aa:bb:cc:dd:ee:ff`, as the registry writes it; any
/// form [`MacAddr`] reads) → bytes. Multicast is not refused: a peer's VTEP MAC only
/// fills this host's FDB and neighbour entries, it is never assigned to a link here.
pub(crate) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    text.parse::<MacAddr>().ok().map(MacAddr::octets)
}

/// The VXLAN device's MTU on an underlay link of MTU `underlay_mtu`.
pub fn vxlan_mtu(underlay_mtu: u32, ipv6_underlay: bool) -> u32 {
    let overhead = if ipv6_underlay {
        VXLAN_OVERHEAD_V6
    } else {
        VXLAN_OVERHEAD_V4
    };
    underlay_mtu.saturating_sub(overhead)
}

/// Whether `route` is the fabric's reconcile's in `mode`: protocol 83 and a blackhole,
/// or a gateway, or on the VXLAN device `vxlan`. (Container host routes have none of
/// these.) In bgp mode the gateway routes are FIB sync's ([`bgp::fib`]), so the
/// reconcile owns only the blackholes (and anything left on an old `strait.vxlan`).
pub(crate) fn owns_route(
    route: &crate::netlink::Route,
    vxlan: Option<u32>,
    mode: FabricMode,
) -> bool {
    route.protocol == RTPROT_STRAIT
        && (route.kind == crate::netlink::RouteKind::Blackhole
            || (route.gateway.is_some() && mode != FabricMode::Bgp)
            || (vxlan.is_some() && route.oif == vxlan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Route;

    #[test]
    fn parses_macs_strictly() {
        assert_eq!(
            parse_mac("0e:12:34:56:78:9a"),
            Some([0x0e, 0x12, 0x34, 0x56, 0x78, 0x9a])
        );
        assert_eq!(parse_mac("0e:12:34:56:78"), None);
        assert_eq!(parse_mac("0e:12:34:56:78:9a:00"), None);
        assert_eq!(parse_mac("0e:12:34:56:78:zz"), None);
        assert_eq!(parse_mac("e:12:34:56:78:9a"), None);
    }

    #[test]
    fn mtu_leaves_room_for_the_encapsulation() {
        assert_eq!(vxlan_mtu(1500, false), 1450);
        assert_eq!(vxlan_mtu(1500, true), 1430);
        assert_eq!(vxlan_mtu(9000, false), 8950);
    }

    #[test]
    fn bgp_mode_leaves_gateway_routes_to_fib_sync() {
        let block = "10.244.2.0/26".parse().expect("net");
        let via = Route::via(block, "10.0.0.2".parse().expect("ip"), 2, false);
        assert!(!owns_route(&via, None, FabricMode::Bgp));
        assert!(owns_route(&Route::blackhole(block), None, FabricMode::Bgp));
        let host = Route::host("10.244.1.2".parse().expect("ip"), 5);
        assert!(!owns_route(&host, None, FabricMode::Bgp));
    }

    #[test]
    fn never_owns_container_host_routes_or_foreign_protocols() {
        let vxlan = FabricMode::Vxlan;
        let host = Route::host("10.244.1.2".parse().expect("ip"), 5);
        assert!(!owns_route(&host, Some(9), vxlan));
        let block = "10.244.2.0/26".parse().expect("net");
        assert!(owns_route(&Route::blackhole(block), None, vxlan));
        let via = Route::via(block, "10.0.0.2".parse().expect("ip"), 2, false);
        assert!(owns_route(&via, None, vxlan));
        let mut foreign = via.clone();
        foreign.protocol = 4;
        assert!(!owns_route(&foreign, Some(9), vxlan));
        let mut on_vxlan = host.clone();
        on_vxlan.oif = Some(9);
        assert!(owns_route(&on_vxlan, Some(9), vxlan));
    }
}
