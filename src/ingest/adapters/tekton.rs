//! Tekton CloudEvents in binary mode (`Ce-Id`, `Ce-Type`, `Ce-Source`; body `{"taskRun": …}` or
//! `{"pipelineRun": …}`, as Tekton's events controller sends them). Tekton itself sends no
//! credentials: put a proxy that adds `Authorization: Bearer <secret>` or a Standard Webhooks
//! signature in front of attestd.
//!
//! `dev.tekton.event.{taskrun,pipelinerun}.successful.v1` → attested; `….failed.v1` → recorded as
//! failed (aborted when the reason is a cancellation); every other type is ignored. The execution
//! key is the run's `metadata.uid` (else `Ce-Source`). Images are read from results the way
//! Tekton Chains reads them: `IMAGE_URL` + `IMAGE_DIGEST` and `<prefix>IMAGE_URL` +
//! `<prefix>IMAGE_DIGEST` paired by prefix; `IMAGES` (`name@digest` items separated by commas or
//! newlines); `*ARTIFACT_OUTPUTS` objects with `uri` and `digest`. The repository and commit come
//! from `CHAINS-GIT_URL` / `CHAINS-GIT_COMMIT` (results or params). A result whose image or digest
//! is empty or malformed is reported back as a problem and never signed.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Context, Event, check_times, invalid, rfc3339, text};
use crate::domain::{Artifact, BuildStatus, Digest, ImageRef};
use crate::ingest::FieldError;
use crate::ingest::build_webhook::WebhookError;

pub const TYPE_HEADER: &str = "ce-type";
pub const ID_HEADER: &str = "ce-id";
pub const SOURCE_HEADER: &str = "ce-source";

/// `buildType` of executions reported by a TaskRun or PipelineRun event.
pub const BUILD_TYPE: &str = "https://attestd.dev/buildtypes/tekton-run/v1";

