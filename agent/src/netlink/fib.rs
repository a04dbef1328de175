//! Routes learned by a routing protocol (the BGP fabric's FIB sync): a destination via
//! one gateway, or via several as one ECMP route (`RTA_MULTIPATH`, `ip route add …
//! nexthop via A nexthop via B`), in the main table. No output interface is given: the
//! kernel resolves each gateway through the routes it already has (a connected subnet),
//! so nothing is ever guessed `onlink`. An IPv4 route may have IPv6 gateways (RFC 8950:
//! `ip route add … via inet6 fd00::1`, `RTA_VIA`, also per next hop of a multipath
//! route); they are read back from there, so the repair loop sees what it installed.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteNextHop, RouteScope, RouteType,
};

use super::route::{
    destination_of, fmt_via, gateway_attribute, ip_of, ip_of_via, main_table_message,
};
use super::{BatchRequest, Netlink, NetlinkError};

/// A unicast route to `destination` via `gateways` (one: a plain route; several: one
/// multipath route), tagged with `protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRoute {
    pub destination: IpNet,
    /// Sorted, without duplicates, so two routes compare equal whatever order the
    /// kernel or the RIB listed them in.
    pub gateways: Vec<IpAddr>,
    pub protocol: u8,
}

impl GatewayRoute {
    /// The route with `gateways` put in canonical order.
    pub fn new(destination: IpNet, mut gateways: Vec<IpAddr>, protocol: u8) -> Self {
        gateways.sort_unstable();
        gateways.dedup();
        Self {
            destination,
            gateways,
            protocol,
        }
    }

    fn to_message(&self) -> RouteMessage {
        let mut m = main_table_message(self.destination, self.protocol, RouteType::Unicast);
        m.header.scope = RouteScope::Universe;
        match self.gateways.as_slice() {
            [one] => m
                .attributes
                .push(gateway_attribute(&self.destination, *one)),
            several => {
                let hops = several
                    .iter()
                    .map(|gateway| {
                        let mut hop = RouteNextHop::default();
                        hop.attributes
                            .push(gateway_attribute(&self.destination, *gateway));
                        hop
                    })
                    .collect();
                m.attributes.push(RouteAttribute::MultiPath(hops));
            }
        }
        m
    }
}

impl std::fmt::Display for GatewayRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.destination)?;
        match self.gateways.as_slice() {
            [one] => fmt_via(f, &self.destination, *one)?,
            several => {
                for gateway in several {
                    write!(f, " nexthop")?;
                    fmt_via(f, &self.destination, *gateway)?;
                }
            }
        }
        write!(f, " proto {}", self.protocol)
    }
}

impl GatewayRoute {
    /// [`Netlink::replace_gateway_route`] as one request of a [`Netlink::batch`].
    pub fn replace_request(&self) -> BatchRequest {
        BatchRequest {
            op: "replace route",
            object: self.to_string(),
            message: RouteNetlinkMessage::NewRoute(self.to_message()),
            flags: NLM_F_CREATE | NLM_F_REPLACE,
        }
    }

    /// [`Netlink::del_gateway_route`] as one request of a [`Netlink::batch`].
    pub fn delete_request(&self) -> BatchRequest {
        BatchRequest {
            op: "delete route",
            object: self.to_string(),
            message: RouteNetlinkMessage::DelRoute(self.delete_message()),
            flags: 0,
        }
    }

    fn delete_message(&self) -> RouteMessage {
        let mut m = self.to_message();
        // "No scope" matches any scope (IPv4 compares it otherwise).
        m.header.scope = RouteScope::NoWhere;
        m
    }
}

