//! Interface addresses.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError};

/// An address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix_len: u8,
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn message(index: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&ip);
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    m
}

impl Netlink {
    /// `ip addr add <ip>/<prefix_len> dev <index>`; IPv6 addresses get `nodad` so they
    /// are usable at once instead of staying tentative for a second or more. (Duplicate
    /// detection has nothing to find on a point-to-point veth whose only other end is
    /// ours.) EEXIST if the address is already there.
    pub async fn add_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut m = message(index, ip, prefix_len);
        if ip.is_ipv6() {
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.ack(
            "add address",
            format!("{ip}/{prefix_len} dev index {index}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    }

    /// `ip addr del <ip>/<prefix_len> dev <index>`.
    pub async fn del_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        self.ack(
            "delete address",
            format!("{ip}/{prefix_len} dev index {index}"),
            RouteNetlinkMessage::DelAddress(message(index, ip, prefix_len)),
            0,
        )
        .await
    }

    /// The addresses on link `index` (both families).
    pub async fn addresses(&self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        self.dump_addresses(Some(index)).await
    }

    /// The addresses on every link (both families), in one dump.
    pub async fn all_addresses(&self) -> Result<Vec<Address>, NetlinkError> {
        self.dump_addresses(None).await
    }

    async fn dump_addresses(&self, index: Option<u32>) -> Result<Vec<Address>, NetlinkError> {
        let object = match index {
            Some(index) => format!("dev index {index}"),
            None => "all links".to_string(),
        };
        let messages = self
            .collect(
                "list addresses",
                object,
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                true,
            )
            .await?;
        let mut out = Vec::new();
        for m in messages {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if index.is_some_and(|i| a.header.index != i) {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
            // point-to-point links); IPv6 sends only IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for attribute in a.attributes {
                match attribute {
                    AddressAttribute::Local(ip) => local = Some(ip),
                    AddressAttribute::Address(ip) => address = Some(ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                out.push(Address {
                    index: a.header.index,
                    ip,
                    prefix_len: a.header.prefix_len,
                });
            }
        }
        Ok(out)
    }
}
