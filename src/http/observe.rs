//! Webhook metrics: every request to a webhook route is counted by the source that sent it, the
//! source's kind, the answer's status class and error code, and timed — whatever answered it (the
//! handler, admission's `503`/`413`, or the request timeout).
//!
//! Which source sent a request is known only once its signature checked out, deep in the handler;
//! the handler says so through [`webhook_source`], which fills a slot this middleware scoped to
//! the request's task. Until then `/v1/webhooks/{source}` counts under the configured source it
//! names and `/v1/webhooks/build` under no source (`source=""`); a name that is not configured is
//! never used as a label.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::error::ErrorCode;
use crate::http::limits::RouteClass;
use crate::ingest::WebhookSource;
use crate::ingest::adapters::SourceKind;

/// The source a webhook request was authenticated as: its configured name and kind.
type Sender = Arc<Mutex<Option<(String, &'static str)>>>;

tokio::task_local! {
    static SENDER: Sender;
}

/// Record that the webhook being handled was authenticated as `source`. Outside a webhook
/// request (tests calling handlers directly) it does nothing.
pub fn webhook_source(source: &WebhookSource) {
    let _ = SENDER.try_with(|slot| {
        if let Ok(mut slot) = slot.lock() {
            *slot = Some((source.name.clone(), source.kind.as_str()));
        }
    });
}

/// Middleware: count and time webhook requests; every other request passes untouched.
pub async fn observe_webhooks(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if RouteClass::of(path) != RouteClass::Webhooks {
        return next.run(request).await;
    }
    let started = Instant::now();
    let named = match path.strip_prefix("/v1/webhooks/") {
        Some("build") => Some((String::new(), SourceKind::Attestd.as_str())),
        Some(name) => state
            .sources
            .named(name)
            .map(|s| (s.name.clone(), s.kind.as_str())),
        None => None,
    };
    let sender: Sender = Arc::new(Mutex::new(named));
    let response = SENDER.scope(sender.clone(), next.run(request)).await;
    let (source, kind) = sender
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .unwrap_or((String::new(), ""));
    let status = response.status();
    let error = match response.extensions().get::<ErrorCode>() {
        Some(code) => code.0,
        None if status.is_success() || status.is_redirection() => "none",
        None => fallback_code(status.as_u16()),
    };
    crate::metrics::webhook_answered(&source, kind, status.as_u16(), error, started.elapsed());
    response
}

/// A code for an error answered without an [`ApiError`](crate::error::ApiError) (the request
/// timeout's bare `408`, a framework rejection).
fn fallback_code(status: u16) -> &'static str {
    match status {
        408 => "request_timeout",
        413 => "payload_too_large",
        400..=499 => "client_error",
        _ => "server_error",
    }
}
