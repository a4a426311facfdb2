//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the store answers).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "The store answers"),
    (status = 503, description = "The store does not answer", body = crate::error::ErrorResponse),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable("the store is not reachable".into())
    })?;
    Ok(Json(
        json!({"status": "ready", "store": state.store.backend()}),
    ))
}
