//! The cluster's objects from the API server into the store, by one agent at a time.
//!
//! Every agent watches Namespaces, NetworkPolicies, Services and EndpointSlices (the
//! last two are written through the service store: [`super::services`]); the holder of
//! `leader/kubernetes` (see [`crate::node::leader`]) writes them. Each round is
//! level-triggered: the documents the API's objects make ([`super::translate`]) are
//! compared with the objects of origin `kubernetes` in the store, and the difference
//! is written in transactions fenced on the leadership, each write also on the
//! revision it read (a write in between makes the round start again). A round runs
//! on every change of either view, and every [`RESYNC`] in any case, which is also how
//! a new leader takes over and how drift in the store is put right.
//!
//! An object the API server has that strait cannot express is refused alone: its last
//! good version (if any) stays in force, nothing else changes, the reason is kept at
//! `kubernetes/refused/<Kind>/<ns>/<name>` (what `netctl kubernetes` lists) and
//! posted once as a Warning Event on the object.
//!
//! The API server owns what it mirrors: an object `netctl` wrote under the same key
//! is replaced (and `netctl` refuses to change an object of origin `kubernetes`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde::Deserialize;
use strait_api::Origin;
use strait_api::kube::Refusal;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::mirror::{Objects, View, key_of};
use super::status::KubeStatus;
use super::translate;
use crate::node::leader::{self, Leadership};
use crate::policy::store::{namespaces_prefix, policies_prefix};
use crate::services::store::ServiceStore;
use crate::store::{Compare, LeaseId, PREFIX, Store, StoreError, Txn, TxnOp};

/// The election's job name: `leader/kubernetes`.
pub const LEADER_JOB: &str = "kubernetes";

/// A round runs at least this often, changes or not.
pub const RESYNC: Duration = Duration::from_secs(10);

/// Changes arriving together are written in one round: a round waits this long
/// after the first change it sees.
const BATCH: Duration = Duration::from_millis(20);

/// Writes per transaction (with its fence, under etcd's 128 operations).
const OPS_PER_TXN: usize = 100;

/// `kubernetes/refused/`: the refusals, cluster-wide.
pub fn refused_prefix() -> String {
    format!("{PREFIX}kubernetes/refused/")
}

/// Records a refusal under its `kubernetes/refused/<Kind>/<ns>/<name>` key.
pub(super) fn refuse(
    refused: &mut BTreeMap<String, Refusal>,
    kind: &str,
    object: String,
    reason: String,
) {
    refused.insert(
        format!("{}{kind}/{object}", refused_prefix()),
        Refusal {
            kind: kind.into(),
            object,
            reason,
        },
    );
}

/// What one round would write: full keys to their values, and the refusals.
#[derive(Debug, Default, PartialEq)]
pub struct Desired {
    pub objects: BTreeMap<String, Vec<u8>>,
    /// Keys of refused objects: what is stored there stays as it is.
    pub keep: BTreeSet<String>,
    pub refused: BTreeMap<String, Refusal>,
}

/// The documents the API server's objects make.
pub fn desired(namespaces: &Objects<Namespace>, policies: &Objects<NetworkPolicy>) -> Desired {
    let mut d = Desired::default();
    for ns in namespaces.values() {
        let key = format!("{PREFIX}namespaces/{}", key_of(ns));
        d.add("Namespace", ns, key, translate::namespace(ns));
    }
    for np in policies.values() {
        let key = format!("{PREFIX}policy/k8s/{}", key_of(np));
        d.add("NetworkPolicy", np, key, translate::network_policy(np));
    }
    d
}

impl Desired {
    fn add<K: Resource>(
        &mut self,
        kind: &str,
        obj: &K,
        key: String,
        doc: Result<crate::policy::store::StoredDoc, String>,
    ) {
        match doc {
            Ok(doc) => {
                self.objects.insert(
                    format!("{PREFIX}{}", doc.key()),
                    doc.value(Origin::Kubernetes),
                );
            }
            Err(reason) => {
                self.keep.insert(key);
                refuse(&mut self.refused, kind, key_of(obj), reason);
            }
        }
    }
}

/// A stored object as a round reads it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub origin: Origin,
}

