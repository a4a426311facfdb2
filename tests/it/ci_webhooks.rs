//! Each CI's own webhooks on `POST /v1/webhooks/{source}`, with the payloads the CIs publish
//! (`tests/fixtures/webhooks/`, sources in its SOURCES.md), only the image swapped for one pushed
//! to a real registry. What a user checks: the execution's state in the API, the `.att` in the
//! registry verifying with the public key, nothing stored for what is not a finished build.

use serde_json::{Value, json};

use crate::attestation::{REPO, att_layers, dev_public_key, drive_until, python_verifies};
use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;
use crate::support::registry::TestRegistry;
use attestd::config::{PushFormat, WebhookSourceSettings};
use attestd::ingest::adapters::SourceKind;

pub(crate) const GITHUB_SECRET: &str = "github-hook-secret";
pub(crate) const GITLAB_TOKEN: &str = "gitlab-hook-token";
pub(crate) const TEKTON_TOKEN: &str = "tekton-bearer-token";
pub(crate) const HARNESS_TOKEN: &str = "harness-bearer-token";

/// acme's CI sources, one per kind, granted acme's repositories on the registry.
pub(crate) fn sources(host: &str) -> Vec<WebhookSourceSettings> {
    let source = |name: &str, kind, secret: &str| WebhookSourceSettings {
        name: name.into(),
        kind,
        account: ACCOUNT.parse().unwrap(),
        secrets: vec![secret.to_owned().into()],
        repositories: vec![format!("{host}/acme/**")],
        builder_ids: vec![format!("https://ci.example.com/{name}")],
        images: Vec::new(),
    };
    vec![
        source("acme-github", SourceKind::Github, GITHUB_SECRET),
        source("acme-gitlab", SourceKind::Gitlab, GITLAB_TOKEN),
        source("acme-tekton", SourceKind::Tekton, TEKTON_TOKEN),
        source("acme-harness", SourceKind::Harness, HARNESS_TOKEN),
    ]
}

async fn spawn(backend: Backend, reg: &TestRegistry) -> TestApp {
    let registry = reg.settings(PushFormat::Att);
    let host = reg.host();
    TestApp::spawn_with(backend, move |s| {
        s.registries = vec![registry];
        s.webhook.sources.extend(sources(&host));
        s.worker.backoff_base_ms = 20;
        s.worker.backoff_max_secs = 1;
    })
    .await
}

/// A published payload with its image placeholders filled in.
pub(crate) fn payload(path: &str, image: &str, digest: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/webhooks/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("{{IMAGE}}", image)
    .replace("{{DIGEST}}", digest)
}

pub(crate) async fn post(
    app: &TestApp,
    source: &str,
    headers: &[(&str, String)],
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(&format!("/v1/webhooks/{source}")))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.body(body.to_owned()).send().await.unwrap()
}

pub(crate) fn github_headers(
    event: &str,
    delivery: &str,
    body: &str,
    secret: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", delivery.to_owned()),
        (
            "x-hub-signature-256",
            attestd::ingest::signature::sign(secret.as_bytes(), body.as_bytes()),
        ),
    ]
}

/// The envelope in the registry verifies with attestd's public key and is the API's.
pub(crate) async fn assert_attested(
    app: &TestApp,
    reg: &TestRegistry,
    id: &str,
    digest: &attestd::domain::Digest,
) {
    let e = drive_until(app, id, |e| {
        e["attestation"]["state"] != "pending" && e["attestation"]["state"] != "pushing"
    })
    .await;
    assert_eq!(e["attestation"]["state"], "attested", "{e}");
    let layers = att_layers(reg, digest).await;
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].1, app.attestation(id).await);
    let (_, pem) = dev_public_key(app).await;
    assert!(
        python_verifies(&layers[0].1, &pem),
        "the .att does not verify"
    );
}

pub(crate) async fn provenance(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/executions/{id}/provenance"), TOKEN)
        .await
        .json()
        .await
        .unwrap()
}

