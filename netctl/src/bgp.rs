//! `netctl bgp`: the BGP fabric's sessions and Loc-RIB, as the agent's speaker has them,
//! and the external peers in the store (`netctl bgp peer`; docs/bgp.md "netctl").

use std::path::Path;

use strait_api::bgp::{BgpPeerStatus, BgpRibEntry, ExternalPeerEntry};

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

/// The TCP MD5 key from `path`: its bytes, one trailing newline dropped (`echo` adds
/// one).
pub fn read_md5_key(path: &Path) -> anyhow::Result<String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the MD5 key file {}: {e}", path.display()))?;
    let key = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(&raw);
    Ok(key.to_string())
}

pub fn render_external_peers(peers: &[ExternalPeerEntry]) -> String {
    let mut t = Table::new(["NAME", "ADDRESS", "AS", "NODE", "PORT", "BFD", "MD5"]);
    for p in peers {
        t.row([
            &p.name,
            &p.address.to_string(),
            &p.asn.to_string(),
            p.node.as_deref().unwrap_or("(all)"),
            &p.port.to_string(),
            if p.bfd { "yes" } else { "no" },
            if p.md5 { "yes" } else { "no" },
        ]);
    }
    t.render()
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
    fn external_peers_show_their_node_or_all() {
        let entry = |name: &str, node: Option<&str>| ExternalPeerEntry {
            name: name.into(),
            address: "10.0.0.253".parse().expect("ip"),
            asn: 65000,
            node: node.map(String::from),
            port: 179,
            bfd: false,
            md5: true,
        };
        let text = render_external_peers(&[entry("core", None), entry("tor-a", Some("h1"))]);
        let lines: Vec<_> = text.lines().collect();
        assert!(
            lines[1].contains("core") && lines[1].contains("(all)"),
            "{text}"
        );
        assert!(
            lines[2].contains("tor-a") && lines[2].contains("h1"),
            "{text}"
        );
    }

    #[test]
    fn the_md5_key_file_loses_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("netctl-md5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("key");
        std::fs::write(&f, "s3cret\n").expect("write");
        assert_eq!(read_md5_key(&f).expect("key"), "s3cret");
        std::fs::write(&f, "with space \n\n").expect("write");
        assert_eq!(read_md5_key(&f).expect("key"), "with space \n");
        assert!(read_md5_key(&dir.join("absent")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
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
