//! straitd: the per-host agent of strait.
//!
//! One module per capability, each owning its state: [`store`] (cluster state, etcd v3
//! semantics), [`ipam`] (pools, blocks with node affinity, handles), [`netns`] and
//! [`netlink`] (the only code that touches the kernel's network configuration),
//! [`endpoint`] (a container's veth, addresses and routes), [`api`] (the local HTTP API
//! on a unix socket).

pub mod endpoint;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod store;
