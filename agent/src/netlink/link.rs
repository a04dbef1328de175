//! Links: veth creation (peer straight into its namespace), state, MTU, MAC, deletion,
//! lookup and listing, and per-link IPv4 settings.

use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};

use strait_api::MacAddr;

use super::{LINK_PREFIX, Netlink, NetlinkError};
use crate::netns::NetNs;

/// What the kernel reports about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `None` for links without an Ethernet address (e.g. `lo` reports all zeros, which
    /// is kept; tunnels without one report nothing).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `IFLA_LINK`: for a veth, the peer's ifindex *in the peer's namespace*.
    pub link: Option<u32>,
    /// `IFLA_INFO_KIND`, e.g. "veth", "vxlan".
    pub kind: Option<String>,
    /// `IFLA_IFALIAS` (`ip link set NAME alias TEXT`): strait marks the host ends of
    /// its endpoints with their owner there (`crate::endpoint::owner_mark`).
    pub alias: Option<String>,
}

/// One end of a veth pair to create.
#[derive(Debug, Clone)]
pub struct VethEnd {
    pub name: String,
    /// `None` lets the kernel pick a random address.
    pub mac: Option<[u8; 6]>,
    /// `None` keeps the kernel's default (1500).
    pub mtu: Option<u32>,
    /// Bring the end up as part of the creation (saves a request). Only for the end
    /// created first (`local`): the kernel opens the peer before the two ends are
    /// linked, and a veth cannot open without its peer (ENOTCONN; seen on 6.18).
    pub up: bool,
}

impl VethEnd {
    fn attributes_into(&self, message: &mut LinkMessage) {
        message
            .attributes
            .push(LinkAttribute::IfName(self.name.clone()));
        if let Some(mac) = self.mac {
            message
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = self.mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if self.up {
            message.header.flags |= LinkFlags::Up;
            message.header.change_mask |= LinkFlags::Up;
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`: the text form of [`MacAddr`], for the bytes netlink speaks.
pub fn format_mac(mac: &[u8; 6]) -> String {
    MacAddr::new(*mac).to_string()
}

impl Netlink {
    /// Creates a veth pair in one request: `local` in this connection's namespace and
    /// `peer` directly in `peer_netns` (`IFLA_NET_NS_FD` on the peer), both already
    /// named, addressed, sized and (if asked) up. Nothing is ever created under a
    /// temporary name or moved afterwards, so no half-configured link is visible.
    ///
    /// Fails with EEXIST if either name is taken in its namespace.
    pub async fn create_veth(
        &self,
        local: &VethEnd,
        peer: &VethEnd,
        peer_netns: Option<&NetNs>,
    ) -> Result<(), NetlinkError> {
        let mut peer_message = LinkMessage::default();
        peer.attributes_into(&mut peer_message);
        let object = format!("{} (peer {})", local.name, peer.name);
        // The request carries the namespace as a bare fd number, read only when the
        // connection task sends it. Were the fd closed before that (the caller
        // cancelled, dropping its `NetNs`), the kernel would see EBADF — or, if the
        // number had been reused meanwhile, another namespace. So the request runs in
        // its own task that keeps the namespace open until the kernel has answered.
        let keep_open = peer_netns.cloned();
        if let Some(ns) = &keep_open {
            peer_message
                .attributes
                .push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        }
        let mut message = LinkMessage::default();
        local.attributes_into(&mut message);
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ]));
        let nl = self.clone();
        let task_object = object.clone();
        let request = tokio::spawn(async move {
            let result = nl
                .ack(
                    "create veth",
                    task_object,
                    RouteNetlinkMessage::NewLink(message),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
                .await;
            drop(keep_open);
            result
        });
        request.await.map_err(|e| NetlinkError::Protocol {
            op: "create veth",
            object,
            detail: format!("request task failed: {e}"),
        })?
    }

    /// The link named `name`, or `None` if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        self.get_link("get link", name, message).await
    }

    /// The link with ifindex `index`, or `None` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.get_link("get link", format!("index {index}"), message)
            .await
    }

    async fn get_link(
        &self,
        op: &'static str,
        object: impl std::fmt::Display + Send + Sync,
        message: LinkMessage,
    ) -> Result<Option<Link>, NetlinkError> {
        let object = object.to_string();
        let answer = self
            .collect(op, &object, RouteNetlinkMessage::GetLink(message), false)
            .await;
        match answer {
            Ok(messages) => messages
                .into_iter()
                .find_map(|m| match m {
                    RouteNetlinkMessage::NewLink(l) => Some(parse_link(op, &object, l)),
                    _ => None,
                })
                .transpose(),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All links whose name starts with `prefix`.
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<Link>, NetlinkError> {
        let messages = self
            .collect(
                "list links",
                format!("{prefix}*"),
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                true,
            )
            .await?;
        let mut links = Vec::new();
        for m in messages {
            if let RouteNetlinkMessage::NewLink(l) = m {
                let link = parse_link("list links", prefix, l)?;
                if link.name.starts_with(prefix) {
                    links.push(link);
                }
            }
        }
        Ok(links)
    }

    /// All links strait created ([`LINK_PREFIX`]).
    pub async fn strait_links(&self) -> Result<Vec<Link>, NetlinkError> {
        self.links_with_prefix(LINK_PREFIX).await
    }

    /// `ip link set dev <index> up`.
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags |= LinkFlags::Up;
        message.header.change_mask |= LinkFlags::Up;
        self.set_link("set link up", index, message).await
    }

    /// `ip link set dev <index> down`.
    pub async fn set_down(&self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.change_mask |= LinkFlags::Up;
        self.set_link("set link down", index, message).await
    }

    /// `ip link set dev <index> mtu <mtu>`.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link("set mtu", index, message).await
    }

    /// `ip link set dev <index> address <mac>`.
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
        self.set_link("set mac", index, message).await
    }

    /// Sets `net.ipv4.conf.<link>.proxy_arp = 1` over netlink (`IFLA_INET_CONF`), so it
    /// needs no thread in the namespace: the socket already is there. (Only "on": the
    /// request encodes non-zero settings only, and "off" is a new link's default.)
    pub async fn enable_proxy_arp(&self, index: u32) -> Result<(), NetlinkError> {
        let mut conf = InetDevConf::default();
        conf.proxy_arp = 1;
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        self.set_link("enable proxy_arp", index, message).await
    }

    /// Sets the link's alias (`IFLA_IFALIAS`, at most 255 bytes; `ip link set dev
    /// <index> alias <alias>`). The kernel takes no alias in the creation request, so
    /// this is a request of its own.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link("set link alias", index, message).await
    }

    async fn set_link(
        &self,
        op: &'static str,
        index: u32,
        message: LinkMessage,
    ) -> Result<(), NetlinkError> {
        self.ack(
            op,
            format!("index {index}"),
            RouteNetlinkMessage::SetLink(message),
            0,
        )
        .await
    }

    /// Deletes the link with ifindex `index` (for a veth, both ends go).
    pub async fn del_link(&self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.ack(
            "delete link",
            format!("index {index}"),
            RouteNetlinkMessage::DelLink(message),
            0,
        )
        .await
    }

    /// Moves the link named `name` into link group `group` (`ip link set NAME group G`).
    pub async fn set_group_by_name(&self, name: &str, group: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::Group(group));
        self.ack(
            "set link group",
            name,
            RouteNetlinkMessage::SetLink(message),
            0,
        )
        .await
    }

    /// Deletes every link in `group` with one request (`ip link del group G`). The
    /// kernel unregisters them as one batch and waits for one RCU grace period instead
    /// of one per link, which is most of what deleting a veth costs. Group 0 is every
    /// link's default and is refused here.
    pub async fn del_links_in_group(&self, group: u32) -> Result<(), NetlinkError> {
        if group == 0 {
            return Err(NetlinkError::Protocol {
                op: "delete link group",
                object: "group 0".into(),
                detail: "refused: group 0 is the default group of every link".into(),
            });
        }
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::Group(group));
        self.ack(
            "delete link group",
            format!("group {group}"),
            RouteNetlinkMessage::DelLink(message),
            0,
        )
        .await
    }

