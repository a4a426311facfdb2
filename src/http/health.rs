//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the store answers).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable("the store is not reachable".into())
    })?;
    Ok(Json(
        json!({"status": "ready", "store": state.store.backend()}),
    ))
}
