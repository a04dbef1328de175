//! Namespace-wide sysctls (`/proc/sys/net/...`), for what has no netlink interface.
//!
//! `/proc/sys/net` shows the network namespace of the *thread* that opens it, so each
//! write runs on the namespace worker inside the connection's namespace (see
//! [`crate::netns`]); the caller's thread, whichever it is, is never moved. The files
//! are looked for under the connection's [`Netlink::proc_sys`] root.

use std::io;
use std::path::Path;

use super::{Netlink, NetlinkError};
use crate::netns::NetNs;

async fn write(netns: &NetNs, root: &Path, key: &str, value: &str) -> Result<(), NetlinkError> {
    let path = root.join(key).display().to_string();
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

async fn forwarding_on(netns: &NetNs, root: &Path) -> Result<(), NetlinkError> {
    write(netns, root, "net/ipv4/ip_forward", "1").await?;
    match write(netns, root, "net/ipv6/conf/all/forwarding", "1").await {
        Err(NetlinkError::Sysctl { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            tracing::warn!("IPv6 is disabled in this kernel; only IPv4 forwarding enabled");
            Ok(())
        }
        other => other,
    }
}

impl Netlink {
    /// Writes `value` to `<proc_sys>/<key>` in this connection's namespace, e.g.
    /// `key = "net/ipv4/ip_forward"`. Keys are paths, not dotted names, because
    /// interface names may contain dots.
    pub async fn write_sysctl(&self, key: &str, value: &str) -> Result<(), NetlinkError> {
        write(self.netns(), self.proc_sys(), key, value).await
    }

    /// Turns on IPv4 and IPv6 forwarding in this connection's namespace — what every
    /// routed container interface depends on. Idempotent; the agent calls it once at
    /// start. A kernel booted without IPv6 (no `net/ipv6`) only gets IPv4.
    pub async fn enable_forwarding(&self) -> Result<(), NetlinkError> {
        forwarding_on(self.netns(), self.proc_sys()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sysctls_are_written_under_the_connections_root() {
        // The write runs on the namespace worker, whose setns(2) needs CAP_SYS_ADMIN.
        if !strait_testbeds::require_root("sysctls_are_written_under_the_connections_root") {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        for dir in ["net/ipv4/conf/strait0", "net/ipv6/conf/all"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let nl = Netlink::connect().unwrap().with_proc_sys(root.path());
        assert_eq!(nl.proc_sys(), root.path());
        nl.enable_forwarding().await.unwrap();
        nl.write_sysctl("net/ipv4/conf/strait0/proxy_arp", "1")
            .await
            .unwrap();
        for key in [
            "net/ipv4/ip_forward",
            "net/ipv6/conf/all/forwarding",
            "net/ipv4/conf/strait0/proxy_arp",
        ] {
            assert_eq!(
                std::fs::read_to_string(root.path().join(key)).unwrap(),
                "1",
                "{key}"
            );
        }
        // A root without the file: the error names the path under that root.
        let err = nl
            .write_sysctl("net/ipv4/conf/gone/proxy_arp", "1")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&root.path().join("net/ipv4/conf/gone").display().to_string()),
            "{err}"
        );
        // Without IPv6 only IPv4 forwarding is turned on, as on the real /proc/sys.
        let v4_only = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(v4_only.path().join("net/ipv4")).unwrap();
        let nl = nl.with_proc_sys(v4_only.path());
        nl.enable_forwarding().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(v4_only.path().join("net/ipv4/ip_forward")).unwrap(),
            "1"
        );
    }
}
