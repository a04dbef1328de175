//! straitd: the per-host agent of strait.
//!
//! One module per capability, each owning its state: [`store`] (cluster state, etcd v3
//! semantics), [`ipam`] (pools, blocks with node affinity, handles), [`netns`] and
//! [`netlink`] (the only code that touches the kernel's network configuration),
//! [`endpoint`] (a container's veth, addresses and routes), [`attach`] (the CNI
//! lifecycle tying those together), [`api`] (the local HTTP API on a unix socket),
//! [`daemon`] (wiring, start-up, shutdown).

pub mod api;
pub mod attach;
#[cfg(test)]
mod bpf_test;
pub mod config;
pub mod daemon;
pub mod endpoint;
pub mod fabric;
pub mod fastpath;
pub mod ipam;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod node;
pub mod store;
