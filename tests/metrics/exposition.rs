//! What a scrape of `/metrics` looks like: promtool's linter passes it, and every metric the
//! README lists is there once the app has done what it measures.

use std::time::Duration;

use crate::support::Backend;
use crate::support::app::TestApp;
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
}
