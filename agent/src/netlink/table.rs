//! Routes in one of strait's own routing tables (the IPsec table, which a [`super::Rule`]
//! puts before the main table): a prefix straight out of a link, or a `prohibit` route
//! that refuses what no link route takes. Tagged [`RTPROT_STRAIT`] like every route
//! strait makes.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::route::{destination_of, gateway_attribute, ip_of, ip_of_via, main_table_message};
use super::{Netlink, NetlinkError, RTPROT_STRAIT};

/// What a table route does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableRouteKind {
    /// Out of link `oif` (`ip route add P dev L table T`).
    Link(u32),
    /// Refuse it with an ICMP "administratively prohibited" (`ip route add prohibit P`):
    /// the sender learns at once, and nothing leaves the host.
    Prohibit,
    /// Through next hop `G` on a directly connected network (`ip route add P via G`).
    Via(IpAddr),
}

/// A route of table `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRoute {
    pub table: u32,
    pub destination: IpNet,
    pub kind: TableRouteKind,
    pub metric: u32,
}

impl TableRoute {
    fn to_message(self) -> RouteMessage {
        let kind = match self.kind {
            TableRouteKind::Link(_) | TableRouteKind::Via(_) => RouteType::Unicast,
            TableRouteKind::Prohibit => RouteType::Prohibit,
        };
        let mut m = main_table_message(self.destination, RTPROT_STRAIT, kind);
        // Tables above 255 only fit the attribute; the header's byte says "see it".
        m.header.table = 0;
        m.attributes.push(RouteAttribute::Table(self.table));
        m.attributes.push(RouteAttribute::Priority(self.metric));
        match self.kind {
            TableRouteKind::Link(oif) => {
                m.header.scope = if self.destination.addr().is_ipv4() {
                    RouteScope::Link
                } else {
                    RouteScope::Universe
                };
                m.attributes.push(RouteAttribute::Oif(oif));
            }
            TableRouteKind::Prohibit => m.header.scope = RouteScope::Universe,
            TableRouteKind::Via(gateway) => {
                m.header.scope = RouteScope::Universe;
                m.attributes
                    .push(gateway_attribute(&self.destination, gateway));
            }
        }
        m
    }
}

impl std::fmt::Display for TableRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            TableRouteKind::Link(oif) => write!(f, "{} dev index {oif}", self.destination)?,
            TableRouteKind::Prohibit => write!(f, "prohibit {}", self.destination)?,
            TableRouteKind::Via(g) => write!(f, "{} via {g}", self.destination)?,
        }
        write!(f, " metric {} table {}", self.metric, self.table)
    }
}

impl Netlink {
    /// Adds `route` or replaces the one with the same destination and metric.
    pub async fn replace_table_route(&self, route: &TableRoute) -> Result<(), NetlinkError> {
        self.ack(
            "replace route",
            route,
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Deletes `route`; ESRCH when there is none.
    pub async fn del_table_route(&self, route: &TableRoute) -> Result<(), NetlinkError> {
        let mut m = route.to_message();
        m.header.scope = RouteScope::NoWhere;
        self.ack("delete route", route, RouteNetlinkMessage::DelRoute(m), 0)
            .await
    }

    /// strait's routes in `table`, both families.
    pub async fn table_routes(&self, table: u32) -> Result<Vec<TableRoute>, NetlinkError> {
        Ok(self
            .route_dump()
            .await?
            .into_iter()
            .filter_map(|m| parse_table_route(m, table))
            .collect())
    }
}

fn parse_table_route(m: RouteMessage, want: u32) -> Option<TableRoute> {
    if u8::from(m.header.protocol) != RTPROT_STRAIT {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let (mut destination, mut oif, mut metric) = (None::<IpAddr>, None, 0);
    let mut gateway = None;
    for a in m.attributes {
        match a {
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(i),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Via(v) => gateway = ip_of_via(v),
            RouteAttribute::Priority(p) => metric = p,
            _ => {}
        }
    }
    if table != want
        || !matches!(
            m.header.address_family,
            AddressFamily::Inet | AddressFamily::Inet6
        )
    {
        return None;
    }
    // A route via a next hop is dumped with the link the kernel chose for it too.
    let kind = match (m.header.kind, gateway, oif) {
        (RouteType::Unicast, Some(g), _) => TableRouteKind::Via(g),
        (RouteType::Unicast, None, Some(oif)) => TableRouteKind::Link(oif),
        (RouteType::Prohibit, _, _) => TableRouteKind::Prohibit,
        _ => return None,
    };
    Some(TableRoute {
        table,
        destination: destination_of(&m.header, destination)?,
        kind,
        metric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_routes_round_trip_through_their_messages() {
        for route in [
            TableRoute {
                table: 2083,
                destination: "10.0.1.2/32".parse().unwrap(),
                kind: TableRouteKind::Link(9),
                metric: 0,
            },
            TableRoute {
                table: 2083,
                destination: "fd00:244::/64".parse().unwrap(),
                kind: TableRouteKind::Prohibit,
                metric: 1000,
            },
            TableRoute {
                table: 2083,
                destination: "192.168.50.0/24".parse().unwrap(),
                kind: TableRouteKind::Via("10.0.0.1".parse().unwrap()),
                metric: 1,
            },
        ] {
            assert_eq!(parse_table_route(route.to_message(), 2083), Some(route));
            assert_eq!(parse_table_route(route.to_message(), 254), None);
        }
    }
}
