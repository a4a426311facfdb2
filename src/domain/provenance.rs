//! SLSA v1 provenance as an in-toto Statement v1, built from a [`BuildCompleted`].
//!
//! The statement is serialized exactly once ([`statement_bytes`]); those bytes are stored, signed
//! and served unchanged, so nothing downstream may re-serialize them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::build::{Artifact, BuildCompleted};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// The build type attestd records: a CI build reported through an attestd webhook.
pub const BUILD_TYPE: &str = "https://attestd.dev/buildtypes/ci-webhook/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: ExternalParameters,
    pub internal_parameters: InternalParameters,
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalParameters {
    pub code_metadata: CodeMetadata,
    pub trigger_metadata: TriggerMetadata,
    pub build_metadata: BuildMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeMetadata {
    #[serde(rename = "repositoryURL")]
    pub repository_url: String,
    pub branch: String,
    pub commit_sha: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerMetadata {
    pub trigger_type: String,
    pub triggered_by: String,
}

/// `image` names the first (primary) artifact, as in Harness provenance; `artifacts` lists all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildMetadata {
    pub image: String,
    pub artifacts: Vec<ArtifactParameter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactParameter {
    pub image: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InternalParameters {
    pub pipeline_execution_id: String,
    pub account_id: String,
    pub pipeline_identifier: String,
    /// The authenticated webhook source that reported the build (`[[webhook.sources]]` name),
    /// so a policy can require one. Absent from statements written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_source: Option<String>,
    /// The CI's delivery id, when it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    pub uri: String,
    pub digest: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: BuildRunMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
    pub version: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRunMetadata {
    pub invocation_id: String,
    pub started_on: String,
    pub finished_on: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    // Formatting a UTC timestamp with the well-known RFC 3339 description cannot fail for years
    // 0..=9999, which the webhook parser already guarantees.
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The full git ref of a reported branch: `main` is `refs/heads/main`; a ref that is already
/// full (`refs/tags/v1`, `refs/pull/7/head`) is kept as it is.
fn git_ref(branch: &str) -> String {
    if branch.starts_with("refs/") {
        branch.to_owned()
    } else {
        format!("refs/heads/{branch}")
    }
}

/// The source checkout, when the CI named both the repository and the commit (Harness
/// notifications name neither).
fn resolved_dependencies(build: &BuildCompleted) -> Vec<ResourceDescriptor> {
    if build.repository_url.is_empty() || build.commit_sha.is_empty() {
        return Vec::new();
    }
    let uri = if build.branch.is_empty() {
        format!("git+{}", build.repository_url)
    } else {
        format!("git+{}@{}", build.repository_url, git_ref(&build.branch))
    };
    vec![ResourceDescriptor {
        uri,
        digest: BTreeMap::from([("gitCommit".to_owned(), build.commit_sha.clone())]),
    }]
}

/// The SLSA v1 provenance statement for `build`.
pub fn statement(build: &BuildCompleted) -> Statement {
    with_subjects(template(build), &build.artifacts)
}

/// The statement for `build` before its images are known: no subjects, no artifacts. Stored for a
/// build whose images come from templates, and completed by [`with_subjects`] once their digests
/// are resolved; the result is what [`statement`] gives for the build with those artifacts.
pub fn template(build: &BuildCompleted) -> Statement {
    Statement {
        type_: STATEMENT_TYPE.to_owned(),
        subject: Vec::new(),
        predicate_type: SLSA_PROVENANCE_V1.to_owned(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: build.build_type.clone(),
                external_parameters: ExternalParameters {
                    code_metadata: CodeMetadata {
                        repository_url: build.repository_url.clone(),
                        branch: build.branch.clone(),
                        commit_sha: build.commit_sha.clone(),
                    },
                    trigger_metadata: TriggerMetadata {
                        trigger_type: build.trigger_type.clone(),
                        triggered_by: build.triggered_by.clone(),
                    },
                    build_metadata: BuildMetadata {
                        image: String::new(),
                        artifacts: Vec::new(),
                    },
                },
                internal_parameters: InternalParameters {
                    pipeline_execution_id: build.pipeline_execution_id.clone(),
                    account_id: build.account.to_string(),
                    pipeline_identifier: build.pipeline_identifier.clone(),
                    webhook_source: Some(build.source.clone()),
                    delivery_id: build.delivery_id.clone(),
                },
                resolved_dependencies: resolved_dependencies(build),
            },
            run_details: RunDetails {
                builder: Builder {
                    id: build.builder_id.clone(),
                    version: build.builder_version.clone(),
                },
                metadata: BuildRunMetadata {
                    invocation_id: build.invocation_id.clone(),
                    started_on: rfc3339(build.started_on),
                    finished_on: rfc3339(build.finished_on),
                },
            },
        },
    }
}

/// `statement` with one subject per artifact (replacing any), and the artifacts listed in
/// `buildMetadata`, the first as its `image`.
pub fn with_subjects(mut statement: Statement, artifacts: &[Artifact]) -> Statement {
    statement.subject = artifacts
        .iter()
        .map(|a| Subject {
            name: a.image.name(),
            digest: BTreeMap::from([("sha256".to_owned(), a.digest.hex().to_owned())]),
        })
        .collect();
    let listed: Vec<ArtifactParameter> = artifacts
        .iter()
        .map(|a| ArtifactParameter {
            image: a.image.to_string(),
            digest: a.digest.to_string(),
        })
        .collect();
    let metadata = &mut statement
        .predicate
        .build_definition
        .external_parameters
        .build_metadata;
    metadata.image = listed.first().map(|a| a.image.clone()).unwrap_or_default();
    metadata.artifacts = listed;
    statement
}

/// The statement for `build`, serialized once. These bytes are what gets stored and signed.
pub fn statement_bytes(build: &BuildCompleted) -> Vec<u8> {
    to_bytes(&statement(build))
}

/// A statement serialized: the statement that is signed is serialized exactly once, by this.
pub fn to_bytes(statement: &Statement) -> Vec<u8> {
    // Serializing plain structs of strings and maps into a Vec cannot fail.
    serde_json::to_vec(statement).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::BuildStatus;
    use time::macros::datetime;

    pub(crate) fn build() -> BuildCompleted {
        BuildCompleted {
            account: "acme".parse().unwrap(),
            source: "acme-ci".into(),
            pipeline_identifier: "build_and_push".into(),
            pipeline_execution_id: "exec-42".into(),
            repository_url: "https://github.com/acme/app".into(),
            branch: "main".into(),
            commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
            trigger_type: "WEBHOOK".into(),
            triggered_by: "alice@example.com".into(),
            builder_id: "https://ci.example.com/runners/linux".into(),
            builder_version: BTreeMap::from([("ci".into(), "1.2.3".into())]),
            started_on: datetime!(2026-11-25 10:00:00 +01:00),
            finished_on: datetime!(2026-11-25 09:05:00 UTC),
            status: BuildStatus::Succeeded,
            artifacts: vec![
                Artifact {
                    image: "registry.example.com/acme/app:1.0".parse().unwrap(),
                    digest: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
                },
                Artifact {
                    image: "registry.example.com/acme/sidecar".parse().unwrap(),
                    digest: format!("sha256:{}", "cd".repeat(32)).parse().unwrap(),
                },
            ],
            build_type: BUILD_TYPE.into(),
            invocation_id: "exec-42".into(),
            delivery_id: None,
        }
    }

    #[test]
    fn statement_has_one_subject_per_artifact_with_hex_digest() {
        let v: serde_json::Value = serde_json::from_slice(&statement_bytes(&build())).unwrap();
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["predicateType"], SLSA_PROVENANCE_V1);
        assert_eq!(v["subject"][0]["name"], "registry.example.com/acme/app");
        assert_eq!(v["subject"][0]["digest"]["sha256"], "ab".repeat(32));
        assert_eq!(v["subject"][1]["digest"]["sha256"], "cd".repeat(32));
        assert_eq!(v["subject"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn predicate_uses_slsa_v1_field_names() {
        let v: serde_json::Value = serde_json::from_slice(&statement_bytes(&build())).unwrap();
        let p = &v["predicate"];
        let ext = &p["buildDefinition"]["externalParameters"];
        assert_eq!(
            ext["codeMetadata"]["repositoryURL"],
            "https://github.com/acme/app"
        );
        assert_eq!(ext["triggerMetadata"]["triggeredBy"], "alice@example.com");
        assert_eq!(
            ext["buildMetadata"]["image"],
            "registry.example.com/acme/app:1.0"
        );
        assert_eq!(
            p["buildDefinition"]["resolvedDependencies"][0]["uri"],
            "git+https://github.com/acme/app@refs/heads/main"
        );
        assert_eq!(
            p["runDetails"]["metadata"]["startedOn"],
            "2026-11-25T09:00:00Z"
        );
        assert_eq!(p["runDetails"]["metadata"]["invocationId"], "exec-42");
        assert_eq!(
            p["buildDefinition"]["internalParameters"]["webhookSource"],
            "acme-ci"
        );
        assert!(p["runDetails"].get("runDetailsMetadata").is_none());
    }

    #[test]
    fn tag_and_other_full_refs_are_kept_in_resolved_dependencies() {
        let mut b = build();
        b.branch = "refs/tags/v1".into();
        let v: serde_json::Value = serde_json::from_slice(&statement_bytes(&b)).unwrap();
        assert_eq!(
            v["predicate"]["buildDefinition"]["resolvedDependencies"][0]["uri"],
            "git+https://github.com/acme/app@refs/tags/v1"
        );
    }

    #[test]
    fn statements_written_before_the_source_was_recorded_still_parse() {
        let mut v: serde_json::Value = serde_json::from_slice(&statement_bytes(&build())).unwrap();
        v["predicate"]["buildDefinition"]["internalParameters"]
            .as_object_mut()
            .unwrap()
            .remove("webhookSource");
        let old: Statement = serde_json::from_value(v).unwrap();
        assert_eq!(
            old.predicate
                .build_definition
                .internal_parameters
                .webhook_source,
            None
        );
    }

    #[test]
    fn a_template_completed_with_the_artifacts_is_the_statement_of_the_build_with_them() {
        let full = build();
        let mut without = full.clone();
        without.artifacts.clear();
        let stored = serde_json::to_vec(&template(&without)).unwrap();
        let template: Statement = serde_json::from_slice(&stored).unwrap();
        assert!(template.subject.is_empty());
        assert_eq!(
            to_bytes(&with_subjects(template, &full.artifacts)),
            statement_bytes(&full),
            "byte for byte"
        );
    }
}
