//! The BGP fabric's shared types (docs/bgp.md): what a node publishes in its record,
//! the external peers under `bgp/peers/<name>` (managed at
//! [`crate::paths::BGP_EXTERNAL_PEERS`], `netctl bgp peer`), and what the agent serves at
//! [`crate::paths::BGP_PEERS`] and [`crate::paths::BGP_RIB`] (`netctl bgp`).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The BGP port (RFC 4271 §8.2.1).
pub const DEFAULT_PORT: u16 = 179;
/// The private AS strait uses unless told otherwise (Calico's default too).
pub const DEFAULT_ASN: u32 = 64512;

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn yes() -> bool {
    true
}

/// A node's role in the iBGP topology.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BgpRole {
    /// Peers with every route reflector, or with every node when there is none.
    #[default]
    Client,
    /// A route reflector (RFC 4456) for every client node.
    Rr,
}

impl BgpRole {
    pub fn as_str(self) -> &'static str {
        match self {
            BgpRole::Client => "client",
            BgpRole::Rr => "rr",
        }
    }
}

impl std::fmt::Display for BgpRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BgpRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(BgpRole::Client),
            "rr" => Ok(BgpRole::Rr),
            other => Err(format!("unknown BGP role {other:?}: use client or rr")),
        }
    }
}

/// What a node running `--fabric bgp` publishes in its record (`NodeRecord.bgp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBgp {
    pub asn: u32,
    pub role: BgpRole,
    /// RFC 4456 cluster ID (route reflectors only; `None` on clients).
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    pub router_id: Ipv4Addr,
    /// The TCP port the node's speaker listens on.
    #[serde(default = "default_port")]
    pub port: u16,
}

/// An external peer (a ToR, a BIRD/FRR router): the value of `bgp/peers/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalPeer {
    pub address: IpAddr,
    pub asn: u32,
    /// Only this node peers with it; `None`: every node does.
    #[serde(default)]
    pub node: Option<String>,
    /// TCP MD5 key (RFC 2385).
    #[serde(default)]
    pub md5_key: Option<String>,
    #[serde(default)]
    pub bfd: bool,
    #[serde(default = "default_port")]
    pub port: u16,
    /// What the speaker supports per peer beyond the above (docs/bgp.md "External
    /// peers"); every field optional in the JSON.
    #[serde(flatten)]
    pub options: PeerOptions,
}

impl ExternalPeer {
    /// A peer at `address` of AS `asn`, for every node, on port 179, nothing else set.
    pub fn new(address: IpAddr, asn: u32) -> Self {
        Self {
            address,
            asn,
            node: None,
            md5_key: None,
            bfd: false,
            port: DEFAULT_PORT,
            options: PeerOptions::default(),
        }
    }
}

/// An external peer's session and policy settings (`netctl bgp peer add --passive
/// --max-prefix … --import …`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerOptions {
    /// Never connect to it; wait for its connection.
    #[serde(default)]
    pub passive: bool,
    /// More routes than this from it (accepted, or refused by the import policy) ends
    /// the session (Cease, RFC 4486); it starts again a minute later. `None`: no limit.
    #[serde(default)]
    pub max_prefixes: Option<u32>,
    /// Hold time (seconds) proposed to it: 0 (no keepalives) or at least 3. `None`:
    /// the agent's (9 s).
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Seconds between connection attempts. `None`: the agent's (2 s).
    #[serde(default)]
    pub connect_retry: Option<u16>,
    /// Graceful restart (RFC 4724) with it, when the agent has it on.
    #[serde(default = "yes")]
    pub graceful_restart: bool,
    /// BFD transmit and receive interval in milliseconds (default 300); needs `bfd`.
    #[serde(default)]
    pub bfd_interval_ms: Option<u32>,
    /// BFD detection multiplier (default 3); needs `bfd`.
    #[serde(default)]
    pub bfd_multiplier: Option<u8>,
    /// Prefixes inside the cluster's pools it may announce anyway (refused by default:
    /// docs/bgp.md "Import policy").
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Import prefix list: the first rule that matches decides, none matching denies;
    /// empty: everything outside the cluster's pools is taken.
    #[serde(default)]
    pub import: Vec<PrefixRule>,
    /// Export prefix list, as `import`, for what it is sent.
    #[serde(default)]
    pub export: Vec<PrefixRule>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            passive: false,
            max_prefixes: None,
            hold_time: None,
            connect_retry: None,
            graceful_restart: true,
            bfd_interval_ms: None,
            bfd_multiplier: None,
            allow: Vec::new(),
            import: Vec::new(),
            export: Vec::new(),
        }
    }
}

