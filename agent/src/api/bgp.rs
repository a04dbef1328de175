//! The BGP fabric's views (`netctl bgp peers|rib`) and the external peers
//! (`netctl bgp peer`), which [`crate::fabric::bgp::external`] owns.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use serde::Deserialize;
use strait_api::bgp::{
    BgpPeerStatus, BgpRefusedRoute, BgpRibEntry, ExternalPeer, ExternalPeerEntry,
};
use strait_api::code;

use super::error::{Failure, decode};
use super::{AppState, Shared};
use crate::fabric::bgp::BgpHandle;
use crate::fabric::bgp::external::ExternalPeers;

/// The BGP fabric's handle, or the failure saying why there is none: another fabric
/// (not found), or not started yet (try again later).
pub(super) fn bgp_handle(s: &AppState) -> Result<&BgpHandle, Failure> {
    if s.fabric_mode != strait_api::FabricMode::Bgp {
        return Err(Failure::new(
            code::NOT_CONFIGURED,
            format!(
                "this agent runs fabric {}, not bgp: it has no BGP speaker",
                s.fabric_mode
            ),
        ));
    }
    s.ready_owners()?.bgp.as_ref().ok_or_else(|| s.starting())
}

/// Every configured BGP peer and its session (`netctl bgp peers`).
pub(super) async fn peers(State(s): State<Shared>) -> Result<Json<Vec<BgpPeerStatus>>, Failure> {
    let rows = bgp_handle(&s)?
        .peers()
        .await
        .map_err(|e| Failure::new(code::TRY_AGAIN_LATER, e))?;
    Ok(Json(rows))
}

#[derive(Deserialize)]
pub(super) struct RibQuery {
    prefix: Option<String>,
}

/// The Loc-RIB, every path (`netctl bgp rib [PREFIX]`).
pub(super) async fn rib(
    State(s): State<Shared>,
    Query(q): Query<RibQuery>,
) -> Result<Json<Vec<BgpRibEntry>>, Failure> {
    let handle = bgp_handle(&s)?;
    let prefix = match q.prefix.as_deref().map(str::parse::<ipnet::IpNet>) {
        None => None,
        Some(Ok(p)) => Some(p.trunc()),
        Some(Err(e)) => {
            return Err(Failure::new(
                code::DECODE_FAILURE,
                format!("prefix {:?}: {e}", q.prefix.unwrap_or_default()),
            ));
        }
    };
    let rows = handle
        .rib(prefix)
        .await
        .map_err(|e| Failure::new(code::TRY_AGAIN_LATER, e))?;
    Ok(Json(rows))
}

/// The routes the peers' import policies refused (`netctl bgp rib --refused`).
pub(super) async fn refused(
    State(s): State<Shared>,
) -> Result<Json<Vec<BgpRefusedRoute>>, Failure> {
    let rows = bgp_handle(&s)?
        .refused()
        .await
        .map_err(|e| Failure::new(code::TRY_AGAIN_LATER, e))?;
    Ok(Json(rows))
}

fn external(s: &AppState) -> Result<&ExternalPeers, Failure> {
    Ok(&s.ready_owners()?.peers)
}

/// Every external peer (`netctl bgp peer list`); MD5 keys are not shown.
pub(super) async fn external_peers(
    State(s): State<Shared>,
) -> Result<Json<Vec<ExternalPeerEntry>>, Failure> {
    Ok(Json(external(&s)?.list().await?))
}

/// Adds or replaces one external peer; a bad one is refused (400) and nothing is
/// written.
pub(super) async fn put_external_peer(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Result<Json<ExternalPeerEntry>, Failure> {
    let peer: ExternalPeer = decode(&body)?;
    Ok(Json(external(&s)?.put(&name, &peer).await?))
}

/// Removes one external peer; 404 when there is none of that name.
pub(super) async fn delete_external_peer(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    external(&s)?.delete(&name).await?;
    Ok(Json(serde_json::json!({})))
}
