//! Request admission: a declared body over the limit is refused before it is read, each route
//! class has its own in-flight limit beyond which requests are shed at once with `503` and
//! `Retry-After` (never queued), so a flood of one kind cannot starve the others, and a body must
//! arrive whole within the body-read deadline however it trickles. Health checks are never
//! limited.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
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

/// The request body did not arrive whole within `server.body_read_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyDeadlineExceeded;

/// A request body that must arrive whole by a deadline. tower-http's `RequestBodyTimeout` only
/// bounds the pause between two frames, so a body sent a byte a second would never time out.
struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // What has arrived is handed on; only waiting for more is cut off at the deadline.
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(axum::Error::new(BodyDeadlineExceeded))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Middleware: the body's deadline starts now, when the request's headers have arrived.
pub async fn body_deadline(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = Body::new(DeadlineBody {
        body,
        deadline: Box::pin(tokio::time::sleep(limit)),
    });
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_that_keeps_trickling_still_ends_at_its_deadline() {
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
        });
        let body = Body::new(DeadlineBody {
            body: Body::from_stream(trickle),
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
        });
        let started = std::time::Instant::now();
        let read = axum::body::to_bytes(body, usize::MAX).await;
        let error = read.expect_err("a body still arriving at its deadline is cut off");
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut found = false;
        while let Some(e) = source {
            found |= e.is::<BodyDeadlineExceeded>();
            source = e.source();
        }
        assert!(found, "the cause is named: {error:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_body_that_arrives_in_time_is_read_whole() {
        let body = Body::new(DeadlineBody {
            body: Body::from("complete"),
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(5))),
        });
        let read = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(&read[..], b"complete");
    }

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
