//! The local API: HTTP/1.1 with JSON bodies on a unix socket (mode 0600), served to the
//! `strait` CNI plugin and `netctl`. Paths and bodies are defined in `strait-api`.
//!
//! An adapter and nothing more: each handler decodes the request, calls the owner of
//! what it asks about ([`crate::attach`], [`crate::node`], [`crate::fabric`], the fast
//! path) and encodes the answer. Failures map to a CNI code and an HTTP status in
//! [`error`], the one place that decides it.
//!
//! Bodies are read as raw bytes and decoded here (not with axum's `Json` extractor),
//! so a missing Content-Type is no error and a malformed body gets the CNI decode code.
//!
//! Handlers by subject: [`cni`] (the plugin's verbs), [`views`] (`netctl status`,
//! endpoints, IPAM, nodes, routes, the fast path's maps, metrics), [`endpoints`]
//! (`netctl endpoint label`), [`bgp`] (sessions, RIB, external peers), [`policy`]
//! (network policy objects, show, trace, status and the monitor's stream).

mod bgp;
mod cni;
mod endpoints;
pub mod error;
mod ipsec;
mod policy;
mod services;
#[cfg(test)]
mod tests;
mod views;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post, put};
use strait_api::{Readiness, code, paths};
use tokio::net::UnixListener;

use crate::attach::Attacher;
use crate::fabric::FabricHandle;
use crate::fabric::bgp::BgpHandle;
use crate::fabric::bgp::external::ExternalPeers;
use crate::fastpath::FastPath;
use crate::metrics::{Metrics, PolicyCounters};
use crate::node::Registry;
use error::Failure;

/// The owners the handlers call, all there once start-up has built them.
pub struct Owners {
    pub attacher: Arc<Attacher>,
    /// This node's registration (`netctl nodes`).
    pub registry: Arc<Registry>,
    /// The fabric's handle (`/v1/routes`).
    pub fabric: FabricHandle,
    /// The BGP fabric's handle (`/v1/bgp/peers`, `/v1/bgp/rib`), with `--fabric bgp`.
    pub bgp: Option<BgpHandle>,
    /// The external BGP peers in the cluster store (served whatever the fabric).
    pub peers: ExternalPeers,
    /// The cluster's IPsec settings (`netctl ipsec mode`).
    pub ipsec: crate::ipsec::IpsecSettingsStore,
    /// The external IPsec peers in the cluster store (`netctl ipsec peer`).
    pub ipsec_peers: crate::ipsec::IpsecPeers,
}

/// What `netctl kubernetes` reads: this agent's watches, and the store for the
/// cluster's refusals.
#[derive(Clone)]
pub struct KubeView {
    pub status: Arc<crate::kube::KubeStatus>,
    pub store: Arc<dyn crate::store::Store>,
}

/// What the handlers reach. The socket is served from the very start, before the
/// store is open: until the [`Owners`] are set, calls get "try again later" with the
/// start-up phase (DEL is queued on disk instead), and readiness says what start-up
/// waits for.
pub struct AppState {
    owners: OnceLock<Owners>,
    /// The eBPF fast path, once attached (`netctl status`, `netctl fastpath`). Apart
    /// from the owners: it is attached after them, and may never be.
    fast_path: OnceLock<FastPath>,
    /// Network policy's control plane (`netctl policy`, `netctl monitor`), once
    /// started.
    policy: OnceLock<crate::policy::PolicyAgent>,
    docker: OnceLock<Arc<crate::docker::DockerPlugin>>,
    /// The IPsec engine (`netctl ipsec status|rekey`), once started.
    ipsec: OnceLock<crate::ipsec::IpsecHandle>,
    /// Services (`netctl service`), once started.
    services: OnceLock<crate::services::ServicesAgent>,
    /// The Kubernetes integration (`netctl kubernetes`), when configured and started.
    kube: OnceLock<KubeView>,
    /// `netctl doctor`'s checks, once start-up knows the host (`/v1/doctor`).
    doctor: OnceLock<Arc<crate::doctor::Doctor>>,
    /// What start-up is doing or waiting for, shown while not ready.
    phase: Mutex<String>,
    /// This agent's fabric mode (`/v1/bgp/*` answer only in bgp mode).
    pub fabric_mode: strait_api::FabricMode,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub node: String,
    pub store_description: String,
    pub state_dir: std::path::PathBuf,
    pub pools: Vec<ipnet::IpNet>,
    /// The policy datapath's counters (metrics; the monitor's ring buffer losses),
    /// set with [`AppState::set_policy_counters`].
    policy_counters: OnceLock<Arc<dyn PolicyCounters>>,
}

