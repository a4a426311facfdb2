//! The webhook and read API, end to end over HTTP, on both stores.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;

backend_tests!(
    accepted_webhook_records_execution_and_provenance_matches_it_field_by_field,
    redelivered_webhook_with_same_body_returns_existing_execution,
    redelivery_with_different_body_conflicts_and_keeps_the_original,
    unsigned_or_wrongly_signed_webhooks_are_rejected_before_parsing,
    webhook_naming_another_account_is_forbidden_and_not_stored,
    invalid_webhooks_get_field_level_errors_and_store_nothing,
    malformed_json_and_unknown_schema_versions_are_refused,
    oversized_body_is_refused_with_413,
    unlisted_registry_host_is_refused_at_ingest,
    failed_build_is_recorded_without_attestation_work,
    other_accounts_executions_look_missing_on_every_read_route,
    kept_responses_are_never_given_to_another_account,
    settled_executions_are_read_from_the_database_once_and_the_rest_every_time,
    list_pages_are_the_same_bytes_with_their_settled_items_kept,
    reads_need_a_token,
    lists_filter_and_page_with_a_cursor,
    basic_view_pages_like_the_full_view_with_artifact_counts_instead_of_artifacts,
    an_unknown_list_view_is_refused_naming_view,
    basic_view_never_shows_another_accounts_executions,
    concurrent_identical_deliveries_create_exactly_one_execution,
    health_and_readiness_answer,
);

async fn accepted_webhook_records_execution_and_provenance_matches_it_field_by_field(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let hook = webhook("run-1");
    let resp = app.post_webhook(&hook).await;
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, app.url(&format!("/v1/executions/{id}")));
    assert_eq!(
        created["attestation"]["state"], "pending",
        "nothing is signed inside the request"
    );
    assert_eq!(created["artifacts"][0]["push"]["state"], "pending");

    let got: Value = app
        .get(&format!("/v1/executions/{id}"), TOKEN)
        .await
        .json()
        .await
        .unwrap();
    for field in [
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
        "status",
    ] {
        assert_eq!(got[field], hook[field], "{field}");
    }
    assert_eq!(got["artifacts"][0]["image"], hook["artifacts"][0]["image"]);
    assert_eq!(
        got["artifacts"][0]["digest"],
        hook["artifacts"][0]["digest"]
    );

    let resp = app
        .get(&format!("/v1/executions/{id}/provenance"), TOKEN)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.in-toto+json"
    );
    let bytes = resp.bytes().await.unwrap();
    let s: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        s["subject"],
        json!([{"name": format!("{REGISTRY}/acme/app"), "digest": {"sha256": "a1".repeat(32)}}])
    );
    let bd = &s["predicate"]["buildDefinition"];
    assert_eq!(
        bd["buildType"],
        "https://attestd.dev/buildtypes/ci-webhook/v1"
    );
    assert_eq!(
        bd["externalParameters"]["codeMetadata"],
        json!({"repositoryURL": hook["repositoryURL"], "branch": "main", "commitSha": hook["commitSha"]})
    );
    assert_eq!(
        bd["externalParameters"]["triggerMetadata"],
        json!({"triggerType": "WEBHOOK", "triggeredBy": "alice@example.com"})
    );
    assert_eq!(
        bd["externalParameters"]["buildMetadata"]["image"],
        hook["artifacts"][0]["image"]
    );
    assert_eq!(
        bd["internalParameters"],
        json!({"pipelineExecutionId": "run-1", "accountId": ACCOUNT, "pipelineIdentifier": "build_and_push", "webhookSource": "acme-ci"})
    );
    assert_eq!(
        bd["resolvedDependencies"],
        json!([{"uri": "git+https://github.com/acme/app@refs/heads/main", "digest": {"gitCommit": hook["commitSha"]}}])
    );
    let rd = &s["predicate"]["runDetails"];
    assert_eq!(
        rd["builder"],
        json!({"id": hook["builderId"], "version": hook["builderVersion"]})
    );
    assert_eq!(
        rd["metadata"],
        json!({"invocationId": "run-1", "startedOn": "2026-11-25T10:00:00Z", "finishedOn": "2026-11-25T10:04:31Z"})
    );

    // The bytes served are the bytes stored at ingest, unchanged.
    let stored = app
        .app
        .store
        .statement(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bytes.as_ref(), stored.as_slice());
}

