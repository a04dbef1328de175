//! DELs the CNI plugin queued on disk while the agent was down
//! ([`strait_api::queue`] writes and reads the queue), applied at start and
//! periodically.

use std::path::Path;

use tracing::{info, warn};

use super::Attacher;
use super::records::attachment_id;
use crate::hostnet::HostNet;

impl<K: HostNet> Attacher<K> {
    /// Applies the DELs queued under `state_dir`; returns how many were applied.
    pub async fn apply_pending_releases(&self, state_dir: &Path) -> usize {
        let queue = match strait_api::queue::pending(state_dir) {
            Ok(q) => q,
            Err(e) => {
                warn!(dir = %state_dir.display(), error = %e, "reading the pending-release queue");
                return 0;
            }
        };
        for bad in &queue.unreadable {
            // Kept for an operator rather than silently dropping a release.
            warn!(file = %bad.path.display(), error = %bad.error, "unreadable queued DEL; renamed to .bad");
        }
        let mut applied = 0;
        for queued in queue.requests {
            let req = &queued.request;
            // A DEL queued before the attachment was (re)created must not remove the
            // new one: the runtime may reuse a container ID and ifname.
            let id = attachment_id(&req.network, &req.container_id, &req.ifname);
            if let (Some(at), Ok(Some(ep))) = (queued.queued_at, self.records.get(&id).await)
                && ep.created > at
            {
                info!(%id, "dropping a queued DEL older than the attachment it names");
                queued.done();
                continue;
            }
            match self.del(req.clone()).await {
                Ok(()) => {
                    queued.done();
                    applied += 1;
                }
                Err(e) => {
                    warn!(file = %queued.path.display(), error = %e, "applying queued DEL; will retry")
                }
            }
        }
        applied
    }
}