/// The facts about the agent that [`AppState`] shows from the start.
pub struct AgentFacts {
    pub fabric_mode: strait_api::FabricMode,
    pub node: String,
    pub store_description: String,
    pub state_dir: std::path::PathBuf,
    pub pools: Vec<ipnet::IpNet>,
}

impl AppState {
    pub fn new(facts: AgentFacts, metrics: Arc<Metrics>) -> Self {
        Self {
            owners: OnceLock::new(),
            doctor: OnceLock::new(),
            fast_path: OnceLock::new(),
            policy: OnceLock::new(),
            docker: OnceLock::new(),
            ipsec: OnceLock::new(),
            services: OnceLock::new(),
            kube: OnceLock::new(),
            phase: Mutex::new("starting".into()),
            fabric_mode: facts.fabric_mode,
            metrics,
            started: Instant::now(),
            node: facts.node,
            store_description: facts.store_description,
            state_dir: facts.state_dir,
            pools: facts.pools,
            policy_counters: OnceLock::new(),
        }
    }

    /// Start-up built the owners: from now on requests reach them.
    pub fn set_owners(&self, owners: Owners) {
        let _ = self.owners.set(owners);
    }

    pub fn set_doctor(&self, doctor: Arc<crate::doctor::Doctor>) {
        let _ = self.doctor.set(doctor);
    }

    pub fn doctor(&self) -> Option<&Arc<crate::doctor::Doctor>> {
        self.doctor.get()
    }

    pub fn fast_path(&self) -> Option<&FastPath> {
        self.fast_path.get()
    }

    pub fn set_fast_path(&self, fast_path: FastPath) {
        let _ = self.fast_path.set(fast_path);
    }

    pub fn set_policy(&self, policy: crate::policy::PolicyAgent) {
        let _ = self.policy.set(policy);
    }

    pub fn set_ipsec(&self, handle: crate::ipsec::IpsecHandle) {
        let _ = self.ipsec.set(handle);
    }

    pub fn set_kube(&self, kube: KubeView) {
        let _ = self.kube.set(kube);
    }

    pub fn kube(&self) -> Option<&KubeView> {
        self.kube.get()
    }

    pub fn set_services(&self, services: crate::services::ServicesAgent) {
        let _ = self.services.set(services);
    }

    /// Services, or "try again later" while the agent starts.
    pub fn services(&self) -> Result<&crate::services::ServicesAgent, Failure> {
        self.services.get().ok_or_else(|| self.starting())
    }

    /// The IPsec engine, or "try again later" while the agent starts.
    pub fn ipsec(&self) -> Result<&crate::ipsec::IpsecHandle, Failure> {
        self.ipsec.get().ok_or_else(|| self.starting())
    }

    /// Network policy's control plane, once started.
    pub fn set_docker(&self, plugin: Arc<crate::docker::DockerPlugin>) {
        let _ = self.docker.set(plugin);
    }

    pub fn docker(&self) -> Option<&Arc<crate::docker::DockerPlugin>> {
        self.docker.get()
    }

    pub fn policy(&self) -> Option<&crate::policy::PolicyAgent> {
        self.policy.get()
    }

    pub fn owners(&self) -> Option<&Owners> {
        self.owners.get()
    }

    /// The owners, or the "starting" failure every call gets before they exist.
    fn ready_owners(&self) -> Result<&Owners, Failure> {
        self.owners.get().ok_or_else(|| self.starting())
    }

    /// The one "agent is starting" answer.
    fn starting(&self) -> Failure {
        Failure::new(
            code::TRY_AGAIN_LATER,
            format!("agent is starting: {}", self.phase()),
        )
    }

    /// The policy datapath's counters, once it is loaded; and, with the control
    /// plane set ([`AppState::set_policy`] first), its verdicts are counted from
    /// here on (call within the runtime).
    pub fn set_policy_counters(&self, counters: Arc<dyn PolicyCounters>) {
        if self.policy_counters.set(counters).is_ok()
            && let Some(agent) = self.policy()
        {
            policy::spawn_verdict_counter(agent, self.metrics.clone());
        }
    }

    pub fn policy_counters(&self) -> Option<&Arc<dyn PolicyCounters>> {
        self.policy_counters.get()
    }

