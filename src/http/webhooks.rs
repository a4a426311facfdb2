//! Build webhooks: `POST /v1/webhooks/build` (attestd's schema, any attestd-kind source) and
//! `POST /v1/webhooks/{source}` (one configured source, in its CI's own dialect). Authenticate
//! the raw body, then parse, then check the source's grants, then record — in that order, so an
//! unauthenticated body is never parsed and a refused one never written.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::views::ExecutionView;
use crate::app::AppState;
use crate::domain::{BuildCompleted, BuildStatus, ExecutionId, ImageRef, provenance};
use crate::error::ApiError;
use crate::ingest::adapters::{self, Event, SourceKind};
use crate::ingest::build_webhook::{WebhookError, parse_json};
use crate::ingest::group_commit::RecordError;
use crate::ingest::standard_webhooks;
use crate::ingest::{
    FieldError, Refusal, SIGNATURE_HEADER, WebhookSource, fingerprint, parse_build_webhook,
};
use crate::store::{NewExecution, Recorded, Signing, StoreError};

#[utoipa::path(
    post,
    path = "/v1/webhooks/build",
    tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "A build webhook, schema version 1 (see the README)"),
    params(("X-Attestd-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body with the source's secret>; or the Standard Webhooks headers webhook-id, webhook-timestamp, webhook-signature")),
    responses(
        (status = 202, description = "Recorded; signing and pushing follow in the background", body = ExecutionView),
        (status = 200, description = "A redelivery of an execution already recorded", body = ExecutionView),
        (status = 400, description = "Not JSON (`malformed_json`) or duplicate keys (`duplicate_key`)", body = crate::error::ErrorResponse),
        (status = 401, description = "Missing or wrong signature (`invalid_signature`), or a Standard Webhooks timestamp outside the tolerance (`stale_webhook`)", body = crate::error::ErrorResponse),
        (status = 403, description = "Outside the source's grants: another account (`account_mismatch`), an unlisted builder (`builder_not_allowed`) or repository (`repository_not_allowed`)", body = crate::error::ErrorResponse),
        (status = 409, description = "Same pipeline execution, different content", body = crate::error::ErrorResponse),
        (status = 413, description = "Body over server.body_limit_bytes", body = crate::error::ErrorResponse),
        (status = 415, description = "Content-Type is not JSON", body = crate::error::ErrorResponse),
        (status = 422, description = "Invalid fields, unsupported schema version or unlisted registry", body = crate::error::ErrorResponse),
        (status = 500, description = "This build could not be recorded (`record_failed`); nothing was stored for it, and webhooks recorded with it are not affected", body = crate::error::ErrorResponse),
        (status = 503, description = "Retry shortly: the store is unreachable (`store_unavailable`) or too many webhooks are in flight or waiting (`overloaded`); with Retry-After", body = crate::error::ErrorResponse),
    )
)]
pub async fn receive_build_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let source = authenticate_attestd(&state, &headers, &body)?;
    ingest(&state, source, &headers, &body).await
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{source}",
    tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "The CI's own webhook body (GitHub, GitLab, Tekton CloudEvent, Harness notification) or attestd's schema, per the source's `kind`"),
    params(("source" = String, Path, description = "The `name` of a configured `[[webhook.sources]]` entry")),
    responses(
        (status = 202, description = "Recorded (an execution; `resolving` while the digests of images from the source's templates are looked up), or ignored (`{\"ignored\": reason}`: not a finished build, or a successful one naming no image from a source without `images`), nothing stored", body = ExecutionView),
        (status = 200, description = "A redelivery, or a ping", body = ExecutionView),
        (status = 400, description = "Not JSON, duplicate keys, or a required CI header missing", body = crate::error::ErrorResponse),
        (status = 401, description = "Not authenticated by the source's scheme", body = crate::error::ErrorResponse),
        (status = 403, description = "Outside the source's grants", body = crate::error::ErrorResponse),
        (status = 404, description = "No source of that name (`unknown_source`)", body = crate::error::ErrorResponse),
        (status = 409, description = "Same execution key, different content", body = crate::error::ErrorResponse),
        (status = 415, description = "Content-Type is not JSON", body = crate::error::ErrorResponse),
        (status = 422, description = "A field the build needs is missing or invalid, or an image template cannot be rendered for it (`images[i]`: a variable the build lacks, or not an image reference)", body = crate::error::ErrorResponse),
        (status = 500, description = "This build could not be recorded (`record_failed`); nothing was stored for it, and webhooks recorded with it are not affected", body = crate::error::ErrorResponse),
        (status = 503, description = "Retry shortly: the store is unreachable (`store_unavailable`) or too many webhooks are in flight or waiting (`overloaded`); with Retry-After", body = crate::error::ErrorResponse),
    )
)]
pub async fn receive_source_webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let source = state.sources.named(&name).ok_or_else(|| {
        ApiError::NotFound(
            "unknown_source",
            format!("no webhook source is named '{name}'"),
        )
    })?;
    authenticate_source(&state, source, &headers, &body)?;
    ingest(&state, source, &headers, &body).await
}

fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.settings.server.body_limit_bytes)
        } else if caused_by::<super::limits::BodyDeadlineExceeded>(&e) {
            ApiError::BodyTimeout(state.settings.server.body_read_timeout_secs)
        } else {
            ApiError::Malformed(e.body_text())
        }
    })
}

/// Parse an authenticated body in its source's dialect, check the source's grants, record.
async fn ingest(
    state: &AppState,
    source: &WebhookSource,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    super::observe::webhook_source(source);
    require_json(headers)?;
    let (mut build, problems, repository) = match source.kind {
        SourceKind::Attestd => {
            let mut build = parse_build_webhook(body).map_err(webhook_error)?;
            build.delivery_id = headers
                .get(standard_webhooks::ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (build, Vec::new(), None)
        }
        kind => {
            let value = parse_json(body).map_err(webhook_error)?;
            let received = time::OffsetDateTime::now_utc();
            match adapters::interpret(kind, headers, &value, &source.account, received)
                .map_err(webhook_error)?
            {
                Event::Ping => {
                    return Ok((StatusCode::OK, Json(json!({"pong": true}))).into_response());
                }
                Event::Ignored(reason) => {
                    tracing::info!(webhook.source = %source.name, reason = %reason, "webhook ignored");
                    return Ok(ignored(reason, &[]));
                }
                Event::Build {
                    build,
                    problems,
                    repository,
                } => (*build, problems, repository),
            }
        }
    };
    refuse_nul(&build)?;
    if !problems.is_empty() {
        tracing::warn!(webhook.source = %source.name, problems = ?problems, "outputs that cannot be attested");
    }
    // A successful build whose webhook names no image is attested with the source's image
    // templates, if it has any; the worker resolves their digests.
    let mut images = Vec::new();
    if build.status == BuildStatus::Succeeded && build.artifacts.is_empty() {
        if source.images.is_empty() {
            return Ok(ignored(
                "the build reported no image with a valid digest, so there is nothing to attest"
                    .into(),
                &problems,
            ));
        }
        images = source
            .render_images(&build, repository.as_deref())
            .map_err(|fields| {
                tracing::warn!(webhook.source = %source.name, problems = ?fields, "image templates cannot be rendered for this build");
                ApiError::Validation(fields)
            })?;
    }
    check_registries(state, &build, &images)?;
    source
        .admit(&mut build)
        .and_then(|()| source.admit_images(&images))
        .map_err(|refusal| {
            tracing::warn!(webhook.source = %source.name, account.claimed = %build.account, refusal = ?refusal, "webhook outside its source's grants");
            refused(source, refusal)
        })?;
    let images = images.into_iter().map(|(_, image)| image).collect();
    record(state, build, images, &problems).await
}

/// `422` for a NUL character in anything stored, on every backend (PostgreSQL cannot store it).
fn refuse_nul(build: &BuildCompleted) -> Result<(), ApiError> {
    let fields = build.fields_with_nul();
    if fields.is_empty() {
        return Ok(());
    }
    Err(ApiError::Validation(
        fields
            .into_iter()
            .map(|field| FieldError {
                field,
                message: "must not contain the NUL character (U+0000)".into(),
            })
            .collect(),
    ))
}

/// `202 {"ignored": reason}`: not a finished build attestd acts on; nothing stored.
fn ignored(reason: String, problems: &[FieldError]) -> Response {
    let mut body = json!({ "ignored": reason });
    if !problems.is_empty() {
        body["problems"] = json!(problems);
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

fn webhook_error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Malformed(m) => ApiError::Malformed(m),
        WebhookError::DuplicateKey(m) => ApiError::BadRequest("duplicate_key", m),
        WebhookError::UnsupportedVersion(m) => ApiError::UnsupportedSchema(m),
        WebhookError::Invalid(fields) => ApiError::Validation(fields),
    }
}

/// Every artifact's (and templated image's) registry must be configured (`422`): credentials
/// only go to those.
fn check_registries(
    state: &AppState,
    build: &BuildCompleted,
    images: &[(usize, ImageRef)],
) -> Result<(), ApiError> {
    let named = build
        .artifacts
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("artifacts[{i}].image"), &a.image));
    let templated = images
        .iter()
        .map(|(i, image)| (format!("images[{i}]"), image));
    let refused: Vec<FieldError> = named
        .chain(templated)
        .filter(|(_, image)| !state.registry_allowed(&image.registry))
        .map(|(field, image)| FieldError {
            field,
            message: format!(
                "registry '{}' is not configured for this server",
                image.registry
            ),
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(refused))
    }
}

