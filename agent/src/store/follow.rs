//! Following a store prefix into a `watch` channel: read, then watch from the revision
//! read; a watch that ends (compaction, a lost etcd connection) reads again, after a
//! back-off. The external IPsec peers (`ipsec/peers/`), the routes the gateways
//! learned over BGP (`ipsec/learned/`), and the services, their EndpointSlices and the
//! endpoints they select (`services/`, `endpointslices/`, `endpoints/`) are followed
//! this way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::store::{EventKind, KeyValue, Store, StoreError, WatchMessage};

/// A broken watch is read and watched again after this long, doubling up to a minute.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Keeps `out` equal to the usable records under `prefix` until `stop` (`None` until
/// the first read), keyed by the rest of their key. `usable` decodes a record (and
/// logs one it skips); receivers are woken only when the map changes.
pub async fn follow<T: Clone + PartialEq>(
    store: Arc<dyn Store>,
    prefix: String,
    usable: impl Fn(&KeyValue) -> Option<T>,
    out: watch::Sender<Option<BTreeMap<String, T>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = RETRY_MIN;
    loop {
        let session = async {
            let read = store.range(&prefix).await?;
            let mut current: BTreeMap<String, T> = read
                .kvs
                .iter()
                .filter_map(|kv| Some((kv.key[prefix.len()..].to_string(), usable(kv)?)))
                .collect();
            publish(&out, &current);
            let mut w = store.watch(&prefix, read.revision + 1).await?;
            while let Some(WatchMessage::Events(events)) = w.rx.recv().await {
                for e in events.iter().filter(|e| e.kv.key.starts_with(&prefix)) {
                    let name = e.kv.key[prefix.len()..].to_string();
                    let next = match e.kind {
                        EventKind::Put => usable(&e.kv),
                        EventKind::Delete => None,
                    };
                    match next {
                        Some(v) => current.insert(name, v),
                        None => current.remove(&name),
                    };
                }
                publish(&out, &current);
            }
            Ok::<(), StoreError>(())
        };
        tokio::select! {
            _ = stopped(&mut stop) => return,
            result = session => {
                if let Err(e) = result {
                    warn!(error = %e, retry_in = ?retry, %prefix, "following the store");
                }
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

fn publish<T: Clone + PartialEq>(
    tx: &watch::Sender<Option<BTreeMap<String, T>>>,
    current: &BTreeMap<String, T>,
) {
    tx.send_if_modified(|shown| {
        if shown.as_ref() == Some(current) {
            return false;
        }
        *shown = Some(current.clone());
        true
    });
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
