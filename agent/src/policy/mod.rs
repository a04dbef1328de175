//! Network policy (docs/policy.md): strait's control plane for it (policies and
//! namespaces in the store, identities, the ipcache, compiling each local
//! endpoint's tables with `strait-policy`) and the eBPF datapath that enforces it.
//!
//! [`dataplane::Dataplane`] is the boundary between the two: the control plane
//! decides what the kernel should hold, the datapath module makes it so.
//!
//! The control plane, one module per thing it owns:
//! - [`store`]: policy and namespace objects in the store (apply is all or nothing);
//! - [`identity`]: cluster-wide identities, their allocation and GC;
//! - [`endpoints`]: endpoint records as policy reads them;
//! - [`cluster`]: the cluster as followed from the store;
//! - [`ipcache`]: address → identity for every endpoint and node;
//! - [`reconcile`]: the loop that owns enforcement on this node;
//! - [`show`], [`trace`], [`flows`]: what `netctl policy show|trace` and `netctl
//!   monitor` see;
//! - [`host`]: what it reads of the host's kernel;
//! - [`fake`]: an in-memory dataplane and host, for tests.
//!
//! [`PolicyAgent`] ties them together for the daemon, the attacher (CNI ADD and DEL)
//! and the API.

pub mod cluster;
pub mod datapath;
pub mod dataplane;
pub mod endpoints;
pub mod fake;
pub mod flows;
pub mod host;
pub mod identity;
pub mod ipcache;
pub mod reconcile;
pub mod show;
pub mod store;
pub mod trace;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use strait_api::Endpoint;
use strait_api::policy::{
    ApplyOutcome, EndpointPolicyView, FlowEvent, PolicyMode, PolicyObject, PolicyStatus, TraceView,
};
use strait_policy::compile::Mode;
use strait_policy::selector::Labels;
use strait_policy::view::{IdentityLabels, NamedPort};
use tokio::sync::broadcast;

use crate::attach::enforcement::Enforcement;
use crate::attach::events::{EndpointEvent, EndpointSubscriber};
use crate::store::Store;
use dataplane::{Dataplane, DataplaneError, RawFlowEvent};
use host::PolicyHost;
use identity::{DEFAULT_IDENTITY_GC_GRACE, Identities, IdentityError};
use reconcile::{NewEndpoint, ReconcileConfig, ReconcileError, Reconciler};
use store::{PolicyStore, PolicyStoreError, StoredDoc, StoredObject};

/// Flow events buffered per `events()` subscriber before the slowest loses some.
const EVENTS_BUFFER: usize = 4096;

/// How often the datapath's conntrack is collected.
pub const CONNTRACK_GC_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub node: String,
    pub mode: PolicyMode,
    pub identity_gc_grace: Duration,
}

impl PolicyConfig {
    pub fn new(node: &str, mode: PolicyMode) -> Self {
        Self {
            node: node.to_string(),
            mode,
            identity_gc_grace: DEFAULT_IDENTITY_GC_GRACE,
        }
    }
}

/// `apply` refused the input; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A document is malformed or invalid (the message names the document and field).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] PolicyStoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Store(#[from] PolicyStoreError),
    #[error("no endpoint {0}")]
    NoEndpoint(String),
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

fn compile_mode(m: PolicyMode) -> Mode {
    match m {
        PolicyMode::Enforce => Mode::Enforce,
        PolicyMode::Audit => Mode::Audit,
    }
}

/// The policy control plane of this node. Cheap to clone.
#[derive(Clone)]
pub struct PolicyAgent {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: PolicyConfig,
    objects: PolicyStore,
    reconciler: Arc<Reconciler>,
    events: broadcast::Sender<FlowEvent>,
}

impl PolicyAgent {
    pub fn new(
        cfg: PolicyConfig,
        store: Arc<dyn Store>,
        dataplane: Arc<dyn Dataplane>,
        host: Arc<dyn PolicyHost>,
    ) -> Self {
        Self::with_reconcile(
            ReconcileConfig::new(&cfg.node, compile_mode(cfg.mode)),
            cfg,
            store,
            dataplane,
            host,
        )
    }