/// One line of a prefix list, written as FRR's `ip prefix-list` lines are:
/// `permit 10.0.0.0/8 le 24`, `deny 192.0.2.0/24`, `permit fd00::/8 ge 48 le 64`.
/// Without `ge`/`le` only the prefix itself matches; with them, any prefix inside it
/// whose length is in range (`ge` defaults to the prefix's length, `le` to the
/// family's maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrefixRule {
    pub permit: bool,
    pub prefix: IpNet,
    pub ge: Option<u8>,
    pub le: Option<u8>,
}

impl std::fmt::Display for PrefixRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = if self.permit { "permit" } else { "deny" };
        write!(f, "{action} {}", self.prefix)?;
        if let Some(ge) = self.ge {
            write!(f, " ge {ge}")?;
        }
        if let Some(le) = self.le {
            write!(f, " le {le}")?;
        }
        Ok(())
    }
}

impl From<PrefixRule> for String {
    fn from(r: PrefixRule) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for PrefixRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A prefix given by a user: a network address (no host bits), so that what is
/// matched is what was written.
fn network(what: &str, s: &str) -> Result<IpNet, String> {
    let p: IpNet = s
        .parse()
        .map_err(|e| format!("{what} {s:?}: {e} (give a prefix such as 10.0.0.0/8)"))?;
    if p.trunc() != p {
        return Err(format!(
            "{what} {s:?}: host bits are set; did you mean {}?",
            p.trunc()
        ));
    }
    Ok(p)
}

impl std::str::FromStr for PrefixRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "prefix rule {s:?}: write `permit|deny PREFIX [ge N] [le N]`, e.g. \
                 `permit 10.0.0.0/8 le 24`"
            )
        };
        let mut words = s.split_whitespace();
        let permit = match words.next() {
            Some("permit") => true,
            Some("deny") => false,
            _ => return Err(usage()),
        };
        let prefix = network("prefix rule", words.next().ok_or_else(usage)?)?;
        let mut rule = PrefixRule {
            permit,
            prefix,
            ge: None,
            le: None,
        };
        while let Some(word) = words.next() {
            let n: u8 = words
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(usage)?;
            let slot = match word {
                "ge" if rule.ge.is_none() => &mut rule.ge,
                "le" if rule.le.is_none() => &mut rule.le,
                _ => return Err(usage()),
            };
            *slot = Some(n);
        }
        let len = prefix.prefix_len();
        let max = prefix.max_prefix_len();
        let lo = rule.ge.unwrap_or(len);
        let hi = rule.le.unwrap_or(max);
        if lo < len || hi > max || lo > hi {
            return Err(format!(
                "prefix rule {s:?}: need {len} <= ge <= le <= {max} for {prefix}"
            ));
        }
        Ok(rule)
    }
}

/// The longest BFD interval accepted, in milliseconds (a minute: slower is no
/// failure detection).
pub const MAX_BFD_INTERVAL_MS: u32 = 60_000;

impl PeerOptions {
    /// The checks of [`ExternalPeer::validate`] for the options (`bfd`: whether BFD is
    /// on).
    fn validate(&self, name: &str, bfd: bool) -> Result<(), String> {
        if self.max_prefixes == Some(0) {
            return Err(format!(
                "peer {name}: max-prefix 0 would refuse every route (leave it out for no \
                 limit)"
            ));
        }
        if matches!(self.hold_time, Some(1 | 2)) {
            return Err(format!(
                "peer {name}: hold time must be 0 or at least 3 s (RFC 4271 §4.2)"
            ));
        }
        if self.connect_retry == Some(0) {
            return Err(format!("peer {name}: connect retry must be at least 1 s"));
        }
        if !bfd && (self.bfd_interval_ms.is_some() || self.bfd_multiplier.is_some()) {
            return Err(format!(
                "peer {name}: BFD interval or multiplier given without BFD (add --bfd)"
            ));
        }
        if let Some(ms) = self.bfd_interval_ms
            && !(1..=MAX_BFD_INTERVAL_MS).contains(&ms)
        {
            return Err(format!(
                "peer {name}: BFD interval {ms} ms: give 1 to {MAX_BFD_INTERVAL_MS}"
            ));
        }
        if self.bfd_multiplier == Some(0) {
            return Err(format!("peer {name}: BFD multiplier must be at least 1"));
        }
        for a in &self.allow {
            network("allowed prefix", &a.to_string()).map_err(|e| format!("peer {name}: {e}"))?;
        }
        for r in self.import.iter().chain(&self.export) {
            // A rule that came in as JSON went through the same parser; this catches
            // one built in code.
            r.to_string()
                .parse::<PrefixRule>()
                .map_err(|e| format!("peer {name}: {e}"))?;
        }
        Ok(())
    }
}

