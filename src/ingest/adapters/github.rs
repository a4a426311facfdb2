//! GitHub webhooks (`X-Hub-Signature-256`, `X-GitHub-Event`, `X-GitHub-Delivery`):
//! - `ping` → 200;
//! - `workflow_run` with `action: completed` → an execution keyed `{run id}/{run attempt}`,
//!   attested when `conclusion` is `success`, recorded as failed (`failure`, `timed_out`,
//!   `startup_failure`, `action_required`, `stale`, `neutral`) or aborted (`cancelled`,
//!   `skipped`) otherwise; other actions are ignored. The run carries no image: images come from
//!   the source's configuration;
//! - `registry_package` / `package` with `action: published` for a container → an execution of
//!   that image, keyed by the package version, whose digest is `package_version.version` — and only
//!   that field: others that look like digests (`container_metadata.*.digest`) are not OCI
//!   digests. Any other package or action is ignored.

use serde_json::Value;
use time::OffsetDateTime;

use super::{Context, Event, check_times, invalid, required, rfc3339, text};
use crate::domain::{Artifact, BuildStatus, Digest, ImageRef};
use crate::ingest::build_webhook::WebhookError;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// `buildType` of executions reported by a `workflow_run`.
pub const WORKFLOW_BUILD_TYPE: &str = "https://attestd.dev/buildtypes/github-actions-workflow/v1";
/// `buildType` of executions reported by a published container package.
pub const PACKAGE_BUILD_TYPE: &str = "https://attestd.dev/buildtypes/github-package-published/v1";

pub fn interpret(ctx: &Context<'_>, body: &Value) -> Result<Event, WebhookError> {
    let event = ctx
        .header(EVENT_HEADER)
        .ok_or_else(|| WebhookError::Malformed("X-GitHub-Event is missing".into()))?;
    match event {
        "ping" => Ok(Event::Ping),
        "workflow_run" => workflow_run(ctx, body),
        "registry_package" | "package" => package(ctx, body),
        other => Ok(Event::Ignored(format!(
            "GitHub event '{other}' does not report a finished build"
        ))),
    }
}

fn workflow_run(ctx: &Context<'_>, body: &Value) -> Result<Event, WebhookError> {
    let action = text(body, &["action"]).unwrap_or("");
    if action != "completed" {
        return Ok(Event::Ignored(format!(
            "workflow_run action '{action}': the run has not completed"
        )));
    }
    let run = body
        .get("workflow_run")
        .ok_or_else(|| invalid("workflow_run", "is required"))?;
    let status = match required(run, &["conclusion"])? {
        "success" => BuildStatus::Succeeded,
        "cancelled" | "skipped" => BuildStatus::Aborted,
        _ => BuildStatus::Failed,
    };
    let id = run
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("workflow_run.id", "must be a number"))?;
    let attempt = run.get("run_attempt").and_then(Value::as_u64).unwrap_or(1);
    let mut build = ctx.build(status);
    build.pipeline_execution_id = format!("{id}/{attempt}");
    build.pipeline_identifier = text(run, &["path"])
        .or_else(|| text(run, &["name"]))
        .unwrap_or("workflow")
        .to_owned();
    build.repository_url = text(body, &["repository", "html_url"])
        .or_else(|| text(run, &["repository", "html_url"]))
        .unwrap_or_default()
        .to_owned();
    build.branch = text(run, &["head_branch"]).unwrap_or_default().to_owned();
    build.commit_sha = required(run, &["head_sha"])?.to_owned();
    build.trigger_type = text(run, &["event"]).unwrap_or("workflow_run").to_owned();
    build.triggered_by = text(run, &["triggering_actor", "login"])
        .or_else(|| text(run, &["actor", "login"]))
        .unwrap_or_default()
        .to_owned();
    if let Some(started) = text(run, &["run_started_at"]) {
        build.started_on = rfc3339(started, "workflow_run.run_started_at")?;
    }
    // A run has no `completed_at`; at `action: completed`, `updated_at` is when it completed.
    if let Some(finished) = text(run, &["updated_at"]) {
        build.finished_on = rfc3339(finished, "workflow_run.updated_at")?;
    }
    check_times(&build, "workflow_run.updated_at")?;
    build.build_type = WORKFLOW_BUILD_TYPE.to_owned();
    build.invocation_id = text(run, &["html_url"])
        .map(str::to_owned)
        .unwrap_or_else(|| build.pipeline_execution_id.clone());
    build.delivery_id = ctx.header(DELIVERY_HEADER).map(str::to_owned);
    Ok(Event::Build {
        build: Box::new(build),
        problems: Vec::new(),
        repository: full_name(body, run),
    })
}

