//! Finding this node's underlay: the interface of the default route and its first
//! global addresses, unless the operator named them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{FabricError, Underlay};
use crate::netlink::Netlink;

impl Underlay {
    /// Resolves the underlay as docs/cluster.md says: `iface`, else the interface of the
    /// IPv4 default route (else the IPv6 one); `addrs`, else the first global IPv4 and
    /// IPv6 address of that interface.
    pub async fn discover(
        nl: &Netlink,
        iface: Option<&str>,
        addrs: &[IpAddr],
    ) -> Result<Underlay, FabricError> {
        let link = match iface {
            Some(name) => nl
                .link_by_name(name)
                .await?
                .ok_or_else(|| FabricError::NoUnderlayIface(name.to_string()))?,
            None => {
                let routes = nl.routes(None).await?;
                let oif = [true, false]
                    .into_iter()
                    .find_map(|v4| {
                        routes
                            .iter()
                            .find(|r| {
                                r.destination.prefix_len() == 0
                                    && r.destination.addr().is_ipv4() == v4
                            })
                            .and_then(|r| r.oif)
                    })
                    .ok_or(FabricError::NoDefaultRoute)?;
                nl.link_by_index(oif)
                    .await?
                    .ok_or_else(|| FabricError::NoUnderlayIface(format!("index {oif}")))?
            }
        };
        let mut underlay = Underlay {
            iface: link.name.clone(),
            v4: None,
            v6: None,
        };
        let found;
        let candidates: &[IpAddr] = if addrs.is_empty() {
            found = nl
                .addresses(link.index)
                .await?
                .into_iter()
                .map(|a| a.ip)
                .filter(is_global)
                .collect::<Vec<_>>();
            &found
        } else {
            addrs
        };
        for ip in candidates {
            match ip {
                IpAddr::V4(v4) if underlay.v4.is_none() => underlay.v4 = Some(*v4),
                IpAddr::V6(v6) if underlay.v6.is_none() => underlay.v6 = Some(*v6),
                _ => {}
            }
        }
        if underlay.v4.is_none() && underlay.v6.is_none() {
            return Err(FabricError::NoUnderlayAddress(link.name));
        }
        Ok(underlay)
    }
}

/// Not loopback, link-local, multicast or unspecified: an address a peer can reach.
fn is_global(ip: &IpAddr) -> bool {
    let link_local_v6: IpNet = "fe80::/10".parse().expect("constant prefix");
    !(ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unspecified()
        || matches!(ip, IpAddr::V4(v4) if v4.is_link_local())
        || link_local_v6.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_addresses_only() {
        for (ip, global) in [
            ("10.0.0.1", true),
            ("169.254.1.1", false),
            ("127.0.0.1", false),
            ("fd00::1", true),
            ("fe80::1", false),
            ("::1", false),
        ] {
            assert_eq!(is_global(&ip.parse().expect("ip")), global, "{ip}");
        }
    }
}
