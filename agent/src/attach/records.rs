//! Endpoint records in the store: `endpoints/<node>/<id>`, one per attachment.
//!
//! The record is written last on ADD (after IPAM and the veth exist) and deleted last on
//! DEL, so a record always describes something that was fully set up.

use std::sync::Arc;

use strait_api::Endpoint;

use crate::store::{Compare, PREFIX, Store, StoreError, Txn, TxnOp};

/// The id of an attachment: also its IPAM handle. CNI names and container IDs are
/// limited to `[A-Za-z0-9_.-]`, so the id is safe as a key segment.
pub fn attachment_id(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}.{container_id}.{ifname}")
}

pub fn endpoints_prefix(node: &str) -> String {
    format!("{PREFIX}endpoints/{node}/")
}

pub fn endpoint_key(node: &str, id: &str) -> String {
    format!("{}{id}", endpoints_prefix(node))
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("endpoint record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("endpoint {0} already exists")]
    Exists(String),
}

/// Typed access to this node's endpoint records.
#[derive(Clone)]
pub struct EndpointRecords {
    store: Arc<dyn Store>,
    node: String,
}

impl EndpointRecords {
    pub fn new(store: Arc<dyn Store>, node: String) -> Self {
        Self { store, node }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Endpoint>, RecordError> {
        let key = endpoint_key(&self.node, id);
        match self.store.get(&key).await? {
            Some(kv) => decode(&key, &kv.value).map(Some),
            None => Ok(None),
        }
    }

    /// Create the record; fails with `Exists` if one is already there.
    pub async fn create(&self, ep: &Endpoint) -> Result<(), RecordError> {
        let key = endpoint_key(&self.node, &ep.id);
        let value = serde_json::to_vec(ep).map_err(|e| RecordError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        let resp = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([TxnOp::Put {
                        key: key.clone(),
                        value,
                        lease: None,
                    }]),
            )
            .await?;
        if resp.succeeded {
            Ok(())
        } else {
            Err(RecordError::Exists(ep.id.clone()))
        }
    }

    pub async fn delete(&self, id: &str) -> Result<bool, RecordError> {
        Ok(self.store.delete(&endpoint_key(&self.node, id)).await?)
    }

    /// Every endpoint of this node, sorted by id.
    pub async fn list(&self) -> Result<Vec<Endpoint>, RecordError> {
        let resp = self.store.range(&endpoints_prefix(&self.node)).await?;
        resp.kvs
            .iter()
            .map(|kv| decode(&kv.key, &kv.value))
            .collect()
    }
}

fn decode(key: &str, value: &[u8]) -> Result<Endpoint, RecordError> {
    serde_json::from_slice(value).map_err(|e| RecordError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}
