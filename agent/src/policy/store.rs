//! Policy objects in the store: the documents `netctl policy apply` writes.
//!
//! Keys below `/strait/v1/`:
//! - `policy/<PolicyKey::store_suffix()>` (`policy/k8s/<ns>/<name>`,
//!   `policy/cluster/<name>`): `{"source": <the document as given>, "policy": <its
//!   normalized ir::Policy>}`;
//! - `namespaces/<name>`: `{"source": …, "labels": {…}}`.
//!
//! Every node compiles from the normalized form, so all agents agree on what a
//! document means whatever version parsed it; the source is kept for `get`.
//! [`PolicyStore::apply`] writes all documents of one apply in one transaction:
//! all or nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strait_api::Origin;
use strait_policy::ir::Policy;
use strait_policy::selector::Labels;

use crate::store::{PREFIX, Revision, Store, StoreError, Txn, TxnOp};

pub fn policies_prefix() -> String {
    format!("{PREFIX}policy/")
}

pub fn namespaces_prefix() -> String {
    format!("{PREFIX}namespaces/")
}

/// One document to write, as parsing made it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredDoc {
    Policy {
        source: serde_json::Value,
        policy: Policy,
    },
    Namespace {
        source: serde_json::Value,
        name: String,
        labels: Labels,
    },
}

impl From<strait_policy::Parsed> for StoredDoc {
    /// A parsed document as it is stored, its source kept.
    fn from(p: strait_policy::Parsed) -> Self {
        match p.document {
            strait_policy::Document::Policy(policy) => StoredDoc::Policy {
                source: p.source,
                policy,
            },
            strait_policy::Document::Namespace(ns) => StoredDoc::Namespace {
                source: p.source,
                name: ns.name,
                labels: ns.labels,
            },
        }
    }
}

impl StoredDoc {
    /// Its key, below `/strait/v1/` (`policy/k8s/ns/name`, `namespaces/name`).
    pub fn key(&self) -> String {
        match self {
            StoredDoc::Policy { policy, .. } => format!("policy/{}", policy.key.store_suffix()),
            StoredDoc::Namespace { name, .. } => format!("namespaces/{name}"),
        }
    }

    /// Its stored value, written by `origin`.
    pub fn value(&self, origin: Origin) -> Vec<u8> {
        let v = match self {
            StoredDoc::Policy { source, policy } => serde_json::to_vec(&PolicyValueRef {
                source,
                policy,
                origin,
            }),
            StoredDoc::Namespace { source, labels, .. } => serde_json::to_vec(&NamespaceValueRef {
                source,
                labels,
                origin,
            }),
        };
        // JSON values, strings and maps with string keys: always serialise.
        v.unwrap_or_default()
    }
}

#[derive(Serialize)]
struct PolicyValueRef<'a> {
    source: &'a serde_json::Value,
    policy: &'a Policy,
    #[serde(skip_serializing_if = "Origin::is_netctl")]
    origin: Origin,
}

#[derive(Serialize)]
struct NamespaceValueRef<'a> {
    source: &'a serde_json::Value,
    labels: &'a Labels,
    #[serde(skip_serializing_if = "Origin::is_netctl")]
    origin: Origin,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PolicyValue {
    pub source: serde_json::Value,
    pub policy: Policy,
    #[serde(default)]
    pub origin: Origin,
}

/// A stored namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NamespaceValue {
    pub source: serde_json::Value,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub origin: Origin,
}

/// One object as `get` and `list` return it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// Below `/strait/v1/`.
    pub key: String,
    pub revision: Revision,
    pub source: serde_json::Value,
    /// The normalized policy, or the namespace's labels, as JSON.
    pub normalized: serde_json::Value,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: stored value is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(
        "{0}: not a policy or namespace key (policy/k8s/NS/NAME, policy/cluster/NAME, namespaces/NAME)"
    )]
    BadKey(String),
    #[error("{0} appears twice in one apply")]
    Duplicate(String),
    #[error(
        "{0} comes from the Kubernetes API server, which owns it: change it with kubectl \
         (nothing was written)"
    )]
    OwnedByKubernetes(String),
}