#[derive(Deserialize)]
struct OriginOnly {
    #[serde(default)]
    origin: Origin,
}

/// The writes that take the store from `actual` to `desired`, each guarded by the
/// revision it read; and the refusals that are new (for Events).
pub fn plan(
    desired: &Desired,
    actual: &BTreeMap<String, Stored>,
    refusals: &BTreeMap<String, Stored>,
) -> (Vec<(Compare, TxnOp)>, Vec<Refusal>) {
    let mut writes = Vec::new();
    let put = |key: &String, value: Vec<u8>, now: Option<&Stored>| {
        let guard = match now {
            Some(s) => Compare::mod_revision(key.clone(), s.mod_revision),
            None => Compare::absent(key.clone()),
        };
        let op = TxnOp::Put {
            key: key.clone(),
            value,
            lease: None,
        };
        (guard, op)
    };
    for (key, value) in &desired.objects {
        let now = actual.get(key);
        if now.is_some_and(|s| &s.value == value) {
            continue;
        }
        if let Some(s) = now
            && s.origin == Origin::Netctl
        {
            info!(%key, "the Kubernetes API server's object replaces the one netctl wrote");
        }
        writes.push(put(key, value.clone(), now));
    }
    for (key, s) in actual {
        if s.origin == Origin::Kubernetes
            && !desired.objects.contains_key(key)
            && !desired.keep.contains(key)
        {
            writes.push((
                Compare::mod_revision(key.clone(), s.mod_revision),
                TxnOp::Delete { key: key.clone() },
            ));
        }
    }
    let mut new_refusals = Vec::new();
    for (key, r) in &desired.refused {
        let value = serde_json::to_vec(r).unwrap_or_default();
        let now = refusals.get(key);
        if now.is_some_and(|s| s.value == value) {
            continue;
        }
        new_refusals.push(r.clone());
        writes.push(put(key, value, now));
    }
    for (key, s) in refusals {
        if !desired.refused.contains_key(key) {
            writes.push((
                Compare::mod_revision(key.clone(), s.mod_revision),
                TxnOp::Delete { key: key.clone() },
            ));
        }
    }
    (writes, new_refusals)
}

