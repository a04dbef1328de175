//! Services' routes (`netctl service …`), which [`crate::services::ServicesAgent`]
//! owns: apply the documents (all or none), every service as this node serves it,
//! one stored object, delete one.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use strait_api::code;
use strait_api::policy_wire::{Change, DeleteOutcome};
use strait_api::services::{AppliedService, ServiceApplyReport, ServiceObject, ServiceView};
use strait_services::parse_documents;

use super::Shared;
use super::error::Failure;
use crate::services::store::StoredObject;

fn object(o: StoredObject) -> ServiceObject {
    ServiceObject {
        key: o.key,
        revision: o.revision,
        source: o.source,
        normalized: o.normalized,
        origin: o.origin,
    }
}

/// `netctl service apply`: the raw body is the documents' text. A document refused,
/// or an address the cluster cannot give, refuses all (400) and writes nothing.
pub(super) async fn apply(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<ServiceApplyReport>, Failure> {
    let services = s.services()?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        Failure::new(
            code::DECODE_FAILURE,
            format!("the documents are not UTF-8 text: {e}"),
        )
    })?;
    let parsed =
        parse_documents(text).map_err(|e| Failure::new(code::INVALID_CONFIG, e.to_string()))?;
    // What existed before, to tell created from configured (another apply between
    // this read and ours can only make the words wrong, never the write).
    let before: BTreeMap<String, serde_json::Value> = services
        .objects()
        .list()
        .await?
        .into_iter()
        .map(|o| (o.key, o.source))
        .collect();
    let applied = services.objects().apply(&parsed).await?;
    let objects = applied
        .objects
        .into_iter()
        .zip(&parsed)
        .map(|((key, service), p)| AppliedService {
            change: match before.get(&key) {
                None => Change::Created,
                Some(old) if *old == p.source => Change::Unchanged,
                Some(_) => Change::Configured,
            },
            key,
            cluster_ips: service
                .as_ref()
                .map(|s| s.cluster_ips.clone())
                .unwrap_or_default(),
            node_ports: service
                .iter()
                .flat_map(|s| s.ports.iter().filter_map(|p| p.node_port))
                .collect(),
        })
        .collect();
    Ok(Json(ServiceApplyReport {
        revision: applied.revision,
        objects,
    }))
}

/// `netctl service trace --to VIP:PORT`.
pub(super) async fn trace(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<strait_api::services::ServiceTrace>, Failure> {
    let services = s.services()?;
    let req: strait_api::services::ServiceTraceRequest = super::error::decode(&body)?;
    services
        .trace(&req.to)
        .map(Json)
        .map_err(|e| Failure::new(code::INVALID_CONFIG, e))
}

/// `netctl service list`: every service with its frontends and backends on this node.
pub(super) async fn list(State(s): State<Shared>) -> Result<Json<Vec<ServiceView>>, Failure> {
    Ok(Json(s.services()?.views()))
}

fn no_object(key: &str) -> Failure {
    Failure::new(
        code::NOT_CONFIGURED,
        format!("no {key} (netctl service list shows the services)"),
    )
}

/// `netctl service get`: the object as applied, and as normalized.
pub(super) async fn get(
    State(s): State<Shared>,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<ServiceObject>, Failure> {
    match s.services()?.objects().get(&key).await? {
        Some(o) => Ok(Json(object(o))),
        None => Err(no_object(&key)),
    }
}

/// `netctl service delete`: 404 when there is no such object.
pub(super) async fn delete(
    State(s): State<Shared>,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<DeleteOutcome>, Failure> {
    match s.services()?.objects().delete(&key).await? {
        (true, revision) => Ok(Json(DeleteOutcome { key, revision })),
        (false, _) => Err(no_object(&key)),
    }
}