/// RFC 2385 keys are at most 80 bytes (Linux `TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_MD5_KEY_LEN: usize = 80;
/// RFC 6793 AS_TRANS: stands in for a 4-octet AS in 2-octet fields, never a real AS.
pub const AS_TRANS: u32 = 23456;
/// Longest external peer or node name accepted (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// Checks a name that becomes a store key segment (an external peer's, a node's):
/// 1 to 63 ASCII letters, digits, `-`, `_` or `.`, starting and ending with a letter or
/// digit. `what` names the field in the error.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} {name:?}: give 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{what} {name:?}: {bad:?} is not allowed (letters, digits, '-', '_', '.')"
        ));
    }
    if !ends_ok(name.chars().next()) || !ends_ok(name.chars().last()) {
        return Err(format!(
            "{what} {name:?}: must start and end with a letter or digit"
        ));
    }
    Ok(())
}

impl ExternalPeer {
    /// What the agent checks before `bgp/peers/<name>` is written: the name (a store
    /// key), an address a session can go to, an AS that is not reserved, a port, a key
    /// that fits RFC 2385, and a node name if one is given.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        validate_name("peer name", name)?;
        let ip = self.address;
        let unusable =
            ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST);
        if unusable {
            return Err(format!(
                "peer {name}: address {ip} cannot be a BGP neighbour (unspecified, multicast \
                 or broadcast)"
            ));
        }
        if self.asn == 0 || self.asn == AS_TRANS {
            return Err(format!(
                "peer {name}: AS {} is reserved (RFC 7607, RFC 6793)",
                self.asn
            ));
        }
        if self.port == 0 {
            return Err(format!(
                "peer {name}: port 0: give the peer's TCP port ({DEFAULT_PORT} by default)"
            ));
        }
        if let Some(key) = &self.md5_key {
            if key.is_empty() {
                return Err(format!(
                    "peer {name}: the TCP MD5 key is empty (leave it out for no key)"
                ));
            }
            if key.len() > MAX_MD5_KEY_LEN {
                return Err(format!(
                    "peer {name}: the TCP MD5 key is {} bytes, at most {MAX_MD5_KEY_LEN} \
                     (RFC 2385, TCP_MD5SIG_MAXKEYLEN)",
                    key.len()
                ));
            }
        }
        if let Some(node) = &self.node {
            validate_name("node name", node).map_err(|e| format!("peer {name}: {e}"))?;
        }
        self.options.validate(name, self.bfd)
    }
}

/// One row of `netctl bgp peer list` (`GET /v1/bgp/peers/external`): the stored peer,
/// its TCP MD5 key left out (only whether it has one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalPeerEntry {
    pub name: String,
    pub address: IpAddr,
    pub asn: u32,
    #[serde(default)]
    pub node: Option<String>,
    pub port: u16,
    pub bfd: bool,
    /// A TCP MD5 key is set.
    pub md5: bool,
    #[serde(flatten)]
    pub options: PeerOptions,
}

impl ExternalPeerEntry {
    pub fn new(name: impl Into<String>, peer: &ExternalPeer) -> Self {
        Self {
            name: name.into(),
            address: peer.address,
            asn: peer.asn,
            node: peer.node.clone(),
            port: peer.port,
            bfd: peer.bfd,
            md5: peer.md5_key.is_some(),
            options: peer.options.clone(),
        }
    }
}

/// Why a node peers with a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// Full mesh: another node.
    Node,
    /// This node reflects for it.
    RrClient,
    /// A route reflector (seen from a client, or another RR).
    Rr,
    /// A `bgp/peers/` entry.
    External,
}

impl PeerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Node => "node",
            PeerKind::RrClient => "rr-client",
            PeerKind::Rr => "rr",
            PeerKind::External => "external",
        }
    }
}

impl std::fmt::Display for PeerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `netctl bgp peers` (`GET /v1/bgp/peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeerStatus {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    pub kind: PeerKind,
    /// The node or `bgp/peers/` name the peer comes from.
    pub name: String,
    /// RFC 4271 state: `Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`,
    /// `Established`.
    pub state: String,
    /// Seconds since the session was established (Established only).
    pub uptime_secs: Option<u64>,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_sent: u64,
    /// Routes it announced that the import policy refused (`netctl bgp rib
    /// --refused` lists them).
    #[serde(default)]
    pub prefixes_refused: u64,
    /// BFD session state (`Up`, `Down`, `Init`, `AdminDown`), `None` without BFD.
    pub bfd: Option<String>,
    pub last_error: Option<String>,
}