/// The refusals stored, cluster-wide.
pub async fn refusals(store: &dyn Store) -> Result<Vec<Refusal>, StoreError> {
    Ok(store
        .range(&refused_prefix())
        .await?
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// The views a round reads.
#[derive(Clone)]
pub struct Views {
    pub namespaces: View<Namespace>,
    pub policies: View<NetworkPolicy>,
    pub services: View<Service>,
    pub slices: View<EndpointSlice>,
}

/// The objects of one round, each kind complete.
struct Round {
    ns: Objects<Namespace>,
    np: Objects<NetworkPolicy>,
    svc: Objects<Service>,
    eps: Objects<EndpointSlice>,
}

pub struct ClusterSync {
    store: Arc<dyn Store>,
    services: ServiceStore,
    node: String,
    lease: watch::Receiver<Option<LeaseId>>,
    recorder: Recorder,
    status: Arc<KubeStatus>,
}

impl ClusterSync {
    pub fn new(
        store: Arc<dyn Store>,
        services: ServiceStore,
        node: String,
        lease: watch::Receiver<Option<LeaseId>>,
        client: kube::Client,
        status: Arc<KubeStatus>,
    ) -> Self {
        let reporter = Reporter {
            controller: "strait".into(),
            instance: Some(node.clone()),
        };
        Self {
            store,
            services,
            node,
            lease,
            recorder: Recorder::new(client, reporter),
            status,
        }
    }

    pub async fn run(mut self, mut views: Views, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = views.namespaces.changed() => true,
                _ = views.policies.changed() => true,
                _ = views.services.changed() => true,
                _ = views.slices.changed() => true,
                _ = self.lease.changed() => false,
                _ = tick.tick() => false,
            };
            if changed {
                tokio::time::sleep(BATCH).await;
            }
            let ns = views.namespaces.borrow_and_update().clone();
            let np = views.policies.borrow_and_update().clone();
            let svc = views.services.borrow_and_update().clone();
            let eps = views.slices.borrow_and_update().clone();
            let (Some(ns), Some(np), Some(svc), Some(eps)) = (ns, np, svc, eps) else {
                continue;
            };
            let lease = *self.lease.borrow();
            let led =
                match leader::campaign(self.store.as_ref(), LEADER_JOB, &self.node, lease).await {
                    Ok(led) => led,
                    Err(e) => {
                        warn!(error = %e, "Kubernetes: campaigning for leader/kubernetes");
                        continue;
                    }
                };
            let was = self.status.is_leader();
            self.status.set_leader(led.is_some());
            let Some(led) = led else {
                if was {
                    info!("Kubernetes: another agent writes the cluster's objects now");
                }
                continue;
            };
            if !was {
                info!(node = %self.node, "Kubernetes: this agent writes the cluster's objects (leader/kubernetes)");
            }
            let objects = Round { ns, np, svc, eps };
            if let Err(e) = self.round(&led, &objects).await {
                warn!(error = %e, "Kubernetes: writing the API server's objects; retrying");
            }
        }
    }

    /// One pass; rounds that meet a write in between start again (a few times).
    async fn round(&self, led: &Leadership, objects: &Round) -> anyhow::Result<()> {
        let mut want = desired(&objects.ns, &objects.np);
        want.refused
            .extend(super::services::round(&self.services, &objects.svc, &objects.eps).await?);
        for _ in 0..4 {
            let actual = self.read_objects().await?;
            let refused = self.read(&refused_prefix()).await?;
            let (writes, new_refusals) = plan(&want, &actual, &refused);
            if writes.is_empty() {
                return Ok(());
            }
            let count = writes.len();
            let mut all_applied = true;
            for chunk in writes.chunks(OPS_PER_TXN) {
                let txn = Txn::new()
                    .when(std::iter::once(led.fence()).chain(chunk.iter().map(|(c, _)| c.clone())))
                    .and_then(chunk.iter().map(|(_, op)| op.clone()));
                if !self.store.txn(txn).await?.succeeded {
                    all_applied = false;
                    break;
                }
            }
            if all_applied {
                info!(
                    writes = count,
                    refused = want.refused.len(),
                    "Kubernetes: store follows the API server"
                );
                for r in new_refusals {
                    self.report(&r, objects).await;
                }
                return Ok(());
            }
            debug!("Kubernetes: the store changed during a round; planning again");
        }
        Ok(())
    }

    async fn read_objects(&self) -> Result<BTreeMap<String, Stored>, StoreError> {
        let mut out = self.read(&policies_prefix()).await?;
        out.extend(self.read(&namespaces_prefix()).await?);
        Ok(out)
    }

    async fn read(&self, prefix: &str) -> Result<BTreeMap<String, Stored>, StoreError> {
        Ok(self
            .store
            .range(prefix)
            .await?
            .kvs
            .into_iter()
            .map(|kv| {
                let origin = serde_json::from_slice::<OriginOnly>(&kv.value)
                    .map(|o| o.origin)
                    .unwrap_or_default();
                (
                    kv.key,
                    Stored {
                        value: kv.value,
                        mod_revision: kv.mod_revision,
                        origin,
                    },
                )
            })
            .collect())
    }

    /// A Warning Event on the refused object (best effort: the refusal is in the
    /// store either way).
    async fn report(&self, r: &Refusal, objects: &Round) {
        warn!(kind = %r.kind, object = %r.object, reason = %r.reason, "Kubernetes: strait cannot express this object; it is not applied");
        let reference = match r.kind.as_str() {
            "Namespace" => objects.ns.get(&r.object).map(|o| o.object_ref(&())),
            "NetworkPolicy" => objects.np.get(&r.object).map(|o| o.object_ref(&())),
            "Service" => objects.svc.get(&r.object).map(|o| o.object_ref(&())),
            "EndpointSlice" => objects.eps.get(&r.object).map(|o| o.object_ref(&())),
            _ => None,
        };
        let Some(reference) = reference else {
            return;
        };
        if let Err(e) = self.publish(&reference, &r.reason).await {
            warn!(error = %e, object = %r.object, "Kubernetes: posting the refusal as an Event");
        }
    }

    async fn publish(&self, reference: &ObjectReference, reason: &str) -> Result<(), kube::Error> {
        let ev = Event {
            type_: EventType::Warning,
            reason: "NotApplied".into(),
            note: Some(format!("strait does not apply this object: {reason}")),
            action: "Apply".into(),
            secondary: None,
        };
        self.recorder.publish(&ev, reference).await
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn stored(value: &[u8], rev: i64, origin: Origin) -> Stored {
        Stored {
            value: value.to_vec(),
            mod_revision: rev,
            origin,
        }
    }

    fn ns(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn keys(writes: &[(Compare, TxnOp)]) -> Vec<String> {
        writes
            .iter()
            .map(|(_, op)| match op {
                TxnOp::Put { key, .. } => format!("put {}", key.trim_start_matches(PREFIX)),
                TxnOp::Delete { key } => format!("delete {}", key.trim_start_matches(PREFIX)),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_round_writes_the_difference_and_leaves_netctls_objects_alone() {
        let namespaces: Objects<Namespace> =
            Arc::new([("a".into(), ns("a")), ("b".into(), ns("b"))].into());
        let want = desired(&namespaces, &Arc::default());
        let a = want.objects[&format!("{PREFIX}namespaces/a")].clone();
        let actual: BTreeMap<String, Stored> = [
            // Up to date: untouched.
            (
                format!("{PREFIX}namespaces/a"),
                stored(&a, 5, Origin::Kubernetes),
            ),
            // Gone from the API: deleted.
            (
                format!("{PREFIX}namespaces/gone"),
                stored(b"{}", 6, Origin::Kubernetes),
            ),
            // netctl's own: untouched.
            (
                format!("{PREFIX}policy/k8s/x/y"),
                stored(b"{}", 7, Origin::Netctl),
            ),
        ]
        .into();
        let (writes, refused) = plan(&want, &actual, &BTreeMap::new());
        assert_eq!(
            keys(&writes),
            ["put namespaces/b", "delete namespaces/gone"]
        );
        assert!(refused.is_empty());
        assert_eq!(
            writes[0].0,
            Compare::absent(format!("{PREFIX}namespaces/b"))
        );
        assert_eq!(
            writes[1].0,
            Compare::mod_revision(format!("{PREFIX}namespaces/gone"), 6)
        );
    }

    #[test]
    fn a_refused_object_keeps_its_last_good_version_and_is_reported_once() {
        let mut bad = k8s_openapi::api::networking::v1::NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                ..Default::default()
            },
            spec: Some(Default::default()),
        };
        let spec = bad.spec.as_mut().unwrap();
        spec.pod_selector = Some(Default::default());
        spec.policy_types = Some(vec!["Sideways".into()]);
        let policies: Objects<NetworkPolicy> = Arc::new([("prod/web".into(), bad)].into());
        let want = desired(&Arc::default(), &policies);
        assert!(want.objects.is_empty());
        let key = format!("{PREFIX}policy/k8s/prod/web");
        let actual: BTreeMap<String, Stored> =
            [(key.clone(), stored(b"{}", 3, Origin::Kubernetes))].into();
        let (writes, refused) = plan(&want, &actual, &BTreeMap::new());
        assert_eq!(
            keys(&writes),
            ["put kubernetes/refused/NetworkPolicy/prod/web"]
        );
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].reason.contains("policyTypes"),
            "{:?}",
            refused[0]
        );

        // Once stored, the same refusal writes nothing and reports nothing.
        let (_, TxnOp::Put { value, .. }) = &writes[0] else {
            panic!()
        };
        let stored_refusals: BTreeMap<String, Stored> = [(
            format!("{}NetworkPolicy/prod/web", refused_prefix()),
            stored(value, 9, Origin::Kubernetes),
        )]
        .into();
        let (writes, refused) = plan(&want, &actual, &stored_refusals);
        assert!(writes.is_empty() && refused.is_empty(), "{writes:?}");

        // Fixed (here: deleted from the API): the refusal goes, and so does the object.
        let (writes, _) = plan(
            &desired(&Arc::default(), &Arc::default()),
            &actual,
            &stored_refusals,
        );
        assert_eq!(
            keys(&writes),
            [
                "delete policy/k8s/prod/web",
                "delete kubernetes/refused/NetworkPolicy/prod/web"
            ]
        );
    }
}