    /// As [`PolicyAgent::new`], with the loop's timings given (tests).
    pub fn with_reconcile(
        rc: ReconcileConfig,
        cfg: PolicyConfig,
        store: Arc<dyn Store>,
        dataplane: Arc<dyn Dataplane>,
        host: Arc<dyn PolicyHost>,
    ) -> Self {
        let identities = Identities::new(store.clone(), cfg.identity_gc_grace);
        let reconciler = Arc::new(Reconciler::new(
            rc,
            store.clone(),
            dataplane,
            host,
            identities,
        ));
        let (events, _) = broadcast::channel(EVENTS_BUFFER);
        Self {
            inner: Arc::new(Inner {
                cfg,
                objects: PolicyStore::new(store),
                reconciler,
                events,
            }),
        }
    }

    /// Starts the reconcile loop (it adopts what the kernel holds first).
    pub fn spawn(&self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.inner.reconciler.clone().run(stop))
    }

    /// Waits until the loop's first pass has run (the daemon, before it takes ADDs).
    pub async fn ready(&self) {
        self.inner.reconciler.ready().await;
    }

    pub fn mode(&self) -> PolicyMode {
        self.inner.cfg.mode
    }

    /// `netctl policy apply`: parses every document of `text` (YAML or JSON, one or
    /// many) and writes them all in one transaction, or nothing.
    pub async fn apply(&self, text: &str) -> Result<ApplyOutcome, ApplyError> {
        let parsed =
            strait_policy::parse_documents(text).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let docs: Vec<StoredDoc> = parsed.into_iter().map(StoredDoc::from).collect();
        let revision = self.inner.objects.apply(&docs).await.map_err(|e| {
            // etcd refuses a transaction over its --max-request-bytes (1.5 MiB by
            // default), as Kubernetes refuses an object over 1.5 MiB: say so plainly.
            if e.to_string().contains("request is too large") {
                ApplyError::Invalid(format!(
                    "the documents are too large to apply in one transaction ({e}); \
                     nothing was applied: apply them in several files"
                ))
            } else {
                ApplyError::Store(e)
            }
        })?;
        Ok(ApplyOutcome {
            revision,
            keys: docs.iter().map(StoredDoc::key).collect(),
        })
    }

    /// `netctl policy delete KEY` (`policy/k8s/NS/NAME`, `policy/cluster/NAME`,
    /// `namespaces/NAME`): whether it existed, and the revision after.
    pub async fn delete(&self, key: &str) -> Result<(bool, i64), PolicyError> {
        Ok(self.inner.objects.delete(key).await?)
    }

    pub async fn list(&self) -> Result<Vec<PolicyObject>, PolicyError> {
        Ok(self
            .inner
            .objects
            .list()
            .await?
            .into_iter()
            .map(object_view)
            .collect())
    }

    pub async fn get(&self, key: &str) -> Result<Option<PolicyObject>, PolicyError> {
        Ok(self.inner.objects.get(key).await?.map(object_view))
    }

    /// `netctl policy show --endpoint ID`.
    pub fn show(&self, endpoint_id: &str) -> Result<EndpointPolicyView, PolicyError> {
        let snap = self.inner.reconciler.snapshot();
        let key = trace::find_endpoint(&snap, endpoint_id)
            .map(|(k, _)| k.clone())
            .ok_or_else(|| PolicyError::NoEndpoint(endpoint_id.to_string()))?;
        let ifindex = snap
            .enforced
            .iter()
            .find(|(_, en)| en.endpoint == key)
            .map(|(i, _)| *i);
        let installed = match ifindex {
            Some(i) => self.inner.reconciler.dataplane().read_back(i)?,
            None => None,
        };
        show::endpoint_view(&snap, &key, ifindex, installed.as_ref())
            .ok_or_else(|| PolicyError::NoEndpoint(endpoint_id.to_string()))
    }

    /// `netctl policy trace`: `from`/`to` are endpoint ids, `[NS/]k=v,...` or an
    /// address or CIDR; `protocol` as on the wire; `port` the destination port (or
    /// ICMP `type << 8 | code`).
    pub fn trace(
        &self,
        from: &str,
        to: &str,
        protocol: u8,
        port: u16,
    ) -> Result<TraceView, PolicyError> {
        let snap = self.inner.reconciler.snapshot();
        let from = trace::resolve(&snap, from)?;
        let to = trace::resolve(&snap, to)?;
        let dp = self.inner.reconciler.dataplane().clone();
        let installed = |key: &str| {
            let ifindex = snap
                .enforced
                .iter()
                .find(|(_, en)| en.endpoint == key)
                .map(|(i, _)| *i)?;
            dp.read_back(ifindex).ok().flatten()
        };
        Ok(trace::trace(&snap, &from, &to, protocol, port, installed))
    }

    /// `netctl monitor`: named flow events as the datapath reports them.
    pub fn events(&self) -> broadcast::Receiver<FlowEvent> {
        self.inner.events.subscribe()
    }

    /// Names one datapath event and sends it to every `events()` subscriber (the
    /// daemon feeds the datapath's ring buffer here).
    pub fn publish(&self, raw: &RawFlowEvent) {
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        // Named under the read lock: a copy of the snapshot per event would cost
        // what the endpoints' tables weigh, on every new connection.
        let event = self
            .inner
            .reconciler
            .with_snapshot(|snap| flows::enrich(snap, &self.inner.cfg.node, raw));
        let _ = self.inner.events.send(event);
    }

    pub fn status(&self) -> PolicyStatus {
        let snap = self.inner.reconciler.snapshot();
        PolicyStatus {
            mode: self.inner.cfg.mode,
            applied_revision: snap.applied_revision,
            endpoints_enforced: snap.enforced.len(),
            rules: snap.compiler.rules().len(),
            policies: snap.compiler.policies().len(),
            identities: snap.view.identities.len(),
            ipcache_entries: snap.ipcache.len(),
            last_error: snap.last_error.clone(),
        }
    }

    /// CNI ADD, before the record is written: the endpoint's identity (resolving
    /// keeps it from the GC until the record names it; see [`identity`]).
    pub async fn endpoint_identity(
        &self,
        namespace: &str,
        labels: &Labels,
    ) -> Result<u32, PolicyError> {
        let il = IdentityLabels {
            namespace: namespace.to_string(),
            labels: labels.clone(),
        };
        Ok(self.inner.reconciler.identities().resolve(&il).await?)
    }

    /// CNI ADD, once the veth exists and before ADD answers: enforcement is live on
    /// it and its tables are installed.
    #[allow(clippy::too_many_arguments)]
    pub async fn enforce_new(
        &self,
        record_key: &str,
        ep: &Endpoint,
        namespace: &str,
        named_ports: Vec<NamedPort>,
        identity: u32,
        host_ifindex: u32,
    ) -> Result<(), PolicyError> {
        let new = NewEndpoint {
            key: record_key.to_string(),
            host_ifname: ep.host_ifname.clone(),
            ifindex: host_ifindex,
            identity,
            namespace: namespace.to_string(),
            labels: ep.labels.clone(),
            named_ports,
        };
        Ok(self.inner.reconciler.enforce_new(&new).await?)
    }
}

