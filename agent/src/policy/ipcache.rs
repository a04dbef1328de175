//! The ipcache: every address the cluster knows, mapped to the identity a packet
//! from (or to) it is classified by, on every node alike — each endpoint's addresses
//! to its identity (from the endpoint records of all nodes), other nodes' underlay
//! and tunnel addresses to [`IDENTITY_REMOTE_NODE`], and this host's own addresses
//! (every address in the agent's network namespace) to [`IDENTITY_HOST`]. What the
//! ipcache does not know is [`strait_policy::tables::IDENTITY_WORLD`] in the
//! datapath. The reconcile loop hands the result to `Dataplane::sync_ipcache`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_policy::tables::{IDENTITY_HOST, IDENTITY_REMOTE_NODE};

use super::cluster::Cluster;

/// The wanted ipcache. Later sources win: remote nodes, then endpoints (an address
/// an endpoint holds is that endpoint's), then this host's own addresses.
/// Endpoints whose record names no identity yet are left out (the world) until it
/// does.
pub fn wanted(cluster: &Cluster, own_node: &str, host_addrs: &[IpAddr]) -> BTreeMap<IpNet, u32> {
    let mut out = BTreeMap::new();
    for (name, record) in cluster.all_nodes() {
        if name == own_node {
            continue;
        }
        let addrs = [
            record.underlay_v4.map(IpAddr::V4),
            record.underlay_v6.map(IpAddr::V6),
            record.tunnel_v4.map(IpAddr::V4),
            record.tunnel_v6.map(IpAddr::V6),
        ];
        for a in addrs.into_iter().flatten() {
            out.insert(IpNet::from(a), IDENTITY_REMOTE_NODE);
        }
    }
    for e in cluster.endpoints.values() {
        if let Some(id) = e.facts.identity {
            for net in &e.facts.ips {
                out.insert(*net, id);
            }
        }
    }
    for a in host_addrs {
        out.insert(IpNet::from(*a), IDENTITY_HOST);
    }
    out
}

#[cfg(test)]
mod tests {
    use strait_api::{FabricMode, NodeRecord};

    use super::*;
    use crate::policy::cluster::EndpointEntry;
    use crate::policy::endpoints::EndpointFacts;

    fn node(name: &str, underlay: &str, tunnel: Option<&str>) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            underlay_v4: Some(underlay.parse().unwrap()),
            underlay_v6: None,
            fabric: FabricMode::Vxlan,
            vtep_mac: None,
            vxlan_vni: None,
            vxlan_port: None,
            tunnel_v4: tunnel.map(|t| t.parse().unwrap()),
            tunnel_v6: None,
            agent_version: "t".into(),
            started: 0,
            bgp: None,
            site: strait_api::ipsec::DEFAULT_SITE.into(),
            ipsec: None,
        }
    }

    fn ep(node: &str, ip: &str, identity: Option<u32>) -> EndpointEntry {
        EndpointEntry {
            facts: EndpointFacts {
                id: format!("n.{ip}.eth0"),
                node: node.into(),
                host_ifname: "strait0".into(),
                ips: vec![ip.parse().unwrap()],
                namespace: "default".into(),
                labels: Default::default(),
                named_ports: vec![],
                identity,
            },
            mod_revision: 1,
            raw: vec![],
        }
    }

    #[test]
    fn endpoints_of_every_node_remote_nodes_and_own_addresses() {
        let mut c = Cluster::default();
        c.nodes
            .insert("a".into(), node("a", "192.0.2.1", Some("10.1.0.1")));
        c.last_nodes
            .insert("b".into(), node("b", "192.0.2.2", Some("10.1.1.1")));
        c.endpoints
            .insert("k1".into(), ep("a", "10.1.0.5/32", Some(300)));
        c.endpoints
            .insert("k2".into(), ep("b", "10.1.1.5/32", Some(301)));
        c.endpoints
            .insert("k3".into(), ep("b", "10.1.1.6/32", None));
        let host: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let got = wanted(&c, "a", &host);
        let want: BTreeMap<IpNet, u32> = [
            ("10.1.0.5/32", 300),
            ("10.1.1.5/32", 301),
            ("192.0.2.2/32", IDENTITY_REMOTE_NODE),
            ("10.1.1.1/32", IDENTITY_REMOTE_NODE),
            ("192.0.2.1/32", IDENTITY_HOST),
            ("127.0.0.1/32", IDENTITY_HOST),
        ]
        .into_iter()
        .map(|(n, id)| (n.parse().unwrap(), id))
        .collect();
        assert_eq!(
            got, want,
            "own node's record is not a remote node; no identity, no entry"
        );
    }
}