async fn redelivered_webhook_with_same_body_returns_existing_execution(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first: Value = app
        .post_webhook(&webhook("run-1"))
        .await
        .json()
        .await
        .unwrap();
    // A redelivery may re-serialize the same content differently.
    let pretty = serde_json::to_vec_pretty(&webhook("run-1")).unwrap();
    let resp = app.post_webhook_signed(&pretty, SECRET).await;
    assert_eq!(resp.status(), 200);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.execution_count().await, 1);
    assert_eq!(
        app.app.store.unfinished_jobs().await.unwrap(),
        1,
        "one sign job, not two"
    );
}

async fn redelivery_with_different_body_conflicts_and_keeps_the_original(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first: Value = app
        .post_webhook(&webhook("run-1"))
        .await
        .json()
        .await
        .unwrap();
    let mut changed = webhook("run-1");
    changed["commitSha"] = json!("0".repeat(40));
    let resp = app.post_webhook(&changed).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(error_code(resp).await, "execution_conflict");
    let got: Value = app
        .get(
            &format!("/v1/executions/{}", first["id"].as_str().unwrap()),
            TOKEN,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["commitSha"], webhook("run-1")["commitSha"]);
    assert_eq!(app.execution_count().await, 1);
}

async fn unsigned_or_wrongly_signed_webhooks_are_rejected_before_parsing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = webhook("run-1").to_string();
    let unsigned = app
        .http
        .post(app.url("/v1/webhooks/build"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(error_code(unsigned).await, "invalid_signature");
    let wrong = app
        .post_webhook_signed(body.as_bytes(), "not-the-secret")
        .await;
    assert_eq!(wrong.status(), 401);
    // Garbage with a bad signature is refused as unauthenticated, not as malformed: it is not parsed.
    let garbage = app
        .post_webhook_signed(b"{not json", "not-the-secret")
        .await;
    assert_eq!(garbage.status(), 401);
    assert_eq!(error_code(garbage).await, "invalid_signature");
    // A signature over a different body does not carry over.
    let sig = attestd::ingest::signature::sign(SECRET.as_bytes(), b"{}");
    let replayed = app
        .http
        .post(app.url("/v1/webhooks/build"))
        .header("x-attestd-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    assert_eq!(app.execution_count().await, 0);
}

async fn webhook_naming_another_account_is_forbidden_and_not_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut hook = webhook("run-1");
    hook["accountId"] = json!(OTHER_ACCOUNT);
    // Signed by acme's source, claiming globex.
    let resp = app.post_webhook(&hook).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(error_code(resp).await, "account_mismatch");
    assert_eq!(app.execution_count().await, 0);
    assert_eq!(app.app.store.unfinished_jobs().await.unwrap(), 0);
    // globex's own source may report its own build.
    let ok = app
        .post_webhook_signed(globex_webhook("run-1").to_string().as_bytes(), OTHER_SECRET)
        .await;
    assert_eq!(ok.status(), 202);
}

type Mutation = Box<dyn Fn(&mut Value)>;

async fn invalid_webhooks_get_field_level_errors_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "artifacts[0].digest",
            Box::new(|v| v["artifacts"][0]["digest"] = json!(format!("sha256:{}", "A".repeat(64)))),
        ),
        (
            "artifacts[0].digest",
            Box::new(|v| v["artifacts"][0]["digest"] = json!("sha256:abc")),
        ),
        (
            "commitSha",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("commitSha");
            }),
        ),
        (
            "startedOn",
            Box::new(|v| v["startedOn"] = json!("25/11/2026 10:00")),
        ),
        (
            "finishedOn",
            Box::new(|v| v["finishedOn"] = json!("2026-11-25T09:59:59Z")),
        ),
        ("artifacts", Box::new(|v| v["artifacts"] = json!([]))),
        ("color", Box::new(|v| v["color"] = json!("blue"))),
        (
            "artifacts[0].size",
            Box::new(|v| v["artifacts"][0]["size"] = json!(12)),
        ),
        ("status", Box::new(|v| v["status"] = json!("green"))),
        (
            "artifacts[0].image",
            Box::new(|v| v["artifacts"][0]["image"] = json!("nginx")),
        ),
    ];
    for (field, mutate) in cases {
        let mut hook = webhook("run-1");
        mutate(&mut hook);
        let resp = app.post_webhook(&hook).await;
        assert_eq!(resp.status(), 422, "{field}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "validation_failed", "{field}");
        let fields: Vec<&str> = body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    assert_eq!(app.execution_count().await, 0);
    assert_eq!(app.app.store.unfinished_jobs().await.unwrap(), 0);
}

async fn malformed_json_and_unknown_schema_versions_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = app
        .post_webhook_signed(b"{\"schemaVersion\": 1,", SECRET)
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "malformed_json");
    let mut hook = webhook("run-1");
    hook["schemaVersion"] = json!(2);
    let resp = app.post_webhook(&hook).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(error_code(resp).await, "unsupported_schema_version");
    assert_eq!(app.execution_count().await, 0);
}

