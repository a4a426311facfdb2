//! The HTTP surface: the router, its tower layers, and one module per resource. Handlers read
//! and write the store; they never sign or push (the worker does).

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;

pub mod auth;
pub mod executions;
pub mod health;
pub mod views;
pub mod webhooks;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API router with every layer applied.
pub fn router(state: AppState) -> Router {
    let settings = &state.settings.server;
    let body_limit = settings.body_limit_bytes;
    let timeout = Duration::from_secs(settings.request_timeout_secs);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/webhooks/build", post(webhooks::receive_build_webhook))
        .route("/v1/executions", get(executions::list_executions))
        .route("/v1/executions/{execution_id}", get(executions::get_execution))
        .route("/v1/executions/{execution_id}/provenance", get(executions::get_provenance))
        .route("/v1/executions/{execution_id}/attestation", get(executions::get_attestation))
        .route("/v1/executions/{execution_id}/retry", post(executions::retry_execution))
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |p| p.as_str());
                let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", http.method = %req.method(), http.route = route, request.id = request_id)
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static(crate::ingest::SIGNATURE_HEADER),
        ]))
}
