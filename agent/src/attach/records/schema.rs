//! The stored form of an endpoint record (`endpoints/<node>/<id>`): the agent's own
//! type, [`EndpointRecord`], apart from the API's [`strait_api::Endpoint`], so that
//! changing what `/v1/endpoints` shows does not change what is on disk, and the other
//! way round. Fields are typed ([`MacAddr`], [`PathBuf`], [`IpNet`]), so a record is
//! checked once, when it is read.
//!
//! # Versions
//!
//! Every record written carries `"version": N`. What each version is:
//!
//! - no `version` key (legacy): exactly the JSON of [`strait_api::Endpoint`], which
//!   agents wrote before the store had a type of its own. Read, never written: an agent
//!   upgraded in place finds its attachments as they were. Its MACs must parse as
//!   [`MacAddr`] (they were written in its text form).
//! - 1: the legacy fields under the same names, plus the marker. Labels and
//!   `host_ports` are left out when empty or false.
//! - 2 ([`EndpointRecord`]): version 1 plus the endpoint's policy facts: `namespace`
//!   (always written), `pod`, `named_ports` and `identity` (left out when absent or
//!   empty). A field-wise superset of 1, so both decode with the same struct: a
//!   version-1 or legacy record reads with namespace `default`, or with what its
//!   labels carried — agents before version 2 kept `CNI_ARGS`' `K8S_POD_NAMESPACE`
//!   and `K8S_POD_NAME` (and the other `K8S_*` keys) as labels, which they are not:
//!   they move to `namespace` and `pod`, and the rest of `K8S_*` is dropped
//!   ([`from_k8s_labels`]).
//! - 3: version 2 plus `port_mappings`, the host ports strait serves for the endpoint
//!   (left out when empty). `host_ports: true` stays what it was: an older plugin
//!   said there were host ports without saying which (a chained `portmap` serves
//!   them). A field-wise superset of 2, read with the same struct; a version-2 agent
//!   refuses it, which keeps it from rewriting the record without its host ports.
//!
//! A new version gets its own struct here and [`CURRENT_VERSION`] moves to it; older
//! versions keep decoding into the newest. A record of a version newer than this agent
//! knows (after a downgrade) is refused with its key named
//! ([`RecordError::UnknownVersion`]): guessing at fields a newer agent added could
//! release or rebuild the wrong thing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_api::{Endpoint, HostPort, MacAddr, NamedPort};

use super::RecordError;

/// The version [`encode`] writes.
pub const CURRENT_VERSION: u64 = 3;

/// One attachment as this node's store keeps it (version 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Stable id: derived from (network, containerID, ifname); also the key's last
    /// segment.
    pub id: String,
    pub node: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// The container's network namespace (CNI_NETNS at ADD).
    pub netns: PathBuf,
    /// Host-side veth name (`strait` + hash).
    pub host_ifname: String,
    /// Container-side MAC.
    pub mac: MacAddr,
    /// Host-side veth MAC (the gateway the container ARPs for).
    pub host_mac: MacAddr,
    /// The addresses IPAM gave, as full-length prefixes.
    pub ips: Vec<IpNet>,
    pub mtu: u32,
    /// Policy's namespace of the endpoint (`default` when the runtime gave none).
    #[serde(default = "strait_api::default_namespace")]
    pub namespace: String,
    /// The pod's name (`K8S_POD_NAME`), shown by `netctl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// What policy selectors match: from ADD, changed by `netctl endpoint label`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Ports the endpoint declares by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
    /// The identity of (namespace, labels), written by the policy control plane; kept
    /// as it is by everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<u32>,
    /// The IPAM handle holding the addresses.
    pub handle: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// An older plugin said ADD asked for host ports without saying which (a chained
    /// `portmap` serves them): the fast path leaves this veth alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ports: bool,
    /// The host ports strait serves for the endpoint (version 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<HostPort>,
}

/// The record with its version marker first, as [`encode`] writes it.
#[derive(Serialize)]
struct Versioned<'a> {
    version: u64,
    #[serde(flatten)]
    record: &'a EndpointRecord,
}

/// Only the marker, read before the rest so the rest is read as its version says.
#[derive(Deserialize)]
struct Marker {
    #[serde(default)]
    version: Option<u64>,
}

/// The stored bytes of `record`, in the current version.
pub fn encode(record: &EndpointRecord) -> Vec<u8> {
    let versioned = Versioned {
        version: CURRENT_VERSION,
        record,
    };
    // A struct of strings, numbers and maps with string keys always serialises.
    serde_json::to_vec(&versioned).unwrap_or_default()
}

