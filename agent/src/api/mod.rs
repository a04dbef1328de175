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
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
        .route(paths::BGP_PEERS, get(bgp_peers))
        .route(paths::BGP_RIB, get(bgp_rib))
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
    })
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
        Some(f) => json(&f.report().await),
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
