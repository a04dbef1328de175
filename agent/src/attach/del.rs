//! CNI DEL: release everything of the attachment; succeed when nothing is left.

use strait_api::DelRequest;
use tracing::{debug, warn};

use super::events::EndpointEvent;
use super::records::attachment_id;
use super::validate::validate;
use super::{AttachError, Attacher};
use crate::endpoint;
use crate::hostnet::HostNet;

impl<K: HostNet> Attacher<K> {
    /// DEL: release everything of the attachment. Succeeds when there is nothing left
    /// to release.
    pub async fn del(&self, req: DelRequest) -> Result<(), AttachError> {
        validate(&req.network, &req.container_id, &req.ifname)?;
        let id = attachment_id(&req.network, &req.container_id, &req.ifname);
        let host_ifname = endpoint::host_ifname(&req.network, &req.container_id, &req.ifname);
        self.release_attachment(&id, &host_ifname).await
    }

    /// Releases the addresses and the record of `id` in one transaction and queues its
    /// host veth for deletion. Shared by DEL and CNI GC.
    pub(super) async fn release_attachment(
        &self,
        id: &str,
        host_ifname: &str,
    ) -> Result<(), AttachError> {
        let _guard = self.locks.lock(id).await;
        let t0 = std::time::Instant::now();
        let ep = self.records.get(id).await?;

        // The host routes stay until the veth goes (with them): an ADD that gets one of
        // these addresses meanwhile replaces its route. Removing them here would wait
        // for the kernel's rtnl lock behind the deletion of the previous veth.
        let link = ep
            .as_ref()
            .map(|e| e.host_ifname.clone())
            .unwrap_or_else(|| host_ifname.to_string());
        self.delete_link_in_background(link);

        // The record goes in the release's transaction (also when the reservation is
        // already gone).
        let drop_record = if ep.is_some() {
            vec![self.records.delete_op(id)]
        } else {
            Vec::new()
        };
        if let Err(e) = self.ipam.release_with(id, drop_record).await {
            warn!(%id, error = %e, "releasing addresses");
            return Err(e.into());
        }
        debug!(%id, took_ms = t0.elapsed().as_secs_f64() * 1e3, "released");
        Ok(())
    }

    /// Tells the subscribers the veth goes, and hands it to the link reaper (once:
    /// a name already queued is not queued again).
    pub(super) fn delete_link_in_background(&self, name: String) {
        self.publish(&EndpointEvent::Detached { host_ifname: &name });
        if !self.deleting.start(&name) {
            return;
        }
        if self.reaper.send(name.clone()).is_err() {
            // The reaper only stops with the runtime; the sweep will find the link.
            self.deleting.finish(&name);
        }
    }
}
