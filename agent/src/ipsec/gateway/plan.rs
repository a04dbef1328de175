//! What each node does for each external peer, from the cluster view, the peers in the
//! store and the node's pools: pure, so every case is a unit test.
//!
//! - The peer's **active gateway** (see [`super::election`]) runs its IKE SA, steers
//!   the peer's networks into the ESP datapath, and offers the site's container pools
//!   plus the peer's `local_networks` as its traffic selectors.
//! - Every **other node of the site** routes the peer's networks through the active
//!   gateway's underlay address, so its containers reach them too.
//! - While the site has **no live gateway**, its nodes route the peer's networks to
//!   `prohibit`: traffic meant for the tunnel fails closed instead of taking the
//!   default route in clear.
//! - Nodes of **other sites** do nothing for the peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::gateway::ExternalPeer;

use super::election::{active_gateway, underlay};
use super::learned::Learned;
use crate::fabric::desired::ClusterView;
use crate::ipsec::steering::{FAIL_CLOSED_METRIC, IPSEC_TABLE, TUN_METRIC};
use crate::netlink::{TableRoute, TableRouteKind};

/// This node's part for one external peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This node carries the peer's IKE and ESP, from its underlay address `local`.
    Active { local: IpAddr },
    /// Another node of the site carries it: the peer's networks go there.
    Via { gateway: String, next_hop: IpAddr },
    /// The site has no live gateway: the peer's networks are refused.
    NoGateway,
}

/// One external peer as this node acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    pub peer: ExternalPeer,
    pub role: Role,
    /// Our traffic selectors: the pools, the peer's `local_networks` and, with BGP, our
    /// session address; sorted.
    pub local_ts: Vec<IpNet>,
    /// Theirs: the peer's `remote_networks`; with BGP "any" of each family in use (the
    /// routes decide what enters the tunnel, since learned networks are not known when
    /// the Child SA is negotiated); sorted.
    pub remote_ts: Vec<IpNet>,
    /// What this node routes to the peer: its `remote_networks`, the networks its
    /// active gateway learned over BGP, and on that gateway the BGP router itself;
    /// while the site has no gateway, the `remote_networks` alone (refused). Sorted.
    pub routed: Vec<IpNet>,
}

/// A route this node wants for the external peers' networks (outside the steering,
/// which the active gateway uses for its own peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GatewayRoute {
    Via { dst: IpNet, next_hop: IpAddr },
    Prohibit { dst: IpNet },
}

/// The peers node `node` has a part in. `pools` are the node's container pools (the
/// site's, as its agents are configured); `learned` what gateways learned over BGP.
pub fn plan(
    node: &str,
    view: &ClusterView,
    peers: &BTreeMap<String, ExternalPeer>,
    pools: &[IpNet],
    learned: &Learned,
) -> BTreeMap<String, PeerPlan> {
    let Some(me) = view.nodes.get(node) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, peer) in peers {
        if peer.site != me.site {
            continue;
        }
        let role = match active_gateway(name, &peer.site, view) {
            Some(gw) if gw.name == node => match local_address(me, peer) {
                Some(local) => Role::Active { local },
                None => Role::NoGateway,
            },
            Some(gw) => match underlay(gw) {
                Some(next_hop) => Role::Via {
                    gateway: gw.name.clone(),
                    next_hop,
                },
                None => Role::NoGateway,
            },
            None => Role::NoGateway,
        };
        let mut local_ts: Vec<IpNet> = pools.iter().chain(&peer.local_networks).copied().collect();
        local_ts.extend(peer.bgp.as_ref().map(|b| IpNet::from(b.local_address)));
        local_ts.sort();
        local_ts.dedup();
        let mut remote_ts = peer.remote_networks.clone();
        if let Some(b) = &peer.bgp {
            let families = peer
                .remote_networks
                .iter()
                .map(|n| n.addr())
                .chain([b.address]);
            remote_ts = families.map(any_of_family).collect();
        }
        remote_ts.sort();
        remote_ts.dedup();
        let mut routed = peer.remote_networks.clone();
        let carrier = match &role {
            Role::Active { .. } => Some(node),
            Role::Via { gateway, .. } => Some(gateway.as_str()),
            Role::NoGateway => None,
        };
        if let Some(gw) = carrier {
            let got = learned.get(name).and_then(|l| l.get(gw));
            routed.extend(
                got.into_iter()
                    .flatten()
                    .filter(|n| routable(n, &local_ts, view)),
            );
        }
        if let (Role::Active { .. }, Some(b)) = (&role, &peer.bgp) {
            routed.push(IpNet::from(b.address));
        }
        routed.sort();
        routed.dedup();
        out.insert(
            name.clone(),
            PeerPlan {
                peer: peer.clone(),
                role,
                local_ts,
                remote_ts,
                routed,
            },
        );
    }
    out
}

