//! `netctl bgp`: the BGP fabric's sessions and Loc-RIB, as the agent's speaker has them,
//! and the external peers in the store (`netctl bgp peer`; docs/bgp.md "netctl").

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use strait_api::bgp::{
    BgpPeerStatus, BgpRefusedRoute, BgpRibEntry, ExternalPeer, ExternalPeerEntry, PeerOptions,
    PrefixRule,
};

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
        "REFUSED",
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
            &p.prefixes_refused.to_string(),
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
    let refused: u64 = peers.iter().map(|p| p.prefixes_refused).sum();
    if refused > 0 {
        out.push_str(&format!(
            "\n{refused} route{} refused by import policy (netctl bgp rib --refused)\n",
            if refused == 1 { "" } else { "s" }
        ));
    }
    out
}

/// `netctl bgp rib --refused`: what the peers announced and their import policies
/// refused.
pub fn render_refused(rows: &[BgpRefusedRoute]) -> String {
    let mut t = Table::new(["PREFIX", "FROM", "NAME", "REASON"]);
    for r in rows {
        t.row([
            &r.prefix.to_string(),
            &r.peer.to_string(),
            &r.name,
            &r.reason,
        ]);
    }
    t.render()
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
    let mut t = Table::new([
        "NAME", "ADDRESS", "AS", "NODE", "PORT", "BFD", "MD5", "OPTIONS",
    ]);
    for p in peers {
        t.row([
            &p.name,
            &p.address.to_string(),
            &p.asn.to_string(),
            p.node.as_deref().unwrap_or("(all)"),
            &p.port.to_string(),
            if p.bfd { "yes" } else { "no" },
            if p.md5 { "yes" } else { "no" },
            &options_summary(&p.options),
        ]);
    }
    t.render()
}

/// The options set, as the flags that set them (`-` for none).
fn options_summary(o: &PeerOptions) -> String {
    let mut parts = Vec::new();
    if o.passive {
        parts.push("passive".to_string());
    }
    if let Some(n) = o.max_prefixes {
        parts.push(format!("max-prefix={n}"));
    }
    if let Some(h) = o.hold_time {
        parts.push(format!("hold-time={h}"));
    }
    if let Some(c) = o.connect_retry {
        parts.push(format!("connect-retry={c}"));
    }
    if !o.graceful_restart {
        parts.push("no-graceful-restart".into());
    }
    if let Some(ms) = o.bfd_interval_ms {
        parts.push(format!("bfd-interval={ms}"));
    }
    if let Some(m) = o.bfd_multiplier {
        parts.push(format!("bfd-multiplier={m}"));
    }
    parts.extend(o.allow.iter().map(|a| format!("allow={a}")));
    parts.extend(o.import.iter().map(|r| format!("import=\"{r}\"")));
    parts.extend(o.export.iter().map(|r| format!("export=\"{r}\"")));
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// `netctl bgp peer add`: the peer and everything the speaker supports per peer.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerAddArgs {
    /// The peer's name (letters, digits, '-', '_', '.').
    pub name: String,
    /// The peer's address.
    #[arg(long)]
    pub address: IpAddr,
    /// The peer's AS.
    #[arg(long)]
    pub asn: u32,
    /// Only this node peers with it (a ToR per rack); default every node.
    #[arg(long)]
    pub node: Option<String>,
    /// The peer's TCP port.
    #[arg(long, default_value_t = strait_api::bgp::DEFAULT_PORT)]
    pub port: u16,
    /// File holding the TCP MD5 key (RFC 2385); one trailing newline is dropped.
    #[arg(long)]
    pub md5_key_file: Option<PathBuf>,
    /// BFD on the session.
    #[arg(long)]
    pub bfd: bool,
    /// BFD transmit and receive interval in milliseconds (default 300).
    #[arg(long, value_name = "MS", requires = "bfd")]
    pub bfd_interval: Option<u32>,
    /// BFD detection multiplier (default 3).
    #[arg(long, value_name = "N", requires = "bfd")]
    pub bfd_multiplier: Option<u8>,
    /// Never connect to the peer; wait for its connection.
    #[arg(long)]
    pub passive: bool,
    /// End the session when the peer sends more routes than this, accepted or
    /// refused (it starts again a minute later).
    #[arg(long, value_name = "N")]
    pub max_prefix: Option<u32>,
    /// Hold time proposed to the peer, in seconds: 0 or at least 3 (default 9).
    #[arg(long, value_name = "SECS")]
    pub hold_time: Option<u16>,
    /// Seconds between connection attempts (default 2).
    #[arg(long, value_name = "SECS")]
    pub connect_retry: Option<u16>,
    /// No graceful restart (RFC 4724) with this peer.
    #[arg(long)]
    pub no_graceful_restart: bool,
    /// A prefix inside the cluster's pools the peer may announce anyway (repeat for
    /// more); without it such routes are refused.
    #[arg(long, value_name = "PREFIX")]
    pub allow: Vec<IpNet>,
    /// Import prefix-list rule `permit|deny PREFIX [ge N] [le N]` (repeat for more;
    /// the first match decides, none matching denies).
    #[arg(long, value_name = "RULE")]
    pub import: Vec<PrefixRule>,
    /// Export prefix-list rule, as --import, for what the peer is sent.
    #[arg(long, value_name = "RULE")]
    pub export: Vec<PrefixRule>,
}

