//! The networks gateways learned over BGP through their tunnels: the owner of the
//! store keys `ipsec/learned/<peer>/<gateway node>` (value: [`LearnedRoutes`]).
//!
//! Each gateway writes only its own key, so a gateway that hands a peer over never
//! overwrites what its successor learned; every node reads the key of the gateway
//! that carries the peer now (the others are stale and ignored). A gateway deletes
//! its keys of peers it no longer carries, and deleting a peer deletes all of its.
//!
//! A record is untrusted input from the store: one that does not decode, names a
//! peer or node that is not a valid name, or holds more than [`MAX_LEARNED`]
//! networks is logged and skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use strait_api::gateway::{LearnedRoutes, validate_peer_name};
use tokio::sync::watch;
use tracing::warn;

use crate::store::{KeyValue, PREFIX, Store, StoreError};

/// The most networks one gateway keeps from one router (the BGP session's max-prefix
/// too): a router that sends more is cut off rather than fill every node's table.
pub const MAX_LEARNED: usize = 10_000;

/// What the nodes know: by peer, by gateway node, the networks it learned.
pub type Learned = BTreeMap<String, BTreeMap<String, Vec<IpNet>>>;

/// `ipsec/learned/`.
pub fn learned_prefix() -> String {
    format!("{PREFIX}ipsec/learned/")
}

fn key(peer: &str, node: &str) -> String {
    format!("{}{peer}/{node}", learned_prefix())
}

/// Writes what gateway `node` learned from `peer`'s router.
pub async fn publish(
    store: &dyn Store,
    peer: &str,
    node: &str,
    networks: Vec<IpNet>,
) -> Result<(), StoreError> {
    let value = serde_json::to_vec(&LearnedRoutes { networks }).expect("plain data encodes");
    store.put(&key(peer, node), value, None).await.map(|_| ())
}

/// Deletes gateway `node`'s keys of every peer but those in `keep`.
pub async fn withdraw_all_but(
    store: &dyn Store,
    node: &str,
    keep: &[&str],
) -> Result<(), StoreError> {
    let prefix = learned_prefix();
    for kv in store.range(&prefix).await?.kvs {
        if let Some((peer, n)) = split(&kv.key[prefix.len()..])
            && n == node
            && !keep.contains(&peer)
        {
            store.delete(&kv.key).await?;
        }
    }
    Ok(())
}

/// Deletes every gateway's key of `peer` (the peer itself was deleted).
pub async fn forget_peer(store: &dyn Store, peer: &str) -> Result<(), StoreError> {
    let prefix = format!("{}{peer}/", learned_prefix());
    for kv in store.range(&prefix).await?.kvs {
        store.delete(&kv.key).await?;
    }
    Ok(())
}

fn split(rest: &str) -> Option<(&str, &str)> {
    let (peer, node) = rest.split_once('/')?;
    (validate_peer_name(peer).is_ok() && !node.is_empty() && !node.contains('/'))
        .then_some((peer, node))
}

/// A record as the nodes use it, or `None` (logged) when it is unusable.
fn usable(kv: &KeyValue) -> Option<Vec<IpNet>> {
    let rest = &kv.key[learned_prefix().len().min(kv.key.len())..];
    let why = match (
        split(rest),
        serde_json::from_slice::<LearnedRoutes>(&kv.value),
    ) {
        (None, _) => "the key is not <peer>/<node>".to_string(),
        (_, Err(e)) => format!("not a learned-routes record: {e}"),
        (_, Ok(r)) if r.networks.len() > MAX_LEARNED => {
            format!("{} networks, more than {MAX_LEARNED}", r.networks.len())
        }
        (Some(_), Ok(r)) => return Some(r.networks),
    };
    warn!(key = %kv.key, reason = %why, "skipping an unusable learned-routes record");
    None
}

/// Keeps `out` equal to the usable records under `ipsec/learned/` until `stop`, keyed
/// by `<peer>/<node>` (see [`by_peer`]).
pub async fn follow(
    store: Arc<dyn Store>,
    out: watch::Sender<Option<BTreeMap<String, Vec<IpNet>>>>,
    stop: watch::Receiver<bool>,
) {
    crate::store::follow::follow(store, learned_prefix(), usable, out, stop).await
}

/// The followed records by peer, then node.
pub fn by_peer(records: &BTreeMap<String, Vec<IpNet>>) -> Learned {
    let mut out = Learned::new();
    for (k, nets) in records {
        if let Some((peer, node)) = split(k) {
            out.entry(peer.to_string())
                .or_default()
                .insert(node.to_string(), nets.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: format!("{}{key}", learned_prefix()),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        }
    }

    #[test]
    fn records_are_checked_before_use() {
        assert_eq!(
            usable(&kv("onprem/gw1", r#"{"networks":["192.168.60.0/24"]}"#)),
            Some(vec!["192.168.60.0/24".parse().unwrap()])
        );
        assert_eq!(usable(&kv("onprem", r#"{"networks":[]}"#)), None);
        assert_eq!(usable(&kv("Bad_Peer/gw1", r#"{"networks":[]}"#)), None);
        assert_eq!(usable(&kv("onprem/gw1", r#"{"networks":["nope"]}"#)), None);
        let many: Vec<String> = (0..=MAX_LEARNED)
            .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
            .collect();
        let big = format!("{{\"networks\":[{}]}}", many.join(","));
        assert_eq!(usable(&kv("onprem/gw1", &big)), None);
    }

    #[tokio::test]
    async fn each_gateway_withdraws_only_its_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap();
        let store = &*store;
        let net: IpNet = "192.168.60.0/24".parse().unwrap();
        publish(store, "onprem", "gw1", vec![net]).await.unwrap();
        publish(store, "onprem", "gw2", vec![net]).await.unwrap();
        publish(store, "cloud", "gw1", vec![net]).await.unwrap();
        withdraw_all_but(store, "gw1", &["cloud"]).await.unwrap();
        let read = store.range(&learned_prefix()).await.unwrap();
        let records: BTreeMap<String, Vec<IpNet>> = read
            .kvs
            .iter()
            .filter_map(|kv| Some((kv.key[learned_prefix().len()..].to_string(), usable(kv)?)))
            .collect();
        let learned = by_peer(&records);
        assert_eq!(learned["onprem"].keys().collect::<Vec<_>>(), ["gw2"]);
        assert_eq!(learned["cloud"].keys().collect::<Vec<_>>(), ["gw1"]);
        forget_peer(store, "onprem").await.unwrap();
        forget_peer(store, "cloud").await.unwrap();
        assert!(store.range(&learned_prefix()).await.unwrap().kvs.is_empty());
    }
}
