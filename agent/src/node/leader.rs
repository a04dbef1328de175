//! One agent at a time for a cluster-wide job: the holder of `leader/<job>`.
//!
//! The key is put with the campaigning node's lease under a create-if-absent compare,
//! so it lives exactly as long as that node proves it is alive; when the lease expires
//! the key goes with it and the next campaign wins. A campaign that finds the key
//! already naming this node under its current lease confirms the leadership; under
//! another lease (this node's agent restarted), it takes the key over at once.
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
    match lease {
        Some(lease) => run(store, job, node, lease, true).await,
        None => Ok(None),
    }
}

/// One campaign; `take_over`: a key this node's previous agent left may be retired
/// (once: two agents of one node name, which must not happen, cannot make it loop).
async fn run(
    store: &dyn Store,
    job: &str,
    node: &str,
    lease: LeaseId,
    take_over: bool,
) -> Result<Option<Leadership>, StoreError> {
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
        // This node's previous agent (stopped or restarted: one agent per node) left
        // the key on its old lease, which may live on for a TTL. Its successor takes
        // the key at once instead of leaving the job undone until then: the old key
        // goes (only if unchanged since read), and the next campaign creates it anew,
        // with a new create revision that fences the predecessor out.
        Some(TxnOpResult::Get(Some(kv))) if kv.value == me && take_over => {
            let retire = Txn::new()
                .when([Compare::mod_revision(key.clone(), kv.mod_revision)])
                .and_then([TxnOp::Delete { key }]);
            if store.txn(retire).await?.succeeded {
                Box::pin(run(store, job, node, lease, false)).await
            } else {
                Ok(None)
            }
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
        // Its lease gone, the key goes; a write fenced by the old leadership fails.
        store.lease_revoke(a).await.unwrap();
        assert!(!store.txn(fenced_write(&led)).await.unwrap().succeeded);
        let next = campaign(store.as_ref(), "j", "b", Some(b)).await.unwrap();
        assert!(next.is_some() && next != led);
        assert!(store.txn(fenced_write(&next)).await.unwrap().succeeded);
    }

    fn fenced_write(l: &Option<Leadership>) -> Txn {
        Txn::new()
            .when([l.clone().unwrap().fence()])
            .and_then([TxnOp::Put {
                key: format!("{PREFIX}x"),
                value: b"1".to_vec(),
                lease: None,
            }])
    }

    #[tokio::test]
    async fn a_nodes_next_agent_takes_the_key_its_predecessor_left() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap();
        let ttl = std::time::Duration::from_secs(60);
        let (old, new, other) = (
            store.lease_grant(ttl).await.unwrap(),
            store.lease_grant(ttl).await.unwrap(),
            store.lease_grant(ttl).await.unwrap(),
        );
        let before = campaign(store.as_ref(), "j", "a", Some(old)).await.unwrap();
        assert!(before.is_some());
        // Another node still may not; node a's restarted agent (a new lease) may, at
        // once, and the old process's writes are fenced out.
        assert_eq!(
            campaign(store.as_ref(), "j", "b", Some(other))
                .await
                .unwrap(),
            None
        );
        let after = campaign(store.as_ref(), "j", "a", Some(new)).await.unwrap();
        assert!(
            after.is_some() && after != before,
            "{after:?} vs {before:?}"
        );
        let kv = store.get(&leader_key("j")).await.unwrap().unwrap();
        assert_eq!(kv.lease, Some(new));
        assert!(!store.txn(fenced_write(&before)).await.unwrap().succeeded);
        assert!(store.txn(fenced_write(&after)).await.unwrap().succeeded);
    }
}
