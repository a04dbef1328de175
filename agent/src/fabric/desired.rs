//! The desired kernel state of this node, computed from the cluster's node records and
//! IPAM blocks. Pure: no kernel, no store, so it is tested (and sized) without root.
//!
//! Over 600 lines with its unit tests; the computation itself is about 340 lines,
//! kept in one file because each mode's rules read against the others.
//!
//! Per remote node with a record, vxlan wants an FDB entry (its VTEP MAC → its
//! underlay address), a permanent neighbour per tunnel address (→ its VTEP MAC) and a
//! route per block affine to it (onlink via its tunnel address of the block's family on
//! `strait.vxlan`); host-gw wants a route per block via its underlay address of the
//! block's family on the interface whose connected subnet holds that address. Both want
//! a blackhole route per block affine to this node.
//!
//! A node whose lease has expired (no live record) is programmed by its last record
//! for as long as it owns blocks or holds borrowed addresses: its agent being down says
//! nothing about its containers, so the data plane keeps its routes, FDB and neighbour
//! entries until the reclaimer frees its blocks. Whatever stops a peer from being
//! programmed is a [`Warning`], never an error: one broken record must not cost the
//! other nodes their routes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::{FabricMode, NodeRecord};

use super::{FabricConfig, parse_mac, vtep_mac};
use crate::ipam::Family;
use crate::netlink::{FdbEntry, Route};
use strait_api::routes::Warning;

/// A connected subnet of this host: an address with its prefix on link `index`
/// (`10.0.0.1/24 dev eth0` connects 10.0.0.0/24). Host-gw peers must be inside one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub net: IpNet,
    pub index: u32,
    pub ifname: String,
}

/// This host's links as far as the desired state depends on them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalLinks {
    /// Ifindex of `strait.vxlan`; `None` before it exists (its routes then name index
    /// 0, which no kernel route has, so they show as missing).
    pub vxlan: Option<u32>,
    pub connected: Vec<Connected>,
}

/// A permanent neighbour entry on `strait.vxlan`: `ip lladdr mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighbourEntry {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// A desired entry and the node it is for (this node for blackholes and tunnel
/// addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned<T> {
    pub node: String,
    pub entry: T,
}

/// What the kernel should hold for the fabric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// This node's tunnel addresses (/32, /128) on `strait.vxlan` (vxlan only).
    pub addresses: Vec<IpAddr>,
    pub fdb: Vec<Owned<FdbEntry>>,
    pub neighbours: Vec<Owned<NeighbourEntry>>,
    pub routes: Vec<Owned<Route>>,
    /// vxlan: each routed block of another node and the VTEP MAC its route's gateway
    /// resolves to (route, neighbour and FDB entry in one), for the fast path.
    pub tunnels: BTreeMap<IpNet, [u8; 6]>,
    pub warnings: Vec<Warning>,
}

/// The cluster as the fabric sees it: node records by name, and for each block its
/// affinity (`None`: claimed by no node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Live records (`nodes/`, bound to their leases).
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Last records (`node-records/`, no lease), of live nodes and of nodes whose lease
    /// has expired alike; only the latter are read, and only while they own blocks.
    pub last_records: BTreeMap<String, NodeRecord>,
    pub blocks: BTreeMap<IpNet, Option<String>>,
    /// Per block, its addresses held by a node other than its affinity (borrowed)
    /// and by which: each gets a host route to that node.
    pub lent: BTreeMap<IpNet, BTreeMap<IpAddr, String>>,
}

