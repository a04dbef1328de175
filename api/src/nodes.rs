//! The node list the agent serves at [`crate::paths::NODES`] (`netctl nodes`).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::types::NodeRecord;

/// One node of the cluster: every node with a record (alive), every node whose last
/// record is kept, and every node that still has blocks affine to it (alive or not: a
/// dead node keeps its blocks until the reclaimer frees the empty ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// Whether the node's record (bound to its lease) exists.
    pub alive: bool,
    /// The live record; when the lease has expired, the last record the node wrote
    /// (what other hosts still route by), if it is kept.
    pub record: Option<NodeRecord>,
    /// Blocks affine to the node, in address order.
    pub blocks: Vec<IpNet>,
    /// What the cluster knows of the node. `None` from an agent older than this field:
    /// then `alive` is all there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NodeState>,
}

/// A node's state in the node list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Its lease is alive: the agent runs and reaches the store.
    Ready,
    /// Its lease has expired (the agent is down, or cut off from the store), but its
    /// last record is kept: other hosts keep their routes and FDB entries to it until
    /// the reclaimer frees its blocks. The host and its containers may be fine.
    LeaseExpired,
    /// Its lease has expired and none of its underlay addresses answers an ICMP echo
    /// (1 s): the host is down or cut off, not just its agent. Its routes are still
    /// kept until its blocks are reclaimed (a probe lost to a firewall must not cut
    /// containers off).
    Unreachable,
    /// No record at all, only blocks still affine to it: nothing routes to it.
    Gone,
}

impl NodeState {
    /// As `netctl nodes` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::LeaseExpired => "lease expired",
            NodeState::Unreachable => "unreachable",
            NodeState::Gone => "gone",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
