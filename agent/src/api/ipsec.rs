//! IPsec's settings (`netctl ipsec mode`), which [`crate::ipsec::settings`] owns, the
//! external peers (`netctl ipsec peer`), which [`crate::ipsec::peers`] owns, and the
//! engine's status, rekeys and reauthentications (`netctl ipsec status|peers|rekey
//! [--reauth]`).
//!
//! External peers go out redacted: a pre-shared key kept in the store is never in an
//! answer. A `PUT` replaces the whole peer, so re-applying what `GET` showed needs the
//! key again (or a `secret_file`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use strait_api::code;
use strait_api::gateway::{self, ExternalPeer};
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

/// Reauthenticates with one peer (new IKE and Child SAs replace the old ones);
/// refused when it is not a peer of this node.
pub(super) async fn reauth(
    State(s): State<Shared>,
    UrlPath(peer): UrlPath<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    s.ipsec()?
        .reauth(&peer)
        .await
        .map_err(|e| Failure::new(code::NOT_CONFIGURED, e))?;
    Ok(Json(serde_json::json!({})))
}

fn peers(s: &Shared) -> Result<&crate::ipsec::IpsecPeers, Failure> {
    Ok(&s.ready_owners()?.ipsec_peers)
}

/// Every usable external peer, keys left out (`netctl ipsec peer list`).
pub(super) async fn list_peers(
    State(s): State<Shared>,
) -> Result<Json<Vec<ExternalPeer>>, Failure> {
    let all = peers(&s)?.list().await?;
    Ok(Json(all.values().map(ExternalPeer::redacted).collect()))
}

/// One external peer, its key left out; 404 when there is none of that name.
pub(super) async fn get_peer(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<ExternalPeer>, Failure> {
    Ok(Json(peers(&s)?.get(&name).await?.redacted()))
}

/// Creates or replaces one external peer; a body that does not decode, names
/// another peer than the path, or fails validation is refused (400) and nothing is
/// written.
pub(super) async fn put_peer(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Result<Json<ExternalPeer>, Failure> {
    let peer = gateway::peer_from_json(&body).map_err(malformed)?;
    if peer.name != name {
        return Err(Failure::new(
            code::INVALID_CONFIG,
            format!(
                "the path names peer {name:?}, the body {:?}: they must be the same",
                peer.name
            ),
        ));
    }
    peers(&s)?.put(&peer).await?;
    Ok(Json(peer.redacted()))
}

/// Creates or replaces every peer of a JSON array in one transaction (`netctl ipsec
/// peer apply`): one bad peer and none is written.
pub(super) async fn apply_peers(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<Vec<ExternalPeer>>, Failure> {
    let list =
        gateway::peers_from_json(&body).map_err(|e| Failure::new(code::INVALID_CONFIG, e))?;
    peers(&s)?.apply(&list).await?;
    Ok(Json(list.iter().map(ExternalPeer::redacted).collect()))
}

/// Removes one external peer; 404 when there is none of that name.
pub(super) async fn delete_peer(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    peers(&s)?.delete(&name).await?;
    Ok(Json(serde_json::json!({})))
}

/// A body that is no peer: the decode code, as [`decode`] gives for other bodies.
fn malformed(e: String) -> Failure {
    Failure::new(code::DECODE_FAILURE, format!("malformed request body: {e}"))
}
