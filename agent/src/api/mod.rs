//! The local API: HTTP/1.1 with JSON bodies on a unix socket (mode 0600), served to the
//! `strait` CNI plugin and `netctl`. Paths and bodies are defined in `strait-api`.
//!
//! Bodies are read as raw bytes and decoded here (not with axum's `Json` extractor),
//! so a missing Content-Type is no error and a malformed body gets the CNI decode code.
//! Errors map to an HTTP status and an [`ApiError`] in [`error_response`], the one place
//! that decides it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use strait_api::{
    AddRequest, AgentStatus, ApiError, CheckRequest, DelRequest, GcRequest, Readiness,
    ReleaseRequest, StatusRequest, code, paths,
};
use tokio::net::UnixListener;

use crate::attach::{AttachError, Attacher};
use crate::metrics::Metrics;
use crate::node::Registry;

/// What every handler can reach. The socket is served from the very start, before the
/// store is open: until then [`AppState::attacher`] is empty, CNI calls get "try again
/// later" (DEL is queued on disk instead), and readiness says what start-up waits for.
pub struct AppState {
    pub attacher: tokio::sync::OnceCell<Arc<Attacher>>,
    /// This node's registration; set once the store is open.
    pub registry: tokio::sync::OnceCell<Arc<Registry>>,
    /// The fabric's handle (`/v1/routes`); set once the fabric runs.
    pub fabric: tokio::sync::OnceCell<crate::fabric::FabricHandle>,
    /// This agent's fabric mode (`/v1/bgp/*` answer only in bgp mode).
    pub fabric_mode: strait_api::FabricMode,
    /// The BGP fabric's handle (`/v1/bgp/peers`, `/v1/bgp/rib`); set once it runs.
    pub bgp: tokio::sync::OnceCell<crate::fabric::bgp::BgpHandle>,
    /// The eBPF fast path, when loaded (`netctl status`).
    pub fast_path: std::sync::OnceLock<crate::fastpath::FastPath>,
    /// What start-up is doing or waiting for, shown while not ready.
    pub phase: std::sync::Mutex<String>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub node: String,
    pub store_description: String,
    pub state_dir: std::path::PathBuf,
    pub pools: Vec<ipnet::IpNet>,
}

impl AppState {
    /// The attacher, or the "starting" error every CNI call gets before it exists.
    fn attacher(&self) -> Result<&Arc<Attacher>, ApiError> {
        self.attacher.get().ok_or_else(|| {
            ApiError::new(
                code::TRY_AGAIN_LATER,
                format!("agent is starting: {}", self.phase()),
            )
        })
    }

