//! Network policy (docs/policy.md): strait's control plane for it (policies and
//! namespaces in the store, identities, the ipcache, compiling each local
//! endpoint's tables with `strait-policy`) and the eBPF datapath that enforces it.
//!
//! [`dataplane::Dataplane`] is the boundary between the two: the control plane
//! decides what the kernel should hold, the datapath module makes it so.

pub mod datapath;
pub mod dataplane;
