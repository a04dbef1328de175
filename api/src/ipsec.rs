//! IPsec between sites: the vocabulary the agent, `netctl` and the node records share.
//!
//! - A **site** is a place the cluster spans (a data centre, a cloud region), named by
//!   each agent's `--site`; nodes of one site trust the network between them.
//! - The cluster-wide [`IpsecMode`] (store key `ipsec/settings`, set by
//!   `netctl ipsec mode`) decides which node pairs encrypt: none, the pairs whose sites
//!   differ, or every pair.
//! - Each node's Ed25519 public key ([`NodeIpsec`], in its node record) is what the
//!   other nodes' IKE authenticates it by. The private key never leaves the node.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The site of an agent started without `--site`.
pub const DEFAULT_SITE: &str = "default";

/// Longest site name: a DNS label, so a site can name a host or a zone.
pub const MAX_SITE_LEN: usize = 63;

/// A site name is a DNS label: lowercase letters, digits and '-', not at either end.
pub fn validate_site(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SITE_LEN {
        return Err(format!(
            "site {name:?}: give 1 to {MAX_SITE_LEN} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "site {name:?}: {bad:?} is not allowed (lowercase letters, digits, '-')"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "site {name:?}: must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// The `site` of a record written before sites existed.
pub fn default_site() -> String {
    DEFAULT_SITE.to_string()
}

/// Which node pairs encrypt their traffic with IPsec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpsecMode {
    /// No pair: the fabric runs in clear (the default).
    #[default]
    Off,
    /// Every packet between nodes of different sites: the fabric's traffic and the
    /// agents' own BGP sessions. Nodes of one site talk in clear.
    CrossSite,
    /// Every node pair, whatever its sites.
    All,
}

impl IpsecMode {
    pub const ALL: [IpsecMode; 3] = [IpsecMode::Off, IpsecMode::CrossSite, IpsecMode::All];

    /// Whether traffic between a node of `site_a` and one of `site_b` is encrypted.
    pub fn encrypts(self, site_a: &str, site_b: &str) -> bool {
        match self {
            IpsecMode::Off => false,
            IpsecMode::CrossSite => site_a != site_b,
            IpsecMode::All => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpsecMode::Off => "off",
            IpsecMode::CrossSite => "cross-site",
            IpsecMode::All => "all",
        }
    }
}

impl fmt::Display for IpsecMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IpsecMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpsecMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("IPsec mode {s:?}: give off, cross-site or all"))
    }
}

/// The cluster-wide IPsec settings (`ipsec/settings`; `GET`/`PUT` at
/// [`crate::paths::IPSEC_SETTINGS`]). Absent means all defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecSettings {
    pub mode: IpsecMode,
}

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// What a node's record says of its IPsec identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are ignored, not refused: a node record written by a newer agent
// (as `gateway` was added) must still decode in an older one during an upgrade.
pub struct NodeIpsec {
    /// The node's Ed25519 public key (RFC 8032), 64 lowercase hex digits. Peers
    /// authenticate the node's IKE_AUTH signature (RFC 7427) with it.
    pub ed25519: String,
    /// The node is a gateway of its site (`--ipsec-gateway`): it connects the site to
    /// external IPsec peers ([`crate::gateway::ExternalPeer`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gateway: bool,
}

impl NodeIpsec {
    pub fn from_public_key(key: &[u8; ED25519_PUBLIC_KEY_LEN]) -> Self {
        let ed25519 = key.iter().map(|b| format!("{b:02x}")).collect();
        NodeIpsec {
            ed25519,
            gateway: false,
        }
    }

    /// The key as bytes; an error names what is wrong with a record that lies.
    pub fn public_key(&self) -> Result<[u8; ED25519_PUBLIC_KEY_LEN], String> {
        let hex = self.ed25519.as_bytes();
        if hex.len() != 2 * ED25519_PUBLIC_KEY_LEN {
            return Err(format!(
                "ed25519 key: {} hex digits, want {}",
                hex.len(),
                2 * ED25519_PUBLIC_KEY_LEN
            ));
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(format!(
                "ed25519 key: {:?} is not a lowercase hex digit",
                c as char
            )),
        };
        let mut key = [0u8; ED25519_PUBLIC_KEY_LEN];
        for (i, pair) in hex.chunks(2).enumerate() {
            key[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(key)
    }
}

/// `netctl ipsec status` (`GET` [`crate::paths::IPSEC_STATUS`]): this node's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecStatus {
    pub node: String,
    pub site: String,
    pub mode: IpsecMode,
    /// `userspace` or `kernel`; `None` while no pair needs encryption (nothing runs).
    pub datapath: Option<String>,
    /// Why the datapath was chosen ("kernel has no ESP", "--ipsec-datapath userspace").
    pub datapath_reason: Option<String>,
    /// The MTU containers get while encryption is on (the fabric's, less ESP's).
    pub mtu: Option<u32>,
    pub peers: Vec<IpsecPeer>,
    pub drops: EspDrops,
}

/// One peer this node encrypts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecPeer {
    pub name: String,
    pub site: String,
    /// Its IKE and ESP address.
    pub address: Option<std::net::SocketAddr>,
    /// The IKE SA's state (`established`, `connecting`, `rekeying`, `deleting`), or
    /// `none`.
    pub ike_state: String,
    pub initiator: bool,
    /// `AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE25519`-like, once negotiated.
    pub ike_algorithms: Option<String>,
    pub established_secs: Option<u64>,
    pub ike_rekeys: u32,
    pub child_rekeys: u32,
    /// Seconds since the last dead-peer-detection exchange.
    pub last_dpd_secs: Option<u64>,
    pub nat: bool,
    pub child_sas: Vec<ChildSaView>,
    /// The last failure: authentication refused, no key in its record, timed out.
    pub last_error: Option<String>,
    /// Totals since the agent started, over every SA there was (Prometheus counters).
    #[serde(default)]
    pub totals: PeerTotals,
}