/// `0.0.0.0/0` or `::/0`, as `ip` has it.
fn any_of_family(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::V4(Default::default()),
        IpAddr::V6(_) => IpNet::V6(Default::default()),
    }
}

/// Whether a learned network may be routed to the peer: not the default route, not
/// overlapping our own traffic selectors, and holding no node's underlay address (a
/// router must not pull the cluster's own traffic, the store's included, into the
/// tunnel).
fn routable(net: &IpNet, local_ts: &[IpNet], view: &ClusterView) -> bool {
    clear_of(net, local_ts)
        && !view.nodes.values().any(|n| {
            n.underlay_v4.is_some_and(|a| net.contains(&IpAddr::V4(a)))
                || n.underlay_v6.is_some_and(|a| net.contains(&IpAddr::V6(a)))
        })
}

/// Whether a learned network is neither the default route nor overlapping any of
/// `ours` (either holding the other): the check the BGP session makes before it
/// keeps a network, and every node again before it routes one.
pub fn clear_of(net: &IpNet, ours: &[IpNet]) -> bool {
    net.prefix_len() > 0 && !ours.iter().any(|o| o.contains(net) || net.contains(o))
}

/// Our IKE address towards `peer`: the underlay address of the peer's family (IPv4
/// when the peer only answers and has no address).
fn local_address(me: &strait_api::types::NodeRecord, peer: &ExternalPeer) -> Option<IpAddr> {
    match peer.address {
        Some(IpAddr::V6(_)) => me.underlay_v6.map(IpAddr::V6),
        Some(IpAddr::V4(_)) => me.underlay_v4.map(IpAddr::V4),
        None => underlay(me),
    }
}

/// The routes the plans want on this node: through the gateway, or refused. A network
/// of the wrong family for the next hop is refused too (it cannot be reached through
/// that gateway, and must not leave in clear).
pub fn routes(plans: &BTreeMap<String, PeerPlan>) -> Vec<GatewayRoute> {
    let mut out = Vec::new();
    for p in plans.values() {
        for dst in &p.routed {
            match &p.role {
                Role::Active { .. } => {}
                Role::Via { next_hop, .. } if same_family(dst, next_hop) => {
                    out.push(GatewayRoute::Via {
                        dst: *dst,
                        next_hop: *next_hop,
                    })
                }
                Role::Via { .. } | Role::NoGateway => {
                    out.push(GatewayRoute::Prohibit { dst: *dst })
                }
            }
        }
    }
    out.sort();
    out.dedup_by_key(|r| match r {
        GatewayRoute::Via { dst, .. } | GatewayRoute::Prohibit { dst } => *dst,
    });
    out
}

/// The IPsec table's routes for `routes`: through the gateway with a `prohibit` twin
/// (as the steering's TUN routes have, so that a route the kernel drops when its next
/// hop becomes unreachable fails closed), or `prohibit` alone.
pub fn table_routes(routes: &[GatewayRoute]) -> BTreeSet<TableRoute> {
    let mut out = BTreeSet::new();
    for r in routes {
        let dst = match *r {
            GatewayRoute::Via { dst, next_hop } => {
                out.insert(TableRoute {
                    table: IPSEC_TABLE,
                    destination: dst.trunc(),
                    kind: TableRouteKind::Via(next_hop),
                    metric: TUN_METRIC,
                });
                dst
            }
            GatewayRoute::Prohibit { dst } => dst,
        };
        out.insert(TableRoute {
            table: IPSEC_TABLE,
            destination: dst.trunc(),
            kind: TableRouteKind::Prohibit,
            metric: FAIL_CLOSED_METRIC,
        });
    }
    out
}

