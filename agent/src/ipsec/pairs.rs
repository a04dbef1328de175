//! Which peers this node encrypts with: pure, from the mode and the node records, and
//! recomputed on every change of either.

use strait_api::NodeRecord;
use strait_api::ipsec::{ED25519_PUBLIC_KEY_LEN, IpsecMode};

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
