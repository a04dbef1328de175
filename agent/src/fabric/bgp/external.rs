//! External BGP peers (`bgp/peers/<name>` in the cluster store): the owner of those
//! keys. `netctl bgp peer` writes them through here (via the API); every BGP node's
//! peering loop reads them from its watch, whatever agent wrote them.

use std::sync::Arc;

use strait_api::bgp::{ExternalPeer, ExternalPeerEntry, validate_name};
use tracing::info;

use super::peers_prefix;
use crate::store::{Store, StoreError};

/// Why a change to the external peers was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExternalPeerError {
    /// The request itself is wrong; nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("no external BGP peer named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The external peers in the cluster store.
#[derive(Clone)]
pub struct ExternalPeers {
    store: Arc<dyn Store>,
}

fn key(name: &str) -> String {
    format!("{}{name}", peers_prefix())
}

impl ExternalPeers {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Every peer, MD5 keys hidden (only whether one is set). An unreadable value is
    /// skipped, as the fabric skips it.
    pub async fn list(&self) -> Result<Vec<ExternalPeerEntry>, ExternalPeerError> {
        let prefix = peers_prefix();
        let range = self.store.range(&prefix).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&prefix)?;
                let peer: ExternalPeer = serde_json::from_slice(&kv.value).ok()?;
                Some(ExternalPeerEntry::new(name, &peer))
            })
            .collect())
    }

    /// Adds or replaces one peer; a peer that fails validation is refused whole.
    pub async fn put(
        &self,
        name: &str,
        peer: &ExternalPeer,
    ) -> Result<ExternalPeerEntry, ExternalPeerError> {
        peer.validate(name).map_err(ExternalPeerError::Invalid)?;
        let value = serde_json::to_vec(peer)
            .map_err(|e| ExternalPeerError::Invalid(format!("encoding peer: {e}")))?;
        self.store.put(&key(name), value, None).await?;
        info!(peer = %name, address = %peer.address, asn = peer.asn, "external BGP peer set");
        Ok(ExternalPeerEntry::new(name, peer))
    }

    /// Removes one peer; [`ExternalPeerError::NotFound`] when there is none of that name.
    pub async fn delete(&self, name: &str) -> Result<(), ExternalPeerError> {
        validate_name("peer name", name).map_err(ExternalPeerError::Invalid)?;
        if !self.store.delete(&key(name)).await? {
            return Err(ExternalPeerError::NotFound(name.to_string()));
        }
        info!(peer = %name, "external BGP peer removed");
        Ok(())
    }
}
