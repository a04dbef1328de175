//! The loop that owns enforcement on this node.
//!
//! It follows the store (one watch of everything below `/strait/v1/`, keeping what
//! [`Cluster`] holds: policies, namespaces, identities, every node's endpoint
//! records, node records) and, on any change — coalesced: it waits
//! [`ReconcileConfig::coalesce`] for more, never longer than
//! [`ReconcileConfig::max_delay`] after the first — runs one *pass*:
//!
//! 1. every local endpoint whose record names no identity, or one that no longer
//!    stands for its (namespace, labels) (`netctl endpoint label`), gets its identity
//!    resolved ([`super::identity`]) and its record rewritten by CAS: that is how
//!    label changes take effect;
//! 2. the compiler is rebuilt when the policies changed;
//! 3. every local endpoint whose veth exists is compiled, and installed only if its
//!    identity or tables differ from what it has;
//! 4. entries of endpoints that are gone are removed — after the installs, and at
//!    start after adopting what `Dataplane::installed` lists: an endpoint that
//!    survives an agent restart is never without enforcement (the first pass also
//!    attaches this agent's programs to every endpoint, replacing the previous
//!    agent's in place);
//! 5. the ipcache is synced when it changed.
//!
//! [`Snapshot::applied_revision`] is the store revision the kernel's maps reflect
//! once a pass succeeds (what the apply-to-enforced latency is measured by). A
//! failed pass is retried after [`ReconcileConfig::retry`].
//!
//! CNI ADD installs a new endpoint itself, before it answers ([`Reconciler::enforce_new`]),
//! under the same lock as a pass's installs; until the loop has seen that endpoint's
//! record, the loop leaves its entry alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use strait_policy::compile::{Compiler, Mode};
use strait_policy::tables::EndpointTables;
use strait_policy::view::{ClusterView, IdentityLabels, LocalEndpoint, NamedPort};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::cluster::{Changed, Cluster, prefixes};
use super::dataplane::{Dataplane, DataplaneError};
use super::endpoints::{all_endpoints_prefix, identity_patch};
use super::host::PolicyHost;
use super::identity::{Identities, IdentityError};
use super::ipcache;
use crate::store::{Compare, PREFIX, Revision, Store, Txn, TxnOp, WatchMessage};

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub node: String,
    pub mode: Mode,
    /// After a change, how long to wait for more before a pass.
    pub coalesce: Duration,
    /// The longest a change waits for its pass.
    pub max_delay: Duration,
    /// After a failed pass, when to try again.
    pub retry: Duration,
    /// How often the identity GC runs (and host addresses are read again).
    pub housekeeping: Duration,
}

impl ReconcileConfig {
    pub fn new(node: &str, mode: Mode) -> Self {
        Self {
            node: node.to_string(),
            mode,
            coalesce: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            retry: Duration::from_secs(1),
            housekeeping: Duration::from_secs(30),
        }
    }
}

/// What one local endpoint has in the kernel, as this agent installed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    /// Its record's store key.
    pub endpoint: String,
    pub host_ifname: String,
    pub identity: u32,
    pub tables: EndpointTables,
    /// The loop has seen its record (until then, only DEL removes the entry).
    pub seen: bool,
    /// strait's programs are on its veth. They go on every endpoint once the
    /// cluster has a policy, and stay: a cluster without policies pays nothing per
    /// ADD (a tcx attach waits for an RCU grace period under RTNL, ~12 ms a hook).
    pub attached: bool,
}

/// Attaches the programs off the async workers: the syscall sleeps through an RCU
/// grace period.
async fn attach_blocking(
    dp: &Arc<dyn Dataplane>,
    ifname: &str,
    ifindex: u32,
) -> Result<(), DataplaneError> {
    let dp = dp.clone();
    let name = ifname.to_string();
    tokio::task::spawn_blocking(move || dp.attach(&name, ifindex))
        .await
        .unwrap_or_else(|e| {
            Err(DataplaneError::Attach {
                ifname: ifname.to_string(),
                reason: format!("attach task: {e}"),
            })
        })
}

/// What the loop last made of the cluster, for `show`, `trace`, `status`, events.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub cluster: Arc<Cluster>,
    pub compiler: Arc<Compiler>,
    pub view: Arc<ClusterView>,
    /// By ifindex.
    pub enforced: BTreeMap<u32, Enforced>,
    pub ipcache: BTreeMap<IpNet, u32>,
    /// The store revision the kernel's maps reflect.
    pub applied_revision: Revision,
    pub last_error: Option<String>,
}

