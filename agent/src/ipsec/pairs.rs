//! Which peers this node encrypts with: pure, from the mode and the node records, and
//! recomputed on every change of either. [`plan`] adds what the datapath and the
//! steering need of each: the address its ESP and IKE go to, and the prefixes behind
//! it (its underlay addresses, its blocks, the addresses it borrowed from others').

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::NodeRecord;
use strait_api::ipsec::{ED25519_PUBLIC_KEY_LEN, IpsecMode};

use crate::fabric::desired::ClusterView;

/// A node this node must talk to through IPsec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedPeer {
    pub name: String,
    pub site: String,
    /// The key its IKE_AUTH must be signed with; `Err` says why the record has none
    /// that can be used (an agent older than IPsec, a record that lies). Such a peer
    /// is still listed: traffic to it is dropped, never sent in clear.
    pub ed25519: Result<[u8; ED25519_PUBLIC_KEY_LEN], String>,
}

/// The peers of `local` that `mode` encrypts with, by name. A pair whose sites need
/// encryption is listed whatever its records say of keys, so that a missing key
/// fails closed.
pub fn encrypted_peers(
    mode: IpsecMode,
    local: &NodeRecord,
    nodes: &[NodeRecord],
) -> Vec<EncryptedPeer> {
    let mut peers: Vec<EncryptedPeer> = nodes
        .iter()
        .filter(|n| n.name != local.name && mode.encrypts(&local.site, &n.site))
        .map(|n| EncryptedPeer {
            name: n.name.clone(),
            site: n.site.clone(),
            ed25519: match &n.ipsec {
                Some(rec) => rec.public_key(),
                None => Err("its record has no IPsec key (an agent older than IPsec)".into()),
            },
        })
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers
}

/// A peer as the datapath and the steering need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPeer {
    pub peer: EncryptedPeer,
    /// Where its IKE and ESP go: its underlay address of the family this node has
    /// too (IPv4 first); `None` when the two share none (it cannot be reached, and its
    /// prefixes are still steered, so they fail closed).
    pub address: Option<IpAddr>,
    /// Our own underlay address of that family.
    pub local: Option<IpAddr>,
    /// Its underlay addresses (/32, /128), its blocks and what it borrowed, sorted.
    pub prefixes: Vec<IpNet>,
}

