//! The cluster-wide IPsec settings (`ipsec/settings` in the store): the owner of that
//! key. `netctl ipsec mode` writes it through the API; every agent reads it, whoever
//! wrote it. An absent key is the default (mode `off`).

use std::sync::Arc;
use std::time::Duration;

use strait_api::ipsec::{IpsecMode, IpsecSettings};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::{EventKind, PREFIX, Store, StoreError, WatchMessage};

/// A broken watch is read and watched again after this long, doubling up to a minute.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The store key of the settings.
pub fn settings_key() -> String {
    format!("{PREFIX}ipsec/settings")
}

/// Reads and writes `ipsec/settings`.
#[derive(Clone)]
pub struct IpsecSettingsStore {
    store: Arc<dyn Store>,
}

impl IpsecSettingsStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The settings; the defaults when none were ever set. A value that does not
    /// decode (written by a newer agent, or by hand) is logged and read as the
    /// defaults, as the fabric treats an unreadable key as absent.
    pub async fn get(&self) -> Result<IpsecSettings, StoreError> {
        let Some(kv) = self.store.get(&settings_key()).await? else {
            return Ok(IpsecSettings::default());
        };
        Ok(decode(&kv.value))
    }

    /// Replaces the settings.
    pub async fn put(&self, settings: &IpsecSettings) -> Result<(), StoreError> {
        let value = serde_json::to_vec(settings).expect("settings encode");
        self.store.put(&settings_key(), value, None).await?;
        info!(mode = %settings.mode, "IPsec settings set");
        Ok(())
    }
}

/// Keeps `mode` equal to the stored mode until `stop` (`None` until the first read):
/// read, then watch from the revision read; a watch that ends (compaction, a lost
/// etcd connection) reads again.
pub async fn follow(
    store: Arc<dyn Store>,
    mode: watch::Sender<Option<IpsecMode>>,
    mut stop: watch::Receiver<bool>,
) {
    let key = settings_key();
    let mut retry = RETRY_MIN;
    loop {
        let session = async {
            let read = store.range(&key).await?;
            let current = read
                .kvs
                .iter()
                .find(|kv| kv.key == key)
                .map_or_else(IpsecSettings::default, |kv| decode(&kv.value));
            let current = Some(current.mode);
            mode.send_if_modified(|m| std::mem::replace(m, current) != current);
            let mut w = store.watch(&key, read.revision + 1).await?;
            while let Some(WatchMessage::Events(events)) = w.rx.recv().await {
                for e in events.iter().filter(|e| e.kv.key == key) {
                    let next = match e.kind {
                        EventKind::Put => decode(&e.kv.value),
                        EventKind::Delete => IpsecSettings::default(),
                    };
                    let next = Some(next.mode);
                    mode.send_if_modified(|m| std::mem::replace(m, next) != next);
                }
            }
            Ok::<(), StoreError>(())
        };
        tokio::select! {
            _ = stopped(&mut stop) => return,
            result = session => {
                if let Err(e) = result {
                    warn!(error = %e, retry_in = ?retry, "following ipsec/settings");
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

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The settings in a stored value, or the defaults (logged) when it does not decode.
pub fn decode(value: &[u8]) -> IpsecSettings {
    serde_json::from_slice(value).unwrap_or_else(|e| {
        warn!(error = %e, "unreadable ipsec/settings: using the defaults (mode off)");
        IpsecSettings::default()
    })
}

#[cfg(test)]
mod tests {
    use strait_api::ipsec::IpsecMode;

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn absent_is_off_and_a_put_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap();
        let settings = IpsecSettingsStore::new(store.clone());
        assert_eq!(settings.get().await.unwrap().mode, IpsecMode::Off);
        settings
            .put(&IpsecSettings {
                mode: IpsecMode::CrossSite,
            })
            .await
            .unwrap();
        assert_eq!(settings.get().await.unwrap().mode, IpsecMode::CrossSite);
        // What another agent wrote by hand and cannot be read: the defaults.
        store
            .put(&settings_key(), b"{\"mode\":\"sometimes\"}".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(settings.get().await.unwrap().mode, IpsecMode::Off);
    }

    #[tokio::test]
    async fn follow_tracks_every_change_of_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap();
        let owner = IpsecSettingsStore::new(store.clone());
        let (tx, mut rx) = watch::channel(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(store.clone(), tx, stop));
        for mode in [IpsecMode::All, IpsecMode::CrossSite] {
            owner.put(&IpsecSettings { mode }).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|m| *m == Some(mode)))
                .await
                .expect("followed")
                .unwrap();
        }
        store.delete(&settings_key()).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|m| *m == Some(IpsecMode::Off)),
        )
        .await
        .expect("a deleted key is the default")
        .unwrap();
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
