//! CNI CHECK: is the endpoint still what [`super::setup`] built?

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{GATEWAY_V4, GATEWAY_V6, VethSpec, host_prefix_len, list, names};
use crate::netlink::{Link, Netlink, NetlinkError, RTPROT_STRAIT, Route, format_mac};
use crate::netns::{NetNs, NetnsError};

/// Which namespace a [`Problem`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Container,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Host => "host",
            Side::Container => "container",
        })
    }
}

/// One way in which the endpoint differs from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    LinkMissing {
        side: Side,
        ifname: String,
    },
    LinkDown {
        side: Side,
        ifname: String,
    },
    MtuMismatch {
        side: Side,
        ifname: String,
        expected: u32,
        actual: u32,
    },
    /// The container interface is not the host veth's peer.
    NotPeers {
        host_ifname: String,
        container_ifname: String,
    },
    AddressMissing {
        ip: IpAddr,
        prefix_len: u8,
        ifname: String,
    },
    RouteMissing {
        side: Side,
        route: String,
    },
    NeighbourMissing {
        side: Side,
        ip: IpAddr,
        mac: String,
        ifname: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::LinkMissing { side, ifname } => write!(f, "{side} link {ifname} is missing"),
            Problem::LinkDown { side, ifname } => write!(f, "{side} link {ifname} is down"),
            Problem::MtuMismatch {
                side,
                ifname,
                expected,
                actual,
            } => write!(
                f,
                "{side} link {ifname} has MTU {actual}, expected {expected}"
            ),
            Problem::NotPeers {
                host_ifname,
                container_ifname,
            } => write!(
                f,
                "container interface {container_ifname} is not the peer of {host_ifname}"
            ),
            Problem::AddressMissing {
                ip,
                prefix_len,
                ifname,
            } => write!(f, "address {ip}/{prefix_len} missing on container {ifname}"),
            Problem::RouteMissing { side, route } => write!(f, "{side} route {route} missing"),
            Problem::NeighbourMissing {
                side,
                ip,
                mac,
                ifname,
            } => write!(
                f,
                "{side} permanent neighbour {ip} lladdr {mac} dev {ifname} missing"
            ),
        }
    }
}

/// Why a check failed: it could not look, or it looked and found problems.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("endpoint {host_ifname}: {}", list(problems))]
    Mismatch {
        host_ifname: String,
        problems: Vec<Problem>,
    },
}