    pub fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.into();
    }

    pub(crate) fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) async fn readiness(&self) -> Readiness {
        match self.owners.get() {
            Some(o) => {
                let mut r = o.attacher.readiness().await;
                // ADDs are served, but this node's routes reach no peer.
                if let Some(failure) = o.bgp.as_ref().and_then(|b| b.failure()) {
                    r.reasons.push(failure);
                    if r.ready {
                        r.ready = false;
                        r.code = code::LIMITED_CONNECTIVITY;
                    }
                }
                r
            }
            None => Readiness {
                ready: false,
                code: code::NOT_AVAILABLE,
                reasons: vec![self.starting().0.message],
            },
        }
    }
}

type Shared = Arc<AppState>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another agent is already serving {0}")]
    InUse(String),
    #[error("binding {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Bind the socket: refuse if a live agent answers on it, replace a stale file, and
/// restrict it to root (the socket can create interfaces in any namespace).
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let shown = path.display().to_string();
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServeError::InUse(shown));
    }
    let bind_err = |source| ServeError::Bind {
        path: shown.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(|| async { "ok" }))
        .route(paths::READYZ, get(views::readyz))
        .route(paths::CNI_ADD, post(cni::add))
        .route(paths::CNI_DEL, post(cni::del))
        .route(paths::CNI_CHECK, post(cni::check))
        .route(paths::CNI_STATUS, post(cni::status))
        .route(paths::CNI_GC, post(cni::gc))
        .route(paths::STATUS, get(views::status))
        .route(paths::ENDPOINTS, get(views::endpoints))
        .route(&paths::endpoint_labels("{id}"), post(endpoints::label))
        .route(paths::IPAM, get(views::ipam))
        .route(paths::DOCKER_NETWORKS, get(views::docker_networks))
        .route(paths::KUBERNETES, get(views::kubernetes))
        .route(paths::IPAM_CHECK, get(views::ipam_check))
        .route(paths::IPAM_RELEASE, post(views::ipam_release))
        .route(paths::NODES, get(views::nodes))
        .route(paths::DOCTOR, get(views::doctor))
        .route(paths::ROUTES, get(views::routes))
        .route(paths::FAST_PATH, get(views::fast_path_maps))
        .route(paths::BGP_PEERS, get(bgp::peers))
        .route(paths::BGP_RIB, get(bgp::rib))
        .route(paths::BGP_REFUSED, get(bgp::refused))
        .route(paths::BGP_EXTERNAL_PEERS, get(bgp::external_peers))
        .route(
            &paths::bgp_external_peer("{name}"),
            put(bgp::put_external_peer).delete(bgp::delete_external_peer),
        )
        .route(paths::POLICIES, get(policy::list).post(policy::apply))
        .route(
            &paths::policy_object("{*key}"),
            get(policy::get).delete(policy::delete),
        )
        .route(&paths::policy_endpoint("{id}"), get(policy::show))
        .route(paths::POLICY_TRACE, post(policy::trace))
        .route(paths::POLICY_STATUS, get(policy::status))
        .route(paths::POLICY_MONITOR, get(policy::monitor))
        .route(paths::SERVICES, get(services::list).post(services::apply))
        .route(paths::SERVICE_TRACE, post(services::trace))
        .route(
            &paths::service_object("{*key}"),
            get(services::get).delete(services::delete),
        )
        .route(
            paths::IPSEC_SETTINGS,
            get(ipsec::settings).put(ipsec::put_settings),
        )
        .route(paths::IPSEC_STATUS, get(ipsec::status))
        .route(
            paths::IPSEC_PEERS,
            get(ipsec::list_peers).post(ipsec::apply_peers),
        )
        .route(
            &paths::ipsec_peer("{peer}"),
            get(ipsec::get_peer)
                .put(ipsec::put_peer)
                .delete(ipsec::delete_peer),
        )
        .route(&paths::ipsec_rekey("{peer}"), post(ipsec::rekey))
        .route(&paths::ipsec_reauth("{peer}"), post(ipsec::reauth))
        .route("/metrics", get(views::metrics))
        .with_state(state)
}

/// Serve the router on `listener` until the future resolves.
pub async fn serve(
    listener: UnixListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Router for the TCP metrics listener (`--metrics-addr`): `/metrics`, and the
/// `/healthz` and `/readyz` probes, which a DaemonSet's kubelet can only reach over
/// TCP. They show nothing the metrics do not.
pub fn metrics_router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(views::metrics))
        .route(paths::HEALTHZ, get(|| async { "ok" }))
        .route(paths::READYZ, get(views::readyz))
        .with_state(state)
}
