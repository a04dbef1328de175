//! Who this node peers with (docs/bgp.md "Who peers with whom"), derived from the node
//! records and `bgp/peers/`. Pure: recomputed on every change, and the speaker is
//! given the whole list ([`strait_bgp::speaker::Speaker::set_peers`] adds, removes and
//! restarts sessions to match).
//!
//! * No node is a route reflector: full mesh among the nodes running the bgp fabric,
//!   unless the mesh is off (`--no-bgp-node-mesh`, Calico's nodeToNodeMeshEnabled):
//!   then no node sessions at all, only external peers (a ToR per rack).
//! * Some are: a client peers with every RR; an RR peers with every client (marked
//!   `rr_client`) and with the other RRs as ordinary iBGP peers.
//! * External peers (`bgp/peers/<name>`): every node peers with those without `node`;
//!   only node `node` with the others.
//!
//! A node session runs over the underlay family both ends have (IPv4 first). What keeps
//! a peer out is a [`Warning`], never an error: one bad record must not cost the other
//! sessions.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use strait_api::bgp::{BgpRole, ExternalPeer, NodeBgp, PeerKind, PeerOptions};
use strait_api::routes::Warning;
use strait_api::{FabricMode, NodeRecord};

use crate::node::Underlay;

/// One peer this node should have a session with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node name, or the `bgp/peers/` name.
    pub name: String,
    pub kind: PeerKind,
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    /// We reflect routes to it (we are an RR, it is an iBGP client).
    pub rr_client: bool,
    /// Our underlay address of the session's family (the source of our connections).
    pub local: Option<IpAddr>,
    pub md5_key: Option<String>,
    pub bfd: bool,
    /// An external peer's session and policy settings (defaults for nodes).
    pub options: PeerOptions,
}

/// Everything the derivation looks at.
#[derive(Debug, Clone)]
pub struct PeeringInput<'a> {
    pub node: &'a str,
    pub own: &'a NodeBgp,
    pub underlay: &'a Underlay,
    /// BFD on node-to-node sessions (`--bgp-bfd`).
    pub bfd: bool,
    /// Full mesh when no node is a route reflector (`--bgp-node-mesh`). Route
    /// reflector sessions do not depend on it.
    pub node_mesh: bool,
    pub nodes: &'a BTreeMap<String, NodeRecord>,
    pub external: &'a BTreeMap<String, ExternalPeer>,
}

