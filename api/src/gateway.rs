//! Site gateways and the external IPsec peers they connect to: the vocabulary the
//! agent, `netctl` and the store share.
//!
//! - A **gateway** is a node started with `--ipsec-gateway`; its node record says so
//!   ([`crate::ipsec::NodeIpsec::gateway`]). One gateway of a site is active for an
//!   external peer at a time; the others of the site take over when it dies.
//! - An **external peer** ([`ExternalPeer`], store key `ipsec/peers/<name>`) is another
//!   vendor's IPsec gateway (a cloud VPN gateway, a strongSwan box) at the far end of a
//!   site's line, with the networks behind it. It authenticates by pre-shared key or
//!   X.509 certificate; its pre-shared key is never shown back ([`ExternalPeer::redacted`]).

use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ipsec::validate_site;

pub mod documents;
pub use documents::{
    MAX_PEERS_PER_APPLY, parse_peer_documents, peer_from_json, peers_from_json, validate_all,
};

/// Longest external peer name: a DNS label, as sites are.
pub const MAX_PEER_NAME_LEN: usize = 63;

/// Shortest pre-shared key accepted: shorter ones are guessable offline from one
/// captured IKE_AUTH (RFC 7296 §2.15 asks for keys as strong as the negotiated prf).
pub const MIN_PSK_LEN: usize = 16;

/// An IPsec peer outside the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalPeer {
    /// A DNS label naming the peer in `netctl` and the store.
    pub name: String,
    /// The site whose gateways connect to it.
    pub site: String,
    /// The peer's IKE address (an IP address). `None`: strait only answers; the peer
    /// must initiate (from behind a NAT, say).
    #[serde(default)]
    pub address: Option<std::net::IpAddr>,
    /// Who initiates: strait, the peer, or both (whoever is first; the default).
    #[serde(default)]
    pub initiate: Initiate,
    /// How each side proves itself.
    pub auth: PeerAuth,
    /// Our IKE identity towards this peer (`fqdn:…`, `ipv4:…`, `dn:…`); default: the
    /// active gateway's underlay address as an ID_IPV4_ADDR.
    #[serde(default)]
    pub local_id: Option<String>,
    /// The identity the peer must prove (`fqdn:…`, `ipv4:…`, `dn:CN=…,O=…`); default:
    /// its address as an ID_IPV4_ADDR.
    #[serde(default)]
    pub remote_id: Option<String>,
    /// Local networks besides the site's container pools, offered as our traffic
    /// selectors.
    #[serde(default)]
    pub local_networks: Vec<IpNet>,
    /// The networks behind the peer, routed through the tunnel from every node of the
    /// site. With [`ExternalPeer::bgp`], learned routes come on top of these.
    #[serde(default)]
    pub remote_networks: Vec<IpNet>,
    /// BGP with a router behind the peer, through the tunnel.
    #[serde(default)]
    pub bgp: Option<PeerBgp>,
}

/// Who starts the IKE SA with an external peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Initiate {
    /// strait initiates, and also answers the peer.
    #[default]
    Both,
    /// Only strait initiates.
    Strait,
    /// strait only answers.
    Peer,
}

/// How strait and an external peer authenticate each other in IKE_AUTH. Its `Debug`
/// never shows a pre-shared key, so a peer logged with `?peer` leaks nothing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "method", deny_unknown_fields)]
pub enum PeerAuth {
    /// A pre-shared key (AUTH method 2), kept in the store or in a file on every
    /// gateway of the site. Exactly one of the two.
    Psk {
        /// The key itself. Never shown back by the API or `netctl`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        /// A file holding the key (absolute path; mode 0600 or stricter, owned by
        /// root); one trailing newline is ignored.
        #[serde(default)]
        secret_file: Option<PathBuf>,
    },
    /// X.509 certificates (RSA or ECDSA): ours and its key, and the CA the peer's
    /// certificate must chain to. PEM files on every gateway of the site.
    Cert {
        cert_file: PathBuf,
        key_file: PathBuf,
        ca_file: PathBuf,
    },
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAuth::Psk {
                secret,
                secret_file,
            } => f
                .debug_struct("Psk")
                .field("secret", &secret.as_ref().map(|_| "<redacted>"))
                .field("secret_file", secret_file)
                .finish(),
            PeerAuth::Cert {
                cert_file,
                key_file,
                ca_file,
            } => f
                .debug_struct("Cert")
                .field("cert_file", cert_file)
                .field("key_file", key_file)
                .field("ca_file", ca_file)
                .finish(),
        }
    }
}

