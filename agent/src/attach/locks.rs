//! Per-attachment locks: operations on one attachment id run one at a time; different
//! attachments run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(super) struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(super) async fn lock(&self, id: &str) -> KeyedGuard<'_> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        let guard = m.clone().lock_owned().await;
        KeyedGuard {
            owner: self,
            id: id.to_string(),
            _guard: guard,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

pub(super) struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    id: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        // Forget the lock once nobody else holds or waits for it, so the map does not
        // grow with every container ever seen. Two references remain at that point:
        // the map's and the one inside our own guard.
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) <= 2) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_attachment_waits_others_do_not_and_the_map_empties() {
        let locks = Arc::new(KeyedLocks::default());
        let a = locks.lock("a").await;
        // Another attachment is not held up.
        let b = tokio::time::timeout(Duration::from_secs(1), locks.lock("b"))
            .await
            .expect("b is independent of a");
        drop(b);
        // The same one waits until the first guard goes.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("a").await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second lock of a must wait");
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released")
            .expect("task");
        assert_eq!(locks.len(), 0, "no lock kept for ids nobody holds");
    }
}