/// The peers of `input.node`, sorted by address, and the warnings.
pub fn peers(input: &PeeringInput<'_>) -> (Vec<Peer>, Vec<Warning>) {
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    // The bgp nodes other than this one, with their attributes.
    let mut others = Vec::new();
    for (name, record) in input.nodes {
        if name == input.node || record.fabric != FabricMode::Bgp {
            continue;
        }
        match &record.bgp {
            Some(bgp) => others.push((name, record, bgp)),
            None => warnings.push(Warning::node(
                name,
                "runs the bgp fabric but its record has no bgp attributes: no session".into(),
            )),
        }
    }
    let any_rr =
        input.own.role == BgpRole::Rr || others.iter().any(|(_, _, b)| b.role == BgpRole::Rr);
    for (name, record, bgp) in others {
        let kind = match (any_rr, input.own.role, bgp.role) {
            (false, _, _) if !input.node_mesh => continue,
            (false, _, _) => PeerKind::Node,
            (true, BgpRole::Client, BgpRole::Client) => continue,
            (true, BgpRole::Rr, BgpRole::Client) => PeerKind::RrClient,
            (true, _, BgpRole::Rr) => PeerKind::Rr,
        };
        let session = match (input.underlay, record) {
            (
                Underlay { v4: Some(v4), .. },
                NodeRecord {
                    underlay_v4: Some(peer),
                    ..
                },
            ) => Some((IpAddr::V4(*v4), IpAddr::V4(*peer))),
            (
                Underlay { v6: Some(v6), .. },
                NodeRecord {
                    underlay_v6: Some(peer),
                    ..
                },
            ) => Some((IpAddr::V6(*v6), IpAddr::V6(*peer))),
            _ => None,
        };
        let Some((local, address)) = session else {
            warnings.push(Warning::node(
                name,
                "shares no underlay address family with this node: no session".into(),
            ));
            continue;
        };
        out.push(Peer {
            name: name.clone(),
            kind,
            address,
            port: bgp.port,
            asn: bgp.asn,
            // Reflection is iBGP's; an eBGP neighbour gets our best paths anyway.
            rr_client: kind == PeerKind::RrClient && bgp.asn == input.own.asn,
            local: Some(local),
            md5_key: None,
            bfd: input.bfd,
            options: PeerOptions::default(),
        });
    }
    for (name, peer) in input.external {
        if peer.node.as_deref().is_some_and(|n| n != input.node) {
            continue;
        }
        let local = match peer.address {
            IpAddr::V4(_) => input.underlay.v4.map(IpAddr::V4),
            IpAddr::V6(_) => input.underlay.v6.map(IpAddr::V6),
        };
        out.push(Peer {
            name: name.clone(),
            kind: PeerKind::External,
            address: peer.address,
            port: peer.port,
            asn: peer.asn,
            rr_client: false,
            local,
            md5_key: peer.md5_key.clone(),
            bfd: peer.bfd,
            options: peer.options.clone(),
        });
    }
    // One session per address: the first (nodes before external peers) wins.
    let mut seen = HashSet::new();
    out.retain(|p| {
        let first = seen.insert(p.address);
        if !first {
            warnings.push(Warning::node(
                &p.name,
                format!(
                    "{} is already a peer under another name: no second session",
                    p.address
                ),
            ));
        }
        first
    });
    out.sort_by_key(|p| p.address);
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn bgp(i: u8, asn: u32, role: BgpRole) -> NodeBgp {
        NodeBgp {
            asn,
            role,
            cluster_id: None,
            router_id: Ipv4Addr::new(10, 0, 0, i),
            port: 179,
        }
    }

    fn record(i: u8, asn: u32, role: BgpRole) -> NodeRecord {
        NodeRecord {
            name: format!("n{i}"),
            underlay_v4: Some(Ipv4Addr::new(10, 0, 0, i)),
            underlay_v6: Some(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, u16::from(i))),
            fabric: FabricMode::Bgp,
            vtep_mac: None,
            vxlan_vni: None,
            vxlan_port: None,
            tunnel_v4: None,
            tunnel_v6: None,
            agent_version: "test".into(),
            started: 0,
            bgp: Some(bgp(i, asn, role)),
            site: strait_api::ipsec::DEFAULT_SITE.into(),
            ipsec: None,
        }
    }

    fn underlay(i: u8) -> Underlay {
        Underlay {
            iface: None,
            v4: Some(Ipv4Addr::new(10, 0, 0, i)),
            v6: Some(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, u16::from(i))),
        }
    }

    /// Nodes n1..=n<roles.len()> of AS 64512 with these roles.
    fn cluster(roles: &[BgpRole]) -> BTreeMap<String, NodeRecord> {
        roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let r = record(i as u8 + 1, 64512, *role);
                (r.name.clone(), r)
            })
            .collect()
    }

    fn derive(
        i: u8,
        nodes: &BTreeMap<String, NodeRecord>,
        external: &BTreeMap<String, ExternalPeer>,
    ) -> (Vec<Peer>, Vec<Warning>) {
        let name = format!("n{i}");
        let own = nodes[&name].bgp.clone().expect("bgp");
        peers(&PeeringInput {
            node: &name,
            own: &own,
            underlay: &underlay(i),
            bfd: true,
            node_mesh: true,
            nodes,
            external,
        })
    }

    fn summary(peers: &[Peer]) -> Vec<(String, PeerKind, bool)> {
        peers
            .iter()
            .map(|p| (p.name.clone(), p.kind, p.rr_client))
            .collect()
    }

    #[test]
    fn full_mesh_without_route_reflectors() {
        let nodes = cluster(&[BgpRole::Client; 4]);
        let (peers, warnings) = derive(2, &nodes, &BTreeMap::new());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            summary(&peers),
            [
                ("n1".into(), PeerKind::Node, false),
                ("n3".into(), PeerKind::Node, false),
                ("n4".into(), PeerKind::Node, false)
            ]
        );
        let p = &peers[0];
        assert_eq!(p.address, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p.local, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        assert_eq!((p.asn, p.port, p.bfd), (64512, 179, true));
    }

    #[test]
    fn two_route_reflectors_and_their_clients() {
        use BgpRole::{Client, Rr};
        let nodes = cluster(&[Rr, Rr, Client, Client, Client]);
        // A client peers with both RRs only.
        let (peers, _) = derive(4, &nodes, &BTreeMap::new());
        assert_eq!(
            summary(&peers),
            [
                ("n1".into(), PeerKind::Rr, false),
                ("n2".into(), PeerKind::Rr, false)
            ]
        );
        // An RR: the other RR as a non-client, every client as rr_client.
        let (peers, _) = derive(1, &nodes, &BTreeMap::new());
        assert_eq!(
            summary(&peers),
            [
                ("n2".into(), PeerKind::Rr, false),
                ("n3".into(), PeerKind::RrClient, true),
                ("n4".into(), PeerKind::RrClient, true),
                ("n5".into(), PeerKind::RrClient, true)
            ]
        );
    }

    #[test]
    fn mixed_asns_peer_as_ebgp_without_reflection() {
        let mut nodes = cluster(&[BgpRole::Rr, BgpRole::Client, BgpRole::Client]);
        let n3 = record(3, 65003, BgpRole::Client);
        nodes.insert("n3".into(), n3);
        let (peers, _) = derive(1, &nodes, &BTreeMap::new());
        let n3 = peers.iter().find(|p| p.name == "n3").expect("n3");
        assert_eq!(n3.asn, 65003, "eBGP: the peer's own AS");
        assert!(!n3.rr_client, "reflection is for iBGP clients only");
        let n2 = peers.iter().find(|p| p.name == "n2").expect("n2");
        assert!(n2.rr_client);
    }

    #[test]
    fn external_peers_for_every_node_or_one() {
        let nodes = cluster(&[BgpRole::Client; 2]);
        let tor = |node: Option<&str>, address: &str| {
            let mut p = ExternalPeer::new(address.parse().expect("ip"), 65001);
            p.node = node.map(String::from);
            p.md5_key = Some("secret".into());
            p.options.passive = node == Some("n1");
            p
        };
        let external: BTreeMap<String, ExternalPeer> = [
            ("core".to_string(), tor(None, "10.1.0.254")),
            ("tor-a".to_string(), tor(Some("n1"), "10.1.0.1")),
            ("tor-b".to_string(), tor(Some("n2"), "fd99::fe")),
        ]
        .into();
        let (peers, _) = derive(1, &nodes, &external);
        let names: Vec<_> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["n2", "tor-a", "core"]);
        let tor_a = &peers[1];
        assert_eq!(tor_a.kind, PeerKind::External);
        assert_eq!(tor_a.md5_key.as_deref(), Some("secret"));
        assert!(!tor_a.bfd);
        assert!(tor_a.options.passive, "the stored options come along");
        let (peers, _) = derive(2, &nodes, &external);
        let tor_b = peers.iter().find(|p| p.name == "tor-b").expect("tor-b");
        assert_eq!(
            tor_b.local,
            Some(IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2))),
            "an IPv6 peer is reached from the IPv6 underlay address"
        );
        assert!(!peers.iter().any(|p| p.name == "tor-a"));
    }

    #[test]
    fn nodes_of_other_fabrics_or_without_a_common_family_get_no_session() {
        let mut nodes = cluster(&[BgpRole::Client; 4]);
        nodes.get_mut("n2").expect("n2").fabric = FabricMode::Vxlan;
        nodes.get_mut("n3").expect("n3").bgp = None;
        let n4 = nodes.get_mut("n4").expect("n4");
        n4.underlay_v4 = None;
        n4.underlay_v6 = None;
        let (peers, warnings) = derive(1, &nodes, &BTreeMap::new());
        assert!(peers.is_empty(), "{peers:?}");
        let warned: Vec<_> = warnings.iter().filter_map(|w| w.node.as_deref()).collect();
        assert_eq!(warned, ["n3", "n4"]);
    }

    #[test]
    fn without_the_node_mesh_only_external_peers_and_route_reflectors() {
        let nodes = cluster(&[BgpRole::Client; 3]);
        let mut tor = ExternalPeer::new("10.0.0.253".parse().expect("ip"), 65000);
        tor.node = Some("n1".into());
        let external: BTreeMap<String, ExternalPeer> = [("tor-a".to_string(), tor)].into();
        let no_mesh = |i: u8, nodes: &BTreeMap<String, NodeRecord>| {
            let name = format!("n{i}");
            let own = nodes[&name].bgp.clone().expect("bgp");
            peers(&PeeringInput {
                node: &name,
                own: &own,
                underlay: &underlay(i),
                bfd: true,
                node_mesh: false,
                nodes,
                external: &external,
            })
        };
        let (peers, warnings) = no_mesh(1, &nodes);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            summary(&peers),
            [("tor-a".into(), PeerKind::External, false)]
        );
        let (peers, _) = no_mesh(2, &nodes);
        assert!(peers.is_empty(), "no ToR for n2, and no mesh: {peers:?}");
        // With route reflectors the mesh is off anyway: RR sessions still run.
        let rr = cluster(&[BgpRole::Rr, BgpRole::Client, BgpRole::Client]);
        let (peers, _) = no_mesh(2, &rr);
        assert_eq!(summary(&peers), [("n1".into(), PeerKind::Rr, false)]);
        let (peers, _) = no_mesh(1, &rr);
        assert_eq!(
            summary(&peers),
            [
                ("n2".into(), PeerKind::RrClient, true),
                ("n3".into(), PeerKind::RrClient, true),
                ("tor-a".into(), PeerKind::External, false)
            ]
        );
    }

    #[test]
    fn an_ipv6_only_underlay_peers_over_ipv6() {
        let mut nodes = cluster(&[BgpRole::Client; 2]);
        nodes.get_mut("n2").expect("n2").underlay_v4 = None;
        let (peers, _) = derive(1, &nodes, &BTreeMap::new());
        assert_eq!(
            peers[0].address,
            IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2))
        );
    }
}
