//! `netctl ipsec`: the cluster's IPsec mode (which node pairs encrypt), this node's
//! peers and SAs, rekeys on demand, and the external peers of the site gateways
//! (`netctl ipsec peer`, in [`crate::ipsec_peer`]).

use anyhow::Result;
use clap::Subcommand;
use strait_api::Client;
use strait_api::ipsec::{IpsecMode, IpsecPeer, IpsecSettings, IpsecStatus};

use crate::table::Table;
use crate::{Output, emit};

#[derive(Debug, Subcommand)]
pub enum IpsecCmd {
    /// Show the cluster's IPsec mode, or set it: `off` (no pair encrypts),
    /// `cross-site` (every pair of nodes of different `--site`s), `all` (every pair).
    Mode {
        #[arg(value_parser = parse_mode)]
        mode: Option<IpsecMode>,
    },
    /// This node: mode, datapath, and per peer its IKE SA and Child SAs (SPIs,
    /// algorithms, sequence numbers, bytes, replay and ICV failures). Exit 1 when a
    /// peer has no established IKE SA.
    Status,
    /// The peers this node encrypts with, one line each. Exit 1 as `status`.
    Peers,
    /// Rekey the Child SAs with PEER now (a node name, or ext:NAME for an external
    /// peer).
    Rekey {
        peer: String,
        /// Reauthenticate instead: new IKE and Child SAs replace the old ones, then
        /// the old are deleted (RFC 7296 §2.8.3).
        #[arg(long)]
        reauth: bool,
    },
    /// External peers of the site gateways (other vendors' IPsec gateways): add,
    /// apply -f, list, get, delete. Pre-shared keys are never shown.
    Peer {
        #[command(subcommand)]
        cmd: crate::ipsec_peer::PeerCmd,
    },
}

fn parse_mode(s: &str) -> Result<IpsecMode, String> {
    s.parse()
}

/// Runs `cmd`; `Ok(false)` when the answer is "not all peers are up".
pub fn run(client: &Client, out: Output, cmd: IpsecCmd) -> Result<bool> {
    match cmd {
        IpsecCmd::Status => {
            let s = client.ipsec_status()?;
            emit(out, &s, || render_status(&s))?;
            Ok(all_up(&s))
        }
        IpsecCmd::Peers => {
            let s = client.ipsec_status()?;
            emit(out, &s.peers, || render_peers(&s.peers))?;
            Ok(all_up(&s))
        }
        IpsecCmd::Rekey {
            peer,
            reauth: false,
        } => {
            client.ipsec_rekey(&peer)?;
            println!("rekeying the Child SAs with {peer}");
            Ok(true)
        }
        IpsecCmd::Rekey { peer, reauth: true } => {
            client.ipsec_reauth(&peer)?;
            println!("reauthenticating with {peer}");
            Ok(true)
        }
        IpsecCmd::Peer { cmd } => {
            crate::ipsec_peer::run(client, out, cmd)?;
            Ok(true)
        }
        IpsecCmd::Mode { mode: None } => {
            let s = client.ipsec_settings()?;
            emit(out, &s, || render_mode(&s))?;
            Ok(true)
        }
        IpsecCmd::Mode { mode: Some(mode) } => {
            let mut s = client.ipsec_settings()?;
            s.mode = mode;
            let s = client.put_ipsec_settings(&s)?;
            emit(out, &s, || render_mode(&s))?;
            Ok(true)
        }
    }
}

fn all_up(s: &IpsecStatus) -> bool {
    s.peers.iter().all(|p| p.ike_state == "established")
}

pub fn render_peers(peers: &[IpsecPeer]) -> String {
    let mut t = Table::new([
        "PEER",
        "SITE",
        "ADDRESS",
        "IKE",
        "UP",
        "CHILD SAS",
        "PKTS IN",
        "PKTS OUT",
        "LAST ERROR",
    ]);
    for p in peers {
        // Totals over every SA there was with the peer, so a rekey does not reset them.
        t.row([
            p.name.as_str(),
            &p.site,
            &p.address.map_or("-".into(), |a| a.to_string()),
            &p.ike_state,
            &p.established_secs.map_or("-".into(), |s| format!("{s}s")),
            &p.child_sas.len().to_string(),
            &p.totals.packets_in.to_string(),
            &p.totals.packets_out.to_string(),
            p.last_error.as_deref().unwrap_or("-"),
        ]);
    }
    t.render()
}

