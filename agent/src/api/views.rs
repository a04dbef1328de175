//! What `netctl` reads: the agent's status, endpoints, IPAM (and the operator's
//! check and release), nodes, the fabric's routes, the fast path's maps, and the
//! Prometheus metrics.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strait_api::{
    AgentStatus, Endpoint, IpamReport, IpamView, ReleaseRequest, ReleaseResponse, code,
};

use super::Shared;
use super::error::{Failure, decode};

pub(super) async fn readyz(State(s): State<Shared>) -> Response {
    let r = s.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

/// `netctl status` answers from what the agent knows without its store, so an
/// outage shows as "not ready" with the reason rather than as no answer at all.
pub(super) async fn status(State(s): State<Shared>) -> Json<AgentStatus> {
    let mut readiness = s.readiness().await;
    let (endpoints, mtu) = match s.owners() {
        Some(o) => {
            let count = match o.attacher.endpoints().await {
                Ok(eps) => Some(eps.len()),
                Err(e) => {
                    // Readiness saw the store a moment ago; the count says otherwise.
                    if readiness.ready {
                        readiness.ready = false;
                        readiness.code = code::NOT_AVAILABLE;
                    }
                    let reason = format!("listing endpoints: {e}");
                    if !readiness
                        .reasons
                        .iter()
                        .any(|r| r.contains("store unreachable"))
                    {
                        readiness.reasons.push(reason);
                    }
                    None
                }
            };
            (count, o.attacher.config().container_mtu())
        }
        None => (None, 0),
    };
    Json(AgentStatus {
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
        ipsec: match s.ipsec() {
            Ok(handle) => handle.status().await.map(|st| strait_api::IpsecSummary {
                mode: st.mode,
                datapath: st.datapath.clone().unwrap_or_else(|| "none".into()),
                reason: st.datapath_reason.clone(),
                peers: st.peers.len(),
                peers_up: st
                    .peers
                    .iter()
                    .filter(|p| p.ike_state == "established")
                    .count(),
            }),
            Err(_) => None,
        },
    })
}

/// `netctl fastpath`: the fast path's maps beside what this agent wants in them.
pub(super) async fn fast_path_maps(
    State(s): State<Shared>,
) -> Result<Json<strait_api::FastPathMaps>, Failure> {
    let fp = s.fast_path.get().ok_or_else(|| {
        Failure::new(
            code::NOT_CONFIGURED,
            "the fast path is not loaded (--fast-path off, still starting, or it failed \
             to load: the agent's log says which)",
        )
    })?;
    let maps = fp
        .maps()
        .map_err(|e| Failure::new(code::NOT_AVAILABLE, e.to_string()))?;
    Ok(Json(maps))
}

pub(super) async fn endpoints(State(s): State<Shared>) -> Result<Json<Vec<Endpoint>>, Failure> {
    Ok(Json(s.ready_owners()?.attacher.endpoints().await?))
}

pub(super) async fn ipam(State(s): State<Shared>) -> Result<Json<IpamView>, Failure> {
    Ok(Json(s.ready_owners()?.attacher.ipam().view().await?))
}

/// `netctl docker networks`: the Docker networks of the whole cluster.
/// `netctl kubernetes`: this agent's watches and the cluster's refusals; an agent
/// not following an API server answers `enabled: false`.
pub(super) async fn kubernetes(
    State(s): State<Shared>,
) -> Result<Json<strait_api::kube::KubeStatusView>, Failure> {
    let Some(kube) = s.kube() else {
        return Ok(Json(Default::default()));
    };
    let mut view = kube.status.view();
    view.refused = crate::kube::cluster::refusals(kube.store.as_ref())
        .await
        .map_err(|e| Failure::new(strait_api::code::STORE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(view))
}

pub(super) async fn docker_networks(
    State(s): State<Shared>,
) -> Result<Json<Vec<strait_api::docker::NetworkView>>, Failure> {
    let plugin = s.docker().ok_or_else(|| {
        Failure::new(
            strait_api::code::NOT_CONFIGURED,
            "the Docker plugin is not enabled on this agent (start it with --docker-plugin)",
        )
    })?;
    let networks = plugin
        .networks
        .list()
        .await
        .map_err(|e| Failure::new(strait_api::code::INTERNAL, e.0))?;
    Ok(Json(
        networks
            .into_iter()
            .map(|n| strait_api::docker::NetworkView {
                id: n.id,
                name: n.name,
                node: n.node,
                subnets: n.subnets.iter().map(ToString::to_string).collect(),
                ipam: match n.ipam {
                    crate::docker::networks::IpamKind::Strait => "strait".into(),
                    crate::docker::networks::IpamKind::Docker => "docker".into(),
                },
                internal: n.internal,
                created: n.created,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct CheckQuery {
    /// Grace period in seconds; default the agent's GC grace.
    grace_secs: Option<u64>,
}

pub(super) async fn ipam_check(
    State(s): State<Shared>,
    Query(q): Query<CheckQuery>,
) -> Result<Json<IpamReport>, Failure> {
    let a = &s.ready_owners()?.attacher;
    let grace = q
        .grace_secs
        .map(Duration::from_secs)
        .unwrap_or(a.config().gc_grace);
    Ok(Json(a.ipam_check(grace).await?))
}

pub(super) async fn ipam_release(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<ReleaseResponse>, Failure> {
    let req: ReleaseRequest = decode(&body)?;
    let a = &s.ready_owners()?.attacher;
    Ok(Json(a.ipam_release(&req.report).await?))
}

/// Every node with a record (live or last), and every node that still has blocks
/// (`netctl nodes`).
pub(super) async fn nodes(
    State(s): State<Shared>,
) -> Result<Json<Vec<strait_api::nodes::NodeView>>, Failure> {
    let o = s.ready_owners()?;
    let records = o.registry.nodes().await?;
    let last = o.registry.last_records().await?;
    let view = o.attacher.ipam().view().await?;
    let mut nodes = crate::node::node_views(records, last, &view.blocks);
    crate::node::mark_unreachable(&mut nodes).await;
    Ok(Json(nodes))
}

/// `netctl doctor` and `netctl topology`: this node's checks and links, or every
/// node's (`all_nodes`), asked through the store. Answers also while the agent
/// starts: then what is known so far, and why it is not ready.
pub(super) async fn doctor(
    State(s): State<Shared>,
    Query(q): Query<strait_api::doctor::DoctorQuery>,
) -> Json<strait_api::doctor::DoctorReport> {
    use strait_api::doctor::{Check, DoctorReport};
    let Some(d) = s.doctor().cloned() else {
        return Json(DoctorReport {
            nodes: vec![],
            cluster: vec![Check::fail(
                "agent",
                format!("starting: {}", s.phase()),
                "wait for start-up to finish; if it stays here, the agent's log says why",
            )],
        });
    };
    Json(if q.all_nodes {
        crate::doctor::exchange::ask_all(&d, &s, &q).await
    } else {
        DoctorReport {
            nodes: vec![d.check_node(&s, &q).await],
            cluster: vec![],
        }
    })
}

/// The fabric's entries beside the kernel's (`netctl routes`). Reads the kernel now and
/// changes nothing.
pub(super) async fn routes(
    State(s): State<Shared>,
) -> Result<Json<strait_api::routes::RouteReport>, Failure> {
    let o = s.ready_owners()?;
    let mut report = o.fabric.report().await;
    // In bgp mode the routes to other nodes come from the speaker; what keeps a node
    // from having a session is a warning of the same kind.
    if let Some(bgp) = &o.bgp {
        report.warnings.extend(bgp.warnings());
    }
    Ok(Json(report))
}

pub(super) async fn metrics(State(s): State<Shared>) -> Response {
    super::policy::refresh_metrics(&s);
    if let Ok(services) = s.services() {
        s.metrics
            .record_services(&services.views(), &services.counters());
    }
    if let Ok(handle) = s.ipsec()
        && let Some(status) = handle.status().await
    {
        s.metrics.record_ipsec(&status);
    }
    if let Some(fp) = s.fast_path.get() {
        s.metrics.network.record_fast_path(&fp.status().by_reason);
    }
    if let Some(o) = s.owners() {
        s.metrics.network.record_fabric(&o.fabric.report().await);
        if let Some(bgp) = &o.bgp
            && let Ok(peers) = bgp.peers().await
        {
            s.metrics.network.record_bgp(&peers);
        }
        if let Ok(eps) = o.attacher.endpoints().await {
            s.metrics.endpoints.set(eps.len() as i64);
        }
        if let Ok(view) = o.attacher.ipam().view().await {
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
