//! GitLab `Pipeline Hook` webhooks (`X-Gitlab-Event: Pipeline Hook`, secret in `X-Gitlab-Token`
//! or a Standard Webhooks signature; `Idempotency-Key` is the delivery id). A pipeline in a final
//! state (`success` → attested; `failed` → recorded as failed; `canceled`, `skipped` → recorded as
//! aborted) is an execution keyed by the pipeline id; every other status (`created`, `pending`,
//! `running`, `manual`, …) and every other event is ignored. GitLab writes times as
//! `2016-08-12 15:23:28 UTC`; the statement carries them as RFC 3339.

use serde_json::Value;
use time::OffsetDateTime;

use super::{Context, Event, check_times, invalid, required, text};
use crate::domain::BuildStatus;
use crate::ingest::build_webhook::WebhookError;

pub const TOKEN_HEADER: &str = "x-gitlab-token";
pub const EVENT_HEADER: &str = "x-gitlab-event";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// `buildType` of executions reported by a GitLab pipeline.
pub const BUILD_TYPE: &str = "https://attestd.dev/buildtypes/gitlab-ci-pipeline/v1";

pub fn interpret(ctx: &Context<'_>, body: &Value) -> Result<Event, WebhookError> {
    let event = ctx.header(EVENT_HEADER).unwrap_or("");
    if event != "Pipeline Hook" || text(body, &["object_kind"]) != Some("pipeline") {
        return Ok(Event::Ignored(format!(
            "GitLab event '{event}' does not report a finished pipeline"
        )));
    }
    let attrs = body
        .get("object_attributes")
        .ok_or_else(|| invalid("object_attributes", "is required"))?;
    let status = match required(attrs, &["status"])? {
        "success" => BuildStatus::Succeeded,
        "failed" => BuildStatus::Failed,
        "canceled" | "skipped" => BuildStatus::Aborted,
        other => {
            return Ok(Event::Ignored(format!(
                "pipeline status '{other}' is not final"
            )));
        }
    };
    let id = attrs
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("object_attributes.id", "must be a number"))?;
    let project = body.get("project").unwrap_or(&Value::Null);
    let mut build = ctx.build(status);
    build.pipeline_execution_id = id.to_string();
    build.pipeline_identifier = text(project, &["path_with_namespace"])
        .or_else(|| text(attrs, &["name"]))
        .unwrap_or("pipeline")
        .to_owned();
    let web_url = text(project, &["web_url"]).unwrap_or_default();
    build.repository_url = web_url.to_owned();
    let reference = text(attrs, &["ref"]).unwrap_or_default();
    build.branch = if attrs.get("tag").and_then(Value::as_bool) == Some(true) {
        format!("refs/tags/{reference}")
    } else {
        reference.to_owned()
    };
    build.commit_sha = required(attrs, &["sha"])?.to_owned();
    build.trigger_type = text(attrs, &["source"]).unwrap_or("pipeline").to_owned();
    build.triggered_by = text(body, &["user", "username"])
        .unwrap_or_default()
        .to_owned();
    if let Some(created) = text(attrs, &["created_at"]) {
        build.started_on = gitlab_time(created, "object_attributes.created_at")?;
    }
    if let Some(finished) = text(attrs, &["finished_at"]) {
        build.finished_on = gitlab_time(finished, "object_attributes.finished_at")?;
    }
    check_times(&build, "object_attributes.finished_at")?;
    build.build_type = BUILD_TYPE.to_owned();
    build.invocation_id = text(attrs, &["url"])
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{web_url}/-/pipelines/{id}"));
    build.delivery_id = ctx
        .header(IDEMPOTENCY_HEADER)
        .or_else(|| ctx.header(crate::ingest::standard_webhooks::ID_HEADER))
        .map(str::to_owned);
    Ok(Event::Build {
        build: Box::new(build),
        problems: Vec::new(),
        repository: text(project, &["path_with_namespace"]).map(str::to_owned),
    })
}

/// `2016-08-12 15:23:28 UTC` (GitLab's webhook format), or RFC 3339 as newer versions may send.
fn gitlab_time(value: &str, field: &str) -> Result<OffsetDateTime, WebhookError> {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    match time::PrimitiveDateTime::parse(value, &format) {
        Ok(t) => Ok(t.assume_utc()),
        Err(_) => super::rfc3339(value, field),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::super::{Event, SourceKind};
    use crate::domain::BuildStatus;

    fn run(file: &str) -> Event {
        let body = fixtures::load(&format!("gitlab/{file}"));
        let headers = [
            (super::EVENT_HEADER, "Pipeline Hook"),
            (super::IDEMPOTENCY_HEADER, "5f0b2d0e-idem"),
        ];
        fixtures::interpret_as(SourceKind::Gitlab, &body, &headers).unwrap()
    }

    #[test]
    fn a_successful_pipeline_is_a_build_with_rfc3339_times() {
        let Event::Build { build, .. } = run("pipeline.success.docs.json") else {
            panic!("not a build")
        };
        assert_eq!(build.pipeline_execution_id, "31");
        assert_eq!(build.status, BuildStatus::Succeeded);
        assert_eq!(build.commit_sha, "bcbb5ec396a2c0f828686f14fac9b80b780504f2");
        assert_eq!(
            build.started_on,
            time::macros::datetime!(2016-08-12 15:23:28 UTC)
        );
        assert_eq!(
            build.finished_on,
            time::macros::datetime!(2016-08-12 15:26:29 UTC)
        );
        assert_eq!(
            build.invocation_id,
            "http://example.com/gitlab-org/gitlab-test/-/pipelines/31"
        );
        assert_eq!(build.delivery_id.as_deref(), Some("5f0b2d0e-idem"));
        let statement = crate::domain::provenance::statement(&build);
        assert_eq!(
            statement.predicate.run_details.metadata.started_on,
            "2016-08-12T15:23:28Z"
        );
    }

    #[test]
    fn final_statuses_are_recorded_and_others_store_nothing() {
        let Event::Build { build, .. } = run("pipeline.failed.json") else {
            panic!("failed pipeline is recorded")
        };
        assert_eq!(build.status, BuildStatus::Failed);
        let Event::Build { build, .. } = run("pipeline.success.json") else {
            panic!("older GitLab's success is a build")
        };
        // Older GitLab sends no url: it is built from the project's.
        assert_eq!(
            build.invocation_id,
            "http://localhost:3000/manland/webhook/-/pipelines/62"
        );
        for file in ["pipeline.running.json", "pipeline.pending.json"] {
            assert!(matches!(run(file), Event::Ignored(_)), "{file}");
        }
    }
}
