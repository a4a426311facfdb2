//! `GET /metrics`: the Prometheus text format, rendered from the in-memory recorder (no database
//! query). On `server.listen` it is open while that is a loopback address and otherwise needs an
//! admin token; on `metrics.listen`, a listener of its own, it is open.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::ApiError;
use crate::http::auth::{Reader, anonymous_hosts};

/// The Prometheus text exposition format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every metric in the Prometheus text format (see the README's metrics list)", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "`server.listen` is not a loopback address and no admin token was sent", body = crate::error::ErrorResponse),
        (status = 403, description = "A token that is not an admin token (`admin_required`)", body = crate::error::ErrorResponse),
        (status = 404, description = "Served on `metrics.listen` only (`metrics.on_server_listen = false`)", body = crate::error::ErrorResponse),
    )
)]
pub async fn get_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.settings.metrics.on_server_listen {
        return Err(ApiError::NotFound(
            "metrics_not_here",
            "metrics are served on metrics.listen only".into(),
        ));
    }
    authorize(&state, &headers)?;
    render()
}

/// Open on a loopback listener (for this server's own host names, so a page on another name
/// that resolves to loopback cannot read it); otherwise an admin bearer token.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let listen = state.settings.server.listen;
    if bearer.is_none() && listen.ip().is_loopback() {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        return match host {
            Some(h) if anonymous_hosts(listen, &state.public_url).contains(&h) => Ok(()),
            _ => Err(ApiError::Unauthenticated),
        };
    }
    match state.tokens.reader(bearer, None) {
        Some(Reader::Admin) => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "admin_required",
            "metrics need an admin token".into(),
        )),
        None => Err(ApiError::Unauthenticated),
    }
}

/// The router of `metrics.listen`: `/metrics`, open, and nothing else.
pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(|| async { render() }))
        .fallback(|| async { ApiError::NotFound("route_not_found", "no such route".into()) })
}

fn render() -> Result<Response, ApiError> {
    let handle = crate::metrics::handle()
        .ok_or_else(|| ApiError::Unavailable("metrics are not recorded in this process".into()))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        handle.render(),
    )
        .into_response())
}
