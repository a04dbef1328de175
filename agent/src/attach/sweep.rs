//! The stale-link sweep: host links of endpoints that belong to no endpoint record
//! and no operation in flight (a crash mid-ADD, a killed agent) are deleted, at start
//! and periodically.
//!
//! Only this agent's links: one whose alias carries another agent's owner mark
//! ([`super::owner`]) belongs to another store or node and is kept whatever this
//! agent's records say. A link with no mark was made by a strait from before the
//! marks (or by this one, crashing between creating and marking it) and is swept as
//! before: the agent holds its namespace's lock (`daemon`), so no other live agent
//! can own it.

use std::collections::HashSet;

use tracing::{debug, info, warn};

use super::{AttachError, Attacher, in_flight};
use crate::hostnet::HostNet;

impl<K: HostNet> Attacher<K> {
    /// Deletes the stale links; returns their names.
    pub async fn sweep_stale_links(&self) -> Result<Vec<String>, AttachError> {
        // Links first, records after. ADD writes its record (in IPAM's transaction)
        // before it creates the link, so a link listed here has its record in the
        // read below. The other way round, an ADD recorded after the read whose link
        // was made before the listing would be swept.
        let links = self.host.endpoint_links().await?;
        let known: HashSet<String> = self
            .records
            .list()
            .await?
            .into_iter()
            .map(|e| e.host_ifname)
            .collect();
        let mut removed = Vec::new();
        let mut others = Vec::new();
        for link in links {
            // Asked per link, after the record read: an ADD inserts into `creating`
            // before it creates the link and a DEL into `deleting` before it drops the
            // record, so a link seen here without a record and outside both was not
            // made (or unmade) by a live operation.
            if known.contains(&link.name) || in_flight(self, &link.name) {
                continue;
            }
            if link.owner.as_ref().is_some_and(|o| *o != self.cfg.owner) {
                others.push(link.name);
                continue;
            }
            match self.host.delete_link(&link.name).await {
                Ok(()) => removed.push(link.name),
                Err(e) => warn!(link = %link.name, error = %e, "removing stale link"),
            }
        }
        if !others.is_empty() {
            debug!(kept = ?others, "unrecorded links marked by another agent's store: not ours to remove");
        }
        if !removed.is_empty() {
            info!(?removed, "removed stale links");
        }
        Ok(removed)
    }
}
