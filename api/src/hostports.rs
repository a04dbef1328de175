//! Host ports: a container's port published on its node's addresses (CNI
//! runtimeConfig `portMappings`), which strait serves with its services datapath
//! (docs/services.md, "Host ports"). The plugin sends them on ADD, the agent keeps
//! them in the endpoint record.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The protocols a host port can have (what the datapath translates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostPortProtocol {
    Tcp,
    Udp,
}

impl HostPortProtocol {
    /// `tcp` or `udp`, any case (runtimes differ); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for HostPortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// One mapping: `host_ip:host_port/protocol` on the node → the container's
/// `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: HostPortProtocol,
    /// One address of the node; absent: every underlay address of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

impl HostPort {
    /// Whether `self` and `other` want the same port of the node: same port and
    /// protocol, and the same address or either on every address.
    pub fn overlaps(&self, other: &HostPort) -> bool {
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            Some(IpAddr::V4(a)) => write!(f, "{a}:")?,
            None => {}
        }
        write!(
            f,
            "{}/{} → {}",
            self.host_port, self.protocol, self.container_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(port: u16, proto: HostPortProtocol, ip: Option<&str>) -> HostPort {
        HostPort {
            host_port: port,
            container_port: 80,
            protocol: proto,
            host_ip: ip.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn overlap_is_port_protocol_and_address() {
        use HostPortProtocol::{Tcp, Udp};
        assert!(hp(8080, Tcp, None).overlaps(&hp(8080, Tcp, None)));
        assert!(!hp(8080, Tcp, None).overlaps(&hp(8080, Udp, None)));
        assert!(!hp(8080, Tcp, None).overlaps(&hp(8081, Tcp, None)));
        // Every address covers each one.
        assert!(hp(8080, Tcp, None).overlaps(&hp(8080, Tcp, Some("10.0.0.1"))));
        assert!(hp(8080, Tcp, Some("10.0.0.1")).overlaps(&hp(8080, Tcp, None)));
        assert!(hp(8080, Tcp, Some("10.0.0.1")).overlaps(&hp(8080, Tcp, Some("10.0.0.1"))));
        assert!(!hp(8080, Tcp, Some("10.0.0.1")).overlaps(&hp(8080, Tcp, Some("10.0.0.2"))));
    }

    #[test]
    fn wire_form() {
        let h = hp(8080, HostPortProtocol::Udp, Some("10.0.0.1"));
        let j = serde_json::to_string(&h).unwrap();
        assert_eq!(
            j,
            r#"{"host_port":8080,"container_port":80,"protocol":"udp","host_ip":"10.0.0.1"}"#
        );
        assert_eq!(serde_json::from_str::<HostPort>(&j).unwrap(), h);
        assert_eq!(HostPortProtocol::parse("UDP"), Some(HostPortProtocol::Udp));
        assert_eq!(HostPortProtocol::parse("sctp"), None);
    }
}
