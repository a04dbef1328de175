//! What can fail in an attachment operation. Which CNI code and HTTP status each
//! failure gets is decided at the API boundary (`crate::api::error`), not here.

use crate::endpoint::EndpointError;
use crate::ipam::IpamError;
use crate::store::StoreError;

use super::records::RecordError;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("agent is starting; try again")]
    Starting,
    #[error("attachment {0} already exists (a second ADD for the same containerID and ifname)")]
    Duplicate(String),
    #[error("network namespace {path}: {reason}")]
    BadNetns { path: String, reason: String },
    #[error("no such attachment {0}")]
    Unknown(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The network configuration cannot work here (an MTU too small for IPv6).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// Labels, a namespace or named ports Kubernetes would refuse, or a label update
    /// refused (a changed value without `--overwrite`).
    #[error("invalid labels: {0}")]
    InvalidLabels(String),
    /// A host port another endpoint of this node, or a service's node port, holds.
    #[error("{0}")]
    HostPortTaken(String),
    /// The endpoint is another node's: only that node's agent writes its record.
    #[error("endpoint {id} is on node {node}; change it through the agent on {node}")]
    OtherNode { id: String, node: String },
    /// Policy could not be put in place for the endpoint (the ADD is undone).
    #[error("network policy: {0}")]
    Policy(String),
    #[error("check failed for {id}: {reason}")]
    Check { id: String, reason: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("setting up the interface: {0}")]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
