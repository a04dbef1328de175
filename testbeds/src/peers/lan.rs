//! Several namespaces on one L2 segment: a bridge in a hub namespace, and per member a
//! veth whose `eth0` end sits in the member's namespace with an IPv4 /24 and an IPv6
//! /64 address (no DAD), or the IPv6 one only ([`Lan::ipv6_only`]). The root namespace
//! is not touched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netns::Netns;

/// Members are listed in the order given; member `i` has `10.<net>.0.<i+1>` and
/// `fd00:<net>::<i+1>`. Dropping it deletes every namespace (members before the hub).
pub struct Lan {
    pub members: Vec<Netns>,
    pub hub: Netns,
    pub prefix: String,
    net: u8,
}

impl Lan {
    /// `net` picks the subnets (10.<net>.0.0/24, fd00:<net>::/64); leftovers of dead
    /// test processes are reaped first.
    pub fn new(members: usize, net: u8) -> Self {
        Self::build(members, net, true)
    }

    /// A segment with IPv6 addresses only (an IPv6-only underlay): [`Lan::v4`] is then
    /// on no interface.
    pub fn ipv6_only(members: usize, net: u8) -> Self {
        Self::build(members, net, false)
    }

    fn build(members: usize, net: u8, with_v4: bool) -> Self {
        crate::netns::reap_leftovers();
        let prefix = crate::unique_prefix();
        let hub = Netns::new(format!("{prefix}h"));
        hub.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        hub.exec_ok(&["ip", "link", "set", "br0", "up"]);
        let mut lan = Self {
            members: vec![],
            hub,
            prefix,
            net,
        };
        for i in 0..members {
            let ns = Netns::new(format!("{}m{i}", lan.prefix));
            let port = format!("v{i}");
            lan.hub.exec_ok(&[
                "ip",
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ]);
            lan.hub
                .exec_ok(&["ip", "link", "set", &port, "master", "br0", "up"]);
            let (v4, v6) = (lan.v4(i), lan.v6(i));
            if with_v4 {
                ns.exec_ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            }
            ns.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
            lan.members.push(ns);
        }
        lan
    }

    pub fn v4(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, i as u8 + 1)
    }

    pub fn v6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, self.net as u16, 0, 0, 0, 0, 0, i as u16 + 1)
    }

    pub fn ip4(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.v4(i))
    }

    pub fn ns(&self, i: usize) -> &Netns {
        &self.members[i]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Members first (their veths go with them), then the hub.
        self.members.clear();
    }
}
