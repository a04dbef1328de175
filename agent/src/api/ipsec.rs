//! IPsec's settings (`netctl ipsec mode`), which [`crate::ipsec::settings`] owns.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use strait_api::ipsec::IpsecSettings;

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
