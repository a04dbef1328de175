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
use tracing::{error, warn};

use crate::ipam::ExtraOps;
use crate::store::{Compare, PREFIX, Store, StoreError, Txn, TxnOp};

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

/// What [`EndpointRecords::update`] did.
#[derive(Debug)]
pub enum Updated {
    /// Written; the endpoint as it is now.
    Done(Box<Endpoint>),
    /// There is no such record (any more).
    Gone,
    /// The change refused, saying why; nothing was written.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("endpoint record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// Others kept writing the record between each read and write of an update.
    #[error(
        "endpoint record {key} kept changing under {attempts} attempts to update it; try again"
    )]
    Contended { key: String, attempts: u32 },
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

    /// Change the record of `id` with `change` in a compare-and-swap on the revision
    /// it was read at, read again and retried while someone else (an ADD retrying over
    /// it, the policy control plane writing its identity) writes it in between.
    /// `change` refusing leaves the record as it is.
    pub async fn update(
        &self,
        id: &str,
        change: impl Fn(&mut EndpointRecord) -> Result<(), String>,
    ) -> Result<Updated, RecordError> {
        const ATTEMPTS: u32 = 16;
        let key = endpoint_key(&self.node, id);
        for _ in 0..ATTEMPTS {
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(Updated::Gone);
            };
            let mut record = schema::decode(&key, &kv.value)?;
            if let Err(reason) = change(&mut record) {
                return Ok(Updated::Refused(reason));
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), kv.mod_revision)])
                .and_then([TxnOp::Put {
                    key: key.clone(),
                    value: schema::encode(&record),
                    lease: kv.lease,
                }]);
            if self.store.txn(txn).await?.succeeded {
                return Ok(Updated::Done(Box::new(Endpoint::from(record))));
            }
        }
        Err(RecordError::Contended {
            key,
            attempts: ATTEMPTS,
        })
    }

    /// The endpoints of every node (to tell an operator which node owns one). A
    /// record that does not read is left out with a warning: one bad record of
    /// another node must not stop this node's operations.
    pub async fn list_cluster(&self) -> Result<Vec<Endpoint>, RecordError> {
        let resp = self.store.range(&format!("{PREFIX}endpoints/")).await?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| match decode(&kv.key, &kv.value) {
                Ok(ep) => Some(ep),
                Err(e) => {
                    warn!(error = %e, "skipping an endpoint record that does not read");
                    None
                }
            })
            .collect())
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
            namespace: "shop".into(),
            pod: Some("web-0".into()),
            labels: [("app".to_string(), "web".to_string())].into(),
            named_ports: Vec::new(),
            identity: None,
            handle: id.into(),
            created: 1_767_225_600,
            host_ports: false,
            port_mappings: Vec::new(),
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
            // What the API's JSON had then: no namespace or pod of its own.
            namespace: "default".into(),
            pod: None,
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

    #[tokio::test]
    async fn update_is_a_compare_and_swap_that_retries_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (records, store) = records(&dir).await;
        let ips: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap()];
        let ops = (records.put_op(endpoint("net.c1.eth0")))(&ips);
        store.txn(Txn::new().and_then(ops)).await.unwrap();
        let key = endpoint_key("node-a", "net.c1.eth0");

        // A writer that gets in between the first read and its write: the update
        // reads again and applies to what that writer wrote.
        let interfered = std::sync::atomic::AtomicBool::new(false);
        let store2 = store.clone();
        let key2 = key.clone();
        let change = |r: &mut EndpointRecord| {
            if !interfered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let mut other = r.clone();
                other.identity = Some(99);
                let value = schema::encode(&other);
                let (s, k) = (store2.clone(), key2.clone());
                // The closure is sync; the interfering write runs on its own thread.
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap()
                        .block_on(s.put(&k, value, None))
                        .unwrap();
                })
                .join()
                .unwrap();
            }
            r.labels.insert("tier".into(), "db".into());
            Ok(())
        };
        let Updated::Done(ep) = records.update("net.c1.eth0", change).await.unwrap() else {
            panic!("not updated");
        };
        assert_eq!(ep.labels["tier"], "db");
        assert_eq!(ep.identity, Some(99), "the other writer's change is kept");
        assert_eq!(ep.ips, vec!["10.1.0.5/32".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(records.get("net.c1.eth0").await.unwrap(), Some(*ep));

        // A refused change writes nothing.
        let before = store.get(&key).await.unwrap().unwrap().mod_revision;
        let r = records
            .update("net.c1.eth0", |_| Err("no".into()))
            .await
            .unwrap();
        assert!(matches!(r, Updated::Refused(ref m) if m == "no"), "{r:?}");
        assert_eq!(store.get(&key).await.unwrap().unwrap().mod_revision, before);
        let r = records.update("net.nope.eth0", |_| Ok(())).await.unwrap();
        assert!(matches!(r, Updated::Gone), "{r:?}");
    }
}
