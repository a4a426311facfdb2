//! A real Prometheus scrapes an attestd on PostgreSQL every second while the test sends it
//! webhooks and runs its worker against a real registry; Prometheus's query API then shows the
//! counts of what was sent and done.

use std::time::Duration;

use crate::support::Backend;
use crate::support::app::TestApp;
use crate::support::prometheus::TestPrometheus;
use crate::support::registry::TestRegistry;
use crate::{REPO, Traffic, sample, scrape, take_turn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_shows_the_webhooks_jobs_and_pushes_the_test_caused() {
    let _turn = take_turn().await;
    let reg = TestRegistry::anonymous().await;
    let digest = reg.push_image(REPO, "1.4.0").await;
    let traffic = Traffic::unique();
    let app = TestApp::spawn_with(Backend::Postgres, |s| traffic.configure(s, &reg)).await;
    let prometheus = TestPrometheus::scraping(app.addr, None).await;

    // Counters without a label of this test's own: what this process counted before.
    let before = scrape(&app).await;
    let base = |name: &str, labels: &[(&str, &str)]| sample(&before, name, labels);
    let sign_attempts = base("attestd_job_attempts_total", &[("kind", "sign")]);
    let push_attempts = base("attestd_job_attempts_total", &[("kind", "push")]);
    let signed = base(
        "attestd_signing_duration_seconds_count",
        &[("key_type", "development"), ("outcome", "ok")],
    );
    let attested = base("attestd_receipt_to_attested_seconds_count", &[]);
    let secret_errors = base(
        "attestd_secret_backend_errors_total",
        &[("backend", "file"), ("error", "not_found")],
    );
    let dead_pushes = base(
        "attestd_job_failures_total",
        &[
            ("kind", "push"),
            ("reason", "registry_secret_not_found"),
            ("outcome", "dead"),
        ],
    );
    let retried_pushes = base(
        "attestd_job_failures_total",
        &[
            ("kind", "push"),
            ("reason", "image_not_found"),
            ("outcome", "retry"),
        ],
    );

    let sent = traffic.send(&app, &reg, &digest).await;

    let source = &traffic.source;
    let host = reg.host();
    let locked = &traffic.locked_registry;
    let n = |v: usize| v as f64;
    let expected: Vec<(String, f64)> = vec![
        (
            format!(r#"sum(attestd_webhooks_received_total{{source="{source}",kind="attestd",status="2xx",error="none"}})"#),
            n(sent.accepted),
        ),
        (
            format!(r#"sum(attestd_webhooks_received_total{{source="{source}",status="4xx",error="invalid_signature"}})"#),
            n(sent.bad_signature),
        ),
        (
            format!(r#"sum(attestd_webhooks_received_total{{source="{source}",status="4xx",error="validation_failed"}})"#),
            n(sent.invalid),
        ),
        (
            format!(r#"sum(attestd_webhook_duration_seconds_count{{source="{source}"}})"#),
            n(sent.accepted + sent.bad_signature + sent.invalid),
        ),
        (
            r#"sum(attestd_job_attempts_total{kind="sign"})"#.into(),
            sign_attempts + n(sent.accepted),
        ),
        (
            r#"sum(attestd_job_attempts_total{kind="push"})"#.into(),
            push_attempts + n(sent.accepted),
        ),
        (
            format!(r#"sum(attestd_push_duration_seconds_count{{registry="{host}",outcome="pushed"}})"#),
            n(sent.pushed),
        ),
        (
            format!(r#"sum(attestd_push_duration_seconds_count{{registry="{host}",outcome="image_not_found"}})"#),
            n(sent.missing_image),
        ),
        (
            format!(r#"sum(attestd_push_duration_seconds_count{{registry="{locked}",outcome="registry_secret_not_found"}})"#),
            n(sent.missing_password),
        ),
        (
            format!(r#"sum(attestd_registry_errors_total{{registry="{host}",operation="push",code="image_not_found"}})"#),
            n(sent.missing_image),
        ),
        (
            format!(r#"sum(attestd_registry_errors_total{{registry="{locked}",operation="push",code="registry_secret_not_found"}})"#),
            n(sent.missing_password),
        ),
        (
            r#"sum(attestd_job_failures_total{kind="push",reason="image_not_found",outcome="retry"})"#.into(),
            retried_pushes + n(sent.missing_image),
        ),
        (
            r#"sum(attestd_job_failures_total{kind="push",reason="registry_secret_not_found",outcome="dead"})"#.into(),
            dead_pushes + n(sent.missing_password),
        ),
        (
            r#"sum(attestd_secret_backend_errors_total{backend="file",error="not_found"})"#.into(),
            secret_errors + n(sent.missing_password),
        ),
        (
            r#"sum(attestd_signing_duration_seconds_count{key_type="development",outcome="ok"})"#.into(),
            signed + n(sent.accepted),
        ),
        (
            "sum(attestd_receipt_to_attested_seconds_count)".into(),
            attested + n(sent.pushed),
        ),
        // The gauges read from this app's database. Every execution has one image: its sign
        // job's row became its push job.
        (r#"sum(attestd_jobs)"#.into(), n(sent.accepted)),
        (
            r#"sum(attestd_jobs{kind="push",state="done"})"#.into(),
            n(sent.pushed),
        ),
        (
            r#"sum(attestd_jobs{kind="push",state="queued"})"#.into(),
            n(sent.missing_image),
        ),
        (
            r#"sum(attestd_jobs{kind="push",state="dead"})"#.into(),
            n(sent.missing_password),
        ),
        (
            r#"sum(attestd_build_info{store="postgres"})"#.into(),
            1.0,
        ),
        (
            r#"sum(attestd_db_connections_max{pool="main"})"#.into(),
            8.0,
        ),
        (
            r#"count(attestd_db_connections{pool="main"} >= 0)"#.into(),
            2.0,
        ),
        (r#"up{job="attestd"}"#.into(), 1.0),
    ];
    prometheus
        .wait_until(&expected, Duration::from_secs(60))
        .await;
}