/// Decodes a stored policy.
pub fn decode_policy(key: &str, value: &[u8]) -> Result<PolicyValue, PolicyStoreError> {
    serde_json::from_slice(value).map_err(|e| PolicyStoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes a stored namespace.
pub fn decode_namespace(key: &str, value: &[u8]) -> Result<NamespaceValue, PolicyStoreError> {
    serde_json::from_slice(value).map_err(|e| PolicyStoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// The namespace a `namespaces/<name>` key names.
pub fn namespace_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(&namespaces_prefix())
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

#[derive(Clone)]
pub struct PolicyStore {
    store: Arc<dyn Store>,
}

impl PolicyStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Writes every document and returns the store revision after them. A document
    /// named twice, or one the Kubernetes API server owns, refuses the whole apply
    /// before anything is written.
    pub async fn apply(&self, docs: &[StoredDoc]) -> Result<Revision, PolicyStoreError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut ops = Vec::with_capacity(docs.len());
        let owned = self.kubernetes_keys().await?;
        for doc in docs {
            let key = doc.key();
            if !seen.insert(key.clone()) {
                return Err(PolicyStoreError::Duplicate(key));
            }
            if owned.contains(&key) {
                return Err(PolicyStoreError::OwnedByKubernetes(key));
            }
            ops.push(TxnOp::Put {
                key: format!("{PREFIX}{key}"),
                value: doc.value(Origin::Netctl),
                lease: None,
            });
        }
        // One transaction, or, past etcd's limit of operations per transaction,
        // several in document order (a watcher may see the first before the last).
        let mut revision = None;
        for txn in Txn::packed(ops.into_iter().map(|op| (Vec::new(), vec![op]))) {
            revision = Some(self.store.txn(txn).await?.revision);
        }
        match revision {
            Some(r) => Ok(r),
            None => Ok(self.store.revision().await?),
        }
    }

    /// Deletes one object by its key below `/strait/v1/` (as `list` names it);
    /// returns whether it existed and the revision after.
    pub async fn delete(&self, key: &str) -> Result<(bool, Revision), PolicyStoreError> {
        let full = full_key(key)?;
        if let Some(o) = self.get(key).await?
            && o.origin == Origin::Kubernetes
        {
            return Err(PolicyStoreError::OwnedByKubernetes(o.key));
        }
        let resp = self
            .store
            .txn(Txn::new().and_then([TxnOp::Delete { key: full }]))
            .await?;
        let existed =
            matches!(resp.results.first(), Some(crate::store::TxnOpResult::Delete(n)) if *n > 0);
        Ok((existed, resp.revision))
    }

    pub async fn get(&self, key: &str) -> Result<Option<StoredObject>, PolicyStoreError> {
        let full = full_key(key)?;
        match self.store.get(&full).await? {
            Some(kv) => object(&kv.key, &kv.value, kv.mod_revision).map(Some),
            None => Ok(None),
        }
    }

    /// Every policy and namespace object, sorted by key.
    pub async fn list(&self) -> Result<Vec<StoredObject>, PolicyStoreError> {
        let mut out = Vec::new();
        for prefix in [policies_prefix(), namespaces_prefix()] {
            for kv in self.store.range(&prefix).await?.kvs {
                out.push(object(&kv.key, &kv.value, kv.mod_revision)?);
            }
        }
        Ok(out)
    }

    /// The keys (below `/strait/v1/`) of the objects the Kubernetes integration wrote.
    async fn kubernetes_keys(
        &self,
    ) -> Result<std::collections::BTreeSet<String>, PolicyStoreError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|o| o.origin == Origin::Kubernetes)
            .map(|o| o.key)
            .collect())
    }

    /// The normalized policies, by store key.
    pub async fn policies(&self) -> Result<BTreeMap<String, Policy>, PolicyStoreError> {
        let mut out = BTreeMap::new();
        for kv in self.store.range(&policies_prefix()).await?.kvs {
            out.insert(kv.key.clone(), decode_policy(&kv.key, &kv.value)?.policy);
        }
        Ok(out)
    }
}

/// `policy/...` or `namespaces/...` (with or without the `/strait/v1/` root) as a
/// full key; anything else is refused.
pub fn full_key(key: &str) -> Result<String, PolicyStoreError> {
    let short = key.strip_prefix(PREFIX).unwrap_or(key);
    let ok = match short.split('/').collect::<Vec<_>>().as_slice() {
        ["policy", "k8s", ns, name] => !ns.is_empty() && !name.is_empty(),
        ["policy", "cluster", name] | ["namespaces", name] => !name.is_empty(),
        _ => false,
    };
    if ok {
        Ok(format!("{PREFIX}{short}"))
    } else {
        Err(PolicyStoreError::BadKey(key.to_string()))
    }
}

