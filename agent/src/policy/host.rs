//! What the policy control plane reads of this host's kernel: the ifindex of each
//! endpoint's host end (the datapath names endpoints by it) and the host's own
//! addresses (the ipcache's [`strait_policy::tables::IDENTITY_HOST`]). A trait, so
//! the control plane's tests run on a table in memory.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;

use crate::hostnet::HostNet;

#[async_trait]
pub trait PolicyHost: Send + Sync + 'static {
    /// strait's endpoint host ends now: name → ifindex.
    async fn endpoint_ifindexes(&self) -> Result<BTreeMap<String, u32>, String>;
    /// Every address in the agent's network namespace.
    async fn addresses(&self) -> Result<Vec<IpAddr>, String>;
}

/// The host as [`HostNet`] (netlink in the agent) sees it.
pub struct OnHost<K: HostNet>(pub K);

#[async_trait]
impl<K: HostNet> PolicyHost for OnHost<K> {
    async fn endpoint_ifindexes(&self) -> Result<BTreeMap<String, u32>, String> {
        let links = self.0.endpoint_links().await.map_err(|e| e.to_string())?;
        Ok(links.into_iter().map(|l| (l.name, l.index)).collect())
    }

    async fn addresses(&self) -> Result<Vec<IpAddr>, String> {
        let addrs = self.0.all_addresses().await.map_err(|e| e.to_string())?;
        Ok(addrs.into_iter().map(|a| a.ip).collect())
    }
}