async fn oversized_body_is_refused_with_413(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.server.body_limit_bytes = 4096).await;
    let mut hook = webhook("run-1");
    hook["triggeredBy"] = json!("x".repeat(5000));
    let resp = app.post_webhook(&hook).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(error_code(resp).await, "payload_too_large");
    assert_eq!(app.execution_count().await, 0);
}

async fn unlisted_registry_host_is_refused_at_ingest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut hook = webhook("run-1");
    hook["artifacts"] = json!([
        {"image": format!("{REGISTRY}/acme/app"), "digest": format!("sha256:{}", "b".repeat(64))},
        {"image": "evil.example.com/acme/app", "digest": format!("sha256:{}", "c".repeat(64))},
    ]);
    let resp = app.post_webhook(&hook).await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["field"], "artifacts[1].image");
    assert_eq!(app.execution_count().await, 0);
}

async fn failed_build_is_recorded_without_attestation_work(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut hook = webhook("run-failed");
    hook["status"] = json!("failed");
    let created: Value = app.post_webhook(&hook).await.json().await.unwrap();
    assert_eq!(created["status"], "failed");
    assert_eq!(created["attestation"]["state"], "skipped");
    assert_eq!(created["artifacts"][0]["push"]["state"], "skipped");
    assert_eq!(
        app.app.store.unfinished_jobs().await.unwrap(),
        0,
        "no attestation job for a failed build"
    );
    let resp = app
        .get(
            &format!(
                "/v1/executions/{}/provenance",
                created["id"].as_str().unwrap()
            ),
            TOKEN,
        )
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "provenance_not_found");
}

/// `path` (acme's) read as globex answers 404 exactly as the same route (`suffix`) of the
/// `missing` execution does.
async fn looks_missing_to_globex(app: &TestApp, path: &str, missing: uuid::Uuid, suffix: &str) {
    let theirs = app.get(path, OTHER_TOKEN).await;
    assert_eq!(theirs.status(), 404, "globex reading {path}");
    let theirs: Value = theirs.json().await.unwrap();
    let absent: Value = app
        .get(&format!("/v1/executions/{missing}{suffix}"), OTHER_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        theirs, absent,
        "another account's execution must look exactly like a missing one ({path})"
    );
}

