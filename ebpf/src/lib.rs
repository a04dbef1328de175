//! strait-ebpf: strait's eBPF programs, written in C (`src/*.c`), compiled by
//! `build.rs` with clang and embedded here as ELF objects for the agent to load with
//! aya.
//!
//! - [`FASTPATH`]: the forwarding fast path (tc ingress on container veths and on the
//!   fabric device).
//! - [`POLICY`]: network policy (tcx ingress and egress on container veths).
//! - [`SERVICES`]: the socket-level service load balancer (cgroup v2 `sock_addr`
//!   hooks).
//! - [`SERVICES_TC`]: packet-level service translation (tcx on the underlay
//!   interface) for node ports and external IPs reached from outside.
//!
//! The programs share `include/strait/abi.h` (every map key and value layout, the
//! reasons packets are counted under), `include/strait/maps.h` (the fast path's maps),
//! `include/strait/policy.h` (the policy maps and check) and
//! `include/strait/services.h` (the service maps and backend choice). The
//! agent mirrors them in its `fastpath::abi` module and checks the mirror against
//! the BTF of the object embedded here; its `bpf_test` module runs the programs
//! with `BPF_PROG_TEST_RUN` (docs/datapath.md).

/// ELF bytes with the 8-byte alignment the object parser wants for its headers
/// (`include_bytes!` alone guarantees 1).
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static FASTPATH_OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/fastpath.o")));

/// The fast path object: programs `strait_from_ep` and `strait_from_fab`, maps
/// `strait_fp_config`, `strait_fp_endpoints`, `strait_fp_tunnels` and `strait_fp_stats`.
pub static FASTPATH: &[u8] = &FASTPATH_OBJECT.0;

static POLICY_OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/policy.o")));

/// The policy object: programs `strait_pol_from_ep` and `strait_pol_to_ep`, the
/// policy maps of `include/strait/policy.h` (pinned by name, shared with
/// [`FASTPATH`], which runs the same ingress check before it delivers to an
/// endpoint).
pub static POLICY: &[u8] = &POLICY_OBJECT.0;

static SERVICES_OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/services.o")));

/// The services object: programs `strait_connect4`/`6`, `strait_sendmsg4`/`6`,
/// `strait_recvmsg4`/`6` and `strait_getpeer4`/`6` (cgroup `sock_addr`), the
/// service maps of `include/strait/services.h` (pinned by name).
pub static SERVICES: &[u8] = &SERVICES_OBJECT.0;

static SERVICES_TC_OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/services_tc.o")));

/// The packet-level services object: programs `strait_svc_from_net` and
/// `strait_svc_to_net` (tcx ingress and egress of the node's underlay interface),
/// the same pinned service maps as [`SERVICES`], which the agent loads first.
pub static SERVICES_TC: &[u8] = &SERVICES_TC_OBJECT.0;