async fn github_published_container_is_attested_and_redeliveries_are_the_same(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let app = spawn(backend, &reg).await;
    let image = format!("{}/{REPO}", reg.host());
    let body = payload(
        "github/registry_package.published.container.json",
        &image,
        digest.as_str(),
    );

    // Signed with another secret: refused before anything is parsed.
    let resp = post(
        &app,
        "acme-github",
        &github_headers("registry_package", "d-1", &body, "wrong"),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(app.execution_count().await, 0);

    let resp = post(
        &app,
        "acme-github",
        &github_headers("registry_package", "d-1", &body, GITHUB_SECRET),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // The same delivery again is the same execution.
    let again = post(
        &app,
        "acme-github",
        &github_headers("registry_package", "d-1", &body, GITHUB_SECRET),
        &body,
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], created["id"]);
    assert_eq!(app.execution_count().await, 1);

    app.app.run_pending_jobs().await.unwrap();
    assert_attested(&app, &reg, &id, &digest).await;
    let statement = provenance(&app, &id).await;
    assert_eq!(
        statement["predicate"]["buildDefinition"]["buildType"],
        attestd::ingest::adapters::github::PACKAGE_BUILD_TYPE
    );
    assert_eq!(
        statement["predicate"]["buildDefinition"]["internalParameters"]["deliveryId"],
        "d-1"
    );
    assert_eq!(
        statement["predicate"]["runDetails"]["builder"]["id"],
        "https://ci.example.com/acme-github"
    );
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
}

async fn github_workflow_runs_record_failures_and_ignore_the_unfinished(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn(backend, &reg).await;
    let ping = payload("github/ping.json", "", "");
    let resp = post(
        &app,
        "acme-github",
        &github_headers("ping", "p-1", &ping, GITHUB_SECRET),
        &ping,
    )
    .await;
    assert_eq!(resp.status(), 200);
    for file in [
        "workflow_run.requested.json",
        "workflow_run.requested.with-conclusion.json",
    ] {
        let body = payload(&format!("github/{file}"), "", "");
        let resp = post(
            &app,
            "acme-github",
            &github_headers("workflow_run", "r-1", &body, GITHUB_SECRET),
            &body,
        )
        .await;
        assert_eq!(resp.status(), 202, "{file}");
        let answer: Value = resp.json().await.unwrap();
        assert!(answer["ignored"].is_string(), "{file}: {answer}");
    }
    assert_eq!(
        app.execution_count().await,
        0,
        "nothing stored for unfinished runs"
    );

    // octokit publishes no failed run: the success sample with its conclusion changed.
    let mut failed: Value = serde_json::from_str(&payload(
        "github/workflow_run.completed.success.json",
        "",
        "",
    ))
    .unwrap();
    failed["workflow_run"]["conclusion"] = json!("failure");
    let body = failed.to_string();
    let resp = post(
        &app,
        "acme-github",
        &github_headers("workflow_run", "f-1", &body, GITHUB_SECRET),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 202);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["attestation"]["state"], "skipped", "{e}");
    assert_eq!(e["pipelineExecutionId"], "289782451/1");
    let id = e["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/executions/{id}/provenance"), TOKEN)
            .await
            .status(),
        404,
        "a failed run is never signed"
    );
}

async fn tekton_taskrun_results_are_attested(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let app = spawn(backend, &reg).await;
    let image = format!("{}/{REPO}:1.4.0", reg.host());
    let body = payload(
        "tekton/taskrun.successful.image-url-digest.json",
        &image,
        digest.as_str(),
    );
    let headers = |token: &str| {
        vec![
            ("ce-id", "77f78ae7-ff6d-4e39-9d05-b9a0b7850527".to_owned()),
            (
                "ce-type",
                "dev.tekton.event.taskrun.successful.v1".to_owned(),
            ),
            (
                "ce-source",
                "/apis/tekton.dev/v1beta1/namespaces/ci/taskruns/taskrun-build-0".to_owned(),
            ),
            ("ce-specversion", "1.0".to_owned()),
            ("authorization", format!("Bearer {token}")),
        ]
    };
    assert_eq!(
        post(&app, "acme-tekton", &headers("nope"), &body)
            .await
            .status(),
        401
    );
    let resp = post(&app, "acme-tekton", &headers(TEKTON_TOKEN), &body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        post(&app, "acme-tekton", &headers(TEKTON_TOKEN), &body)
            .await
            .status(),
        200
    );
    app.app.run_pending_jobs().await.unwrap();
    assert_attested(&app, &reg, &id, &digest).await;

    // A run still going stores nothing.
    let running = payload("tekton/taskrun.unknown.running.json", "", "");
    let mut h = headers(TEKTON_TOKEN);
    h[1].1 = "dev.tekton.event.taskrun.unknown.v1".into();
    let resp = post(&app, "acme-tekton", &h, &running).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.json::<Value>().await.unwrap()["ignored"].is_string());
    assert_eq!(app.execution_count().await, 1);
}

