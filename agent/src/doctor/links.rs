//! This node's links to others, as `netctl topology` draws them: VXLAN tunnels and
//! host-gw routes from the fabric's report (up when the entry is in the kernel as
//! wanted), BGP sessions from the speaker, IPsec IKE SAs from the engine.

use std::collections::BTreeMap;

use strait_api::bgp::{BgpPeerStatus, PeerKind};
use strait_api::doctor::{Link, LinkKind};
use strait_api::ipsec::IpsecStatus;
use strait_api::routes::{EntryKind, EntryState, RouteReport};

pub fn fabric(r: &RouteReport) -> Vec<Link> {
    let kind = match r.mode.as_str() {
        "vxlan" => (LinkKind::Vxlan, EntryKind::Fdb),
        "host-gw" => (LinkKind::HostGw, EntryKind::Route),
        _ => return vec![],
    };
    // One link per node: up when every entry to it is in place.
    let mut by_node: BTreeMap<&str, bool> = BTreeMap::new();
    for e in r.entries.iter().filter(|e| e.kind == kind.1) {
        if let Some(node) = &e.node {
            let up = by_node.entry(node).or_insert(true);
            *up &= e.state == EntryState::Ok;
        }
    }
    by_node
        .into_iter()
        .map(|(node, up)| Link {
            peer: node.to_string(),
            kind: kind.0,
            state: if up { "up" } else { "missing" }.into(),
            up,
            role: None,
        })
        .collect()
}

pub fn bgp(peers: &[BgpPeerStatus]) -> Vec<Link> {
    peers
        .iter()
        .map(|p| Link {
            peer: p.name.clone(),
            kind: LinkKind::Bgp,
            state: p.state.clone(),
            up: p.established(),
            role: match p.kind {
                PeerKind::Node => None,
                PeerKind::Rr => Some("route-reflector".into()),
                PeerKind::RrClient => Some("rr-client".into()),
                PeerKind::External => Some("external".into()),
            },
        })
        .collect()
}

pub fn ipsec(status: &IpsecStatus) -> Vec<Link> {
    status
        .peers
        .iter()
        .map(|p| Link {
            peer: p.name.clone(),
            kind: LinkKind::Ipsec,
            state: p.ike_state.clone(),
            up: p.ike_state == "established" && !p.child_sas.is_empty(),
            role: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::routes::ReportEntry;

    #[test]
    fn a_vxlan_link_is_up_only_with_all_its_entries() {
        let e = |node: &str, kind, state| ReportEntry {
            kind,
            node: Some(node.into()),
            entry: String::new(),
            state,
        };
        let r = RouteReport {
            mode: "vxlan".into(),
            entries: vec![
                e("h2", EntryKind::Fdb, EntryState::Ok),
                e("h3", EntryKind::Fdb, EntryState::Ok),
                e("h3", EntryKind::Fdb, EntryState::Missing),
                e("h3", EntryKind::Route, EntryState::Ok),
            ],
            ..Default::default()
        };
        let links = fabric(&r);
        assert_eq!(links.len(), 2);
        assert!(links[0].up && links[0].peer == "h2");
        assert!(!links[1].up && links[1].state == "missing");
    }
}
