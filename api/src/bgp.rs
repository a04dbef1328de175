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
        Ok(())
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
        ExternalPeer {
            address: "10.0.0.253".parse().expect("ip"),
            asn: 65000,
            node: Some("h1".into()),
            md5_key: None,
            bfd: false,
            port: 179,
        }
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
