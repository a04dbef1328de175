//! strait-api: the contract between `straitd` and its local clients (the `strait` CNI
//! plugin and `netctl`).
//!
//! The agent serves HTTP/1.1 with JSON bodies on a unix socket. This crate owns the
//! paths, the request/response types and a small blocking client. The client is
//! deliberately synchronous and dependency-light: the CNI plugin is exec'd once per call
//! and must start in well under a millisecond, so it carries no async runtime.
//!
//! It also holds the vocabulary those programs and the agent's own modules share:
//! [`MacAddr`] (the one MAC parser) and [`Family`]. What the agent stores for an
//! endpoint is its own versioned record, apart from [`Endpoint`]: changing a type here
//! changes the API, not the store.
//!
//! - [`paths`]: the API's paths; [`types`]: request and response bodies (CNI verbs,
//!   status, endpoints, IPAM, the fast path); [`routes`]: `netctl routes`;
//!   [`nodes`]: `netctl nodes`; [`bgp`]: the BGP fabric's records, peers and views;
//!   [`policy`]: network policy's views (`netctl policy`, `netctl monitor`);
//!   [`policy_wire`]: the policy API's requests and the monitor's lines;
//!   [`services`]: services' objects and views (`netctl service`).
//! - [`hostports`]: a container's ports published on its node (`portMappings`).
//! - [`docker`]: Docker's remote network and IPAM driver protocol, and `netctl docker`.
//! - [`ipsec`]: sites, the cluster's IPsec mode and the node keys records carry;
//!   [`gateway`]: site gateways and the external IPsec peers they connect to.
//! - [`client`]: the blocking client of the agent's socket.
//! - [`queue`]: the on-disk queue of DELs made while the agent is down (written by
//!   the plugin, read by the agent).
//! - [`mac`] and [`family`]: shared vocabulary; [`labels`]: Kubernetes' syntax of labels,
//!   namespaces and named ports, and label updates; [`endpoint_ref`]: which endpoint an
//!   operator's ID names.
//! - `fuzzing` (hidden): the fuzz targets' bodies, which reach the client's private
//!   parsers.

pub mod bgp;
pub mod client;
pub mod docker;
pub mod doctor;
pub mod endpoint_ref;
pub mod family;
/// The fuzz targets' bodies (fuzz/, tests/fuzz_smoke.rs); not the crate's API. They stay
/// here because they reach the client's private response parser; the mutation engine
/// that drives them in tests is the dev-only crate strait-fuzz-smoke.
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod hostports;
pub mod ipsec;
pub mod kube;
pub mod labels;
pub mod mac;
pub mod nodes;
pub mod origin;
pub mod policy;
pub mod policy_wire;
mod query;
pub mod queue;
pub mod routes;
pub mod services;
pub mod types;

pub use client::{Client, ClientError};
pub use family::Family;
pub use hostports::{HostPort, HostPortProtocol};
pub use mac::{MacAddr, ParseMacError};
pub use nodes::{NodeState, NodeView};
pub use origin::Origin;
pub use types::*;

/// Default path of the agent's unix socket.
pub const DEFAULT_SOCKET: &str = "/run/strait/strait.sock";
/// Default state directory of the agent (store file, pending-release queue).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/strait";
/// Directory under the state dir where the CNI plugin queues DELs while the agent is down.
pub const PENDING_RELEASE_DIR: &str = "pending-release";

/// URL paths served by the agent.
pub mod paths {
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const CNI_ADD: &str = "/v1/cni/add";
    pub const CNI_DEL: &str = "/v1/cni/del";
    pub const CNI_CHECK: &str = "/v1/cni/check";
    pub const CNI_STATUS: &str = "/v1/cni/status";
    pub const CNI_GC: &str = "/v1/cni/gc";
    pub const STATUS: &str = "/v1/status";
    pub const ENDPOINTS: &str = "/v1/endpoints";

