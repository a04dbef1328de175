//! The plugin's HTTP side: one POST route per protocol method on the plugin socket.
//!
//! dockerd sends no Content-Type and sometimes no body, so bodies are read raw and
//! decoded here ([`strait_api::docker::decode`]). A body that does not decode is a
//! 400 with the error; a request the driver refuses is a 200 with it, the form
//! libnetwork turns into the error the Docker user sees: `{"Err": …}` from the network
//! driver, `{"Error": …}` from the IPAM driver (libnetwork reads each interface's
//! errors from its own field). An unknown method is a
//! 404, which tells libnetwork the driver does not implement it.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde::de::DeserializeOwned;
use strait_api::docker::{ErrorResponse, IpamErrorResponse, decode};
use tokio::net::UnixListener;
use tracing::{debug, warn};

use super::{DockerError, DockerPlugin, driver, ipam};

type Shared = Arc<DockerPlugin>;

fn ok<T: Serialize>(value: &T) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// An error in the field libnetwork reads for the method's interface: `Err` for the
/// network driver, `Error` for the IPAM driver (which ignores an `Err`).
fn refused(method: &str, status: StatusCode, err: String) -> Response {
    if method.starts_with("/IpamDriver.") {
        (status, axum::Json(IpamErrorResponse { error: err })).into_response()
    } else {
        (status, axum::Json(ErrorResponse { err })).into_response()
    }
}

/// Decodes the body as `T`, runs `f`, answers.
async fn handle<T, R, F, Fut>(method: &'static str, body: Bytes, f: F) -> Response
where
    T: DeserializeOwned,
    R: Serialize,
    F: FnOnce(T) -> Fut,
    Fut: Future<Output = Result<R, DockerError>>,
{
    let req: T = match decode(&body) {
        Ok(r) => r,
        Err(e) => {
            warn!(method, error = %e, "malformed Docker plugin request");
            return refused(
                method,
                StatusCode::BAD_REQUEST,
                format!("strait: malformed {method} request: {e}"),
            );
        }
    };
    match f(req).await {
        Ok(r) => ok(&r),
        Err(e) => {
            debug!(method, error = %e, "Docker plugin request refused");
            refused(method, StatusCode::OK, e.0)
        }
    }
}

fn empty(_: ()) -> serde_json::Value {
    serde_json::json!({})
}

/// Routes of every method strait implements.
pub fn router(plugin: Shared) -> Router {
    macro_rules! route {
        ($router:expr, $path:literal, |$p:ident, $req:ident: $t:ty| $body:expr) => {
            $router.route(
                $path,
                post(|State($p): State<Shared>, body: Bytes| async move {
                    handle($path, body, |$req: $t| async move { $body }).await
                }),
            )
        };
    }
    use strait_api::docker::*;
    let r = Router::new().route(
        "/Plugin.Activate",
        post(|| async {
            ok(&ActivateResponse {
                implements: vec!["NetworkDriver".into(), "IpamDriver".into()],
            })
        }),
    );
    let r = route!(
        r,
        "/NetworkDriver.GetCapabilities",
        |_p, _r: serde_json::Value| Ok::<_, DockerError>(driver::capabilities())
    );
    let r = route!(
        r,
        "/NetworkDriver.CreateNetwork",
        |p, req: CreateNetworkRequest| p.create_network(req).await.map(empty)
    );
    let r = route!(
        r,
        "/NetworkDriver.DeleteNetwork",
        |p, req: NetworkRequest| p.delete_network(req).await.map(empty)
    );
    // Swarm's global networks only; strait's are local-scope.
    let r = route!(
        r,
        "/NetworkDriver.AllocateNetwork",
        |_p, _r: serde_json::Value| Ok::<_, DockerError>(serde_json::json!({"Options": {}}))
    );
    let r = route!(
        r,
        "/NetworkDriver.FreeNetwork",
        |_p, _r: NetworkRequest| Ok::<_, DockerError>(serde_json::json!({}))
    );
    let r = route!(
        r,
        "/NetworkDriver.CreateEndpoint",
        |p, req: CreateEndpointRequest| p.create_endpoint(req).await
    );
    let r = route!(
        r,
        "/NetworkDriver.EndpointOperInfo",
        |p, req: EndpointRequest| p.endpoint_info(req).await
    );
    let r = route!(
        r,
        "/NetworkDriver.DeleteEndpoint",
        |p, req: EndpointRequest| p.delete_endpoint(req).await.map(empty)
    );
    let r = route!(r, "/NetworkDriver.Join", |p, req: JoinRequest| p
        .join(req)
        .await);
    let r = route!(r, "/NetworkDriver.Leave", |p, req: EndpointRequest| p
        .leave(req)
        .await
        .map(empty));
    let r = route!(
        r,
        "/NetworkDriver.ProgramExternalConnectivity",
        |p, req: ExternalConnectivityRequest| p.program_external_connectivity(req).await.map(empty)
    );
    let r = route!(
        r,
        "/NetworkDriver.RevokeExternalConnectivity",
        |p, req: EndpointRequest| p.revoke_external_connectivity(req).await.map(empty)
    );
    // Node discovery: the fabric already knows every node from the store.
    let r = route!(
        r,
        "/NetworkDriver.DiscoverNew",
        |_p, _r: DiscoveryRequest| Ok::<_, DockerError>(serde_json::json!({}))
    );
    let r = route!(
        r,
        "/NetworkDriver.DiscoverDelete",
        |_p, _r: DiscoveryRequest| Ok::<_, DockerError>(serde_json::json!({}))
    );
    let r = route!(
        r,
        "/IpamDriver.GetCapabilities",
        |_p, _r: serde_json::Value| Ok::<_, DockerError>(ipam::capabilities())
    );
    let r = route!(
        r,
        "/IpamDriver.GetDefaultAddressSpaces",
        |_p, _r: serde_json::Value| Ok::<_, DockerError>(ipam::address_spaces())
    );
    let r = route!(
        r,
        "/IpamDriver.RequestPool",
        |p, req: RequestPoolRequest| p.request_pool(req).await
    );
    let r = route!(
        r,
        "/IpamDriver.ReleasePool",
        |p, req: ReleasePoolRequest| p.release_pool(req).await.map(empty)
    );
    let r = route!(
        r,
        "/IpamDriver.RequestAddress",
        |p, req: RequestAddressRequest| p.request_address(req).await
    );
    let r = route!(
        r,
        "/IpamDriver.ReleaseAddress",
        |p, req: ReleaseAddressRequest| p.release_address(req).await.map(empty)
    );
    r.with_state(plugin)
}

/// Binds the plugin socket (as the API socket: refused if a live agent answers on
/// it, a stale file replaced, root only) and writes the spec file if asked.
pub fn bind(socket: &Path, spec_file: Option<&Path>) -> anyhow::Result<UnixListener> {
    let listener = crate::api::bind(socket)?;
    if let Some(spec) = spec_file {
        if let Some(dir) = spec.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(spec, format!("unix://{}\n", socket.display()))
            .map_err(|e| anyhow::anyhow!("writing Docker plugin spec {}: {e}", spec.display()))?;
    }
    Ok(listener)
}

/// Serves the plugin until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    plugin: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(plugin))
        .with_graceful_shutdown(shutdown)
        .await
}
