//! CNI DEL: release everything of the attachment; succeed when nothing is left.

use std::path::Path;

use strait_api::DelRequest;
use tracing::{debug, info, warn};

use super::events::EndpointEvent;
use super::records::attachment_id;
use super::validate::validate;
use super::{AttachError, Attacher};
use crate::endpoint;
use crate::hostnet::HostNet;
use crate::ipam::IpamError;
use crate::store::StoreError;

impl<K: HostNet> Attacher<K> {
    /// DEL: release everything of the attachment. Succeeds when there is nothing left
    /// to release. With the store unreachable, the veth still goes, the release is
    /// queued on disk (as the plugin queues it with the agent down) and DEL succeeds:
    /// the runtime must not be left retrying a DEL it may give up on, leaking the
    /// addresses.
    pub async fn del(&self, req: DelRequest) -> Result<(), AttachError> {
        match self.release(&req).await {
            Err(e) if is_store_unavailable(&e) => match &self.cfg.state_dir {
                Some(dir) => self.queue_del(dir, &req, e),
                None => Err(e),
            },
            other => other,
        }
    }

    /// DEL without the queue: the store's errors are the caller's.
    pub(super) async fn release(&self, req: &DelRequest) -> Result<(), AttachError> {
        validate(&req.network, &req.container_id, &req.ifname)?;
        let id = attachment_id(&req.network, &req.container_id, &req.ifname);
        let host_ifname = endpoint::host_ifname(&req.network, &req.container_id, &req.ifname);
        self.release_attachment(&id, &host_ifname).await
    }

    /// The store is away: delete the veth now (the container's end goes with it), keep
    /// the release for later, and have the queue retried until the store is back.
    fn queue_del(
        &self,
        state_dir: &Path,
        req: &DelRequest,
        why: AttachError,
    ) -> Result<(), AttachError> {
        let host_ifname = endpoint::host_ifname(&req.network, &req.container_id, &req.ifname);
        self.delete_link_in_background(host_ifname);
        let path = match strait_api::queue::enqueue(state_dir, req) {
            Ok(path) => path,
            Err(e) => {
                // Not queued: the runtime hears the store's error and retries the DEL.
                warn!(dir = %strait_api::queue::dir(state_dir).display(), error = %e, "queueing a DEL while the store is unavailable");
                return Err(why);
            }
        };
        info!(file = %path.display(), error = %why, "store unavailable: interface deleted, release queued");
        self.retry_queue_until_empty();
        Ok(())
    }

    /// Removes the queued DEL of this attachment, if any: the caller made it moot.
    pub(super) fn forget_queued_del(&self, network: &str, container_id: &str, ifname: &str) {
        let Some(dir) = &self.cfg.state_dir else {
            return;
        };
        let req = DelRequest {
            network: network.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: None,
        };
        let path = strait_api::queue::dir(dir).join(strait_api::queue::file_name(&req));
        if let Err(e) = strait_api::queue::remove(&path) {
            warn!(file = %path.display(), error = %e, "removing a queued DEL made moot by an ADD");
        }
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

/// Whether `e` says the store cannot be reached (and nothing was released).
fn is_store_unavailable(e: &AttachError) -> bool {
    matches!(
        e,
        AttachError::Store(StoreError::Unavailable(_))
            | AttachError::Record(super::records::RecordError::Store(StoreError::Unavailable(
                _
            )))
            | AttachError::Ipam(IpamError::Store(StoreError::Unavailable(_)))
    )
}