    /// `POST` a [`LabelUpdate`](crate::labels::LabelUpdate) here to change the labels of
    /// the endpoint `id` names (an endpoint id, a container ID or a unique prefix).
    pub fn endpoint_labels(id: &str) -> String {
        format!("{ENDPOINTS}/{id}/labels")
    }
    pub const IPAM: &str = "/v1/ipam";
    /// `netctl docker networks`.
    pub const DOCKER_NETWORKS: &str = "/v1/docker/networks";
    pub const IPAM_CHECK: &str = "/v1/ipam/check";
    pub const IPAM_RELEASE: &str = "/v1/ipam/release";
    pub const NODES: &str = "/v1/nodes";
    /// `GET`: [`crate::doctor::DoctorReport`] (`?all_nodes=true&links_only=true`).
    pub const DOCTOR: &str = "/v1/doctor";
    pub const ROUTES: &str = "/v1/routes";
    pub const FAST_PATH: &str = "/v1/fastpath";
    pub const BGP_PEERS: &str = "/v1/bgp/peers";
    /// Routes the peers' import policies refused (`netctl bgp rib --refused`).
    pub const BGP_REFUSED: &str = "/v1/bgp/refused";
    /// The external peers in the store (`bgp/peers/`): GET lists them, and
    /// `PUT`/`DELETE` [`bgp_external_peer`]`(name)` adds or replaces and removes one.
    pub const BGP_EXTERNAL_PEERS: &str = "/v1/bgp/peers/external";

    /// The path of one external peer.
    pub fn bgp_external_peer(name: &str) -> String {
        format!("{BGP_EXTERNAL_PEERS}/{name}")
    }
    /// `?prefix=<cidr>` narrows it to one prefix.
    pub const BGP_RIB: &str = "/v1/bgp/rib";

    /// Policy objects: `POST` the documents' text (YAML or JSON) to apply them all or
    /// none, `GET` to list them; one object under [`policy_object`].
    pub const POLICIES: &str = "/v1/policies";
    /// `GET` or `DELETE` one policy object by its key as `list` names it
    /// (`policy/k8s/NS/NAME`, `policy/cluster/NAME`, `namespaces/NAME`).
    pub fn policy_object(key: &str) -> String {
        format!("{POLICIES}/{key}")
    }
    /// One endpoint's effective rules beside its kernel maps: [`policy_endpoint`].
    pub const POLICY_ENDPOINTS: &str = "/v1/policy/endpoints";
    pub fn policy_endpoint(id: &str) -> String {
        format!("{POLICY_ENDPOINTS}/{id}")
    }
    /// `POST` a [`crate::policy_wire::TraceRequest`].
    pub const POLICY_TRACE: &str = "/v1/policy/trace";
    /// The node's policy control plane (applied store revision).
    pub const POLICY_STATUS: &str = "/v1/policy/status";
    /// Flow events as NDJSON, one per line, until the client goes
    /// ([`crate::policy_wire::MonitorFilter`] as the query).
    pub const POLICY_MONITOR: &str = "/v1/policy/monitor";
    /// Services and EndpointSlices: `POST` the documents' text (YAML or JSON) to apply
    /// them all or none, `GET` for every service as this node serves it; one object
    /// under [`service_object`].
    pub const SERVICES: &str = "/v1/services";
    /// GET: the Kubernetes integration's watches and refusals
    /// ([`crate::kube::KubeStatusView`]).
    pub const KUBERNETES: &str = "/v1/kubernetes";
    /// `GET` or `DELETE` one object by its key (`services/NS/NAME`,
    /// `endpointslices/NS/NAME`).
    pub fn service_object(key: &str) -> String {
        format!("{SERVICES}/{key}")
    }
    /// `POST` a [`crate::services::ServiceTraceRequest`].
    pub const SERVICE_TRACE: &str = "/v1/service/trace";
    /// The cluster's [`crate::ipsec::IpsecSettings`]: `GET`, or `PUT` to change them.
    pub const IPSEC_SETTINGS: &str = "/v1/ipsec/settings";
    /// This node's [`crate::ipsec::IpsecStatus`].
    pub const IPSEC_STATUS: &str = "/v1/ipsec/status";
    /// The external IPsec peers ([`crate::gateway::ExternalPeer`], `ipsec/peers/`):
    /// `GET` lists them (pre-shared keys left out), `POST` a JSON array applies them
    /// all or none; one peer under [`ipsec_peer`].
    pub const IPSEC_PEERS: &str = "/v1/ipsec/peers";
    /// `GET` (key left out), `PUT` (create or replace whole) or `DELETE` one external
    /// peer.
    pub fn ipsec_peer(name: &str) -> String {
        format!("{IPSEC_PEERS}/{name}")
    }
    /// `POST` to rekey the Child SAs with one peer: [`ipsec_rekey`].
    pub fn ipsec_rekey(peer: &str) -> String {
        format!("/v1/ipsec/peers/{peer}/rekey")
    }
    /// `POST` to reauthenticate with one peer (a new IKE SA and Child SAs replace the
    /// old ones, RFC 7296 §2.8.3): [`ipsec_reauth`].
    pub fn ipsec_reauth(peer: &str) -> String {
        format!("/v1/ipsec/peers/{peer}/reauth")
    }
}