async fn other_accounts_executions_look_missing_on_every_read_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = &app.record(&webhook("run-1")).await;
    let missing = uuid::Uuid::now_v7();
    for path in ["", "/provenance", "/attestation"] {
        looks_missing_to_globex(&app, &format!("/v1/executions/{id}{path}"), missing, path).await;
    }
    let retry = app
        .http
        .post(app.url(&format!("/v1/executions/{id}/retry")))
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 404);
    let list: Value = app
        .get("/v1/executions?account=acme", OTHER_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["items"],
        json!([]),
        "lists are scoped to the token's account whatever is asked"
    );
    let own: Value = app.get("/v1/executions", TOKEN).await.json().await.unwrap();
    assert_eq!(own["items"].as_array().unwrap().len(), 1);
    let admin: Value = app
        .get(&format!("/v1/executions/{id}"), ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin["id"], id.as_str());
}

async fn kept_responses_are_never_given_to_another_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut failed = webhook("run-failed");
    failed["status"] = json!("failed");
    let settled = app.record(&failed).await;
    let signed = app.record(&webhook("run-1")).await;
    app.app.run_pending_jobs().await.unwrap();
    // acme reads everything first, so whatever attestd keeps in memory is kept now: the failed
    // build's execution, the other's statement and envelope.
    let routes = [
        format!("/v1/executions/{settled}"),
        format!("/v1/executions/{signed}/provenance"),
        format!("/v1/executions/{signed}/attestation"),
    ];
    let mut own = Vec::new();
    for path in &routes {
        let resp = app.get(path, TOKEN).await;
        assert_eq!(resp.status(), 200, "{path}");
        own.push(resp.bytes().await.unwrap());
    }
    let missing = uuid::Uuid::now_v7();
    for (path, suffix) in routes.iter().zip(["", "/provenance", "/attestation"]) {
        looks_missing_to_globex(&app, path, missing, suffix).await;
    }
    for (path, own) in routes.iter().zip(&own) {
        let admin = app.get(path, ADMIN_TOKEN).await;
        assert_eq!(admin.status(), 200, "{path}");
        assert_eq!(&admin.bytes().await.unwrap(), own, "the admin reads {path}");
    }
}

