//! `POST /v1/verify`: verify an image in a configured registry against a public key (given, or
//! a key id attestd knows) and Rego policies; optionally record the result on an execution.
//!
//! Scoped: only images in repositories the caller's account may attest
//! ([`App::attestable_by`](crate::app::App::attestable_by)) are read, so no statement of another
//! account reaches a caller's policies, messages or report. Bounded: policy count and size are checked before
//! anything is parsed or fetched; policies are parsed and evaluated only in isolated child
//! processes ([`crate::policy::isolated`]); registry reads stay within `[verify]`'s limits.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::auth::Reader;
use super::executions::readable_execution;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::isolated::{Busy, CheckError};
use crate::policy::{PolicySource, check_bounds};
use crate::registry::{ErrorCode, RegistryError};
use crate::store::{Execution, NewVerification};
use crate::verification::{
    ImageToVerify, TrustedKey, VerificationReport, fetch_candidates, resolve,
    trusted_keys_from_pem_bundle,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyRequest {
    /// `registry/repo@sha256:<hex>` or `registry/repo:tag`, in a configured registry.
    pub image: String,
    /// PKIX PEM public key(s) to trust (e.g. the contents of cosign.pub).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Or the id of a key attestd signs with (see `GET /v1/keys`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Rego policies with `deny` rules, evaluated on each verified statement.
    #[serde(default)]
    pub policies: Vec<PolicyInput>,
    /// Record the result on this execution (it must have built the image).
    #[serde(default)]
    pub execution_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    pub name: String,
    pub rego: String,
}

/// The trusted keys for a request: a PEM given by the caller, or a key attestd knows by id.
pub async fn trusted_keys(
    state: &AppState,
    pem: Option<&str>,
    key_id: Option<&str>,
) -> Result<Vec<TrustedKey>, ApiError> {
    match (pem, key_id) {
        (Some(pem), None) => trusted_keys_from_pem_bundle(pem)
            .map_err(|e| ApiError::Unprocessable("invalid_public_key", format!("publicKey: {e}"))),
        (None, Some(id)) => {
            // Current keys, and retired ones remembered in the store.
            let pem = state.keyring.public_key_pem(id).await?.ok_or_else(|| {
                ApiError::NotFound(
                    "key_not_found",
                    format!("attestd has never signed with a key with id {id}"),
                )
            })?;
            trusted_keys_from_pem_bundle(&pem).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("public key of {id} does not parse: {e}"))
            })
        }
        _ => Err(ApiError::Unprocessable(
            "key_required",
            "give exactly one of publicKey (PEM) or keyId (a key attestd signs with)".into(),
        )),
    }
}

/// `403 repository_not_allowed` unless `reader`'s account may attest `target`'s repository (and
/// `422 registry_not_allowed` for a registry that is not configured at all). Nothing is read from
/// a registry before this passes.
pub fn check_scope(
    state: &AppState,
    reader: &Reader,
    target: &ImageToVerify,
) -> Result<(), ApiError> {
    if !state.registry_allowed(&target.image.registry) {
        return Err(ApiError::Unprocessable(
            "registry_not_allowed",
            format!(
                "registry '{}' is not configured for this server",
                target.image.registry
            ),
        ));
    }
    if !state.attestable_by(reader).allows(&target.image) {
        return Err(ApiError::Forbidden(
            "repository_not_allowed",
            format!(
                "{} is not in a repository your account may attest",
                target.image.name()
            ),
        ));
    }
    Ok(())
}

/// `policies` within `[verify]`'s count and size caps; nothing is parsed here.
pub fn check_policy_bounds(state: &AppState, policies: &[PolicyInput]) -> Result<(), ApiError> {
    let verify = &state.settings.verify;
    check_bounds(
        policies
            .iter()
            .map(|p| (p.name.as_str(), p.rego.len() as u64)),
        verify.max_policies,
        verify.max_policy_bytes,
    )
    .map_err(|e| {
        let code = match e {
            crate::policy::BoundsError::TooMany { .. } => "too_many_policies",
            crate::policy::BoundsError::TooLarge { .. } => "policy_too_large",
            crate::policy::BoundsError::BadName => "invalid_policy",
        };
        ApiError::Unprocessable(code, e.to_string())
    })
}