/// The record stored under `key`, in whichever version it was written.
pub fn decode(key: &str, value: &[u8]) -> Result<EndpointRecord, RecordError> {
    let corrupt = |reason: String| RecordError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let marker: Marker = serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
    match marker.version {
        None => {
            let legacy: Endpoint =
                serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
            EndpointRecord::try_from(legacy)
                .map(from_k8s_labels)
                .map_err(corrupt)
        }
        Some(1) => serde_json::from_slice(value)
            .map(from_k8s_labels)
            .map_err(|e| corrupt(e.to_string())),
        Some(2 | 3) => serde_json::from_slice(value).map_err(|e| corrupt(e.to_string())),
        Some(version) => Err(RecordError::UnknownVersion {
            key: key.to_string(),
            version,
        }),
    }
}

/// A record of before version 2, whose labels held `CNI_ARGS`' `K8S_*` keys: the
/// namespace and pod move to their fields (a namespace Kubernetes would refuse stays
/// `default`), and no `K8S_*` key stays a label.
fn from_k8s_labels(mut r: EndpointRecord) -> EndpointRecord {
    if let Some(ns) = r.labels.get("K8S_POD_NAMESPACE")
        && strait_api::labels::validate_namespace(ns).is_ok()
    {
        r.namespace = ns.clone();
    }
    if let Some(pod) = r.labels.get("K8S_POD_NAME").filter(|p| !p.is_empty()) {
        r.pod = Some(pod.clone());
    }
    r.labels.retain(|k, _| !k.starts_with("K8S_"));
    r
}

/// The API's endpoint as a record; fails (with the reason) on a MAC that is not one.
impl TryFrom<Endpoint> for EndpointRecord {
    type Error = String;

    fn try_from(ep: Endpoint) -> Result<Self, String> {
        let mac =
            |what: &str, text: &str| text.parse::<MacAddr>().map_err(|e| format!("{what}: {e}"));
        Ok(Self {
            mac: mac("mac", &ep.mac)?,
            host_mac: mac("host_mac", &ep.host_mac)?,
            id: ep.id,
            node: ep.node,
            network: ep.network,
            container_id: ep.container_id,
            ifname: ep.ifname,
            netns: PathBuf::from(ep.netns),
            host_ifname: ep.host_ifname,
            ips: ep.ips,
            mtu: ep.mtu,
            namespace: ep.namespace,
            pod: ep.pod,
            labels: ep.labels,
            named_ports: ep.named_ports,
            identity: ep.identity,
            handle: ep.handle,
            created: ep.created,
            host_ports: ep.host_ports,
            port_mappings: ep.port_mappings,
        })
    }
}