/// `repository.full_name` (`octo-org/octo-repo`), of the delivery or else of the run.
fn full_name(body: &Value, run: &Value) -> Option<String> {
    text(body, &["repository", "full_name"])
        .or_else(|| text(run, &["repository", "full_name"]))
        .map(str::to_owned)
}

fn package(ctx: &Context<'_>, body: &Value) -> Result<Event, WebhookError> {
    let action = text(body, &["action"]).unwrap_or("");
    let package = body
        .get("registry_package")
        .or_else(|| body.get("package"))
        .ok_or_else(|| invalid("registry_package", "is required"))?;
    // The registry's type is the reliable signal: GitHub's published samples carry
    // `package_type: npm` on containers and `ecosystem: docker` on an npm package.
    let is_container = text(package, &["registry", "type"])
        .or_else(|| text(package, &["package_type"]))
        .is_some_and(|t| t.eq_ignore_ascii_case("container") || t.eq_ignore_ascii_case("docker"));
    if !is_container {
        return Ok(Event::Ignored(
            "the package is not a container image".into(),
        ));
    }
    if action != "published" {
        return Ok(Event::Ignored(format!(
            "package action '{action}': only published containers are attested"
        )));
    }
    let version = package
        .get("package_version")
        .ok_or_else(|| invalid("package_version", "is required"))?;
    let digest: Digest = required(version, &["version"])?.parse().map_err(|_| {
        invalid(
            "package_version.version",
            "must be an OCI digest sha256:<64 hex>",
        )
    })?;
    let url = required(version, &["package_url"])?;
    let image: ImageRef = url
        .trim_end_matches(':')
        .parse()
        .map_err(|e| invalid("package_version.package_url", &format!("{e}")))?;
    let labels = version
        .get("container_metadata")
        .and_then(|m| m.get("labels"));
    let label = |name: &str| labels.and_then(|l| text(l, &["all_labels", name]));
    let mut build = ctx.build(BuildStatus::Succeeded);
    let version_id = version
        .get("id")
        .and_then(Value::as_u64)
        .map(|id| id.to_string())
        .unwrap_or_else(|| digest.to_string());
    build.pipeline_execution_id = format!("package-version/{version_id}");
    build.pipeline_identifier = format!(
        "package/{}",
        text(package, &["name"]).unwrap_or(image.repository.as_str())
    );
    build.repository_url = label("org.opencontainers.image.source")
        .or_else(|| text(body, &["repository", "html_url"]))
        .unwrap_or_default()
        .to_owned();
    build.branch = text(version, &["target_commitish"])
        .unwrap_or_default()
        .to_owned();
    build.commit_sha = label("org.opencontainers.image.revision")
        .unwrap_or_default()
        .to_owned();
    build.trigger_type = "package_published".into();
    build.triggered_by = text(body, &["sender", "login"])
        .unwrap_or_default()
        .to_owned();
    // Published versions carry the zero time (0001-01-01) in GitHub's samples; times must be the
    // same on every delivery of the version (they are part of its fingerprint), so they come from
    // the image's `created` label and the package's own times, never from the receipt.
    let time_of = |v: Option<&str>, field: &str| -> Result<Option<OffsetDateTime>, WebhookError> {
        match v {
            Some(t) => Ok(Some(rfc3339(t, field)?).filter(|t| t.year() > 1970)),
            None => Ok(None),
        }
    };
    let started = [
        time_of(
            label("org.opencontainers.image.created"),
            "container_metadata.labels",
        )?,
        time_of(text(version, &["created_at"]), "package_version.created_at")?,
        time_of(
            text(package, &["created_at"]),
            "registry_package.created_at",
        )?,
    ]
    .into_iter()
    .flatten()
    .next();
    let finished = [
        time_of(text(version, &["updated_at"]), "package_version.updated_at")?,
        time_of(
            text(package, &["updated_at"]),
            "registry_package.updated_at",
        )?,
    ]
    .into_iter()
    .flatten()
    .next();
    if let Some(started) = started.or(finished) {
        build.started_on = started;
        build.finished_on = finished.unwrap_or(started).max(started);
    }
    build.build_type = PACKAGE_BUILD_TYPE.to_owned();
    build.invocation_id = text(version, &["html_url"])
        .map(str::to_owned)
        .unwrap_or_else(|| build.pipeline_execution_id.clone());
    build.delivery_id = ctx.header(DELIVERY_HEADER).map(str::to_owned);
    build.artifacts = vec![Artifact { image, digest }];
    Ok(Event::Build {
        build: Box::new(build),
        problems: Vec::new(),
        repository: full_name(body, package),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{self, IMAGE, digest};
    use super::super::{Event, SourceKind};
    use crate::domain::BuildStatus;

    fn run(event: &str, file: &str) -> Event {
        let body = fixtures::load(&format!("github/{file}"));
        let headers = [
            (super::EVENT_HEADER, event),
            (super::DELIVERY_HEADER, "d-1"),
        ];
        fixtures::interpret_as(SourceKind::Github, &body, &headers).unwrap()
    }

    #[test]
    fn a_completed_successful_run_is_a_build_keyed_by_run_and_attempt() {
        let Event::Build {
            build, repository, ..
        } = run("workflow_run", "workflow_run.completed.success.json")
        else {
            panic!("not a build")
        };
        assert_eq!(build.pipeline_execution_id, "289782451/1");
        assert_eq!(build.status, BuildStatus::Succeeded);
        assert_eq!(build.commit_sha, "3484a3fb816e0859fd6e1cea078d76385ff50625");
        assert_eq!(build.branch, "master");
        assert_eq!(
            build.repository_url,
            "https://github.com/octo-org/octo-repo"
        );
        assert_eq!(
            build.invocation_id,
            "https://github.com/octo-org/octo-repo/actions/runs/289782451"
        );
        assert_eq!(build.delivery_id.as_deref(), Some("d-1"));
        assert!(build.artifacts.is_empty(), "a run names no image");
        assert_eq!(repository.as_deref(), Some("octo-org/octo-repo"));
    }

    #[test]
    fn runs_that_have_not_completed_and_pings_store_nothing() {
        for file in [
            "workflow_run.requested.json",
            "workflow_run.requested.with-conclusion.json",
        ] {
            assert!(
                matches!(run("workflow_run", file), Event::Ignored(_)),
                "{file}"
            );
        }
        assert!(matches!(run("ping", "ping.json"), Event::Ping));
        assert!(matches!(run("push", "ping.json"), Event::Ignored(_)));
    }

    #[test]
    fn failed_and_cancelled_conclusions_are_recorded_not_attested() {
        // No failed run is published in octokit's examples: the success sample, with its
        // conclusion changed (tests/fixtures/webhooks/SOURCES.md).
        for (conclusion, status) in [
            ("failure", BuildStatus::Failed),
            ("timed_out", BuildStatus::Failed),
            ("cancelled", BuildStatus::Aborted),
        ] {
            let mut body = fixtures::load("github/workflow_run.completed.success.json");
            body["workflow_run"]["conclusion"] = conclusion.into();
            let headers = [(super::EVENT_HEADER, "workflow_run")];
            let Ok(Event::Build { build, .. }) =
                fixtures::interpret_as(SourceKind::Github, &body, &headers)
            else {
                panic!("{conclusion}")
            };
            assert_eq!(build.status, status, "{conclusion}");
        }
    }

    #[test]
    fn a_published_container_is_a_build_of_its_digest_and_nothing_else() {
        for (event, file) in [
            (
                "registry_package",
                "registry_package.published.container.json",
            ),
            ("package", "package.published.container.json"),
        ] {
            let Event::Build { build, .. } = run(event, file) else {
                panic!("{file}: not a build")
            };
            assert_eq!(build.artifacts.len(), 1, "{file}");
            assert_eq!(build.artifacts[0].digest.to_string(), digest(1), "{file}");
            assert_eq!(build.artifacts[0].image.name(), IMAGE, "{file}");
            assert_eq!(build.status, BuildStatus::Succeeded);
            assert_eq!(build.commit_sha, "6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b");
        }
        assert!(matches!(
            run("package", "package.published.npm.json"),
            Event::Ignored(_)
        ));
    }

    #[test]
    fn a_digest_that_is_not_an_oci_digest_is_refused() {
        let mut body = fixtures::load("github/registry_package.published.container.json");
        // What container_metadata.tag.digest holds: sha256: and 40 hex.
        body["registry_package"]["package_version"]["version"] =
            format!("sha256:{}", "a".repeat(40)).into();
        let headers = [(super::EVENT_HEADER, "registry_package")];
        let err = fixtures::interpret_as(SourceKind::Github, &body, &headers).unwrap_err();
        assert!(
            format!("{err:?}").contains("package_version.version"),
            "{err:?}"
        );
    }
}