impl Netlink {
    /// Installs `route`, replacing whatever route the main table has to the same
    /// destination and metric (`ip route replace`): a restarted agent adopts the route
    /// in place, traffic never sees a gap.
    pub async fn replace_gateway_route(&self, route: &GatewayRoute) -> Result<(), NetlinkError> {
        if route.gateways.is_empty() {
            return Err(NetlinkError::Incomplete {
                op: "replace route",
                object: route.destination.to_string(),
                what: "a gateway",
            });
        }
        self.ack(
            "replace route",
            route,
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Deletes `route`: the unicast route to its destination with its protocol and
    /// exactly its gateways; ESRCH if there is none. The gateways are part of the
    /// match because IPv6 matches no route type on delete: by destination and protocol
    /// alone it would take a proto-83 blackhole at the same destination too.
    pub async fn del_gateway_route(&self, route: &GatewayRoute) -> Result<(), NetlinkError> {
        self.ack(
            "delete route",
            route,
            RouteNetlinkMessage::DelRoute(route.delete_message()),
            0,
        )
        .await
    }

    /// The main table's unicast routes with `protocol` that have a gateway or several
    /// (both families). Routes straight out of a link (container host routes) and
    /// blackholes are not listed.
    pub async fn gateway_routes(&self, protocol: u8) -> Result<Vec<GatewayRoute>, NetlinkError> {
        Ok(self
            .route_dump()
            .await?
            .into_iter()
            .filter_map(parse_gateway_route)
            .filter(|route| route.protocol == protocol)
            .collect())
    }
}

/// A main-table unicast route with a gateway or several; `None` for anything else.
fn parse_gateway_route(m: RouteMessage) -> Option<GatewayRoute> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut destination = None;
    let mut gateways = Vec::new();
    for attribute in m.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::Gateway(a) => gateways.extend(ip_of(a)),
            RouteAttribute::Via(v) => gateways.extend(ip_of_via(v)),
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    for a in hop.attributes {
                        match a {
                            RouteAttribute::Gateway(a) => gateways.extend(ip_of(a)),
                            RouteAttribute::Via(v) => gateways.extend(ip_of_via(v)),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || gateways.is_empty() {
        return None;
    }
    let destination = destination_of(&m.header, destination)?;
    Some(GatewayRoute::new(
        destination,
        gateways,
        u8::from(m.header.protocol),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::RTPROT_STRAIT;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn one_gateway_is_a_plain_route_several_are_multipath() {
        let net: IpNet = "10.244.2.0/26".parse().expect("net");
        let one = GatewayRoute::new(net, vec![ip("10.0.0.2")], RTPROT_STRAIT);
        let m = one.to_message();
        assert!(
            m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(_)))
        );
        assert_eq!(parse_gateway_route(m), Some(one));

        let two = GatewayRoute::new(net, vec![ip("10.0.0.3"), ip("10.0.0.2")], RTPROT_STRAIT);
        assert_eq!(two.gateways, [ip("10.0.0.2"), ip("10.0.0.3")], "sorted");
        let m = two.to_message();
        assert!(
            m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::MultiPath(h) if h.len() == 2))
        );
        assert_eq!(parse_gateway_route(m), Some(two.clone()));
        assert_eq!(
            two.to_string(),
            "10.244.2.0/26 nexthop via 10.0.0.2 nexthop via 10.0.0.3 proto 83"
        );
    }

    #[test]
    fn ipv4_routes_via_ipv6_gateways_use_rta_via_and_parse_back() {
        use netlink_packet_route::route::RouteVia;
        let net: IpNet = "10.244.2.0/26".parse().expect("net");
        let one = GatewayRoute::new(net, vec![ip("fd00::2")], RTPROT_STRAIT);
        let m = one.to_message();
        assert!(
            m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Via(RouteVia::Inet6(_))))
        );
        assert_eq!(parse_gateway_route(m), Some(one.clone()));
        assert_eq!(one.to_string(), "10.244.2.0/26 via inet6 fd00::2 proto 83");
        // ECMP over an IPv4 and an IPv6 gateway: each hop in its own attribute.
        let two = GatewayRoute::new(net, vec![ip("fd00::3"), ip("10.0.0.2")], RTPROT_STRAIT);
        let m = two.to_message();
        let Some(RouteAttribute::MultiPath(hops)) = m
            .attributes
            .iter()
            .find(|a| matches!(a, RouteAttribute::MultiPath(_)))
        else {
            panic!("multipath: {m:?}");
        };
        assert!(matches!(
            hops[0].attributes[..],
            [RouteAttribute::Gateway(_)]
        ));
        assert!(matches!(
            hops[1].attributes[..],
            [RouteAttribute::Via(RouteVia::Inet6(_))]
        ));
        assert_eq!(parse_gateway_route(m), Some(two.clone()));
        assert_eq!(
            two.to_string(),
            "10.244.2.0/26 nexthop via 10.0.0.2 nexthop via inet6 fd00::3 proto 83"
        );
    }

    #[test]
    fn routes_without_gateway_are_not_listed() {
        let host = super::super::Route::host(ip("10.244.1.2"), 5);
        assert_eq!(parse_gateway_route(host.to_message()), None);
        let blackhole = super::super::Route::blackhole("10.244.1.0/26".parse().expect("net"));
        assert_eq!(parse_gateway_route(blackhole.to_message()), None);
    }
}
