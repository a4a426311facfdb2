//! What each process role serves (`server.role`): an `all` or `api` process the whole router; a
//! worker-only process the same router behind a filter that answers only its probes, so a
//! worker's port never exposes the API, the web view or a webhook route.

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::config::Settings;
use crate::error::ApiError;

/// The paths a worker-only process answers. `/metrics` is served here as soon as the main
/// router has it: a route added to [`super::router`] needs nothing more to reach workers.
pub const WORKER_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The router for this process's role.
pub fn router_for(settings: &Settings, state: AppState) -> Router {
    let router = super::router(state);
    if settings.runs_api() {
        router
    } else {
        router.layer(axum::middleware::from_fn(only_worker_paths))
    }
}

async fn only_worker_paths(request: Request, next: Next) -> Response {
    if WORKER_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    ApiError::NotFound(
        "route_not_found",
        "this attestd process runs the worker only (server.role = \"worker\"); it answers \
         /healthz, /readyz and /metrics, and the API is served by the api processes"
            .into(),
    )
    .into_response()
}
