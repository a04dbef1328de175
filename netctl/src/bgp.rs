//! `netctl bgp`: the BGP fabric's sessions and Loc-RIB, as the agent's speaker has them
//! (docs/bgp.md "netctl").

use strait_api::bgp::{BgpPeerStatus, BgpRibEntry};

use crate::table::Table;

/// Whether every configured peer is Established (`netctl bgp peers` exits 1 if not).
pub fn all_established(peers: &[BgpPeerStatus]) -> bool {
    peers.iter().all(BgpPeerStatus::established)
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// `3d4h`, `2h5m`, `4m10s`, `9s`: uptime as routers print it.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

pub fn render_peers(peers: &[BgpPeerStatus]) -> String {
    let mut t = Table::new([
        "PEER",
        "AS",
        "KIND",
        "NAME",
        "STATE",
        "UPTIME",
        "RCVD",
        "ACCEPTED",
        "SENT",
        "BFD",
        "LAST ERROR",
    ]);
    for p in peers {
        let peer = if p.port == strait_api::bgp::DEFAULT_PORT {
            p.address.to_string()
        } else {
            std::net::SocketAddr::new(p.address, p.port).to_string()
        };
        t.row([
            &peer,
            &p.asn.to_string(),
            p.kind.as_str(),
            &p.name,
            &p.state,
            &or_dash(p.uptime_secs.map(duration)),
            &p.prefixes_received.to_string(),
            &p.prefixes_accepted.to_string(),
            &p.prefixes_sent.to_string(),
            &or_dash(p.bfd.clone()),
            &or_dash(p.last_error.clone()),
        ]);
    }
    let mut out = t.render();
    let down: Vec<_> = peers.iter().filter(|p| !p.established()).collect();
    if !down.is_empty() {
        out.push_str(&format!(
            "\n{} of {} peers not Established\n",
            down.len(),
            peers.len()
        ));
    }
    out
}

pub fn render_rib(rib: &[BgpRibEntry]) -> String {
    let mut t = Table::new([
        "",
        "PREFIX",
        "NEXT HOP",
        "FROM",
        "AS PATH",
        "LOCPRF",
        "MED",
        "ORIGINATOR",
        "CLUSTER LIST",
    ]);
    for r in rib {
        let flags = format!(
            "{}{}",
            if r.best { "*" } else { " " },
            if r.fib { "F" } else { " " }
        );
        let as_path: Vec<String> = r.as_path.iter().map(u32::to_string).collect();
        let clusters: Vec<String> = r.cluster_list.iter().map(|c| c.to_string()).collect();
        t.row([
            flags.trim_end(),
            &r.prefix.to_string(),
            &or_dash(r.next_hop.map(|n| n.to_string())),
            &r.peer
                .map_or_else(|| "local".to_string(), |p| p.to_string()),
            &if as_path.is_empty() {
                "i".to_string()
            } else {
                as_path.join(" ")
            },
            &or_dash(r.local_pref.map(|v| v.to_string())),
            &or_dash(r.med.map(|v| v.to_string())),
            &or_dash(r.originator_id.map(|v| v.to_string())),
            &if clusters.is_empty() {
                "-".to_string()
            } else {
                clusters.join(" ")
            },
        ]);
    }
    let mut out = t.render();
    out.push_str("\n* best  F in the kernel's FIB\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::bgp::PeerKind;

    fn peer(state: &str) -> BgpPeerStatus {
        BgpPeerStatus {
            address: "10.0.0.2".parse().expect("ip"),
            port: 179,
            asn: 64512,
            kind: PeerKind::Node,
            name: "h2".into(),
            state: state.into(),
            uptime_secs: (state == "Established").then_some(3725),
            prefixes_received: 2,
            prefixes_accepted: 2,
            prefixes_sent: 2,
            bfd: Some("Up".into()),
            last_error: None,
        }
    }

    #[test]
    fn a_peer_not_established_fails_the_check() {
        assert!(all_established(&[]));
        assert!(all_established(&[peer("Established")]));
        assert!(!all_established(&[peer("Established"), peer("Active")]));
        let text = render_peers(&[peer("Established"), peer("Active")]);
        assert!(text.contains("1h2m"), "{text}");
        assert!(text.contains("1 of 2 peers not Established"), "{text}");
    }

    #[test]
    fn rib_rows_mark_best_and_fib() {
        let row = BgpRibEntry {
            prefix: "10.244.2.0/26".parse().expect("net"),
            peer: Some("10.0.0.100".parse().expect("ip")),
            next_hop: Some("10.0.0.2".parse().expect("ip")),
            as_path: vec![],
            local_pref: Some(100),
            med: None,
            originator_id: Some("10.0.0.2".parse().expect("ip")),
            cluster_list: vec!["10.0.0.100".parse().expect("ip")],
            best: true,
            fib: true,
        };
        let text = render_rib(&[row]);
        let line = text.lines().nth(1).expect("row");
        assert!(line.starts_with("*F"), "{line}");
        assert!(
            line.contains("10.0.0.2") && line.contains("10.0.0.100"),
            "{line}"
        );
    }
}
