//! `GET /v1/artifacts/{digest}/attestations`: every execution that built an image digest, across
//! pipelines, with where its attestation stands — the lookup by subject digest.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::auth::Reader;
use super::views::{ArtifactView, ExecutionView};
use crate::app::AppState;
use crate::domain::Digest;
use crate::error::ApiError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DigestAttestations {
    pub digest: String,
    pub items: Vec<DigestAttestation>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DigestAttestation {
    /// The artifact of the execution with this digest, and its push state.
    pub artifact: ArtifactView,
    pub execution: ExecutionView,
}

#[utoipa::path(
    get,
    path = "/v1/artifacts/{digest}/attestations",
    tag = "artifacts",
    params(("digest" = String, Path, description = "Image digest, sha256:<64 hex>")),
    responses(
        (status = 200, description = "Executions that produced this digest, newest first", body = DigestAttestations),
        (status = 400, description = "Not a sha256 digest", body = crate::error::ErrorResponse),
        (status = 401, description = "No valid token", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list_digest_attestations(
    State(state): State<AppState>,
    reader: Reader,
    Path(digest): Path<String>,
) -> Result<Json<DigestAttestations>, ApiError> {
    let digest: Digest = digest.parse().map_err(|e: crate::domain::ids::IdError| {
        ApiError::BadRequest("invalid_digest", format!("digest {e}"))
    })?;
    let hits = state
        .store
        .executions_by_digest(&digest, reader.scope())
        .await?;
    let items = hits
        .into_iter()
        .filter_map(|hit| {
            let artifact = hit
                .execution
                .artifacts
                .iter()
                .find(|a| a.position == hit.artifact_position)?
                .clone();
            Some(DigestAttestation {
                artifact: ArtifactView::from_record(artifact),
                execution: ExecutionView::new(hit.execution, &state.public_url),
            })
        })
        .collect();
    Ok(Json(DigestAttestations {
        digest: digest.to_string(),
        items,
    }))
}
