//! The stale-link sweep: host links of endpoints that belong to no endpoint record
//! and no operation in flight (a crash mid-ADD, a killed agent) are deleted, at start
//! and periodically.

use std::collections::HashSet;

use tracing::{info, warn};

use super::{AttachError, Attacher, in_flight};
use crate::hostnet::HostNet;

impl<K: HostNet> Attacher<K> {
    /// Deletes the stale links; returns their names.
    pub async fn sweep_stale_links(&self) -> Result<Vec<String>, AttachError> {
        let known: HashSet<String> = self
            .records
            .list()
            .await?
            .into_iter()
            .map(|e| e.host_ifname)
            .collect();
        let mut removed = Vec::new();
        for (name, _) in self.host.endpoint_links().await? {
            // Read per link, after the listing: an ADD inserts into `creating` before
            // it creates the link, so a link seen here without a record and outside
            // `creating` was not made by a live operation.
            if known.contains(&name) || in_flight(self, &name) {
                continue;
            }
            match self.host.delete_link(&name).await {
                Ok(()) => removed.push(name),
                Err(e) => warn!(link = %name, error = %e, "removing stale link"),
            }
        }
        if !removed.is_empty() {
            info!(?removed, "removed stale links");
        }
        Ok(removed)
    }
}
