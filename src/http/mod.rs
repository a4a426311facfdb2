//! The HTTP surface: the router, its tower layers, and one module per resource. Handlers read
//! and write the store; they never sign or push (the worker does). Every API route is
//! registered through the OpenAPI router, so the served document cannot miss one.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;

pub mod artifacts;
pub mod auth;
pub mod executions;
pub mod health;
pub mod stats;
pub mod views;
pub mod webhooks;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "attestd", description = "SLSA provenance attestation service: authenticated build webhooks in, signed in-toto attestations out."),
    modifiers(&BearerAuth),
    tags(
        (name = "webhooks", description = "Build-completion webhooks from CI"),
        (name = "executions", description = "Recorded executions, their provenance and attestations"),
        (name = "artifacts", description = "Lookups by image digest"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes and their OpenAPI document, built from the same registrations.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(webhooks::receive_build_webhook))
        .routes(routes!(executions::list_executions))
        .routes(routes!(executions::get_execution))
        .routes(routes!(executions::get_provenance))
        .routes(routes!(executions::get_attestation))
        .routes(routes!(executions::retry_execution))
        .routes(routes!(artifacts::list_digest_attestations))
        .routes(routes!(stats::get_stats))
        .split_for_parts()
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The full router with every layer applied.
pub fn router(state: AppState) -> Router {
    let settings = &state.settings.server;
    let body_limit = settings.body_limit_bytes;
    let timeout = Duration::from_secs(settings.request_timeout_secs);
    let (api, doc) = api();
    let doc = std::sync::Arc::new(doc);
    api.route("/openapi.json", get(move || async move { axum::Json(doc.as_ref().clone()) }))
        .fallback(not_found)
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
            axum::http::header::COOKIE,
            HeaderName::from_static(crate::ingest::SIGNATURE_HEADER),
        ]))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route_not_found", "no such route".into())
}