/// GET an execution as acme: its status and body.
async fn read(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app.get(path, TOKEN).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn settled_executions_are_read_from_the_database_once_and_the_rest_every_time(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut failed = webhook("run-failed");
    failed["status"] = json!("failed");
    let settled = format!("/v1/executions/{}", app.record(&failed).await);
    let pending = format!("/v1/executions/{}", app.record(&webhook("run-1")).await);
    let (_, first) = read(&app, &settled).await;
    assert_eq!(first["attestation"]["state"], "skipped");
    let (_, e) = read(&app, &pending).await;
    assert_eq!(e["attestation"]["state"], "pending");
    let statement = app.get(&format!("{pending}/provenance"), TOKEN).await;
    assert_eq!(statement.status(), 200);
    let statement = statement.bytes().await.unwrap();
    let (status, unsigned) = read(&app, &format!("{pending}/attestation")).await;
    assert_eq!(
        (status, unsigned["error"]["code"].as_str()),
        (404, Some("attestation_not_found"))
    );

    // A change no write of attestd makes (a settled row is never written again), made behind
    // its back to tell the reads that went to the database from those that did not.
    let rewritten = app
        .db
        .execute(
            "UPDATE executions SET branch = 'rewritten' \
             WHERE pipeline_execution_id IN ('run-failed', 'run-1')",
        )
        .await;
    assert_eq!(rewritten, 2);
    assert_eq!(
        read(&app, &settled).await.1,
        first,
        "a settled execution is answered as first read"
    );
    let (_, e) = read(&app, &pending).await;
    assert_eq!(
        e["branch"], "rewritten",
        "an execution that can still change is read from the database every time"
    );

    // The worker signs: the pending execution moves on, and its envelope appears.
    app.app.run_pending_jobs().await.unwrap();
    let (_, e) = read(&app, &pending).await;
    assert_ne!(e["attestation"]["state"], "pending", "{e}");
    assert!(e["attestation"]["signedAt"].is_string(), "{e}");
    let (status, envelope) = read(&app, &format!("{pending}/attestation")).await;
    assert_eq!(status, 200, "{envelope}");
    assert!(envelope["signatures"][0]["sig"].is_string(), "{envelope}");
    let again = app.get(&format!("{pending}/provenance"), TOKEN).await;
    assert_eq!(again.bytes().await.unwrap(), statement);

    // With `server.read_cache_mib = 0` every read goes to the database.
    let app = app.restart_with(|s| s.server.read_cache_mib = 0).await;
    assert_eq!(read(&app, &settled).await.1["branch"], "rewritten");
    app.db
        .execute(
            "UPDATE executions SET branch = 'again' WHERE pipeline_execution_id = 'run-failed'",
        )
        .await;
    assert_eq!(read(&app, &settled).await.1["branch"], "again");
}

async fn reads_need_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = app
        .http
        .get(app.url("/v1/executions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(resp).await, "unauthenticated");
    let resp = app.get("/v1/executions", "wrong-token").await;
    assert_eq!(resp.status(), 401);
}

async fn lists_filter_and_page_with_a_cursor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        let mut hook = webhook(&format!("run-{i}"));
        hook["branch"] = json!(if i % 2 == 0 { "main" } else { "feature/x" });
        if i == 4 {
            hook["status"] = json!("failed");
        }
        assert_eq!(app.post_webhook(&hook).await.status(), 202);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/executions?limit=2&cursor={c}"),
            None => "/v1/executions?limit=2".to_owned(),
        };
        let page: Value = app.get(&path, TOKEN).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["pipelineExecutionId"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec!["run-4", "run-3", "run-2", "run-1", "run-0"],
        "newest first, each once"
    );

    let main: Value = app
        .get("/v1/executions?branch=main&status=succeeded", TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = main["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pipelineExecutionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["run-2", "run-0"]);
    let asc: Value = app
        .get("/v1/executions?order=asc&limit=1", TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(asc["items"][0]["pipelineExecutionId"], "run-0");
    let none: Value = app
        .get("/v1/executions?startedAfter=2027-01-01T00:00:00Z", TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));
    let bad = app.get("/v1/executions?status=green", TOKEN).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad).await, "invalid_query");
}

/// Every page of `path` (which has a query) read as `token`, following `nextCursor`: the bytes.
async fn page_bytes(app: &TestApp, path: &str, token: &str) -> Vec<bytes::Bytes> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let resp = app.get(&url, token).await;
        assert_eq!(resp.status(), 200, "{url}");
        let page = resp.bytes().await.unwrap();
        let json: Value = serde_json::from_slice(&page).unwrap();
        cursor = json["nextCursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
    }
}

const LISTS: [&str; 5] = [
    "/v1/executions?limit=2",
    "/v1/executions?limit=3&order=asc",
    "/v1/executions?limit=2&view=basic",
    "/v1/executions?limit=50&view=basic&order=asc",
    "/v1/executions?limit=2&attestation=skipped",
];

