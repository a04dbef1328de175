//! The speaker's snapshots in the API's terms (`netctl bgp peers`, `netctl bgp rib`):
//! each peer named and classified by the peering it came from.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::bgp::{BgpPeerStatus, BgpRefusedRoute, BgpRibEntry, PeerKind};
use strait_bgp::codec::NextHop;
use strait_bgp::speaker::{PeerStatus, RefusedRoute, RibEntry};

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
                prefixes_refused: s.refused as u64,
                bfd: s.bfd.map(|b| format!("{b:?}")),
                last_error: s.last_error,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.address);
    rows
}

/// One row per path, prefixes in order, best path first within a prefix. A path is
/// flagged `fib` when the RIB chose it for forwarding and `installed(prefix, next hop)`
/// says FIB sync put it in the kernel: a route FIB sync refuses (an own block learned
/// back from a peer) is chosen by the RIB but not installed.
pub fn rib_rows(
    entries: Vec<RibEntry>,
    installed: impl Fn(&IpNet, IpAddr) -> bool,
) -> Vec<BgpRibEntry> {
    let mut rows = Vec::new();
    for entry in entries {
        for path in entry.paths {
            let fib = path.in_fib
                && path.from_peer.is_some()
                && installed(&entry.prefix, next_hop_ip(&path.next_hop));
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
                fib,
            });
        }
    }
    rows.sort_by_key(|r| (r.prefix, !r.best));
    rows
}

/// One row per refused route, by prefix, each peer named as in [`peer_rows`].
pub fn refused_rows(routes: Vec<RefusedRoute>, peers: &[Peer]) -> Vec<BgpRefusedRoute> {
    let mut rows: Vec<BgpRefusedRoute> = routes
        .into_iter()
        .map(|r| BgpRefusedRoute {
            prefix: r.prefix,
            peer: r.peer,
            name: peers
                .iter()
                .find(|p| p.address == r.peer)
                .map_or_else(String::new, |p| p.name.clone()),
            reason: r.reason.to_string(),
        })
        .collect();
    rows.sort_by_key(|r| (r.prefix, r.peer));
    rows
}

fn next_hop_ip(nh: &NextHop) -> IpAddr {
    match nh {
        NextHop::V4(v4) => IpAddr::V4(*v4),
        NextHop::V6 { global, .. } => IpAddr::V6(*global),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use strait_bgp::codec::AsPath;
    use strait_bgp::rib::FibChange;
    use strait_bgp::speaker::RibPath;

    use super::*;
    use crate::fabric::bgp::fib::{FibOp, FibTable};

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn learned(prefix: &str, nh: Ipv4Addr) -> RibEntry {
        RibEntry {
            prefix: net(prefix),
            paths: vec![RibPath {
                next_hop: NextHop::V4(nh),
                from_peer: Some(IpAddr::V4(nh)),
                as_path: AsPath::default(),
                local_pref: Some(100),
                med: None,
                originator_id: None,
                cluster_list: Vec::new(),
                best: true,
                in_fib: true,
                stale: false,
            }],
        }
    }

    /// Issue 19, item 17: `F` is what FIB sync installed, not what the RIB chose.
    #[test]
    fn a_route_fib_sync_refuses_is_not_flagged_in_the_fib() {
        let peer = Ipv4Addr::new(10, 0, 0, 2);
        let mut table = FibTable::default();
        table.set_local([net("10.244.1.0/26")], []);
        let changes = ["10.244.1.0/26", "10.244.2.0/26"]
            .iter()
            .map(|p| FibChange {
                prefix: net(p),
                next_hops: vec![NextHop::V4(peer)],
            })
            .collect();
        let (ops, _) = table.update(changes);
        assert_eq!(ops.len(), 1, "the own block is held back: {ops:?}");
        for op in &ops {
            table.applied(op, true);
        }
        assert!(matches!(&ops[0], FibOp::Replace(r) if r.destination == net("10.244.2.0/26")));
        let rows = rib_rows(
            vec![
                learned("10.244.1.0/26", peer),
                learned("10.244.2.0/26", peer),
            ],
            |p, gw| table.installed_via(p, gw),
        );
        let flags: Vec<(String, bool, bool)> = rows
            .iter()
            .map(|r| (r.prefix.to_string(), r.best, r.fib))
            .collect();
        assert_eq!(
            flags,
            [
                ("10.244.1.0/26".into(), true, false),
                ("10.244.2.0/26".into(), true, true)
            ]
        );
    }
}