/// DEL: the veth goes, its entries go with it (the loop would remove them once the
/// record is gone; this does not wait for the store).
impl EndpointSubscriber for PolicyAgent {
    fn endpoint_event(&self, event: &EndpointEvent<'_>) {
        if let EndpointEvent::Detached { host_ifname } = event {
            self.inner.reconciler.forget(host_ifname);
        }
    }
}

/// CNI ADD's hook: the identity before the record is written, enforcement once the
/// veth exists.
#[async_trait::async_trait]
impl Enforcement for PolicyAgent {
    async fn identity(&self, ep: &Endpoint) -> Result<u32, String> {
        self.endpoint_identity(&ep.namespace, &ep.labels)
            .await
            .map_err(|e| e.to_string())
    }

    async fn enforce(
        &self,
        record_key: &str,
        ep: &Endpoint,
        host_ifindex: u32,
    ) -> Result<(), String> {
        let identity = match ep.identity {
            Some(id) => id,
            None => self.identity(ep).await?,
        };
        self.enforce_new(
            record_key,
            ep,
            &ep.namespace,
            ep.named_ports.clone(),
            identity,
            host_ifindex,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

fn object_view(o: StoredObject) -> PolicyObject {
    PolicyObject {
        key: o.key,
        revision: o.revision,
        source: o.source,
        normalized: o.normalized,
        origin: o.origin,
    }
}
