//! Test harness for strait's eBPF programs (compiled only for tests): the fast path's
//! today, the policy and service programs' next.
//!
//! - [`btf`]: reads an object's BTF, for tests that tie a Rust mirror of a map layout
//!   or a counter enum to the object (no root needed).
//! - [`test_run`]: `BPF_PROG_TEST_RUN`, a loaded program run once over a packet the
//!   test built, giving back the verdict and the packet as the program left it.
//! - [`packet`]: Ethernet, IPv4 and IPv6 frames to run, and the header offsets to
//!   check the rewritten bytes at.
//! - [`TestNet`]: a namespace with devices at fixed ifindexes and MTUs, where
//!   the runs happen, so the helpers that look devices up (`bpf_check_mtu`,
//!   `bpf_redirect*`'s targets) find the ones the test's maps name.
//!
//! It lives in the agent because the agent loads the programs and fills their maps:
//! a program test loads the real embedded object through the agent's own loader and
//! writes its maps with the agent's own map code, so one test covers the layouts,
//! the keys the agent builds and the program's decisions. Running a program needs
//! root (`CAP_BPF`, `CAP_NET_ADMIN` for the namespace): such tests start with
//! [`privileged`], the shared guard, which skips visibly without root and fails under
//! `STRAIT_REQUIRE_PRIVILEGED=1`.

pub mod btf;
pub mod packet;
pub mod test_run;

use std::os::fd::{AsFd, OwnedFd};

use strait_testbeds::netns::Netns;

pub use test_run::{Run, SkbContext, TC_ACT_OK, TC_ACT_REDIRECT};

/// True when the test may load and run programs; prints a SKIP line otherwise (a
/// failure under `STRAIT_REQUIRE_PRIVILEGED=1`).
pub fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test)
}

/// A device made in a [`TestNet`]: an Ethernet bridge without ports, which needs no
/// peer and is in every kernel strait runs on (the dummy module may be absent).
#[derive(Debug, Clone, Copy)]
pub struct Device {
    pub name: &'static str,
    pub ifindex: u32,
    pub mtu: u32,
}

/// A network namespace of the test's own with [`Device`]s, deleted on drop. The
/// programs run inside it: a test run's skb belongs to the namespace of the thread
/// that starts it, and helpers resolve ifindexes there.
pub struct TestNet {
    ns: Netns,
}

impl TestNet {
    pub fn new(devices: &[Device]) -> Self {
        let ns = Netns::new(format!("{}bpf", strait_testbeds::unique_prefix()));
        for d in devices {
            let (index, mtu) = (d.ifindex.to_string(), d.mtu.to_string());
            ns.exec_ok(&[
                "ip", "link", "add", d.name, "index", &index, "mtu", &mtu, "type", "bridge",
            ]);
            ns.exec_ok(&["ip", "link", "set", d.name, "up"]);
        }
        Self { ns }
    }

    /// The namespace, for a test that adds addresses, routes or neighbours the
    /// program's lookups are to find, or attaches programs there.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Runs `prog` once over `packet` inside the namespace; panics if the kernel
    /// refuses to.
    pub fn run(&self, prog: &impl AsFd, packet: &[u8], ctx: SkbContext) -> Run {
        self.try_run(prog, packet, ctx)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN in {}: {e}", self.ns.name()))
    }

    /// [`TestNet::run`], with the kernel's refusal as an error: it checks the input
    /// (an IP frame shorter than its header, a context field it does not take)
    /// before the program runs.
    pub fn try_run(
        &self,
        prog: &impl AsFd,
        packet: &[u8],
        ctx: SkbContext,
    ) -> std::io::Result<Run> {
        let fd: OwnedFd = prog.as_fd().try_clone_to_owned()?;
        let packet = packet.to_vec();
        self.ns
            .run_in(move || test_run::run(fd.as_fd(), &packet, ctx))
    }
}
