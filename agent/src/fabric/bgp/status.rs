//! The speaker's snapshots in the API's terms (`netctl bgp peers`, `netctl bgp rib`):
//! each peer named and classified by the peering it came from.

use std::net::IpAddr;

use strait_api::bgp::{BgpPeerStatus, BgpRibEntry, PeerKind};
use strait_bgp::codec::NextHop;
use strait_bgp::speaker::{PeerStatus, RibEntry};

use super::peering::Peer;

/// One row per configured peer; `peers` (the derived peering) gives name, kind and port.
pub fn peer_rows(status: Vec<PeerStatus>, peers: &[Peer]) -> Vec<BgpPeerStatus> {
    let mut rows: Vec<BgpPeerStatus> = status
        .into_iter()
        .map(|s| {
            let derived = peers.iter().find(|p| p.address == s.address);
            BgpPeerStatus {
                address: s.address,
                port: derived.map_or(strait_api::bgp::DEFAULT_PORT, |p| p.port),
                asn: s.asn,
                kind: derived.map_or(PeerKind::External, |p| p.kind),
                name: derived.map_or_else(|| s.description.clone(), |p| p.name.clone()),
                state: s.state_name().to_string(),
                uptime_secs: s.uptime.map(|u| u.as_secs()),
                prefixes_received: s.received as u64,
                prefixes_accepted: s.accepted as u64,
                prefixes_sent: s.sent as u64,
                bfd: s.bfd.map(|b| format!("{b:?}")),
                last_error: s.last_error,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.address);
    rows
}

/// One row per path, prefixes in order, best path first within a prefix.
pub fn rib_rows(entries: Vec<RibEntry>) -> Vec<BgpRibEntry> {
    let mut rows = Vec::new();
    for entry in entries {
        for path in entry.paths {
            rows.push(BgpRibEntry {
                prefix: entry.prefix,
                peer: path.from_peer,
                // A route we originate has next hop self, whatever each session's
                // local address is: no single address to show.
                next_hop: path.from_peer.map(|_| next_hop_ip(&path.next_hop)),
                as_path: path
                    .as_path
                    .segments
                    .iter()
                    .flat_map(|s| s.asns.iter().copied())
                    .collect(),
                local_pref: path.local_pref,
                med: path.med,
                originator_id: path.originator_id,
                cluster_list: path.cluster_list,
                best: path.best,
                fib: path.in_fib,
            });
        }
    }
    rows.sort_by_key(|r| (r.prefix, !r.best));
    rows
}

fn next_hop_ip(nh: &NextHop) -> IpAddr {
    match nh {
        NextHop::V4(v4) => IpAddr::V4(*v4),
        NextHop::V6 { global, .. } => IpAddr::V6(*global),
    }
}
