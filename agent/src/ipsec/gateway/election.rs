//! Which gateway node of a site carries an external peer.
//!
//! Every node computes the answer from the same cluster view, so all agree without
//! talking: among the site's live gateways (live node record, `gateway: true`, an
//! underlay address), the one with the highest rendezvous weight for the peer
//! (highest-random-weight hashing of peer and node names). Peers spread over the
//! gateways of a site; when a gateway dies only the peers it carried move, and when it
//! returns only those come back to it.

use std::net::IpAddr;

use strait_api::types::NodeRecord;

use crate::fabric::desired::ClusterView;

/// The site's gateways that can carry a peer now: live records only (a gateway whose
/// lease expired carries nothing), each with an underlay address.
pub fn live_gateways<'a>(site: &str, view: &'a ClusterView) -> Vec<&'a NodeRecord> {
    view.nodes
        .values()
        .filter(|r| r.site == site)
        .filter(|r| r.ipsec.as_ref().is_some_and(|i| i.gateway))
        .filter(|r| underlay(r).is_some())
        .collect()
}

/// The gateway that carries `peer` of `site`, if the site has a live one.
pub fn active_gateway<'a>(peer: &str, site: &str, view: &'a ClusterView) -> Option<&'a NodeRecord> {
    live_gateways(site, view)
        .into_iter()
        .max_by_key(|r| (weight(peer, &r.name), std::cmp::Reverse(r.name.clone())))
}

/// A node's underlay address, IPv4 first.
pub fn underlay(r: &NodeRecord) -> Option<IpAddr> {
    r.underlay_v4
        .map(IpAddr::V4)
        .or(r.underlay_v6.map(IpAddr::V6))
}

/// The rendezvous weight of `node` for `peer`: FNV-1a over both names, then a 64-bit
/// finaliser so that names differing in one character still spread. Stable across
/// builds and versions by construction (std's hashers promise neither).
fn weight(peer: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in peer.bytes().chain([0]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipsec::gateway::tests::record;

    fn view(nodes: &[NodeRecord]) -> ClusterView {
        let mut v = ClusterView::default();
        for n in nodes {
            v.nodes.insert(n.name.clone(), n.clone());
        }
        v
    }

    #[test]
    fn only_live_gateways_of_the_site_with_an_address_are_candidates() {
        let mut no_addr = record("dc-gw3", "dc", true, 0);
        no_addr.underlay_v4 = None;
        let v = view(&[
            record("dc-gw1", "dc", true, 1),
            record("dc-gw2", "dc", true, 2),
            record("dc-n1", "dc", false, 3),
            record("cloud-gw1", "cloud", true, 4),
            no_addr,
        ]);
        let names: Vec<&str> = live_gateways("dc", &v)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["dc-gw1", "dc-gw2"]);
        let mut dead = v.clone();
        let gw1 = dead.nodes.remove("dc-gw1").unwrap();
        dead.last_records.insert("dc-gw1".into(), gw1);
        let names: Vec<&str> = live_gateways("dc", &dead)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["dc-gw2"],
            "a gateway whose lease expired carries nothing"
        );
        assert!(active_gateway("p", "nowhere", &v).is_none());
    }

    #[test]
    fn every_node_picks_the_same_gateway_and_only_the_dead_ones_peers_move() {
        let gws: Vec<NodeRecord> = (1..=3)
            .map(|i| record(&format!("dc-gw{i}"), "dc", true, i))
            .collect();
        let v = view(&gws);
        let peers: Vec<String> = (0..300).map(|i| format!("peer-{i}")).collect();
        let before: Vec<String> = peers
            .iter()
            .map(|p| active_gateway(p, "dc", &v).unwrap().name.clone())
            .collect();
        for g in &gws {
            let carried = before.iter().filter(|b| **b == g.name).count();
            assert!(carried > 60, "{} carries {carried} of 300", g.name);
        }
        let mut without = v.clone();
        without.nodes.remove("dc-gw2");
        for (p, was) in peers.iter().zip(&before) {
            let now = &active_gateway(p, "dc", &without).unwrap().name;
            if was != "dc-gw2" {
                assert_eq!(now, was, "{p} moved although its gateway lives");
            } else {
                assert_ne!(now, "dc-gw2");
            }
        }
        // And it comes back to the same gateway when the dead one returns.
        for (p, was) in peers.iter().zip(&before) {
            assert_eq!(&active_gateway(p, "dc", &v).unwrap().name, was);
        }
    }

    #[test]
    fn the_weight_is_stable_across_builds() {
        assert_ne!(weight("onprem", "dc-gw1"), weight("onprem", "dc-gw2"));
        assert_ne!(weight("onprem", "dc-gw1"), weight("onprem\0dc", "gw1"));
        // Agents of different versions must agree: the value is pinned (computed
        // independently with the same FNV-1a and splitmix64 constants).
        assert_eq!(weight("onprem", "dc-gw1"), 0x0291_37a6_a60d_4551);
    }
}
