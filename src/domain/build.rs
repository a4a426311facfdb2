//! A finished CI build, normalized from whichever webhook reported it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ids::{AccountId, Digest, IdError};

/// What every ingest source produces: the facts provenance is generated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCompleted {
    pub account: AccountId,
    /// The authenticated webhook source that reported the build (empty until admitted).
    pub source: String,
    pub pipeline_identifier: String,
    pub pipeline_execution_id: String,
    pub repository_url: String,
    pub branch: String,
    pub commit_sha: String,
    pub trigger_type: String,
    pub triggered_by: String,
    /// As claimed by the webhook (empty: none claimed), then as granted by the source.
    pub builder_id: String,
    pub builder_version: BTreeMap<String, String>,
    pub started_on: OffsetDateTime,
    pub finished_on: OffsetDateTime,
    pub status: BuildStatus,
    pub artifacts: Vec<Artifact>,
    /// The SLSA `buildType` of the webhook kind that reported the build.
    pub build_type: String,
    /// The CI's own identifier of the run (its URL where it has one): `invocationId`.
    pub invocation_id: String,
    /// The CI's delivery id (e.g. `X-GitHub-Delivery`), when it sends one.
    pub delivery_id: Option<String>,
}

impl BuildCompleted {
    /// The fields (as the webhook schema names them) holding a NUL character (U+0000), which
    /// PostgreSQL's `text` and `jsonb` cannot store, so no backend accepts it.
    pub fn fields_with_nul(&self) -> Vec<String> {
        let has_nul = |s: &str| s.contains('\0');
        let mut fields: Vec<String> = [
            ("source", self.source.as_str()),
            ("pipelineIdentifier", &self.pipeline_identifier),
            ("pipelineExecutionId", &self.pipeline_execution_id),
            ("repositoryURL", &self.repository_url),
            ("branch", &self.branch),
            ("commitSha", &self.commit_sha),
            ("triggerType", &self.trigger_type),
            ("triggeredBy", &self.triggered_by),
            ("builderId", &self.builder_id),
            ("buildType", &self.build_type),
            ("invocationId", &self.invocation_id),
            (
                "deliveryId",
                self.delivery_id.as_deref().unwrap_or_default(),
            ),
        ]
        .into_iter()
        .filter(|(_, value)| has_nul(value))
        .map(|(field, _)| field.to_owned())
        .collect();
        fields.extend(
            self.builder_version
                .iter()
                .filter(|(k, v)| has_nul(k) || has_nul(v))
                .map(|(k, _)| format!("builderVersion.{}", k.replace('\0', "\\u0000"))),
        );
        fields.extend(
            self.artifacts
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    has_nul(&a.image.registry)
                        || has_nul(&a.image.repository)
                        || a.image.tag.as_deref().is_some_and(has_nul)
                })
                .map(|(i, _)| format!("artifacts[{i}].image")),
        );
        fields
    }
}

/// How the build ended. Only `Succeeded` builds are attested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Succeeded,
    Failed,
    Aborted,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }
}

impl FromStr for BuildStatus {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "aborted" => Ok(Self::Aborted),
            _ => Err(IdError(
                "must be one of 'succeeded', 'failed', 'aborted'".into(),
            )),
        }
    }
}

/// One image the build pushed, by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub image: ImageRef,
    pub digest: Digest,
}

/// `registry-host[:port]/repository[:tag]`. The registry host is always explicit: attestd never
/// guesses Docker Hub, because the host decides where credentials are sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

impl ImageRef {
    /// `registry/repository`, the name used as the in-toto subject.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('@') {
            return Err(IdError(
                "must not carry a digest; give it in 'digest' instead".into(),
            ));
        }
        let (registry, rest) = s
            .split_once('/')
            .ok_or_else(|| IdError("must be 'registry-host/repository[:tag]'".into()))?;
        if !is_registry_host(registry) {
            return Err(IdError(format!(
                "must start with a registry host (e.g. 'registry.example.com/{s}'); '{registry}' is not one"
            )));
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (rest, None),
        };
        if !is_repository_name(repository) {
            return Err(IdError(format!(
                "repository '{repository}' is not a valid OCI repository name"
            )));
        }
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(IdError(format!("tag '{tag}' is not a valid OCI tag")));
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
        })
    }
}

/// A host as Docker reference grammar recognises one: has a dot or a port, or is `localhost`.
fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-']);
    port_ok && host_ok && (host.contains('.') || port.is_some() || host == "localhost")
}

/// OCI distribution spec: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn is_repository_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/').all(|component| {
            let bytes = component.as_bytes();
            !bytes.is_empty()
                && bytes
                    .first()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && bytes
                    .last()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && bytes.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && !component.contains("..")
                && !component.contains("___")
        })
}

/// OCI tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ref_splits_registry_repository_and_tag() {
        let r: ImageRef = "127.0.0.1:5000/team/app:v1.2".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.name(), "127.0.0.1:5000/team/app");
        let r: ImageRef = "registry.example.com/app".parse().unwrap();
        assert_eq!(r.tag, None);
    }

    #[test]
    fn image_ref_requires_an_explicit_registry_host() {
        for bad in [
            "library/nginx",
            "nginx",
            "registry.example.com/App",
            "registry.example.com/app@sha256:00",
            "registry.example.com/",
            "registry.example.com/app:",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad} must be refused");
        }
        assert!("localhost/app".parse::<ImageRef>().is_ok());
    }
}
