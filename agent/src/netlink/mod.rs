//! The only code in strait that talks rtnetlink: a [`Netlink`] handle bound to one
//! network namespace, and small typed helpers for links, addresses, routes, neighbours
//! and the sysctls that go with them, VXLAN devices and their forwarding database,
//! policy-routing rules and routes in strait's own tables.
//!
//! A netlink socket stays bound to the namespace it was created in. So there is one
//! socket per namespace: [`Netlink::connect`] for the agent's own, and
//! [`Netlink::open_in`] for a container's, created on a throwaway thread inside that
//! namespace (see [`crate::netns`]) but registered with, and driven by, the main runtime.
//! After that no request ever needs `setns`.
//!
//! Ownership tags: every route strait installs carries [`RTPROT_STRAIT`], and every link
//! it creates is named with [`LINK_PREFIX`], so a restarted agent can find (adopt or
//! purge) exactly what is its own.
//!
//! Errors are one type, [`NetlinkError`]; idempotent removals go through
//! [`ignore_not_found`], idempotent creations through [`ignore_exists`].

mod addr;
mod batch;
mod error;
mod fdb;
mod fib;
mod link;
mod neigh;
mod route;
mod rule;
mod sysctl;
mod table;
mod vxlan;

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::netns::NetNs;

pub use addr::Address;
pub use batch::BatchRequest;
pub use error::{NetlinkError, ignore_exists, ignore_not_found};
pub use fdb::{FdbEntry, FdbWrite};
pub use fib::GatewayRoute;
pub use link::default_route_mtu;
pub use link::{Link, VethEnd, format_mac};
pub use neigh::Neighbour;
pub use route::{Route, RouteKind};
pub use rule::Rule;
pub use table::{TableRoute, TableRouteKind};
pub use vxlan::{Vxlan, VxlanSpec};

/// strait's route protocol number (`rtm_protocol`), the tag on every route strait
/// installs: `ip route show proto 83` lists them (a line `83 strait` in
/// `/etc/iproute2/rt_protos.d/strait.conf` makes iproute2 print the name). 83 is not
/// among iproute2's reserved numbers (0–4, 8–16, 18, 42, 99, 186–189, 192 in the
/// `rt_protos` Debian ships) nor the ones FRR's zebra (186–197) and Calico (80) use.
/// This is the one definition; every module tags and filters with it.
pub const RTPROT_STRAIT: u8 = 83;

/// Name prefix of every link strait creates.
pub const LINK_PREFIX: &str = "strait";

/// Where the network sysctls are unless `--proc-sys-dir` says otherwise.
pub const DEFAULT_PROC_SYS: &str = "/proc/sys";

/// A dump restarted by the kernel (`NLM_F_DUMP_INTR`: the table changed while it was
/// read) is retried this many times before giving up.
const DUMP_ATTEMPTS: usize = 3;

/// An rtnetlink connection bound to one network namespace.
///
/// Cheap to clone (clones share the socket). The connection task lives on the runtime
/// that opened it and ends once the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    netns: NetNs,
    /// The kernel runs one dump per socket at a time and refuses a second with EBUSY,
    /// so dumps on one connection (all its clones) take turns; other requests don't.
    dumps: Arc<tokio::sync::Mutex<()>>,
    /// The root this connection's sysctls are read and written under
    /// ([`Netlink::with_proc_sys`]).
    proc_sys: Arc<Path>,
}

impl Netlink {
    /// Opens a connection in the calling thread's namespace — for the agent, its own
    /// (host) namespace. Must be called inside a tokio runtime, which drives it.
    pub fn connect() -> Result<Self, NetlinkError> {
        let netns = NetNs::current_thread()?;
        let connect_err = |source| NetlinkError::Connect {
            netns: netns.path().to_path_buf(),
            source,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| connect_err(std::io::Error::other(e)))?;
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(connect_err)?;
        runtime.spawn(connection);
        Ok(Self {
            handle,
            netns,
            dumps: Default::default(),
            proc_sys: Path::new(DEFAULT_PROC_SYS).into(),
        })
    }

