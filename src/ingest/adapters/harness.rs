//! Harness pipeline notifications (method Webhook; body `{"eventData": …}`). Harness signs
//! nothing: configure a custom header `Authorization: Bearer <secret>` in the notification (or
//! put a Standard Webhooks signer in front). `PipelineSuccess` → attested; `PipelineFailed` →
//! recorded as failed; `PipelineEnd` by its `nodeStatus` (`completed`/`succeeded` → attested,
//! `aborted` → aborted, `failed`/`expired`/`rejected` → failed; `ended`, which newer Harness sends
//! for every outcome, is ignored: subscribe to PipelineSuccess and PipelineFailed instead). The
//! execution key is `planExecutionId`; `startTs`/`endTs` are Unix seconds. The notification names
//! no repository or commit, so the provenance has none.

use serde_json::Value;
use time::OffsetDateTime;

use super::{Context, Event, check_times, invalid, required, text};
use crate::domain::BuildStatus;
use crate::ingest::build_webhook::WebhookError;

/// `buildType` of executions reported by a Harness pipeline notification.
pub const BUILD_TYPE: &str = "https://attestd.dev/buildtypes/harness-pipeline/v1";

pub fn interpret(ctx: &Context<'_>, body: &Value) -> Result<Event, WebhookError> {
    let data = body
        .get("eventData")
        .ok_or_else(|| invalid("eventData", "is required"))?;
    let event = text(data, &["eventType"]).unwrap_or("");
    let node = text(data, &["nodeStatus"])
        .unwrap_or("")
        .to_ascii_lowercase();
    let status = match (event, node.as_str()) {
        ("PipelineSuccess", _) => BuildStatus::Succeeded,
        ("PipelineFailed", _) => BuildStatus::Failed,
        ("PipelineEnd", "completed" | "succeeded" | "success") => BuildStatus::Succeeded,
        ("PipelineEnd", "aborted") => BuildStatus::Aborted,
        ("PipelineEnd", "failed" | "expired" | "rejected" | "errored") => BuildStatus::Failed,
        ("PipelineEnd", other) => {
            return Ok(Event::Ignored(format!(
                "PipelineEnd with nodeStatus '{other}' does not say how the pipeline ended; \
                 notify on PipelineSuccess and PipelineFailed"
            )));
        }
        (other, _) => {
            return Ok(Event::Ignored(format!(
                "Harness event '{other}' does not report a finished pipeline"
            )));
        }
    };
    let mut build = ctx.build(status);
    build.pipeline_execution_id = required(data, &["planExecutionId"])
        .map_err(|_| invalid("eventData.planExecutionId", "is required"))?
        .to_owned();
    build.pipeline_identifier = text(data, &["pipelineIdentifier"])
        .unwrap_or("pipeline")
        .to_owned();
    build.trigger_type = text(data, &["triggeredBy", "triggerType"])
        .unwrap_or("harness")
        .to_owned();
    build.triggered_by = text(data, &["triggeredBy", "email"])
        .or_else(|| text(data, &["triggeredBy", "name"]))
        .unwrap_or_default()
        .to_owned();
    for (field, slot) in [
        ("startTs", &mut build.started_on),
        ("endTs", &mut build.finished_on),
    ] {
        if let Some(v) = data.get(field).filter(|v| !v.is_null()) {
            *slot = epoch_seconds(v).ok_or_else(|| {
                invalid(
                    &format!("eventData.{field}"),
                    "must be Unix seconds in years 1970 to 9999",
                )
            })?;
        }
    }
    check_times(&build, "eventData.endTs")?;
    build.build_type = BUILD_TYPE.to_owned();
    build.invocation_id = text(data, &["executionUrl"])
        .map(str::to_owned)
        .unwrap_or_else(|| build.pipeline_execution_id.clone());
    build.delivery_id = ctx
        .header(crate::ingest::standard_webhooks::ID_HEADER)
        .map(str::to_owned);
    Ok(Event::Build {
        build: Box::new(build),
        problems: Vec::new(),
        repository: None,
    })
}

fn epoch_seconds(v: &Value) -> Option<OffsetDateTime> {
    let seconds = v.as_i64().or_else(|| v.as_str()?.parse().ok())?;
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .filter(|t| (1970..=9999).contains(&t.year()))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::super::{Event, SourceKind};
    use crate::domain::BuildStatus;

    fn run(file: &str) -> Event {
        let body = fixtures::load(&format!("harness/{file}"));
        fixtures::interpret_as(SourceKind::Harness, &body, &[]).unwrap()
    }

    #[test]
    fn success_and_failure_notifications_are_builds_with_epoch_second_times() {
        let Event::Build { build, .. } = run("pipeline.success.json") else {
            panic!("not a build")
        };
        assert_eq!(build.status, BuildStatus::Succeeded);
        assert_eq!(build.pipeline_execution_id, "PIPELINE_EXECUTION_ID");
        assert_eq!(
            build.started_on,
            time::macros::datetime!(2024-08-20 08:22:42 UTC)
        );
        assert!(
            build
                .invocation_id
                .starts_with("https://app.harness.io/ng/#/account/")
        );
        let Event::Build { build, .. } = run("pipeline.failed.json") else {
            panic!("not a build")
        };
        assert_eq!(build.status, BuildStatus::Failed);
        let Event::Build { build, .. } = run("pipeline.end.json") else {
            panic!("PipelineEnd with nodeStatus completed is a build")
        };
        assert_eq!(build.status, BuildStatus::Succeeded);
        assert!(matches!(run("pipeline.start.json"), Event::Ignored(_)));
    }
}
