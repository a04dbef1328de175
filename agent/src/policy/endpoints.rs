//! Endpoint records (`endpoints/<node>/<id>`, any node) as policy reads them: only
//! the fields policy needs, read leniently so that records of every schema version
//! (legacy, 1, and the ones with namespace, named ports and identity) read alike.
//! attach owns the records; policy writes one field only, `identity`
//! ([`identity_patch`]), by compare-and-swap on the record.

use ipnet::IpNet;
use serde::Deserialize;
use strait_policy::ir::{DEFAULT_NAMESPACE, Protocol};
use strait_policy::selector::Labels;
use strait_policy::view::{IdentityLabels, NamedPort};

use crate::store::PREFIX;

pub fn all_endpoints_prefix() -> String {
    format!("{PREFIX}endpoints/")
}

/// What policy needs of one endpoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFacts {
    pub id: String,
    pub node: String,
    pub host_ifname: String,
    pub ips: Vec<IpNet>,
    pub namespace: String,
    pub labels: Labels,
    pub named_ports: Vec<NamedPort>,
    pub identity: Option<u32>,
}

impl EndpointFacts {
    /// The label set its identity must stand for.
    pub fn identity_labels(&self) -> IdentityLabels {
        IdentityLabels {
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Lenient {
    id: String,
    node: String,
    host_ifname: String,
    #[serde(default)]
    ips: Vec<IpNet>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    named_ports: Vec<serde_json::Value>,
    #[serde(default)]
    identity: Option<u32>,
}

/// The (node, id) an endpoint key names.
pub fn node_and_id(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix("endpoints/")?;
    let (node, id) = rest.split_once('/')?;
    (!node.is_empty() && !id.is_empty() && !id.contains('/')).then_some((node, id))
}

/// Reads one record; `None` (logged by the caller) when it is not one.
pub fn decode(value: &[u8]) -> Result<EndpointFacts, String> {
    let r: Lenient = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    Ok(EndpointFacts {
        id: r.id,
        node: r.node,
        host_ifname: r.host_ifname,
        ips: r.ips,
        namespace: r
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        labels: r.labels,
        named_ports: r.named_ports.iter().filter_map(named_port).collect(),
        identity: r.identity,
    })
}

/// A named port as records carry it: `{name, protocol, port}` with the protocol a
/// number or a name (`TCP`, `udp`, `sctp`).
fn named_port(v: &serde_json::Value) -> Option<NamedPort> {
    let name = v.get("name")?.as_str()?.to_string();
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    let protocol = match v.get("protocol") {
        None | Some(serde_json::Value::Null) => Protocol::TCP,
        Some(p) => match (p.as_u64(), p.as_str()) {
            (Some(n), _) => Protocol(u8::try_from(n).ok()?),
            (_, Some(s)) => match s.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::TCP,
                "udp" => Protocol::UDP,
                "sctp" => Protocol::SCTP,
                _ => return None,
            },
            _ => return None,
        },
    };
    Some(NamedPort {
        name,
        protocol,
        port,
    })
}

/// The record's bytes with `identity` set to `id`, every other field as it was.
pub fn identity_patch(value: &[u8], id: u32) -> Result<Vec<u8>, String> {
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(value).map_err(|e| e.to_string())?;
    map.insert("identity".into(), serde_json::Value::from(id));
    serde_json::to_vec(&map).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_any_version_read_with_defaults() {
        let v1 = br#"{"version":1,"id":"n.c.eth0","node":"a","network":"n","host_ifname":"strait1","ips":["10.0.0.5/32"],"labels":{"app":"web"}}"#;
        let f = decode(v1).unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.identity, None);
        assert_eq!(f.labels["app"], "web");
        let newer = br#"{"version":2,"id":"x","node":"a","host_ifname":"s","namespace":"prod","identity":300,"named_ports":[{"name":"http","protocol":"TCP","port":8080},{"name":"dns","protocol":17,"port":53}]}"#;
        let f = decode(newer).unwrap();
        assert_eq!(f.namespace, "prod");
        assert_eq!(f.identity, Some(300));
        assert_eq!(
            f.named_ports,
            vec![
                NamedPort {
                    name: "http".into(),
                    protocol: Protocol::TCP,
                    port: 8080
                },
                NamedPort {
                    name: "dns".into(),
                    protocol: Protocol::UDP,
                    port: 53
                }
            ]
        );
        let patched = identity_patch(newer, 301).unwrap();
        let f2 = decode(&patched).unwrap();
        assert_eq!(f2.identity, Some(301));
        assert_eq!(
            FactsSansIdentity::from(&f2),
            FactsSansIdentity::from(&f),
            "only the identity changed"
        );
        assert_eq!(
            node_and_id("/strait/v1/endpoints/a/n.c.eth0"),
            Some(("a", "n.c.eth0"))
        );
    }

    #[derive(Debug, PartialEq)]
    struct FactsSansIdentity(EndpointFacts);
    impl From<&EndpointFacts> for FactsSansIdentity {
        fn from(f: &EndpointFacts) -> Self {
            Self(EndpointFacts {
                identity: None,
                ..f.clone()
            })
        }
    }
}