/// BGP through the tunnel with a router behind the peer: strait announces the site's
/// container pools (and `local_networks`) and learns the networks behind the peer.
///
/// The session runs inside the tunnel between two "inside" addresses, as cloud VPN
/// gateways' BGP does: `local_address` lives on the carrying gateway (on the ESP
/// datapath's device) and joins our traffic selectors; the router's `address` joins
/// theirs. With BGP the selectors towards the peer are "any" of the router's family:
/// the routes, static and learned, decide what enters the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerBgp {
    /// The remote router's address (behind the peer; reached through the tunnel).
    pub address: std::net::IpAddr,
    /// The remote router's AS.
    pub asn: u32,
    /// Our end of the session: an address of no other use in the cluster, held by
    /// whichever gateway carries the peer.
    pub local_address: std::net::IpAddr,
    /// Our AS towards the router; [`DEFAULT_LOCAL_ASN`] when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
}

/// Our AS towards a router behind an external peer when the peer names none: the first
/// private AS, as Calico's default is.
pub const DEFAULT_LOCAL_ASN: u32 = 64512;

impl PeerBgp {
    pub fn local_asn(&self) -> u32 {
        self.local_asn.unwrap_or(DEFAULT_LOCAL_ASN)
    }
}

/// What the gateway carrying an external peer learned over BGP from the router behind
/// it: the value of `ipsec/learned/<peer>/<gateway node>`. Every node of the site
/// routes these networks through that gateway while it carries the peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedRoutes {
    pub networks: Vec<IpNet>,
}

impl ExternalPeer {
    /// Everything that can be checked without the files a path names.
    pub fn validate(&self) -> Result<(), String> {
        validate_peer_name(&self.name)?;
        validate_site(&self.site)?;
        if self.address.is_none() && self.initiate == Initiate::Strait {
            return Err(format!(
                "peer {}: strait cannot initiate without an address",
                self.name
            ));
        }
        match &self.auth {
            PeerAuth::Psk {
                secret,
                secret_file,
            } => match (secret, secret_file) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "peer {}: give the key or a file holding it, not both",
                        self.name
                    ));
                }
                (None, None) => {
                    return Err(format!(
                        "peer {}: psk needs a secret or a secret_file",
                        self.name
                    ));
                }
                (Some(s), None) if s.len() < MIN_PSK_LEN => {
                    return Err(format!(
                        "peer {}: the pre-shared key has {} characters; give at least {MIN_PSK_LEN}",
                        self.name,
                        s.len()
                    ));
                }
                (None, Some(p)) => absolute("secret_file", p)?,
                _ => {}
            },
            PeerAuth::Cert {
                cert_file,
                key_file,
                ca_file,
            } => {
                absolute("cert_file", cert_file)?;
                absolute("key_file", key_file)?;
                absolute("ca_file", ca_file)?;
            }
        }
        for id in self.local_id.iter().chain(&self.remote_id) {
            IdSpec::parse(id)?;
        }
        if self.remote_networks.is_empty() && self.bgp.is_none() {
            return Err(format!(
                "peer {}: give remote_networks, bgp, or both: nothing would go through the tunnel",
                self.name
            ));
        }
        if let Some(b) = &self.bgp {
            self.validate_bgp(b)?;
        }
        Ok(())
    }

    fn validate_bgp(&self, b: &PeerBgp) -> Result<(), String> {
        let name = &self.name;
        for asn in [b.asn, b.local_asn()] {
            if asn == 0 || asn == 23456 || asn == u32::MAX {
                return Err(format!("peer {name}: BGP AS {asn} is reserved"));
            }
        }
        if b.address.is_ipv4() != b.local_address.is_ipv4() {
            return Err(format!(
                "peer {name}: bgp address {} and local_address {} are of different families",
                b.address, b.local_address
            ));
        }
        if b.address == b.local_address {
            return Err(format!(
                "peer {name}: bgp address and local_address are both {}",
                b.address
            ));
        }
        for (what, a) in [("address", b.address), ("local_address", b.local_address)] {
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return Err(format!(
                    "peer {name}: bgp {what} {a} cannot be a BGP endpoint"
                ));
            }
        }
        if let Some(n) = self
            .remote_networks
            .iter()
            .chain(&self.local_networks)
            .find(|n| n.contains(&b.local_address))
        {
            return Err(format!(
                "peer {name}: bgp local_address {} is inside {n}; give an address of no other use",
                b.local_address
            ));
        }
        if self.address == Some(b.address) {
            return Err(format!(
                "peer {name}: the BGP router is reached through the tunnel, so it cannot be the peer's IKE address {}",
                b.address
            ));
        }
        Ok(())
    }

    /// The peer as the API and `netctl` show it: a pre-shared key kept in the store
    /// is left out (whether one is set shows as `secret_file: None` under `psk`).
    pub fn redacted(&self) -> ExternalPeer {
        let mut p = self.clone();
        if let PeerAuth::Psk { secret, .. } = &mut p.auth {
            *secret = None;
        }
        p
    }
}

