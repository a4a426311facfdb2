//! `POST /v1/verify`: verify an image in a configured registry against a public key (given, or
//! a key id attestd knows) and Rego policies; optionally record the result on an execution.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::auth::Reader;
use super::executions::readable_execution;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::Policy;
use crate::store::NewVerification;
use crate::verification::{
    ImageToVerify, TrustedKey, VerificationReport, trusted_keys_from_pem_bundle, verify_image,
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

/// Verify `target` and, when `execution` is given, record the result on it.
pub async fn run_verification(
    state: &AppState,
    target: &ImageToVerify,
    keys: &[TrustedKey],
    policies: &[Policy],
    execution: Option<crate::domain::ExecutionId>,
) -> Result<VerificationReport, ApiError> {
    if !state.registry_allowed(&target.image.registry) {
        return Err(ApiError::Unprocessable(
            "registry_not_allowed",
            format!(
                "registry '{}' is not configured for this server",
                target.image.registry
            ),
        ));
    }
    let report = verify_image(&state.registries, target, keys, policies)
        .await
        .map_err(|e| {
            ApiError::Upstream(
                "registry_error",
                format!("could not read attestations: {}", e.message()),
            )
        })?;
    if let Some(execution_id) = execution {
        let record = NewVerification {
            execution_id,
            image: format!("{}@{}", target.image.name(), report.image),
            digest: report.image.clone(),
            verified: report.verified,
            allowed: report.allowed,
            policies: policies.iter().map(|p| p.name().to_owned()).collect(),
            reason_code: report.reason.as_ref().map(|r| r.code.as_str().to_owned()),
            reason: report.reason.as_ref().map(|r| r.message.clone()),
            report: serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.into()))?,
        };
        state.store.record_verification(&record).await?;
    }
    Ok(report)
}

#[utoipa::path(
    post,
    path = "/v1/verify",
    tag = "verification",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The verdict: `verified` (signature, types, subject) and `allowed` (policies), with every check", body = Object),
        (status = 404, description = "Unknown keyId or execution", body = crate::error::ErrorResponse),
        (status = 422, description = "Bad image reference, key, policy, or unlisted registry", body = crate::error::ErrorResponse),
        (status = 502, description = "The registry could not be read", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn verify_image_attestations(
    State(state): State<AppState>,
    reader: Reader,
    req: Result<Json<VerifyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<VerificationReport>, ApiError> {
    reader.require_token()?;
    let Json(req) = req.map_err(|e| ApiError::BadRequest("invalid_request", e.body_text()))?;
    let target: ImageToVerify = req
        .image
        .parse()
        .map_err(|e: String| ApiError::Unprocessable("invalid_image", e))?;
    let keys = trusted_keys(&state, req.public_key.as_deref(), req.key_id.as_deref()).await?;
    let policies = req
        .policies
        .iter()
        .map(|p| Policy::from_source(p.name.clone(), p.rego.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Unprocessable("invalid_policy", e.to_string()))?;
    let execution = match &req.execution_id {
        Some(id) => {
            let e = readable_execution(&state, &reader, id).await?;
            if let Some(d) = &target.digest
                && !e.artifacts.iter().any(|a| &a.digest == d)
            {
                return Err(ApiError::Unprocessable(
                    "image_not_in_execution",
                    format!("execution {} did not build {d}", e.id),
                ));
            }
            Some(e.id)
        }
        None => None,
    };
    Ok(Json(
        run_verification(&state, &target, &keys, &policies, execution).await?,
    ))
}
