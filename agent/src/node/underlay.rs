//! The underlay: the interface and addresses this node's tunnel (or direct) traffic to
//! other hosts leaves from. Explicit addresses (`--underlay-addr`) win; otherwise the
//! first global IPv4 and IPv6 address of `--underlay-iface`, or of the interface that
//! carries the default route (IPv4's, else IPv6's), as Calico's `first-found` and
//! flannel's `--iface` do. Read-only: nothing here changes the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink::{Address, Netlink, NetlinkError};

/// What was found (or given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Underlay {
    /// The interface the addresses were read from; `None` when they were given and no
    /// interface was named.
    pub iface: Option<String>,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Underlay {
    /// Whether there is any address to publish.
    pub fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnderlayError {
    #[error("no default route to find the underlay interface by; give --underlay-iface")]
    NoDefaultRoute,
    #[error("underlay interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("underlay interface {0} has no global IPv4 or IPv6 address; give --underlay-addr")]
    NoAddress(String),
    #[error("reading the underlay: {0}")]
    Netlink(#[from] NetlinkError),
}

/// Finds the underlay in `nl`'s namespace (see the module docs).
pub async fn detect(
    nl: &Netlink,
    iface: Option<&str>,
    explicit: &[IpAddr],
) -> Result<Underlay, UnderlayError> {
    if !explicit.is_empty() {
        let (v4, v6) = first_per_family(explicit.iter().copied());
        return Ok(Underlay {
            iface: iface.map(str::to_string),
            v4,
            v6,
        });
    }
    let link = match iface {
        Some(name) => nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| UnderlayError::NoSuchInterface(name.to_string()))?,
        None => {
            let index = default_route_oif(nl)
                .await?
                .ok_or(UnderlayError::NoDefaultRoute)?;
            nl.link_by_index(index)
                .await?
                .ok_or_else(|| UnderlayError::NoSuchInterface(format!("index {index}")))?
        }
    };
    let addresses = nl.addresses(link.index).await?;
    let (v4, v6) = pick_global(&addresses);
    if v4.is_none() && v6.is_none() {
        return Err(UnderlayError::NoAddress(link.name));
    }
    Ok(Underlay {
        iface: Some(link.name),
        v4,
        v6,
    })
}

/// The output interface of the IPv4 default route, else of the IPv6 one.
async fn default_route_oif(nl: &Netlink) -> Result<Option<u32>, NetlinkError> {
    let routes = nl.routes(None).await?;
    Ok([true, false].into_iter().find_map(|v4| {
        routes
            .iter()
            .find(|r| r.destination.prefix_len() == 0 && r.destination.addr().is_ipv4() == v4)
            .and_then(|r| r.oif)
    }))
}

/// The first global-scope address of each family, in the kernel's order (which is the
/// order they were added: the primary address first).
pub fn pick_global(addresses: &[Address]) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    first_per_family(addresses.iter().map(|a| a.ip).filter(is_global))
}

fn first_per_family(ips: impl Iterator<Item = IpAddr>) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let (mut v4, mut v6) = (None, None);
    for ip in ips {
        match ip {
            IpAddr::V4(a) => {
                v4.get_or_insert(a);
            }
            IpAddr::V6(a) => {
                v6.get_or_insert(a);
            }
        }
    }
    (v4, v6)
}

/// Global scope as the kernel means it: not loopback, link-local or multicast. (ULA
/// and RFC 1918 addresses are global in this sense: other hosts reach them.)
fn is_global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_link_local() || a.is_unspecified()),
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unicast_link_local()
                || a.is_multicast()
                || a.is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str) -> Address {
        Address {
            index: 2,
            ip: ip.parse().unwrap(),
            prefix_len: 24,
        }
    }

    #[test]
    fn picks_the_first_global_address_of_each_family() {
        let addrs = [
            addr("fe80::1"),
            addr("169.254.0.9"),
            addr("10.0.0.1"),
            addr("fd00::5"),
            addr("10.0.0.2"),
            addr("2001:db8::1"),
        ];
        assert_eq!(
            pick_global(&addrs),
            (
                Some("10.0.0.1".parse().unwrap()),
                Some("fd00::5".parse().unwrap())
            )
        );
    }

    #[test]
    fn link_local_and_loopback_are_not_underlay() {
        let addrs = [addr("127.0.0.1"), addr("::1"), addr("fe80::2")];
        assert_eq!(pick_global(&addrs), (None, None));
    }

    #[test]
    fn explicit_addresses_split_by_family() {
        let ips: Vec<IpAddr> = vec!["fd00::1".parse().unwrap(), "192.0.2.7".parse().unwrap()];
        assert_eq!(
            first_per_family(ips.into_iter()),
            (
                Some("192.0.2.7".parse().unwrap()),
                Some("fd00::1".parse().unwrap())
            )
        );
    }
}
