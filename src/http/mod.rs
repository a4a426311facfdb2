//! The HTTP surface: the router, its tower layers, and one module per resource. Handlers read
//! and write the store; they never sign or push (the worker does). Every API route is
//! registered through the OpenAPI router, so the served document cannot miss one.

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
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;

pub mod artifacts;
pub mod auth;
pub mod executions;
pub mod health;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod roles;
pub mod server;
pub mod settled;
pub mod stats;
pub mod ui;
pub mod verify;
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
        (name = "keys", description = "Public keys attestd signs with"),
        (name = "verification", description = "Verifying images in their registries against keys and Rego policies"),
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
        .routes(routes!(metrics::get_metrics))
        .routes(routes!(webhooks::receive_build_webhook))
        .routes(routes!(webhooks::receive_source_webhook))
        .routes(routes!(executions::list_executions))
        .routes(routes!(executions::get_execution))
        .routes(routes!(executions::get_provenance))
        .routes(routes!(executions::get_attestation))
        .routes(routes!(executions::retry_execution))
        .routes(routes!(artifacts::list_digest_attestations))
        .routes(routes!(stats::get_stats))
        .routes(routes!(keys::list_keys))
        .routes(routes!(verify::verify_image_attestations))
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
    let body_timeout = Duration::from_secs(settings.body_read_timeout_secs);
    let cap = server::connection_cap(
        settings.max_connections,
        state.settings.database.max_connections,
    );
    let or_share = |configured: usize| {
        if configured > 0 {
            configured
        } else {
            cap * 3 / 8
        }
    };
    let admission = std::sync::Arc::new(limits::Admission::new(
        body_limit,
        or_share(settings.max_in_flight_webhooks),
        settings.max_in_flight_verify,
        or_share(settings.max_in_flight_reads),
    ));
    let observed = state.clone();
    let (api, doc) = api();
    let doc = std::sync::Arc::new(doc);
    api.route("/openapi.json", get(move || async move { axum::Json(doc.as_ref().clone()) }))
        // Supply Chain web view: HTML pages (bearer or `attestd_token` cookie), not in the API document.
        .route("/", get(ui::redirect_to_executions))
        .route("/ui", get(ui::redirect_to_executions))
        .route("/ui/static/attestd.css", get(ui::get_stylesheet))
        .route("/ui/login", get(ui::show_login_page).post(ui::log_in))
        .route("/ui/logout", post(ui::log_out))
        .route("/ui/executions", get(ui::list_executions_page))
        .route("/ui/dashboard", get(ui::dashboard_page))
        .route("/ui/executions/{execution_id}", get(ui::show_execution_page))
        .route("/ui/executions/{execution_id}/retry", post(ui::retry_execution_page))
        .route("/ui/executions/{execution_id}/verify", post(ui::verify_execution_page))
        .route("/ui/executions/{execution_id}/provenance", get(ui::download_provenance))
        .route("/ui/executions/{execution_id}/attestation", get(ui::download_attestation))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(body_timeout, limits::body_deadline))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(axum::middleware::from_fn_with_state(admission, limits::admit))
        .layer(axum::middleware::from_fn_with_state(observed, observe::observe_webhooks))
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
            HeaderName::from_static(crate::ingest::standard_webhooks::SIGNATURE_HEADER),
            HeaderName::from_static(crate::ingest::adapters::github::SIGNATURE_HEADER),
            HeaderName::from_static(crate::ingest::adapters::gitlab::TOKEN_HEADER),
        ]))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route_not_found", "no such route".into())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_the_openapi_document_refers_to_is_in_it() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} is referred to but not defined"
            );
        }
    }
}
