//! The generic build webhook, schema version 1: a CI system reports a finished build and the
//! images it pushed. Field names follow the SLSA/Harness provenance vocabulary (camelCase).
//!
//! ```json
//! {
//!   "schemaVersion": 1,
//!   "accountId": "acme",
//!   "pipelineIdentifier": "build_and_push",
//!   "pipelineExecutionId": "7f9c2ba4-run-1182",
//!   "repositoryURL": "https://github.com/acme/app",
//!   "branch": "main",
//!   "commitSha": "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01",
//!   "triggerType": "WEBHOOK",
//!   "triggeredBy": "alice@example.com",
//!   "builderId": "https://ci.example.com/runners/linux-amd64",
//!   "builderVersion": {"ci": "2.4.1", "buildkit": "0.17.0"},
//!   "startedOn": "2026-11-25T10:00:00Z",
//!   "finishedOn": "2026-11-25T10:04:31Z",
//!   "status": "succeeded",
//!   "artifacts": [{"image": "registry.example.com/acme/app:1.4.0", "digest": "sha256:<64 hex>"}]
//! }
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::{AccountId, Artifact, BuildCompleted, BuildStatus, Digest, ImageRef};

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u64 = 1;
const MAX_TEXT: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_ARTIFACTS: usize = 256;
const MAX_BUILDER_VERSIONS: usize = 64;

const TOP_LEVEL_FIELDS: &[&str] = &[
    "schemaVersion",
    "accountId",
    "pipelineIdentifier",
    "pipelineExecutionId",
    "repositoryURL",
    "branch",
    "commitSha",
    "triggerType",
    "triggeredBy",
    "builderId",
    "builderVersion",
    "startedOn",
    "finishedOn",
    "status",
    "artifacts",
];

/// One validation failure, pointing at the offending field (`artifacts[1].digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Why a webhook body was refused.
#[derive(Debug)]
pub enum WebhookError {
    /// Not JSON, or not a JSON object.
    Malformed(String),
    /// `schemaVersion` names a version this build does not support.
    UnsupportedVersion(String),
    /// Well-formed JSON whose fields are missing or invalid.
    Invalid(Vec<FieldError>),
    /// An object names the same key twice.
    DuplicateKey(String),
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn text(&mut self, name: &str, max: usize) -> Option<String> {
        match self.obj.get(name) {
            None | Some(Value::Null) => {
                self.error(name, "is required");
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.error(name, "must not be empty");
                None
            }
            Some(Value::String(s)) if s.len() > max => {
                self.error(name, format!("must be at most {max} bytes"));
                None
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                self.error(name, "must not contain control characters");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    fn parsed<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let raw = self.text(name, MAX_TEXT)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(name, e.to_string());
                None
            }
        }
    }
}

/// An RFC 3339 timestamp whose UTC instant lies in years 1–9999, the range provenance (RFC 3339
/// with four-digit years) can express; returned in UTC.
fn timestamp(s: &str) -> Result<OffsetDateTime, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2026-11-25T10:00:00Z".to_owned())?;
    t.checked_to_offset(time::UtcOffset::UTC)
        .filter(|utc| (1..=9999).contains(&utc.year()))
        .ok_or_else(|| "must fall in the years 0001 to 9999 once converted to UTC".to_owned())
}