impl BgpPeerStatus {
    pub fn established(&self) -> bool {
        self.state.eq_ignore_ascii_case("established")
    }
}

/// One path of `netctl bgp rib` (`GET /v1/bgp/rib?prefix=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRibEntry {
    pub prefix: IpNet,
    /// The peer the path came from; `None` for a locally originated one.
    pub peer: Option<IpAddr>,
    pub next_hop: Option<IpAddr>,
    pub as_path: Vec<u32>,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub originator_id: Option<Ipv4Addr>,
    #[serde(default)]
    pub cluster_list: Vec<Ipv4Addr>,
    /// Selected by the decision process.
    pub best: bool,
    /// Installed in the kernel (among the multipath next hops).
    pub fib: bool,
}

/// A route a peer announced that its import policy refused (`netctl bgp rib
/// --refused`, `GET /v1/bgp/refused`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRefusedRoute {
    pub prefix: IpNet,
    pub peer: IpAddr,
    /// The node or `bgp/peers/` name of the peer.
    pub name: String,
    /// Why, in words (`inside 10.244.0.0/16, which the cluster owns`).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_peer_reads_the_documented_json() {
        let peer: ExternalPeer = serde_json::from_str(
            r#"{"address":"10.1.0.254","asn":65001,"node":"h1","md5_key":null,"bfd":false,"port":179}"#,
        )
        .expect("json");
        assert_eq!(peer.node.as_deref(), Some("h1"));
        let minimal: ExternalPeer =
            serde_json::from_str(r#"{"address":"fd00::1","asn":65002}"#).expect("json");
        assert_eq!(minimal.port, 179);
        assert_eq!(minimal.node, None);
        assert!(!minimal.bfd);
    }

    fn tor() -> ExternalPeer {
        let mut p = ExternalPeer::new("10.0.0.253".parse().expect("ip"), 65000);
        p.node = Some("h1".into());
        p
    }

    #[test]
    fn peer_options_default_when_absent_and_round_trip() {
        let minimal: ExternalPeer =
            serde_json::from_str(r#"{"address":"10.1.0.254","asn":65001}"#).expect("json");
        assert_eq!(minimal.options, PeerOptions::default());
        assert!(minimal.options.graceful_restart, "on unless turned off");
        let mut p = tor();
        p.bfd = true;
        p.options = PeerOptions {
            passive: true,
            max_prefixes: Some(100),
            hold_time: Some(30),
            connect_retry: Some(5),
            graceful_restart: false,
            bfd_interval_ms: Some(100),
            bfd_multiplier: Some(5),
            allow: vec!["10.244.200.0/24".parse().expect("net")],
            import: vec!["permit 192.0.2.0/24 le 28".parse().expect("rule")],
            export: vec!["deny 10.244.1.0/26".parse().expect("rule")],
        };
        p.validate("tor-a").expect("valid");
        let json = serde_json::to_string(&p).expect("json");
        assert!(
            json.contains(r#""import":["permit 192.0.2.0/24 le 28"]"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<ExternalPeer>(&json).expect("json"),
            p
        );
        let entry = ExternalPeerEntry::new("tor-a", &p);
        assert_eq!(entry.options, p.options);
    }

    #[test]
    fn prefix_rules_parse_as_written_and_bad_ones_say_why() {
        let r: PrefixRule = "permit fd00::/8 ge 48 le 64".parse().expect("rule");
        assert_eq!(
            (r.permit, r.prefix.to_string(), r.ge, r.le),
            (true, "fd00::/8".into(), Some(48), Some(64))
        );
        assert_eq!(r.to_string(), "permit fd00::/8 ge 48 le 64");
        let d: PrefixRule = "deny 192.0.2.0/24".parse().expect("rule");
        assert!(!d.permit && d.ge.is_none() && d.le.is_none());
        let err = |s: &str| s.parse::<PrefixRule>().expect_err(s);
        assert!(err("allow 10.0.0.0/8").contains("permit|deny"));
        assert!(err("permit").contains("permit|deny"));
        assert!(err("permit 10.0.0.1/8").contains("did you mean 10.0.0.0/8"));
        assert!(err("permit 10.0.0.0/8 le").contains("permit|deny"));
        assert!(err("permit 10.0.0.0/8 le 33").contains("<= 32"));
        assert!(err("permit 10.0.0.0/16 ge 8").contains("16 <= ge"));
        assert!(err("permit 10.0.0.0/8 ge 24 le 16").contains("ge <= le"));
        assert!(err("permit 10.0.0.0/8 le 24 le 25").contains("permit|deny"));
        assert!(serde_json::from_str::<PeerOptions>(r#"{"import":["permit x"]}"#).is_err());
    }

    #[test]
    fn bad_peer_options_are_refused_with_the_reason() {
        let with = |f: fn(&mut ExternalPeer)| {
            let mut p = tor();
            f(&mut p);
            p.validate("tor-a").expect_err("invalid")
        };
        assert!(with(|p| p.options.max_prefixes = Some(0)).contains("max-prefix 0"));
        assert!(with(|p| p.options.hold_time = Some(2)).contains("hold time"));
        assert!(with(|p| p.options.connect_retry = Some(0)).contains("connect retry"));
        assert!(with(|p| p.options.bfd_multiplier = Some(3)).contains("without BFD"));
        let e = with(|p| {
            p.bfd = true;
            p.options.bfd_interval_ms = Some(0);
        });
        assert!(e.contains("BFD interval 0"), "{e}");
        let e = with(|p| {
            p.bfd = true;
            p.options.bfd_multiplier = Some(0);
        });
        assert!(e.contains("multiplier"), "{e}");
        let e = with(|p| p.options.allow = vec!["10.244.1.5/24".parse().unwrap()]);
        assert!(e.contains("did you mean 10.244.1.0/24"), "{e}");
        let mut p = tor();
        p.options.hold_time = Some(0);
        p.validate("tor-a")
            .expect("hold time 0: no keepalives, allowed");
    }

    #[test]
    fn a_good_external_peer_passes() {
        tor().validate("tor-a").expect("valid");
        let mut p = tor();
        p.md5_key = Some("k".repeat(MAX_MD5_KEY_LEN));
        p.node = None;
        p.address = "fd00::fe".parse().expect("ip");
        p.asn = 4_200_000_000;
        p.validate("core.dc1_x").expect("valid");
    }

    #[test]
    fn bad_external_peers_are_refused_with_the_reason() {
        let err = |p: ExternalPeer, name: &str| p.validate(name).expect_err("invalid");
        assert!(err(tor(), "").contains("1 to 63"));
        assert!(err(tor(), &"a".repeat(64)).contains("1 to 63"));
        assert!(err(tor(), "tor/a").contains("'/'"));
        assert!(err(tor(), ".etc").contains("start and end"));
        assert!(err(tor(), "tor-").contains("start and end"));
        let with = |f: fn(&mut ExternalPeer)| {
            let mut p = tor();
            f(&mut p);
            p.validate("tor-a").expect_err("invalid")
        };
        assert!(with(|p| p.address = "0.0.0.0".parse().unwrap()).contains("unspecified"));
        assert!(with(|p| p.address = "ff02::1".parse().unwrap()).contains("multicast"));
        assert!(with(|p| p.asn = 0).contains("reserved"));
        assert!(with(|p| p.asn = AS_TRANS).contains("reserved"));
        assert!(with(|p| p.port = 0).contains("port 0"));
        assert!(with(|p| p.md5_key = Some(String::new())).contains("empty"));
        let e = with(|p| p.md5_key = Some("k".repeat(81)));
        assert!(e.contains("81 bytes") && e.contains("at most 80"), "{e}");
        assert!(with(|p| p.node = Some("h 1".into())).contains("node name"));
    }

    #[test]
    fn a_listed_peer_shows_whether_it_has_a_key_not_the_key() {
        let mut p = tor();
        p.md5_key = Some("secret".into());
        let entry = ExternalPeerEntry::new("tor-a", &p);
        let json = serde_json::to_string(&entry).expect("json");
        assert!(
            json.contains(r#""md5":true"#) && !json.contains("secret"),
            "{json}"
        );
    }

    #[test]
    fn node_bgp_reads_the_documented_json() {
        let bgp: NodeBgp = serde_json::from_str(
            r#"{"asn": 64512, "role": "rr", "cluster_id": "10.0.0.1", "router_id": "10.0.0.1", "port": 179}"#,
        )
        .expect("json");
        assert_eq!(bgp.role, BgpRole::Rr);
        assert_eq!(bgp.cluster_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(
            serde_json::from_str::<NodeBgp>(r#"{"asn":1,"role":"boss","router_id":"1.1.1.1"}"#)
                .is_err()
        );
    }
}