async fn list_pages_are_the_same_bytes_with_their_settled_items_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for run in ["f1", "f2", "f3"] {
        let mut failed = webhook(run);
        failed["status"] = json!("failed");
        app.record(&failed).await;
    }
    for run in ["p1", "p2"] {
        app.record(&webhook(run)).await;
    }
    let mut theirs = globex_webhook("g1");
    theirs["status"] = json!("failed");
    let resp = app
        .post_webhook_signed(theirs.to_string().as_bytes(), OTHER_SECRET)
        .await;
    assert_eq!(resp.status(), 202);

    // The admin reads every page first: globex's settled execution is kept too.
    for list in LISTS {
        page_bytes(&app, list, ADMIN_TOKEN).await;
    }
    let mut first = Vec::new();
    for list in LISTS {
        let pages = page_bytes(&app, list, TOKEN).await;
        assert_eq!(
            page_bytes(&app, list, TOKEN).await,
            pages,
            "{list} read again"
        );
        first.push(pages);
    }
    let acme_items: usize = first[0]
        .iter()
        .map(|p| {
            serde_json::from_slice::<Value>(p).unwrap()["items"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(acme_items, 5, "acme's list holds acme's executions only");

    // The worker signs the pending ones: their items change, the settled ones' do not.
    app.app.run_pending_jobs().await.unwrap();
    let mut signed = Vec::new();
    for list in LISTS {
        signed.push(page_bytes(&app, list, TOKEN).await);
    }
    let states = |pages: &[bytes::Bytes]| -> Vec<String> {
        pages
            .iter()
            .flat_map(|p| {
                let page: Value = serde_json::from_slice(p).unwrap();
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["attestation"]["state"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(
        states(&first[0]).iter().filter(|s| *s == "pending").count(),
        2
    );
    assert_eq!(
        states(&signed[0])
            .iter()
            .filter(|s| *s == "pending")
            .count(),
        0
    );

    // The same database read with nothing kept gives the same bytes (but for the restarted
    // app's address in the links).
    let before = app.url("");
    let app = app.restart_with(|s| s.server.read_cache_mib = 0).await;
    let text = |pages: &[bytes::Bytes]| -> Vec<String> {
        pages
            .iter()
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect()
    };
    for (list, signed) in LISTS.iter().zip(&signed) {
        let read: Vec<String> = text(&page_bytes(&app, list, TOKEN).await)
            .iter()
            .map(|p| p.replace(&app.url(""), &before))
            .collect();
        assert!(
            read == text(signed),
            "{list}: the pages read in one query differ:\n{read:?}\n{:?}",
            text(signed)
        );
    }
}

/// A failed build naming no image (as a CI's own webhook records one), recorded directly.
async fn record_failed_build_without_images(app: &TestApp, run: &str) -> String {
    let new = crate::store::failed_execution_without_images(run);
    let id = new.id.to_string();
    app.app.store.record_build(new).await.unwrap();
    id
}

/// Every page of `path` (which has a query) read as `token`, following `nextCursor`.
async fn pages(app: &TestApp, path: &str, token: &str) -> Vec<Value> {
    page_bytes(app, path, token)
        .await
        .iter()
        .map(|page| serde_json::from_slice(page).unwrap())
        .collect()
}

async fn basic_view_pages_like_the_full_view_with_artifact_counts_instead_of_artifacts(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let mut images = std::collections::HashMap::new();
    images.insert(
        record_failed_build_without_images(&app, "run-0").await,
        0_u64,
    );
    images.insert(app.record(&webhook("run-1")).await, 1);
    let mut three = webhook("run-2");
    three["artifacts"] = (1..=3)
        .map(|i| json!({"image": format!("{REGISTRY}/acme/app{i}:1.0"), "digest": format!("sha256:{i:064x}")}))
        .collect();
    images.insert(app.record(&three).await, 3);
    let mut failed = webhook("run-3");
    failed["status"] = json!("failed");
    images.insert(app.record(&failed).await, 1);
    assert_eq!(images.len(), 4);

    for query in [
        "limit=2",
        "limit=3&order=asc",
        "limit=1&status=succeeded",
        "limit=50&branch=main",
    ] {
        let full = pages(&app, &format!("/v1/executions?{query}"), TOKEN).await;
        let basic = pages(&app, &format!("/v1/executions?{query}&view=basic"), TOKEN).await;
        assert_eq!(full.len(), basic.len(), "{query}: as many pages");
        let mut listed = 0;
        for (f, b) in full.iter().zip(&basic) {
            assert_eq!(f["nextCursor"], b["nextCursor"], "{query}: same cursors");
            let (f, b) = (
                f["items"].as_array().unwrap(),
                b["items"].as_array().unwrap(),
            );
            assert_eq!(f.len(), b.len(), "{query}: same page sizes");
            for (f, b) in f.iter().zip(b) {
                let id = b["id"].as_str().unwrap();
                assert_eq!(f["id"], id, "{query}: same executions in the same order");
                assert!(b.get("artifacts").is_none(), "{query}: {b}");
                assert_eq!(b["artifactCount"], images[id], "{query}: {b}");
                assert_eq!(
                    b["artifactCount"],
                    f["artifacts"].as_array().unwrap().len(),
                    "{query}: the count of the full view's artifacts"
                );
                let (mut f, mut b) = (f.clone(), b.clone());
                f.as_object_mut().unwrap().remove("artifacts");
                b.as_object_mut().unwrap().remove("artifactCount");
                assert_eq!(f, b, "{query}: every other field as in the full view");
                listed += 1;
            }
        }
        assert!(listed > 0, "{query}: listed nothing");
    }
    let everything = pages(&app, "/v1/executions?limit=3&view=basic", TOKEN).await;
    let counted: std::collections::HashMap<String, u64> = everything
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().clone())
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["artifactCount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counted,
        images.iter().map(|(id, n)| (id.clone(), *n)).collect(),
        "0, 1, 3 and 1 images"
    );

    let default = app
        .get("/v1/executions?limit=3", TOKEN)
        .await
        .bytes()
        .await
        .unwrap();
    let full = app
        .get("/v1/executions?limit=3&view=full", TOKEN)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(default, full, "view=full is the default, byte for byte");
}

async fn an_unknown_list_view_is_refused_naming_view(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.record(&webhook("run-1")).await;
    for view in ["BASIC", "", "minimal", "basic,full"] {
        let resp = app.get(&format!("/v1/executions?view={view}"), TOKEN).await;
        assert_eq!(resp.status(), 400, "view={view}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "view={view}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`view`"), "view={view}: {message}");
    }
}

/// globex's token asks for acme's executions in the basic view every way a list can be asked.
async fn basic_view_never_shows_another_accounts_executions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let oldest = app.record(&webhook("run-1")).await;
    let newest = app.record(&webhook("run-2")).await;
    let theirs = app
        .post_webhook_signed(globex_webhook("run-1").to_string().as_bytes(), OTHER_SECRET)
        .await;
    assert_eq!(theirs.status(), 202);
    let own: Value = theirs.json().await.unwrap();

    let mut seen_own = false;
    for query in [
        String::new(),
        "&account=acme".to_owned(),
        "&account=acme&pipeline=build_and_push&branch=main".to_owned(),
        format!("&order=asc&cursor={oldest}"),
        format!("&cursor={newest}"),
        "&limit=200&status=succeeded".to_owned(),
    ] {
        let resp = app
            .get(&format!("/v1/executions?view=basic{query}"), OTHER_TOKEN)
            .await;
        assert_eq!(resp.status(), 200, "{query}");
        let page: Value = resp.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["accountId"], OTHER_ACCOUNT, "{query}: {item}");
            assert_ne!(item["id"], oldest.as_str(), "{query}");
            assert_ne!(item["id"], newest.as_str(), "{query}");
            seen_own |= item["id"] == own["id"];
        }
    }
    assert!(seen_own, "globex lists its own execution");
}

async fn concurrent_identical_deliveries_create_exactly_one_execution(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = webhook("run-concurrent").to_string();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let http = app.http.clone();
        let url = app.url("/v1/webhooks/build");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .header(
                    "x-attestd-signature-256",
                    attestd::ingest::signature::sign(SECRET.as_bytes(), body.as_bytes()),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap();
            (status, v["id"].as_str().unwrap().to_owned())
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, id) = t.await.unwrap();
        assert!(status == 202 || status == 200, "unexpected status {status}");
        created += usize::from(status == 202);
        ids.insert(id);
    }
    assert_eq!(created, 1, "exactly one delivery creates the execution");
    assert_eq!(
        ids.len(),
        1,
        "every delivery answers with the same execution"
    );
    assert_eq!(app.execution_count().await, 1);
    assert_eq!(app.app.store.unfinished_jobs().await.unwrap(), 1);
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["store"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
}