fn object(key: &str, value: &[u8], revision: Revision) -> Result<StoredObject, PolicyStoreError> {
    let short = key.strip_prefix(PREFIX).unwrap_or(key).to_string();
    if short.starts_with("policy/") {
        let v = decode_policy(key, value)?;
        Ok(StoredObject {
            key: short,
            revision,
            source: v.source,
            normalized: serde_json::to_value(&v.policy).unwrap_or_default(),
            origin: v.origin,
        })
    } else {
        let v = decode_namespace(key, value)?;
        Ok(StoredObject {
            key: short,
            revision,
            source: v.source,
            normalized: serde_json::to_value(&v.labels).unwrap_or_default(),
            origin: v.origin,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use strait_policy::ir::{EndpointSelector, NamespaceScope, PolicyKey, Tier};
    use strait_policy::selector::LabelSelector;

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    /// A Kubernetes policy isolating `app=<app>` in `ns` for ingress, allowing nothing.
    pub(crate) fn deny_ingress(ns: &str, name: &str, app: &str) -> Policy {
        Policy {
            key: PolicyKey::K8s {
                namespace: ns.into(),
                name: name.into(),
            },
            tier: Tier::Namespaced,
            audit: false,
            subject: EndpointSelector {
                namespaces: NamespaceScope::Only(ns.into()),
                pods: LabelSelector {
                    match_labels: [("app".to_string(), app.to_string())].into(),
                    match_expressions: vec![],
                },
            },
            ingress: Some(vec![]),
            egress: None,
        }
    }

    pub(crate) fn policy_doc(p: Policy) -> StoredDoc {
        StoredDoc::Policy {
            source: serde_json::json!({"kind": "NetworkPolicy", "metadata": {"name": p.key.to_string()}}),
            policy: p,
        }
    }

    pub(crate) fn namespace_doc(name: &str, labels: &[(&str, &str)]) -> StoredDoc {
        StoredDoc::Namespace {
            source: serde_json::json!({"kind": "Namespace", "metadata": {"name": name}}),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn apply_writes_every_document_at_one_revision_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap();
        let ps = PolicyStore::new(store.clone());
        let docs = vec![
            policy_doc(deny_ingress("a", "p1", "web")),
            namespace_doc("a", &[("team", "x")]),
        ];
        let rev = ps.apply(&docs).await.unwrap();
        let listed = ps.list().await.unwrap();
        assert_eq!(
            listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["policy/k8s/a/p1", "namespaces/a"]
        );
        assert!(listed.iter().all(|o| o.revision == rev), "{listed:?}");
        let got = ps.get("policy/k8s/a/p1").await.unwrap().unwrap();
        assert_eq!(got.source["kind"], "NetworkPolicy");
        let back: Policy = serde_json::from_value(got.normalized).unwrap();
        assert_eq!(back, deny_ingress("a", "p1", "web"));

        let (existed, _) = ps.delete("policy/k8s/a/p1").await.unwrap();
        assert!(existed);
        assert!(ps.get("policy/k8s/a/p1").await.unwrap().is_none());
        assert!(!ps.delete("policy/k8s/a/p1").await.unwrap().0);
        assert!(matches!(
            ps.delete("ipam/blocks/x").await,
            Err(PolicyStoreError::BadKey(_))
        ));
    }

    #[tokio::test]
    async fn an_apply_naming_one_object_twice_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap();
        let ps = PolicyStore::new(store.clone());
        let before = store.revision().await.unwrap();
        let docs = vec![
            namespace_doc("b", &[]),
            policy_doc(deny_ingress("a", "p1", "web")),
            policy_doc(deny_ingress("a", "p1", "db")),
        ];
        let err = ps.apply(&docs).await.unwrap_err();
        assert!(err.to_string().contains("policy/k8s/a/p1"), "{err}");
        assert!(ps.list().await.unwrap().is_empty());
        assert_eq!(store.revision().await.unwrap(), before);
    }
}