    pub fn set_phase(&self, phase: impl Into<String>) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.into();
    }

    fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn readiness(&self) -> Readiness {
        match self.attacher.get() {
            Some(a) => a.readiness().await,
            None => Readiness {
                ready: false,
                code: code::NOT_AVAILABLE,
                reasons: vec![format!("agent is starting: {}", self.phase())],
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
        .route(paths::READYZ, get(readyz))
        .route(paths::CNI_ADD, post(cni_add))
        .route(paths::CNI_DEL, post(cni_del))
        .route(paths::CNI_CHECK, post(cni_check))
        .route(paths::CNI_STATUS, post(cni_status))
        .route(paths::CNI_GC, post(cni_gc))
        .route(paths::STATUS, get(status))
        .route(paths::ENDPOINTS, get(endpoints))
        .route(paths::IPAM, get(ipam_view))
        .route(paths::IPAM_CHECK, get(ipam_check))
        .route(paths::IPAM_RELEASE, post(ipam_release))
        .route(paths::NODES, get(nodes))
        .route(paths::ROUTES, get(routes))
        .route(paths::FAST_PATH, get(fast_path_maps))
        .route(paths::BGP_PEERS, get(bgp_peers))
        .route(paths::BGP_RIB, get(bgp_rib))
        .route(paths::BGP_EXTERNAL_PEERS, get(bgp_external_peers))
        .route(
            &paths::bgp_external_peer("{name}"),
            put(bgp_put_external_peer).delete(bgp_delete_external_peer),
        )
        .route("/metrics", get(metrics))
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

/// Router for the TCP metrics listener (`--metrics-addr`): `/metrics` only.
pub fn metrics_router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

// ===== error mapping =====

fn error_response(e: ApiError) -> Response {
    let status = match e.code {
        code::TRY_AGAIN_LATER | code::STORE_UNAVAILABLE | code::NOT_AVAILABLE => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        code::DECODE_FAILURE | code::INVALID_CONFIG | code::INVALID_ENV | code::BAD_NETNS => {
            StatusCode::BAD_REQUEST
        }
        code::UNKNOWN_CONTAINER | code::NOT_CONFIGURED => StatusCode::NOT_FOUND,
        code::DUPLICATE_ATTACHMENT | code::STATIC_IP_UNAVAILABLE | code::CHECK_FAILED => {
            StatusCode::CONFLICT
        }
        code::POOL_EXHAUSTED => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, axum::Json(e)).into_response()
}

impl IntoResponse for AttachError {
    fn into_response(self) -> Response {
        error_response(self.to_api())
    }
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    // dockerd-style clients send no body at all for argument-less calls.
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(code::DECODE_FAILURE, format!("malformed request body: {e}")))
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

/// Run a CNI verb, recording its latency and outcome.
async fn timed<T, F>(s: &AppState, verb: &str, f: F) -> Response
where
    T: serde::Serialize,
    F: std::future::Future<Output = Result<T, ApiError>>,
{
    let t0 = Instant::now();
    let res = f.await;
    s.metrics.observe(verb, res.is_ok(), t0.elapsed());
    match res {
        Ok(v) => json(&v),
        Err(e) => error_response(e),
    }
}

fn api(e: AttachError) -> ApiError {
    e.to_api()
}

// ===== handlers =====

async fn readyz(State(s): State<Shared>) -> Response {
    let r = s.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(r)).into_response()
}

async fn cni_add(State(s): State<Shared>, body: Bytes) -> Response {
    let req: AddRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    timed(&s, "add", async {
        s.attacher()?.add(req).await.map_err(api)
    })
    .await
}

async fn cni_del(State(s): State<Shared>, body: Bytes) -> Response {
    let req: DelRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    timed(&s, "del", async {
        match s.attacher.get() {
            Some(a) => a.del(req).await.map_err(api)?,
            // Before the store is open, DEL still succeeds: queued like the plugin
            // queues it when the agent is down, and applied once start-up gets there.
            None => {
                strait_api::queue::enqueue(&s.state_dir, &req)
                    .map_err(|e| ApiError::new(code::IO_FAILURE, format!("queueing DEL: {e}")))?;
            }
        }
        Ok(serde_json::json!({}))
    })
    .await
}

async fn cni_check(State(s): State<Shared>, body: Bytes) -> Response {
    let req: CheckRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    timed(&s, "check", async {
        s.attacher()?.check(req).await.map_err(api)?;
        Ok(serde_json::json!({}))
    })
    .await
}

async fn cni_status(State(s): State<Shared>, body: Bytes) -> Response {
    if let Err(e) = decode::<StatusRequest>(&body) {
        return error_response(e);
    }
    let t0 = Instant::now();
    let r = s.readiness().await;
    s.metrics.observe("status", r.ready, t0.elapsed());
    json(&r)
}

async fn cni_gc(State(s): State<Shared>, body: Bytes) -> Response {
    let req: GcRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    timed(&s, "gc", async { s.attacher()?.gc(req).await.map_err(api) }).await
}

async fn status(State(s): State<Shared>) -> Response {
    let readiness = s.readiness().await;
    let (endpoints, mtu) = match s.attacher.get() {
        Some(a) => match a.endpoints().await {
            Ok(e) => (e.len(), a.config().mtu),
            Err(e) => return e.into_response(),
        },
        None => (0, 0),
    };
    json(&AgentStatus {
        node: s.node.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        store: s.store_description.clone(),
        state_dir: s.state_dir.display().to_string(),
        uptime_secs: s.started.elapsed().as_secs(),
        mtu,
        endpoints,
        pools: s.pools.clone(),
        readiness,
        fast_path: s.fast_path.get().map(|fp| fp.status()),
    })
}

/// `netctl fastpath`: the fast path's maps beside what this agent wants in them.
async fn fast_path_maps(State(s): State<Shared>) -> Response {
    let Some(fp) = s.fast_path.get() else {
        return error_response(ApiError::new(
            code::NOT_CONFIGURED,
            "the fast path is not loaded (--fast-path off, still starting, or it failed \
             to load: the agent's log says which)",
        ));
    };
    match fp.maps() {
        Ok(maps) => json(&maps),
        Err(e) => error_response(ApiError::new(code::NOT_AVAILABLE, e.to_string())),
    }
}

async fn endpoints(State(s): State<Shared>) -> Response {
    let a = match s.attacher() {
        Ok(a) => a,
        Err(e) => return error_response(e),
    };
    match a.endpoints().await {
        Ok(e) => json(&e),
        Err(e) => e.into_response(),
    }
}

async fn ipam_view(State(s): State<Shared>) -> Response {
    let a = match s.attacher() {
        Ok(a) => a,
        Err(e) => return error_response(e),
    };
    match a.ipam().view().await {
        Ok(v) => json(&v),
        Err(e) => AttachError::from(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct CheckQuery {
    /// Grace period in seconds; default the agent's GC grace.
    grace_secs: Option<u64>,
}

async fn ipam_check(State(s): State<Shared>, Query(q): Query<CheckQuery>) -> Response {
    let a = match s.attacher() {
        Ok(a) => a,
        Err(e) => return error_response(e),
    };
    let grace = q
        .grace_secs
        .map(Duration::from_secs)
        .unwrap_or(a.config().gc_grace);
    match a.ipam_check(grace).await {
        Ok(r) => json(&r),
        Err(e) => e.into_response(),
    }
}

async fn ipam_release(State(s): State<Shared>, body: Bytes) -> Response {
    let req: ReleaseRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    let a = match s.attacher() {
        Ok(a) => a,
        Err(e) => return error_response(e),
    };
    match a.ipam_release(&req.report).await {
        Ok(r) => json(&r),
        Err(e) => e.into_response(),
    }
}

/// Every node with a record, and every node that still has blocks (`netctl nodes`).
async fn nodes(State(s): State<Shared>) -> Response {
    let a = match s.attacher() {
        Ok(a) => a,
        Err(e) => return error_response(e),
    };
    let Some(registry) = s.registry.get() else {
        return error_response(ApiError::new(
            code::TRY_AGAIN_LATER,
            format!("agent is starting: {}", s.phase()),
        ));
    };
    let records = match registry.nodes().await {
        Ok(r) => r,
        Err(e) => return AttachError::from(e).into_response(),
    };
    match a.ipam().view().await {
        Ok(v) => json(&crate::node::node_views(records, &v.blocks)),
        Err(e) => AttachError::from(e).into_response(),
    }
}

/// The fabric's entries beside the kernel's (`netctl routes`). Reads the kernel now and
/// changes nothing.
async fn routes(State(s): State<Shared>) -> Response {
    match s.fabric.get() {
        Some(f) => {
            let mut report = f.report().await;
            // In bgp mode the routes to other nodes come from the speaker; what keeps
            // a node from having a session is a warning of the same kind.
            if let Some(bgp) = s.bgp.get() {
                report.warnings.extend(bgp.warnings());
            }
            json(&report)
        }
        None => error_response(ApiError::new(
            code::TRY_AGAIN_LATER,
            format!("agent is starting: {}", s.phase()),
        )),
    }
}

/// The BGP fabric's handle, or the error saying why there is none: another fabric
/// (not found), or not started yet (try again later).
fn bgp_handle(s: &AppState) -> Result<&crate::fabric::bgp::BgpHandle, ApiError> {
    if s.fabric_mode != strait_api::FabricMode::Bgp {
        return Err(ApiError::new(
            code::NOT_CONFIGURED,
            format!(
                "this agent runs fabric {}, not bgp: it has no BGP speaker",
                s.fabric_mode
            ),
        ));
    }
    s.bgp.get().ok_or_else(|| {
        ApiError::new(
            code::TRY_AGAIN_LATER,
            format!("agent is starting: {}", s.phase()),
        )
    })
}

/// Every configured BGP peer and its session (`netctl bgp peers`).
async fn bgp_peers(State(s): State<Shared>) -> Response {
    let handle = match bgp_handle(&s) {
        Ok(h) => h,
        Err(e) => return error_response(e),
    };
    match handle.peers().await {
        Ok(rows) => json(&rows),
        Err(e) => error_response(ApiError::new(code::TRY_AGAIN_LATER, e)),
    }
}

#[derive(Deserialize)]
struct RibQuery {
    prefix: Option<String>,
}

/// The Loc-RIB, every path (`netctl bgp rib [PREFIX]`).
async fn bgp_rib(State(s): State<Shared>, Query(q): Query<RibQuery>) -> Response {
    let handle = match bgp_handle(&s) {
        Ok(h) => h,
        Err(e) => return error_response(e),
    };
    let prefix = match q.prefix.as_deref().map(str::parse::<ipnet::IpNet>) {
        None => None,
        Some(Ok(p)) => Some(p.trunc()),
        Some(Err(e)) => {
            return error_response(ApiError::new(
                code::DECODE_FAILURE,
                format!("prefix {:?}: {e}", q.prefix.unwrap_or_default()),
            ));
        }
    };
    match handle.rib(prefix).await {
        Ok(rows) => json(&rows),
        Err(e) => error_response(ApiError::new(code::TRY_AGAIN_LATER, e)),
    }
}

// ===== external BGP peers (`bgp/peers/<name>` in the cluster store) =====
//
// Written to the store, not to a speaker: every agent serves them whatever its fabric,
// and each BGP node's peering loop picks them up from its watch.

/// The cluster store, once start-up has opened it.
fn cluster_store(s: &AppState) -> Result<&Arc<dyn crate::store::Store>, ApiError> {
    s.registry.get().map(|r| r.store()).ok_or_else(|| {
        ApiError::new(
            code::TRY_AGAIN_LATER,
            format!("agent is starting: {}", s.phase()),
        )
    })
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    let code = match e {
        crate::store::StoreError::Unavailable(_) => code::STORE_UNAVAILABLE,
        _ => code::INTERNAL,
    };
    ApiError::new(code, e.to_string())
}

fn external_peer_key(name: &str) -> String {
    format!("{}{name}", crate::fabric::bgp::peers_prefix())
}

/// Every external peer in the store (`netctl bgp peer list`); the MD5 keys are not
/// shown, only whether one is set. An unreadable value is skipped (the fabric ignores
/// it too).
async fn bgp_external_peers(State(s): State<Shared>) -> Response {
    let res = async {
        let store = cluster_store(&s)?;
        let prefix = crate::fabric::bgp::peers_prefix();
        let range = store.range(&prefix).await.map_err(store_error)?;
        let rows: Vec<strait_api::bgp::ExternalPeerEntry> = range
            .kvs
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&prefix)?;
                let peer: strait_api::bgp::ExternalPeer = serde_json::from_slice(&kv.value).ok()?;
                Some(strait_api::bgp::ExternalPeerEntry::new(name, &peer))
            })
            .collect();
        Ok::<_, ApiError>(rows)
    }
    .await;
    match res {
        Ok(rows) => json(&rows),
        Err(e) => error_response(e),
    }
}

/// Adds or replaces one external peer. Validated first: a bad one is refused (400)
/// and nothing is written.
async fn bgp_put_external_peer(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    let res = async {
        let peer: strait_api::bgp::ExternalPeer = decode(&body)?;
        peer.validate(&name)
            .map_err(|e| ApiError::new(code::INVALID_CONFIG, e))?;
        let store = cluster_store(&s)?;
        let value = serde_json::to_vec(&peer)
            .map_err(|e| ApiError::new(code::INTERNAL, format!("encoding peer: {e}")))?;
        store
            .put(&external_peer_key(&name), value, None)
            .await
            .map_err(store_error)?;
        tracing::info!(peer = %name, address = %peer.address, asn = peer.asn, "external BGP peer set");
        Ok::<_, ApiError>(strait_api::bgp::ExternalPeerEntry::new(name.clone(), &peer))
    }
    .await;
    match res {
        Ok(entry) => json(&entry),
        Err(e) => error_response(e),
    }
}

/// Removes one external peer; 404 when there is none of that name.
async fn bgp_delete_external_peer(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let res = async {
        strait_api::bgp::validate_name("peer name", &name)
            .map_err(|e| ApiError::new(code::INVALID_CONFIG, e))?;
        let store = cluster_store(&s)?;
        let existed = store
            .delete(&external_peer_key(&name))
            .await
            .map_err(store_error)?;
        if !existed {
            return Err(ApiError::new(
                code::NOT_CONFIGURED,
                format!("no external BGP peer named {name:?}"),
            ));
        }
        tracing::info!(peer = %name, "external BGP peer removed");
        Ok(serde_json::json!({}))
    }
    .await;
    match res {
        Ok(v) => json(&v),
        Err(e) => error_response(e),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    if let Some(a) = s.attacher.get() {
        if let Ok(eps) = a.endpoints().await {
            s.metrics.endpoints.set(eps.len() as i64);
        }
        if let Ok(view) = a.ipam().view().await {
            for p in view.pools {
                let labels = crate::metrics::PoolLabels {
                    pool: p.cidr.to_string(),
                };
                s.metrics
                    .pool_used
                    .get_or_create(&labels)
                    .set(p.used as f64);
                s.metrics
                    .pool_size
                    .get_or_create(&labels)
                    .set(p.size as f64);
            }
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::FabricMode;

    fn state(fabric_mode: FabricMode) -> AppState {
        AppState {
            attacher: Default::default(),
            registry: Default::default(),
            fabric: Default::default(),
            fabric_mode,
            bgp: Default::default(),
            fast_path: Default::default(),
            phase: std::sync::Mutex::new("registering the node".into()),
            metrics: Arc::new(Metrics::new()),
            started: Instant::now(),
            node: "n1".into(),
            store_description: "embedded:/tmp/x".into(),
            state_dir: "/tmp".into(),
            pools: vec![],
        }
    }

    #[test]
    fn bgp_paths_say_why_there_is_no_speaker() {
        let e = bgp_handle(&state(FabricMode::Vxlan))
            .err()
            .expect("not bgp");
        assert_eq!(e.code, code::NOT_CONFIGURED);
        assert!(e.message.contains("fabric vxlan, not bgp"), "{e}");
        assert_eq!(error_response(e).status(), StatusCode::NOT_FOUND);
        let e = bgp_handle(&state(FabricMode::Bgp))
            .err()
            .expect("not started");
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.message.contains("registering the node"), "{e}");
        assert_eq!(error_response(e).status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A state whose registry holds an embedded store in `dir`.
    async fn with_store(dir: &Path) -> (Shared, Arc<dyn crate::store::Store>) {
        let store: Arc<dyn crate::store::Store> =
            crate::store::embedded::EmbeddedStore::open(&dir.join("store.redb"))
                .await
                .expect("store");
        let record = strait_api::NodeRecord {
            name: "n1".into(),
            underlay_v4: None,
            underlay_v6: None,
            fabric: FabricMode::Vxlan,
            vtep_mac: None,
            vxlan_vni: None,
            vxlan_port: None,
            tunnel_v4: None,
            tunnel_v6: None,
            agent_version: "test".into(),
            started: 0,
            bgp: None,
        };
        let registry = Registry::new(
            store.clone(),
            crate::node::RegistryConfig {
                lease_ttl: Duration::from_secs(15),
            },
            record,
        );
        let s = Arc::new(state(FabricMode::Vxlan));
        let _ = s.registry.set(registry);
        (s, store)
    }

    async fn body(r: Response) -> (StatusCode, serde_json::Value) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json body"))
    }

    async fn stored(store: &Arc<dyn crate::store::Store>) -> Vec<String> {
        let range = store
            .range(&crate::fabric::bgp::peers_prefix())
            .await
            .expect("range");
        range.kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test]
    async fn external_peers_are_checked_written_listed_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        // Before the store is open: try again later, whatever the fabric.
        let starting = Arc::new(state(FabricMode::Vxlan));
        let r = bgp_external_peers(State(starting)).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

        let (s, store) = with_store(dir.path()).await;
        let put = |name: &str, json: &str| {
            bgp_put_external_peer(
                State(s.clone()),
                UrlPath(name.to_string()),
                Bytes::from(json.to_string()),
            )
        };
        // Bad input: 400 with the reason, nothing written.
        for (name, json, reason) in [
            ("tor-a", r#"{"address":"10.0.0.253","asn":0}"#, "reserved"),
            (
                "tor a",
                r#"{"address":"10.0.0.253","asn":65000}"#,
                "not allowed",
            ),
            (
                "tor-a",
                r#"{"address":"10.0.0.253","asn":65000,"port":0}"#,
                "port 0",
            ),
            (
                "tor-a",
                r#"{"address":"10.0.0.253"}"#,
                "malformed request body",
            ),
        ] {
            let (status, v) = body(put(name, json).await).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {json}: {v}");
            let msg = v["msg"]
                .as_str()
                .or(v["message"].as_str())
                .unwrap_or_default();
            assert!(msg.contains(reason), "{name} {json}: {v}");
        }
        let long_key = format!(
            r#"{{"address":"10.0.0.253","asn":65000,"md5_key":"{}"}}"#,
            "k".repeat(81)
        );
        let (status, v) = body(put("tor-a", &long_key).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(stored(&store).await.is_empty(), "nothing written");

        // A good one is stored as ExternalPeer JSON and listed without its key.
        let (status, v) = body(
            put(
                "tor-a",
                r#"{"address":"10.0.0.253","asn":65000,"node":"h1","md5_key":"s3cret"}"#,
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let kv = store
            .get(&external_peer_key("tor-a"))
            .await
            .expect("get")
            .expect("stored");
        let peer: strait_api::bgp::ExternalPeer =
            serde_json::from_slice(&kv.value).expect("ExternalPeer");
        assert_eq!(peer.md5_key.as_deref(), Some("s3cret"));
        assert_eq!(peer.node.as_deref(), Some("h1"));
        let (status, v) = body(bgp_external_peers(State(s.clone())).await).await;
        assert_eq!(status, StatusCode::OK);
        let rows: Vec<strait_api::bgp::ExternalPeerEntry> =
            serde_json::from_value(v.clone()).expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].asn, rows[0].md5),
            ("tor-a", 65000, true)
        );
        assert!(!v.to_string().contains("s3cret"), "{v}");

        // Removed once; the second time there is none.
        let del = |name: &str| bgp_delete_external_peer(State(s.clone()), UrlPath(name.into()));
        assert_eq!(del("tor-a").await.status(), StatusCode::OK);
        assert!(stored(&store).await.is_empty());
        let (status, v) = body(del("tor-a").await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert!(v.to_string().contains("no external BGP peer"), "{v}");
    }
}
