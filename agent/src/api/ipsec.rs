//! IPsec's settings (`netctl ipsec mode`), which [`crate::ipsec::settings`] owns, and
//! the engine's status and rekeys (`netctl ipsec status|peers|rekey`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use strait_api::code;
use strait_api::ipsec::{IpsecSettings, IpsecStatus};

use super::Shared;
use super::error::{Failure, decode};

/// The cluster's IPsec settings; the defaults when none were set.
pub(super) async fn settings(State(s): State<Shared>) -> Result<Json<IpsecSettings>, Failure> {
    Ok(Json(s.ready_owners()?.ipsec.get().await?))
}

/// Replaces the settings; a body that does not decode (an unknown mode, an unknown
/// field) is refused (400) and nothing is written.
pub(super) async fn put_settings(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<IpsecSettings>, Failure> {
    let settings: IpsecSettings = decode(&body)?;
    let owner = &s.ready_owners()?.ipsec;
    owner.put(&settings).await?;
    Ok(Json(settings))
}

/// This node's IPsec status: mode, datapath, peers with their SAs and counters.
pub(super) async fn status(State(s): State<Shared>) -> Result<Json<IpsecStatus>, Failure> {
    let handle = s.ipsec()?;
    handle
        .status()
        .await
        .map(Json)
        .ok_or_else(|| Failure::new(code::TRY_AGAIN_LATER, "the IPsec engine is not running"))
}

/// Rekeys the Child SAs with one peer; refused when it is not a peer of this node.
pub(super) async fn rekey(
    State(s): State<Shared>,
    UrlPath(peer): UrlPath<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    s.ipsec()?
        .rekey(&peer)
        .await
        .map_err(|e| Failure::new(code::NOT_CONFIGURED, e))?;
    Ok(Json(serde_json::json!({})))
}
