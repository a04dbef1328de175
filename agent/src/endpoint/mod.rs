//! A container's network interface, the routed (Calico-style) way: a veth pair whose
//! host end sits in the agent's namespace and whose peer is created directly in the
//! container's namespace; no bridge.
//!
//! This module owns what that interface *is*: its names ([`host_ifname`]), its
//! addresses, the container's routes and gateway, the host's routes to it, and the
//! order in which they are made and unmade. The kernel calls are
//! [`crate::netlink`]'s; namespace entry is [`crate::netns`]'s.
//!
//! The wiring, for a container with `10.0.0.5` and `fd00::5` on `eth0`:
//!
//! ```text
//! container                                   host (agent's namespace)
//!   eth0  10.0.0.5/32, fd00::5/128  <──veth──>  strait1a2b3c4d  (no address; proxy_arp=1)
//!   169.254.1.1/32 dev eth0 scope link          10.0.0.5 dev strait1a2b3c4d scope link proto 83
//!   default via 169.254.1.1 dev eth0 onlink     fd00::5 dev strait1a2b3c4d proto 83
//!   default via fe80::1 dev eth0                neigh 10.0.0.5, fd00::5 → container MAC (permanent)
//!   neigh 169.254.1.1, fe80::1 → host MAC (permanent)
//! ```
//!
//! The gateways [`GATEWAY_V4`] and [`GATEWAY_V6`] exist nowhere as addresses: the
//! container sends everything to the host end's MAC, learnt from a permanent neighbour
//! entry, and the host routes it. Permanent entries on both sides mean no ARP or NDP is
//! needed in either direction, so nothing waits on neighbour resolution or on proxy ARP
//! (which is still enabled on the host end as a fallback, should someone flush the
//! container's neighbour table). The host end carries no IPv4 address and no `fe80::1`:
//! it needs none to forward, and leaving `fe80::1` off the host keeps one address from
//! sitting on hundreds of links.

mod check;
mod names;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use futures::future::{join_all, try_join_all};

use crate::netlink::{Netlink, NetlinkError, Route, VethEnd, format_mac, ignore_not_found};
use crate::netns::{NetNs, NetnsError};

pub use check::{CheckError, Problem, Side, check, verdict};
pub use names::{
    default_container_mac, fnv1a64, host_ifname, host_mac, is_host_ifname, owner_mark,
};

/// The container's IPv4 gateway: link-local, never assigned to any interface.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The container's IPv6 gateway: link-local, never assigned to any interface.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Every network namespace has its loopback at ifindex 1.
const LOOPBACK_IFINDEX: u32 = 1;

/// What to build for one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Host end, normally [`host_ifname`]`(network, container_id, ifname)`.
    pub host_ifname: String,
    /// Container end (`CNI_IFNAME`, e.g. `eth0`).
    pub container_ifname: String,
    /// The container's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The container's addresses; each is assigned as a /32 or /128.
    pub ips: Vec<IpAddr>,
    /// MTU of both ends; 0 keeps the kernel's default (1500).
    pub mtu: u32,
    /// MAC of the container end; `None` derives a stable one from `host_ifname`.
    pub container_mac: Option<[u8; 6]>,
    /// The owner mark ([`owner_mark`]) written into the host end's alias, so that the
    /// stale-link sweep of another agent's store leaves the link alone; `None` writes
    /// none.
    pub owner: Option<String>,
    /// The container end is left in the agent's namespace, down and unconfigured,
    /// named `container_ifname`, for the runtime to move into the container and
    /// configure itself (Docker: libnetwork moves the interface Join names and sets its
    /// addresses, routes and gateway). `netns` is then unused. Only the host side is
    /// configured here, plus `fe80::1` on the host end when the container has IPv6:
    /// the runtime's default route via `fe80::1` must find a neighbour, and no
    /// permanent entry can be put into a namespace the interface is not in yet.
    pub handover: bool,
}

/// What [`setup`] built. MACs are `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethCreated {
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: String,
    /// Ifindex of the container end, in the container's namespace.
    pub container_ifindex: u32,
    pub container_mac: String,
}

