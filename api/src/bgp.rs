//! The BGP fabric's shared types (docs/bgp.md): what a node publishes in its record,
//! the external peers under `bgp/peers/<name>`, and what the agent serves at
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
