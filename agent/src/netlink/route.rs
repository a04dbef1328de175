//! Routes in the main table: unicast routes (via a gateway, or straight out of a link)
//! and blackhole routes. A gateway of the other family (an IPv4 route via an IPv6
//! gateway, RFC 8950's BGP routes) goes in `RTA_VIA` instead of `RTA_GATEWAY`, as
//! `ip route add 10.0.0.0/24 via inet6 fd00::1` does, and is read back from there.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError, RTPROT_STRAIT};

/// What the kernel does with a packet that matches a route (`rtm_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Forward it (via the gateway, or straight out of the link).
    #[default]
    Unicast,
    /// Drop it silently (`ip route add blackhole <prefix>`).
    Blackhole,
}

/// A unicast or blackhole route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// `rtm_protocol`; [`RTPROT_STRAIT`] for everything strait installs.
    pub protocol: u8,
    /// `onlink`: use the gateway without requiring a connected route to it.
    pub onlink: bool,
    /// Route priority (`metric`); `None` leaves the kernel's default.
    pub metric: Option<u32>,
}

impl Route {
    /// A strait-owned host route (/32 or /128) to `ip` straight out of link `oif`
    /// (`ip route add <ip> dev <oif> scope link proto 83`).
    pub fn host(ip: IpAddr, oif: u32) -> Self {
        Self {
            kind: RouteKind::Unicast,
            destination: IpNet::from(ip),
            gateway: None,
            oif: Some(oif),
            protocol: RTPROT_STRAIT,
            onlink: false,
            metric: None,
        }
    }

    /// The default route of `gateway`'s family via `gateway` out of `oif`. An IPv4
    /// gateway is marked `onlink` (no connected route covers it); an IPv6 link-local
    /// gateway is on the link by definition.
    pub fn default_via(gateway: IpAddr, oif: u32) -> Self {
        let destination = match gateway {
            IpAddr::V4(_) => IpNet::V4(Default::default()),
            IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        Self {
            kind: RouteKind::Unicast,
            destination,
            gateway: Some(gateway),
            oif: Some(oif),
            protocol: RTPROT_STRAIT,
            onlink: gateway.is_ipv4(),
            metric: None,
        }
    }

    /// A strait-owned route to `destination` via `gateway` out of `oif`
    /// (`ip route add <destination> via <gateway> dev <oif> [onlink] proto 83`).
    /// `onlink` when no connected route covers the gateway (a VXLAN peer's tunnel
    /// address); without it the kernel refuses a gateway it cannot reach directly.
    pub fn via(destination: IpNet, gateway: IpAddr, oif: u32, onlink: bool) -> Self {
        Self {
            kind: RouteKind::Unicast,
            destination,
            gateway: Some(gateway),
            oif: Some(oif),
            protocol: RTPROT_STRAIT,
            onlink,
            metric: None,
        }
    }

    /// A strait-owned blackhole route (`ip route add blackhole <destination> proto 83`).
    pub fn blackhole(destination: IpNet) -> Self {
        Self {
            kind: RouteKind::Blackhole,
            destination,
            gateway: None,
            oif: None,
            protocol: RTPROT_STRAIT,
            onlink: false,
            metric: None,
        }
    }

    /// The same route with priority `metric`: two routes to one destination through
    /// different links coexist when their metrics differ.
    pub fn with_metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }

    pub(super) fn to_message(&self) -> RouteMessage {
        let kind = match self.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Blackhole => RouteType::BlackHole,
        };
        let mut m = main_table_message(self.destination, self.protocol, kind);
        // A route without a gateway reaches its destination directly on the link; the
        // kernel wants that said for IPv4 (IPv6 ignores the scope). A blackhole reaches
        // nothing and is universe-scoped, as `ip route` makes it.
        m.header.scope = if self.kind == RouteKind::Unicast
            && self.gateway.is_none()
            && matches!(self.destination, IpNet::V4(_))
        {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        if self.onlink {
            m.header.flags |= RouteFlags::Onlink;
        }
        if let Some(gateway) = self.gateway {
            m.attributes
                .push(gateway_attribute(&self.destination, gateway));
        }
        if let Some(oif) = self.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(metric) = self.metric {
            m.attributes.push(RouteAttribute::Priority(metric));
        }
        m
    }
}

