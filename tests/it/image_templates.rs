//! Images from a source's templates, digests from the registry: a CI whose webhook names no image
//! (GitHub `workflow_run`, GitLab pipelines, Harness) is attested with the images its source's
//! `images` templates render, once the worker has resolved their tags to digests in a real
//! registry. What a user checks: the execution `resolving`, then `attested` with the resolved
//! digest and when it was resolved, the `.att` verifying with the public key; a tag that never
//! appears failing with a clear error, and `retry` re-driving it.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::attestation::{REPO, att_layers_in, dev_public_key, drive_until, python_verifies};
use crate::backend_tests;
use crate::ci_webhooks::{
    GITHUB_SECRET, GITLAB_TOKEN, HARNESS_TOKEN, assert_attested, github_headers, payload, post,
    provenance, sources,
};
use crate::support::Backend;
use crate::support::app::*;
use crate::support::registry::{OCI_INDEX, TestRegistry};
use attestd::config::PushFormat;
use attestd::domain::Digest;

backend_tests!(
    github_run_whose_multi_arch_image_lands_seconds_after_the_webhook_is_attested_by_its_index_digest,
    gitlab_pipeline_whose_tag_never_appears_fails_clearly_and_retry_redrives_it_to_attested,
    harness_pipeline_is_attested_without_a_repository_and_a_template_needing_one_is_refused,
);

/// The commit of `github/workflow_run.completed.success.json`.
const GITHUB_SHA: &str = "3484a3fb816e0859fd6e1cea078d76385ff50625";
/// The commit of `gitlab/pipeline.success.docs.json`.
const GITLAB_SHA: &str = "bcbb5ec396a2c0f828686f14fac9b80b780504f2";
/// The execution key of `harness/pipeline.success.json`.
const HARNESS_EXECUTION: &str = "PIPELINE_EXECUTION_ID";

/// acme's CI sources (see `ci_webhooks`), with `images` templates by source name (`<registry>`
/// stands for the test registry's host) and quick retries: `max_attempts` resolve attempts.
async fn spawn(
    backend: Backend,
    reg: &TestRegistry,
    images: &[(&str, &str)],
    max_attempts: u32,
) -> TestApp {
    let registry = reg.settings(PushFormat::Att);
    let host = reg.host();
    let mut configured = sources(&host);
    // A second Harness source, for templates that need what Harness does not send.
    let mut harness_repo = configured
        .iter()
        .find(|s| s.name == "acme-harness")
        .cloned()
        .unwrap();
    harness_repo.name = "acme-harness-repo".into();
    configured.push(harness_repo);
    for source in &mut configured {
        source.images = images
            .iter()
            .filter(|(name, _)| *name == source.name)
            .map(|(_, template)| template.replace("<registry>", &host))
            .collect();
    }
    TestApp::spawn_with(backend, move |s| {
        s.registries = vec![registry];
        s.webhook.sources.extend(configured);
        s.worker.backoff_base_ms = 20;
        s.worker.backoff_max_secs = 1;
        s.worker.max_attempts = max_attempts;
    })
    .await
}

fn time_of(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        v.as_str().unwrap_or_else(|| panic!("not a time: {v}")),
        &Rfc3339,
    )
    .unwrap()
}

/// The attestation is settled: neither waiting for digests, nor for signing or pushing.
fn settled(e: &Value) -> bool {
    !matches!(
        e["attestation"]["state"].as_str(),
        Some("resolving" | "pending" | "pushing")
    )
}

/// Push a two-platform image index under `tag` (each platform a small unique image) and return
/// the index's digest: what a HEAD of the tag answers for a multi-arch image.
async fn push_multi_arch(reg: &TestRegistry, repo: &str, tag: &str) -> Digest {
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let digest = reg.push_image(repo, &format!("{arch}-only")).await;
        let (media_type, body) = reg.manifest(repo, digest.as_str()).await.unwrap();
        manifests.push(json!({
            "mediaType": media_type, "digest": digest.as_str(), "size": body.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
    }))
    .unwrap();
    reg.put_manifest(repo, tag, OCI_INDEX, &index).await;
    Digest::of(&index)
}

