//! Endpoint records (`endpoints/<node>/<id>`, any node) as policy reads them: the
//! facts policy needs, decoded by attach's record schema (so every version reads as
//! attach reads it). attach owns the records; policy writes one field only,
//! `identity` ([`identity_patch`]), by compare-and-swap on the record.

use ipnet::IpNet;
use strait_policy::selector::Labels;
use strait_policy::view::{IdentityLabels, NamedPort};

use crate::attach::records::schema;
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

/// The (node, id) an endpoint key names.
pub fn node_and_id(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix("endpoints/")?;
    let (node, id) = rest.split_once('/')?;
    (!node.is_empty() && !id.is_empty() && !id.contains('/')).then_some((node, id))
}

/// Reads one record, of any version attach reads.
pub fn decode(key: &str, value: &[u8]) -> Result<EndpointFacts, String> {
    let r = schema::decode(key, value).map_err(|e| e.to_string())?;
    Ok(EndpointFacts {
        id: r.id,
        node: r.node,
        host_ifname: r.host_ifname,
        ips: r.ips,
        namespace: r.namespace,
        labels: r.labels,
        named_ports: r.named_ports,
        identity: r.identity,
    })
}

/// The record's bytes with `identity` set to `id`, every other field as it was
/// (written in the current version).
pub fn identity_patch(key: &str, value: &[u8], id: u32) -> Result<Vec<u8>, String> {
    let mut r = schema::decode(key, value).map_err(|e| e.to_string())?;
    r.identity = Some(id);
    Ok(schema::encode(&r))
}

#[cfg(test)]
mod tests {
    use strait_policy::ir::Protocol;

    use super::*;

    const KEY: &str = "/strait/v1/endpoints/a/n.c.eth0";

    #[test]
    fn records_of_any_version_read_as_attach_reads_them() {
        let v1 = br#"{"version":1,"id":"n.c.eth0","node":"a","network":"n","container_id":"c","ifname":"eth0","netns":"/x","host_ifname":"strait1","mac":"02:00:00:00:00:01","host_mac":"02:00:00:00:00:02","ips":["10.0.0.5/32"],"mtu":1500,"labels":{"app":"web","K8S_POD_NAMESPACE":"shop"},"handle":"h","created":1}"#;
        let f = decode(KEY, v1).unwrap();
        assert_eq!(f.namespace, "shop", "K8S_POD_NAMESPACE is the namespace");
        assert_eq!(f.identity, None);
        assert_eq!(f.labels.len(), 1);
        let patched = identity_patch(KEY, v1, 301).unwrap();
        let f2 = decode(KEY, &patched).unwrap();
        assert_eq!(f2.identity, Some(301));
        assert_eq!(
            EndpointFacts {
                identity: None,
                ..f2
            },
            f,
            "only the identity changed"
        );
        let v2 = br#"{"version":2,"id":"n.c.eth0","node":"a","network":"n","container_id":"c","ifname":"eth0","netns":"/x","host_ifname":"strait1","mac":"02:00:00:00:00:01","host_mac":"02:00:00:00:00:02","ips":[],"mtu":1500,"namespace":"prod","named_ports":[{"name":"http","protocol":6,"port":8080}],"identity":300,"handle":"h","created":1}"#;
        let f = decode(KEY, v2).unwrap();
        assert_eq!((f.namespace.as_str(), f.identity), ("prod", Some(300)));
        assert_eq!(f.named_ports[0].protocol, Protocol::TCP);
        assert!(decode(KEY, b"{}").is_err());
        assert_eq!(node_and_id(KEY), Some(("a", "n.c.eth0")));
    }
}