pub fn interpret(ctx: &Context<'_>, body: &Value) -> Result<Event, WebhookError> {
    let kind = ctx.header(TYPE_HEADER).ok_or_else(|| {
        WebhookError::Malformed("Ce-Type is missing: send CloudEvents in binary mode".into())
    })?;
    let (run_key, outcome) = match kind {
        "dev.tekton.event.taskrun.successful.v1" => ("taskRun", true),
        "dev.tekton.event.taskrun.failed.v1" => ("taskRun", false),
        "dev.tekton.event.pipelinerun.successful.v1" => ("pipelineRun", true),
        "dev.tekton.event.pipelinerun.failed.v1" => ("pipelineRun", false),
        other => {
            return Ok(Event::Ignored(format!(
                "CloudEvent type '{other}' does not report a finished run"
            )));
        }
    };
    let run = body
        .get(run_key)
        .ok_or_else(|| invalid(run_key, "is required for this event type"))?;
    let status = if outcome {
        BuildStatus::Succeeded
    } else if reason(run).is_some_and(|r| r.contains("Cancelled")) {
        BuildStatus::Aborted
    } else {
        BuildStatus::Failed
    };
    let source = ctx.header(SOURCE_HEADER).unwrap_or_default();
    let name = text(run, &["metadata", "name"])
        .or_else(|| ctx.header("ce-subject"))
        .unwrap_or_default();
    let mut build = ctx.build(status);
    build.pipeline_execution_id = text(run, &["metadata", "uid"])
        .map(str::to_owned)
        .or_else(|| (!source.is_empty()).then(|| source.to_owned()))
        .or_else(|| ctx.header(ID_HEADER).map(str::to_owned))
        .ok_or_else(|| {
            invalid(
                "taskRun.metadata.uid",
                "the run has no uid and the event no Ce-Source",
            )
        })?;
    let labels = run.get("metadata").and_then(|m| m.get("labels"));
    build.pipeline_identifier = labels
        .and_then(|l| text(l, &["tekton.dev/pipeline"]).or_else(|| text(l, &["tekton.dev/task"])))
        .unwrap_or(if name.is_empty() { run_key } else { name })
        .to_owned();
    let results = results(run);
    let params = params(run);
    let chains = |key: &str| {
        results
            .get(key)
            .and_then(Value::as_str)
            .or_else(|| params.get(key).copied())
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    build.repository_url = chains("CHAINS-GIT_URL");
    build.commit_sha = chains("CHAINS-GIT_COMMIT");
    build.trigger_type = "cloudevent".into();
    build.triggered_by = labels
        .and_then(|l| text(l, &["triggers.tekton.dev/eventlistener"]))
        .unwrap_or(source)
        .to_owned();
    if let Some(started) = text(run, &["status", "startTime"]) {
        build.started_on = rfc3339(started, &format!("{run_key}.status.startTime"))?;
    }
    if let Some(finished) = text(run, &["status", "completionTime"]) {
        build.finished_on = rfc3339(finished, &format!("{run_key}.status.completionTime"))?;
    }
    if build.finished_on < build.started_on && text(run, &["status", "completionTime"]).is_none() {
        build.finished_on = build.started_on;
    }
    check_times(&build, &format!("{run_key}.status.completionTime"))?;
    build.build_type = BUILD_TYPE.to_owned();
    build.invocation_id = if source.is_empty() {
        build.pipeline_execution_id.clone()
    } else {
        source.to_owned()
    };
    build.delivery_id = ctx.header(ID_HEADER).map(str::to_owned);
    let (artifacts, problems) = images(&results, run_key);
    build.artifacts = artifacts;
    let repository = repository_path(&build.repository_url);
    Ok(Event::Build {
        build: Box::new(build),
        problems,
        repository,
    })
}

/// The repository path of a git URL (`https://github.com/tektoncd/pipeline.git`,
/// `git@github.com:tektoncd/pipeline`) without host or `.git`: `tektoncd/pipeline`.
fn repository_path(url: &str) -> Option<String> {
    let url = url.trim();
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        // scp-like `user@host:path`
        None => url.split_once(':')?.1,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    (!path.is_empty()).then(|| path.to_owned())
}

fn reason(run: &Value) -> Option<&str> {
    run.get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Succeeded"))?
        .get("reason")?
        .as_str()
}

/// The run's results by name: v1beta1 `taskResults`/`pipelineResults`, or v1 `results`.
fn results(run: &Value) -> BTreeMap<String, Value> {
    let status = run.get("status").unwrap_or(&Value::Null);
    ["taskResults", "pipelineResults", "results"]
        .iter()
        .filter_map(|k| status.get(k).and_then(Value::as_array))
        .flatten()
        .filter_map(|r| Some((r.get("name")?.as_str()?.to_owned(), r.get("value")?.clone())))
        .collect()
}

/// The run's string params by name.
fn params(run: &Value) -> BTreeMap<String, &str> {
    run.get("spec")
        .and_then(|s| s.get("params"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_owned(),
                p.get("value")?.as_str()?,
            ))
        })
        .collect()
}