fn absolute(what: &str, p: &std::path::Path) -> Result<(), String> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(format!("{what} {}: give an absolute path", p.display()))
    }
}

/// A peer name is a DNS label, like a site's.
pub fn validate_peer_name(name: &str) -> Result<(), String> {
    validate_site(name).map_err(|e| e.replacen("site", "peer name", 1))?;
    if name.len() > MAX_PEER_NAME_LEN {
        return Err(format!("peer name {name:?} is too long"));
    }
    Ok(())
}

/// An IKE identity as written in a peer's `local_id`/`remote_id`: `fqdn:NAME`,
/// `ipv4:ADDR`, `ipv6:ADDR`, `email:ADDR` or `dn:RDN,RDN,…` (the DN as OpenSSL and
/// strongSwan print it, e.g. `dn:CN=gw.example.com,O=Example`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSpec {
    Fqdn(String),
    Ipv4(std::net::Ipv4Addr),
    Ipv6(std::net::Ipv6Addr),
    Email(String),
    /// The DN's attributes in order, as (type, value): `[("CN", "gw"), ("O", "Ex")]`.
    Dn(Vec<(String, String)>),
}

impl IdSpec {
    pub fn parse(s: &str) -> Result<IdSpec, String> {
        let (kind, value) = s.split_once(':').ok_or_else(|| {
            format!("identity {s:?}: write fqdn:NAME, ipv4:ADDR, ipv6:ADDR, email:ADDR or dn:CN=…")
        })?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("identity {s:?}: nothing after {kind:?}"));
        }
        match kind {
            "fqdn" => Ok(IdSpec::Fqdn(value.to_string())),
            "email" => Ok(IdSpec::Email(value.to_string())),
            "ipv4" => value
                .parse()
                .map(IdSpec::Ipv4)
                .map_err(|_| format!("identity {s:?}: {value:?} is not an IPv4 address")),
            "ipv6" => value
                .parse()
                .map(IdSpec::Ipv6)
                .map_err(|_| format!("identity {s:?}: {value:?} is not an IPv6 address")),
            "dn" => {
                let mut rdns = Vec::new();
                for part in value.split(',') {
                    let (k, v) = part
                        .split_once('=')
                        .ok_or_else(|| format!("identity {s:?}: {part:?} is not TYPE=VALUE"))?;
                    let (k, v) = (k.trim(), v.trim());
                    if k.is_empty() || v.is_empty() {
                        return Err(format!("identity {s:?}: {part:?} is not TYPE=VALUE"));
                    }
                    rdns.push((k.to_string(), v.to_string()));
                }
                Ok(IdSpec::Dn(rdns))
            }
            other => Err(format!(
                "identity {s:?}: unknown kind {other:?} (fqdn, ipv4, ipv6, email, dn)"
            )),
        }
    }
}