    /// Deletes the link named `name` in one request (no lookup first).
    pub async fn del_link_by_name(&self, name: &str) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        self.ack(
            "delete link",
            name,
            RouteNetlinkMessage::DelLink(message),
            0,
        )
        .await
    }
}

/// The MTU of the link that carries the IPv4 default route (else the IPv6 one) in
/// `nl`'s namespace, or `None` without a default route: the natural MTU for container
/// interfaces when none is configured (less any encapsulation overhead).
pub async fn default_route_mtu(nl: &Netlink) -> Result<Option<u32>, NetlinkError> {
    let routes = nl.routes(None).await?;
    let oif = [true, false].into_iter().find_map(|v4| {
        routes
            .iter()
            .find(|r| r.destination.prefix_len() == 0 && r.destination.addr().is_ipv4() == v4)
            .and_then(|r| r.oif)
    });
    match oif {
        Some(index) => Ok(nl.link_by_index(index).await?.map(|l| l.mtu)),
        None => Ok(None),
    }
}

pub(super) fn parse_link(
    op: &'static str,
    object: &str,
    message: LinkMessage,
) -> Result<Link, NetlinkError> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = 0;
    let mut link = None;
    let mut kind = None;
    let mut alias = None;
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = m,
            LinkAttribute::Link(l) => link = Some(l),
            LinkAttribute::IfAlias(a) => alias = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.into_iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    let name = name.ok_or_else(|| NetlinkError::Incomplete {
        op,
        object: object.to_string(),
        what: "IFLA_IFNAME",
    })?;
    Ok(Link {
        index: message.header.index,
        name,
        mac,
        mtu,
        up: message.header.flags.contains(LinkFlags::Up),
        link,
        kind,
        alias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_mac() {
        assert_eq!(
            format_mac(&[0xee, 0x01, 0x02, 0xab, 0xcd, 0xef]),
            "ee:01:02:ab:cd:ef"
        );
    }
}
