//! Start-up reconcile of the endpoint records against the kernel: a record whose
//! container namespace still exists but whose host interface is gone is released
//! (addresses and record in one transaction).
//!
//! Such a record is what an ADD leaves when the agent dies between writing it and
//! answering: the interface was never built, or its half-built pair was undone or
//! swept. It is removed rather than re-plumbed: the runtime never heard of these
//! addresses (its ADD got no answer), so it either retries the ADD — which then
//! succeeds afresh — or gives up and DELs; an interface re-built now would carry
//! addresses nobody was told about. A record whose namespace is gone is the leak GC's
//! (after its grace period), as before.

use std::path::Path;

use tracing::{info, warn};

use super::{AttachError, Attacher, in_flight};
use crate::hostnet::{HostNet, NetnsState};

impl<K: HostNet> Attacher<K> {
    /// Releases the records of interfaces gone from live namespaces; returns their ids.
    pub async fn release_records_without_interface(&self) -> Result<Vec<String>, AttachError> {
        let links = self.endpoint_link_names().await?;
        let mut released = Vec::new();
        for ep in self.records.list().await? {
            if links.contains(&ep.host_ifname)
                || in_flight(self, &ep.host_ifname)
                || self.host.netns_state(Path::new(&ep.netns)) != NetnsState::Usable
            {
                continue;
            }
            let _guard = self.locks.lock(&ep.id).await;
            // Looked at again under the attachment's lock: a DEL may have come first.
            if self.records.get(&ep.id).await?.is_none()
                || self.host_end_present(&ep.host_ifname).await?
            {
                continue;
            }
            let drop_record = vec![self.records.delete_op(&ep.id)];
            match self.ipam.release_with(&ep.id, drop_record).await {
                Ok(_) => released.push(ep.id),
                Err(e) => {
                    warn!(id = %ep.id, error = %e, "releasing a record without its interface")
                }
            }
        }
        if !released.is_empty() {
            info!(
                ?released,
                "released records whose interface was gone (ADDs that never answered)"
            );
        }
        Ok(released)
    }
}