async fn github_run_whose_multi_arch_image_lands_seconds_after_the_webhook_is_attested_by_its_index_digest(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    // Enough attempts (20 ms doubling to 1 s) to outlast an image pushed 2 s late.
    let app = spawn(
        backend,
        &reg,
        &[("acme-github", "<registry>/acme/{repository}:{sha}")],
        16,
    )
    .await;
    let repo = "acme/octo-org/octo-repo";
    let image = format!("{}/{repo}:{GITHUB_SHA}", reg.host());
    let body = payload("github/workflow_run.completed.success.json", "", "");
    let resp = post(
        &app,
        "acme-github",
        &github_headers("workflow_run", "d-1", &body, GITHUB_SECRET),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["attestation"]["state"], "resolving", "{created}");
    assert_eq!(created["artifacts"][0]["image"], image.as_str());
    assert_eq!(created["artifacts"][0]["digest"], Value::Null);
    assert_eq!(created["artifacts"][0]["push"]["state"], "resolving");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get(&format!("/v1/executions/{id}/provenance"), TOKEN)
            .await
            .status(),
        404,
        "no statement before the digest is known"
    );

    // The first attempts find no such tag, and say so.
    let e = drive_until(&app, &id, |e| e["attestation"]["lastError"].is_string()).await;
    assert_eq!(e["attestation"]["state"], "resolving", "{e}");
    let error = e["attestation"]["lastError"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "image_not_found: tag {GITHUB_SHA} of {}/{repo} is not in the registry yet",
            reg.host()
        )),
        "{error}"
    );
    // GitHub redelivers the same run (a new delivery id): the same execution.
    let again = post(
        &app,
        "acme-github",
        &github_headers("workflow_run", "d-2", &body, GITHUB_SECRET),
        &body,
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str());
    assert_eq!(app.execution_count().await, 1);

    // The image lands seconds after the webhook, while the worker keeps trying.
    let late_push = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        push_multi_arch(&reg, repo, GITHUB_SHA).await
    };
    let (digest, e) = tokio::join!(late_push, drive_until(&app, &id, settled));
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    let artifact = &e["artifacts"][0];
    assert_eq!(artifact["digest"], digest.as_str(), "the index's digest");
    assert_eq!(artifact["push"]["state"], "pushed");
    let resolved_at = time_of(&artifact["resolvedAt"]);
    assert!(
        resolved_at - time_of(&e["receivedAt"]) >= time::Duration::seconds(2),
        "resolved once the image was there: {e}"
    );

    // The registry holds the envelope next to the index, and it verifies.
    let layers = att_layers_in(&reg, repo, &digest).await;
    assert_eq!(layers.len(), 1);
    let blob = &layers[0].1;
    assert_eq!(*blob, app.attestation(&id).await);
    let (_, pem) = dev_public_key(&app).await;
    assert!(python_verifies(blob, &pem), "the .att does not verify");

    // What is signed is the stored statement, with the resolved digest as its subject.
    let envelope: Value = serde_json::from_slice(blob).unwrap();
    use base64::Engine as _;
    let signed = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let stored = app
        .get(&format!("/v1/executions/{id}/provenance"), TOKEN)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(signed, stored.as_ref(), "signed byte for byte as stored");
    let statement = provenance(&app, &id).await;
    assert_eq!(
        statement["subject"],
        json!([{"name": format!("{}/{repo}", reg.host()), "digest": {"sha256": digest.hex()}}])
    );
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(
        definition["externalParameters"]["buildMetadata"]["image"],
        image.as_str()
    );
    assert_eq!(
        definition["buildType"],
        attestd::ingest::adapters::github::WORKFLOW_BUILD_TYPE
    );
    assert_eq!(
        definition["resolvedDependencies"][0]["digest"]["gitCommit"],
        GITHUB_SHA
    );
    assert_eq!(definition["internalParameters"]["deliveryId"], "d-1");

    // The web view's artifact table shows the digest and when it was resolved.
    let cookie = crate::ui::log_in(&app, TOKEN).await;
    let page = app
        .http
        .get(app.url(&format!("/ui/executions/{id}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(digest.as_str()), "{page}");
    assert!(
        page.contains(&format!(
            "resolved from the tag <time datetime=\"{}\">",
            artifact["resolvedAt"].as_str().unwrap()
        )),
        "{page}"
    );
}

fn gitlab_headers() -> Vec<(&'static str, String)> {
    vec![
        ("x-gitlab-event", "Pipeline Hook".to_owned()),
        ("x-gitlab-token", GITLAB_TOKEN.to_owned()),
        (
            "idempotency-key",
            "0b6f7a52-2f4c-4d7c-9c6e-5a4b3c2d1e0f".to_owned(),
        ),
    ]
}

async fn gitlab_pipeline_whose_tag_never_appears_fails_clearly_and_retry_redrives_it_to_attested(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn(
        backend,
        &reg,
        &[("acme-gitlab", "<registry>/acme/app:{sha}")],
        8,
    )
    .await;
    let body = payload("gitlab/pipeline.success.docs.json", "", "");
    let resp = post(&app, "acme-gitlab", &gitlab_headers(), &body).await;
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["attestation"]["state"], "resolving", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let resp = post(&app, "acme-gitlab", &gitlab_headers(), &body).await;
    assert_eq!(resp.status(), 200, "a redelivery is the same execution");
    assert_eq!(resp.json::<Value>().await.unwrap()["id"], id.as_str());
    let mut changed: Value = serde_json::from_str(&body).unwrap();
    changed["object_attributes"]["finished_at"] = json!("2016-08-12 15:27:00 UTC");
    let resp = post(&app, "acme-gitlab", &gitlab_headers(), &changed.to_string()).await;
    assert_eq!(resp.status(), 409, "the same pipeline with other content");
    assert_eq!(app.execution_count().await, 1);

    let e = drive_until(&app, &id, |e| e["attestation"]["state"] != "resolving").await;
    assert_eq!(e["attestation"]["state"], "failed", "{e}");
    assert_eq!(
        e["attestation"]["lastError"],
        format!(
            "image_not_found: tag {GITLAB_SHA} of {}/{REPO} never appeared after 8 attempts",
            reg.host()
        )
    );
    let artifact = &e["artifacts"][0];
    assert_eq!(artifact["push"]["state"], "resolving", "{artifact}");
    assert_eq!(
        (&artifact["digest"], &artifact["resolvedAt"]),
        (&Value::Null, &Value::Null)
    );
    for what in ["provenance", "attestation"] {
        assert_eq!(
            app.get(&format!("/v1/executions/{id}/{what}"), TOKEN)
                .await
                .status(),
            404,
            "nothing was signed: {what}"
        );
    }
    assert_eq!(
        app.app.run_pending_jobs().await.unwrap(),
        0,
        "no more attempts"
    );

    // The image is pushed after all; a user re-drives the execution.
    let digest = reg.push_image(REPO, GITLAB_SHA).await;
    let retry = app
        .http
        .post(app.url(&format!("/v1/executions/{id}/retry")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    let retried: Value = retry.json().await.unwrap();
    assert_eq!(retried["attestation"]["state"], "resolving", "{retried}");
    assert_eq!(retried["attestation"]["lastError"], Value::Null);
    let e = drive_until(&app, &id, settled).await;
    assert_attested(&app, &reg, &id, &digest).await;
    assert_eq!(e["artifacts"][0]["digest"], digest.as_str());
    assert!(e["artifacts"][0]["resolvedAt"].is_string(), "{e}");
    let statement = provenance(&app, &id).await;
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
    assert_eq!(
        statement["predicate"]["buildDefinition"]["buildType"],
        attestd::ingest::adapters::gitlab::BUILD_TYPE
    );
}

async fn harness_pipeline_is_attested_without_a_repository_and_a_template_needing_one_is_refused(
    backend: Backend,
) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, HARNESS_EXECUTION).await;
    let app = spawn(
        backend,
        &reg,
        &[
            ("acme-harness", "<registry>/acme/app:{execution}"),
            (
                "acme-harness-repo",
                "<registry>/acme/{repository}:{execution}",
            ),
        ],
        8,
    )
    .await;
    let body = payload("harness/pipeline.success.json", "", "");
    let bearer = vec![("authorization", format!("Bearer {HARNESS_TOKEN}"))];

    // Harness names no repository: a template that needs one cannot be rendered for this build.
    let resp = post(&app, "acme-harness-repo", &bearer, &body).await;
    assert_eq!(resp.status(), 422);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["error"]["code"], "validation_failed", "{problem}");
    let detail = &problem["error"]["details"][0];
    assert_eq!(detail["field"], "images[0]", "{problem}");
    let message = detail["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}/acme/{{repository}}:{{execution}}", reg.host()))
            && message.contains("uses {repository}, which this build does not have"),
        "{message}"
    );
    assert_eq!(app.execution_count().await, 0, "nothing stored");

    let resp = post(&app, "acme-harness", &bearer, &body).await;
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["attestation"]["state"], "resolving", "{created}");
    assert_eq!(
        created["artifacts"][0]["image"],
        format!("{}/{REPO}:{HARNESS_EXECUTION}", reg.host())
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        post(&app, "acme-harness", &bearer, &body).await.status(),
        200
    );
    assert_eq!(app.execution_count().await, 1);
    let e = drive_until(&app, &id, settled).await;
    assert_attested(&app, &reg, &id, &digest).await;
    assert_eq!(e["artifacts"][0]["digest"], digest.as_str());
    assert!(e["artifacts"][0]["resolvedAt"].is_string(), "{e}");
    let statement = provenance(&app, &id).await;
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
    assert_eq!(
        statement["predicate"]["buildDefinition"]["resolvedDependencies"],
        json!([]),
        "Harness names no commit"
    );
}
