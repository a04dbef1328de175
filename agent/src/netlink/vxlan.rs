//! VXLAN devices: creation with their tunnel parameters, and lookup of those parameters
//! (`ip -d link show type vxlan`) so a caller can tell whether an existing device is
//! the one it wants.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVxlan, LinkAttribute,
    LinkInfo, LinkMessage,
};

use super::{Link, Netlink, NetlinkError};

/// A VXLAN device to create: `ip link add <name> address <mac> mtu <mtu> type vxlan id
/// <vni> dstport <port> local <local> nolearning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// UDP destination port (IANA: 4789).
    pub port: u16,
    /// Source address of the encapsulated packets (this host's underlay address); its
    /// family is the family of every remote in the device's FDB.
    pub local: IpAddr,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// What the kernel reports about a VXLAN device: the link and its tunnel parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub link: Link,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    /// Source-MAC learning (`learning`); strait's devices are `nolearning`: the FDB is
    /// programmed from the store, never learnt from traffic.
    pub learning: bool,
}

impl Netlink {
    /// Creates the VXLAN device `spec`, down, without address learning. EEXIST if the
    /// name is taken.
    pub async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        let mut data = vec![
            InfoVxlan::Id(spec.vni),
            InfoVxlan::Port(spec.port),
            InfoVxlan::Learning(false),
        ];
        data.push(match spec.local {
            IpAddr::V4(v4) => InfoVxlan::Local(v4),
            IpAddr::V6(v6) => InfoVxlan::Local6(v6),
        });
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(spec.name.clone()));
        message
            .attributes
            .push(LinkAttribute::Address(spec.mac.to_vec()));
        message.attributes.push(LinkAttribute::Mtu(spec.mtu));
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        self.ack(
            "create vxlan",
            format!(
                "{} vni {} dstport {} local {}",
                spec.name, spec.vni, spec.port, spec.local
            ),
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    }

    /// `ip link set <index> addrgenmode none`: the link gets no IPv6 link-local address
    /// when it comes up (only those added explicitly). For an overlay whose peers are
    /// all programmed, router solicitations and the like would be flooded into nothing.
    /// Set it before the first up: an address generated earlier stays. (The kernel
    /// refuses the setting inside the creating request: EAFNOSUPPORT.)
    pub async fn disable_ipv6_addrgen(&self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        self.ack(
            "set addrgenmode none",
            format!("index {index}"),
            RouteNetlinkMessage::SetLink(message),
            0,
        )
        .await
    }

    /// The link named `name` with its VXLAN parameters, or `None` if there is no link
    /// of that name. A link of that name that is not a VXLAN device comes back with
    /// `vni: None` (and its `link.kind`), so the caller can tell it apart.
    pub async fn vxlan_by_name(&self, name: &str) -> Result<Option<Vxlan>, NetlinkError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        let answer = self
            .collect(
                "get link",
                name,
                RouteNetlinkMessage::GetLink(message),
                false,
            )
            .await;
        let messages = match answer {
            Ok(messages) => messages,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(message) = messages.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        }) else {
            return Ok(None);
        };
        let (mut vni, mut port, mut local, mut learning) = (None, None, None, false);
        for attribute in &message.attributes {
            let LinkAttribute::LinkInfo(infos) = attribute else {
                continue;
            };
            for info in infos {
                let LinkInfo::Data(InfoData::Vxlan(data)) = info else {
                    continue;
                };
                for d in data {
                    match d {
                        InfoVxlan::Id(id) => vni = Some(*id),
                        InfoVxlan::Port(p) => port = Some(*p),
                        InfoVxlan::Local(v4) => local = Some(IpAddr::V4(*v4)),
                        InfoVxlan::Local6(v6) => local = Some(IpAddr::V6(*v6)),
                        InfoVxlan::Learning(l) => learning = *l,
                        _ => {}
                    }
                }
            }
        }
        let link = super::link::parse_link("get link", name, message)?;
        Ok(Some(Vxlan {
            link,
            vni,
            port,
            local,
            learning,
        }))
    }
}
