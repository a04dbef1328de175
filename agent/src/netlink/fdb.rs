//! Forwarding database entries of a VXLAN device (`bridge fdb … dev strait.vxlan self`):
//! which underlay address a frame for an inner MAC is sent to.
//!
//! rtnetlink has no typed builder for these, so the requests are built here by hand: an
//! `ndmsg` of family `AF_BRIDGE` on the device, flag `NTF_SELF` (the entry belongs to
//! the VXLAN device itself, not to a bridge it is a port of), state `NUD_PERMANENT`,
//! `NDA_LLADDR` = the inner MAC and `NDA_DST` = the remote VTEP's underlay address.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError, format_mac};

/// One FDB entry of a VXLAN device: frames for `mac` go to the VTEP at `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: IpAddr,
}

impl std::fmt::Display for FdbEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dst {}", format_mac(&self.mac), self.dst)
    }
}

/// How [`Netlink::set_fdb`] writes an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbWrite {
    /// `bridge fdb append`: add `dst` to the MAC's list of remotes (how a VXLAN device
    /// floods one MAC, e.g. all-zeros, to several VTEPs).
    Append,
    /// `bridge fdb replace`: the MAC's (first) remote becomes `dst`; created if absent.
    /// For a unicast VTEP MAC that has exactly one remote, this is the idempotent write.
    Replace,
}

fn message(index: u32, entry: &FdbEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(
            entry.dst,
        )));
    m
}

impl Netlink {
    /// Writes `entry` into the FDB of the VXLAN device `index`, permanently.
    pub async fn set_fdb(
        &self,
        index: u32,
        entry: &FdbEntry,
        how: FdbWrite,
    ) -> Result<(), NetlinkError> {
        let (op, flags) = match how {
            FdbWrite::Append => ("append fdb", NLM_F_CREATE | NLM_F_APPEND),
            FdbWrite::Replace => ("replace fdb", NLM_F_CREATE | NLM_F_REPLACE),
        };
        self.ack(
            op,
            format!("{entry} dev index {index}"),
            RouteNetlinkMessage::NewNeighbour(message(index, entry)),
            flags,
        )
        .await
    }

    /// Removes the remote `entry.dst` of `entry.mac` from the FDB of device `index`
    /// (`bridge fdb del <mac> dst <dst> dev <index> self`); the MAC's other remotes
    /// stay. ENOENT if there is no such remote.
    pub async fn del_fdb(&self, index: u32, entry: &FdbEntry) -> Result<(), NetlinkError> {
        self.ack(
            "delete fdb",
            format!("{entry} dev index {index}"),
            RouteNetlinkMessage::DelNeighbour(message(index, entry)),
            0,
        )
        .await
    }

    /// The FDB entries of device `index` that have a remote (`bridge fdb show dev
    /// <index>`, self entries only): one per (MAC, remote) pair.
    pub async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Bridge;
        let messages = self
            .collect(
                "list fdb",
                format!("dev index {index}"),
                RouteNetlinkMessage::GetNeighbour(query),
                true,
            )
            .await?;
        let mut out = Vec::new();
        for m in messages {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.ifindex != index || !n.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for attribute in n.attributes {
                match attribute {
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok();
                    }
                    // Family AF_BRIDGE: the library cannot know the remote's family and
                    // hands over the raw bytes; their length tells.
                    NeighbourAttribute::Destination(a) => dst = ip_of(a),
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push(FdbEntry { mac, dst });
            }
        }
        Ok(out)
    }
}

fn ip_of(a: NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_permanent_self_entry_of_family_bridge() {
        let entry = FdbEntry {
            mac: [0x0e, 1, 2, 3, 4, 5],
            dst: "10.0.0.2".parse().expect("ip"),
        };
        let m = message(7, &entry);
        assert_eq!(m.header.family, AddressFamily::Bridge);
        assert_eq!(m.header.flags, NeighbourFlags::Own);
        assert_eq!(m.header.state, NeighbourState::Permanent);
        assert_eq!(m.header.ifindex, 7);
        assert_eq!(entry.to_string(), "0e:01:02:03:04:05 dst 10.0.0.2");
    }

    #[test]
    fn reads_raw_remote_addresses() {
        assert_eq!(
            ip_of(NeighbourAddress::Other(vec![10, 0, 0, 2])),
            Some("10.0.0.2".parse().expect("ip"))
        );
        let v6: std::net::Ipv6Addr = "fd00::2".parse().expect("ip");
        assert_eq!(
            ip_of(NeighbourAddress::Other(v6.octets().to_vec())),
            Some(IpAddr::V6(v6))
        );
        assert_eq!(ip_of(NeighbourAddress::Other(vec![1, 2])), None);
    }
}