/// Computes the desired state of node `cfg.node` in mode `cfg.mode`. Linear in nodes
/// plus blocks.
pub fn compute(cfg: &FabricConfig, cluster: &ClusterView, links: &LocalLinks) -> Desired {
    let mut desired = Desired::default();
    if cfg.mode == FabricMode::None {
        return desired;
    }
    let mut blocks_of: HashMap<&str, Vec<IpNet>> = HashMap::new();
    for (cidr, affinity) in &cluster.blocks {
        if let Some(node) = affinity {
            blocks_of.entry(node.as_str()).or_default().push(*cidr);
        }
    }
    for cidr in blocks_of.get(cfg.node.as_str()).into_iter().flatten() {
        desired.routes.push(Owned {
            node: cfg.node.clone(),
            entry: Route::blackhole(*cidr),
        });
    }
    // In bgp mode the routes to other nodes' blocks are FIB sync's (learned from the
    // speaker, super::bgp::fib); the reconcile keeps only the own blackholes.
    if cfg.mode == FabricMode::Bgp {
        return desired;
    }
    // A borrowed address is routed as a host route to the node holding it, like a
    // block of its own: more specific than the lender's block route (and blackhole).
    // The holder itself has its endpoint's route.
    for (ip, node) in cluster.lent.values().flatten() {
        if *node != cfg.node {
            blocks_of
                .entry(node.as_str())
                .or_default()
                .push(IpNet::from(*ip));
        }
    }
    if cfg.mode == FabricMode::Vxlan {
        own_tunnel(cfg, cluster, &mut desired);
    }

    // Remote blocks of each family, and how many of them got a route, for the
    // family-wide warning at the end.
    let mut remote_blocks: BTreeMap<Family, (usize, usize)> = BTreeMap::new();
    for (name, record) in peers(cluster, &blocks_of) {
        if *name == cfg.node {
            continue;
        }
        let blocks = blocks_of
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let before = desired.routes.len();
        match cfg.mode {
            FabricMode::Vxlan => vxlan_peer(cfg, links, name, record, blocks, &mut desired),
            FabricMode::HostGw => host_gw_peer(links, name, record, blocks, &mut desired),
            FabricMode::None | FabricMode::Bgp => {}
        }
        for cidr in blocks {
            remote_blocks.entry(Family::of_net(cidr)).or_default().0 += 1;
        }
        for route in &desired.routes[before..] {
            remote_blocks
                .entry(Family::of_net(&route.entry.destination))
                .or_default()
                .1 += 1;
        }
    }
    for (family, (blocks, routed)) in remote_blocks {
        if blocks > 0 && routed == 0 {
            desired.warnings.push(Warning::cluster(format!(
                "none of the {blocks} {family} blocks of other nodes has a route: \
                 {family} containers on other hosts are unreachable"
            )));
        }
    }
    desired
}

/// The nodes to program, by name: every live record, and the last record of each node
/// whose lease has expired but which still owns blocks or holds borrowed addresses
/// (`blocks_of`).
fn peers<'a>(
    cluster: &'a ClusterView,
    blocks_of: &HashMap<&str, Vec<IpNet>>,
) -> BTreeMap<&'a String, &'a NodeRecord> {
    let mut peers: BTreeMap<&String, &NodeRecord> = cluster
        .last_records
        .iter()
        .filter(|(name, _)| blocks_of.contains_key(name.as_str()))
        .collect();
    peers.extend(cluster.nodes.iter());
    peers
}

fn own_tunnel(cfg: &FabricConfig, cluster: &ClusterView, desired: &mut Desired) {
    // Without a live record (this node's lease lapsed in a store outage, or it is not
    // registered yet), its last record: the device keeps its addresses.
    let own = cluster
        .nodes
        .get(&cfg.node)
        .or_else(|| cluster.last_records.get(&cfg.node));
    let Some(own) = own else {
        desired.warnings.push(Warning::node(
            &cfg.node,
            "this node has no record yet: strait.vxlan gets no tunnel address".into(),
        ));
        return;
    };
    desired.addresses.extend(own.tunnel_v4.map(IpAddr::V4));
    desired.addresses.extend(own.tunnel_v6.map(IpAddr::V6));
    let derived = vtep_mac(&cfg.node);
    match own.vtep_mac.as_deref().map(parse_mac) {
        Some(Some(mac)) if mac == derived => {}
        recorded => desired.warnings.push(Warning::node(
            &cfg.node,
            format!(
                "the record's VTEP MAC {:?} is not the device's {}: peers will send to \
                 the wrong MAC",
                recorded.flatten().map(|m| crate::netlink::format_mac(&m)),
                crate::netlink::format_mac(&derived)
            ),
        )),
    }
}