/// The peers of node `node` under `mode` in `view`: live records, and the last
/// records of nodes whose lease expired (the fabric keeps routing to those, so their
/// traffic must be steered too). Empty when this node has no record yet.
pub fn plan(mode: IpsecMode, node: &str, view: &ClusterView) -> BTreeMap<String, PlannedPeer> {
    let mut records: BTreeMap<&str, &NodeRecord> = view
        .last_records
        .iter()
        .map(|(n, r)| (n.as_str(), r))
        .collect();
    records.extend(view.nodes.iter().map(|(n, r)| (n.as_str(), r)));
    let Some(local) = records.get(node).copied() else {
        return BTreeMap::new();
    };
    let all: Vec<NodeRecord> = records.values().map(|r| (*r).clone()).collect();
    let mut out = BTreeMap::new();
    for peer in encrypted_peers(mode, local, &all) {
        let record = records[peer.name.as_str()];
        let (local_ip, address) = match (local.underlay_v4, record.underlay_v4) {
            (Some(l), Some(r)) => (Some(IpAddr::V4(l)), Some(IpAddr::V4(r))),
            _ => match (local.underlay_v6, record.underlay_v6) {
                (Some(l), Some(r)) => (Some(IpAddr::V6(l)), Some(IpAddr::V6(r))),
                _ => (None, None),
            },
        };
        let mut prefixes: Vec<IpNet> = [
            record.underlay_v4.map(IpAddr::V4),
            record.underlay_v6.map(IpAddr::V6),
        ]
        .into_iter()
        .flatten()
        .map(IpNet::from)
        .collect();
        prefixes.extend(
            view.blocks
                .iter()
                .filter(|(_, affinity)| affinity.as_deref() == Some(peer.name.as_str()))
                .map(|(cidr, _)| *cidr),
        );
        prefixes.extend(
            view.lent
                .values()
                .flatten()
                .filter(|(_, holder)| holder.as_str() == peer.name)
                .map(|(ip, _)| IpNet::from(*ip)),
        );
        prefixes.sort();
        prefixes.dedup();
        out.insert(
            peer.name.clone(),
            PlannedPeer {
                peer,
                address,
                local: local_ip,
                prefixes,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use strait_api::FabricMode;
    use strait_api::ipsec::NodeIpsec;

    use super::*;

    fn node(name: &str, site: &str, key: Option<u8>) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            underlay_v4: None,
            underlay_v6: None,
            fabric: FabricMode::HostGw,
            vtep_mac: None,
            vxlan_vni: None,
            vxlan_port: None,
            tunnel_v4: None,
            tunnel_v6: None,
            agent_version: "test".into(),
            started: 0,
            bgp: None,
            site: site.into(),
            ipsec: key.map(|k| NodeIpsec::from_public_key(&[k; 32])),
        }
    }

    #[test]
    fn a_plan_steers_underlay_blocks_and_borrowed_addresses_of_each_peer() {
        let mut a1 = node("a1", "dc", Some(1));
        a1.underlay_v4 = Some("10.0.0.1".parse().unwrap());
        let mut b1 = node("b1", "cloud", Some(2));
        b1.underlay_v4 = Some("10.0.1.3".parse().unwrap());
        b1.underlay_v6 = Some("fd00:10:0:2::3".parse().unwrap());
        let mut view = ClusterView::default();
        view.nodes.insert("a1".into(), a1);
        // b1's agent is down: only its last record is left, and it is still planned.
        view.last_records.insert("b1".into(), b1);
        let (blk_a, blk_b): (IpNet, IpNet) = (
            "10.244.0.0/26".parse().unwrap(),
            "10.244.1.0/26".parse().unwrap(),
        );
        view.blocks.insert(blk_a, Some("a1".into()));
        view.blocks.insert(blk_b, Some("b1".into()));
        view.lent.insert(
            blk_a,
            BTreeMap::from([("10.244.0.9".parse().unwrap(), "b1".to_string())]),
        );
        let planned = plan(IpsecMode::CrossSite, "a1", &view);
        let b = &planned["b1"];
        assert_eq!(
            b.address,
            Some("10.0.1.3".parse().unwrap()),
            "IPv4, which both have"
        );
        assert_eq!(b.local, Some("10.0.0.1".parse().unwrap()));
        let want: Vec<IpNet> = [
            "10.0.1.3/32",
            "10.244.0.9/32",
            "10.244.1.0/26",
            "fd00:10:0:2::3/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(b.prefixes, want);
        assert!(plan(IpsecMode::CrossSite, "nobody", &view).is_empty());
        assert!(plan(IpsecMode::Off, "a1", &view).is_empty());
    }

    fn names(peers: &[EncryptedPeer]) -> Vec<&str> {
        peers.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn the_mode_picks_the_peers() {
        let nodes = [
            node("a1", "dc", Some(1)),
            node("a2", "dc", Some(2)),
            node("b1", "cloud", Some(3)),
            node("b2", "cloud", Some(4)),
        ];
        let a1 = &nodes[0];
        assert!(encrypted_peers(IpsecMode::Off, a1, &nodes).is_empty());
        assert_eq!(
            names(&encrypted_peers(IpsecMode::CrossSite, a1, &nodes)),
            ["b1", "b2"]
        );
        assert_eq!(
            names(&encrypted_peers(IpsecMode::All, a1, &nodes)),
            ["a2", "b1", "b2"]
        );
        let b1 = &encrypted_peers(IpsecMode::CrossSite, a1, &nodes)[0];
        assert_eq!(b1.ed25519, Ok([3; 32]));
    }

    #[test]
    fn a_peer_without_a_usable_key_is_listed_and_says_why() {
        let mut liar = node("b2", "cloud", None);
        liar.ipsec = Some(NodeIpsec {
            ed25519: "zz".into(),
            gateway: false,
        });
        let nodes = [node("a1", "dc", Some(1)), node("b1", "cloud", None), liar];
        let peers = encrypted_peers(IpsecMode::CrossSite, &nodes[0], &nodes);
        assert_eq!(names(&peers), ["b1", "b2"]);
        assert!(
            peers[0]
                .ed25519
                .as_ref()
                .unwrap_err()
                .contains("older than IPsec")
        );
        assert!(
            peers[1]
                .ed25519
                .as_ref()
                .unwrap_err()
                .contains("hex digits")
        );
    }
}
