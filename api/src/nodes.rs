//! The node list the agent serves at [`crate::paths::NODES`] (`netctl nodes`).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::types::NodeRecord;

/// One node of the cluster: every node with a record (alive) and every node that still
/// has blocks affine to it (alive or not: a dead node keeps its blocks until the
/// reclaimer frees the empty ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// Whether the node's record (bound to its lease) exists.
    pub alive: bool,
    /// The record, while the node is alive.
    pub record: Option<NodeRecord>,
    /// Blocks affine to the node, in address order.
    pub blocks: Vec<IpNet>,
}
