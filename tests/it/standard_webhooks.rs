//! Standard Webhooks deliveries (`webhook-id`, `webhook-timestamp`, `webhook-signature`) on the
//! attestd route, signed with a source's `whsec_` secrets, rotation included.

use serde_json::Value;

use crate::backend_tests;
use crate::support::Backend;
use crate::support::app::*;

const CURRENT: &str = "whsec_YWNtZS1jdXJyZW50LXNlY3JldC1ieXRlcw==";
const NEXT: &str = "whsec_YWNtZS1uZXh0LXNlY3JldC1ieXRlcw==";

async fn deliver(
    app: &TestApp,
    id: &str,
    timestamp: i64,
    secret: &str,
    body: &str,
) -> reqwest::Response {
    app.http
        .post(app.url("/v1/webhooks/build"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            attestd::ingest::standard_webhooks::sign(secret, id, timestamp, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn standard_webhooks_are_verified_with_tolerance_and_rotation(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.webhook.sources[0].secrets = vec![CURRENT.to_owned().into(), NEXT.to_owned().into()];
    })
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = webhook("sw-1").to_string();

    // Outside the 5-minute tolerance, either way: refused before anything is parsed.
    for skew in [-301, 301] {
        let resp = deliver(&app, "msg_1", now + skew, CURRENT, &body).await;
        assert_eq!(resp.status(), 401, "skew {skew}");
        assert_eq!(error_code(resp).await, "stale_webhook");
    }
    // Signed with a secret no source has, or over another id: refused.
    let resp = deliver(&app, "msg_1", now, "whsec_bm90LWEtc291cmNl", &body).await;
    assert_eq!(error_code(resp).await, "invalid_signature");
    let mut forged = app
        .http
        .post(app.url("/v1/webhooks/build"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_2")
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            attestd::ingest::standard_webhooks::sign(CURRENT, "msg_1", now, body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // globex's own secret authenticates globex's source, which may not report acme's build.
    forged = deliver(&app, "msg_1", now, OTHER_SECRET, &body).await;
    assert_eq!(forged.status(), 403);
    assert_eq!(error_code(forged).await, "account_mismatch");
    assert_eq!(app.execution_count().await, 0);

    // Either rotation secret works; a redelivery is the same execution.
    let created = deliver(&app, "msg_1", now, CURRENT, &body).await;
    assert_eq!(created.status(), 202);
    let first: Value = created.json().await.unwrap();
    let again = deliver(&app, "msg_1", now + 10, NEXT, &body).await;
    assert_eq!(again.status(), 200);
    let second: Value = again.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(app.execution_count().await, 1);
}

backend_tests!(standard_webhooks_are_verified_with_tolerance_and_rotation);