async fn gitlab_and_harness_record_failures_and_refuse_wrong_tokens(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn(backend, &reg).await;
    let failed = payload("gitlab/pipeline.failed.json", "", "");
    let gitlab = |token: &str| {
        vec![
            ("x-gitlab-event", "Pipeline Hook".to_owned()),
            ("x-gitlab-token", token.to_owned()),
            (
                "idempotency-key",
                "6f3c0c1e-0b5e-4a3e-9a43-1f0e4c2d7b11".to_owned(),
            ),
        ]
    };
    assert_eq!(
        post(&app, "acme-gitlab", &gitlab("wrong"), &failed)
            .await
            .status(),
        401
    );
    let resp = post(&app, "acme-gitlab", &gitlab(GITLAB_TOKEN), &failed).await;
    assert_eq!(resp.status(), 202);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["status"], "failed");
    assert_eq!(e["attestation"]["state"], "skipped");
    assert_eq!(
        post(&app, "acme-gitlab", &gitlab(GITLAB_TOKEN), &failed)
            .await
            .status(),
        200
    );
    let running = payload("gitlab/pipeline.running.json", "", "");
    let resp = post(&app, "acme-gitlab", &gitlab(GITLAB_TOKEN), &running).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.json::<Value>().await.unwrap()["ignored"].is_string());

    let harness = |token: &str| vec![("authorization", format!("Bearer {token}"))];
    let failed = payload("harness/pipeline.failed.json", "", "");
    assert_eq!(
        post(&app, "acme-harness", &harness("wrong"), &failed)
            .await
            .status(),
        401
    );
    let resp = post(&app, "acme-harness", &harness(HARNESS_TOKEN), &failed).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "failed");
    // The same notification again (PipelineEnd and PipelineFailed both fire) is the same run.
    let again = post(&app, "acme-harness", &harness(HARNESS_TOKEN), &failed).await;
    assert_eq!(again.status(), 200);
    let start = payload("harness/pipeline.start.json", "", "");
    let resp = post(&app, "acme-harness", &harness(HARNESS_TOKEN), &start).await;
    assert_eq!(resp.status(), 202);
    assert!(resp.json::<Value>().await.unwrap()["ignored"].is_string());
    assert_eq!(app.execution_count().await, 2);

    // A token for one source does not open another's route, and unknown sources are 404.
    assert_eq!(
        post(&app, "acme-harness", &harness(TEKTON_TOKEN), &failed)
            .await
            .status(),
        401
    );
    assert_eq!(
        post(&app, "nobody", &harness(HARNESS_TOKEN), &failed)
            .await
            .status(),
        404
    );
}

/// Tekton's failed PipelineRun is recorded unsigned; Standard Webhooks signatures are accepted
/// on every kind's route, and refused outside the tolerance.
async fn tekton_failures_are_recorded_and_standard_webhooks_work_on_ci_routes(backend: Backend) {
    let reg = TestRegistry::anonymous().await;
    let app = spawn(backend, &reg).await;
    let failed = payload("tekton/pipelinerun.failed.json", "", "");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let standard = |id: &str, timestamp: i64, secret: &str, body: &str| {
        vec![
            ("ce-id", "0b4b7a8e-5d2f-4f6e-8a54-3b0d1f5c9e21".to_owned()),
            (
                "ce-type",
                "dev.tekton.event.pipelinerun.failed.v1".to_owned(),
            ),
            (
                "ce-source",
                "/apis/tekton.dev/v1beta1/namespaces/ci/pipelineruns/music-datastream".to_owned(),
            ),
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                attestd::ingest::standard_webhooks::sign(secret, id, timestamp, body.as_bytes()),
            ),
        ]
    };
    // No bearer token at all: the Standard Webhooks signature is the authentication.
    let stale = post(
        &app,
        "acme-tekton",
        &standard("msg_1", now - 600, TEKTON_TOKEN, &failed),
        &failed,
    )
    .await;
    assert_eq!(stale.status(), 401);
    assert_eq!(error_code(stale).await, "stale_webhook");
    let forged = post(
        &app,
        "acme-tekton",
        &standard("msg_1", now, GITLAB_TOKEN, &failed),
        &failed,
    )
    .await;
    assert_eq!(forged.status(), 401);
    assert_eq!(app.execution_count().await, 0);

    let resp = post(
        &app,
        "acme-tekton",
        &standard("msg_1", now, TEKTON_TOKEN, &failed),
        &failed,
    )
    .await;
    assert_eq!(resp.status(), 202);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["attestation"]["state"], "skipped", "{e}");
    let id = e["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/executions/{id}/provenance"), TOKEN)
            .await
            .status(),
        404,
        "a failed run is never signed"
    );
}

backend_tests!(
    tekton_failures_are_recorded_and_standard_webhooks_work_on_ci_routes,
    github_published_container_is_attested_and_redeliveries_are_the_same,
    github_workflow_runs_record_failures_and_ignore_the_unfinished,
    tekton_taskrun_results_are_attested,
    gitlab_and_harness_record_failures_and_refuse_wrong_tokens,
);
