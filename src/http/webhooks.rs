//! `POST /v1/webhooks/build`: authenticate the raw body, then parse, then record — in that
//! order, so an unauthenticated body is never parsed and a rejected one never written.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::views::ExecutionView;
use crate::app::AppState;
use crate::domain::{ExecutionId, provenance};
use crate::error::ApiError;
use crate::ingest::build_webhook::WebhookError;
use crate::ingest::{FieldError, Refusal, SIGNATURE_HEADER, fingerprint, parse_build_webhook};
use crate::store::{NewExecution, Recorded};

#[utoipa::path(
    post,
    path = "/v1/webhooks/build",
    tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "A build webhook, schema version 1 (see the README)"),
    params(("X-Attestd-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body with the source's secret>")),
    responses(
        (status = 202, description = "Recorded; signing and pushing follow in the background", body = ExecutionView),
        (status = 200, description = "A redelivery of an execution already recorded", body = ExecutionView),
        (status = 400, description = "Not JSON", body = crate::error::ErrorResponse),
        (status = 401, description = "Missing or wrong signature", body = crate::error::ErrorResponse),
        (status = 400, description = "Duplicate JSON keys (`duplicate_key`)", body = crate::error::ErrorResponse),
        (status = 403, description = "Outside the source's grants: another account (`account_mismatch`), an unlisted builder (`builder_not_allowed`) or repository (`repository_not_allowed`)", body = crate::error::ErrorResponse),
        (status = 415, description = "Content-Type is not JSON", body = crate::error::ErrorResponse),
        (status = 409, description = "Same pipeline execution, different content", body = crate::error::ErrorResponse),
        (status = 413, description = "Body over server.body_limit_bytes", body = crate::error::ErrorResponse),
        (status = 422, description = "Invalid fields, unsupported schema version or unlisted registry", body = crate::error::ErrorResponse),
    )
)]
pub async fn receive_build_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.settings.server.body_limit_bytes)
        } else if caused_by::<super::limits::BodyDeadlineExceeded>(&e) {
            ApiError::BodyTimeout(state.settings.server.body_read_timeout_secs)
        } else {
            ApiError::Malformed(e.body_text())
        }
    })?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let source = state
        .sources
        .authenticate(signature, &body)
        .ok_or(ApiError::InvalidSignature)?;

    require_json(&headers)?;

    let mut build = parse_build_webhook(&body).map_err(|e| match e {
        WebhookError::Malformed(m) => ApiError::Malformed(m),
        WebhookError::DuplicateKey(m) => ApiError::BadRequest("duplicate_key", m),
        WebhookError::UnsupportedVersion(m) => ApiError::UnsupportedSchema(m),
        WebhookError::Invalid(fields) => ApiError::Validation(fields),
    })?;
    let refused: Vec<FieldError> = build
        .artifacts
        .iter()
        .enumerate()
        .filter(|(_, a)| !state.registry_allowed(&a.image.registry))
        .map(|(i, a)| FieldError {
            field: format!("artifacts[{i}].image"),
            message: format!(
                "registry '{}' is not configured for this server",
                a.image.registry
            ),
        })
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::Validation(refused));
    }
    source.admit(&mut build).map_err(|refusal| {
        tracing::warn!(webhook.source = %source.name, account.claimed = %build.account, refusal = ?refusal, "webhook outside its source's grants");
        match refusal {
            Refusal::AccountMismatch(m) => ApiError::AccountMismatch(m),
            Refusal::BuilderNotAllowed(m) => ApiError::NotAllowed(
                "builder_not_allowed",
                m,
                vec![FieldError {
                    field: "builderId".into(),
                    message: "is not one of this source's builder_ids".into(),
                }],
            ),
            Refusal::RepositoryNotAllowed(fields) => ApiError::NotAllowed(
                "repository_not_allowed",
                format!(
                    "webhook source '{}' may not attest {}",
                    source.name,
                    fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>().join(", ")
                ),
                fields,
            ),
        }
    })?;

    let request_sha256 = fingerprint(&build);
    let statement = (build.status == crate::domain::BuildStatus::Succeeded)
        .then(|| provenance::statement_bytes(&build));
    let id = ExecutionId::new();
    let recorded = state
        .store
        .record_build(NewExecution {
            id,
            build,
            request_sha256,
            statement,
            received_at: id.created_at(),
        })
        .await?;
    let (status, execution) = match recorded {
        Recorded::Created(e) => {
            tracing::info!(execution.id = %e.id, account.id = %e.account, pipeline.execution_id = %e.pipeline_execution_id, "build recorded");
            state.notify_worker();
            (StatusCode::ACCEPTED, e)
        }
        Recorded::Existing(e) => {
            tracing::info!(execution.id = %e.id, "redelivered webhook matched an existing execution");
            (StatusCode::OK, e)
        }
    };
    let view = ExecutionView::new(&execution, &state.public_url);
    let location = view.url.clone();
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// `415` unless the body is declared as JSON (`application/json` or `application/<x>+json`,
/// parameters such as `charset` allowed).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"));
    if json {
        Ok(())
    } else if declared.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "send the webhook with Content-Type: application/json".into(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {declared:?} is not JSON; send application/json"
        )))
    }
}

/// Whether `E` is somewhere in `error`'s source chain.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}