/// Verifies the endpoint against `spec`: the host veth exists and is up, with its
/// MTU, host routes (tagged [`RTPROT_STRAIT`]) and neighbour entries; the container
/// interface exists in the namespace as its peer, is up, has every address, the
/// default route(s) and the gateway neighbour entries. Reports every problem found,
/// not just the first.
pub async fn check(host: &Netlink, spec: &VethSpec) -> Result<(), CheckError> {
    let netns = NetNs::open(&spec.netns)?;
    let (host_link, container) = tokio::join!(
        host.link_by_name(&spec.host_ifname),
        Netlink::open_in(&netns)
    );
    let (host_link, container) = (host_link?, container?);

    let mut problems = Vec::new();
    match &host_link {
        None => problems.push(Problem::LinkMissing {
            side: Side::Host,
            ifname: spec.host_ifname.clone(),
        }),
        Some(link) => {
            link_state(Side::Host, link, spec.mtu, &mut problems);
            let (routes, neighbours) =
                tokio::try_join!(host.strait_routes(), host.neighbours(link.index))?;
            let container_mac = spec
                .container_mac
                .unwrap_or_else(|| names::default_container_mac(&spec.host_ifname));
            for ip in &spec.ips {
                let wanted = Route::host(*ip, link.index);
                if !routes.iter().any(|r| {
                    r.destination == wanted.destination
                        && r.oif == wanted.oif
                        && r.gateway.is_none()
                        && r.protocol == RTPROT_STRAIT
                }) {
                    problems.push(Problem::RouteMissing {
                        side: Side::Host,
                        route: format!("{ip} dev {} proto {RTPROT_STRAIT}", spec.host_ifname),
                    });
                }
                neighbour(
                    Side::Host,
                    &neighbours,
                    *ip,
                    container_mac,
                    link,
                    &mut problems,
                );
            }
        }
    }

    let Some(container_link) = container.link_by_name(&spec.container_ifname).await? else {
        problems.push(Problem::LinkMissing {
            side: Side::Container,
            ifname: spec.container_ifname.clone(),
        });
        return verdict(spec, problems);
    };
    link_state(Side::Container, &container_link, spec.mtu, &mut problems);
    if let Some(host_link) = &host_link
        && host_link.link != Some(container_link.index)
    {
        problems.push(Problem::NotPeers {
            host_ifname: spec.host_ifname.clone(),
            container_ifname: spec.container_ifname.clone(),
        });
    }

    let index = container_link.index;
    let (addresses, routes, neighbours) = tokio::try_join!(
        container.addresses(index),
        container.routes(None),
        container.neighbours(index),
    )?;
    for ip in &spec.ips {
        let prefix_len = host_prefix_len(ip);
        if !addresses
            .iter()
            .any(|a| a.ip == *ip && a.prefix_len == prefix_len)
        {
            problems.push(Problem::AddressMissing {
                ip: *ip,
                prefix_len,
                ifname: spec.container_ifname.clone(),
            });
        }
    }
    let mut gateways = Vec::new();
    if spec.ips.iter().any(IpAddr::is_ipv4) {
        gateways.push(IpAddr::V4(GATEWAY_V4));
    }
    if spec.ips.iter().any(IpAddr::is_ipv6) {
        gateways.push(IpAddr::V6(GATEWAY_V6));
    }
    // The host end's MAC as it is, not as it should be: a wrong one shows up as a
    // neighbour entry that does not match it.
    let gateway_mac = host_link.as_ref().and_then(|l| l.mac);
    for gw in gateways {
        let default = match gw {
            IpAddr::V4(_) => IpNet::V4(Default::default()),
            IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        if !routes
            .iter()
            .any(|r| r.destination == default && r.gateway == Some(gw) && r.oif == Some(index))
        {
            problems.push(Problem::RouteMissing {
                side: Side::Container,
                route: format!("default via {gw} dev {}", spec.container_ifname),
            });
        }
        if let Some(mac) = gateway_mac {
            neighbour(
                Side::Container,
                &neighbours,
                gw,
                mac,
                &container_link,
                &mut problems,
            );
        }
    }
    verdict(spec, problems)
}

fn link_state(side: Side, link: &Link, mtu: u32, problems: &mut Vec<Problem>) {
    if !link.up {
        problems.push(Problem::LinkDown {
            side,
            ifname: link.name.clone(),
        });
    }
    if mtu != 0 && link.mtu != mtu {
        problems.push(Problem::MtuMismatch {
            side,
            ifname: link.name.clone(),
            expected: mtu,
            actual: link.mtu,
        });
    }
}

fn neighbour(
    side: Side,
    neighbours: &[crate::netlink::Neighbour],
    ip: IpAddr,
    mac: [u8; 6],
    link: &Link,
    problems: &mut Vec<Problem>,
) {
    if !neighbours
        .iter()
        .any(|n| n.ip == ip && n.mac == Some(mac) && n.permanent)
    {
        problems.push(Problem::NeighbourMissing {
            side,
            ip,
            mac: format_mac(&mac),
            ifname: link.name.clone(),
        });
    }
}

/// No problems is a pass; any is a [`CheckError::Mismatch`] listing them all.
pub fn verdict(spec: &VethSpec, problems: Vec<Problem>) -> Result<(), CheckError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckError::Mismatch {
            host_ifname: spec.host_ifname.clone(),
            problems,
        })
    }
}
