//! The node registry: this node's record in the cluster (`nodes/<node>`, a
//! [`strait_api::NodeRecord`] bound to the node's lease), where the other hosts learn
//! its underlay and tunnel addresses, and from whose absence they learn it is gone.
//!
//! - [`underlay`]: which interface and addresses carry this node's tunnel traffic;
//! - [`registry`]: the lease, the record, the keep-alive loop, and the list of live
//!   nodes (the `/v1/nodes` view).
//!
//! Leases carry liveness only: a node's blocks and addresses outlive its record, and
//! only the IPAM reclaimer (after a grace period) frees what a dead node left.
//!
//! The record is written twice, in one transaction: at `nodes/<node>` with the lease
//! (liveness) and at `node-records/<node>` without one (the last record, which outlives
//! the agent). Other hosts keep routing to a node whose lease expired by its last
//! record for as long as it owns blocks: an agent that is down (an upgrade, a crash
//! loop) must not cut its containers off. The reclaimer deletes the last record once
//! it has freed everything the node held.
//!
//! The VXLAN device's own addresses (the tunnel addresses a record carries) are IPAM's:
//! [`crate::ipam::tunnel`]. This module imports nothing from IPAM, so IPAM's reclaimer
//! can read the record keys here without an import circle.

pub mod leader;
pub mod probe;
pub mod registry;
pub mod underlay;

pub use registry::{FabricInfo, Keepalive, Registry, RegistryConfig, mark_unreachable, node_views};
pub use underlay::{Underlay, UnderlayError};

use crate::store::PREFIX;

/// Prefix of every node record.
pub fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}

/// `nodes/<node>`.
pub fn node_key(node: &str) -> String {
    format!("{}{node}", nodes_prefix())
}

/// The node a record key names.
pub fn node_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX)?
        .strip_prefix("nodes/")
        .filter(|n| !n.is_empty())
}

/// Prefix of every node's last record (no lease: it outlives the agent).
pub fn last_records_prefix() -> String {
    format!("{PREFIX}node-records/")
}

/// `node-records/<node>`.
pub fn last_record_key(node: &str) -> String {
    format!("{}{node}", last_records_prefix())
}

/// The node a last-record key names.
pub fn node_of_last_record_key(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX)?
        .strip_prefix("node-records/")
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_round_trip() {
        assert_eq!(node_key("h1"), "/strait/v1/nodes/h1");
        assert_eq!(node_of_key(&node_key("h1")), Some("h1"));
        assert_eq!(node_of_key(&nodes_prefix()), None);
        assert_eq!(node_of_key("/strait/v1/ipam/blocks/x"), None);
        assert_eq!(last_record_key("h1"), "/strait/v1/node-records/h1");
        assert_eq!(node_of_last_record_key(&last_record_key("h1")), Some("h1"));
        assert_eq!(node_of_last_record_key(&node_key("h1")), None);
        assert_eq!(node_of_key(&last_record_key("h1")), None);
    }
}
