//! Neighbour (ARP / NDP) entries.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError, format_mac};

/// A neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

fn message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = index;
    m.header.kind = RouteType::Unspec;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    m
}

impl Netlink {
    /// `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent`. A replace, not an
    /// add: an entry the kernel learnt earlier (e.g. STALE) is overwritten instead of
    /// failing with EEXIST, and repeating the call is harmless.
    pub async fn set_permanent_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let mut m = message(index, ip);
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.ack(
            "set neighbour",
            format!("{ip} lladdr {} dev index {index}", format_mac(&mac)),
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// `ip neigh del <ip> dev <index>`.
    pub async fn del_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), NetlinkError> {
        self.ack(
            "delete neighbour",
            format!("{ip} dev index {index}"),
            RouteNetlinkMessage::DelNeighbour(message(index, ip)),
            0,
        )
        .await
    }

    /// The IPv4 and IPv6 neighbour entries on link `index`.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = NeighbourMessage::default();
            query.header.family = family;
            let messages = self
                .collect(
                    "list neighbours",
                    format!("{family:?} dev index {index}"),
                    RouteNetlinkMessage::GetNeighbour(query),
                    true,
                )
                .await?;
            for m in messages {
                let RouteNetlinkMessage::NewNeighbour(n) = m else {
                    continue;
                };
                if n.header.ifindex != index {
                    continue;
                }
                let mut ip = None;
                let mut mac = None;
                for attribute in n.attributes {
                    match attribute {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                            ip = Some(IpAddr::V4(v4));
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                            ip = Some(IpAddr::V6(v6));
                        }
                        NeighbourAttribute::LinkLayerAddress(l) => {
                            mac = <[u8; 6]>::try_from(l.as_slice()).ok();
                        }
                        _ => {}
                    }
                }
                if let Some(ip) = ip {
                    out.push(Neighbour {
                        index,
                        ip,
                        mac,
                        permanent: n.header.state == NeighbourState::Permanent,
                    });
                }
            }
        }
        Ok(out)
    }
}
