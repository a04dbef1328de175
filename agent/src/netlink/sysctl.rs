//! Namespace-wide sysctls (`/proc/sys/net/...`), for what has no netlink interface.
//!
//! `/proc/sys/net` shows the network namespace of the *thread* that opens it, so each
//! write runs on the namespace worker inside the connection's namespace (see
//! [`crate::netns`]); the caller's thread, whichever it is, is never moved.

use std::io;

use super::{Netlink, NetlinkError};
use crate::netns::NetNs;

/// [`Netlink::enable_forwarding`] for the calling thread's namespace (the agent's own),
/// for callers that hold no connection.
pub async fn enable_forwarding() -> Result<(), NetlinkError> {
    forwarding_on(&NetNs::current_thread()?).await
}

async fn write(netns: &NetNs, key: &str, value: &str) -> Result<(), NetlinkError> {
    let path = format!("/proc/sys/{key}");
    let (p, v) = (path.clone(), value.to_string());
    netns
        .run_async(move || std::fs::write(p, v))
        .await?
        .map_err(|source| NetlinkError::Sysctl {
            path,
            netns: netns.path().to_path_buf(),
            source,
        })
}

async fn forwarding_on(netns: &NetNs) -> Result<(), NetlinkError> {
    write(netns, "net/ipv4/ip_forward", "1").await?;
    match write(netns, "net/ipv6/conf/all/forwarding", "1").await {
        Err(NetlinkError::Sysctl { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            tracing::warn!("IPv6 is disabled in this kernel; only IPv4 forwarding enabled");
            Ok(())
        }
        other => other,
    }
}

impl Netlink {
    /// Writes `value` to `/proc/sys/<key>` in this connection's namespace, e.g.
    /// `key = "net/ipv4/ip_forward"`. Keys are paths, not dotted names, because
    /// interface names may contain dots.
    pub async fn write_sysctl(&self, key: &str, value: &str) -> Result<(), NetlinkError> {
        write(self.netns(), key, value).await
    }

    /// Turns on IPv4 and IPv6 forwarding in this connection's namespace — what every
    /// routed container interface depends on. Idempotent; the agent calls it once at
    /// start. A kernel booted without IPv6 (no `/proc/sys/net/ipv6`) only gets IPv4.
    pub async fn enable_forwarding(&self) -> Result<(), NetlinkError> {
        forwarding_on(self.netns()).await
    }
}