/// JSON into a [`Value`], refusing an object that names the same key twice (at any depth):
/// `serde_json` would keep the last one silently, and a signer and a checker that disagree on
/// which one counts is how parser-differential attacks start.
pub fn parse_json_strictly(body: &[u8]) -> Result<Value, String> {
    use serde::de::{self, Deserializer as _, MapAccess, SeqAccess, Visitor};

    struct Strict(Value);
    struct StrictVisitor;

    impl<'de> de::Deserialize<'de> for Strict {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor)
        }
    }

    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Strict;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
            Ok(Strict(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
            Ok(Strict(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
            Ok(Strict(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
            Ok(Strict(
                serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
            ))
        }
        fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
            Ok(Strict(Value::String(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Strict, E> {
            Ok(Strict(Value::String(v)))
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict(Value::Null))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            let mut items = Vec::new();
            while let Some(Strict(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(Strict(Value::Array(items)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if object.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                }
                let Strict(value) = map.next_value()?;
                object.insert(key, value);
            }
            Ok(Strict(Value::Object(object)))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let Strict(value) = de
        .deserialize_any(StrictVisitor)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

fn commit_sha(s: &str) -> Result<String, &'static str> {
    let ok = (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("must be a full git commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex characters")
    }
}

fn no_whitespace(s: &str) -> Result<String, &'static str> {
    if s.chars().any(char::is_whitespace) {
        Err("must not contain whitespace")
    } else {
        Ok(s.to_owned())
    }
}

/// JSON with no duplicate keys ([`parse_json_strictly`]), or why not.
pub fn parse_json(body: &[u8]) -> Result<Value, WebhookError> {
    parse_json_strictly(body).map_err(|e| {
        if e.starts_with("duplicate key") {
            WebhookError::DuplicateKey(format!("body is refused: {e}"))
        } else {
            WebhookError::Malformed(format!("body is not valid JSON: {e}"))
        }
    })
}

/// Parse and validate a webhook body. All field problems are reported together. The build's
/// `builder_id` is what the webhook claimed (empty when it claimed none) and its `source` is
/// empty: the authenticated source fills both in ([`WebhookSource::admit`]).
///
/// [`WebhookSource::admit`]: crate::ingest::WebhookSource::admit
pub fn parse_build_webhook(body: &[u8]) -> Result<BuildCompleted, WebhookError> {
    let value = parse_json(body)?;
    let Value::Object(obj) = &value else {
        return Err(WebhookError::Malformed("body must be a JSON object".into()));
    };
    match obj.get("schemaVersion") {
        Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(WebhookError::UnsupportedVersion(format!(
                "schemaVersion {other} is not supported; this server accepts {SCHEMA_VERSION}"
            )));
        }
        None => {
            return Err(WebhookError::Invalid(vec![FieldError {
                field: "schemaVersion".into(),
                message: format!("is required (use {SCHEMA_VERSION})"),
            }]));
        }
    }

    let mut f = Fields {
        obj,
        errors: Vec::new(),
    };
    for key in obj.keys() {
        if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
            f.error(key.clone(), "is not a field of schema version 1");
        }
    }
    let account = f.parsed("accountId", str::parse::<AccountId>);
    let pipeline_identifier = f.text("pipelineIdentifier", MAX_TEXT);
    let pipeline_execution_id = f.text("pipelineExecutionId", MAX_TEXT);
    let repository_url = f
        .text("repositoryURL", MAX_URL)
        .and_then(|s| match no_whitespace(&s) {
            Ok(s) => Some(s),
            Err(e) => {
                f.error("repositoryURL", e);
                None
            }
        });
    let branch = f.parsed("branch", no_whitespace).map(|b| {
        b.strip_prefix("refs/heads/")
            .map(str::to_owned)
            .unwrap_or(b)
    });
    let commit_sha = f.parsed("commitSha", commit_sha);
    let trigger_type = f.text("triggerType", MAX_TEXT);
    let triggered_by = f.text("triggeredBy", MAX_TEXT);
    let builder_id = match obj.get("builderId") {
        None | Some(Value::Null) => Some(String::new()),
        Some(_) => f.text("builderId", MAX_URL),
    };
    let started_on = f.parsed("startedOn", timestamp);
    let finished_on = f.parsed("finishedOn", timestamp);
    let status = f.parsed("status", str::parse::<BuildStatus>);

    let builder_version = match obj.get("builderVersion") {
        None | Some(Value::Null) => Some(BTreeMap::new()),
        Some(Value::Object(m)) if m.len() > MAX_BUILDER_VERSIONS => {
            f.error(
                "builderVersion",
                format!("must have at most {MAX_BUILDER_VERSIONS} entries"),
            );
            None
        }
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                match v {
                    Value::String(s)
                        if !k.is_empty() && k.len() <= MAX_TEXT && s.len() <= MAX_TEXT =>
                    {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => f.error(
                        format!("builderVersion.{k}"),
                        "must be a string of at most 1024 bytes",
                    ),
                }
            }
            Some(out)
        }
        Some(_) => {
            f.error(
                "builderVersion",
                "must be an object mapping component to version",
            );
            None
        }
    };

    let artifacts = match obj.get("artifacts") {
        None | Some(Value::Null) => {
            f.error("artifacts", "is required");
            None
        }
        Some(Value::Array(a)) if a.is_empty() => {
            f.error("artifacts", "must list at least one image");
            None
        }
        Some(Value::Array(a)) if a.len() > MAX_ARTIFACTS => {
            f.error(
                "artifacts",
                format!("must list at most {MAX_ARTIFACTS} images"),
            );
            None
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::Object(a) = item else {
                    f.error(
                        format!("artifacts[{i}]"),
                        "must be an object with image and digest",
                    );
                    continue;
                };
                let mut af = Fields {
                    obj: a,
                    errors: Vec::new(),
                };
                for key in a.keys() {
                    if key != "image" && key != "digest" {
                        af.error(key.clone(), "is not a field of an artifact");
                    }
                }
                let image = af.parsed("image", str::parse::<ImageRef>);
                let digest = af.parsed("digest", str::parse::<Digest>);
                for e in af.errors {
                    f.error(format!("artifacts[{i}].{}", e.field), e.message);
                }
                if let (Some(image), Some(digest)) = (image, digest) {
                    out.push(Artifact { image, digest });
                }
            }
            Some(out)
        }
        Some(_) => {
            f.error("artifacts", "must be an array");
            None
        }
    };

    if let (Some(s), Some(e)) = (started_on, finished_on)
        && e < s
    {
        f.error("finishedOn", "must not be before startedOn");
    }

    let errors = std::mem::take(&mut f.errors);
    let (
        Some(account),
        Some(pipeline_identifier),
        Some(pipeline_execution_id),
        Some(repository_url),
        Some(branch),
        Some(commit_sha),
        Some(trigger_type),
        Some(triggered_by),
        Some(builder_id),
        Some(builder_version),
        Some(started_on),
        Some(finished_on),
        Some(status),
        Some(artifacts),
    ) = (
        account,
        pipeline_identifier,
        pipeline_execution_id,
        repository_url,
        branch,
        commit_sha,
        trigger_type,
        triggered_by,
        builder_id,
        builder_version,
        started_on,
        finished_on,
        status,
        artifacts,
    )
    else {
        return Err(WebhookError::Invalid(errors));
    };
    if !errors.is_empty() {
        return Err(WebhookError::Invalid(errors));
    }
    let pipeline_execution_id_for_invocation = pipeline_execution_id.clone();
    Ok(BuildCompleted {
        account,
        source: String::new(),
        pipeline_identifier,
        pipeline_execution_id,
        repository_url,
        branch,
        commit_sha,
        trigger_type,
        triggered_by,
        builder_id,
        builder_version,
        started_on,
        finished_on,
        status,
        artifacts,
        build_type: crate::domain::provenance::BUILD_TYPE.to_owned(),
        invocation_id: pipeline_execution_id_for_invocation,
        delivery_id: None,
    })
}

/// SHA-256 (hex) over a fixed-order serialization of every reported field of `build`, taken
/// after admission (so with the granted builder id); equal for redeliveries of the same build.
/// The formula is stored with every execution: changing it would turn redeliveries of builds
/// recorded by an earlier release into conflicts.
pub fn fingerprint(b: &BuildCompleted) -> String {
    let canonical = serde_json::json!([
        b.account.as_str(),
        b.pipeline_identifier,
        b.pipeline_execution_id,
        b.repository_url,
        b.branch,
        b.commit_sha,
        b.trigger_type,
        b.triggered_by,
        b.builder_id,
        b.builder_version.iter().collect::<Vec<_>>(),
        b.started_on.unix_timestamp_nanos().to_string(),
        b.finished_on.unix_timestamp_nanos().to_string(),
        b.status.as_str(),
        b.artifacts
            .iter()
            .map(|a| [a.image.to_string(), a.digest.to_string()])
            .collect::<Vec<_>>(),
    ]);
    hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Value {
        serde_json::json!({
            "schemaVersion": 1,
            "accountId": "acme",
            "pipelineIdentifier": "build_and_push",
            "pipelineExecutionId": "run-1",
            "repositoryURL": "https://github.com/acme/app",
            "branch": "refs/heads/main",
            "commitSha": "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01",
            "triggerType": "WEBHOOK",
            "triggeredBy": "alice@example.com",
            "builderId": "https://ci.example.com/runners/linux",
            "builderVersion": {"ci": "2.4.1"},
            "startedOn": "2026-11-25T10:00:00Z",
            "finishedOn": "2026-11-25T11:04:31+01:00",
            "status": "succeeded",
            "artifacts": [{"image": "registry.example.com/acme/app:1.4.0", "digest": format!("sha256:{}", "e".repeat(64))}]
        })
    }

    fn errors_of(v: &Value) -> Vec<FieldError> {
        match parse_build_webhook(v.to_string().as_bytes()) {
            Err(WebhookError::Invalid(e)) => e,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_webhook_normalizes_branch_and_timestamps() {
        let p = parse_build_webhook(sample().to_string().as_bytes()).unwrap();
        assert_eq!(p.branch, "main");
        assert_eq!(p.finished_on.offset(), time::UtcOffset::UTC);
        assert_eq!(p.artifacts[0].image.tag.as_deref(), Some("1.4.0"));
    }

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace_but_not_content() {
        let a = parse_build_webhook(sample().to_string().as_bytes()).unwrap();
        let pretty = serde_json::to_string_pretty(&sample()).unwrap();
        let b = parse_build_webhook(pretty.as_bytes()).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut changed = sample();
        changed["triggeredBy"] = "mallory".into();
        let c = parse_build_webhook(changed.to_string().as_bytes()).unwrap();
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("pipelineExecutionId");
        v["artifacts"][0]["digest"] = "sha256:ABC".into();
        v["artifacts"][0]["size"] = 3.into();
        v["startedOn"] = "yesterday".into();
        v["extra"] = true.into();
        let fields: Vec<String> = errors_of(&v).into_iter().map(|e| e.field).collect();
        for f in [
            "pipelineExecutionId",
            "artifacts[0].digest",
            "artifacts[0].size",
            "startedOn",
            "extra",
        ] {
            assert!(
                fields.contains(&f.to_owned()),
                "{f} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn finished_before_started_and_empty_artifacts_are_refused() {
        let mut v = sample();
        v["finishedOn"] = "2026-11-25T09:00:00Z".into();
        v["artifacts"] = serde_json::json!([]);
        let fields: Vec<String> = errors_of(&v).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["artifacts", "finishedOn"]);
    }

    #[test]
    fn unknown_schema_version_and_non_json_are_distinguished() {
        let mut v = sample();
        v["schemaVersion"] = 2.into();
        assert!(matches!(
            parse_build_webhook(v.to_string().as_bytes()),
            Err(WebhookError::UnsupportedVersion(_))
        ));
        assert!(matches!(
            parse_build_webhook(b"{nope"),
            Err(WebhookError::Malformed(_))
        ));
        assert!(matches!(
            parse_build_webhook(b"[1]"),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn timestamps_outside_years_1_to_9999_in_utc_are_field_errors() {
        for (field, value) in [
            ("finishedOn", "9999-12-31T23:59:59-01:00"),
            ("startedOn", "0000-01-01T00:00:00+01:00"),
            ("startedOn", "0000-01-01T00:00:00Z"),
        ] {
            let mut v = sample();
            v[field] = value.into();
            if field == "startedOn" {
                v["finishedOn"] = "0001-01-01T00:00:00Z".into();
            }
            let errors = errors_of(&v);
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == field && e.message.contains("9999")),
                "{value}: {errors:?}"
            );
        }
        let mut v = sample();
        v["startedOn"] = "0001-01-01T00:00:00Z".into();
        v["finishedOn"] = "9999-12-31T23:59:59Z".into();
        assert!(parse_build_webhook(v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let body = sample().to_string();
        let top = body.replacen(
            "\"accountId\":\"acme\"",
            "\"accountId\":\"acme\",\"accountId\":\"globex\"",
            1,
        );
        assert_ne!(top, body);
        assert!(matches!(
            parse_build_webhook(top.as_bytes()),
            Err(WebhookError::DuplicateKey(m)) if m.contains("accountId")
        ));
        let nested = body.replacen("\"digest\":", "\"digest\":\"sha256:00\",\"digest\":", 1);
        assert!(matches!(
            parse_build_webhook(nested.as_bytes()),
            Err(WebhookError::DuplicateKey(_))
        ));
        assert!(matches!(
            parse_build_webhook(format!("{body} {{}}").as_bytes()),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn builder_id_may_be_omitted_for_the_source_to_fill_in() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("builderId");
        assert_eq!(
            parse_build_webhook(v.to_string().as_bytes())
                .unwrap()
                .builder_id,
            ""
        );
        v["builderId"] = "".into();
        assert_eq!(errors_of(&v)[0].field, "builderId");
    }
}

/// Property tests over the parser: whatever the body, no panic; whatever is accepted yields a
/// statement that parses back to itself with RFC 3339 times. Run in CI for a bounded number of
/// cases (`PROPTEST_CASES` raises it locally).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::provenance::{Statement, statement, statement_bytes};

    fn timestamp() -> impl Strategy<Value = String> {
        let offset = prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            (prop::bool::ANY, 0u8..=25, 0u8..=61)
                .prop_map(|(east, h, m)| format!("{}{h:02}:{m:02}", if east { '+' } else { '-' })),
        ];
        let fraction = prop_oneof![Just(String::new()), "\\.[0-9]{1,12}"];
        // The edges of the calendar are where conversions to UTC overflow: weight them.
        let year = prop_oneof![0u32..=1, 9998u32..=9999, 0u32..=9999];
        let month = prop_oneof![Just(1u8), Just(12u8), 0u8..=13];
        let day = prop_oneof![Just(1u8), Just(31u8), 0u8..=32];
        let hour = prop_oneof![Just(0u8), Just(23u8), 0u8..=24];
        (year, month, day, hour, 0u8..=60, 0u8..=61, fraction, offset).prop_map(
            |(y, mo, d, h, mi, s, frac, off)| {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
            },
        )
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9._/:@-]{1,40}",
            ".{0,24}",
            Just("refs/tags/v1".to_owned()),
            Just("refs/heads/main".to_owned()),
        ]
    }

    fn image() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("registry.example.com/acme/app:1.0".to_owned()),
            "(localhost:5000|reg\\.example\\.com|[a-z]{1,8})/[a-z0-9._/-]{0,20}(:[A-Za-z0-9._-]{0,10})?",
            ".{0,30}",
        ]
    }

    fn digest() -> impl Strategy<Value = String> {
        prop_oneof![
            "sha256:[0-9a-f]{64}",
            "sha256:[0-9a-fA-F]{60,66}",
            "[a-z0-9]{0,8}:[0-9a-f]{0,70}",
        ]
    }

    fn webhook() -> impl Strategy<Value = Value> {
        (
            (text(), text(), text(), text(), text()),
            (text(), text(), timestamp(), timestamp()),
            prop::sample::select(vec!["succeeded", "failed", "aborted", "SUCCEEDED", ""]),
            prop::collection::vec((image(), digest()), 0..4),
            prop::option::of(text()),
        )
            .prop_map(|((pipeline, execution, repo, branch, trigger), (by, commit, started, finished), status, artifacts, builder)| {
                let mut v = json!({
                    "schemaVersion": 1,
                    "accountId": "acme",
                    "pipelineIdentifier": pipeline,
                    "pipelineExecutionId": execution,
                    "repositoryURL": repo,
                    "branch": branch,
                    "commitSha": if commit.len() % 2 == 0 { "4f1e0c7b9d3a2e6f8b0c1d2e3f4a5b6c7d8e9f01".to_owned() } else { commit },
                    "triggerType": trigger,
                    "triggeredBy": by,
                    "startedOn": started,
                    "finishedOn": finished,
                    "status": status,
                    "artifacts": artifacts.into_iter().map(|(image, digest)| json!({"image": image, "digest": digest})).collect::<Vec<_>>(),
                });
                if let Some(builder) = builder {
                    v["builderId"] = builder.into();
                }
                v
            })
    }

    /// What every accepted webhook must give: a statement whose bytes parse back to the same
    /// statement, with RFC 3339 times that parse back to the build's instants.
    fn check_accepted(build: &BuildCompleted) {
        let bytes = statement_bytes(build);
        let parsed: Statement = serde_json::from_slice(&bytes).expect("statement parses back");
        assert_eq!(parsed, statement(build));
        let meta = &parsed.predicate.run_details.metadata;
        for (shown, instant) in [
            (&meta.started_on, build.started_on),
            (&meta.finished_on, build.finished_on),
        ] {
            let back = OffsetDateTime::parse(shown, &Rfc3339)
                .unwrap_or_else(|_| panic!("{shown:?} is not RFC 3339"));
            assert_eq!(back, instant);
        }
        assert_eq!(parsed.subject.len(), build.artifacts.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn generated_webhooks_never_panic_and_accepted_ones_sign_sense(hook in webhook()) {
            if let Ok(mut build) = parse_build_webhook(hook.to_string().as_bytes()) {
                build.source = "prop".into();
                if build.builder_id.is_empty() {
                    build.builder_id = "https://ci.example.com/b".into();
                }
                check_accepted(&build);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_build_webhook(&body);
        }

        #[test]
        fn valid_webhooks_with_any_timestamp_never_panic(started in timestamp(), finished in timestamp()) {
            let mut v = tests::sample();
            v["startedOn"] = started.into();
            v["finishedOn"] = finished.into();
            if let Ok(mut build) = parse_build_webhook(v.to_string().as_bytes()) {
                build.source = "prop".into();
                check_accepted(&build);
            }
        }
    }
}