impl fmt::Display for IdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSpec::Fqdn(s) => write!(f, "fqdn:{s}"),
            IdSpec::Email(s) => write!(f, "email:{s}"),
            IdSpec::Ipv4(a) => write!(f, "ipv4:{a}"),
            IdSpec::Ipv6(a) => write!(f, "ipv6:{a}"),
            IdSpec::Dn(rdns) => {
                write!(f, "dn:")?;
                for (i, (k, v)) in rdns.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> ExternalPeer {
        ExternalPeer {
            name: "onprem".into(),
            site: "dc".into(),
            address: Some("198.51.100.7".parse().unwrap()),
            initiate: Initiate::Both,
            auth: PeerAuth::Psk {
                secret: Some("correct horse battery".into()),
                secret_file: None,
            },
            local_id: None,
            remote_id: Some("fqdn:gw.onprem.example".into()),
            local_networks: vec![],
            remote_networks: vec!["192.168.50.0/24".parse().unwrap()],
            bgp: None,
        }
    }

    #[test]
    fn a_valid_peer_passes_and_its_key_is_never_shown_back() {
        let p = peer();
        p.validate().unwrap();
        let shown = serde_json::to_string(&p.redacted()).unwrap();
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains("\"method\":\"psk\""), "{shown}");
    }

    type Spoil = Box<dyn Fn(&mut ExternalPeer)>;

    #[test]
    fn bad_peers_are_refused_with_the_reason() {
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|p| p.name = "On Prem".into()), "not allowed"),
            (Box::new(|p| p.site = "".into()), "site"),
            (
                Box::new(|p| {
                    p.auth = PeerAuth::Psk {
                        secret: Some("short".into()),
                        secret_file: None,
                    }
                }),
                "at least 16",
            ),
            (
                Box::new(|p| {
                    p.auth = PeerAuth::Psk {
                        secret: None,
                        secret_file: None,
                    }
                }),
                "needs a secret",
            ),
            (
                Box::new(|p| {
                    p.auth = PeerAuth::Psk {
                        secret: None,
                        secret_file: Some("psk.txt".into()),
                    }
                }),
                "absolute path",
            ),
            (
                Box::new(|p| {
                    p.address = None;
                    p.initiate = Initiate::Strait;
                }),
                "without an address",
            ),
            (Box::new(|p| p.remote_networks.clear()), "nothing would go"),
            (Box::new(|p| p.remote_id = Some("gw".into())), "write fqdn:"),
            (
                Box::new(|p| p.remote_id = Some("dn:CN".into())),
                "TYPE=VALUE",
            ),
        ];
        for (spoil, want) in cases {
            let mut p = peer();
            spoil(&mut p);
            let e = p.validate().unwrap_err();
            assert!(e.contains(want), "{e} (want {want:?})");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", peer());
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn identities_parse_and_print_back() {
        for s in [
            "fqdn:gw.example.com",
            "ipv4:198.51.100.7",
            "ipv6:2001:db8::1",
            "email:ops@example.com",
            "dn:CN=gw.example.com,O=Example",
        ] {
            assert_eq!(IdSpec::parse(s).unwrap().to_string(), s);
        }
        assert!(IdSpec::parse("ipv4:gw").is_err());
        assert!(IdSpec::parse("x500:CN=a").is_err());
    }

    #[test]
    fn yaml_and_json_documents_read_the_same() {
        let yaml = "name: cloud\nsite: dc\naddress: 203.0.113.9\nauth:\n  method: cert\n  cert_file: /etc/strait/gw.pem\n  key_file: /etc/strait/gw.key\n  ca_file: /etc/strait/ca.pem\nremote_id: dn:CN=vpn.cloud.example\nbgp:\n  address: 10.9.0.1\n  asn: 64600\n  local_address: 169.254.100.1\n";
        let p: ExternalPeer = serde_yaml_ng::from_str(yaml).unwrap();
        p.validate().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: ExternalPeer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert!(
            serde_yaml_ng::from_str::<ExternalPeer>(
                "name: x\nsite: dc\nauth: {method: psk, secret: aaaaaaaaaaaaaaaaaa}\nbogus: 1\n"
            )
            .is_err()
        );
    }

    #[test]
    fn bgp_through_the_tunnel_is_checked_whole() {
        let with = |bgp: &str| -> Result<(), String> {
            let yaml = format!(
                "name: cloud\nsite: dc\naddress: 203.0.113.9\nauth: {{method: psk, secret: aaaaaaaaaaaaaaaaaa}}\nremote_networks: [10.9.0.0/24]\nbgp: {bgp}\n"
            );
            serde_yaml_ng::from_str::<ExternalPeer>(&yaml)
                .map_err(|e| e.to_string())?
                .validate()
        };
        let p: ExternalPeer = serde_yaml_ng::from_str(
            "name: c\nsite: dc\nauth: {method: psk, secret: aaaaaaaaaaaaaaaaaa}\nbgp: {address: 10.9.0.1, asn: 64600, local_address: 169.254.100.1}\n",
        )
        .unwrap();
        assert_eq!(p.bgp.as_ref().unwrap().local_asn(), DEFAULT_LOCAL_ASN);
        with("{address: 10.9.0.1, asn: 64600, local_address: 169.254.100.1, local_asn: 65001}")
            .unwrap();
        for (bgp, why) in [
            ("{address: 10.9.0.1, asn: 64600}", "local_address"),
            (
                "{address: 10.9.0.1, asn: 0, local_address: 169.254.100.1}",
                "reserved",
            ),
            (
                "{address: 10.9.0.1, asn: 64600, local_address: 169.254.100.1, local_asn: 23456}",
                "reserved",
            ),
            (
                "{address: 10.9.0.1, asn: 64600, local_address: 'fd00::1'}",
                "families",
            ),
            (
                "{address: 10.9.0.1, asn: 64600, local_address: 10.9.0.1}",
                "both",
            ),
            (
                "{address: 10.9.0.1, asn: 64600, local_address: 10.9.0.7}",
                "inside 10.9.0.0/24",
            ),
            (
                "{address: 203.0.113.9, asn: 64600, local_address: 169.254.100.1}",
                "IKE address",
            ),
            (
                "{address: 127.0.0.1, asn: 64600, local_address: 169.254.100.1}",
                "endpoint",
            ),
        ] {
            let e = with(bgp).expect_err(bgp);
            assert!(e.contains(why), "{bgp}: {e}");
        }
    }
}