    /// Opens a connection inside `netns`: the namespace worker ([`crate::netns`])
    /// enters the namespace, creates the socket there, registers it with the current
    /// runtime and returns home. The
    /// socket stays bound to `netns`; everything else runs on the runtime as usual.
    pub async fn open_in(netns: &NetNs) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| NetlinkError::Connect {
            netns: netns.path().to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let handle = netns
            .run_async(move || {
                // Entering the runtime lets the socket register with its reactor; the
                // connection future is then spawned onto the runtime, not run here.
                // Nothing here may start a thread (e.g. `spawn_blocking`): it would be
                // born in, and stay in, the target namespace.
                let _entered = runtime.enter();
                let (connection, handle, _unsolicited) = rtnetlink::new_connection()?;
                runtime.spawn(connection);
                Ok::<_, std::io::Error>(handle)
            })
            .await?
            .map_err(|source| NetlinkError::Connect {
                netns: netns.path().to_path_buf(),
                source,
            })?;
        Ok(Self {
            handle,
            netns: netns.clone(),
            dumps: Default::default(),
            proc_sys: Path::new(DEFAULT_PROC_SYS).into(),
        })
    }

    /// The namespace this connection is bound to.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Reads and writes this namespace's sysctls under `dir` instead of /proc/sys: the
    /// host's /proc/sys/net mounted read-write elsewhere in a container whose own
    /// /proc/sys is read-only. `/proc/sys/net` shows the opener's namespace whichever
    /// procfs mount it is opened through, so the same root serves every namespace.
    pub fn with_proc_sys(mut self, dir: impl AsRef<Path>) -> Self {
        self.proc_sys = dir.as_ref().into();
        self
    }

    /// The root of this connection's sysctls (`/proc/sys` unless set).
    pub fn proc_sys(&self) -> &Path {
        &self.proc_sys
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    async fn ack(
        &self,
        op: &'static str,
        object: impl Display + Send + Sync,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut responses = handle
            .request(request)
            .map_err(|e| NetlinkError::Protocol {
                op,
                object: object.to_string(),
                detail: e.to_string(),
            })?;
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::Error(e) = response.payload
                && let Some(code) = e.code
            {
                return Err(NetlinkError::Kernel {
                    op,
                    object: object.to_string(),
                    errno: -code.get(),
                });
            }
        }
        Ok(())
    }

    /// Sends a request and collects every message of the answer (a dump, or the single
    /// answer of a get). Dumps that the kernel marks as interrupted are retried.
    async fn collect(
        &self,
        op: &'static str,
        object: impl Display + Send + Sync,
        message: RouteNetlinkMessage,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let _turn = if dump {
            Some(self.dumps.lock().await)
        } else {
            None
        };
        for _ in 0..DUMP_ATTEMPTS {
            let mut request = NetlinkMessage::from(message.clone());
            request.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
            let mut handle = self.handle.clone();
            let mut responses = handle
                .request(request)
                .map_err(|e| NetlinkError::Protocol {
                    op,
                    object: object.to_string(),
                    detail: e.to_string(),
                })?;
            let mut out = Vec::new();
            let mut interrupted = false;
            while let Some(response) = responses.next().await {
                interrupted |= response.header.flags & NLM_F_DUMP_INTR != 0;
                match response.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(NetlinkError::Kernel {
                                op,
                                object: object.to_string(),
                                errno: -code.get(),
                            });
                        }
                    }
                    NetlinkPayload::Overrun(_) => interrupted = true,
                    _ => {}
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NetlinkError::Protocol {
            op,
            object: object.to_string(),
            detail: format!("dump interrupted by concurrent changes {DUMP_ATTEMPTS} times"),
        })
    }
}