/// Images by Tekton Chains' result conventions; problems for results that name an image badly.
fn images(results: &BTreeMap<String, Value>, run_key: &str) -> (Vec<Artifact>, Vec<FieldError>) {
    let mut found: Vec<Artifact> = Vec::new();
    let mut problems = Vec::new();
    let mut add = |field: String, image: &str, digest: &str| {
        let image = image.trim();
        let digest = digest.trim();
        let parsed = image
            .parse::<ImageRef>()
            .map_err(|e| format!("image '{image}': {e}"))
            .and_then(|i| {
                digest
                    .parse::<Digest>()
                    .map(|d| Artifact {
                        image: i,
                        digest: d,
                    })
                    .map_err(|e| format!("digest '{digest}': {e}"))
            });
        match parsed {
            Ok(a)
                if !found
                    .iter()
                    .any(|f| f.image.name() == a.image.name() && f.digest == a.digest) =>
            {
                found.push(a)
            }
            Ok(_) => {}
            Err(message) => problems.push(FieldError { field, message }),
        }
    };
    let field = |name: &str| format!("{run_key}.status.results.{name}");
    for (name, value) in results {
        if let Some(prefix) = name.strip_suffix("IMAGE_URL") {
            let digest_name = format!("{prefix}IMAGE_DIGEST");
            let url = value.as_str().unwrap_or_default();
            let digest = results
                .get(&digest_name)
                .and_then(Value::as_str)
                .unwrap_or_default();
            if url.trim().is_empty() && digest.trim().is_empty() {
                continue;
            }
            add(field(name), url, digest);
        } else if name == "IMAGES" {
            for item in value
                .as_str()
                .unwrap_or_default()
                .split(['\n', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let (image, digest) = item.split_once('@').unwrap_or((item, ""));
                add(field(name), image, digest);
            }
        } else if name.ends_with("ARTIFACT_OUTPUTS") {
            let uri = value.get("uri").and_then(Value::as_str).unwrap_or_default();
            let digest = value
                .get("digest")
                .and_then(Value::as_str)
                .unwrap_or_default();
            add(field(name), uri, digest);
        }
    }
    (found, problems)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{self, IMAGE, IMAGE_2, digest};
    use super::super::{Event, SourceKind};
    use crate::domain::BuildStatus;

    fn run(file: &str, ce_type: &str) -> Event {
        let body = fixtures::load(&format!("tekton/{file}"));
        let headers = [
            (super::TYPE_HEADER, ce_type),
            (super::ID_HEADER, "77f78ae7-ff6d-4e39-9d05-b9a0b7850527"),
            (
                super::SOURCE_HEADER,
                "/apis/tekton.dev/v1beta1/namespaces/default/taskruns/build-1",
            ),
        ];
        fixtures::interpret_as(SourceKind::Tekton, &body, &headers).unwrap()
    }

    const TASK_OK: &str = "dev.tekton.event.taskrun.successful.v1";
    const PIPELINE_OK: &str = "dev.tekton.event.pipelinerun.successful.v1";

    #[test]
    fn image_url_and_digest_results_name_the_image() {
        let Event::Build {
            build,
            problems,
            repository,
        } = run("taskrun.successful.image-url-digest.json", TASK_OK)
        else {
            panic!("not a build")
        };
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(build.status, BuildStatus::Succeeded);
        assert_eq!(build.artifacts.len(), 1);
        assert_eq!(build.artifacts[0].image.name(), IMAGE);
        assert_eq!(build.artifacts[0].digest.to_string(), digest(1));
        assert_eq!(
            build.delivery_id.as_deref(),
            Some("77f78ae7-ff6d-4e39-9d05-b9a0b7850527")
        );
        assert_eq!(repository, None, "CHAINS-GIT_URL names a host only");
    }

    #[test]
    fn the_repository_of_a_git_url_is_its_path_without_host_or_dot_git() {
        for (url, path) in [
            (
                "https://github.com/tektoncd/pipeline",
                Some("tektoncd/pipeline"),
            ),
            (
                "https://gitlab.example.com/group/sub/app.git/",
                Some("group/sub/app"),
            ),
            (
                "git@github.com:tektoncd/chains.git",
                Some("tektoncd/chains"),
            ),
            ("ssh://git@host:22/a/b?x=1", Some("a/b")),
            ("https://git.test.com", None),
            ("", None),
        ] {
            assert_eq!(super::repository_path(url).as_deref(), path, "{url}");
        }
    }

    #[test]
    fn the_images_result_lists_several() {
        let Event::Build { build, .. } = run("taskrun.successful.images.json", TASK_OK) else {
            panic!("not a build")
        };
        let names: Vec<String> = build.artifacts.iter().map(|a| a.image.name()).collect();
        assert_eq!(names, vec![IMAGE.to_owned(), IMAGE_2.to_owned()]);
        assert_eq!(build.artifacts[1].digest.to_string(), digest(2));
    }

    #[test]
    fn malformed_outputs_are_reported_and_not_attested() {
        let Event::Build {
            build, problems, ..
        } = run("pipelinerun.successful.results.json", PIPELINE_OK)
        else {
            panic!("not a build")
        };
        assert_eq!(build.artifacts.len(), 1, "{:?}", build.artifacts);
        assert_eq!(build.repository_url, "https://git.test.com");
        assert_eq!(build.commit_sha, "abcd");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert!(
            fields.iter().any(|f| f.ends_with("img2-ARTIFACT_OUTPUTS")),
            "{fields:?}"
        );
        assert!(
            fields
                .iter()
                .any(|f| f.ends_with("img_no_uri-ARTIFACT_OUTPUTS")),
            "{fields:?}"
        );
    }

    #[test]
    fn failed_runs_are_recorded_and_unfinished_ones_ignored() {
        let Event::Build { build, .. } = run(
            "pipelinerun.failed.json",
            "dev.tekton.event.pipelinerun.failed.v1",
        ) else {
            panic!("not a build")
        };
        assert_eq!(build.status, BuildStatus::Failed);
        assert!(matches!(
            run(
                "taskrun.unknown.running.json",
                "dev.tekton.event.taskrun.unknown.v1"
            ),
            Event::Ignored(_)
        ));
    }
}
