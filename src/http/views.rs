//! JSON shapes the API returns, in the provenance vocabulary (camelCase).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

use crate::domain::{AccountId, BuildStatus, ExecutionId};
use crate::error::ApiError;
use crate::store::{ArtifactRecord, AttestationState, Execution, ExecutionSummary, PushState};

/// `value` as a JSON response, written into a buffer of `capacity` bytes (axum's `Json` starts
/// at 128 bytes and copies what it has written each time it doubles: nine times for a page).
pub fn json_response<T: Serialize>(value: &T, capacity: usize) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(json_bytes(body.into()))
}

/// JSON already serialized (a response kept in memory, a page put together from its items).
pub fn json_bytes(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An execution with its artifacts and their delivery state: `GET /v1/executions/{id}`, and
/// each item of a list page in the full view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionView {
    #[serde(flatten)]
    pub execution: ExecutionFields,
    pub artifacts: Vec<ArtifactView>,
    pub links: Links,
}

/// An execution without its artifacts, only their number: each item of a list page in the
/// basic view (`view=basic`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummaryView {
    #[serde(flatten)]
    pub execution: ExecutionFields,
    /// How many artifacts (images) the execution has; `GET /v1/executions/{id}` lists them.
    pub artifact_count: u32,
    pub links: Links,
}

/// The fields every view of an execution shows: the build as reported and its attestation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionFields {
    #[schema(value_type = String)]
    pub id: ExecutionId,
    #[schema(value_type = String)]
    pub url: ExecutionUrl,
    #[schema(value_type = String)]
    pub account_id: AccountId,
    pub pipeline_identifier: String,
    pub pipeline_execution_id: String,
    #[serde(rename = "repositoryURL")]
    pub repository_url: String,
    pub branch: String,
    pub commit_sha: String,
    pub trigger_type: String,
    pub triggered_by: String,
    pub builder_id: String,
    pub builder_version: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_on: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_on: OffsetDateTime,
    pub status: BuildStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub attestation: AttestationView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestationView {
    pub state: AttestationState,
    pub key_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub signed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub attested_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// The worker that signed: `worker.name` (or host), process id, suffix, then `/<job loop>`.
    pub signed_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactView {
    pub image: String,
    /// `null` while the tag of an image from a template is being resolved.
    pub digest: Option<String>,
    /// When the digest was resolved from the tag (images from templates); `null` when the
    /// webhook named the digest.
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    pub push: PushView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushView {
    pub state: PushState,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub reference: Option<String>,
    pub manifest_digest: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub pushed_at: Option<OffsetDateTime>,
    /// The worker that pushed, named like `signedBy`.
    pub pushed_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Links {
    #[schema(value_type = String)]
    pub provenance: ExecutionUrl,
    #[schema(value_type = String)]
    pub attestation: ExecutionUrl,
    #[schema(value_type = String)]
    pub ui: ExecutionUrl,
}

/// A URL of an execution under the public URL, `{base}{path}{id}{suffix}`, written out only
/// when it is serialized (straight into the response: a list page has 200 of them).
#[derive(Debug, Clone)]
pub struct ExecutionUrl {
    base: Arc<str>,
    path: &'static str,
    id: ExecutionId,
    suffix: &'static str,
}

impl ExecutionUrl {
    fn api(base: &Arc<str>, id: ExecutionId, suffix: &'static str) -> Self {
        Self {
            base: Arc::clone(base),
            path: "/v1/executions/",
            id,
            suffix,
        }
    }
}

impl fmt::Display for ExecutionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}{}", self.base, self.path, self.id, self.suffix)
    }
}

impl Serialize for ExecutionUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl ArtifactView {
    /// The view of `a`, taking its strings rather than copying them (a list page builds fifty).
    pub fn from_record(a: ArtifactRecord) -> Self {
        let mut image = a.registry;
        image.push('/');
        image.push_str(&a.repository);
        if let Some(tag) = &a.tag {
            image.push(':');
            image.push_str(tag);
        }
        Self {
            image,
            digest: a.digest.as_ref().map(ToString::to_string),
            resolved_at: a.resolved_at,
            push: PushView {
                state: a.push_state,
                attempts: a.push_attempts,
                next_attempt_at: a.next_attempt_at,
                last_error: a.last_error,
                reference: a.pushed_reference,
                manifest_digest: a.manifest_digest,
                pushed_at: a.pushed_at,
                pushed_by: a.pushed_by,
            },
        }
    }
}

impl ExecutionFields {
    /// `e`'s fields and links, and its artifacts; `base` is the public URL without a trailing
    /// slash. The strings are taken, not copied, and the URLs are written when serialized.
    fn new<A>(e: Execution<A>, base: &Arc<str>) -> (Self, Links, A) {
        let id = e.id;
        let links = Links {
            provenance: ExecutionUrl::api(base, id, "/provenance"),
            attestation: ExecutionUrl::api(base, id, "/attestation"),
            ui: ExecutionUrl {
                path: "/ui/executions/",
                ..ExecutionUrl::api(base, id, "")
            },
        };
        let fields = Self {
            id,
            url: ExecutionUrl::api(base, id, ""),
            account_id: e.account,
            pipeline_identifier: e.pipeline_identifier,
            pipeline_execution_id: e.pipeline_execution_id,
            repository_url: e.repository_url,
            branch: e.branch,
            commit_sha: e.commit_sha,
            trigger_type: e.trigger_type,
            triggered_by: e.triggered_by,
            builder_id: e.builder_id,
            builder_version: e.builder_version,
            started_on: e.started_on,
            finished_on: e.finished_on,
            status: e.status,
            received_at: e.received_at,
            attestation: AttestationView {
                state: e.attestation,
                key_id: e.key_id,
                signed_at: e.signed_at,
                attested_at: e.attested_at,
                last_error: e.last_error,
                signed_by: e.signed_by,
            },
        };
        (fields, links, e.artifacts)
    }
}

impl ExecutionView {
    /// `base` is the public URL without a trailing slash.
    pub fn new(e: Execution, base: &Arc<str>) -> Self {
        let (execution, links, artifacts) = ExecutionFields::new(e, base);
        Self {
            execution,
            artifacts: artifacts
                .into_iter()
                .map(ArtifactView::from_record)
                .collect(),
            links,
        }
    }
}

impl ExecutionSummaryView {
    /// `base` is the public URL without a trailing slash.
    pub fn new(e: ExecutionSummary, base: &Arc<str>) -> Self {
        let (execution, links, count) = ExecutionFields::new(e, base);
        Self {
            execution,
            artifact_count: count.0,
            links,
        }
    }
}
