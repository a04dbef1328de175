//! What `netctl` changes on an endpoint: its labels (`netctl endpoint label`), which
//! [`crate::attach`] owns.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use strait_api::Endpoint;
use strait_api::labels::LabelUpdate;

use super::Shared;
use super::error::{Failure, decode};

/// `POST /v1/endpoints/{id}/labels`: the endpoint with its new labels.
pub(super) async fn label(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Json<Endpoint>, Failure> {
    let update: LabelUpdate = decode(&body)?;
    Ok(Json(s.ready_owners()?.attacher.label(&id, &update).await?))
}
