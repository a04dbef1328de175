//! Endpoint records in the store: `endpoints/<node>/<id>`, one per attachment.
//!
//! The record is written in IPAM's allocation transaction on ADD and deleted in its
//! release transaction on DEL, so a record exists exactly when its addresses are
//! reserved. While ADD builds the veth, the record exists and the link does not yet:
//! the attachment's lock keeps CHECK and DEL out meanwhile.

use std::sync::Arc;

use strait_api::Endpoint;

use crate::ipam::ExtraOps;
use crate::store::{PREFIX, Store, StoreError, TxnOp};

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

    /// The write of `ep` with the addresses IPAM picks, to ride in its allocation
    /// transaction ([`AllocRequest::extra`](crate::ipam::AllocRequest::extra)).
    pub fn put_op(&self, ep: Endpoint) -> ExtraOps {
        let key = endpoint_key(&self.node, &ep.id);
        std::sync::Arc::new(move |ips: &[std::net::IpAddr]| {
            let ep = Endpoint {
                ips: ips.iter().map(|ip| ipnet::IpNet::from(*ip)).collect(),
                ..ep.clone()
            };
            // Serialising a struct of strings and numbers cannot fail.
            let value = serde_json::to_vec(&ep).unwrap_or_default();
            vec![TxnOp::Put {
                key: key.clone(),
                value,
                lease: None,
            }]
        })
    }

    /// The deletion of the record of `id`, to ride in IPAM's release transaction.
    pub fn delete_op(&self, id: &str) -> TxnOp {
        TxnOp::Delete {
            key: endpoint_key(&self.node, id),
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
