//! Dashboard queries: digest lookups, stats, and pagination that stays stable while executions
//! keep arriving; plus the OpenAPI document agreeing with the router.

use std::collections::HashSet;

use attestd::store::PushRecord;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::support::app::*;
use crate::support::{Backend, LEASING};

backend_tests!(
    digest_lookup_lists_every_execution_of_an_image_within_the_account,
    stats_count_by_day_status_and_state_and_time_to_attest,
    pagination_neither_skips_nor_repeats_while_executions_arrive,
    every_documented_operation_is_routed,
);

async fn digest_lookup_lists_every_execution_of_an_image_within_the_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let digest = format!("sha256:{}", "a1".repeat(32));
    for (i, pipeline) in ["build", "release"].iter().enumerate() {
        let mut hook = webhook(&format!("run-{i}"));
        hook["pipelineIdentifier"] = json!(pipeline);
        assert_eq!(app.post_webhook(&hook).await.status(), 202);
    }
    let theirs = globex_webhook("run-globex");
    assert_eq!(
        app.post_webhook_signed(theirs.to_string().as_bytes(), OTHER_SECRET)
            .await
            .status(),
        202
    );

    let mine: Value = app
        .get(&format!("/v1/artifacts/{digest}/attestations"), TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let pipelines: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["execution"]["pipelineIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        pipelines,
        vec!["release", "build"],
        "both pipelines, newest first, not globex's"
    );
    assert_eq!(mine["items"][0]["artifact"]["digest"], digest);
    let admin: Value = app
        .get(&format!("/v1/artifacts/{digest}/attestations"), ADMIN_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin["items"].as_array().unwrap().len(), 3);
    let bad = app
        .get("/v1/artifacts/sha256:nope/attestations", TOKEN)
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad).await, "invalid_digest");
}

async fn stats_count_by_day_status_and_state_and_time_to_attest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Attest one execution through the store's own job protocol, then record three more.
    app.post_webhook(&webhook("ok-0")).await;
    let store = &app.app.store;
    let sign = store.claim_job("t", &LEASING).await.unwrap().unwrap();
    store.complete_sign(&sign, b"{}", "k", None).await.unwrap();
    let push = store.claim_job("t", &LEASING).await.unwrap().unwrap();
    assert_eq!(push.kind, attestd::store::JobKind::Push);
    store
        .complete_push(
            &push,
            &PushRecord {
                reference: "r".into(),
                manifest_digest: "sha256:00".into(),
            },
            None,
        )
        .await
        .unwrap();
    for i in 1..3 {
        app.post_webhook(&webhook(&format!("ok-{i}"))).await;
    }
    let mut failed = webhook("failed-0");
    failed["status"] = json!("failed");
    app.post_webhook(&failed).await;

    let stats: Value = app.get("/v1/stats", TOKEN).await.json().await.unwrap();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let count = |status: &str, state: &str| -> i64 {
        stats["daily"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["day"] == today.as_str() && d["status"] == status && d["attestation"] == state
            })
            .map(|d| d["count"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(count("succeeded", "pending"), 2);
    assert_eq!(count("succeeded", "attested"), 1);
    assert_eq!(count("failed", "skipped"), 1);
    assert_eq!(stats["timeToAttest"]["count"], 1);
    let p50 = stats["timeToAttest"]["p50"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&p50), "p50 {p50}");
    let other: Value = app
        .get("/v1/stats", OTHER_TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["daily"], json!([]), "scoped to the token's account");
    let bad = app
        .get(
            "/v1/stats?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            TOKEN,
        )
        .await;
    assert_eq!(bad.status(), 400);
}

async fn pagination_neither_skips_nor_repeats_while_executions_arrive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut expected = HashSet::new();
    for i in 0..7 {
        let id = format!("before-{i}");
        app.post_webhook(&webhook(&id)).await;
        expected.insert(id);
    }
    for order in ["desc", "asc"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut inserted = 0;
        loop {
            let mut path = format!("/v1/executions?limit=3&order={order}&pipeline=build_and_push");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: Value = app.get(&path, TOKEN).await.json().await.unwrap();
            for item in page["items"].as_array().unwrap() {
                seen.push(item["pipelineExecutionId"].as_str().unwrap().to_owned());
            }
            // New executions arrive between page requests.
            inserted += 1;
            app.post_webhook(&webhook(&format!("during-{order}-{inserted}")))
                .await;
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{order}: nothing repeated: {seen:?}"
        );
        for id in &expected {
            assert!(unique.contains(id), "{order}: {id} skipped: {seen:?}");
        }
        if order == "desc" {
            assert!(
                seen.iter().all(|s| s.starts_with("before-")),
                "newest-first pages only continue into older items"
            );
        }
        for s in &seen {
            expected.insert(s.clone());
        }
    }
}

async fn every_documented_operation_is_routed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{execution_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{digest}", &format!("sha256:{}", "0".repeat(64)));
        for method in item.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let resp = app
                .http
                .request(method.clone(), app.url(&concrete))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            assert_ne!(
                status, 405,
                "{method} {path} documented but not routed for that method"
            );
            if status == 404 {
                assert_ne!(
                    error_code(resp).await,
                    "route_not_found",
                    "{method} {path} documented but not routed"
                );
            }
            operations += 1;
        }
    }
    assert!(
        operations >= 10,
        "expected the whole API documented, found {operations} operations"
    );
    // And the reverse: an undocumented path is not served.
    let resp = app.get("/v1/undocumented", ADMIN_TOKEN).await;
    assert_eq!(error_code(resp).await, "route_not_found");
}
