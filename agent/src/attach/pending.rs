//! DELs the CNI plugin queued on disk while the agent was down, and those the agent
//! queued itself while the store was unreachable ([`strait_api::queue`] writes and
//! reads the queue), applied at start and periodically; after the agent queued one,
//! retried every few seconds until the queue is empty.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
            // Not `del`, which would queue the request again.
            match self.release(req).await {
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

impl<K: HostNet> Attacher<K> {
    /// Starts a task (unless one runs) that applies the queue with a backoff of 1 to
    /// 5 s until it is empty: a DEL queued while the store is away is released soon
    /// after it returns, not at the next housekeeping round.
    pub(super) fn retry_queue_until_empty(&self) {
        let (Some(dir), Some(me)) = (self.cfg.state_dir.clone(), self.me.upgrade()) else {
            return;
        };
        if self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                tokio::time::sleep(delay).await;
                me.apply_pending_releases(&dir).await;
                // Cleared before looking, so a DEL queued after the look starts a
                // task of its own.
                me.draining.store(false, Ordering::Release);
                let empty = strait_api::queue::pending(&dir)
                    .map(|q| q.requests.is_empty())
                    // Unreadable: the housekeeping's rounds go on trying.
                    .unwrap_or(true);
                if empty || me.draining.swap(true, Ordering::AcqRel) {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
}