/// What crossed the SAs with one peer since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTotals {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub replay_failures: u64,
    pub icv_failures: u64,
    pub child_rekeys: u64,
    pub auth_failures: u64,
}

/// One Child SA: both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSaView {
    /// SPIs as `ip xfrm` prints them.
    pub spi_in: String,
    pub spi_out: String,
    pub cipher: String,
    pub esn: bool,
    /// Whether new packets leave on this SA (the others are being replaced).
    pub active: bool,
    pub inbound: Option<SaCounters>,
    pub outbound: Option<SaCounters>,
    /// The negotiated traffic selectors, ours and the peer's (`10.244.0.0/16,
    /// 172.31.0.0/24`); empty from an agent that does not say.
    #[serde(default)]
    pub ts_local: String,
    #[serde(default)]
    pub ts_remote: String,
}

/// Counters of one SA direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Outbound: the last sequence number sent; inbound: the highest authenticated.
    pub seq: u64,
    pub replay_failures: u64,
    pub icv_failures: u64,
}

/// What the ESP datapath dropped rather than send in clear or deliver, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspDrops {
    pub no_route: u64,
    pub no_sa: u64,
    pub seal_failed: u64,
    pub unknown_spi: u64,
    pub inner_refused: u64,
    pub other: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_record_from_a_newer_agent_still_decodes() {
        let key = "ab".repeat(32);
        let newer = format!(r#"{{"ed25519":"{key}","gateway":true,"from_the_future":1}}"#);
        let n: NodeIpsec = serde_json::from_str(&newer).unwrap();
        assert!(n.gateway);
        let older: NodeIpsec = serde_json::from_str(&format!(r#"{{"ed25519":"{key}"}}"#)).unwrap();
        assert!(!older.gateway);
        assert!(!serde_json::to_string(&older).unwrap().contains("gateway"));
    }

    #[test]
    fn modes_pick_the_pairs_that_encrypt() {
        assert!(!IpsecMode::Off.encrypts("dc", "cloud"));
        assert!(IpsecMode::CrossSite.encrypts("dc", "cloud"));
        assert!(!IpsecMode::CrossSite.encrypts("dc", "dc"));
        assert!(IpsecMode::All.encrypts("dc", "dc"));
    }

    #[test]
    fn modes_parse_and_print_as_netctl_takes_them() {
        for m in IpsecMode::ALL {
            assert_eq!(m.as_str().parse::<IpsecMode>(), Ok(m));
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        let err = "cross_site".parse::<IpsecMode>().unwrap_err();
        assert!(err.contains("off, cross-site or all"), "{err}");
    }

    #[test]
    fn site_names_are_dns_labels() {
        for ok in ["default", "dc1", "eu-west-1", "a"] {
            assert_eq!(validate_site(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "1 to 63"),
            ("DC1", "'D'"),
            ("dc_1", "'_'"),
            ("-dc", "start and end"),
            ("dc-", "start and end"),
            ("dc/1", "'/'"),
        ] {
            let err = validate_site(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(validate_site(&"a".repeat(64)).is_err());
    }

    #[test]
    fn a_public_key_round_trips_and_a_lying_one_is_refused() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let rec = NodeIpsec::from_public_key(&key);
        assert_eq!(rec.ed25519.len(), 64);
        assert_eq!(rec.public_key(), Ok(key));
        for (bad, why) in [
            ("00".repeat(31), "62 hex digits"),
            (format!("{}zz", "00".repeat(31)), "'z'"),
            (format!("{}AB", "00".repeat(31)), "'A'"),
        ] {
            let err = NodeIpsec {
                ed25519: bad,
                gateway: false,
            }
            .public_key()
            .unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn settings_refuse_unknown_fields() {
        let s: IpsecSettings = serde_json::from_str(r#"{"mode":"cross-site"}"#).unwrap();
        assert_eq!(s.mode, IpsecMode::CrossSite);
        assert!(serde_json::from_str::<IpsecSettings>(r#"{"mode":"all","x":1}"#).is_err());
        assert!(serde_json::from_str::<IpsecSettings>(r#"{"mode":"sometimes"}"#).is_err());
    }
}