fn same_family(net: &IpNet, ip: &IpAddr) -> bool {
    matches!(
        (net, ip),
        (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_))
    )
}

#[cfg(test)]
mod tests {
    use strait_api::gateway::{Initiate, PeerAuth};

    use super::*;
    use crate::ipsec::gateway::tests::record;

    fn peer(name: &str, site: &str, remote: &[&str]) -> ExternalPeer {
        ExternalPeer {
            name: name.into(),
            site: site.into(),
            address: Some("198.51.100.7".parse().unwrap()),
            initiate: Initiate::Both,
            auth: PeerAuth::Psk {
                secret: Some("0123456789abcdef".into()),
                secret_file: None,
            },
            local_id: None,
            remote_id: None,
            local_networks: vec!["172.31.0.0/24".parse().unwrap()],
            remote_networks: remote.iter().map(|s| s.parse().unwrap()).collect(),
            bgp: None,
        }
    }

    fn cluster() -> ClusterView {
        let mut v = ClusterView::default();
        for r in [
            record("dc-gw1", "dc", true, 1),
            record("dc-n1", "dc", false, 2),
            record("cloud-n1", "cloud", false, 3),
        ] {
            v.nodes.insert(r.name.clone(), r);
        }
        v
    }

    fn peers() -> BTreeMap<String, ExternalPeer> {
        BTreeMap::from([(
            "onprem".to_string(),
            peer("onprem", "dc", &["192.168.50.0/24", "fd50::/64"]),
        )])
    }

    #[test]
    fn the_gateway_carries_the_peer_with_pools_and_local_networks_as_selectors() {
        let pools: Vec<IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
        let p = &plan("dc-gw1", &cluster(), &peers(), &pools, &Learned::new())["onprem"];
        assert_eq!(
            p.role,
            Role::Active {
                local: "10.0.0.1".parse().unwrap()
            }
        );
        let ts: Vec<String> = p.local_ts.iter().map(|n| n.to_string()).collect();
        assert_eq!(ts, ["10.244.0.0/16", "172.31.0.0/24"]);
        assert!(
            routes(&plan(
                "dc-gw1",
                &cluster(),
                &peers(),
                &pools,
                &Learned::new()
            ))
            .is_empty()
        );
    }

    #[test]
    fn other_nodes_of_the_site_route_through_the_gateway_and_other_sites_do_nothing() {
        let plans = plan("dc-n1", &cluster(), &peers(), &[], &Learned::new());
        assert_eq!(
            plans["onprem"].role,
            Role::Via {
                gateway: "dc-gw1".into(),
                next_hop: "10.0.0.1".parse().unwrap()
            }
        );
        // The gateway has no IPv6 underlay: the IPv6 network fails closed.
        assert_eq!(
            routes(&plans),
            [
                GatewayRoute::Via {
                    dst: "192.168.50.0/24".parse().unwrap(),
                    next_hop: "10.0.0.1".parse().unwrap()
                },
                GatewayRoute::Prohibit {
                    dst: "fd50::/64".parse().unwrap()
                },
            ]
        );
        let table = table_routes(&routes(&plans));
        assert_eq!(
            table.len(),
            3,
            "via + prohibit twin, and prohibit alone: {table:?}"
        );
        assert!(table.iter().any(
            |r| r.kind == TableRouteKind::Via("10.0.0.1".parse().unwrap())
                && r.metric == TUN_METRIC
        ));
        assert!(plan("cloud-n1", &cluster(), &peers(), &[], &Learned::new()).is_empty());
        assert!(plan("unknown", &cluster(), &peers(), &[], &Learned::new()).is_empty());
    }

    #[test]
    fn without_a_live_gateway_the_sites_nodes_refuse_the_peers_networks() {
        let mut v = cluster();
        let gw = v.nodes.remove("dc-gw1").unwrap();
        v.last_records.insert(gw.name.clone(), gw);
        let plans = plan("dc-n1", &v, &peers(), &[], &Learned::new());
        assert_eq!(plans["onprem"].role, Role::NoGateway);
        assert_eq!(
            routes(&plans),
            [
                GatewayRoute::Prohibit {
                    dst: "192.168.50.0/24".parse().unwrap()
                },
                GatewayRoute::Prohibit {
                    dst: "fd50::/64".parse().unwrap()
                },
            ]
        );
    }

