//! Each CI's own build-completion webhooks, behind one small seam: an adapter authenticates a
//! delivery with the kind's native scheme, classifies it (a finished build, or something to
//! ignore) and normalizes a finished build into the same [`BuildCompleted`] the attestd schema
//! produces. Adapters are pure: they never touch the store or the network. What the operator
//! grants a source (account, repositories, builder ids) is enforced afterwards, the same way for
//! every kind ([`WebhookSource::admit`](super::WebhookSource::admit)).

pub mod github;
pub mod gitlab;
pub mod harness;
pub mod tekton;

use axum::http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::FieldError;
use super::build_webhook::WebhookError;
use crate::domain::{AccountId, BuildCompleted, BuildStatus};

/// The webhook dialect a source speaks (`[[webhook.sources]] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// attestd's own schema (see the README), `X-Attestd-Signature-256`.
    #[default]
    Attestd,
    /// GitHub `workflow_run` and container `registry_package`/`package` events.
    Github,
    /// GitLab `Pipeline Hook` events.
    Gitlab,
    /// Tekton CloudEvents (binary mode) for TaskRuns and PipelineRuns.
    Tekton,
    /// Harness pipeline notifications (`{"eventData": …}`).
    Harness,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attestd => "attestd",
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Tekton => "tekton",
            Self::Harness => "harness",
        }
    }
}

/// What a delivery turned out to be.
#[derive(Debug)]
pub enum Event {
    /// A connectivity check (GitHub `ping`): answered 200, nothing stored.
    Ping,
    /// Not a finished build attestd acts on: answered 202 with the reason, nothing stored.
    Ignored(String),
    /// A finished build, normalized. `builder_id` and `source` are left empty for the source to
    /// fill in; `problems` are outputs the CI reported that cannot be attested (e.g. a result
    /// with a malformed digest): they are answered, logged and never signed. `repository` is the
    /// repository path without host (`octo-org/octo-repo`), when the CI names one: the
    /// `{repository}` of the source's image templates.
    Build {
        build: Box<BuildCompleted>,
        problems: Vec<FieldError>,
        repository: Option<String>,
    },
}

/// Authenticate a delivery with the kind's native scheme (Standard Webhooks is checked first,
/// for every kind, by the caller). Comparisons are constant time over every secret.
pub fn authenticate(
    kind: SourceKind,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[SecretString],
) -> bool {
    match kind {
        SourceKind::Attestd => {
            let header = header(headers, super::SIGNATURE_HEADER);
            super::signature::verify_hex_hmac(header, body, secrets)
        }
        SourceKind::Github => super::signature::verify_hex_hmac(
            header(headers, github::SIGNATURE_HEADER),
            body,
            secrets,
        ),
        SourceKind::Gitlab => token_matches(header(headers, gitlab::TOKEN_HEADER), secrets),
        SourceKind::Tekton | SourceKind::Harness => token_matches(
            header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")),
            secrets,
        ),
    }
}

/// Classify and normalize an authenticated delivery for `account`.
pub fn interpret(
    kind: SourceKind,
    headers: &HeaderMap,
    body: &Value,
    account: &AccountId,
    received: OffsetDateTime,
) -> Result<Event, WebhookError> {
    let ctx = Context {
        headers,
        account,
        received,
    };
    match kind {
        SourceKind::Attestd => Err(WebhookError::Malformed(
            "sources of kind attestd take the attestd schema".into(),
        )),
        SourceKind::Github => github::interpret(&ctx, body),
        SourceKind::Gitlab => gitlab::interpret(&ctx, body),
        SourceKind::Tekton => tekton::interpret(&ctx, body),
        SourceKind::Harness => harness::interpret(&ctx, body),
    }
}

/// What every adapter gets besides the body.
pub struct Context<'a> {
    pub headers: &'a HeaderMap,
    pub account: &'a AccountId,
    /// When attestd received the delivery: the fallback for times a CI does not send.
    pub received: OffsetDateTime,
}

impl Context<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }

    /// A build with the fields every kind fills the same way; the adapter sets the rest.
    fn build(&self, status: BuildStatus) -> BuildCompleted {
        BuildCompleted {
            account: self.account.clone(),
            source: String::new(),
            pipeline_identifier: String::new(),
            pipeline_execution_id: String::new(),
            repository_url: String::new(),
            branch: String::new(),
            commit_sha: String::new(),
            trigger_type: String::new(),
            triggered_by: String::new(),
            builder_id: String::new(),
            builder_version: Default::default(),
            started_on: self.received,
            finished_on: self.received,
            status,
            artifacts: Vec::new(),
            build_type: String::new(),
            invocation_id: String::new(),
            delivery_id: None,
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether `presented` equals one of `secrets` (constant time, every secret compared).
fn token_matches(presented: Option<&str>, secrets: &[SecretString]) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let mut ok = false;
    for secret in secrets {
        ok |= bool::from(
            secret
                .expose_secret()
                .as_bytes()
                .ct_eq(presented.as_bytes()),
        );
    }
    ok
}

/// The string at `path` in `v`, if it is a non-empty string.
fn text<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// A field the build cannot do without: a 422 naming it when absent.
fn required<'v>(v: &'v Value, path: &[&str]) -> Result<&'v str, WebhookError> {
    text(v, path).ok_or_else(|| invalid(&path.join("."), "is required"))
}

fn invalid(field: &str, message: &str) -> WebhookError {
    WebhookError::Invalid(vec![FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    }])
}

/// An RFC 3339 time in years 1–9999, in UTC, or a 422 naming the field.
fn rfc3339(value: &str, field: &str) -> Result<OffsetDateTime, WebhookError> {
    use time::format_description::well_known::Rfc3339;
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or_else(|| invalid(field, "must be an RFC 3339 time in years 0001 to 9999"))
}

/// Reject a normalized build whose times are out of order, as the attestd schema does.
fn check_times(build: &BuildCompleted, finished_field: &str) -> Result<(), WebhookError> {
    if build.finished_on < build.started_on {
        return Err(invalid(finished_field, "is before the start of the run"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! The real payloads in `tests/fixtures/webhooks/`, with the image placeholders filled in.

    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use serde_json::Value;

    pub const IMAGE: &str = "registry.example.com/acme/app";
    pub const IMAGE_2: &str = "registry.example.com/acme/sidecar";

    pub fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    pub fn load(path: &str) -> Value {
        let full = format!(
            "{}/tests/fixtures/webhooks/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&full)
            .unwrap_or_else(|e| panic!("{full}: {e}"))
            .replace("{{IMAGE}}", IMAGE)
            .replace("{{IMAGE_2}}", IMAGE_2)
            .replace("{{DIGEST}}", &digest(1))
            .replace("{{DIGEST_2}}", &digest(2));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    /// `body` with these headers, interpreted for account `acme` now.
    pub fn interpret_as(
        kind: super::SourceKind,
        body: &Value,
        pairs: &[(&str, &str)],
    ) -> Result<super::Event, crate::ingest::build_webhook::WebhookError> {
        super::interpret(
            kind,
            &headers(pairs),
            body,
            &"acme".parse().unwrap(),
            time::OffsetDateTime::now_utc(),
        )
    }

    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }
}
