//! strait-testbeds: environments for tests that need the real kernel and the real
//! binaries.
//!
//! * [`netns`]: network namespaces named with a per-test unique prefix, deleted on drop
//!   (also on panic), and a reaper for leftovers of test processes that died.
//! * [`agent`]: a `straitd` process inside a namespace of the test's, with its own socket
//!   and state dir, killed by PID on drop, its log printed when the test fails.
//! * [`cni`]: exec the real `strait` CNI binary with CNI env and stdin.
//! * [`cluster`]: several hosts on an underlay (one or two L2 segments), each with its
//!   own `straitd`, one etcd, containers attached through `strait`; probes (ping,
//!   full-MTU ping, TCP echo, continuous ping). The `strait-testbed` CLI runs one for
//!   exploring by hand.
//! * [`netpol`]: the network-policy truth-table harness (model, prober, expected
//!   tables, runner).
//! * [`wait`]: [`wait_until`], polling for a condition with a timeout, for every test.
//! * [`host`]: a one-host bed (a namespace as the host, its agent, containers).
//! * [`etcd`]: a private etcd per test; [`peers`]: BIRD, FRR and gobgpd as BGP peers;
//!   [`runtimes`]: a private Podman and containerd driving `strait`; [`docker`]: a
//!   private dockerd in a host's namespace with that host's agent as its `strait`
//!   network driver.
//! * [`kube`]: a private `kube-apiserver` per test on its etcd (its own key prefix),
//!   with an admin kubeconfig, service-account kubeconfigs for RBAC, and `kubectl`.
//! * [`process`]: stopping what a test started, by PID only; [`bins`]: where the
//!   binaries under test are.
//! * [`esp`]: two ESP gateways joined by a veth line, with strait's userspace
//!   datapath or strongSwan's (kernel-libipsec) between them.
//! * [`gateway`]: a strait site with gateway hosts and strongSwan's charon as another
//!   vendor's gateway in front of a LAN.
//! * [`bench`]: what the benchmark programs share (iperf3 runs and servers, medians,
//!   busy CPU time).
//!
//! Privileged tests call [`require_root`] first: without root they print a visible
//! `SKIP` line (and `STRAIT_REQUIRE_PRIVILEGED=1`, set by CI, turns that into a failure).

pub mod agent;
pub mod bench;
pub mod bins;
pub mod cluster;
pub mod cni;
pub mod docker;
pub mod esp;
pub mod etcd;
pub mod gateway;
pub mod host;
pub mod kube;
pub mod netns;
pub mod netpol;
pub mod peers;
pub mod pki;
pub mod process;
pub mod runtimes;
pub mod services;
pub mod wait;
pub mod wire;

pub use wait::{WaitError, wait_until};

use std::sync::atomic::{AtomicU32, Ordering};

/// The repository's root: what tests of its files (`deploy/`, `docs/`, the README)
/// read from.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testbeds/ lies in the repository")
        .to_path_buf()
}

/// True when the test may go on; prints a visible skip line otherwise.
///
/// Under `STRAIT_REQUIRE_PRIVILEGED=1` a missing privilege is a failure, so CI can
/// never report a skipped privileged test as passed.
pub fn require_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false);
    if root {
        return true;
    }
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: needs root, and STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP: {test}: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
    false
}

/// A name prefix unique to this test process and call: `stt<pid hex><n>`, short enough
/// to leave room in a 15-byte interface name.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("stt{:x}x{n}", std::process::id())
}