fn vxlan_peer(
    cfg: &FabricConfig,
    links: &LocalLinks,
    name: &str,
    peer: &NodeRecord,
    blocks: &[IpNet],
    desired: &mut Desired,
) {
    let warn = |desired: &mut Desired, message: String| {
        desired.warnings.push(Warning::node(name, message));
    };
    if peer.fabric != FabricMode::Vxlan {
        warn(
            desired,
            format!(
                "runs fabric {}, this node vxlan: not programmed",
                peer.fabric
            ),
        );
        return;
    }
    let Some(mac) = peer.vtep_mac.as_deref().and_then(parse_mac) else {
        warn(
            desired,
            format!("no valid VTEP MAC ({:?}): not programmed", peer.vtep_mac),
        );
        return;
    };
    // The device encapsulates in its `local` address's family; a peer is reachable
    // only by an underlay address of that family.
    let dst = if cfg.underlay.v4.is_some() {
        peer.underlay_v4.map(IpAddr::V4)
    } else {
        peer.underlay_v6.map(IpAddr::V6)
    };
    let Some(dst) = dst else {
        let family = if cfg.underlay.v4.is_some() {
            "IPv4"
        } else {
            "IPv6"
        };
        warn(
            desired,
            format!("no {family} underlay address (the VXLAN underlay's family): not programmed"),
        );
        return;
    };
    if peer.vxlan_vni.is_some_and(|v| v != cfg.vni)
        || peer.vxlan_port.is_some_and(|p| p != cfg.port)
    {
        warn(
            desired,
            format!(
                "VXLAN vni {:?} port {:?} differ from this node's vni {} port {}: its \
                 packets will not arrive",
                peer.vxlan_vni, peer.vxlan_port, cfg.vni, cfg.port
            ),
        );
    }
    let owned = |entry| Owned {
        node: name.to_string(),
        entry,
    };
    desired.fdb.push(owned(FdbEntry { mac, dst }));
    let tunnels = [
        (Family::V4, peer.tunnel_v4.map(IpAddr::V4)),
        (Family::V6, peer.tunnel_v6.map(IpAddr::V6)),
    ];
    for (family, tunnel) in tunnels {
        if let Some(ip) = tunnel {
            desired.neighbours.push(Owned {
                node: name.to_string(),
                entry: NeighbourEntry { ip, mac },
            });
        }
        let of_family = blocks.iter().filter(|c| Family::of_net(c) == family);
        match tunnel {
            Some(gateway) => {
                let oif = links.vxlan.unwrap_or(0);
                for cidr in of_family {
                    desired
                        .routes
                        .push(owned_route(name, Route::via(*cidr, gateway, oif, true)));
                    desired.tunnels.insert(*cidr, mac);
                }
            }
            None => {
                let unrouted = of_family.count();
                if unrouted > 0 {
                    warn(
                        desired,
                        format!(
                            "no {family} tunnel address: its {unrouted} {family} block(s) get no route"
                        ),
                    );
                }
            }
        }
    }
}

