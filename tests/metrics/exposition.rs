//! What a scrape of `/metrics` looks like: promtool's linter passes it, and every metric the
//! README lists is there once the app has done what it measures.

use std::time::{Duration, Instant};

use attestd::store::{AttestationState, ExecutionFilter};

use crate::support::Backend;
use crate::support::app::{TOKEN, TestApp};
use crate::support::prometheus::promtool_check_metrics;
use crate::support::registry::TestRegistry;
use crate::{REPO, Traffic, sample, scrape, take_turn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_webhooks_signing_and_pushes_passes_promtool_check_metrics() {
    let _turn = take_turn().await;
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let traffic = Traffic::unique();
    let app = TestApp::spawn_with(Backend::Sqlite, |s| traffic.configure(s, &reg)).await;
    traffic.send(&app, &reg, &digest).await;
    // The gauges read from the database are refreshed every second in this test.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = scrape(&app).await;
    if let Err(findings) = promtool_check_metrics(&text) {
        panic!("{findings}\n--- scrape ---\n{text}");
    }
    for family in [
        "attestd_build_info",
        "attestd_webhooks_received_total",
        "attestd_webhook_duration_seconds",
        "attestd_jobs",
        "attestd_jobs_refreshed_timestamp_seconds",
        "attestd_job_attempts_total",
        "attestd_jobs_completed_total",
        "attestd_job_failures_total",
        "attestd_push_duration_seconds",
        "attestd_receipt_to_attested_seconds",
        "attestd_signing_duration_seconds",
        "attestd_secret_backend_errors_total",
        "attestd_registry_errors_total",
        "attestd_db_connections",
        "attestd_db_connections_max",
        "attestd_ingest_batch_rows",
        "attestd_ingest_batch_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} "))
                && text.contains(&format!("# TYPE {family} ")),
            "{family} is not described in the scrape:\n{text}"
        );
    }
    for histogram in [
        "attestd_webhook_duration_seconds",
        "attestd_push_duration_seconds",
        "attestd_receipt_to_attested_seconds",
        "attestd_signing_duration_seconds",
        "attestd_ingest_batch_rows",
        "attestd_ingest_batch_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram"))
                && text.contains(&format!("{histogram}_bucket{{")),
            "{histogram} is not a histogram with buckets:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "attestd_build_info",
            &[("store", "sqlite"), ("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        sample(&text, "attestd_db_connections_max", &[("pool", "writer")]) >= 1.0,
        "{text}"
    );
    // Bounded labels: nothing that identifies one build or one image.
    assert!(!text.contains(digest.hex()), "a digest is a label:\n{text}");
    assert!(!text.contains(REPO), "a repository is a label:\n{text}");
    let pipeline_run = format!("{}-ok-0", traffic.source);
    assert!(
        !text.contains(&pipeline_run),
        "a pipeline run is a label:\n{text}"
    );

    // Re-driving the dead push empties the dead state: its gauge reads 0, not its last count.
    let dead = [("kind", "push"), ("state", "dead")];
    assert_eq!(sample(&text, "attestd_jobs", &dead), 1.0, "{text}");
    let failed = app
        .app
        .store
        .list_executions(&ExecutionFilter {
            attestation: Some(AttestationState::Failed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        failed.len(),
        1,
        "the push to the registry without its password"
    );
    let retry = app
        .http
        .post(app.url(&format!("/v1/executions/{}/retry", failed[0].id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(retry.status().is_success(), "{}", retry.status());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&app).await;
        let emptied = text.contains("attestd_jobs{kind=\"push\",state=\"dead\"} 0\n");
        let queued = sample(
            &text,
            "attestd_jobs",
            &[("kind", "push"), ("state", "queued")],
        );
        if emptied && queued == 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead push still counts:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
