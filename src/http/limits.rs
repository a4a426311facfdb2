//! Request admission: a declared body over the limit is refused before it is read, and each
//! route class has its own in-flight limit beyond which requests are shed at once with `503`
//! and `Retry-After` (never queued), so a flood of one kind cannot starve the others. Health
//! checks are never limited.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The route classes with their own in-flight limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// Build webhooks (ingest).
    Webhooks,
    /// Verification: registry reads and policy evaluation.
    Verify,
    /// Every other API and web view request.
    Reads,
    /// `/healthz`, `/readyz`, `/metrics`: never limited.
    Health,
}

impl RouteClass {
    pub fn of(path: &str) -> Self {
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            Self::Health
        } else if path.starts_with("/v1/webhooks/") {
            Self::Webhooks
        } else if path == "/v1/verify" || (path.starts_with("/ui/") && path.ends_with("/verify")) {
            Self::Verify
        } else {
            Self::Reads
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Webhooks => "webhooks",
            Self::Verify => "verify",
            Self::Reads => "reads",
            Self::Health => "health",
        }
    }
}

/// The admission state shared by every request.
pub struct Admission {
    body_limit: usize,
    webhooks: Arc<Semaphore>,
    verify: Arc<Semaphore>,
    reads: Arc<Semaphore>,
}

impl Admission {
    pub fn new(body_limit: usize, webhooks: usize, verify: usize, reads: usize) -> Self {
        Self {
            body_limit,
            webhooks: Arc::new(Semaphore::new(webhooks.max(1))),
            verify: Arc::new(Semaphore::new(verify.max(1))),
            reads: Arc::new(Semaphore::new(reads.max(1))),
        }
    }

    fn semaphore(&self, class: RouteClass) -> Option<&Arc<Semaphore>> {
        match class {
            RouteClass::Webhooks => Some(&self.webhooks),
            RouteClass::Verify => Some(&self.verify),
            RouteClass::Reads => Some(&self.reads),
            RouteClass::Health => None,
        }
    }
}

/// Middleware: early `413`, then the class's in-flight permit (or `503`).
pub async fn admit(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > admission.body_limit as u64) {
        return ApiError::PayloadTooLarge(admission.body_limit).into_response();
    }
    let class = RouteClass::of(request.uri().path());
    let _permit = match admission.semaphore(class) {
        None => None,
        Some(semaphore) => match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                tracing::warn!(
                    route.class = class.name(),
                    "in-flight limit reached; shedding"
                );
                return ApiError::Overloaded(format!(
                    "too many {} requests in flight; retry shortly",
                    class.name()
                ))
                .into_response();
            }
        },
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::RouteClass;

    #[test]
    fn routes_fall_into_their_classes() {
        assert_eq!(RouteClass::of("/v1/webhooks/build"), RouteClass::Webhooks);
        assert_eq!(RouteClass::of("/v1/verify"), RouteClass::Verify);
        assert_eq!(
            RouteClass::of("/ui/executions/x/verify"),
            RouteClass::Verify
        );
        assert_eq!(RouteClass::of("/v1/executions"), RouteClass::Reads);
        assert_eq!(RouteClass::of("/healthz"), RouteClass::Health);
        assert_eq!(RouteClass::of("/readyz"), RouteClass::Health);
        assert_eq!(RouteClass::of("/metrics"), RouteClass::Health);
    }
}
