//! One agent at a time for a cluster-wide job: the holder of `leader/<job>`.
//!
//! The key is put with the campaigning node's lease under a create-if-absent compare,
//! so it lives exactly as long as that node proves it is alive; when the lease expires
//! the key goes with it and the next campaign wins. A campaign that finds the key
//! already naming this node under its current lease confirms the leadership.
//!
//! Every write a leader makes for its job carries [`Leadership::fence`] in its own
//! transaction: the key still has the create revision this leader saw. A leader that
//! stalled past its lease (and was replaced, or whose key is simply gone) changes
//! nothing.

use crate::store::{
    CmpOp, CmpTarget, Compare, LeaseId, PREFIX, Revision, Store, StoreError, Txn, TxnOp,
    TxnOpResult,
};

/// `/strait/v1/leader/<job>`.
pub fn leader_key(job: &str) -> String {
    format!("{PREFIX}leader/{job}")
}

/// The leader key as this agent holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    key: String,
    create_revision: Revision,
}

impl Leadership {
    /// The compare that fences a leader's write: the key is still the one it created.
    pub fn fence(&self) -> Compare {
        Compare {
            key: self.key.clone(),
            op: CmpOp::Equal,
            target: CmpTarget::CreateRevision(self.create_revision),
        }
    }
}

/// Takes or confirms `leader/<job>` for `node`. `None`: another agent leads, or this
/// one holds no lease (it cannot prove it is alive, so it may not act).
pub async fn campaign(
    store: &dyn Store,
    job: &str,
    node: &str,
    lease: Option<LeaseId>,
) -> Result<Option<Leadership>, StoreError> {
    let Some(lease) = lease else {
        return Ok(None);
    };
    let key = leader_key(job);
    let me = node.as_bytes().to_vec();
    let txn = Txn::new()
        .when([Compare::absent(key.clone())])
        .and_then([TxnOp::Put {
            key: key.clone(),
            value: me.clone(),
            lease: Some(lease),
        }])
        .or_else([TxnOp::Get { key: key.clone() }]);
    let resp = match store.txn(txn).await {
        Ok(r) => r,
        // Our lease died: whoever registers next may lead.
        Err(StoreError::LeaseNotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if resp.succeeded {
        return Ok(Some(Leadership {
            key,
            create_revision: resp.revision,
        }));
    }
    match resp.results.into_iter().next() {
        Some(TxnOpResult::Get(Some(kv))) if kv.value == me && kv.lease == Some(lease) => {
            Ok(Some(Leadership {
                key,
                create_revision: kv.create_revision,
            }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn one_leader_per_job_until_its_lease_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap();
        let a = store
            .lease_grant(std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let b = store
            .lease_grant(std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            campaign(store.as_ref(), "j", "a", None).await.unwrap(),
            None
        );
        let led = campaign(store.as_ref(), "j", "a", Some(a)).await.unwrap();
        assert!(led.is_some());
        // Confirmed for its holder, refused to another node, another job is free.
        assert_eq!(
            campaign(store.as_ref(), "j", "a", Some(a)).await.unwrap(),
            led
        );
        assert_eq!(
            campaign(store.as_ref(), "j", "b", Some(b)).await.unwrap(),
            None
        );
        assert!(
            campaign(store.as_ref(), "other", "b", Some(b))
                .await
                .unwrap()
                .is_some()
        );
        // The same node under a lease it no longer holds the key with: not the leader.
        assert_eq!(
            campaign(store.as_ref(), "j", "a", Some(b)).await.unwrap(),
            None
        );

        // Its lease gone, the key goes; a write fenced by the old leadership fails.
        store.lease_revoke(a).await.unwrap();
        let fenced = Txn::new()
            .when([led.clone().unwrap().fence()])
            .and_then([TxnOp::Put {
                key: format!("{PREFIX}x"),
                value: b"1".to_vec(),
                lease: None,
            }]);
        assert!(!store.txn(fenced).await.unwrap().succeeded);
        let next = campaign(store.as_ref(), "j", "b", Some(b)).await.unwrap();
        assert!(next.is_some() && next != led);
    }
}
