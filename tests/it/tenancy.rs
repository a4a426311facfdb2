//! Trust boundaries at ingest, tried from the attacker's side: a webhook source holding its own
//! valid secret tries to make attestd sign provenance for another tenant's repository, builder
//! or account. Each attempt must be refused with its code, and nothing may be stored or queued.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;

/// The attacker: globex's source, signing with globex's own (valid) secret.
async fn post_as_globex(app: &TestApp, hook: &Value) -> reqwest::Response {
    app.post_webhook_signed(hook.to_string().as_bytes(), OTHER_SECRET)
        .await
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.execution_count().await, 0, "an execution was stored");
    assert_eq!(
        app.app.store.unfinished_jobs().await.unwrap(),
        0,
        "a job was queued"
    );
}

async fn a_source_cannot_attest_another_accounts_repository(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Well-formed, globex's account and builder, but acme's repository.
    let mut hook = globex_webhook("steal-1");
    hook["artifacts"] = json!([
        {"image": format!("{REGISTRY}/globex/app:1"), "digest": format!("sha256:{}", "b2".repeat(32))},
        {"image": format!("{REGISTRY}/acme/app:1.4.0"), "digest": format!("sha256:{}", "a1".repeat(32))},
    ]);
    let resp = post_as_globex(&app, &hook).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "repository_not_allowed");
    assert_eq!(body["error"]["details"][0]["field"], "artifacts[1].image");
    assert_eq!(
        body["error"]["details"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_nothing_stored(&app).await;

    // `*` stays inside one segment: globex's `globex/*` does not reach a nested repository, and a
    // prefix that merely starts the same does not match.
    for image in ["globex/team/app", "globexx/app", "acme/globex"] {
        let mut hook = globex_webhook("steal-2");
        hook["artifacts"][0]["image"] = json!(format!("{REGISTRY}/{image}:1"));
        let resp = post_as_globex(&app, &hook).await;
        assert_eq!(resp.status(), 403, "{image}");
        assert_eq!(error_code(resp).await, "repository_not_allowed", "{image}");
    }
    assert_nothing_stored(&app).await;
}

async fn a_source_cannot_claim_another_sources_builder(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut hook = globex_webhook("claim-1");
    hook["builderId"] = json!(BUILDER);
    let resp = post_as_globex(&app, &hook).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "builder_not_allowed");
    assert_eq!(body["error"]["details"][0]["field"], "builderId");
    assert_nothing_stored(&app).await;
}

async fn a_source_cannot_report_for_another_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // acme's build, byte for byte, but signed with globex's secret.
    let resp = post_as_globex(&app, &webhook("acme-run")).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(error_code(resp).await, "account_mismatch");
    assert_nothing_stored(&app).await;
}

async fn signed_builder_id_and_source_come_from_the_operators_configuration(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // No builderId: the source's first configured builder is signed.
    let mut hook = webhook("builder-default");
    hook.as_object_mut().unwrap().remove("builderId");
    let id = app.record(&hook).await;
    let statement = provenance(&app, &id).await;
    assert_eq!(
        statement["predicate"]["runDetails"]["builder"]["id"],
        BUILDER
    );
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    assert_eq!(internal["webhookSource"], "acme-ci");
    assert_eq!(internal["accountId"], ACCOUNT);
    let execution: Value = app
        .get(&format!("/v1/executions/{id}"), TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(execution["builderId"], BUILDER, "{execution}");

    // A second configured builder may be claimed by name.
    let mut hook = webhook("builder-arm");
    hook["builderId"] = json!("https://ci.example.com/runners/arm64");
    let id = app.record(&hook).await;
    assert_eq!(
        provenance(&app, &id).await["predicate"]["runDetails"]["builder"]["id"],
        "https://ci.example.com/runners/arm64"
    );
}

async fn provenance(app: &TestApp, id: &str) -> Value {
    let resp = app
        .get(&format!("/v1/executions/{id}/provenance"), TOKEN)
        .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn out_of_range_timestamps_are_422_with_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (field, value) in [
        ("finishedOn", "9999-12-31T23:59:59-01:00"),
        ("startedOn", "0000-01-01T00:00:00+01:00"),
    ] {
        let mut hook = webhook(&format!("time-{field}"));
        hook[field] = json!(value);
        if field == "startedOn" {
            hook["finishedOn"] = json!("0001-01-01T00:00:00Z");
        }
        let resp = app.post_webhook(&hook).await;
        assert_eq!(resp.status(), 422, "{field}={value}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "validation_failed");
        assert!(
            body["error"]["details"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["field"] == field),
            "{body}"
        );
    }
    assert_nothing_stored(&app).await;
    // The service is still there (the request task did not panic).
    assert_eq!(app.get("/healthz", TOKEN).await.status(), 200);
}

async fn duplicate_keys_and_non_json_content_types_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Two `accountId`s: the first is acme (the signer's), the second globex. A parser keeping
    // either one silently would disagree with some other reader of the same signed bytes.
    let body = webhook("dup-1").to_string().replacen(
        "\"accountId\":\"acme\"",
        &format!("\"accountId\":\"acme\",\"accountId\":\"{OTHER_ACCOUNT}\""),
        1,
    );
    let resp = app.post_webhook_signed(body.as_bytes(), SECRET).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "duplicate_key");

    let body = webhook("ct-1").to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app.http.post(app.url("/v1/webhooks/build")).header(
            "x-attestd-signature-256",
            attestd::ingest::signature::sign(SECRET.as_bytes(), body.as_bytes()),
        );
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 415, "{content_type:?}");
        assert_eq!(error_code(resp).await, "unsupported_media_type");
    }
    assert_nothing_stored(&app).await;

    // JSON with a charset parameter is JSON.
    let resp = app
        .http
        .post(app.url("/v1/webhooks/build"))
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "x-attestd-signature-256",
            attestd::ingest::signature::sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