fn host_gw_peer(
    links: &LocalLinks,
    name: &str,
    peer: &NodeRecord,
    blocks: &[IpNet],
    desired: &mut Desired,
) {
    let gateways = [
        (Family::V4, peer.underlay_v4.map(IpAddr::V4)),
        (Family::V6, peer.underlay_v6.map(IpAddr::V6)),
    ];
    for (family, gateway) in gateways {
        let mut of_family = blocks
            .iter()
            .filter(|c| Family::of_net(c) == family)
            .peekable();
        if of_family.peek().is_none() {
            continue;
        }
        let Some(gateway) = gateway else {
            desired.warnings.push(Warning::node(
                name,
                format!("no {family} underlay address: its {family} blocks get no route"),
            ));
            continue;
        };
        // The longest connected prefix holding the gateway, as the kernel would pick.
        let Some(link) = links
            .connected
            .iter()
            .filter(|c| c.net.contains(&gateway))
            .max_by_key(|c| c.net.prefix_len())
        else {
            desired.warnings.push(Warning::node(
                name,
                format!(
                    "underlay address {gateway} is in no connected subnet of this host \
                     (host-gw needs one shared L2 segment): its {family} blocks get no route"
                ),
            ));
            continue;
        };
        for cidr in of_family {
            desired.routes.push(owned_route(
                name,
                Route::via(*cidr, gateway, link.index, false),
            ));
        }
    }
}

