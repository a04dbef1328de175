//! Whose endpoint links these are: the owner mark this agent writes on the host end of
//! every veth it makes, and by which its stale-link sweep knows its own.
//!
//! A store gets a random id the first time an agent opens it (`/strait/v1/store-id`,
//! written once in a create-if-absent transaction, so every agent of one etcd reads the
//! same). An agent's identity is a hash of that id and its node name: agents on
//! different stores, or on one etcd as different nodes, differ; the same agent
//! restarted on the same store is the same. The mark is `strait:<identity>` in the
//! link's alias (`ip link show` prints it).

use std::io::Read;

use crate::endpoint::{fnv1a64, owner_mark};
use crate::store::{Compare, PREFIX, Store, StoreError, Txn, TxnOp, TxnOpResult};

/// Where the store keeps its id.
pub fn store_id_key() -> String {
    format!("{PREFIX}store-id")
}

/// This agent's owner mark on `store` as `node`, giving the store an id if it has none.
pub async fn owner_mark_of(store: &dyn Store, node: &str) -> Result<String, StoreError> {
    let key = store_id_key();
    let id = match store.get(&key).await? {
        Some(kv) => kv.value,
        None => {
            let fresh = random_id().map_err(|e| {
                StoreError::Backend(format!("reading /dev/urandom for the store id: {e}"))
            })?;
            // Whoever writes first wins; everyone else reads the winner's.
            let resp = store
                .txn(
                    Txn::new()
                        .when([Compare::absent(key.clone())])
                        .and_then([TxnOp::Put {
                            key: key.clone(),
                            value: fresh.clone().into_bytes(),
                            lease: None,
                        }])
                        .or_else([TxnOp::Get { key: key.clone() }]),
                )
                .await?;
            match resp.results.first() {
                Some(TxnOpResult::Get(Some(kv))) if !resp.succeeded => kv.value.clone(),
                _ => fresh.into_bytes(),
            }
        }
    };
    Ok(mark_for(&String::from_utf8_lossy(&id), node))
}

/// The mark of `node` on the store with id `store_id`: 16 hex digits, whatever the
/// length of the node name (an alias holds at most 255 bytes).
pub fn mark_for(store_id: &str, node: &str) -> String {
    owner_mark(&format!(
        "{:016x}",
        fnv1a64(format!("{store_id}\0{node}").as_bytes())
    ))
}

/// 128 random bits as 32 hex digits.
fn random_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn one_store_gives_one_mark_per_node_and_keeps_it() {
        let dir = tempfile::tempdir().expect("dir");
        let store = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .expect("store");
        let a = owner_mark_of(store.as_ref(), "n1").await.expect("mark");
        assert!(a.starts_with("strait:") && a.len() == 7 + 16, "{a}");
        assert_eq!(owner_mark_of(store.as_ref(), "n1").await.expect("again"), a);
        assert_ne!(owner_mark_of(store.as_ref(), "n2").await.expect("n2"), a);

        let other_dir = tempfile::tempdir().expect("dir");
        let other = EmbeddedStore::open(&other_dir.path().join("s.redb"))
            .await
            .expect("store");
        assert_ne!(
            owner_mark_of(other.as_ref(), "n1")
                .await
                .expect("other store"),
            a,
            "another store, another owner"
        );
    }
}