impl Snapshot {
    fn new(mode: Mode) -> Self {
        Self {
            cluster: Arc::default(),
            compiler: Arc::new(Compiler::new(Vec::new(), mode)),
            view: Arc::default(),
            enforced: BTreeMap::new(),
            ipcache: BTreeMap::new(),
            applied_revision: 0,
            last_error: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Dataplane(#[from] super::dataplane::DataplaneError),
    #[error("{0}")]
    Host(String),
}

/// A new endpoint ADD enforces before it answers.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Its record's store key.
    pub key: String,
    pub host_ifname: String,
    pub ifindex: u32,
    pub identity: u32,
    pub namespace: String,
    pub labels: strait_policy::selector::Labels,
    pub named_ports: Vec<NamedPort>,
}

pub struct Reconciler {
    cfg: ReconcileConfig,
    store: Arc<dyn Store>,
    dp: Arc<dyn Dataplane>,
    host: Arc<dyn PolicyHost>,
    identities: Identities,
    shared: RwLock<Snapshot>,
    /// Held while installing or removing (a pass, an ADD), so the two never
    /// interleave on one endpoint.
    install: tokio::sync::Mutex<()>,
    /// True once a pass has run: the compiler knows the stored policies.
    ready: watch::Sender<bool>,
}

/// The loop's own state between passes.
struct LoopState {
    cluster: Arc<Cluster>,
    /// Per prefix, the revision it was read at: older events are already in.
    loaded_at: Vec<(String, Revision)>,
    watch_from: Revision,
    policies_changed: bool,
    /// Not yet reconciled since the agent started: adopt `installed()`.
    first: bool,
    ipcache_synced: Option<BTreeMap<IpNet, u32>>,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means nobody can stop us any more: treat it as a stop.
    let _ = stop.wait_for(|s| *s).await;
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl Reconciler {
    pub fn new(
        cfg: ReconcileConfig,
        store: Arc<dyn Store>,
        dp: Arc<dyn Dataplane>,
        host: Arc<dyn PolicyHost>,
        identities: Identities,
    ) -> Self {
        let shared = RwLock::new(Snapshot::new(cfg.mode));
        Self {
            cfg,
            store,
            dp,
            host,
            identities,
            shared,
            install: tokio::sync::Mutex::new(()),
            ready: watch::channel(false).0,
        }
    }

    /// Waits for the first pass: until then the compiler does not know the stored
    /// policies, and an endpoint compiled with it would be open.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn config(&self) -> &ReconcileConfig {
        &self.cfg
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    pub fn dataplane(&self) -> &Arc<dyn Dataplane> {
        &self.dp
    }

    /// What the loop last made of the cluster.
    pub fn snapshot(&self) -> Snapshot {
        read(&self.shared).clone()
    }

    /// `f` on the current snapshot, without copying it (its tables grow with the
    /// rules): for what runs per packet event.
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&read(&self.shared))
    }

    /// Follows the store and reconciles until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.cfg.retry;
        let mut first = true;
        loop {
            let mut st = match self.load(first).await {
                Ok(st) => st,
                Err(e) => {
                    warn!(error = %e, "policy: reading the store; retrying");
                    self.set_error(Some(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = self.cfg.retry;
            first = false;
            let mut failed = !self.pass_logged(&mut st).await;
            let mut watch = match self.store.watch(PREFIX, st.watch_from).await {
                Ok(w) => w,
                Err(e) => {
                    warn!(error = %e, "policy: watching the store; reading it again");
                    continue;
                }
            };
            let mut housekeeping = tokio::time::interval(self.cfg.housekeeping);
            housekeeping.tick().await;
            loop {
                let mut changed = Changed::default();
                let retry = tokio::time::sleep(if failed {
                    self.cfg.retry
                } else {
                    Duration::from_secs(3600)
                });
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    msg = watch.rx.recv() => match self.absorb(&mut st, msg) {
                        Some(c) => changed = c,
                        None => break,
                    },
                    _ = retry, if failed => changed.view = true,
                    _ = housekeeping.tick() => {
                        self.collect_identities().await;
                        // The host's own addresses may have changed.
                        changed.ipcache = true;
                    }
                }
                if !changed.any() {
                    if !failed {
                        write(&self.shared).applied_revision = st.cluster.revision;
                    }
                    continue;
                }
                // Coalesce: more changes for up to `coalesce` each, `max_delay` in all.
                let deadline = tokio::time::Instant::now() + self.cfg.max_delay;
                let mut ended = false;
                loop {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let wait = self.cfg.coalesce.min(deadline - now);
                    match tokio::time::timeout(wait, watch.rx.recv()).await {
                        Ok(msg) => match self.absorb(&mut st, msg) {
                            Some(c) => changed.merge(c),
                            None => {
                                ended = true;
                                break;
                            }
                        },
                        Err(_) => break,
                    }
                }
                st.policies_changed |= changed.policies;
                failed = !self.pass_logged(&mut st).await;
                if ended {
                    break;
                }
            }
        }
    }

    /// Reads every prefix the cluster is made of.
    async fn load(&self, first: bool) -> Result<LoopState, ReconcileError> {
        let mut cluster = Cluster::default();
        let mut loaded_at = Vec::new();
        let mut min_rev = Revision::MAX;
        let mut max_rev = 0;
        for prefix in prefixes() {
            let resp = self.store.range(&prefix).await?;
            cluster.load(&prefix, &resp.kvs);
            min_rev = min_rev.min(resp.revision);
            max_rev = max_rev.max(resp.revision);
            loaded_at.push((prefix, resp.revision));
        }
        cluster.revision = max_rev;
        Ok(LoopState {
            cluster: Arc::new(cluster),
            loaded_at,
            watch_from: min_rev + 1,
            policies_changed: true,
            first,
            ipcache_synced: None,
        })
    }

    /// Applies one watch message; `None` when the watch ended (read again).
    fn absorb(&self, st: &mut LoopState, msg: Option<WatchMessage>) -> Option<Changed> {
        match msg {
            Some(WatchMessage::Events(events)) => {
                let mut changed = Changed::default();
                let cluster = Arc::make_mut(&mut st.cluster);
                for e in &events {
                    let rev = e.kv.mod_revision;
                    cluster.revision = cluster.revision.max(rev);
                    let already = st
                        .loaded_at
                        .iter()
                        .any(|(p, at)| e.kv.key.starts_with(p.as_str()) && rev <= *at);
                    if !already {
                        changed.merge(cluster.apply(e.kind, &e.kv));
                    }
                }
                Some(changed)
            }
            Some(WatchMessage::Compacted { .. }) | None => None,
        }
    }

    async fn pass_logged(&self, st: &mut LoopState) -> bool {
        let t0 = Instant::now();
        match self.pass(st).await {
            Ok(()) => {
                debug!(
                    revision = st.cluster.revision,
                    took_ms = t0.elapsed().as_secs_f64() * 1e3,
                    "policy reconciled"
                );
                true
            }
            Err(e) => {
                warn!(error = %e, "policy: reconciling; will retry");
                self.set_error(Some(e));
                false
            }
        }
    }

    fn set_error(&self, e: Option<String>) {
        write(&self.shared).last_error = e;
    }

    /// One pass (see the module doc); the first error is returned after everything
    /// else was tried.
    async fn pass(&self, st: &mut LoopState) -> Result<(), String> {
        let cluster = st.cluster.clone();
        let node = self.cfg.node.as_str();
        let mut errors: Vec<String> = Vec::new();

        // 1. Identities of the local endpoints.
        let mut identity_of: BTreeMap<String, u32> = BTreeMap::new();
        let mut fresh: BTreeMap<u32, IdentityLabels> = BTreeMap::new();
        for (key, e) in cluster.local_endpoints(node) {
            let want = e.facts.identity_labels();
            let current = e
                .facts
                .identity
                .filter(|id| cluster.identities.get(id) == Some(&want));
            if let Some(id) = current {
                identity_of.insert(key.clone(), id);
                continue;
            }
            match self.relabel(key, e, &want).await {
                Ok(id) => {
                    identity_of.insert(key.clone(), id);
                    fresh.insert(id, want);
                }
                Err(err) => errors.push(format!("endpoint {}: {err}", e.facts.id)),
            }
        }

        // 2. The compiler and the view (with identities the watch has not shown yet).
        let compiler = if st.policies_changed {
            let policies = cluster.policies.values().cloned().collect();
            Arc::new(Compiler::new(policies, self.cfg.mode))
        } else {
            read(&self.shared).compiler.clone()
        };
        let policies_exist = !compiler.policies().is_empty();
        let mut view = cluster.view();
        for (id, labels) in fresh {
            view.identities.entry(id).or_insert(labels);
        }
        for (key, e) in cluster.local_endpoints(node) {
            if let Some(id) = identity_of.get(key)
                && !e.facts.named_ports.is_empty()
            {
                let ports = view.named_ports.entry(*id).or_default();
                for p in &e.facts.named_ports {
                    if !ports.contains(p) {
                        ports.push(p.clone());
                    }
                }
                ports.sort();
            }
        }
        let view = Arc::new(view);
        let addrs = match self.host.addresses().await {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(format!("reading the host's addresses: {e}"));
                None
            }
        };

        // 3 and 4, under the install lock, with the links read under it too (an
        // ADD's veth is either in this list or installed after this pass).
        {
            let _guard = self.install.lock().await;
            let links = self
                .host
                .endpoint_ifindexes()
                .await
                .map_err(|e| format!("listing endpoint links: {e}"))?;
            let enforced_before = read(&self.shared).enforced.clone();
            let mut wanted: BTreeSet<u32> = BTreeSet::new();
            for (key, e) in cluster.local_endpoints(node) {
                let (Some(&ifindex), Some(&identity)) =
                    (links.get(&e.facts.host_ifname), identity_of.get(key))
                else {
                    continue;
                };
                wanted.insert(ifindex);
                let before = enforced_before.get(&ifindex);
                // Programs go on once the cluster has a policy; at start also where a
                // previous agent put them (replaced in place by this agent's).
                let adopt = st.first
                    && before.is_none()
                    && self.dp.is_attached(&e.facts.host_ifname).unwrap_or(false);
                let want_attached = before.is_some_and(|b| b.attached) || policies_exist || adopt;
                let attach_now = want_attached && (adopt || !before.is_some_and(|b| b.attached));
                let local = LocalEndpoint {
                    identity,
                    namespace: e.facts.namespace.clone(),
                    labels: e.facts.labels.clone(),
                    named_ports: e.facts.named_ports.clone(),
                };
                let tables = compiler.compile(&view, &local);
                let mut entry = Enforced {
                    endpoint: key.clone(),
                    host_ifname: e.facts.host_ifname.clone(),
                    identity,
                    tables,
                    seen: true,
                    attached: want_attached,
                };
                if before == Some(&entry) && !attach_now {
                    continue;
                }
                let same_tables = before.is_some_and(|old| {
                    old.identity == entry.identity && old.tables == entry.tables
                });
                if !same_tables && let Err(err) = self.dp.install(ifindex, identity, &entry.tables)
                {
                    errors.push(format!("installing {}: {err}", e.facts.id));
                    continue;
                }
                // Tables first, then the programs that read them.
                if attach_now
                    && let Err(err) = attach_blocking(&self.dp, &e.facts.host_ifname, ifindex).await
                {
                    errors.push(format!("attaching to {}: {err}", e.facts.host_ifname));
                    entry.attached = before.is_some_and(|b| b.attached);
                }
                write(&self.shared).enforced.insert(ifindex, entry);
            }
            let mut gone: BTreeSet<u32> = enforced_before
                .iter()
                .filter(|(_, en)| en.seen)
                .map(|(i, _)| *i)
                .collect();
            if st.first {
                match self.dp.installed() {
                    Ok(found) => gone.extend(
                        found
                            .into_iter()
                            .filter(|i| enforced_before.get(i).is_none_or(|en| en.seen)),
                    ),
                    Err(err) => errors.push(format!("listing installed endpoints: {err}")),
                }
            }
            for ifindex in gone.difference(&wanted) {
                match self.dp.remove(*ifindex) {
                    Ok(()) => {
                        write(&self.shared).enforced.remove(ifindex);
                    }
                    Err(err) => errors.push(format!("removing ifindex {ifindex}: {err}")),
                }
            }
        }
        if errors.is_empty() {
            st.first = false;
        }
        self.ready.send_replace(true);

        // 5. The ipcache.
        if let Some(addrs) = addrs {
            let want = ipcache::wanted(&cluster, node, &addrs);
            if st.ipcache_synced.as_ref() != Some(&want) {
                match self.dp.sync_ipcache(&want) {
                    Ok(()) => st.ipcache_synced = Some(want),
                    Err(err) => errors.push(format!("syncing the ipcache: {err}")),
                }
            }
        }

        st.policies_changed = false;
        let mut shared = write(&self.shared);
        shared.cluster = cluster.clone();
        shared.compiler = compiler;
        shared.view = view;
        if let Some(ipc) = &st.ipcache_synced {
            shared.ipcache = ipc.clone();
        }
        if errors.is_empty() {
            shared.applied_revision = cluster.revision;
            shared.last_error = None;
            Ok(())
        } else {
            let e = errors.join("; ");
            shared.last_error = Some(e.clone());
            Err(e)
        }
    }

    /// Resolves a local endpoint's identity and rewrites its record with it (by CAS:
    /// a record changed meanwhile is left to the next pass).
    async fn relabel(
        &self,
        key: &str,
        e: &super::cluster::EndpointEntry,
        want: &IdentityLabels,
    ) -> Result<u32, ReconcileError> {
        let id = self.identities.resolve(want).await?;
        let value = identity_patch(key, &e.raw, id).map_err(ReconcileError::Host)?;
        let ops = [TxnOp::Put {
            key: key.to_string(),
            value,
            lease: None,
        }];
        let resp = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(key, e.mod_revision)])
                    .and_then(ops),
            )
            .await?;
        if resp.succeeded {
            info!(endpoint = %e.facts.id, identity = id, old = ?e.facts.identity, "endpoint identity set");
        }
        Ok(id)
    }

    /// ADD: makes policy live on a new endpoint's veth and installs its tables,
    /// before ADD answers.
    pub async fn enforce_new(&self, ep: &NewEndpoint) -> Result<(), ReconcileError> {
        self.ready().await;
        let _guard = self.install.lock().await;
        let (compiler, view) = {
            let s = read(&self.shared);
            (s.compiler.clone(), s.view.clone())
        };
        let mut view = (*view).clone();
        view.identities
            .entry(ep.identity)
            .or_insert_with(|| IdentityLabels {
                namespace: ep.namespace.clone(),
                labels: ep.labels.clone(),
            });
        if !ep.named_ports.is_empty() {
            let ports = view.named_ports.entry(ep.identity).or_default();
            for p in &ep.named_ports {
                if !ports.contains(p) {
                    ports.push(p.clone());
                }
            }
        }
        let local = LocalEndpoint {
            identity: ep.identity,
            namespace: ep.namespace.clone(),
            labels: ep.labels.clone(),
            named_ports: ep.named_ports.clone(),
        };
        let tables = compiler.compile(&view, &local);
        self.dp.install(ep.ifindex, ep.identity, &tables)?;
        // With no policy in the cluster, nothing to enforce yet: the programs go on
        // with the first policy (see `Enforced::attached`).
        let attached = !compiler.policies().is_empty();
        if attached {
            attach_blocking(&self.dp, &ep.host_ifname, ep.ifindex).await?;
        }
        write(&self.shared).enforced.insert(
            ep.ifindex,
            Enforced {
                endpoint: ep.key.clone(),
                host_ifname: ep.host_ifname.clone(),
                identity: ep.identity,
                tables,
                seen: false,
                attached,
            },
        );
        Ok(())
    }

    /// DEL (or a failed ADD): the endpoint's veth goes; its entries go now.
    /// Synchronous: called from the attacher's event (a map update, no waiting).
    pub fn forget(&self, host_ifname: &str) {
        let ifindex = read(&self.shared)
            .enforced
            .iter()
            .find(|(_, en)| en.host_ifname == host_ifname)
            .map(|(i, _)| *i);
        if let Some(ifindex) = ifindex {
            match self.dp.remove(ifindex) {
                Ok(()) => {
                    write(&self.shared).enforced.remove(&ifindex);
                }
                Err(e) => {
                    warn!(link = host_ifname, error = %e, "removing policy of a deleted endpoint")
                }
            }
        }
    }

    /// One identity GC pass (the records are read after the identities).
    async fn collect_identities(&self) {
        let store = self.store.clone();
        let referenced = || async move {
            let resp = store.range(&all_endpoints_prefix()).await?;
            Ok(resp
                .kvs
                .iter()
                .filter_map(|kv| super::endpoints::decode(&kv.key, &kv.value).ok())
                .filter_map(|f| f.identity)
                .collect())
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Err(e) = self.identities.collect(referenced, now).await {
            warn!(error = %e, "identity GC");
        }
    }
}