impl PeerAddArgs {
    /// The peer to store, checked as the agent checks it (the MD5 key read from its
    /// file).
    pub fn peer(&self) -> anyhow::Result<ExternalPeer> {
        let md5_key = match &self.md5_key_file {
            None => None,
            Some(f) => Some(read_md5_key(f)?),
        };
        let mut peer = ExternalPeer::new(self.address, self.asn);
        peer.node = self.node.clone();
        peer.port = self.port;
        peer.md5_key = md5_key;
        peer.bfd = self.bfd;
        peer.options = PeerOptions {
            passive: self.passive,
            max_prefixes: self.max_prefix,
            hold_time: self.hold_time,
            connect_retry: self.connect_retry,
            graceful_restart: !self.no_graceful_restart,
            bfd_interval_ms: self.bfd_interval,
            bfd_multiplier: self.bfd_multiplier,
            allow: self.allow.clone(),
            import: self.import.clone(),
            export: self.export.clone(),
        };
        // Checked here too, so a bad name never reaches the request line.
        peer.validate(&self.name).map_err(anyhow::Error::msg)?;
        Ok(peer)
    }
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
            prefixes_refused: 0,
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
            options: PeerOptions::default(),
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

    #[derive(Debug, clap::Parser)]
    struct Add {
        #[command(flatten)]
        args: PeerAddArgs,
    }

    fn add(extra: &[&str]) -> Result<PeerAddArgs, clap::Error> {
        let mut argv = vec!["add", "tor-a", "--address", "10.0.0.253", "--asn", "65000"];
        argv.extend_from_slice(extra);
        <Add as clap::Parser>::try_parse_from(argv).map(|a| a.args)
    }

    #[test]
    fn peer_add_takes_every_option_the_speaker_supports() {
        let args = add(&[
            "--passive",
            "--max-prefix",
            "100",
            "--hold-time",
            "30",
            "--connect-retry",
            "5",
            "--no-graceful-restart",
            "--bfd",
            "--bfd-interval",
            "100",
            "--bfd-multiplier",
            "5",
            "--allow",
            "10.244.200.0/24",
            "--import",
            "permit 192.0.2.0/24 le 28",
            "--import",
            "deny 0.0.0.0/0 le 32",
            "--export",
            "deny 10.244.1.0/26",
        ])
        .expect("parses");
        let peer = args.peer().expect("valid");
        let o = &peer.options;
        assert!(o.passive && !o.graceful_restart && peer.bfd);
        assert_eq!(
            (o.max_prefixes, o.hold_time, o.connect_retry),
            (Some(100), Some(30), Some(5))
        );
        assert_eq!((o.bfd_interval_ms, o.bfd_multiplier), (Some(100), Some(5)));
        assert_eq!(o.allow, ["10.244.200.0/24".parse::<IpNet>().expect("net")]);
        let rules: Vec<String> = o.import.iter().map(ToString::to_string).collect();
        assert_eq!(rules, ["permit 192.0.2.0/24 le 28", "deny 0.0.0.0/0 le 32"]);
        assert_eq!(o.export[0].to_string(), "deny 10.244.1.0/26");
        let text = options_summary(o);
        assert!(
            text.contains("passive") && text.contains("max-prefix=100"),
            "{text}"
        );
        // Nothing given: the defaults, as before.
        let plain = add(&[]).expect("parses").peer().expect("valid");
        assert_eq!(plain.options, PeerOptions::default());
        assert_eq!(options_summary(&plain.options), "-");
    }

    #[test]
    fn peer_add_refuses_bad_options_with_the_reason() {
        let parse_err = |extra: &[&str]| add(extra).expect_err("refused").to_string();
        assert!(parse_err(&["--bfd-interval", "100"]).contains("--bfd"));
        assert!(parse_err(&["--import", "allow 10.0.0.0/8"]).contains("permit|deny"));
        assert!(parse_err(&["--import", "permit 10.0.0.1/8"]).contains("host bits"));
        assert!(parse_err(&["--max-prefix", "-1"]).contains("-1"));
        let invalid = |extra: &[&str]| {
            add(extra)
                .expect("parses")
                .peer()
                .expect_err("invalid")
                .to_string()
        };
        assert!(invalid(&["--max-prefix", "0"]).contains("max-prefix 0"));
        assert!(invalid(&["--hold-time", "2"]).contains("hold time"));
        assert!(invalid(&["--connect-retry", "0"]).contains("connect retry"));
        assert!(invalid(&["--allow", "10.244.1.5/24"]).contains("did you mean"));
    }

    #[test]
    fn refused_routes_are_counted_and_listed() {
        let mut p = peer("Established");
        p.prefixes_refused = 3;
        let text = render_peers(&[p]);
        assert!(text.contains("REFUSED"), "{text}");
        assert!(text.contains("3 routes refused by import policy"), "{text}");
        let rows = [BgpRefusedRoute {
            prefix: "10.244.2.0/29".parse().expect("net"),
            peer: "10.0.0.253".parse().expect("ip"),
            name: "tor-a".into(),
            reason: "inside 10.244.0.0/16, which the cluster owns".into(),
        }];
        let text = render_refused(&rows);
        let line = text.lines().nth(1).expect("row");
        assert!(
            line.contains("10.244.2.0/29")
                && line.contains("tor-a")
                && line.contains("cluster owns"),
            "{line}"
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
