//! The one error type at the HTTP edge. Each variant maps to one status and a stable machine
//! code; internal causes are logged once with their chain and never sent to the client. The API
//! renders it as JSON (here); the web view renders the same code and message as HTML
//! (`http::ui::HtmlError`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ingest::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid webhook signature")]
    InvalidSignature,
    #[error("the webhook-timestamp is too far from now; a delivery cannot be replayed later")]
    StaleWebhook,
    #[error("a bearer token is required")]
    Unauthenticated,
    #[error("{0}")]
    AccountMismatch(String),
    /// Refused by a grant of the webhook source, naming the offending fields.
    #[error("{1}")]
    NotAllowed(&'static str, String, Vec<FieldError>),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Refused for a reason other than the account (e.g. a cross-origin form post).
    #[error("{1}")]
    Forbidden(&'static str, String),
    #[error("{1}")]
    NotFound(&'static str, String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Malformed(String),
    #[error("the webhook failed validation")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    UnsupportedSchema(String),
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive within {0} seconds")]
    BodyTimeout(u64),
    #[error("{0}")]
    Unavailable(String),
    /// The database does not answer (down, or its pool is exhausted): retry shortly.
    #[error("the store is not reachable; retry shortly")]
    StoreUnavailable,
    /// Shed by an in-flight limit; retry shortly.
    #[error("{0}")]
    Overloaded(String),
    /// A registry or key backend attestd called on the client's behalf failed.
    #[error("{1}")]
    Upstream(&'static str, String),
    /// Well-formed request whose values cannot be used (bad key PEM, policy that does not parse).
    #[error("{1}")]
    Unprocessable(&'static str, String),
    /// The store refused to record this one build (its own transaction rolled back); other
    /// webhooks are not affected.
    #[error("this build could not be recorded; nothing was stored for it")]
    RecordFailed(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The machine code of an error response, kept in the response's extensions for middleware
/// (metrics) that sees the response but not the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// The error body every API error has, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorObject,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorObject {
    /// Stable machine-readable code, e.g. `execution_not_found`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Field-level problems (validation errors only).
    pub details: Option<Vec<FieldError>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidSignature | Self::StaleWebhook | Self::Unauthenticated => {
                StatusCode::UNAUTHORIZED
            }
            Self::AccountMismatch(_) | Self::Forbidden(..) | Self::NotAllowed(..) => {
                StatusCode::FORBIDDEN
            }
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound(..) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Malformed(_) | Self::BadRequest(..) => StatusCode::BAD_REQUEST,
            Self::Validation(_) | Self::UnsupportedSchema(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) | Self::StoreUnavailable | Self::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Upstream(..) => StatusCode::BAD_GATEWAY,
            Self::Unprocessable(..) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) | Self::RecordFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidSignature => "invalid_signature",
            Self::StaleWebhook => "stale_webhook",
            Self::Unauthenticated => "unauthenticated",
            Self::AccountMismatch(_) => "account_mismatch",
            Self::NotAllowed(code, ..) => code,
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Forbidden(code, _) => code,
            Self::NotFound(code, _) => code,
            Self::Conflict(_) => "execution_conflict",
            Self::Malformed(_) => "malformed_json",
            Self::Validation(_) => "validation_failed",
            Self::UnsupportedSchema(_) => "unsupported_schema_version",
            Self::BadRequest(code, _) => code,
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::BodyTimeout(_) => "body_timeout",
            Self::Unavailable(_) => "unavailable",
            Self::StoreUnavailable => "store_unavailable",
            Self::Overloaded(_) => "overloaded",
            Self::Upstream(code, _) | Self::Unprocessable(code, _) => code,
            Self::RecordFailed(_) => "record_failed",
            Self::Internal(_) => "internal",
        }
    }

    pub fn execution_not_found() -> Self {
        Self::NotFound("execution_not_found", "no such execution".into())
    }

    /// Log an internal cause once, with its chain; every rendering (JSON or HTML) calls this.
    pub fn log_if_internal(&self) {
        match self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
            }
            Self::RecordFailed(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "a build could not be recorded"
                );
            }
            _ => {}
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => Self::Conflict(m),
            crate::store::StoreError::NotFound => Self::execution_not_found(),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "store unavailable");
                Self::StoreUnavailable
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let status = self.status();
        let details = match &self {
            Self::Validation(errors) => Some(errors.as_slice()),
            Self::NotAllowed(_, _, fields) if !fields.is_empty() => Some(fields.as_slice()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code()));
        if matches!(self, Self::StoreUnavailable | Self::Overloaded(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(if matches!(self, Self::Overloaded(_)) {
                    "1"
                } else {
                    "2"
                }),
            );
        }
        if matches!(self, Self::Unauthenticated) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;

    #[test]
    fn coded_variants_say_their_message_not_their_code() {
        let e = ApiError::NotFound("execution_not_found", "no such execution".into());
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            ("execution_not_found", "no such execution")
        );
        let e = ApiError::BadRequest("invalid_query", "bad `limit`".into());
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            ("invalid_query", "bad `limit`")
        );
    }
}
