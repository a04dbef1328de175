//! What host-gw needs from this host's links: its connected subnets. A peer is routable
//! directly only if its underlay address lies in one of them (one shared L2 segment).

use std::collections::HashMap;

use ipnet::IpNet;

use super::desired::Connected;
use crate::hostnet::HostNet;
use crate::netlink::{LINK_PREFIX, NetlinkError};

/// The connected subnets of this host's links, except loopback, strait's own links
/// (container veths and `strait.vxlan`), host-length prefixes and IPv6 link-local
/// subnets: none of them can hold a peer's underlay address.
pub(crate) async fn connected_subnets(
    nl: &impl HostNet,
    names: &HashMap<u32, String>,
) -> Result<Vec<Connected>, NetlinkError> {
    let link_local_v6: IpNet = "fe80::/10".parse().expect("constant prefix");
    let mut out = Vec::new();
    for a in nl.all_addresses().await? {
        let Some(ifname) = names.get(&a.index) else {
            continue;
        };
        if ifname == "lo" || ifname.starts_with(LINK_PREFIX) {
            continue;
        }
        let Ok(net) = IpNet::new(a.ip, a.prefix_len) else {
            continue;
        };
        if net.prefix_len() == net.max_prefix_len() || link_local_v6.contains(&a.ip) {
            continue;
        }
        out.push(Connected {
            net: net.trunc(),
            index: a.index,
            ifname: ifname.clone(),
        });
    }
    Ok(out)
}