/// Why an endpoint could not be built or torn down.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid endpoint: {reason}")]
    InvalidSpec { reason: String },
    #[error("container network namespace {path} is the agent's own namespace")]
    HostNamespace { path: PathBuf },
    /// A link with the host end's name exists already: a leftover of an earlier
    /// attachment (or a hash collision). Nothing was changed; the caller decides
    /// whether to [`delete_link`] it and retry.
    #[error("host link {ifname} already exists (index {index}); stale endpoint?")]
    HostLinkExists { ifname: String, index: u32 },
    #[error("interface {ifname} already exists in container namespace {netns}")]
    ContainerLinkExists { ifname: String, netns: PathBuf },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink request outside the two sides below (creating the pair, deleting it,
    /// listing links).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Configuring the host end failed.
    #[error("host end {ifname}: {source}")]
    HostSide {
        ifname: String,
        #[source]
        source: NetlinkError,
    },
    /// Configuring the container end, inside its namespace, failed.
    #[error("container end {ifname} in {netns}: {source}")]
    ContainerSide {
        ifname: String,
        netns: PathBuf,
        #[source]
        source: NetlinkError,
    },
    /// Setup failed with `error`, and undoing it failed too.
    #[error("{error}; undoing it failed as well: {}", list(cleanup))]
    CleanupFailed {
        error: Box<EndpointError>,
        cleanup: Vec<NetlinkError>,
    },
    /// Some removals of a teardown failed; the others were still done.
    #[error("tearing down {ifname}: {}", list(errors))]
    Teardown {
        ifname: String,
        errors: Vec<NetlinkError>,
    },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn host_prefix_len(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn validate(spec: &VethSpec) -> Result<(), EndpointError> {
    let invalid = |reason: String| Err(EndpointError::InvalidSpec { reason });
    for (what, name) in [
        ("host interface name", &spec.host_ifname),
        ("container interface name", &spec.container_ifname),
    ] {
        if !names::valid_ifname(name) {
            return invalid(format!(
                "{what} {name:?} is not a valid interface name (1-{} bytes, no '/', ':' or spaces)",
                names::MAX_IFNAME_LEN
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for ip in &spec.ips {
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return invalid(format!("{ip} cannot be a container address"));
        }
        if !seen.insert(ip) {
            return invalid(format!("{ip} is listed twice"));
        }
    }
    if let Some(mac) = spec.container_mac
        && (mac[0] & 1 == 1 || mac == [0; 6])
    {
        return invalid(format!("{} is not a unicast MAC", format_mac(&mac)));
    }
    Ok(())
}

/// Turns on IPv4 and IPv6 forwarding in the agent's namespace. The daemon calls this
/// once at start; routed endpoints forward nothing without it.
pub async fn enable_forwarding(host: &Netlink) -> Result<(), EndpointError> {
    Ok(host.enable_forwarding().await?)
}

/// Builds the container's interface as described in the module docs.
///
/// `host` is the agent's own namespace. The veth is created in one request with both
/// ends named, sized and addressed (MAC), the host end up, the peer directly in the
/// container's namespace; then the host side and the container side are configured
/// concurrently.
///
/// If a link named `spec.host_ifname` already exists, fails with
/// [`EndpointError::HostLinkExists`] and changes nothing. On any later failure the host
/// end is deleted again (taking the peer and every route and neighbour entry through it
/// along), and the first error is returned — wrapped in
/// [`EndpointError::CleanupFailed`] if that deletion failed too.
///
/// The work runs in a task of its own, so a caller that stops waiting (a cancelled
/// request) never leaves a half-built pair: the setup still completes or undoes itself,
/// and a pair completed for no one is deleted again.
pub async fn setup(host: &Netlink, spec: &VethSpec) -> Result<VethCreated, EndpointError> {
    validate(spec)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let object = spec.host_ifname.clone();
    let (host, spec) = (host.clone(), spec.clone());
    tokio::spawn(async move {
        let result = build(&host, &spec).await;
        // The caller is gone but the pair was built: no one will record it, so it goes.
        if let Err(Ok(_unwanted)) = tx.send(result)
            && let Err(e) = ignore_not_found(host.del_link_by_name(&spec.host_ifname).await)
        {
            tracing::warn!(link = %spec.host_ifname, error = %e,
                "deleting the link of an abandoned setup; the stale-link sweep retries");
        }
    });
    rx.await.map_err(|_| {
        EndpointError::Netlink(NetlinkError::Protocol {
            op: "set up endpoint",
            object,
            detail: "the setup task ended without a result (runtime shutting down?)".into(),
        })
    })?
}

async fn build(host: &Netlink, spec: &VethSpec) -> Result<VethCreated, EndpointError> {
    if spec.handover {
        return build_handover(host, spec).await;
    }
    let netns = NetNs::open(&spec.netns)?;
    if netns.same_as(host.netns()) {
        return Err(EndpointError::HostNamespace {
            path: spec.netns.clone(),
        });
    }
    let Ends {
        host_mac,
        container_mac,
        host_end,
        container_end,
    } = veth_ends(spec);

    // The container's socket is opened (a thread, a setns) while the kernel creates the
    // pair. The thread is started first so that it can run on another CPU while this one
    // is inside the kernel creating the veth.
    let (container, created) = tokio::join!(
        Netlink::open_in(&netns),
        host.create_veth(&host_end, &container_end, Some(&netns)),
    );
    if let Err(e) = created {
        return Err(if e.is_exists() {
            name_taken(host, spec, e).await
        } else {
            e.into()
        });
    }

    // From here on the pair exists and is ours: every failure undoes it.
    let configured = async {
        let container = container.map_err(|e| container_side(spec, e))?;
        configure(host, &container, spec, host_mac, container_mac).await
    };
    match configured.await {
        Ok(created) => Ok(created),
        Err(error) => Err(undo(host, &spec.host_ifname, error).await),
    }
}

/// After a [`VethSpec::handover`], once the runtime has moved the container end into
/// `netns` (found by its MAC among links named `<prefix>N`): the permanent neighbour
/// entries for the container's `gateways`, as CNI containers get at setup, so the
/// container never depends on proxy ARP (which answers for `169.254.1.1` only while
/// the host has a route to it). Returns the interface's name there; `None` while the
/// namespace or the interface is not there yet (the runtime creates the namespace after
/// it asked for the interface).
pub async fn finish_handover(
    netns: &std::path::Path,
    prefix: &str,
    container_mac: [u8; 6],
    host_mac: [u8; 6],
    gateways: &[IpAddr],
) -> Result<Option<String>, EndpointError> {
    let ns = match NetNs::open(netns) {
        Ok(ns) => ns,
        Err(_) if !netns.exists() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let nl = Netlink::open_in(&ns).await?;
    let Some(link) = nl
        .links_with_prefix(prefix)
        .await?
        .into_iter()
        .find(|l| l.mac == Some(container_mac))
    else {
        return Ok(None);
    };
    for gw in gateways {
        nl.set_permanent_neighbour(link.index, *gw, host_mac)
            .await
            .map_err(|source| EndpointError::ContainerSide {
                ifname: link.name.clone(),
                netns: netns.to_path_buf(),
                source,
            })?;
    }
    Ok(Some(link.name))
}

/// The IPv4 gateway of a container interface a runtime configures itself. The
/// runtime adds the gateway's on-link /32 route on the interface, and a second
/// interface cannot add the same /32 again (IPv4 keeps one route per prefix and
/// metric): so the first takes [`GATEWAY_V4`], the next `169.254.1.2`, and so on,
/// the lowest with no route in `netns` yet. The host answers every one alike.
pub async fn free_gateway_v4(netns: &std::path::Path) -> Ipv4Addr {
    let taken = async {
        let ns = NetNs::open(netns).ok()?;
        let nl = Netlink::open_in(&ns).await.ok()?;
        nl.main_routes().await.ok()
    }
    .await
    .unwrap_or_default();
    (1..=254)
        .map(|k| Ipv4Addr::new(169, 254, 1, k))
        .find(|gw| {
            !taken
                .iter()
                .any(|r| r.destination == ipnet::IpNet::from(IpAddr::V4(*gw)))
        })
        .unwrap_or(GATEWAY_V4)
}

/// The two ends of the pair as [`Netlink::create_veth`] makes them: the host end
/// up, the container end down (the kernel configures the peer before it links the two
/// ends, and opening a veth without its peer fails with ENOTCONN; it goes up in
/// `configure`, or in the runtime's hands after a hand-over).
struct Ends {
    host_mac: [u8; 6],
    container_mac: [u8; 6],
    host_end: VethEnd,
    container_end: VethEnd,
}

fn veth_ends(spec: &VethSpec) -> Ends {
    let host_mac = names::host_mac(&spec.host_ifname);
    let container_mac = spec
        .container_mac
        .unwrap_or_else(|| names::default_container_mac(&spec.host_ifname));
    let mtu = (spec.mtu != 0).then_some(spec.mtu);
    Ends {
        host_mac,
        container_mac,
        host_end: VethEnd {
            name: spec.host_ifname.clone(),
            mac: Some(host_mac),
            mtu,
            up: true,
        },
        container_end: VethEnd {
            name: spec.container_ifname.clone(),
            mac: Some(container_mac),
            mtu,
            up: false,
        },
    }
}

/// [`VethSpec::handover`]: both ends on the host; only the host side configured.
async fn build_handover(host: &Netlink, spec: &VethSpec) -> Result<VethCreated, EndpointError> {
    let ends = veth_ends(spec);
    if let Err(e) = host
        .create_veth(&ends.host_end, &ends.container_end, None)
        .await
    {
        return Err(if e.is_exists() {
            name_taken(host, spec, e).await
        } else {
            e.into()
        });
    }
    let configured = async {
        let (host_index, container_index) = veth_indexes(host, spec).await?;
        configure_host_side(host, spec, host_index, ends.container_mac).await?;
        if spec.ips.iter().any(IpAddr::is_ipv6) {
            host.add_address(host_index, IpAddr::V6(GATEWAY_V6), 64)
                .await
                .map_err(|e| host_side(spec, e))?;
        }
        Ok::<_, EndpointError>(created(
            spec,
            host_index,
            container_index,
            ends.host_mac,
            ends.container_mac,
        ))
    };
    match configured.await {
        Ok(created) => Ok(created),
        Err(error) => Err(undo(host, &spec.host_ifname, error).await),
    }
}

/// The host end's ifindex and its peer's, from one lookup: a veth's IFLA_LINK is its
/// peer's ifindex (in the peer's namespace).
async fn veth_indexes(host: &Netlink, spec: &VethSpec) -> Result<(u32, u32), EndpointError> {
    let link =
        host.link_by_name(&spec.host_ifname)
            .await?
            .ok_or_else(|| NetlinkError::Incomplete {
                op: "get link",
                object: spec.host_ifname.clone(),
                what: "the link just created",
            })?;
    let container_index = link.link.ok_or_else(|| NetlinkError::Incomplete {
        op: "get link",
        object: spec.host_ifname.clone(),
        what: "IFLA_LINK (the veth peer's ifindex)",
    })?;
    Ok((link.index, container_index))
}

/// The host side of an endpoint: a permanent neighbour entry and a host route per
/// address, the owner mark, proxy ARP. Requests on one socket are pipelined; the kernel
/// still handles them in order.
async fn configure_host_side(
    host: &Netlink,
    spec: &VethSpec,
    host_index: u32,
    container_mac: [u8; 6],
) -> Result<(), EndpointError> {
    let host_routes: Vec<Route> = spec
        .ips
        .iter()
        .map(|ip| Route::host(*ip, host_index))
        .collect();
    let neighbours = try_join_all(
        spec.ips
            .iter()
            .map(|ip| host.set_permanent_neighbour(host_index, *ip, container_mac)),
    );
    // Replace, not add: the address may have belonged to a container whose veth
    // is still being deleted in the background, and its route must give way.
    let routes = try_join_all(host_routes.iter().map(|r| host.replace_route(r)));
    // The alias cannot ride in the creation request; it is pipelined with the rest.
    let owner = async {
        match &spec.owner {
            Some(mark) => host.set_alias(host_index, mark).await,
            None => Ok(()),
        }
    };
    enable_proxy_arp(host.proc_sys(), &spec.host_ifname).map_err(|e| host_side(spec, e))?;
    tokio::try_join!(neighbours, routes, owner).map_err(|e| host_side(spec, e))?;
    Ok(())
}

fn created(
    spec: &VethSpec,
    host_index: u32,
    container_index: u32,
    host_mac: [u8; 6],
    container_mac: [u8; 6],
) -> VethCreated {
    VethCreated {
        host_ifname: spec.host_ifname.clone(),
        host_ifindex: host_index,
        host_mac: format_mac(&host_mac),
        container_ifindex: container_index,
        container_mac: format_mac(&container_mac),
    }
}

fn host_side(spec: &VethSpec, source: NetlinkError) -> EndpointError {
    EndpointError::HostSide {
        ifname: spec.host_ifname.clone(),
        source,
    }
}

fn container_side(spec: &VethSpec, source: NetlinkError) -> EndpointError {
    EndpointError::ContainerSide {
        ifname: spec.container_ifname.clone(),
        netns: spec.netns.clone(),
        source,
    }
}

/// EEXIST from the creation: tell which end's name is taken.
async fn name_taken(host: &Netlink, spec: &VethSpec, exists: NetlinkError) -> EndpointError {
    match host.link_by_name(&spec.host_ifname).await {
        Ok(Some(link)) => EndpointError::HostLinkExists {
            ifname: spec.host_ifname.clone(),
            index: link.index,
        },
        Ok(None) => EndpointError::ContainerLinkExists {
            ifname: spec.container_ifname.clone(),
            netns: spec.netns.clone(),
        },
        Err(_) => exists.into(),
    }
}

async fn configure(
    host: &Netlink,
    container: &Netlink,
    spec: &VethSpec,
    host_mac: [u8; 6],
    container_mac: [u8; 6],
) -> Result<VethCreated, EndpointError> {
    let (host_index, container_index) = veth_indexes(host, spec).await?;
    let host_side = configure_host_side(host, spec, host_index, container_mac);

    let has_v4 = spec.ips.iter().any(IpAddr::is_ipv4);
    let has_v6 = spec.ips.iter().any(IpAddr::is_ipv6);
    let mut gateways = Vec::new();
    let mut routes = Vec::new();
    // Every strait interface of a container uses the same link-local gateways, so a
    // second interface (eth1) needs its own copies of the gateway and default routes:
    // the metric, the interface's index, keeps them apart and prefers the first.
    let metric = container_index;
    if has_v4 {
        let gw = IpAddr::V4(GATEWAY_V4);
        gateways.push(gw);
        routes.push(Route::host(gw, container_index).with_metric(metric));
        routes.push(Route::default_via(gw, container_index).with_metric(metric));
    }
    if has_v6 {
        let gw = IpAddr::V6(GATEWAY_V6);
        gateways.push(gw);
        routes.push(Route::default_via(gw, container_index).with_metric(metric));
    }
    let container_side = async {
        // Up first: routes through a down link are refused (ENETDOWN).
        tokio::try_join!(
            container.set_up(container_index),
            container.set_up(LOOPBACK_IFINDEX)
        )
        .map_err(|e| container_side(spec, e))?;
        let addresses = try_join_all(
            spec.ips
                .iter()
                .map(|ip| container.add_address(container_index, *ip, host_prefix_len(ip))),
        );
        let neighbours = try_join_all(
            gateways
                .iter()
                .map(|gw| container.set_permanent_neighbour(container_index, *gw, host_mac)),
        );
        let routes = try_join_all(routes.iter().map(|r| container.add_route(r)));
        tokio::try_join!(addresses, neighbours, routes).map_err(|e| container_side(spec, e))
    };

    tokio::try_join!(host_side, container_side)?;
    Ok(created(
        spec,
        host_index,
        container_index,
        host_mac,
        container_mac,
    ))
}

/// Proxy ARP on the host end, through its sysctl file rather than rtnetlink: the
/// write takes no rtnl lock, which a burst of ADDs all queue on. The agent's threads
/// stay in its own namespace, so `net/` under `proc_sys` (the host connection's
/// root, `--proc-sys-dir`) is that namespace's.
fn enable_proxy_arp(proc_sys: &Path, host_ifname: &str) -> Result<(), NetlinkError> {
    let path = proc_sys.join(format!("net/ipv4/conf/{host_ifname}/proxy_arp"));
    std::fs::write(&path, b"1").map_err(|e| NetlinkError::Protocol {
        op: "enable proxy_arp",
        object: host_ifname.to_string(),
        detail: format!("writing {}: {e}", path.display()),
    })
}

async fn undo(host: &Netlink, host_ifname: &str, error: EndpointError) -> EndpointError {
    match ignore_not_found(host.del_link_by_name(host_ifname).await) {
        Ok(()) => error,
        Err(cleanup) => EndpointError::CleanupFailed {
            error: Box::new(error),
            cleanup: vec![cleanup],
        },
    }
}

/// Removes the host's routes to `ips` through `host_ifname` — about 0.1 ms, so
/// DEL can stop traffic to the container (and let its IPs be reused) before the slow
/// link deletion. Routes or a link already gone count as removed. Every route is tried
/// even if one fails.
pub async fn remove_host_routes(
    host: &Netlink,
    host_ifname: &str,
    ips: &[IpAddr],
) -> Result<(), EndpointError> {
    let Some(link) = host.link_by_name(host_ifname).await? else {
        // The routes went with the link.
        return Ok(());
    };
    let errors: Vec<NetlinkError> =
        join_all(ips.iter().map(|ip| async {
            ignore_not_found(host.del_route(&Route::host(*ip, link.index)).await)
        }))
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EndpointError::Teardown {
            ifname: host_ifname.to_string(),
            errors,
        })
    }
}

/// Link group strait moves veths into just before deleting them in a batch. Only
/// strait's own links ever carry it (chosen to read "ST" + 0xDE1 in hex).
pub const DOOMED_LINK_GROUP: u32 = 0x5354_0de1;

/// Deletes several host veths at once, idempotently. One link is deleted by name; more
/// are moved into [`DOOMED_LINK_GROUP`] and deleted with one request, so the kernel
/// pays one RCU grace period for the batch (15–30 ms here) instead of one per link.
/// Falls back to one-by-one if the batch fails.
pub async fn delete_links(host: &Netlink, names: &[String]) -> Result<(), EndpointError> {
    if names.len() <= 1 {
        for name in names {
            delete_link(host, name).await?;
        }
        return Ok(());
    }
    let mut grouped = 0;
    for name in names {
        match ignore_not_found(host.set_group_by_name(name, DOOMED_LINK_GROUP).await) {
            Ok(()) => grouped += 1,
            Err(e) => tracing::debug!(link = %name, error = %e, "grouping for batch delete"),
        }
    }
    if grouped > 0
        && let Err(e) = ignore_not_found(host.del_links_in_group(DOOMED_LINK_GROUP).await)
    {
        tracing::debug!(error = %e, "batch delete failed; deleting one by one");
    }
    // Whatever is left (not grouped, or the batch failed) goes one at a time.
    let mut errors = Vec::new();
    for name in names {
        if let Err(e) = delete_link(host, name).await {
            errors.push(e);
        }
    }
    match errors.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Deletes the host end (the kernel deletes the peer, and every route and neighbour
/// entry through either end, with it). Already gone is success.
///
/// This is the slow step of a teardown: the kernel answers only after the device is
/// fully released (13–25 ms measured here, against ~0.1 ms for
/// [`remove_host_routes`]; setting the link down first makes it no faster). Other
/// endpoints' setups proceed meanwhile (measured ~0.6 ms slower while a deletion is in
/// flight), so it is meant to run in the background after [`remove_host_routes`]. The
/// one rule: `host_ifname` (same network, container and ifname) must not be set up
/// again before the deletion completes, or [`setup`] finds the old link and fails with
/// [`EndpointError::HostLinkExists`].
pub async fn delete_link(host: &Netlink, host_ifname: &str) -> Result<(), EndpointError> {
    Ok(ignore_not_found(host.del_link_by_name(host_ifname).await)?)
}

/// The host end of an endpoint as found on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostEnd {
    pub name: String,
    pub index: u32,
    /// Its owner mark ([`owner_mark`]), if the alias carries one: `None` for a link
    /// made by a strait that marked none, or by one that crashed before marking it.
    pub owner: Option<String>,
}

impl HostEnd {
    /// The host end `name`, with the owner read from its alias.
    pub fn new(name: String, index: u32, alias: Option<&str>) -> Self {
        let owner = alias
            .filter(|a| a.starts_with(names::OWNER_MARK_PREFIX))
            .map(str::to_string);
        Self { name, index, owner }
    }
}

/// The host ends of endpoints present in the agent's namespace: veths whose name has
/// the shape [`host_ifname`] produces. Other `strait*` links (fabric devices) are not
/// endpoints and are not listed.
pub async fn list_owned_links(host: &Netlink) -> Result<Vec<HostEnd>, EndpointError> {
    Ok(host
        .strait_links()
        .await?
        .into_iter()
        .filter(|l| is_host_ifname(&l.name) && l.kind.as_deref() == Some("veth"))
        .map(|l| HostEnd::new(l.name, l.index, l.alias.as_deref()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_arp_is_written_under_the_given_root() {
        let root = tempfile::tempdir().expect("temp dir");
        let conf = root.path().join("net/ipv4/conf/strait1a2b");
        std::fs::create_dir_all(&conf).expect("conf dir");
        enable_proxy_arp(root.path(), "strait1a2b").expect("write");
        assert_eq!(std::fs::read(conf.join("proxy_arp")).expect("read"), b"1");
        let err = enable_proxy_arp(root.path(), "strait9z").expect_err("no such interface");
        assert!(
            err.to_string().contains(
                &root
                    .path()
                    .join("net/ipv4/conf/strait9z")
                    .display()
                    .to_string()
            ),
            "{err}"
        );
    }

    fn spec() -> VethSpec {
        VethSpec {
            host_ifname: host_ifname("n", "c", "eth0"),
            container_ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            ips: vec![
                "10.0.0.5".parse().expect("ip"),
                "fd00::5".parse().expect("ip"),
            ],
            mtu: 1450,
            container_mac: None,
            owner: None,
            handover: false,
        }
    }

    #[test]
    fn accepts_a_normal_spec() {
        assert!(validate(&spec()).is_ok());
    }

    #[test]
    fn rejects_bad_specs() {
        let bad = [
            VethSpec {
                container_ifname: "a-very-long-interface".into(),
                ..spec()
            },
            VethSpec {
                host_ifname: String::new(),
                ..spec()
            },
            VethSpec {
                ips: vec![
                    "10.0.0.5".parse().expect("ip"),
                    "10.0.0.5".parse().expect("ip"),
                ],
                ..spec()
            },
            VethSpec {
                ips: vec!["0.0.0.0".parse().expect("ip")],
                ..spec()
            },
            VethSpec {
                container_mac: Some([0x01, 0, 0, 0, 0, 1]),
                ..spec()
            },
        ];
        for s in bad {
            let err = validate(&s).expect_err("invalid");
            assert!(matches!(err, EndpointError::InvalidSpec { .. }), "{err}");
        }
    }

    #[test]
    fn gateways_are_the_documented_ones() {
        assert_eq!(GATEWAY_V4.to_string(), "169.254.1.1");
        assert_eq!(GATEWAY_V6.to_string(), "fe80::1");
    }
}
