//! What this agent's watches have seen, for `netctl kubernetes` and `/readyz`-style
//! questions ("is the Kubernetes view complete?").

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use strait_api::kube::{KindView, KubeStatusView};

#[derive(Debug, Default)]
pub struct KubeStatus {
    kinds: Mutex<BTreeMap<String, KindView>>,
    leader: AtomicBool,
}

impl KubeStatus {
    pub fn watching(&self, kind: &str) {
        self.with(kind, |_| {});
    }

    pub fn watch_failed(&self, kind: &str, error: &str) {
        self.with(kind, |k| {
            k.errors += 1;
            k.last_error = Some(error.to_string());
        });
    }

    /// The view of `kind` changed; `relisted`: a complete list was just swapped in.
    pub fn synced(&self, kind: &str, objects: usize, relisted: bool) {
        self.with(kind, |k| {
            k.synced = true;
            k.objects = objects;
            if relisted {
                k.lists += 1;
            }
        });
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// This agent's view, without the cluster's refusals (the caller adds them).
    pub fn view(&self) -> KubeStatusView {
        KubeStatusView {
            enabled: true,
            leader: self.is_leader(),
            kinds: self
                .kinds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect(),
            refused: Vec::new(),
        }
    }

    fn with(&self, kind: &str, f: impl FnOnce(&mut KindView)) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let k = kinds.entry(kind.to_string()).or_insert_with(|| KindView {
            kind: kind.to_string(),
            ..Default::default()
        });
        f(k);
    }
}
