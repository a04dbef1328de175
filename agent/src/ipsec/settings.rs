//! The cluster-wide IPsec settings (`ipsec/settings` in the store): the owner of that
//! key. `netctl ipsec mode` writes it through the API; every agent reads it, whoever
//! wrote it. An absent key is the default (mode `off`).

use std::sync::Arc;

use strait_api::ipsec::IpsecSettings;
use tracing::{info, warn};

use crate::store::{PREFIX, Store, StoreError};

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
}
