//! A service as strait keeps it (`services/<namespace>/<name>` in the store) and an
//! EndpointSlice (`endpointslices/<namespace>/<name>`): the normalized form both
//! `netctl service apply` and, later, the Kubernetes watches produce. Serialized as
//! JSON; fields are named as in Kubernetes where Kubernetes has them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Kubernetes' default session affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_SECS: u32 = 10_800;
/// Kubernetes' longest (a day).
pub const MAX_AFFINITY_SECS: u32 = 86_400;
/// The node-port range Kubernetes allocates from by default.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30_000..=32_767;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ServiceKind,
    /// The virtual IPs, at most one per family, in the order given; empty until the
    /// agent allocates them from its service pool (the document gave none).
    #[serde(rename = "clusterIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<IpAddr>,
    /// The families the service wants, in order: the first is its primary.
    pub ip_families: Vec<Family>,
    pub ip_family_policy: FamilyPolicy,
    pub ports: Vec<ServicePort>,
    /// Endpoints of the service's namespace whose labels hold all of these are its
    /// backends. `None`: no selector (backends from EndpointSlices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// Addresses of this cluster's nodes (or routed to them) the service also answers
    /// on, on its ports.
    #[serde(rename = "externalIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    /// `sessionAffinity: ClientIP`: the timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_secs: Option<u32>,
    /// `internalTrafficPolicy: Local`: clients in the cluster reach only backends on
    /// their own node.
    #[serde(default)]
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: node ports and external IPs reach only backends
    /// on the node the traffic arrived at (and keep the client's address).
    #[serde(default)]
    pub external_local: bool,
    /// `publishNotReadyAddresses`: backends count whether ready or not.
    #[serde(default)]
    pub publish_not_ready: bool,
    /// An active check of every backend, beside readiness (`strait.io/health-check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

impl Service {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the document left the virtual IPs to the agent.
    pub fn needs_cluster_ips(&self) -> bool {
        self.cluster_ips.is_empty()
    }

    /// The ports whose node port the agent must still allocate.
    pub fn needs_node_ports(&self) -> bool {
        self.kind == ServiceKind::NodePort && self.ports.iter().any(|p| p.node_port.is_none())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceKind {
    ClusterIP,
    NodePort,
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    IPv4,
    IPv6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::IPv4,
            IpAddr::V6(_) => Self::IPv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IPv4 => "IPv4",
            Self::IPv6 => "IPv6",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    TCP,
    UDP,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::TCP => 6,
            Self::UDP => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TCP => "TCP",
            Self::UDP => "UDP",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Empty only when it is the service's one port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    /// NodePort services: the port on every node's addresses; `None` until the agent
    /// allocates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// Where on a backend a service port goes: a number, or the name of a port the
/// endpoint declares (its named ports, as a pod's `containerPort` names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// An active check, run by the agent of the node each backend lives on (or, for a
/// backend outside the cluster, by every node), beside the endpoint's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// How often, in milliseconds.
    pub interval_ms: u32,
    /// Failed checks in a row that take a backend out, and passed ones that bring it
    /// back.
    pub fall: u8,
    pub rise: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum CheckKind {
    /// A TCP connect to the backend's port.
    Tcp,
    /// An HTTP GET of `path` on the backend's port; a 2xx or 3xx answer passes.
    Http { path: String },
}

/// `discovery.k8s.io/v1` EndpointSlice: backends given by address, for a service by
/// name (`kubernetes.io/service-name`), inside or outside the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub family: Family,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

impl EndpointSlice {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlicePort {
    /// Matches the service port of the same name (empty: the unnamed one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: Protocol,
    /// `None`: the slice has no port for that name (its endpoints serve no such port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SliceEndpoint {
    /// The first of the endpoint's addresses: Kubernetes declares the others
    /// fungible, and every consumer uses the first.
    pub address: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The node it runs on, if it is one of the cluster's (traffic policy Local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}
