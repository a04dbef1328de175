//! `netctl kubernetes`: what the agent's Kubernetes integration watches and what it
//! refused.

use serde::{Deserialize, Serialize};

/// `GET /v1/kubernetes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeStatusView {
    /// Whether this agent follows an API server at all.
    pub enabled: bool,
    /// Whether this agent writes the cluster's objects now (`leader/kubernetes`).
    pub leader: bool,
    /// One line per watched kind.
    pub kinds: Vec<KindView>,
    /// The API server's objects strait cannot express, cluster-wide.
    pub refused: Vec<Refusal>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindView {
    /// `NetworkPolicy`, `Namespace`, `Pod`.
    pub kind: String,
    /// Whether a complete list has been seen.
    pub synced: bool,
    pub objects: usize,
    /// Complete lists seen (the first, then one per watch that could not resume).
    pub lists: u64,
    /// Failed list or watch attempts.
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One object the integration did not write, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub kind: String,
    /// `namespace/name` or `name`.
    pub object: String,
    pub reason: String,
}
