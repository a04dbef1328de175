//! Services' views and answers (`netctl service …`): the stored objects, what an apply
//! wrote (with the addresses and ports the agent allocated), and per service its
//! frontends on this node with their backends, health and whether the datapath holds
//! them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::policy_wire::Change;

/// One stored object (`netctl service get`): a service or an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceObject {
    /// `services/NS/NAME` or `endpointslices/NS/NAME`.
    pub key: String,
    pub revision: i64,
    /// The document as it was applied.
    pub source: serde_json::Value,
    /// The normalized object, with the cluster IPs and node ports the agent gave it.
    pub normalized: serde_json::Value,
    /// Who wrote it: `netctl`, or the Kubernetes API server through the agent.
    #[serde(default, skip_serializing_if = "crate::Origin::is_netctl")]
    pub origin: crate::Origin,
}

/// The answer to `POST /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceApplyReport {
    /// The store revision of the write.
    pub revision: i64,
    pub objects: Vec<AppliedService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedService {
    pub key: String,
    pub change: Change,
    /// A service's cluster IPs and node ports, as allocated or given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_ports: Vec<u16>,
}

/// One service as this node serves it (`netctl service list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// `NS/NAME`.
    pub name: String,
    /// `ClusterIP` or `NodePort`.
    #[serde(rename = "type")]
    pub kind: String,
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    /// `80/TCP`, `80:30080/TCP` with a node port.
    pub ports: Vec<String>,
    pub frontends: Vec<FrontendView>,
}

/// One (address, port, protocol) the service answers on, on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendView {
    /// `10.96.0.10:80/TCP`.
    pub frontend: String,
    /// `ClusterIP`, `ExternalIP` or `NodePort`.
    pub scope: String,
    pub backends: Vec<BackendView>,
    /// Slots of its Maglev table (0: no usable backend: connections are refused).
    pub table_size: u32,
    /// Whether the datapath holds it as computed; `error` says why not.
    pub installed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub address: IpAddr,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ready: bool,
    /// The active health check's verdict; `None` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Whether it takes new connections on this frontend (ready, healthy, allowed by
    /// the traffic policy).
    pub usable: bool,
    /// Its share of the Maglev table's slots.
    pub slots: u32,
    /// Connections this node gave it on this frontend (socket connects, unconnected
    /// UDP datagrams, new flows from outside) since it last joined the table; 0
    /// while it is out of it. (Absent from an older agent: 0.)
    #[serde(default)]
    pub connections: u64,
    /// The endpoint id or `EndpointSlice NS/NAME` it came from.
    pub origin: String,
}

/// `POST /v1/services/trace`: where a connect to `to` goes from this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTraceRequest {
    /// `10.96.0.10:80`, `[fd00:96::a]:80`, with `/udp` for UDP (TCP otherwise).
    pub to: String,
}

/// The answer: the frontend, and every candidate backend with why it does or does
/// not take new connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTrace {
    pub frontend: String,
    /// `NS/NAME` and the port's name.
    pub service: String,
    pub port_name: String,
    pub scope: String,
    pub table_size: u32,
    /// How a backend is chosen, in words.
    pub choice: String,
    pub candidates: Vec<TraceCandidate>,
    /// Whether the datapath holds the frontend as planned; `error` says why not.
    pub installed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceCandidate {
    /// `10.244.0.2:8080`.
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub origin: String,
    pub usable: bool,
    /// Why it takes new connections or not, in words.
    pub why: String,
    pub slots: u32,
}