async fn tag_builds_resolve_to_the_tag_ref(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut hook = webhook("tag-1");
    hook["branch"] = json!("refs/tags/v1");
    let id = app.record(&hook).await;
    let statement = provenance(&app, &id).await;
    assert_eq!(
        statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["uri"],
        "git+https://github.com/acme/app@refs/tags/v1"
    );
}

/// Anonymous reads (loopback, no tokens configured) can read but never act, and answer only to
/// this server's own host names.
async fn anonymous_reads_are_read_only_and_bound_to_this_host(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.auth.anonymous_reads_on_loopback = true;
        s.auth.tokens.clear();
    })
    .await;
    let id = app.record(&webhook("anon-1")).await;
    let anonymous = |method: reqwest::Method, path: &str| app.http.request(method, app.url(path));

    let read = anonymous(reqwest::Method::GET, &format!("/v1/executions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let retry = anonymous(reqwest::Method::POST, &format!("/v1/executions/{id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 401);
    assert_eq!(error_code(retry).await, "unauthenticated");
    let verify = anonymous(reqwest::Method::POST, "/v1/verify")
        .json(&json!({"image": format!("{REGISTRY}/acme/app:1.4.0"), "keyId": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 401);

    // A page on another name that resolves to loopback (DNS rebinding) gets nothing.
    let port = app.addr.port();
    for host in [
        format!("attacker.example:{port}"),
        format!("127.0.0.1:{}", port + 1),
    ] {
        let rebound = anonymous(reqwest::Method::GET, &format!("/v1/executions/{id}"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 401, "{host}");
        let page = anonymous(reqwest::Method::GET, "/ui/executions")
            .header("host", &host)
            .send()
            .await
            .unwrap();
        // The web view sends a reader it does not know to its sign-in page.
        assert_eq!(page.url().path(), "/ui/login", "{host}");
        assert!(!page.text().await.unwrap().contains("anon-1"), "{host}");
    }
}

/// The zero-setup default allows anonymous reads; configuring any token ends them.
async fn anonymous_reads_end_once_a_token_is_configured(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.auth.anonymous_reads_on_loopback = true;
    })
    .await;
    app.record(&webhook("anon-2")).await;
    let resp = app
        .http
        .get(app.url("/v1/executions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(app.get("/v1/executions", TOKEN).await.status(), 200);
}

backend_tests!(
    a_source_cannot_attest_another_accounts_repository,
    a_source_cannot_claim_another_sources_builder,
    a_source_cannot_report_for_another_account,
    signed_builder_id_and_source_come_from_the_operators_configuration,
    out_of_range_timestamps_are_422_with_the_field,
    duplicate_keys_and_non_json_content_types_are_refused,
    tag_builds_resolve_to_the_tag_ref,
    anonymous_reads_are_read_only_and_bound_to_this_host,
    anonymous_reads_end_once_a_token_is_configured,
);