/// The record as the API shows it.
impl From<EndpointRecord> for Endpoint {
    fn from(r: EndpointRecord) -> Self {
        Self {
            id: r.id,
            node: r.node,
            network: r.network,
            container_id: r.container_id,
            ifname: r.ifname,
            // Read from JSON text or built from a String: always UTF-8.
            netns: r.netns.to_string_lossy().into_owned(),
            host_ifname: r.host_ifname,
            mac: r.mac.to_string(),
            host_mac: r.host_mac.to_string(),
            ips: r.ips,
            mtu: r.mtu,
            namespace: r.namespace,
            pod: r.pod,
            labels: r.labels,
            named_ports: r.named_ports,
            identity: r.identity,
            handle: r.handle,
            created: r.created,
            host_ports: r.host_ports,
            port_mappings: r.port_mappings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/strait/v1/endpoints/node-a/strait-net.4f9d2c1a7b3e.eth0";

    /// Records as agents wrote them before this module existed: the output of
    /// `serde_json::to_vec(&strait_api::Endpoint)` (the old `EndpointRecords::put_op`),
    /// generated once from that code and pasted here. Do not regenerate: they stand for
    /// what is on disk at upgraded nodes.
    const LEGACY_WITH_LABELS_AND_HOST_PORTS: &str = r#"{"id":"strait-net.4f9d2c1a7b3e.eth0","node":"node-a","network":"strait-net","container_id":"4f9d2c1a7b3e","ifname":"eth0","netns":"/var/run/netns/cni-1c2d3e4f","host_ifname":"strait3a9f01c2","mac":"02:42:0a:01:00:05","host_mac":"ee:3a:9f:01:c2:7d","ips":["10.1.0.5/32","fd00:10::5/128"],"mtu":1450,"labels":{"K8S_POD_NAME":"web-0","K8S_POD_NAMESPACE":"default"},"handle":"strait-net.4f9d2c1a7b3e.eth0","created":1767225600,"host_ports":true}"#;
    const LEGACY_PLAIN: &str = r#"{"id":"strait-net.4f9d2c1a7b3e.eth0","node":"node-a","network":"strait-net","container_id":"4f9d2c1a7b3e","ifname":"eth0","netns":"/var/run/netns/cni-1c2d3e4f","host_ifname":"strait3a9f01c2","mac":"02:42:0a:01:00:05","host_mac":"ee:3a:9f:01:c2:7d","ips":["10.1.0.6/32"],"mtu":1450,"labels":{},"handle":"strait-net.4f9d2c1a7b3e.eth0","created":1767225600}"#;

    /// A record as version 1 wrote it (the legacy fields, the marker first, empty
    /// labels and false `host_ports` left out), with a label of its own beside the
    /// `K8S_*` ones agents then kept as labels.
    const V1_WITH_K8S_LABELS: &str = r#"{"version":1,"id":"strait-net.4f9d2c1a7b3e.eth0","node":"node-a","network":"strait-net","container_id":"4f9d2c1a7b3e","ifname":"eth0","netns":"/var/run/netns/cni-1c2d3e4f","host_ifname":"strait3a9f01c2","mac":"02:42:0a:01:00:05","host_mac":"ee:3a:9f:01:c2:7d","ips":["10.1.0.5/32"],"mtu":1450,"labels":{"K8S_POD_INFRA_CONTAINER_ID":"4f9d","K8S_POD_NAME":"web-0","K8S_POD_NAMESPACE":"shop","K8S_POD_UID":"u1","app":"web"},"handle":"strait-net.4f9d2c1a7b3e.eth0","created":1767225600}"#;

    /// The endpoint the first legacy fixture was made from, as the API types it.
    fn endpoint() -> Endpoint {
        Endpoint {
            id: "strait-net.4f9d2c1a7b3e.eth0".into(),
            node: "node-a".into(),
            network: "strait-net".into(),
            container_id: "4f9d2c1a7b3e".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/cni-1c2d3e4f".into(),
            host_ifname: "strait3a9f01c2".into(),
            mac: "02:42:0a:01:00:05".into(),
            host_mac: "ee:3a:9f:01:c2:7d".into(),
            ips: vec![
                "10.1.0.5/32".parse().unwrap(),
                "fd00:10::5/128".parse().unwrap(),
            ],
            mtu: 1450,
            labels: [
                ("K8S_POD_NAME".to_string(), "web-0".to_string()),
                ("K8S_POD_NAMESPACE".to_string(), "default".to_string()),
            ]
            .into(),
            handle: "strait-net.4f9d2c1a7b3e.eth0".into(),
            created: 1_767_225_600,
            host_ports: true,
            port_mappings: Vec::new(),
            namespace: "default".into(),
            pod: None,
            named_ports: Vec::new(),
            identity: None,
        }
    }

    /// An endpoint with every field of version 2 set.
    fn endpoint_v2() -> Endpoint {
        Endpoint {
            namespace: "shop".into(),
            pod: Some("web-0".into()),
            labels: [("app".to_string(), "web".to_string())].into(),
            named_ports: vec![NamedPort {
                name: "http".into(),
                protocol: strait_policy::ir::Protocol::TCP,
                port: 8080,
            }],
            identity: Some(4242),
            host_ports: false,
            port_mappings: vec![HostPort {
                host_port: 8080,
                container_port: 80,
                protocol: strait_api::HostPortProtocol::Tcp,
                host_ip: None,
            }],
            ..endpoint()
        }
    }

    #[test]
    fn legacy_records_read_back_equal() {
        // What the legacy record held, but its K8S_* labels are the pod's namespace and
        // name now, not labels.
        let ep = Endpoint {
            namespace: "default".into(),
            pod: Some("web-0".into()),
            labels: BTreeMap::new(),
            ..endpoint()
        };
        let read = decode(KEY, LEGACY_WITH_LABELS_AND_HOST_PORTS.as_bytes()).unwrap();
        assert_eq!(read.mac, MacAddr::new([0x02, 0x42, 0x0a, 0x01, 0x00, 0x05]));
        assert_eq!(read.netns, PathBuf::from("/var/run/netns/cni-1c2d3e4f"));
        assert_eq!(Endpoint::from(read), ep);

        let plain = Endpoint {
            ips: vec!["10.1.0.6/32".parse().unwrap()],
            pod: None,
            host_ports: false,
            ..ep
        };
        let read = decode(KEY, LEGACY_PLAIN.as_bytes()).unwrap();
        assert_eq!(Endpoint::from(read), plain);
    }

    #[test]
    fn version_1_records_read_with_their_k8s_labels_as_namespace_and_pod() {
        let read = decode(KEY, V1_WITH_K8S_LABELS.as_bytes()).unwrap();
        assert_eq!(read.namespace, "shop");
        assert_eq!(read.pod.as_deref(), Some("web-0"));
        assert_eq!(
            read.labels,
            BTreeMap::from([("app".to_string(), "web".to_string())]),
            "no K8S_* key stays a label"
        );
        assert!(read.named_ports.is_empty() && read.identity.is_none());

        // Without K8S_* labels: namespace default, the labels as they were.
        let plain = V1_WITH_K8S_LABELS.replace(
            r#""K8S_POD_INFRA_CONTAINER_ID":"4f9d","K8S_POD_NAME":"web-0","K8S_POD_NAMESPACE":"shop","K8S_POD_UID":"u1","#,
            "",
        );
        let read = decode(KEY, plain.as_bytes()).unwrap();
        assert_eq!(read.namespace, strait_policy::ir::DEFAULT_NAMESPACE);
        assert_eq!(read.pod, None);
        assert_eq!(read.labels.len(), 1);
    }

    #[test]
    fn records_are_written_with_the_version_and_read_back_equal() {
        let record = EndpointRecord::try_from(endpoint_v2()).unwrap();
        let bytes = encode(&record);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(json["port_mappings"][0]["host_port"], 8080);
        assert_eq!(json["mac"], "02:42:0a:01:00:05");
        assert_eq!(json["netns"], "/var/run/netns/cni-1c2d3e4f");
        assert_eq!(json["namespace"], "shop");
        assert_eq!(json["identity"], 4242);
        assert_eq!(json["named_ports"][0]["name"], "http");
        assert!(
            String::from_utf8(bytes.clone())
                .unwrap()
                .starts_with(r#"{"version":3,"id":"#),
            "the marker comes first"
        );
        assert_eq!(decode(KEY, &bytes).unwrap(), record);
        assert_eq!(Endpoint::from(decode(KEY, &bytes).unwrap()), endpoint_v2());

        // What is empty or absent is left out (bar the namespace), and reads back so.
        let plain = EndpointRecord {
            labels: BTreeMap::new(),
            host_ports: false,
            pod: None,
            named_ports: Vec::new(),
            identity: None,
            port_mappings: Vec::new(),
            ..record
        };
        let json: serde_json::Value = serde_json::from_slice(&encode(&plain)).unwrap();
        for absent in [
            "labels",
            "host_ports",
            "port_mappings",
            "pod",
            "named_ports",
            "identity",
        ] {
            assert!(json.get(absent).is_none(), "{absent}: {json}");
        }
        assert_eq!(json["namespace"], "shop");
        assert_eq!(decode(KEY, &encode(&plain)).unwrap(), plain);
    }

    #[test]
    fn a_newer_version_is_refused_naming_the_key() {
        let newer = LEGACY_PLAIN.replacen('{', r#"{"version":4,"#, 1);
        let err = decode(KEY, newer.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, RecordError::UnknownVersion { key, version: 4 } if key == KEY),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(KEY) && text.contains("version 4"), "{text}");
    }

    #[test]
    fn corrupt_records_name_the_key_and_the_reason() {
        let cases = [
            ("not json".to_string(), "expected"),
            (r#"{"version":"1"}"#.to_string(), "invalid type"),
            (r#"{"version":1,"id":"x"}"#.to_string(), "missing field"),
            (
                LEGACY_PLAIN.replace("02:42:0a:01:00:05", "02:42:0a:01:00"),
                "mac: MAC \"02:42:0a:01:00\" is not six hex pairs",
            ),
            (
                LEGACY_PLAIN.replace("ee:3a:9f:01:c2:7d", "host"),
                "host_mac: MAC \"host\" is not six hex pairs",
            ),
        ];
        for (value, reason) in cases {
            let err = decode(KEY, value.as_bytes()).unwrap_err();
            let RecordError::Corrupt { key, reason: got } = &err else {
                panic!("{value}: {err:?}");
            };
            assert_eq!(key, KEY);
            assert!(got.contains(reason), "{value}: {got}");
        }
    }
}
