//! The link reaper: deletes queued host veths in the background, in batches, and
//! tells anyone waiting (an ADD of the same name) when each is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::warn;

use super::lock;
use crate::hostnet::HostNet;

/// Host links queued for deletion, each with a flag that turns true once it is gone.
#[derive(Clone, Default)]
pub(super) struct Deleting(Arc<Mutex<HashMap<String, watch::Sender<bool>>>>);

impl Deleting {
    /// Marks `name` as being deleted; false when it already was.
    pub(super) fn start(&self, name: &str) -> bool {
        let mut map = lock(&self.0);
        if map.contains_key(name) {
            return false;
        }
        map.insert(name.to_string(), watch::channel(false).0);
        true
    }

    /// `name` is gone (or will not be deleted after all): wake its waiters.
    pub(super) fn finish(&self, name: &str) {
        if let Some(done) = lock(&self.0).remove(name) {
            let _ = done.send(true);
        }
    }

    /// A receiver that turns true once `name` is gone; `None` when it is not queued.
    pub(super) fn subscribe(&self, name: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.0).get(name).map(|tx| tx.subscribe())
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        lock(&self.0).contains_key(name)
    }
}

/// Deletes queued host veths, in batches. DELs that arrive while a deletion runs pile
/// up in the queue and go together in the next batch, so a burst of N DELs costs a few
/// kernel grace periods rather than N.
pub(super) async fn reap_links<K: HostNet>(
    host: K,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<String>,
    deleting: Deleting,
) {
    const MAX_BATCH: usize = 256;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(name) => batch.push(name),
                Err(_) => break,
            }
        }
        if let Err(e) = host.delete_links(&batch).await {
            warn!(links = ?batch, error = %e, "deleting veths; the stale-link sweep retries");
        }
        for name in &batch {
            deleting.finish(name);
        }
    }
}
