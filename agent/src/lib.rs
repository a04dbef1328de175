//! straitd: the per-host agent of strait.
//!
//! One module per capability, each owning its state (docs/architecture.md draws them
//! and the direction of calls):
//!
//! * [`store`]: cluster state with etcd v3 semantics, embedded (redb) or etcd.
//! * [`ipam`]: pools, blocks with node affinity, handles, release, check, reclaim.
//! * [`node`]: this node's record bound to its lease, the registry of all nodes,
//!   underlay detection, tunnel addresses.
//! * [`netns`] and [`netlink`]: the only code that touches the kernel's network
//!   configuration.
//! * [`endpoint`]: a container's veth, addresses, routes and neighbours.
//! * [`hostnet`]: the kernel as the attach lifecycle uses it, behind a trait, with an
//!   in-memory fake for unit tests.
//! * [`attach`]: the CNI lifecycle tying IPAM, the host and the endpoint records
//!   together; publishes endpoint events.
//! * [`fabric`]: VXLAN, host-gw and the BGP fabric, reconciled against the kernel.
//! * [`fastpath`]: the eBPF forwarding fast path; follows endpoint events.
//! * [`ipsec`]: sites, the cluster's IPsec mode, this node's IKE key.
//! * [`services`]: service load balancing; its socket-level eBPF datapath.
//! * [`api`]: the local HTTP API on a unix socket, decode → owner → encode.
//! * [`config`]: flags and the config file; [`metrics`]: Prometheus; [`private`]: the
//!   state dir and store modes (root's alone).
//! * [`daemon`]: wiring, start-up, shutdown.
//!
//! Test builds add `bpf_test`: the BPF_PROG_TEST_RUN harness (a BTF reader, the
//! test-run syscall, packet builders) that the fast path's program tests use.

pub mod api;
pub mod attach;
#[cfg(test)]
mod bpf_test;
pub mod config;
pub mod daemon;
pub mod docker;
pub mod doctor;
pub mod endpoint;
pub mod fabric;
pub mod fastpath;
pub mod hostnet;
pub mod ipam;
pub mod ipsec;
pub mod kube;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod node;
pub mod policy;
pub mod private;
pub mod services;
pub mod store;