/// The part every main-table route message shares: family, destination (no attribute
/// for a default route), table, protocol and type.
pub(super) fn main_table_message(
    destination: IpNet,
    protocol: u8,
    kind: RouteType,
) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = match destination {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    m.header.destination_prefix_length = destination.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(protocol);
    m.header.kind = kind;
    if destination.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                destination.addr(),
            )));
    }
    m
}

/// The attribute naming `gateway` for a route to `destination`: `RTA_GATEWAY` in the
/// route's own family, `RTA_VIA` with the gateway's family otherwise (the kernel takes
/// IPv4 routes via IPv6 gateways since Linux 5.2).
pub(super) fn gateway_attribute(destination: &IpNet, gateway: IpAddr) -> RouteAttribute {
    match (destination, gateway) {
        (IpNet::V4(_), IpAddr::V6(v6)) => RouteAttribute::Via(RouteVia::Inet6(v6)),
        (IpNet::V6(_), IpAddr::V4(v4)) => RouteAttribute::Via(RouteVia::Inet(v4)),
        _ => RouteAttribute::Gateway(RouteAddress::from(gateway)),
    }
}

/// `via 10.0.0.1`, or `via inet6 fd00::1` for a gateway of the other family (as `ip
/// route` prints it).
pub(super) fn fmt_via(
    f: &mut std::fmt::Formatter<'_>,
    destination: &IpNet,
    gateway: IpAddr,
) -> std::fmt::Result {
    match (destination, gateway) {
        (IpNet::V4(_), IpAddr::V6(_)) => write!(f, " via inet6 {gateway}"),
        (IpNet::V6(_), IpAddr::V4(_)) => write!(f, " via inet {gateway}"),
        _ => write!(f, " via {gateway}"),
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == RouteKind::Blackhole {
            write!(f, "blackhole ")?;
        }
        write!(f, "{}", self.destination)?;
        if let Some(gateway) = self.gateway {
            fmt_via(f, &self.destination, gateway)?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev index {oif}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

impl Netlink {
    /// Adds `route`; EEXIST if a route to the same destination exists.
    pub async fn add_route(&self, route: &Route) -> Result<(), NetlinkError> {
        self.ack(
            "add route",
            route,
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    }

    /// Adds `route` or replaces the route to the same destination (`ip route replace`).
    pub async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        self.ack(
            "replace route",
            route,
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Deletes the route matching destination, protocol and (if set) output interface
    /// and gateway; ESRCH if there is none.
    pub async fn del_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let mut m = route.to_message();
        // Scope is part of the match for IPv4: "no scope" matches any.
        m.header.scope = RouteScope::NoWhere;
        self.ack("delete route", route, RouteNetlinkMessage::DelRoute(m), 0)
            .await
    }

    /// The unicast routes of the main table (both families), optionally only those
    /// with protocol `protocol`.
    pub async fn routes(&self, protocol: Option<u8>) -> Result<Vec<Route>, NetlinkError> {
        let mut routes = self.all_routes(protocol).await?;
        routes.retain(|r| r.kind == RouteKind::Unicast);
        Ok(routes)
    }

    /// The unicast and blackhole routes of the main table (both families) with
    /// protocol `protocol`: what a fabric reconciles against.
    pub async fn routes_with_blackholes(&self, protocol: u8) -> Result<Vec<Route>, NetlinkError> {
        self.all_routes(Some(protocol)).await
    }

    async fn all_routes(&self, protocol: Option<u8>) -> Result<Vec<Route>, NetlinkError> {
        Ok(self
            .route_dump()
            .await?
            .into_iter()
            .filter_map(parse_route)
            .filter(|route| protocol.is_none_or(|p| p == route.protocol))
            .collect())
    }

    /// Every route the kernel lists, IPv4 then IPv6 (parsers pick the main table's).
    pub(super) async fn route_dump(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let messages = self
                .collect(
                    "list routes",
                    format!("{family:?} table main"),
                    RouteNetlinkMessage::GetRoute(query),
                    true,
                )
                .await?;
            out.extend(messages.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Every unicast and blackhole route of the main table, of any protocol (what
    /// `netctl routes` compares the fabric's with).
    pub async fn main_routes(&self) -> Result<Vec<Route>, NetlinkError> {
        self.all_routes(None).await
    }

    /// The routes strait installed in this namespace ([`RTPROT_STRAIT`]).
    pub async fn strait_routes(&self) -> Result<Vec<Route>, NetlinkError> {
        self.routes(Some(RTPROT_STRAIT)).await
    }
}

/// A main-table unicast or blackhole route, or `None` for everything else (local,
/// broadcast, multicast, cached or other-table entries).
fn parse_route(m: RouteMessage) -> Option<Route> {
    let mut table = u32::from(m.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    for attribute in m.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::Via(v) => gateway = ip_of_via(v),
            RouteAttribute::Oif(i) => oif = Some(i),
            RouteAttribute::Priority(p) => metric = Some(p),
            _ => {}
        }
    }
    let kind = match m.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        _ => return None,
    };
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let destination = destination_of(&m.header, destination)?;
    Some(Route {
        kind,
        destination,
        gateway,
        oif,
        protocol: u8::from(m.header.protocol),
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        metric,
    })
}

/// The destination of a dumped route: its `RTA_DST` address with the header's prefix
/// length, or the family's default route when the attribute is absent.
pub(super) fn destination_of(header: &RouteHeader, destination: Option<IpAddr>) -> Option<IpNet> {
    match (destination, header.address_family) {
        (Some(ip), _) => IpNet::new(ip, header.destination_prefix_length).ok(),
        (None, AddressFamily::Inet) => Some(IpNet::V4(Default::default())),
        (None, AddressFamily::Inet6) => Some(IpNet::V6(Default::default())),
        (None, _) => None,
    }
}

/// The gateway of an `RTA_VIA` (an IP one; MPLS and other families are not ours).
pub(super) fn ip_of_via(v: RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteVia::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

pub(super) fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_route_message_is_link_scoped_and_tagged() {
        let m = Route::host("10.1.2.3".parse().expect("ip"), 7).to_message();
        assert_eq!(m.header.destination_prefix_length, 32);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(u8::from(m.header.protocol), RTPROT_STRAIT);
        let m = Route::host("fd00::3".parse().expect("ip"), 7).to_message();
        assert_eq!(m.header.destination_prefix_length, 128);
        assert_eq!(m.header.scope, RouteScope::Universe);
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let m = Route::default_via("169.254.1.1".parse().expect("ip"), 2).to_message();
        assert_eq!(m.header.destination_prefix_length, 0);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
    }

    #[test]
    fn blackhole_and_onlink_routes_round_trip() {
        let block: IpNet = "10.244.1.0/26".parse().expect("net");
        let m = Route::blackhole(block).to_message();
        assert_eq!(m.header.kind, RouteType::BlackHole);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(parse_route(m), Some(Route::blackhole(block)));
        let via = Route::via(block, "10.244.1.1".parse().expect("ip"), 9, true);
        assert_eq!(parse_route(via.to_message()), Some(via.clone()));
        assert_eq!(
            via.to_string(),
            "10.244.1.0/26 via 10.244.1.1 dev index 9 onlink proto 83"
        );
    }

    #[test]
    fn a_gateway_of_the_other_family_goes_in_rta_via_and_parses_back() {
        let block: IpNet = "10.244.1.0/26".parse().expect("net");
        let via = Route::via(block, "fd00::2".parse().expect("ip"), 3, false);
        let m = via.to_message();
        assert!(
            m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Via(RouteVia::Inet6(_))))
        );
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(_))),
            "no IPv6 RTA_GATEWAY in an IPv4 route"
        );
        assert_eq!(parse_route(m), Some(via.clone()));
        assert_eq!(
            via.to_string(),
            "10.244.1.0/26 via inet6 fd00::2 dev index 3 proto 83"
        );
    }

    #[test]
    fn parses_back_what_it_builds() {
        let route = Route::default_via("169.254.1.1".parse().expect("ip"), 4);
        assert_eq!(parse_route(route.to_message()), Some(route));
        let route = Route::default_via("fe80::1".parse().expect("ip"), 4);
        assert_eq!(parse_route(route.to_message()), Some(route));
    }
}