pub fn render_status(s: &IpsecStatus) -> String {
    let mut out = format!("node {} site {}  mode {}", s.node, s.site, s.mode);
    match (&s.datapath, &s.datapath_reason) {
        (Some(d), Some(why)) => out.push_str(&format!("  datapath {d} ({why})")),
        (Some(d), None) => out.push_str(&format!("  datapath {d}")),
        (None, Some(why)) => out.push_str(&format!("  datapath none ({why})")),
        (None, None) => out.push_str("  datapath none (nothing to encrypt)"),
    }
    if let Some(mtu) = s.mtu {
        out.push_str(&format!("  container MTU {mtu}"));
    }
    out.push('\n');
    for p in &s.peers {
        out.push_str(&format!(
            "\npeer {} (site {}, {}): IKE {}",
            p.name,
            p.site,
            p.address.map_or("no address".into(), |a| a.to_string()),
            p.ike_state
        ));
        if let Some(alg) = &p.ike_algorithms {
            out.push_str(&format!(" {alg}"));
        }
        if let Some(up) = p.established_secs {
            out.push_str(&format!(", up {up}s"));
        }
        out.push_str(&format!(
            ", rekeys IKE {} Child {}",
            p.ike_rekeys, p.child_rekeys
        ));
        if let Some(d) = p.last_dpd_secs {
            out.push_str(&format!(", last DPD {d}s ago"));
        }
        if p.nat {
            out.push_str(", behind NAT");
        }
        out.push('\n');
        if let Some(e) = &p.last_error {
            out.push_str(&format!("  last error: {e}\n"));
        }
        let mut t = Table::new([
            "  SPI IN",
            "SPI OUT",
            "CIPHER",
            "ESN",
            "ACTIVE",
            "PKTS IN",
            "BYTES IN",
            "PKTS OUT",
            "BYTES OUT",
            "SEQ OUT",
            "REPLAY",
            "ICV FAIL",
        ]);
        for c in &p.child_sas {
            let i = c.inbound.clone().unwrap_or_default();
            let o = c.outbound.clone().unwrap_or_default();
            let cells = [
                format!("  {}", c.spi_in),
                c.spi_out.clone(),
                c.cipher.clone(),
                if c.esn { "yes" } else { "no" }.to_string(),
                if c.active { "*" } else { "" }.to_string(),
                i.packets.to_string(),
                i.bytes.to_string(),
                o.packets.to_string(),
                o.bytes.to_string(),
                o.seq.to_string(),
                i.replay_failures.to_string(),
                i.icv_failures.to_string(),
            ];
            t.row(cells.each_ref().map(String::as_str));
        }
        if !p.child_sas.is_empty() {
            out.push_str(&t.render());
        }
        // The selectors, once per pair (a rekey's two Child SAs share them).
        let mut shown: Vec<(&str, &str)> = Vec::new();
        for c in &p.child_sas {
            let pair = (c.ts_local.as_str(), c.ts_remote.as_str());
            if !c.ts_local.is_empty() && !shown.contains(&pair) {
                out.push_str(&format!("  selectors: {} === {}\n", pair.0, pair.1));
                shown.push(pair);
            }
        }
    }
    let d = &s.drops;
    out.push_str(&format!(
        "\ndropped, never sent in clear: no route {}, no SA {}, seal failed {}; received: unknown SPI {}, inner source refused {}, other {}\n",
        d.no_route, d.no_sa, d.seal_failed, d.unknown_spi, d.inner_refused, d.other
    ));
    out
}

pub fn render_mode(s: &IpsecSettings) -> String {
    let what = match s.mode {
        IpsecMode::Off => "no node pair encrypts",
        IpsecMode::CrossSite => "node pairs of different sites encrypt",
        IpsecMode::All => "every node pair encrypts",
    };
    format!("mode {} ({what})\n", s.mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_line_says_what_it_means() {
        let s = IpsecSettings {
            mode: IpsecMode::CrossSite,
        };
        assert_eq!(
            render_mode(&s),
            "mode cross-site (node pairs of different sites encrypt)\n"
        );
    }

    #[test]
    fn the_peers_table_shows_each_peers_packet_totals() {
        let p = IpsecPeer {
            name: "ext:onprem".into(),
            site: "dc".into(),
            address: Some("198.51.100.2:4500".parse().unwrap()),
            ike_state: "established".into(),
            initiator: true,
            ike_algorithms: None,
            established_secs: Some(7),
            ike_rekeys: 0,
            child_rekeys: 0,
            last_dpd_secs: None,
            nat: true,
            child_sas: vec![],
            last_error: None,
            totals: strait_api::ipsec::PeerTotals {
                packets_in: 12,
                packets_out: 34,
                ..Default::default()
            },
        };
        let text = render_peers(&[p]);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][7..11], ["PKTS", "IN", "PKTS", "OUT"], "{text}");
        assert_eq!(lines[1][6..8], ["12", "34"], "{text}");
    }

    #[test]
    fn a_wrong_mode_is_refused_before_any_request() {
        let err = parse_mode("on").unwrap_err();
        assert!(err.contains("off, cross-site or all"), "{err}");
    }
}