fn refused(source: &WebhookSource, refusal: Refusal) -> ApiError {
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
                fields
                    .iter()
                    .map(|f| f.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fields,
        ),
    }
}

/// The answer to a build the store did not record: its own conflict or outage as usual; a
/// failure of this one item `500 record_failed`; a full queue `503 overloaded`.
fn record_error(e: RecordError) -> ApiError {
    match e {
        RecordError::Store(e @ (StoreError::Conflict(_) | StoreError::NotFound)) => e.into(),
        RecordError::Store(e) if e.is_unavailable() => e.into(),
        RecordError::Store(e) => ApiError::RecordFailed(e.into()),
        RecordError::QueueFull => ApiError::Overloaded(
            "too many webhooks are waiting to be recorded; retry shortly".into(),
        ),
        RecordError::ShuttingDown => {
            ApiError::Unavailable("attestd is shutting down; retry shortly".into())
        }
        RecordError::TimedOut(waited) => {
            tracing::warn!(
                waited_ms = waited.as_millis(),
                "no batch took the build in time; not recorded"
            );
            ApiError::StoreUnavailable
        }
        RecordError::Lost => ApiError::Internal(RecordError::Lost.into()),
    }
}

/// Record an admitted build with the next group commit: the execution with its statement and a
/// sign job, or — for `images` from templates — with the statement template and a resolve job.
async fn record(
    state: &AppState,
    build: BuildCompleted,
    images: Vec<ImageRef>,
    problems: &[FieldError],
) -> Result<Response, ApiError> {
    let request_sha256 = fingerprint_with_images(&build, &images);
    let signing = if build.status != BuildStatus::Succeeded {
        Signing::Nothing
    } else if images.is_empty() {
        Signing::Statement(provenance::statement_bytes(&build))
    } else {
        let template = serde_json::to_vec(&provenance::template(&build))
            .map_err(|e| ApiError::Internal(e.into()))?;
        Signing::Resolve { images, template }
    };
    let id = ExecutionId::new();
    let recorded = state
        .group_commit
        .record(NewExecution {
            id,
            build,
            request_sha256,
            signing,
            received_at: id.created_at(),
        })
        .await
        .map_err(record_error)?;
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
    let view = ExecutionView::new(execution, &state.public_url);
    let location = view.execution.url.to_string();
    if problems.is_empty() {
        return Ok((status, [(header::LOCATION, location)], Json(view)).into_response());
    }
    let mut body = serde_json::to_value(&view).map_err(|e| ApiError::Internal(e.into()))?;
    body["problems"] = json!(problems);
    Ok((status, [(header::LOCATION, location)], Json(body)).into_response())
}

/// The build's fingerprint, and for images from templates, the images too: a redelivery that
/// renders other images (the templates changed) is a conflict, not the same execution.
fn fingerprint_with_images(build: &BuildCompleted, images: &[ImageRef]) -> String {
    use sha2::Digest as _;
    let build = fingerprint(build);
    if images.is_empty() {
        return build;
    }
    let canonical = json!([
        build,
        images.iter().map(ToString::to_string).collect::<Vec<_>>()
    ]);
    hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
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

/// The current time for Standard Webhooks, and the configured tolerance.
fn standard_clock(state: &AppState) -> (i64, i64) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tolerance =
        i64::try_from(state.settings.webhook.standard_webhooks_tolerance_secs).unwrap_or(300);
    (now, tolerance)
}

fn standard_refused(refused: standard_webhooks::Refused) -> ApiError {
    match refused {
        standard_webhooks::Refused::Stale => ApiError::StaleWebhook,
        standard_webhooks::Refused::BadSignature => ApiError::InvalidSignature,
    }
}

/// The attestd-kind source that signed `body`: by Standard Webhooks headers when the request
/// has them, else by `X-Attestd-Signature-256`.
fn authenticate_attestd<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'s WebhookSource, ApiError> {
    if let Some(standard) = standard_webhooks::Headers::from_request(headers) {
        let (now, tolerance) = standard_clock(state);
        return state
            .sources
            .authenticate_standard(standard, body, now, tolerance)
            .map_err(standard_refused);
    }
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    state
        .sources
        .authenticate(signature, body)
        .ok_or(ApiError::InvalidSignature)
}

/// Whether `source` sent `body`: Standard Webhooks when the request has its headers, else the
/// source kind's own scheme.
fn authenticate_source(
    state: &AppState,
    source: &WebhookSource,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if let Some(standard) = standard_webhooks::Headers::from_request(headers) {
        let (now, tolerance) = standard_clock(state);
        return standard_webhooks::verify(standard, body, &source.secrets, now, tolerance)
            .map_err(standard_refused);
    }
    if adapters::authenticate(source.kind, headers, body, &source.secrets) {
        Ok(())
    } else {
        Err(ApiError::InvalidSignature)
    }
}
