//! PostgreSQL crashes while engineers read: what can no longer change (an execution attested
//! everywhere, a stored statement or envelope) is answered as before, byte for byte, from the
//! replica's memory; what can still change (an execution whose push is retrying, a list page) is
//! answered `503 store_unavailable`, never from a copy that may be out of date.

use std::time::Duration;

use crate::support::attestd::{Attestd, Config, webhook};
use crate::support::check::push_images;
use crate::support::postgres::Postgres;
use crate::support::registry::TestRegistry;
use crate::support::{report, scenario_dir};

pub async fn run() {
    let dir = scenario_dir("settled-reads");
    let mut pg = Postgres::start().await;
    let reg = TestRegistry::anonymous().await;
    let image = push_images(&reg, "acme/settled", 1).await.remove(0);
    let mut config = Config::new(&pg.url(), &[reg.host()]);
    config.set("worker", "backoff_base_ms", 60_000);
    let app = Attestd::start(dir.path(), "attestd", config).await;
    let deliver = |run: &str, digest: &str| {
        let body = webhook(run, &image.reference(&reg.host()), digest);
        let app = &app;
        async move {
            let answer = app
                .deliver(&body, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            answer.id().expect("an execution id")
        }
    };
    let attested = deliver("settled-1", &image.digest).await;
    // A digest the registry does not have: its push fails and waits a minute to retry.
    let missing = format!("sha256:{}", "0f".repeat(32));
    let retrying = deliver("retrying-1", &missing).await;
    app.wait_attested(std::slice::from_ref(&attested), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- attestd log ---\n{}", app.log_tail()));

    let kept = [
        format!("/v1/executions/{attested}"),
        format!("/v1/executions/{attested}/provenance"),
        format!("/v1/executions/{attested}/attestation"),
        format!("/v1/executions/{retrying}/provenance"),
    ];
    let fresh = [
        format!("/v1/executions/{retrying}"),
        "/v1/executions?limit=10".to_owned(),
    ];
    let mut before = Vec::new();
    for path in kept.iter().chain(&fresh) {
        let (status, bytes) = app.get(path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "GET {path} before the crash");
        before.push(bytes);
    }
    let e: serde_json::Value = serde_json::from_slice(&before[kept.len()]).unwrap();
    assert_ne!(e["attestation"]["state"], "attested", "{e}");

    pg.stop_immediate().await;
    let mut answered = 0;
    for (path, before) in kept.iter().zip(&before) {
        let (status, bytes) = app.get(path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (status, &bytes),
            (200, before),
            "GET {path} while PostgreSQL is down: {}",
            String::from_utf8_lossy(&bytes)
        );
        answered += 1;
    }
    for path in &fresh {
        let (status, bytes) = app.get(path).await.unwrap_or_else(|e| panic!("{e}"));
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("store_unavailable")),
            "GET {path} while PostgreSQL is down must not be answered from a copy: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    pg.start_again().await;
    report(
        "settled_reads",
        &[
            ("answered_while_down", answered.to_string()),
            ("refused_while_down", fresh.len().to_string()),
        ],
    );
}
