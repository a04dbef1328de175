//! One watched kind of the API server, mirrored in memory.
//!
//! kube's [`watcher`] lists, then watches from the list's resource version; when a
//! watch breaks it resumes from the last version it saw, and when that version is
//! gone (410, or an API server that restarted on a compacted etcd) it lists again:
//! `Init`, `InitApply`… , `InitDone`. [`Mirror`] keeps the objects of the last
//! complete list plus the changes since, and swaps in a new list only once it is
//! complete, so a relist neither drops objects for a moment nor keeps ones deleted
//! while the watch was down. Followers see a snapshot only once the first list is
//! complete ([`follow`]): nothing acts on half a view.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::status::KubeStatus;

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.meta().name.as_deref().unwrap_or_default()),
        None => obj.meta().name.clone().unwrap_or_default(),
    }
}

/// The objects of one kind by [`key_of`], as the last complete list and the changes
/// since say.
pub type Objects<K> = Arc<BTreeMap<String, K>>;

/// A kind's view: `None` until the first list is complete.
pub type View<K> = watch::Receiver<Option<Objects<K>>>;

/// The state a watcher's events build.
#[derive(Debug)]
pub struct Mirror<K> {
    objects: BTreeMap<String, K>,
    /// A list in progress (between `Init` and `InitDone`).
    listing: Option<BTreeMap<String, K>>,
    synced: bool,
}

impl<K> Default for Mirror<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            listing: None,
            synced: false,
        }
    }
}

impl<K: Resource + Clone> Mirror<K> {
    /// Applies one event; true when the complete view changed (so followers should
    /// look again).
    pub fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                self.listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key_of(&obj), obj);
                false
            }
            Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(obj) => {
                self.objects.insert(key_of(&obj), obj);
                self.synced
            }
            Event::Delete(obj) => self.objects.remove(&key_of(&obj)).is_some() && self.synced,
        }
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn objects(&self) -> &BTreeMap<String, K> {
        &self.objects
    }
}

/// The name of a kind in logs and status (`NetworkPolicy`).
pub fn kind_name<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

/// Watches `api` with `config` until `stop`, in a task pushed onto `tasks`; the
/// returned view has each complete state. Errors (a refused list, a broken watch)
/// are logged and counted in `status`, and the watch is retried with kube's default
/// backoff (up to about 30 s between attempts).
pub fn follow<K>(
    api: kube::Api<K>,
    config: watcher::Config,
    status: Arc<KubeStatus>,
    mut stop: watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> View<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (tx, rx) = watch::channel(None);
    let kind = kind_name::<K>();
    status.watching(&kind);
    tasks.push(tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut mirror = Mirror::<K>::default();
        loop {
            let event = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                e = events.next() => e,
            };
            match event {
                None => return,
                Some(Err(e)) => {
                    warn!(kind = %kind, error = %e, "Kubernetes watch failed; retrying");
                    status.watch_failed(&kind, &e.to_string());
                }
                Some(Ok(ev)) => {
                    let relisted = matches!(ev, Event::InitDone);
                    if mirror.apply(ev) {
                        if relisted {
                            info!(kind = %kind, objects = mirror.objects().len(), "Kubernetes list complete");
                        } else {
                            debug!(kind = %kind, "Kubernetes object changed");
                        }
                        status.synced(&kind, mirror.objects().len(), relisted);
                        tx.send_replace(Some(Arc::new(mirror.objects().clone())));
                    }
                }
            }
        }
    }));
    rx
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::ResourceExt;
    use kube::api::ObjectMeta;

    use super::*;

    fn ns(name: &str, team: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("team".to_string(), team.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn teams(m: &Mirror<Namespace>) -> Vec<(String, String)> {
        m.objects()
            .iter()
            .map(|(k, v)| (k.clone(), v.labels()["team"].clone()))
            .collect()
    }

    #[test]
    fn nothing_is_seen_before_the_first_list_completes() {
        let mut m = Mirror::default();
        assert!(!m.apply(Event::Init));
        assert!(!m.apply(Event::InitApply(ns("a", "x"))));
        assert!(!m.synced());
        assert!(m.objects().is_empty());
        assert!(m.apply(Event::InitDone));
        assert_eq!(teams(&m), [("a".into(), "x".into())]);
    }

    #[test]
    fn a_relist_swaps_whole_dropping_what_was_deleted_meanwhile() {
        let mut m = Mirror::default();
        for e in [
            Event::Init,
            Event::InitApply(ns("a", "x")),
            Event::InitApply(ns("b", "y")),
            Event::InitDone,
        ] {
            m.apply(e);
        }
        assert!(m.apply(Event::Apply(ns("a", "z"))));
        // The watch broke; the new list has no `b` and a new `c`. Until it completes,
        // the old view stands whole.
        assert!(!m.apply(Event::Init));
        assert!(!m.apply(Event::InitApply(ns("a", "z"))));
        assert_eq!(m.objects().len(), 2);
        assert!(!m.apply(Event::InitApply(ns("c", "w"))));
        assert!(m.apply(Event::InitDone));
        assert_eq!(
            teams(&m),
            [("a".into(), "z".into()), ("c".into(), "w".into())]
        );
        assert!(m.apply(Event::Delete(ns("a", "z"))));
        assert!(
            !m.apply(Event::Delete(ns("a", "z"))),
            "deleting twice changes nothing"
        );
        assert_eq!(teams(&m), [("c".into(), "w".into())]);
    }

    #[test]
    fn keys_are_namespace_and_name() {
        let mut n = ns("a", "x");
        assert_eq!(key_of(&n), "a");
        n.metadata.namespace = Some("prod".into());
        assert_eq!(key_of(&n), "prod/a");
        assert_eq!(kind_name::<Namespace>(), "Namespace");
    }
}