fn owned_route(node: &str, route: Route) -> Owned<Route> {
    Owned {
        node: node.to_string(),
        entry: route,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::fabric::Underlay;
    use crate::netlink::{RTPROT_STRAIT, RouteKind, format_mac};

    fn cfg(node: &str, mode: FabricMode) -> FabricConfig {
        let mut c = FabricConfig::new(
            node,
            mode,
            Underlay {
                iface: Some("eth0".into()),
                v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
                v6: None,
            },
        );
        c.vni = 4096;
        c.port = 4789;
        c
    }

    fn record(i: u32, mode: FabricMode) -> NodeRecord {
        let name = format!("n{i}");
        NodeRecord {
            underlay_v4: Some(Ipv4Addr::from(0x0a00_0000 + i)),
            underlay_v6: Some(Ipv6Addr::from(0xfd99_u128 << 112 | u128::from(i))),
            fabric: mode,
            vtep_mac: Some(format_mac(&vtep_mac(&name))),
            vxlan_vni: Some(4096),
            vxlan_port: Some(4789),
            tunnel_v4: Some(Ipv4Addr::from(0x0af4_0000 + (i << 8) + 1)),
            tunnel_v6: None,
            agent_version: "0.1.0".into(),
            started: 0,
            bgp: None,
            site: strait_api::ipsec::DEFAULT_SITE.into(),
            ipsec: None,
            name,
        }
    }

    fn v4_block(i: u32) -> IpNet {
        IpNet::new(IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + (i << 8))), 26).expect("net")
    }

    fn cluster(n: u32, mode: FabricMode) -> ClusterView {
        let mut view = ClusterView::default();
        for i in 1..=n {
            let r = record(i, mode);
            view.blocks.insert(v4_block(i), Some(r.name.clone()));
            view.nodes.insert(r.name.clone(), r);
        }
        view
    }

    fn links() -> LocalLinks {
        LocalLinks {
            vxlan: Some(9),
            connected: vec![Connected {
                net: "10.0.0.0/24".parse().expect("net"),
                index: 2,
                ifname: "eth0".into(),
            }],
        }
    }

    #[test]
    fn vtep_mac_is_stable_local_unicast() {
        let mac = vtep_mac("h1");
        assert_eq!(mac, vtep_mac("h1"));
        assert_ne!(mac, vtep_mac("h2"));
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
    }

    #[test]
    fn vxlan_programs_each_peer_and_blackholes_own_blocks() {
        let view = cluster(3, FabricMode::Vxlan);
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.addresses, vec![IpAddr::V4(Ipv4Addr::new(10, 244, 1, 1))]);
        let own = &d.routes[0];
        assert_eq!(own.entry, Route::blackhole(v4_block(1)));
        assert_eq!(own.node, "n1");
        assert_eq!(d.fdb.len(), 2);
        assert_eq!(
            d.fdb[0].entry,
            FdbEntry {
                mac: vtep_mac("n2"),
                dst: "10.0.0.2".parse().expect("ip")
            }
        );
        assert_eq!(d.neighbours.len(), 2);
        assert_eq!(d.neighbours[1].entry.ip.to_string(), "10.244.3.1");
        let to_n3 = &d.routes[2].entry;
        assert_eq!(to_n3.destination, v4_block(3));
        assert_eq!(to_n3.gateway, Some("10.244.3.1".parse().expect("ip")));
        assert_eq!(to_n3.oif, Some(9));
        assert!(to_n3.onlink);
        assert_eq!(to_n3.protocol, RTPROT_STRAIT);
    }

    #[test]
    fn borrowed_addresses_get_host_routes_to_their_holder() {
        for mode in [FabricMode::Vxlan, FabricMode::HostGw] {
            let mut view = cluster(3, mode);
            // n3 holds .5 of n1's block and .6 of n2's; n1 holds .7 of n2's.
            let lent = |ips: &[(&str, &str)]| -> BTreeMap<IpAddr, String> {
                ips.iter()
                    .map(|(ip, n)| (ip.parse().expect("ip"), n.to_string()))
                    .collect()
            };
            view.lent.insert(v4_block(1), lent(&[("10.244.1.5", "n3")]));
            view.lent.insert(
                v4_block(2),
                lent(&[("10.244.2.6", "n3"), ("10.244.2.7", "n1")]),
            );
            let d = compute(&cfg("n1", mode), &view, &links());
            let to = |dst: &str| -> Vec<&Route> {
                let dst: IpNet = dst.parse().expect("net");
                d.routes
                    .iter()
                    .filter(|r| r.entry.destination == dst)
                    .map(|r| &r.entry)
                    .collect()
            };
            // From the lender (n1) and from a third node alike, via the holder n3.
            let via_n3 = to("10.244.3.0/26")[0].gateway;
            for host in ["10.244.1.5/32", "10.244.2.6/32"] {
                let r = to(host);
                assert_eq!(r.len(), 1, "{mode:?} {host}: {:?}", d.routes);
                assert_eq!(r[0].gateway, via_n3, "{mode:?} {host}");
            }
            // Its own borrowed address has its endpoint's route, not a fabric one.
            assert!(to("10.244.2.7/32").is_empty(), "{mode:?}");
            // The lender's blackhole stays, under the more specific host route.
            assert!(
                d.routes
                    .iter()
                    .any(|r| r.entry == Route::blackhole(v4_block(1)))
            );
            if mode == FabricMode::Vxlan {
                let host: IpNet = "10.244.1.5/32".parse().expect("net");
                assert_eq!(d.tunnels.get(&host), Some(&vtep_mac("n3")));
            }
        }
    }

    #[test]
    fn vxlan_tunnels_are_the_routed_peer_blocks_with_their_vtep_macs() {
        let mut view = cluster(3, FabricMode::Vxlan);
        // n3's IPv6 block has no route (no IPv6 tunnel address): not a tunnel either.
        view.blocks
            .insert("fd00:244:3::/122".parse().expect("net"), Some("n3".into()));
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        let want: BTreeMap<IpNet, [u8; 6]> =
            [(v4_block(2), vtep_mac("n2")), (v4_block(3), vtep_mac("n3"))]
                .into_iter()
                .collect();
        assert_eq!(d.tunnels, want, "own block and unrouted blocks excluded");
        let hostgw = compute(
            &cfg("n1", FabricMode::HostGw),
            &cluster(3, FabricMode::HostGw),
            &links(),
        );
        assert!(hostgw.tunnels.is_empty(), "host-gw has no VTEPs");
    }

    #[test]
    fn vxlan_peer_without_v6_tunnel_address_gets_no_v6_route() {
        let mut view = cluster(2, FabricMode::Vxlan);
        view.blocks
            .insert("fd00:244:2::/122".parse().expect("net"), Some("n2".into()));
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        assert!(
            d.routes
                .iter()
                .all(|r| r.entry.destination.addr().is_ipv4())
        );
        let messages: Vec<_> = d.warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("no IPv6 tunnel address")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("IPv6 blocks of other nodes")),
            "family-wide warning: {messages:?}"
        );
    }

    #[test]
    fn vxlan_skips_broken_peers_with_a_warning() {
        let mut view = cluster(4, FabricMode::Vxlan);
        view.nodes.get_mut("n2").expect("n2").vtep_mac = Some("nonsense".into());
        view.nodes.get_mut("n3").expect("n3").underlay_v4 = None;
        view.nodes.get_mut("n4").expect("n4").fabric = FabricMode::HostGw;
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        assert!(d.fdb.is_empty() && d.neighbours.is_empty());
        assert_eq!(d.routes.len(), 1, "only the own blackhole");
        let nodes: Vec<_> = d
            .warnings
            .iter()
            .filter_map(|w| w.node.as_deref())
            .collect();
        assert_eq!(nodes, ["n2", "n3", "n4"]);
    }

    #[test]
    fn own_record_missing_or_mac_mismatch_is_a_warning() {
        let mut view = cluster(2, FabricMode::Vxlan);
        view.nodes.get_mut("n1").expect("n1").vtep_mac = Some("02:00:00:00:00:01".into());
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        assert!(
            d.warnings[0].message.contains("VTEP MAC"),
            "{:?}",
            d.warnings
        );
        view.nodes.remove("n1");
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        assert!(d.addresses.is_empty());
        assert!(d.warnings[0].message.contains("no record"));
        assert_eq!(d.fdb.len(), 1, "peers are still programmed");
    }

    #[test]
    fn blocks_of_nodes_without_record_and_unclaimed_blocks_get_no_route() {
        let mut view = cluster(2, FabricMode::Vxlan);
        view.nodes.remove("n2");
        view.blocks
            .insert("10.244.9.0/26".parse().expect("net"), None);
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        assert_eq!(d.routes.len(), 1);
        assert_eq!(d.routes[0].entry.kind, RouteKind::Blackhole);
        assert!(d.fdb.is_empty());
    }

    #[test]
    fn a_node_whose_lease_expired_keeps_its_routes_while_it_owns_blocks() {
        for mode in [FabricMode::Vxlan, FabricMode::HostGw] {
            let live = cluster(3, mode);
            let want = compute(&cfg("n1", mode), &live, &links());
            // n2's lease expires: only its last record is left. n3's too, and n3 owns
            // nothing any more (its blocks were reclaimed).
            let mut view = live.clone();
            view.last_records = view.nodes.clone();
            view.nodes.remove("n2");
            view.nodes.remove("n3");
            view.blocks.remove(&v4_block(3));
            let d = compute(&cfg("n1", mode), &view, &links());
            let to = |d: &Desired, node: &str| -> Vec<Route> {
                d.routes
                    .iter()
                    .filter(|r| r.node == node)
                    .map(|r| r.entry.clone())
                    .collect()
            };
            assert_eq!(to(&d, "n2"), to(&want, "n2"), "{mode:?}: n2's routes stay");
            assert!(!to(&d, "n2").is_empty());
            assert!(to(&d, "n3").is_empty(), "{mode:?}: n3 owns no block");
            let fdb: Vec<&str> = d.fdb.iter().map(|f| f.node.as_str()).collect();
            if mode == FabricMode::Vxlan {
                assert_eq!(fdb, ["n2"], "n2's FDB entry stays, n3's goes");
                assert!(d.neighbours.iter().all(|n| n.node == "n2"));
                assert_eq!(d.tunnels.get(&v4_block(2)), Some(&vtep_mac("n2")));
            }
            assert!(d.warnings.is_empty(), "{mode:?}: {:?}", d.warnings);

            // Its blocks reclaimed, n2 is forgotten too.
            view.blocks.remove(&v4_block(2));
            let d = compute(&cfg("n1", mode), &view, &links());
            assert!(to(&d, "n2").is_empty() && d.fdb.is_empty() && d.neighbours.is_empty());

            // A node that only holds a borrowed address is kept for it.
            view.lent.insert(
                v4_block(1),
                [("10.244.1.9".parse().expect("ip"), "n3".to_string())].into(),
            );
            let d = compute(&cfg("n1", mode), &view, &links());
            let host: IpNet = "10.244.1.9/32".parse().expect("net");
            assert!(
                to(&d, "n3").iter().any(|r| r.destination == host),
                "{mode:?}: {:?}",
                d.routes
            );
        }
    }

    #[test]
    fn own_tunnel_addresses_stay_by_the_last_record() {
        let mut view = cluster(2, FabricMode::Vxlan);
        view.last_records = view.nodes.clone();
        view.nodes.remove("n1");
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        assert_eq!(d.addresses, vec![IpAddr::V4(Ipv4Addr::new(10, 244, 1, 1))]);
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn host_gw_routes_via_underlay_on_the_connected_link() {
        let mut view = cluster(3, FabricMode::HostGw);
        // n3 is on another subnet: not reachable without a router.
        view.nodes.get_mut("n3").expect("n3").underlay_v4 = Some(Ipv4Addr::new(10, 9, 0, 3));
        let d = compute(&cfg("n1", FabricMode::HostGw), &view, &links());
        assert!(d.addresses.is_empty() && d.fdb.is_empty() && d.neighbours.is_empty());
        assert_eq!(d.routes.len(), 2);
        let to_n2 = &d.routes[1].entry;
        assert_eq!(to_n2.gateway, Some("10.0.0.2".parse().expect("ip")));
        assert_eq!(to_n2.oif, Some(2));
        assert!(!to_n2.onlink);
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert_eq!(d.warnings[0].node.as_deref(), Some("n3"));
        assert!(d.warnings[0].message.contains("no connected subnet"));
    }

    #[test]
    fn bgp_wants_only_the_own_blackholes() {
        let view = cluster(3, FabricMode::Bgp);
        let d = compute(&cfg("n1", FabricMode::Bgp), &view, &links());
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert!(d.addresses.is_empty() && d.fdb.is_empty() && d.neighbours.is_empty());
        let routes: Vec<_> = d.routes.iter().map(|o| &o.entry).collect();
        assert_eq!(routes, [&Route::blackhole(v4_block(1))]);
    }

    #[test]
    fn mode_none_wants_nothing() {
        let view = cluster(3, FabricMode::Vxlan);
        let d = compute(&cfg("n1", FabricMode::None), &view, &links());
        assert_eq!(d, Desired::default());
    }

    #[test]
    fn a_thousand_nodes() {
        let mut view = cluster(1000, FabricMode::Vxlan);
        for i in 1..=1000u32 {
            // A second, IPv6 block per node, and a tunnel address for it.
            let net = IpNet::new(
                IpAddr::V6(Ipv6Addr::from(0xfd00_0244_u128 << 96 | u128::from(i) << 16)),
                122,
            )
            .expect("net");
            view.blocks.insert(net, Some(format!("n{i}")));
            view.nodes
                .get_mut(&format!("n{i}"))
                .expect("node")
                .tunnel_v6 = Some(Ipv6Addr::from(
                0xfd00_0244_u128 << 96 | u128::from(i) << 16 | 1,
            ));
        }
        let started = std::time::Instant::now();
        let d = compute(&cfg("n1", FabricMode::Vxlan), &view, &links());
        eprintln!("1000 nodes × 2 blocks computed in {:?}", started.elapsed());
        assert!(d.warnings.is_empty(), "{:?}", &d.warnings[..1]);
        assert_eq!(d.fdb.len(), 999);
        assert_eq!(d.neighbours.len(), 999 * 2);
        assert_eq!(d.routes.len(), 2 + 999 * 2);
        let macs: std::collections::HashSet<_> = d.fdb.iter().map(|f| f.entry.mac).collect();
        assert_eq!(macs.len(), 999, "VTEP MACs are distinct");
    }
}