    #[test]
    fn a_second_gateway_takes_over_when_the_first_dies() {
        let mut v = cluster();
        let gw2 = record("dc-gw2", "dc", true, 4);
        v.nodes.insert(gw2.name.clone(), gw2);
        let active = |v: &ClusterView| {
            ["dc-gw1", "dc-gw2"]
                .into_iter()
                .find(|n| {
                    matches!(
                        plan(n, v, &peers(), &[], &Learned::new())["onprem"].role,
                        Role::Active { .. }
                    )
                })
                .map(str::to_string)
        };
        let first = active(&v).expect("one gateway is active");
        let mut dead = v.clone();
        dead.nodes.remove(&first);
        let second = active(&dead).expect("the other takes over");
        assert_ne!(first, second);
        let via = plan("dc-n1", &dead, &peers(), &[], &Learned::new());
        assert!(matches!(&via["onprem"].role, Role::Via { gateway, .. } if *gateway == second));
    }

    fn bgp_peer() -> BTreeMap<String, ExternalPeer> {
        let mut p = peer("onprem", "dc", &["192.168.50.0/24"]);
        p.bgp = Some(strait_api::gateway::PeerBgp {
            address: "192.168.50.20".parse().unwrap(),
            asn: 64600,
            local_address: "169.254.100.1".parse().unwrap(),
            local_asn: None,
        });
        BTreeMap::from([("onprem".to_string(), p)])
    }

    fn learned(node: &str, nets: &[&str]) -> Learned {
        Learned::from([(
            "onprem".to_string(),
            BTreeMap::from([(
                node.to_string(),
                nets.iter().map(|n| n.parse().unwrap()).collect(),
            )]),
        )])
    }

    fn strs(nets: &[IpNet]) -> Vec<String> {
        nets.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn with_bgp_the_selectors_are_any_and_the_routes_decide() {
        let pools: Vec<IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
        let mut l = learned("dc-gw1", &["192.168.60.0/24"]);
        // A stale record of a gateway that no longer carries the peer.
        l.get_mut("onprem")
            .unwrap()
            .insert("dc-gw9".into(), vec!["192.168.99.0/24".parse().unwrap()]);
        let gw = &plan("dc-gw1", &cluster(), &bgp_peer(), &pools, &l)["onprem"];
        assert_eq!(
            strs(&gw.local_ts),
            ["10.244.0.0/16", "169.254.100.1/32", "172.31.0.0/24"]
        );
        assert_eq!(strs(&gw.remote_ts), ["0.0.0.0/0"]);
        assert_eq!(
            strs(&gw.routed),
            ["192.168.50.0/24", "192.168.50.20/32", "192.168.60.0/24"]
        );
        let n1 = plan("dc-n1", &cluster(), &bgp_peer(), &pools, &l);
        assert_eq!(
            strs(&n1["onprem"].routed),
            ["192.168.50.0/24", "192.168.60.0/24"],
            "the router itself is only the gateway's business"
        );
        assert_eq!(routes(&n1).len(), 2);
        let mut dead = cluster();
        dead.nodes.remove("dc-gw1");
        let none = plan("dc-n1", &dead, &bgp_peer(), &pools, &l);
        assert_eq!(
            strs(&none["onprem"].routed),
            ["192.168.50.0/24"],
            "learned networks go with the gateway; the static ones fail closed"
        );
    }

    #[test]
    fn a_router_cannot_pull_the_sites_own_traffic_into_the_tunnel() {
        let pools: Vec<IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
        let l = learned(
            "dc-gw1",
            &[
                "0.0.0.0/0",
                "10.0.0.0/24",
                "10.244.7.0/24",
                "10.0.0.0/8",
                "169.254.0.0/16",
                "192.168.61.0/24",
            ],
        );
        let p = &plan("dc-n1", &cluster(), &bgp_peer(), &pools, &l)["onprem"];
        assert_eq!(strs(&p.routed), ["192.168.50.0/24", "192.168.61.0/24"]);
    }
}