/// Verify `target` for `reader` and, when `execution` is given, record the result on it. The
/// scope is checked first, then the policies are parsed (in a child), then the digest is
/// resolved and, with an execution, must be one of its artifacts; only then are attestations
/// fetched, checked, and judged by the policies (in a child).
pub async fn run_verification(
    state: &AppState,
    reader: &Reader,
    target: &ImageToVerify,
    keys: &[TrustedKey],
    policies: &[PolicySource],
    execution: Option<&Execution>,
) -> Result<VerificationReport, ApiError> {
    check_scope(state, reader, target)?;
    state
        .policy_evaluator
        .check(policies)
        .await
        .map_err(|e| match e {
            CheckError::Busy(busy) => unavailable(busy),
            CheckError::Policy(e) => ApiError::Unprocessable("invalid_policy", e.to_string()),
        })?;
    let digest = resolve(&state.registries, target)
        .await
        .map_err(registry_error)?;
    if let Some(e) = execution
        && !e.artifacts.iter().any(|a| {
            a.registry.eq_ignore_ascii_case(&target.image.registry)
                && a.repository == target.image.repository
                && a.digest.as_ref() == Some(&digest)
        })
    {
        return Err(ApiError::Unprocessable(
            "image_not_in_execution",
            format!(
                "execution {} did not build {}@{digest}",
                e.id,
                target.image.name()
            ),
        ));
    }
    let candidates = fetch_candidates(&state.registries, &target.image, &digest)
        .await
        .map_err(registry_error)?;
    let mut checked = crate::verification::check(&digest, &candidates, keys);
    let verdicts = state
        .policy_evaluator
        .evaluate(policies, checked.take_statements())
        .await
        .map_err(unavailable)?;
    let report = checked.finish(policies.len(), verdicts);
    if let Some(e) = execution {
        let record = NewVerification {
            execution_id: e.id,
            image: format!("{}@{}", target.image.name(), report.image),
            digest: report.image.clone(),
            verified: report.verified,
            allowed: report.allowed,
            policies: policies.iter().map(|p| p.name.clone()).collect(),
            reason_code: report.reason.as_ref().map(|r| r.code.as_str().to_owned()),
            reason: report.reason.as_ref().map(|r| r.message.clone()),
            report: serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.into()))?,
        };
        state.store.record_verification(&record).await?;
    }
    Ok(report)
}

/// Read limits are the caller's problem (422, with the limit named); the rest is upstream (502).
fn registry_error(e: RegistryError) -> ApiError {
    match e.code() {
        ErrorCode::TooManyLayers => {
            ApiError::Unprocessable("too_many_attestations", e.message().to_owned())
        }
        ErrorCode::AttestationTooLarge => {
            ApiError::Unprocessable("attestation_too_large", e.message().to_owned())
        }
        _ => ApiError::Upstream(
            "registry_error",
            format!("could not read attestations: {}", e.message()),
        ),
    }
}

fn unavailable(busy: Busy) -> ApiError {
    ApiError::Unavailable(busy.to_string())
}

#[utoipa::path(
    post,
    path = "/v1/verify",
    tag = "verification",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The verdict: `verified` (signature, types, subject) and `allowed` (policies), with every check; a policy that exhausts the evaluator's limits fails with `policy_error`", body = Object),
        (status = 403, description = "`repository_not_allowed`: the image is outside the repositories the caller's account may attest", body = crate::error::ErrorResponse),
        (status = 404, description = "Unknown keyId or execution (another account's execution is unknown)", body = crate::error::ErrorResponse),
        (status = 413, description = "The request is larger than `server.body_limit_bytes`", body = crate::error::ErrorResponse),
        (status = 422, description = "Bad image reference, key or policy; unlisted registry; `too_many_policies`, `policy_too_large`, `too_many_attestations`, `attestation_too_large`; `image_not_in_execution`", body = crate::error::ErrorResponse),
        (status = 502, description = "The registry could not be read", body = crate::error::ErrorResponse),
        (status = 503, description = "Every policy evaluator is busy", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn verify_image_attestations(
    State(state): State<AppState>,
    reader: Reader,
    req: Result<Json<VerifyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<VerificationReport>, ApiError> {
    reader.require_token()?;
    let Json(req) = req.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.settings.server.body_limit_bytes)
        } else {
            ApiError::BadRequest("invalid_request", e.body_text())
        }
    })?;
    check_policy_bounds(&state, &req.policies)?;
    let target: ImageToVerify = req
        .image
        .parse()
        .map_err(|e: String| ApiError::Unprocessable("invalid_image", e))?;
    check_scope(&state, &reader, &target)?;
    let keys = trusted_keys(&state, req.public_key.as_deref(), req.key_id.as_deref()).await?;
    let execution = match &req.execution_id {
        Some(id) => Some(readable_execution(&state, &reader, id).await?),
        None => None,
    };
    let policies: Vec<PolicySource> = req
        .policies
        .into_iter()
        .map(|p| PolicySource {
            name: p.name,
            rego: p.rego,
        })
        .collect();
    Ok(Json(
        run_verification(
            &state,
            &reader,
            &target,
            &keys,
            &policies,
            execution.as_ref(),
        )
        .await?,
    ))
}
