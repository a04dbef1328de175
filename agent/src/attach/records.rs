//! Endpoint records in the store: `endpoints/<node>/<id>`, one per attachment.
//!
//! The record is written in IPAM's allocation transaction on ADD and deleted in its
//! release transaction on DEL, so a record exists exactly when its addresses are
//! reserved. While ADD builds the veth, the record exists and the link does not yet:
//! the attachment's lock keeps CHECK and DEL out meanwhile.
//!
//! What is stored is the agent's own versioned [`EndpointRecord`] ([`schema`] says
//! which versions exist and how older ones still read); [`EndpointRecords`] takes and
//! gives the API's [`Endpoint`], converting at this boundary.

use std::sync::Arc;

use strait_api::Endpoint;
use tracing::error;

use crate::ipam::ExtraOps;
use crate::store::{PREFIX, Store, StoreError, TxnOp};

pub mod schema;

pub use schema::EndpointRecord;

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
    /// Written by a newer agent (this one was downgraded): not guessed at.
    #[error(
        "endpoint record {key} has version {version}, newer than this agent reads \
         (up to {}): run the newer agent, or delete the record",
        schema::CURRENT_VERSION
    )]
    UnknownVersion { key: String, version: u64 },
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
        let record = match EndpointRecord::try_from(ep.clone()) {
            Ok(record) => Ok(record),
            Err(reason) => {
                // attach writes its MACs with MacAddr's own text form, so this is a bug
                // there. Storing the API's form instead still keeps record and
                // addresses in one transaction (the addresses are not leaked), and the
                // read names the key and the reason.
                error!(key = %key, %reason, "endpoint is not a valid record; storing it unversioned");
                Err(ep)
            }
        };
        std::sync::Arc::new(move |ips: &[std::net::IpAddr]| {
            let ips = ips.iter().map(|ip| ipnet::IpNet::from(*ip)).collect();
            let value = match &record {
                Ok(record) => schema::encode(&EndpointRecord {
                    ips,
                    ..record.clone()
                }),
                Err(ep) => serde_json::to_vec(&Endpoint { ips, ..ep.clone() }).unwrap_or_default(),
            };
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
    schema::decode(key, value).map(Endpoint::from)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::store::Txn;
    use crate::store::embedded::EmbeddedStore;

    fn endpoint(id: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            node: "node-a".into(),
            network: "net".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/c1".into(),
            host_ifname: "strait0123abcd".into(),
            mac: "02:42:0a:01:00:05".into(),
            host_mac: "ee:01:23:ab:cd:ef".into(),
            ips: Vec::new(),
            mtu: 1500,
            labels: [("K8S_POD_NAME".to_string(), "web-0".to_string())].into(),
            handle: id.into(),
            created: 1_767_225_600,
            host_ports: false,
        }
    }

    async fn records(dir: &tempfile::TempDir) -> (EndpointRecords, Arc<dyn Store>) {
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store.redb"))
            .await
            .expect("store");
        (EndpointRecords::new(store.clone(), "node-a".into()), store)
    }

    #[tokio::test]
    async fn put_op_writes_a_versioned_record_that_reads_back_with_its_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (records, store) = records(&dir).await;
        let ips: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let ops = (records.put_op(endpoint("net.c1.eth0")))(&ips);
        store.txn(Txn::new().and_then(ops)).await.unwrap();

        let stored = store
            .get(&endpoint_key("node-a", "net.c1.eth0"))
            .await
            .unwrap()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(json["version"], schema::CURRENT_VERSION);

        let want = Endpoint {
            ips: vec![
                "10.1.0.5/32".parse().unwrap(),
                "fd00::5/128".parse().unwrap(),
            ],
            ..endpoint("net.c1.eth0")
        };
        assert_eq!(
            records.get("net.c1.eth0").await.unwrap(),
            Some(want.clone())
        );
        assert_eq!(records.list().await.unwrap(), vec![want]);
        assert!(records.delete("net.c1.eth0").await.unwrap());
        assert_eq!(records.get("net.c1.eth0").await.unwrap(), None);
    }

    #[tokio::test]
    async fn records_of_the_old_format_list_beside_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (records, store) = records(&dir).await;
        // What the agent stored before records had their own type: the API's JSON.
        let old = Endpoint {
            ips: vec!["10.1.0.4/32".parse().unwrap()],
            ..endpoint("net.c0.eth0")
        };
        store
            .put(
                &endpoint_key("node-a", "net.c0.eth0"),
                serde_json::to_vec(&old).unwrap(),
                None,
            )
            .await
            .unwrap();
        let ips: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap()];
        let ops = (records.put_op(endpoint("net.c1.eth0")))(&ips);
        store.txn(Txn::new().and_then(ops)).await.unwrap();

        let listed = records.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0], old);
        assert_eq!(listed[1].ips, vec!["10.1.0.5/32".parse().unwrap()]);
    }

    #[tokio::test]
    async fn a_record_of_a_newer_version_fails_the_read_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (records, store) = records(&dir).await;
        let key = endpoint_key("node-a", "net.c9.eth0");
        store
            .put(&key, br#"{"version":7,"id":"net.c9.eth0"}"#.to_vec(), None)
            .await
            .unwrap();
        for err in [
            records.get("net.c9.eth0").await.unwrap_err(),
            records.list().await.unwrap_err(),
        ] {
            assert!(
                matches!(&err, RecordError::UnknownVersion { key: k, version: 7 } if *k == key),
                "{err:?}"
            );
            assert!(err.to_string().contains(&key), "{err}");
        }
    }
}
